"""Objectives for feature visualization: small objects that compose with ``+ - * /`` (Lucid's design).

An objective maps what one forward pass saw — the activations of the layers it names, the model's
output, the input picture — to one score per batch element, shape (B,). Scores are **maximized**:

    obj = channel("_blocks.9", 17) - 0.05 * total_variation()
    obj = channel("features.28", range(64))        # a batch: element i maximizes channel i

Every objective knows which layers it needs (``layers``) and whether it needs the model's output
(``needs_output``), so the optimizer stops the forward at the deepest of those layers. A leaf that
takes a per-element list (``channel(L, [3, 5, 7])``) fixes the batch size (``batch``); scalar leaves
broadcast. Olah, Mordvintsev & Schubert 2017, *Feature Visualization* (Distill).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConvscopeError, LayerError
from ..hooks import LayerRef

__all__ = [
    "Evaluation",
    "Objective",
    "as_objective",
    "channel",
    "channels",
    "class_logit",
    "direction",
    "diversity",
    "l1",
    "l2",
    "layer_l2",
    "neuron",
    "objective_from_string",
    "total_variation",
]

LayerKey = str | LayerRef
Index = int | Sequence[int] | range | torch.Tensor


@dataclass
class Evaluation:
    """What an objective reads after one forward: ``acts`` by layer key (B, C, h, w) or (B, N), the
    model's ``output`` (None when the forward stopped at the last layer needed), and ``image``, the
    un-transformed picture in [0, 1] (B, C, H, W). ``rows``: which rows of the whole batch these are
    when the optimizer runs the batch in chunks (per-element targets are sliced with it)."""

    acts: dict[str, torch.Tensor]
    output: torch.Tensor | None
    image: torch.Tensor
    rows: slice | None = None

    @property
    def batch(self) -> int:
        return int(self.image.shape[0])


def _key(layer: LayerKey) -> str:
    if isinstance(layer, LayerRef):
        return layer.label
    if not isinstance(layer, str) or not layer:
        raise LayerError(f"an objective's layer must be a dotted name like 'features.28', got {layer!r}")
    return layer


class Objective:
    """A score per batch element (B,) to maximize; combine with ``+ - * /``, scalars and ``-obj``.

    fn: ``Evaluation -> (B,)`` (a 0-d tensor or a float broadcasts); description: the repr;
    layers: the layer keys it reads; needs_output: whether it reads the model's output;
    batch: the batch size it fixes (per-element leaves) or None; coupled: scores depend on the whole
    batch (``diversity``), so the batch must run in one forward; targets: the channel or class of a
    leaf (one, or one per batch element) for titles, kept through composition (the first leaf's).
    """

    def __init__(self, fn: Callable[[Evaluation], Any], description: str, *, layers: Sequence[str] = (),
                 needs_output: bool = False, batch: int | None = None, precedence: int = 3,
                 targets: list[int] | None = None, coupled: bool = False) -> None:
        self.fn = fn
        self.targets = targets
        self.coupled = coupled  # one element's score depends on the others (diversity): no chunking
        self.description = description
        self.layers = tuple(dict.fromkeys(layers))
        self.needs_output = needs_output
        self.batch = batch
        self._precedence = precedence  # 1: + -, 2: * /, 3: atom (for a readable repr)

    def __call__(self, ev: Evaluation) -> torch.Tensor:
        value = self.fn(ev)
        if not isinstance(value, torch.Tensor):
            value = torch.tensor(float(value), device=ev.image.device)
        if value.dim() == 0:
            value = value.expand(ev.batch)
        if value.shape != (ev.batch,):
            raise ConvscopeError(f"objective {self} gave shape {tuple(value.shape)}, expected ({ev.batch},): one score per batch element")
        return value

    def __repr__(self) -> str:
        return self.description

    # -- composition ---------------------------------------------------------------------------
    def _text(self, precedence: int) -> str:
        return f"({self.description})" if self._precedence < precedence else self.description

    def _combine(self, other: Any, op: Callable[[Any, Any], Any], symbol: str, precedence: int,
                 reverse: bool = False) -> Objective:
        if isinstance(other, Objective):
            a, b = (other, self) if reverse else (self, other)
            if a.batch is not None and b.batch is not None and a.batch != b.batch:
                raise ConvscopeError(f"objectives for batches of {a.batch} and {b.batch} cannot be combined")
            right_prec = precedence + 1 if symbol in "-/" else precedence
            text = f"{a._text(precedence)} {symbol} {b._text(right_prec)}"
            return Objective(lambda ev: op(a(ev), b(ev)), text, layers=a.layers + b.layers,
                             needs_output=a.needs_output or b.needs_output, batch=a.batch or b.batch,
                             precedence=precedence, targets=a.targets or b.targets, coupled=a.coupled or b.coupled)
        if isinstance(other, bool) or not isinstance(other, (int, float)):
            return NotImplemented
        number = float(other)
        if reverse:
            text = f"{other:g} {symbol} {self._text(precedence + 1 if symbol in '-/' else precedence)}"
            fn = lambda ev: op(number, self(ev))
        else:
            text = f"{self._text(precedence)} {symbol} {other:g}"
            fn = lambda ev: op(self(ev), number)
        return Objective(fn, text, layers=self.layers, needs_output=self.needs_output, batch=self.batch,
                         precedence=precedence, targets=self.targets, coupled=self.coupled)

    def __add__(self, other: Any) -> Objective:
        return self._combine(other, operator.add, "+", 1)

    def __radd__(self, other: Any) -> Objective:
        if isinstance(other, (int, float)) and not isinstance(other, bool) and other == 0:
            return self  # sum([obj1, obj2]) starts from 0
        return self._combine(other, operator.add, "+", 1, reverse=True)

    def __sub__(self, other: Any) -> Objective:
        return self._combine(other, operator.sub, "-", 1)

    def __rsub__(self, other: Any) -> Objective:
        return self._combine(other, operator.sub, "-", 1, reverse=True)

    def __mul__(self, other: Any) -> Objective:
        return self._combine(other, operator.mul, "*", 2)

    def __rmul__(self, other: Any) -> Objective:
        return self._combine(other, operator.mul, "*", 2, reverse=True)

    def __truediv__(self, other: Any) -> Objective:
        return self._combine(other, operator.truediv, "/", 2)

    def __rtruediv__(self, other: Any) -> Objective:
        return self._combine(other, operator.truediv, "/", 2, reverse=True)

    def __neg__(self) -> Objective:
        return Objective(lambda ev: -self(ev), f"-{self._text(3)}", layers=self.layers,
                         needs_output=self.needs_output, batch=self.batch, precedence=2, targets=self.targets,
                         coupled=self.coupled)

    def __pos__(self) -> Objective:
        return self


# -- helpers for the leaves ----------------------------------------------------------------------
def _indices(value: Index, what: str) -> tuple[int | None, torch.Tensor | None, int]:
    """(scalar, per-element tensor, the largest index): one int, or one int per batch element."""
    if isinstance(value, torch.Tensor):
        value = int(value) if value.dim() == 0 else [int(v) for v in value.reshape(-1).tolist()]
    if isinstance(value, bool):
        raise ConvscopeError(f"{what} must be an int or a sequence of ints, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConvscopeError(f"{what} {value} is negative; {what}s count from 0")
        return value, None, value
    try:
        items = [int(v) for v in value]
    except (TypeError, ValueError):
        raise ConvscopeError(f"{what} must be an int or a sequence of ints, got {value!r}") from None
    if not items:
        raise ConvscopeError(f"{what} is an empty sequence; give at least one index")
    if min(items) < 0:
        raise ConvscopeError(f"{what} {min(items)} is negative; {what}s count from 0")
    return None, torch.tensor(items, dtype=torch.long), max(items)


def _describe(scalar: int | None, many: torch.Tensor | None) -> str:
    if scalar is not None:
        return str(scalar)
    items = many.tolist()
    if len(items) > 2 and items == list(range(items[0], items[0] + len(items))):
        return f"range({items[0]}, {items[-1] + 1})"
    return str(items) if len(items) <= 6 else f"[{items[0]}, {items[1]}, ... {items[-1]}] ({len(items)})"


def _act(ev: Evaluation, key: str) -> torch.Tensor:
    a = ev.acts[key]
    if a.dim() not in (2, 4):
        raise LayerError(f"layer {key!r} outputs shape {tuple(a.shape)}; objectives read (B, C, h, w) maps or (B, N) vectors")
    return a


def _check_range(key: str | None, largest: int, count: int) -> None:
    if largest >= count:
        if key is None:
            raise LayerError(f"class {largest} is out of range: the model has {count} outputs (0-{count - 1})")
        raise LayerError(f"channel {largest} is out of range: layer {key!r} has {count} channels (0-{count - 1})")


def _rows(values: torch.Tensor, ev: Evaluation, what: str) -> torch.Tensor:
    """The per-element ``values`` of the rows ``ev`` holds (all of them, or one chunk)."""
    total = values.shape[0]
    if ev.rows is not None:
        values = values[ev.rows]
    if values.shape[0] != ev.batch or (ev.rows is None and total != ev.batch):
        raise ConvscopeError(f"the objective gives {total} {what} but the batch has {ev.batch} images")
    return values


def _pick(a: torch.Tensor, scalar: int | None, many: torch.Tensor | None, ev: Evaluation, key: str) -> torch.Tensor:
    """Channel(s) of ``a`` per batch element: (B, h, w) or (B,)."""
    if scalar is not None:
        return a[:, scalar]
    index = _rows(many, ev, f"channels of {key!r}" if key != "output" else "classes")
    return a[torch.arange(ev.batch, device=a.device), index.to(a.device).clone()]  # clone: never an inference tensor


def _targets(scalar: int | None, many: torch.Tensor | None) -> list[int]:
    return [scalar] if scalar is not None else many.tolist()


def _batch_of(*many: torch.Tensor | None) -> int | None:
    sizes = {m.numel() for m in many if m is not None}
    if len(sizes) > 1:
        raise ConvscopeError(f"per-element index lists differ in length: {sorted(sizes)}")
    return sizes.pop() if sizes else None


# -- the leaves ----------------------------------------------------------------------------------
def channel(layer: LayerKey, channel: Index) -> Objective:
    """The mean activation of ``channel`` of ``layer`` (over h×w). A sequence of channels is a batch:
    element i maximizes ``channel[i]``.

    Options:
        layer: dotted layer name (``"features.28"``, ``"_swish@1"`` for one call of a shared module).
        channel: a channel index, or one per batch element (``range(64)``).
    """
    key = _key(layer)
    scalar, many, largest = _indices(channel, "channel")

    def fn(ev: Evaluation) -> torch.Tensor:
        a = _act(ev, key)
        _check_range(key, largest, a.shape[1])
        picked = _pick(a, scalar, many, ev, key)
        return picked.mean(dim=(1, 2)) if picked.dim() == 3 else picked

    return Objective(fn, f"channel({key!r}, {_describe(scalar, many)})", layers=[key], batch=_batch_of(many),
                     targets=_targets(scalar, many))


def channels(layer: LayerKey, indices: Sequence[int] | range) -> Objective:
    """One channel per batch element: ``channels(L, range(64))`` visualizes 64 channels in one run.

    Options:
        layer: dotted layer name.
        indices: the channel of each batch element.
    """
    return channel(layer, list(indices))


def neuron(layer: LayerKey, channel: Index, x: int | None = None, y: int | None = None) -> Objective:
    """The activation of one unit: ``channel`` of ``layer`` at column ``x``, row ``y`` (default: the
    centre of the map).

    Options:
        layer: dotted layer name.
        channel: channel index, or one per batch element.
        x: column in the layer's map (default: the centre).
        y: row in the layer's map (default: the centre).
    """
    key = _key(layer)
    scalar, many, largest = _indices(channel, "channel")
    where = "" if x is None and y is None else f", x={x}, y={y}"

    def fn(ev: Evaluation) -> torch.Tensor:
        a = _act(ev, key)
        if a.dim() != 4:
            raise LayerError(f"neuron needs a (B, C, h, w) map; layer {key!r} outputs {tuple(a.shape)}: use channel")
        _check_range(key, largest, a.shape[1])
        h, w = a.shape[-2:]
        col = w // 2 if x is None else x
        row = h // 2 if y is None else y
        if not (0 <= col < w and 0 <= row < h):
            raise LayerError(f"neuron position x={col}, y={row} is outside layer {key!r}'s {h}x{w} map")
        return _pick(a, scalar, many, ev, key)[:, row, col]

    return Objective(fn, f"neuron({key!r}, {_describe(scalar, many)}{where})", layers=[key], batch=_batch_of(many),
                     targets=_targets(scalar, many))


def class_logit(index: Index) -> Objective:
    """The model's output (logit) for class ``index``, or one class per batch element.

    Options:
        index: the class, or one class per batch element.
    """
    scalar, many, largest = _indices(index, "class")

    def fn(ev: Evaluation) -> torch.Tensor:
        out = ev.output
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            raise ConvscopeError("class_logit needs a model whose output is a (B, classes) tensor of logits")
        _check_range(None, largest, out.shape[1])
        return _pick(out, scalar, many, ev, "output")

    return Objective(fn, f"class_logit({_describe(scalar, many)})", needs_output=True, batch=_batch_of(many),
                     targets=_targets(scalar, many))


def layer_l2(layer: LayerKey) -> Objective:
    """The mean squared activation of ``layer``: Deep Dream's objective ("whatever you see, more of it";
    Mordvintsev, Olah & Tyka 2015).

    Options:
        layer: dotted layer name.
    """
    key = _key(layer)
    return Objective(lambda ev: _act(ev, key).pow(2).flatten(1).mean(1), f"layer_l2({key!r})", layers=[key])


def direction(layer: LayerKey, vector: Any) -> Objective:
    """The dot product of ``layer``'s activation vector at each position with ``vector`` (C,), averaged
    over positions; (B, C) gives each batch element its own direction (Lucid's ``direction``).

    Options:
        layer: dotted layer name.
        vector: a direction in the layer's channel space, (C,) or one per batch element (B, C).
    """
    key = _key(layer)
    vec = torch.as_tensor(vector, dtype=torch.float32)
    if vec.dim() not in (1, 2) or vec.numel() == 0:
        raise ConvscopeError(f"direction vector must be (C,) or (B, C), got shape {tuple(vec.shape)}")

    def fn(ev: Evaluation) -> torch.Tensor:
        a = _act(ev, key)
        if a.shape[1] != vec.shape[-1]:
            raise LayerError(f"direction has {vec.shape[-1]} values but layer {key!r} has {a.shape[1]} channels")
        v = vec.to(a.device, a.dtype).clone()  # clone: never an inference tensor in the graph
        v = v.expand(ev.batch, -1) if v.dim() == 1 else _rows(v, ev, "direction vectors")
        dots = (a * v.view(*v.shape, *([1] * (a.dim() - 2)))).sum(1)
        return dots.flatten(1).mean(1) if dots.dim() > 1 else dots

    return Objective(fn, f"direction({key!r}, <{vec.shape[-1]} values>)", layers=[key],
                     batch=vec.shape[0] if vec.dim() == 2 else None)


def diversity(layer: LayerKey) -> Objective:
    """Minus the mean cosine similarity between this element's Gram matrix of ``layer`` and every other
    element's (Lucid's ``diversity``, sign flipped so that it is maximized): ``channel(L, 7) + 0.5 *
    diversity(L)`` over a batch gives different pictures of one channel. 0 for a batch of one.

    Options:
        layer: dotted layer name.
    """
    key = _key(layer)

    def fn(ev: Evaluation) -> torch.Tensor:
        a = _act(ev, key)
        batch = a.shape[0]
        if batch < 2:
            return torch.zeros(batch, device=a.device, dtype=a.dtype)
        flat = a.flatten(2) if a.dim() == 4 else a[:, :, None]  # (B, C, hw)
        grams = torch.bmm(flat, flat.transpose(1, 2)).flatten(1)  # (B, C*C)
        grams = grams / grams.norm(dim=1, keepdim=True).clamp_min(1e-10)
        cos = grams @ grams.T  # (B, B)
        others = cos.sum(1) - cos.diagonal()
        return -others / (batch - 1)

    return Objective(fn, f"diversity({key!r})", layers=[key], coupled=True)


def total_variation() -> Objective:
    """The picture's total variation, mean |difference| of neighbouring pixels (rows and columns).
    A regularizer: subtract it (``obj - 0.05 * total_variation()``) for smoother pictures.

    Options:
        (none)
    """

    def fn(ev: Evaluation) -> torch.Tensor:
        img = ev.image
        dy = (img[:, :, 1:] - img[:, :, :-1]).abs().flatten(1).mean(1)
        dx = (img[..., 1:] - img[..., :-1]).abs().flatten(1).mean(1)
        return dx + dy

    return Objective(fn, "total_variation()")


def _norm_objective(name: str, layer: LayerKey | None, constant: float, reduce: Callable[[torch.Tensor], torch.Tensor]) -> Objective:
    key = None if layer is None else _key(layer)

    def fn(ev: Evaluation) -> torch.Tensor:
        t = ev.image if key is None else _act(ev, key)
        return reduce((t - constant).flatten(1))

    where = "" if key is None else repr(key)
    extra = f", constant={constant:g}" if constant else ""
    return Objective(fn, f"{name}({where}{extra})", layers=[] if key is None else [key])


def l1(layer: LayerKey | None = None, *, constant: float = 0.0) -> Objective:
    """Mean |t - constant| of the picture (``layer=None``) or of a layer's activations. Subtract it to
    keep values near ``constant`` (e.g. ``obj - 0.1 * l1(constant=0.5)``: a grey picture).

    Options:
        layer: None for the picture, or a dotted layer name.
        constant: the value deviations are measured from.
    """
    return _norm_objective("l1", layer, constant, lambda t: t.abs().mean(1))


def l2(layer: LayerKey | None = None, *, constant: float = 0.0) -> Objective:
    """sqrt(mean (t - constant)²) of the picture (``layer=None``) or of a layer's activations.

    Options:
        layer: None for the picture, or a dotted layer name.
        constant: the value deviations are measured from.
    """
    return _norm_objective("l2", layer, constant, lambda t: (t.pow(2).mean(1) + 1e-12).sqrt())


# -- the string shorthand ------------------------------------------------------------------------
STRING_FORMS = "'layer:channel', 'layer:channel:x:y', 'layer:0-63' (a batch), 'layer:3,5,9' or 'logit:281'"


def _parse_indices(text: str, whole: str) -> int | list[int]:
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    match = re.fullmatch(r"(\d+)\s*-\s*(\d+)", text)
    if match:
        low, high = int(match.group(1)), int(match.group(2))
        if high < low:
            raise ConvscopeError(f"objective {whole!r}: range {text!r} runs backwards; write low-high")
        return list(range(low, high + 1))
    if re.fullmatch(r"\d+(\s*,\s*\d+)+", text):
        return [int(v) for v in text.split(",")]
    raise ConvscopeError(f"objective {whole!r}: {text!r} is not a channel number, range or list; write {STRING_FORMS}")


def objective_from_string(text: str) -> Objective:
    """``"features.28:17"`` -> channel, ``"features.28:17:3:4"`` -> neuron at x=3, y=4,
    ``"features.28:0-63"`` / ``"features.28:3,5,9"`` -> a batch of channels, ``"logit:281"`` -> class_logit.

    Options:
        text: the shorthand (the CLI's ``convscope maximize MODEL "layer:channel"``).
    """
    if not isinstance(text, str):
        raise ConvscopeError(f"objective must be a string like 'features.28:17', got {type(text).__name__}")
    parts = [p.strip() for p in text.strip().split(":")]
    if len(parts) < 2 or not parts[0]:
        raise ConvscopeError(f"objective {text!r} needs a channel after the layer; write {STRING_FORMS}")
    head, rest = parts[0], parts[1:]
    if head in ("logit", "class"):
        if len(rest) != 1:
            raise ConvscopeError(f"objective {text!r}: write 'logit:CLASS', e.g. 'logit:281'")
        return class_logit(_parse_indices(rest[0], text))
    if len(rest) == 1:
        return channel(head, _parse_indices(rest[0], text))
    if len(rest) == 3:
        if not (rest[1].isdigit() and rest[2].isdigit()):
            raise ConvscopeError(f"objective {text!r}: x and y must be numbers, as in 'layer:channel:x:y'")
        return neuron(head, _parse_indices(rest[0], text), int(rest[1]), int(rest[2]))
    raise ConvscopeError(f"objective {text!r} has {len(rest) + 1} parts; write {STRING_FORMS}")


def as_objective(objective: Objective | str) -> Objective:
    """An Objective from an Objective or the string shorthand."""
    if isinstance(objective, Objective):
        return objective
    if isinstance(objective, str):
        return objective_from_string(objective)
    raise ConvscopeError(f"objective must be an Objective (cs.objectives.channel(...)) or a string like "
                         f"'features.28:17', got {type(objective).__name__}")
