"""Gradient methods: how the target score changes with each input pixel."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import LayerError, TargetError
from ..hooks import Guard
from ..registry import register
from ..result import Result
from ..targets import Target, resolve_target
from ._base import package, prepare

__all__ = ["saliency"]


def input_gradient(scores: torch.Tensor, pixels: torch.Tensor) -> tuple[torch.Tensor]:
    """d sum(scores) / d pixels — a clear error when the score does not depend on the input."""
    if not scores.requires_grad:
        raise TargetError("the target score does not depend on the input; check the target callable")
    return torch.autograd.grad(scores.sum(), pixels)


@register("saliency", family="gradient", output="pixels", uses_layer=False,
          paper="Simonyan, Vedaldi & Zisserman 2013, Deep Inside Convolutional Networks")
def saliency(model: Any, x: torch.Tensor, *, target: Target = None, layer: None = None, abs: bool = True) -> Result:
    """Vanilla gradient saliency: |d score / d pixel|, (B, C, H, W).

    ``abs=False`` keeps the sign. Rendering shows the maximum over channels, as in the paper.
    Cost: one forward and one backward to the input, no weight gradients.
    """
    if layer is not None:
        raise LayerError("saliency explains input pixels and takes no layer; use gradcam for a layer's view")
    wrapped, x = prepare(model, x, target)
    with Guard(wrapped.module):
        pixels = wrapped.working_copy(x).requires_grad_(True)
        output = wrapped.module(pixels.clone())  # a non-leaf copy: the model may work in place on its input
        scores, classes = resolve_target(target, output)
        (grad,) = input_gradient(scores, pixels)
    data = grad.abs() if abs else grad
    return package(wrapped, x, data, method="saliency", classes=classes, scores=scores, output=output)
