"""The CAM family: one engine, and each variant a small function of (activations, gradients).

A variant differs from Grad-CAM only in how it weights the channels of a layer's feature map
(pytorch-grad-cam's shape); the engine does the rest: one forward that records the layer and picks
the target, the head's backward to that layer only (the graph below it is cut), a batched weighted
sum and one bilinear upsampling to the input's H×W.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import LayerError, TargetError
from ..hooks import Guard
from ..layers import LayerSpec, default_cam_layer, resolve_layer
from ..registry import register
from ..result import Result
from ..targets import Target, resolve_target
from ._base import package, prepare

__all__ = ["cam_engine", "gradcam"]

# (activations (B, K, h, w), gradients (B, K, h, w)) -> channel weights (B, K, 1, 1)
ChannelWeights = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cam_engine(model: Any, x: torch.Tensor, *, target: Target, layer: LayerSpec, method: str,
               channel_weights: ChannelWeights, relu: bool = True) -> Result:
    """Shared CAM computation: ``relu(sum_k w_k A_k)`` upsampled to (B, 1, H, W)."""
    wrapped, x = prepare(model, x, target)
    ref = default_cam_layer(wrapped, tuple(x.shape[1:])) if layer is None else resolve_layer(wrapped, layer)
    with Guard(wrapped.module, grad="from_capture") as guard:
        capture = guard.capture(ref)
        output = wrapped.module(wrapped.working_copy(x))
        acts = capture.check()
        if acts.dim() != 4:
            raise LayerError(f"layer {ref.label!r} outputs shape {tuple(acts.shape)}, not a (B, C, h, w) feature map")
        scores, classes = resolve_target(target, output)
        if not scores.requires_grad:
            raise TargetError(f"the target score does not depend on layer {ref.label!r}: a target that ignores the "
                              f"model's output, or a layer after the output")
        (grads,) = torch.autograd.grad(scores.sum(), acts, allow_unused=True)
        if grads is None:
            raise LayerError(f"the target score does not depend on layer {ref.label!r}; pick a layer before the output")
        weights = channel_weights(acts.detach(), grads)
        cam = (weights * acts.detach()).sum(dim=1, keepdim=True)  # (B, 1, h, w)
    if relu:
        cam = cam.clamp_min(0)
    data = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return package(wrapped, x, data, method=method, classes=classes, scores=scores, output=output,
                   layer=ref.label, low_res=cam, layer_shape=tuple(acts.shape[1:]))


def _gradcam_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    return grads.mean(dim=(2, 3), keepdim=True)  # global-average-pooled gradients (Eq. 1)


@register("gradcam", family="cam", output="map", uses_layer=True,
          paper="Selvaraju et al. 2017, Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization")
def gradcam(model: Any, x: torch.Tensor, *, target: Target = None, layer: LayerSpec = None, relu: bool = True) -> Result:
    """Grad-CAM: the layer's channels weighted by their average gradient, ReLU'd, (B, 1, H, W).

    ``layer=None`` picks the last convolutional feature map. ``relu=False`` keeps negative evidence.
    """
    return cam_engine(model, x, target=target, layer=layer, method="gradcam",
                      channel_weights=_gradcam_weights, relu=relu)
