"""A convolution's filters (kernels) as a Result, and "is my model trained?" by comparing filters.

Trained first-layer filters are smooth oriented edges and colour blobs (Krizhevsky et al. 2012;
Zeiler & Fergus 2014); randomly initialized ones are independent noise. ``smoothness`` puts a number
on it: the correlation between horizontally and vertically neighbouring weights of every kernel —
near 0 for random initialization, clearly positive after training.
"""

from __future__ import annotations

from typing import Any

import torch

from ..engine import Cost
from ..errors import LayerError
from ..hooks import LayerRef
from ..layers import conv_weight, is_conv, resolve_layer, trace
from ..models import Model, as_model
from ..registry import LayerUse, ReportSpec, register
from ..result import Result

__all__ = ["compare_filters", "filter_smoothness", "filters", "first_conv"]


def first_conv(model: Any) -> LayerRef:
    """The first convolution the model runs (execution order when the input size is known, else
    definition order).

    Options:
        (none)
    """
    wrapped = as_model(model)
    if wrapped.input_size is not None:
        for record in trace(wrapped.module, (wrapped.channels, *wrapped.input_size)):
            if is_conv(record.module):
                return LayerRef(record.name, record.module)
    for name, module in wrapped.module.named_modules():
        if name and is_conv(module):
            return LayerRef(name, module)
    raise LayerError("the model has no convolution (Conv2d or a module with a 4-D weight); nothing to show")


def filter_smoothness(weights: torch.Tensor) -> float:
    """Pearson correlation between neighbouring weights of (out, in, kh, kw) kernels, rows and columns
    pooled: ~0 for random initialization, positive for trained (smooth) filters; nan for 1x1 kernels."""
    w = weights.detach().float()
    pairs = []
    if w.shape[-1] > 1:
        pairs.append((w[..., :, :-1].reshape(-1), w[..., :, 1:].reshape(-1)))
    if w.shape[-2] > 1:
        pairs.append((w[..., :-1, :].reshape(-1), w[..., 1:, :].reshape(-1)))
    if not pairs:
        return float("nan")
    a = torch.cat([p[0] for p in pairs])
    b = torch.cat([p[1] for p in pairs])
    a, b = a - a.mean(), b - b.mean()
    denominator = float((a.norm() * b.norm()).clamp_min(1e-12))
    return float((a * b).sum()) / denominator


@register("filters", family="features", takes="model", returns="filters", cost=lambda context: Cost(0),
          layer=LayerUse("conv", "the first convolution"),
          paper="Krizhevsky, Sutskever & Hinton 2012; Zeiler & Fergus 2014 (first-layer filters)",
          report=ReportSpec(title="First-layer filters",
                            note="Each tile is one kernel of the first convolution (on a colour model its three colour "
                                 "channels drawn as one colour picture), grey for weight 0, brighter or darker for positive or "
                                 "negative weights, enlarged without smoothing. What to look for depends on the kernel's "
                                 "size: the caption says it for this model."))
def filters(model: Any, layer: Any = None) -> Result:
    """Filters: the kernels of a convolution as raw weights (float32), read without a forward pass.

    ``data`` is (out, in, kh, kw).
    ``layer``: a dotted name or module (default: the first convolution). ``meta``: ``type``,
    ``shape``, ``stride``, ``groups``, ``colour`` (True for the first layer of a 3-channel model:
    drawn as RGB kernels), ``smoothness`` (see :func:`filter_smoothness`).
    """
    wrapped: Model = as_model(model)
    ref = first_conv(wrapped) if layer is None else resolve_layer(wrapped, layer)
    module = ref.module
    weight = conv_weight(module)
    if weight is None or weight.dim() != 4:
        raise LayerError(f"layer {ref.label!r} ({type(module).__name__}) is not a 2-D convolution with (out, in, kh, kw) "
                         f"weights; pick a Conv2d (see cs.layers(model))")
    data = weight.detach().float().clone()
    first = ref.module is first_conv(wrapped).module
    return Result(data=data, method="filters", layer=ref.name, kind="filters", meta={
        "type": type(module).__name__,
        "shape": tuple(data.shape),
        "stride": tuple(getattr(module, "stride", ())),
        "groups": int(getattr(module, "groups", 1)),
        "colour": bool(first and data.shape[1] == 3),
        "smoothness": filter_smoothness(data),
    })


def compare_filters(trained: Any, untrained: Any, layer: Any = None) -> tuple[Result, Result]:
    """The same layer's filters in two models of one architecture, e.g. pretrained vs
    ``cs.load_model(name, weights=None)``: "is my model trained?" (seed 004). Draw them side by side
    with ``convscope.render.features.compare_filters_figure``; ``meta["smoothness"]`` tells them apart.

    Options:
        layer: the convolution (default: the first one).
    """
    a = filters(trained, layer)
    b = filters(untrained, a.layer)
    if a.data.shape != b.data.shape:
        raise LayerError(f"layer {a.layer!r} has shape {tuple(a.data.shape)} in one model and {tuple(b.data.shape)} "
                         f"in the other; compare two models of the same architecture")
    return a, b
