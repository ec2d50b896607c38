"""What each layer outputs for a picture (feature maps), and each layer's configuration and weights.

``feature_maps`` records every requested layer in **one** forward pass, inside ``Guard`` (inference
mode, hooks removed afterwards), and stops the forward after the deepest requested layer. ``layer_info``
/ ``layer_access`` complete ``cs.summary`` / ``cs.layers`` with what Keras' ``layer.get_config()`` and
``layer.get_weights()`` give (seed 000): the module's settings and its weight shapes.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import nn

from ..engine import Cost
from ..errors import ConvscopeError, LayerError
from ..hooks import Guard, LayerRef
from ..layers import is_conv, resolve_layer, trace
from ..models import Model, as_model
from ..options import PythonOnly
from ..registry import CostContext, LayerUse, ReportSpec, register
from ..result import Displayable, Result

__all__ = ["FeatureWalk", "LayerDetails", "feature_maps", "layer_access", "layer_info", "top_channels"]


# -- recording layers (shared with optimize.py) ----------------------------------------------------
class _Stop(Exception):
    """Raised by a forward hook once every requested layer has run: the rest of the forward is
    skipped. Private: never leaves this package."""


class _Tap:
    """Forward hooks (owned by a Guard) recording layers' outputs as they are (the autograd graph kept
    when the Guard records one), stopping the forward after the last of them unless told not to."""

    def __init__(self, guard: Guard, model: Model, refs: dict[str, LayerRef]) -> None:
        self.refs = refs
        self.guard = guard
        self.acts: dict[str, torch.Tensor] = {}
        self.stop = True
        self._counts = dict.fromkeys(refs, 0)
        if refs:
            guard.add_hook(model.module, self._reset, pre=True)
            guard.track_picture()  # the picture's size, for the spatial views of token layers
        for key, ref in refs.items():
            guard.add_hook(ref.module, self._hook(key, ref))

    def _reset(self, module: Any, args: Any) -> None:
        for key in self._counts:
            self._counts[key] = 0

    def _hook(self, key: str, ref: LayerRef) -> Any:
        def hook(module: Any, args: Any, output: Any) -> Any:
            index = self._counts[key]
            self._counts[key] = index + 1
            if index != (ref.call or 0):
                return None
            if not isinstance(output, torch.Tensor):
                raise LayerError(f"layer {ref.label!r} returns {type(output).__name__}, not a tensor; "
                                 f"pick a layer that outputs a feature map")
            self.acts[key] = self.guard.layout(module, output).to_spatial(output)  # (B, C, *S): tokens and channels-last too
            if self.stop and len(self.acts) == len(self.refs):
                raise _Stop
            return output.clone()  # the forward goes on: an in-place op downstream must not change what we read

        return hook

    def run(self, module: nn.Module, x: torch.Tensor, *, output: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Forward ``x``: (outputs by key, the model's output, or None when the forward stopped early)."""
        self.acts = {}
        self.stop = not output
        out = None
        with contextlib.suppress(_Stop):
            out = module(x)
        missing = [self.refs[k].label for k in self.refs if k not in self.acts]
        if missing:
            raise LayerError(f"layer {missing[0]!r} did not run in the forward pass; pick a layer the model uses")
        return self.acts, out


def structure_trace(model: Model, input_shape: tuple[int, ...]) -> list[Any]:
    """``trace`` at ``input_shape``; for a model whose head takes one size only (Flatten -> Linear), the
    trace at its own input size: which modules run, and how often, does not depend on the size, and
    forwards that stop at a layer before the head run at any size."""
    try:
        return trace(model.module, input_shape)
    except RuntimeError:
        own = (model.channels, *model.input_size) if model.input_size else None
        if own is None or tuple(own) == tuple(input_shape):
            raise
        return trace(model.module, own)


def _resolve_refs(model: Model, keys: Sequence[Any], input_shape: tuple[int, ...]) -> dict[str, LayerRef]:
    """LayerRef by key (a name's label), checked against one traced forward (cached): a module that
    runs several times per forward must be named per call, ``name@k``."""
    resolved = [resolve_layer(model, key) for key in keys]
    refs = {ref.label: ref for ref in resolved}
    if not refs:
        return refs
    calls = Counter(record.module for record in structure_trace(model, input_shape))
    for ref in refs.values():
        count = calls.get(ref.module, 0)
        if count == 0:
            raise LayerError(f"layer {ref.label!r} did not run in the forward pass; pick a layer the model uses")
        if ref.call is None and count > 1:
            raise LayerError(f"layer {ref.name!r} runs {count} times per forward (a shared module); name one call: "
                             f"'{ref.name}@0' to '{ref.name}@{count - 1}'")
        if ref.call is not None and ref.call >= count:
            raise LayerError(f"layer {ref.name!r} runs {count} times per forward; use '{ref.name}@0' to '{ref.name}@{count - 1}'")
    return refs


def conv_layers(model: Model, input_shape: tuple[int, ...]) -> list[LayerRef]:
    """Every convolution call in execution order (``name@k`` for a shared module)."""
    records = trace(model.module, input_shape)
    calls = Counter(record.module for record in records)
    return [LayerRef(r.name, r.module, r.call if calls[r.module] > 1 else None) for r in records if is_conv(r.module)]


# -- feature maps --------------------------------------------------------------------------------
class FeatureWalk(dict, Displayable):
    """Several layers' feature maps from one forward: a dict ``label -> Result`` (kind "feature_maps"), in
    the order asked (execution order for the default walk through every convolution). Drawn as one row
    per layer: the input, then each layer's strongest channels (kind "feature_walk")."""

    kind = "feature_walk"

    def __repr__(self) -> str:
        first = next(iter(self.values()), None)
        batch = len(first) if first is not None else 0
        return f"FeatureWalk({len(self)} layers: {', '.join(self)}; {batch} picture{'s' if batch != 1 else ''})"


def _spread(items: list[Any], count: int | None) -> list[Any]:
    """At most ``count`` of ``items``, evenly spaced from the first to the last (all when None or enough)."""
    if count is None or len(items) <= count:
        return items
    if count == 1:
        return [items[-1]]
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def _feature_maps_cost(context: CostContext) -> Cost:
    """One forward of the batch (it stops after the deepest layer); memory: each recorded map three times
    (the capture, the copy handed downstream, the float32 result), from the layer trace at the batch's
    size (the one the tool makes itself, so it is cached)."""
    model, x = context.model, context.x
    forwards = context.pictures * context.area()
    if model is None or not isinstance(x, torch.Tensor) or x.dim() not in (4, 5):
        return Cost(forwards)
    requested = context.special.get("layer")
    requested = requested if requested is not None else context.options.get("layers")
    try:
        records = structure_trace(model, tuple(x.shape[1:]))
        if requested is None:
            wanted = _spread([r for r in records if is_conv(r.module)], context.options.get("max_layers"))
        else:
            refs = [resolve_layer(model, item) for item in (requested if isinstance(requested, (list, tuple)) else [requested])]
            wanted = [r for r in records if any(r.module is ref.module and r.call == (ref.call or 0) for ref in refs)]
    except (ConvscopeError, RuntimeError):
        return Cost(forwards)
    values = sum(math.prod(r.output_shape) for r in wanted if r.output_shape)
    memory = int(3 * 4 * values * context.pictures)
    layers, pictures = len(wanted), context.pictures
    detail = f"{layers} layer{'s' if layers != 1 else ''} recorded for {pictures} picture{'s' if pictures != 1 else ''}"
    return Cost(forwards, memory, detail)


def _report_layers(model: Model, count: int = 4, smallest: int = 10) -> dict[str, Any]:
    """The report's layers, where maps are still legible: the first convolution, then the last convolution at each
    smaller resolution down to maps of ``smallest`` pixels (7×7 maps are mosaics), ``count`` of them spread evenly."""
    if model.input_size is None:
        return {"max_layers": count}
    try:
        records = structure_trace(model, (model.channels, *model.input_size))
    except (ConvscopeError, RuntimeError):
        return {"max_layers": count}
    calls = Counter(record.module for record in records)
    convs = [r for r in records if is_conv(r.module) and r.output_shape is not None and len(r.output_shape) == 3]
    if not convs:
        return {"max_layers": count}
    first, last = convs[0], {}
    for record in convs[1:]:
        size = tuple(record.output_shape[1:])
        if min(size) >= smallest and size != tuple(first.output_shape[1:]):
            last[size] = record  # the last convolution at this resolution
    picked = [first, *last.values()]
    if len(picked) < 2:
        return {"max_layers": count}
    return {"layers": [LayerRef(r.name, r.module, r.call if calls[r.module] > 1 else None).label for r in _spread(picked, count)]}


@register("feature_maps", family="features", takes="images", returns="feature_maps", cost=_feature_maps_cost,
          layer=LayerUse("maps", "a few convolutions spread from the first to the last"),
          paper="Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks",
          report=ReportSpec(options=_report_layers, title="Feature maps from shallow to deep",
                            note="One row per layer, from the first convolution to deeper ones at smaller resolutions (maps "
                                 "smaller than 10 pixels are left out: they are mosaics): the channels that respond most, "
                                 "each scaled on its own (bright: strong) and enlarged without smoothing. Early layers follow "
                                 "edges and colours; deeper ones respond to textures and parts."))
def feature_maps(model: Any, x: torch.Tensor, *, layer: Any = None, layers: PythonOnly[Any] = None,
                 max_layers: Annotated[int, Field(ge=1, le=10_000)] | None = None) -> FeatureWalk | Result:
    """Feature maps: what layers output for the pictures, all from one forward pass that stops after the deepest.

    ``layer``: one name or module (-> one Result, kind "feature_maps"), a list of them (-> a
    :class:`FeatureWalk`, a dict label -> Result in the order given), or None for every convolution in
    execution order (seed 003's walk through VGG16's 13 conv layers; ``max_layers`` spreads fewer from
    the first to the last). Each Result has ``data`` (B, C, h, w) raw activations — (B, C, t, h, w) for a video
    (B, C, T, H, W) through 3-D layers, drawn as frames — and ``meta["mean_activation"]`` (B, C); ``inputs`` is ``x``.

    Options:
        layers: the same as layer (its older name; Python only).
        max_layers: with no layer chosen, show at most this many convolutions, spread evenly from the first to the last
            (None: every convolution).
    """
    wrapped = as_model(model)
    wrapped.check_input(x)
    if layer is not None and layers is not None:
        raise ConvscopeError("pass layer= or layers= (its older name), not both")
    chosen = layer if layer is not None else layers
    shape = tuple(x.shape[1:])
    single = isinstance(chosen, (str, nn.Module, LayerRef))
    if chosen is None:
        requested = _spread(conv_layers(wrapped, shape), max_layers)
        if not requested:
            raise LayerError("the model has no convolution; pass layer=[...] naming the layers to record")
    else:
        requested = [chosen] if single else list(chosen)
        if not requested:
            raise LayerError("layer is an empty list; name one or more layers (see cs.layers(model))")
    refs = _resolve_refs(wrapped, requested, shape)
    with Guard(wrapped.module, grad=False) as guard:
        tap = _Tap(guard, wrapped, refs)
        acts, _ = tap.run(wrapped.module, wrapped.working_copy(x), output=False)
    results = FeatureWalk()
    for key, ref in refs.items():
        data = acts[key].float().contiguous().clone()  # a normal tensor (made outside inference mode)
        meta: dict[str, Any] = {"shape": tuple(data.shape[1:])}
        if data.dim() in (4, 5):  # a picture's (B, C, h, w) or a video's (B, C, t, h, w)
            meta["mean_activation"] = data.mean(dim=tuple(range(2, data.dim())))
        results[key] = Result(data=data, method="feature_maps", layer=ref.label, meta=meta, inputs=x.detach(),
                              mean=wrapped.mean, std=wrapped.std, kind="feature_maps")
    return next(iter(results.values())) if single else results


def top_channels(result: Result, k: int = 8, *, index: int = 0) -> torch.Tensor:
    """The ``k`` channels of image ``index`` with the largest mean activation, strongest first (k,).

    Options:
        index: which image of the batch.
    """
    data = result.data
    if data.dim() not in (4, 5):
        raise ConvscopeError(f"top_channels needs (B, C, h, w) feature maps (or a video's (B, C, t, h, w)), "
                             f"got shape {tuple(data.shape)}")
    means = data[index].float().mean(dim=tuple(range(1, data.dim() - 1)))
    return means.topk(max(1, min(int(k), means.numel()))).indices


# -- layer configuration and weights (seed 000's "layer access") ---------------------------------
@dataclass(frozen=True)
class LayerDetails:
    """One layer as Keras' ``get_config()`` + ``get_weights()`` describe it."""

    name: str
    type: str
    config: dict[str, Any]  # the module's plain settings (in/out channels, kernel, stride, ...)
    weights: dict[str, tuple[int, ...]]  # parameter and buffer shapes, by name
    params: int
    trainable: bool  # every parameter requires grad
    output_shape: tuple[int, ...] | None = None  # without the batch dimension (None: input size unknown)
    text: str = field(default="", repr=False)  # the module's own repr

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly (tuples become lists)."""
        plain = lambda v: list(v) if isinstance(v, tuple) else v
        return {"name": self.name, "type": self.type, "config": {k: plain(v) for k, v in self.config.items()},
                "weights": {k: list(v) for k, v in self.weights.items()}, "params": self.params,
                "trainable": self.trainable, "output_shape": plain(self.output_shape), "repr": self.text}


_PLAIN = (bool, int, float, str, type(None))


def _config(module: nn.Module) -> dict[str, Any]:
    config = {}
    for key, value in vars(module).items():
        if key.startswith("_") or key == "training":
            continue
        if isinstance(value, _PLAIN) or (isinstance(value, tuple) and all(isinstance(v, _PLAIN) for v in value)):
            config[key] = value
    return config


def _details(name: str, module: nn.Module, output_shape: tuple[int, ...] | None) -> LayerDetails:
    own = list(module.named_parameters(recurse=False))
    weights = {n: tuple(p.shape) for n, p in own}
    weights.update({n: tuple(b.shape) for n, b in module.named_buffers(recurse=False)})
    return LayerDetails(name=name, type=type(module).__name__, config=_config(module), weights=weights,
                        params=sum(p.numel() for _, p in own), trainable=all(p.requires_grad for _, p in own),
                        output_shape=output_shape, text=repr(module) if not list(module.children()) else module.extra_repr())


def _output_shapes(model: Model) -> dict[str, tuple[int, ...] | None]:
    if model.input_size is None:
        return {}
    from ..layers import layers as list_layers

    return {row.name: row.output_shape for row in list_layers(model)}


def layer_info(model: Any, layer: Any) -> LayerDetails:
    """One layer's type, settings (``config``), weight shapes, parameter count and output shape.

    Options:
        layer: a dotted name (``"features.28"``) or a module of the model.
    """
    wrapped = as_model(model)
    ref = resolve_layer(wrapped, layer)
    return _details(ref.label, ref.module, _output_shapes(wrapped).get(ref.label))


def layer_access(model: Any) -> dict[str, LayerDetails]:
    """Every layer (a module without children, or one owning parameters) by dotted name, in definition
    order: ``cs.layer_access(m)["features.28"].weights`` -> ``{"weight": (512, 512, 3, 3), "bias": (512,)}``.

    Options:
        (none)
    """
    wrapped = as_model(model)
    shapes = _output_shapes(wrapped)
    out = {}
    for name, module in wrapped.module.named_modules():
        if not name:
            continue
        if next(module.children(), None) is None or next(module.parameters(recurse=False), None) is not None:
            out[name] = _details(name, module, shapes.get(name))
    return out
