"""Layers by dotted name: listing in execution order, a Keras-style summary, name resolution with
suggestions, and the default layer for CAM methods (the last convolutional feature map).

Names are ``named_modules()`` names (``"layer4.1.conv2"``), the one way to name a layer; a module
that runs several times per forward is named per call, ``"layer1.0.relu@2"``.
"""

from __future__ import annotations

import difflib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .errors import LayerError, ModelError
from .hooks import CallRecord, Guard, LayerRef
from .result import Table

if TYPE_CHECKING:
    from .models import Model

__all__ = ["LayerInfo", "conv_weight", "default_cam_layer", "is_conv", "layers", "resolve_layer", "summary", "trace"]

LayerSpec = str | nn.Module | LayerRef | None


@dataclass(frozen=True)
class LayerInfo:
    """One row of :func:`layers`: a leaf module call in execution order."""

    name: str  # dotted name, with "@k" for the k-th call of a shared module
    type: str
    output_shape: tuple[int, ...] | None  # without the batch dimension; None if not a tensor
    params: int  # parameters owned by this module (counted on its first call only)
    trainable: bool  # all its parameters require grad (True when it has none)
    module: nn.Module


# -- tracing ----------------------------------------------------------------------------------
_TRACES: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


def _fingerprint(module: nn.Module) -> tuple:
    return tuple((name, id(m)) for name, m in module.named_modules())


def _trace_entry(module: nn.Module, input_shape: Sequence[int], device: torch.device | None = None,
                 dtype: torch.dtype | None = None) -> tuple[list[CallRecord], dict[str, Any]]:
    """(records, memo) for one forward on a zeros batch; memo holds values derived from the records."""
    from .models import module_device_dtype

    dev, dt = module_device_dtype(module)
    shape = tuple(int(s) for s in input_shape)
    device, dtype = device or dev, dtype or dt
    key = (shape, device, dtype, _fingerprint(module))
    cache = _TRACES.setdefault(module, {})
    if key not in cache:
        names = {m: n for n, m in module.named_modules()}
        with Guard(module, grad=False) as guard:
            records = guard.trace(names)
            module(torch.zeros((1, *shape), device=device, dtype=dtype))
        cache.clear()  # one entry per model: the latest shape
        cache[key] = (records, {})
    return cache[key]


def trace(module: nn.Module, input_shape: Sequence[int], *, device: torch.device | None = None,
          dtype: torch.dtype | None = None) -> list[CallRecord]:
    """Every module call of one forward on a zeros batch of ``input_shape`` (C, H, W), in completion
    order (children before their container). Cached per model, shape and structure."""
    return _trace_entry(module, input_shape, device, dtype)[0]


def _input_shape(model: Model | nn.Module, input_size: Sequence[int] | None) -> tuple[int, ...]:
    from .models import Model

    if input_size is not None:
        size = tuple(int(s) for s in input_size)
        if len(size) == 2:
            channels = model.channels if isinstance(model, Model) else None
            return (channels or 3, *size)
        if len(size) in (3, 4):  # (C, H, W), or (C, T, H, W) for video and volumes
            return size
        raise ModelError(f"input_size must be (H, W), (C, H, W) or (C, T, H, W) for video, got {tuple(input_size)}")
    if isinstance(model, Model) and model.input_size is not None:
        return (model.channels, *model.input_size)
    raise ModelError("this module has no known input size; pass input_size=(C, H, W) (or (C, T, H, W) for video) "
                     "or wrap it in cs.Model(..., input_size=...)")


def _module_of(model: Model | nn.Module) -> nn.Module:
    from .models import Model

    if isinstance(model, Model):
        return model.module
    if isinstance(model, nn.Module):
        return model
    raise ModelError(f"expected a cs.Model or a torch.nn.Module, got {type(model).__name__}")


# -- listing and summary ----------------------------------------------------------------------
def layers(model: Model | nn.Module, *, input_size: Sequence[int] | None = None) -> list[LayerInfo]:
    """Every leaf layer call in execution order with its output shape and parameter count.

    ``input_size`` is (H, W) or (C, H, W); a :class:`~convscope.Model` knows its own.
    """
    module = _module_of(model)
    records = trace(module, _input_shape(model, input_size))
    leaf_records = [r for r in records if r.is_leaf]
    total_calls: dict[nn.Module, int] = {}
    for r in leaf_records:
        total_calls[r.module] = total_calls.get(r.module, 0) + 1
    rows = []
    for r in leaf_records:
        own = list(r.module.parameters(recurse=False))
        name = r.name if total_calls[r.module] == 1 else f"{r.name}@{r.call}"
        rows.append(LayerInfo(
            name=name,
            type=type(r.module).__name__,
            output_shape=r.output_shape,
            params=sum(p.numel() for p in own) if r.call == 0 else 0,
            trainable=all(p.requires_grad for p in own),
            module=r.module,
        ))
    return rows


def summary(model: Model | nn.Module, *, input_size: Sequence[int] | None = None) -> Table:
    """The table Keras' ``model.summary()`` prints (NCHW shapes), plus parameter totals: a
    :class:`~convscope.result.Table` — text when printed, an HTML table in a notebook; ``columns`` and
    ``rows`` (name, type, output shape, parameters) hold the cells."""
    from .models import Model

    module = _module_of(model)
    shape = _input_shape(model, input_size)
    rows = layers(model, input_size=input_size)
    name = model.name if isinstance(model, Model) and model.name else type(module).__name__
    cells = [(f"{r.name} ({r.type})", "(None, " + ", ".join(map(str, r.output_shape)) + ")"
              if r.output_shape is not None else "-", f"{r.params:,}") for r in rows]
    header = ("Layer (type)", "Output Shape", "Param #")
    widths = [max(len(header[i]), *(len(c[i]) for c in cells)) + 2 for i in range(3)] if cells else [14, 14, 9]
    line = "─" * sum(widths)
    out = [f'Model: "{name}"   input: (None, {", ".join(map(str, shape))})', line,
           "".join(h.ljust(w) for h, w in zip(header, widths)), "═" * sum(widths)]
    out += ["".join(c.ljust(w) for c, w in zip(cell, widths)) for cell in cells]
    params = list(module.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    size_mb = sum(p.numel() * p.element_size() for p in params) / 2**20
    totals = [f"Total params: {total:,} ({size_mb:.2f} MB)", f"Trainable params: {trainable:,}",
              f"Non-trainable params: {total - trainable:,}"]
    out += ["═" * sum(widths), *totals, line]
    table_rows = [(r.name, r.type, "-" if r.output_shape is None else tuple(r.output_shape), r.params) for r in rows]
    return Table("\n".join(out), columns=("layer", "type", "output shape", "parameters"), rows=table_rows,
                 title=f"{name}: {len(rows)} layer calls, input (None, {', '.join(map(str, shape))}); " + "; ".join(totals))


# -- resolution -------------------------------------------------------------------------------
def _suggest(name: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    if not close:
        prefix = name.rsplit(".", 1)[0]
        close = [n for n in names if n.startswith(prefix)][:3]
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "; see cs.layers(model) for the names"


def resolve_layer(model: Model | nn.Module, layer: LayerSpec) -> LayerRef:
    """A dotted name (optionally ``@call``), a module object or a LayerRef -> LayerRef."""
    module = _module_of(model)
    if isinstance(layer, LayerRef):
        return layer
    if isinstance(layer, nn.Module):
        for name, m in module.named_modules():
            if m is layer:
                if m is module:
                    raise LayerError("the layer is the whole model; pick one of its submodules")
                return LayerRef(name, m)
        raise LayerError(f"the module {type(layer).__name__} is not part of this model; pass one of its submodules or a dotted name")
    if not isinstance(layer, str):
        raise LayerError(f"layer must be a dotted name, a module or None, got {type(layer).__name__}")
    name, _, call_text = layer.partition("@")
    call: int | None = None
    if call_text:
        if not call_text.isdigit():
            raise LayerError(f"layer {layer!r}: the part after '@' must be a call number like '@0'")
        call = int(call_text)
    modules = dict(module.named_modules())
    modules.pop("", None)
    if name not in modules:
        raise LayerError(f"unknown layer {name!r}{_suggest(name, list(modules))}")
    return LayerRef(name, modules[name], call)


def conv_weight(module: nn.Module) -> torch.Tensor | None:
    """A convolution's kernels as (out, in, kh, kw) — or (out, in, kt, kh, kw) — or None: nn.Conv2d / nn.Conv3d, any
    module owning a 4-D or 5-D ``weight`` (custom or exported convolutions), or a wrapper that gives them as
    ``convscope_conv_weight`` (a Keras Conv2D, whose kernel is (kh, kw, in, out))."""
    given = getattr(module, "convscope_conv_weight", None)
    if isinstance(given, torch.Tensor):
        return given
    weight = module._parameters.get("weight") if hasattr(module, "_parameters") else None
    return weight if weight is not None and weight.dim() in (4, 5) else None


def is_conv(module: nn.Module) -> bool:
    """A 2-D or 3-D convolution (see :func:`conv_weight`)."""
    return isinstance(module, (nn.Conv2d, nn.Conv3d)) or conv_weight(module) is not None


def _is_pooling(module: nn.Module) -> bool:
    """A pooling layer: torch's max / average / adaptive pooling, or a wrapper named like one (Keras' MaxPooling2D)."""
    from torch.nn.modules import pooling

    return isinstance(module, (pooling._MaxPoolNd, pooling._AvgPoolNd, pooling._AdaptiveAvgPoolNd,
                               pooling._AdaptiveMaxPoolNd)) or "Pooling" in type(module).__name__


def default_cam_layer(model: Model | nn.Module, input_shape: Sequence[int]) -> LayerRef:
    """The layer a person would give a CAM method, by one rule for every architecture: the last layer output that
    is still a map of the picture (in its spatial view, :mod:`convscope.spatial`: token sequences and channels-last maps
    count) and from which the head is reached — the target's gradient on it is not zero
    (measured once on a noise picture, cached with the trace) — so never a gate (C, 1, 1), never after the head's
    pooling, never the patch tokens a class-token head ignores. Then: the block or stage output rather than a layer
    inside it (the outermost module giving the same tensor, short of one holding the whole trunk); a pooling or
    re-layout (Permute) leaf is replaced by what it reads; inside a transformer block whose own output does not reach
    the head (the last ViT block) the last map of the block's width (its ``norm1``, the input of the last attention).
    Models with a ``backbone`` (or ``encoder``) — segmentation and detection — take the backbone's last map.
    Examples: ``features.29`` (VGG16), ``layer4`` (ResNet), ``_swish@1`` (EfficientNet-Lite0), ``features.7``
    (ConvNeXt), ``blocks.11.norm1`` (timm ViT), ``backbone.layer4`` (FCN). When no layer fits, a LayerError lists
    the candidates.
    """
    module = _module_of(model)
    shape = tuple(int(s) for s in input_shape)
    _, memo = _trace_entry(module, shape)
    if "cam" not in memo:
        memo["cam"] = _find_cam_layer(module, shape)
    return memo["cam"]


@dataclass
class _Seen:
    """One module call of the probing forward: its output and first input (the objects, for identity), the output's
    spatial layout and the target's gradient on it."""

    name: str
    module: nn.Module
    call: int
    output: torch.Tensor | None
    source: torch.Tensor | None
    layout: Any = None
    grad: torch.Tensor | None = None


_RELAYOUT = ("Permute", "Transpose", "Reshape", "View", "Flatten", "Unflatten", "Identity", "Dropout")


def _trunk(module: nn.Module) -> str | None:
    """The dotted name of a dense-prediction model's feature extractor (``backbone.body`` for torchvision detectors,
    ``backbone.features`` for SSD, ``backbone`` for torchvision segmentation, ``encoder`` for U-Nets), or None."""
    for name in ("backbone", "encoder"):
        part = getattr(module, name, None)
        if isinstance(part, nn.Module) and part is not module:
            for inner in ("body", "features"):
                if isinstance(getattr(part, inner, None), nn.Module):
                    return f"{name}.{inner}"
            return name
    return None


def _probe_score(output: Any) -> torch.Tensor | None:
    """What the probe differentiates: the top-1 logit of a (B, K) output; the sum of any other output's values."""
    if isinstance(output, torch.Tensor):
        if not output.requires_grad or not output.is_floating_point() or output.numel() == 0:
            return None
        flat = output.float().reshape(output.shape[0], -1)
        return flat[0].max() if output.dim() == 2 else flat.sum()
    values = output.values() if isinstance(output, dict) else output if isinstance(output, (list, tuple)) else []
    for value in values:
        found = _probe_score(value)
        if found is not None:
            return found
    return None


def _probe(module: nn.Module, shape: tuple[int, ...]) -> tuple[list[_Seen], bool, int | None, bool]:
    """Every module call of one forward+backward on a noise picture (seeded), with outputs, layouts and gradients;
    whether gradients were measured (False when the output has no differentiable score); the number of classes K of
    a (B, K) or (B, K, H, W) output (else None); whether the predictions are dense (segmentation maps, detections)."""
    from .hooks import _prefix_tokens
    from .models import module_device_dtype
    from .spatial import layout_for

    device, dtype = module_device_dtype(module)
    picture = shape[1:]
    prefix = _prefix_tokens(module)
    seen: list[_Seen] = []
    counts: dict[nn.Module, int] = {}

    def make(name: str) -> Any:
        def hook(m: nn.Module, args: Any, output: Any) -> None:
            call = counts.get(m, 0)
            counts[m] = call + 1
            first = args[0] if args and isinstance(args[0], torch.Tensor) else None
            out = output if isinstance(output, torch.Tensor) else None
            layout = layout_for(m, out.shape[1:], picture, prefix_tokens=prefix) if out is not None else None
            seen.append(_Seen(name, m, call, out, first, layout))

        return hook

    noise = torch.rand((1, *shape), generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
    with Guard(module, grad=True) as guard:
        for name, m in module.named_modules():
            if m is not module:
                guard.add_hook(m, make(name))
        output = module(noise.requires_grad_(True))
        classes = int(output.shape[1]) if isinstance(output, torch.Tensor) and output.dim() >= 2 else None
        dense = not (isinstance(output, torch.Tensor) and output.dim() == 2)
        score = _probe_score(output)
        tensors = [s.output for s in seen if s.output is not None and s.output.requires_grad and s.layout is not None]
        unique = list({id(t): t for t in tensors}.values())
        if score is None or not unique:
            return seen, False, classes, dense
        grads = torch.autograd.grad(score, unique, allow_unused=True, retain_graph=True)
        if all(g is None or not g.any() for g in grads):
            # a head initialized to zeros (torchvision's ViT) gives every layer a zero gradient: read the head's input
            # instead, along a fixed random direction (a plain sum can be constant, e.g. after a LayerNorm)
            heads = [s.source for s in seen if s.source is not None and s.source.requires_grad and s.output is not None
                     and s.layout is None and next(s.module.parameters(recurse=False), None) is not None]
            if not heads:
                return seen, False, classes, dense
            features = heads[-1].float()
            direction = torch.randn(features.shape, generator=torch.Generator().manual_seed(1)).to(features.device)
            grads = torch.autograd.grad((features * direction).sum(), unique, allow_unused=True)
    by_id = {id(t): g for t, g in zip(unique, grads)}
    for s in seen:
        s.grad = by_id.get(id(s.output)) if s.output is not None else None
    return seen, True, classes, dense


def _has_map(s: _Seen, picture: Sequence[int]) -> bool:
    from .spatial import grid_fits

    layout = s.layout
    return (layout is not None and layout.positions >= 2
            and grid_fits(layout.grid, picture[-len(layout.grid):]))


def _reaches_head(s: _Seen) -> bool:
    if s.grad is None:
        return False
    energy = s.layout.to_spatial(s.grad.detach()).abs().float().sum(dim=1).flatten()
    return bool(energy.numel()) and bool(energy.max() > 0)


def _find_cam_layer(module: nn.Module, shape: tuple[int, ...]) -> LayerRef:
    try:
        seen, measured, classes, dense = _probe(module, shape)
    except (RuntimeError, TypeError, ValueError):  # a model that cannot be differentiated on noise: the maps alone decide
        return _structural_cam_layer(module, shape)
    picture = shape[1:]
    trunk = _trunk(module) if dense else None
    inside = (lambda name: name == trunk or name.startswith(trunk + ".")) if trunk else (lambda name: True)
    # a class-score map (SqueezeNet's last 1x1 convolution, a segmentation head: as many channels as the output has
    # classes) is the head, not a feature map
    head_width = classes if dense or (classes or 0) >= 10 else None  # a 2-class CNN may well have 2-channel maps
    maps = [i for i, s in enumerate(seen) if inside(s.name) and _has_map(s, picture) and s.layout.channels != head_width]
    use_grad = measured and trunk is None
    fits = [i for i in maps if not use_grad or _reaches_head(seen[i])]
    if not fits:
        named = [seen[i].name for i in maps][-5:]
        listed = f"; layers with maps: {', '.join(repr(n) for n in named)}" if named else ""
        why = "from which the model's output is reached" if maps else "with a (B, C, h, w) map or a token grid"
        raise LayerError(f"no layer fits as the default CAM layer (none {why}); pass layer=...{listed}")
    candidates = set(fits)
    chosen = fits[-1]
    for _ in range(len(seen)):
        chosen = _innermost(seen, chosen, candidates)
        moved = _step_back(seen, chosen, candidates)
        if moved is None or moved == chosen:
            break
        chosen = moved
    chosen = _outermost(seen, chosen, module)
    s = seen[chosen]
    shared = sum(1 for other in seen if other.module is s.module) > 1
    return LayerRef(s.name, s.module, s.call if shared else None)


def _step_back(seen: list[_Seen], chosen: int, candidates: set[int]) -> int | None:
    """One correction of the chosen call: a pooling or re-layout leaf -> the call whose output it reads; a call inside
    a block whose own output does not reach the head -> the last map of the block's width inside it (or before it)."""
    s = seen[chosen]
    relayout = type(s.module).__name__ in _RELAYOUT and next(s.module.parameters(), None) is None
    if (_is_pooling(s.module) or relayout) and s.output is not s.source:  # an Identity hands on its input: keep it
        if s.source is not None:
            sources = [i for i in range(chosen) if seen[i].output is s.source and i in candidates]
            if sources:
                return sources[-1]
        earlier = [i for i in candidates if i < chosen and not seen[i].name.startswith(s.name + ".")]
        return max(earlier) if earlier else None
    # the enclosing calls that complete after it without reaching the head (a transformer's last block, its attention)
    enclosing = [j for j in range(chosen + 1, len(seen)) if s.name.startswith(seen[j].name + ".") and j not in candidates]
    if not enclosing:
        return chosen
    with_map = [j for j in enclosing if seen[j].layout is not None]
    j = with_map[0] if with_map else enclosing[-1]  # the innermost giving tokens; else the outermost (CaiT's class attention)
    block = seen[j]
    width = block.layout.channels if block.layout is not None else None
    within = sorted(i for i in candidates if i < j and seen[i].name.startswith(block.name + ".")
                    and (width is None or seen[i].layout.channels == width))
    children = [i for i in within if "." not in seen[i].name[len(block.name) + 1:]]  # its norm1, not the attention's v
    if children or within:
        return (children or within)[-1]
    before = [i for i in candidates if i < j and not seen[i].name.startswith(block.name + ".")]
    return max(before) if before else None


def _innermost(seen: list[_Seen], chosen: int, candidates: set[int]) -> int:
    """The first call to complete with the same tensor as ``chosen`` (a container's output is its last child's)."""
    target = seen[chosen].output
    return next((i for i in range(chosen + 1) if target is not None and seen[i].output is target and i in candidates), chosen)


def _outermost(seen: list[_Seen], chosen: int, module: nn.Module) -> int:
    """The block or stage giving the same tensor as ``chosen`` (the last call to complete with it), short of a module
    holding the whole trunk (the first layer too)."""
    target = seen[chosen].output
    if target is None:
        return chosen
    first_leaf = next((s.module for s in seen if next(s.module.children(), None) is None), None)
    best = chosen
    for i in range(chosen + 1, len(seen)):
        s = seen[i]
        passive = type(s.module).__name__ in _RELAYOUT and next(s.module.parameters(), None) is None  # Identity after a stage
        if s.output is target and not passive and not any(m is first_leaf for m in s.module.modules()):
            best = i
    return best


def _structural_cam_layer(module: nn.Module, shape: tuple[int, ...]) -> LayerRef:
    """Without gradients: after the last convolution, the last call whose output is still a map of the same size."""
    records = trace(module, shape)
    conv_index = max((i for i, r in enumerate(records) if is_conv(r.module)), default=None)
    if conv_index is None:
        raise LayerError("the model has no convolution and its output cannot be differentiated to find the layer; "
                         "pass layer=... naming a layer with a (B, C, h, w) output")
    calls: dict[nn.Module, int] = {}
    for r in records:
        calls[r.module] = calls.get(r.module, 0) + 1
    conv = records[conv_index]
    spatial = conv.output_shape[1:] if conv.output_shape else None
    best = conv
    for r in records[conv_index + 1:]:
        if r.output_shape is None or len(r.output_shape) != len(conv.output_shape or ()) or r.output_shape[1:] != spatial \
                or _is_pooling(r.module):
            break
        best = r
    call = None if calls[best.module] == 1 else best.call
    return LayerRef(best.name, best.module, call)
