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

__all__ = ["LayerInfo", "default_cam_layer", "is_conv", "layers", "resolve_layer", "summary", "trace"]

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
        if len(size) == 3:
            return size
        raise ModelError(f"input_size must be (H, W) or (C, H, W), got {tuple(input_size)}")
    if isinstance(model, Model) and model.input_size is not None:
        return (model.channels, *model.input_size)
    raise ModelError("this module has no known input size; pass input_size=(C, H, W) or wrap it in cs.Model(..., input_size=...)")


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


def is_conv(module: nn.Module) -> bool:
    """A 2-D convolution: nn.Conv2d and subclasses, or any module owning a 4-D ``weight`` (custom or
    exported convolutions)."""
    if isinstance(module, nn.Conv2d):
        return True
    weight = module._parameters.get("weight") if hasattr(module, "_parameters") else None
    return weight is not None and weight.dim() == 4


def _is_pooling(module: nn.Module) -> bool:
    from torch.nn.modules import pooling

    return isinstance(module, (pooling._MaxPoolNd, pooling._AvgPoolNd, pooling._AdaptiveAvgPoolNd,
                               pooling._AdaptiveMaxPoolNd))


def default_cam_layer(model: Model | nn.Module, input_shape: Sequence[int]) -> LayerRef:
    """The last convolutional feature map: after the last Conv2d call, the last module call (leaf or
    container, called once, not a pooling) whose output is still a 4-D map of the same spatial size —
    so ``features.29`` (VGG16), ``layer4`` (ResNet), ``_swish@1`` (EfficientNet-Lite0). Cached with the trace.
    """
    records, memo = _trace_entry(_module_of(model), input_shape)
    if "cam" not in memo:
        memo["cam"] = _find_cam_layer(records)
    return memo["cam"]


def _find_cam_layer(records: list[CallRecord]) -> LayerRef:
    conv_index = max((i for i, r in enumerate(records) if is_conv(r.module)), default=None)
    if conv_index is None:
        raise LayerError("the model has no Conv2d layer to explain; pass layer=... naming a layer with a (B, C, H, W) output")
    calls: dict[nn.Module, int] = {}
    for r in records:
        calls[r.module] = calls.get(r.module, 0) + 1
    conv = records[conv_index]
    spatial = conv.output_shape[1:] if conv.output_shape else None
    best = conv
    for r in records[conv_index + 1:]:
        if r.output_shape is None or len(r.output_shape) != 3 or r.output_shape[1:] != spatial or _is_pooling(r.module):
            break
        best = r
    call = None if calls[best.module] == 1 else best.call
    return LayerRef(best.name, best.module, call)
