"""The CAM family: one engine, and each variant a small function of the layer's activations.

A variant differs from Grad-CAM only in how it combines a layer's feature maps (pytorch-grad-cam's
shape); the engine does the rest: one forward that records the layer(s) and picks the target, the
head's backward to those layers only (nothing below them is recorded), the variant's combination,
and one upsampling to the input's size: bilinear to H×W for pictures, trilinear to T×H×W for videos and
volumes (Conv3d models: maps (B, K, t, h, w) in, (B, 1, T, H, W) out). Score-CAM and Ablation-CAM run their extra forwards
batched, skipping maps that cannot change the answer (constant or all-zero channels).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..engine import Cost, bytes_per_row, channels_last, compute_precision, default_rows, package, prepare
from ..errors import LayerError, TargetError
from ..hooks import Guard, LayerRef
from ..layers import LayerSpec, default_cam_layer, resolve_layer
from ..models import Model, as_model
from ..options import BatchSize, Fp32Only, Precision
from ..progress import ProgressArg, tracker
from ..registry import CostContext, ReportSpec, register
from ..result import Result
from ..targets import Target, fixed_target, resolve_target, row_scores
from .gradient import guided_backprop

__all__ = ["ablationcam", "cam", "cam_engine", "eigencam", "gradcam", "gradcam_pp", "guided_gradcam", "hirescam",
           "layercam", "scorecam", "xgradcam"]

EPS = 1e-7
CAM_UNITS = {  # what a CAM map's values are, for its colour bar (the maps themselves are relative evidence)
    "gradcam": "activation x gradient", "gradcam_pp": "activation x gradient", "xgradcam": "activation x gradient",
    "layercam": "activation x gradient", "hirescam": "activation x gradient", "cam": "activation x class weight",
    "eigencam": "activation along its 1st principal component", "scorecam": "activation x score",
    "ablationcam": "activation x score drop",
}
TopChannels = Annotated[int, Field(ge=1, le=100_000)] | None  # Score-CAM / Ablation-CAM: a forward per channel each


@dataclass
class CamInputs:
    """What a variant sees for one layer: activations A (B, K, *S) with S = (h, w), or (t, h, w) for a video,
    their gradients (or None), the model, the explained input (B, C, *S_in) and the resolved target (classes
    or the callable)."""

    model: Model
    x: torch.Tensor
    ref: LayerRef
    acts: torch.Tensor
    grads: torch.Tensor | None
    target: Target
    scores: torch.Tensor  # (B,) the target's score in the explaining forward
    precision: str
    batch_size: int
    top_channels: int | None = None  # perturbation variants: evaluate only the K strongest channels
    output: torch.Tensor | None = None  # the model's output in the explaining forward (detached)
    progress: ProgressArg = False  # perturbation variants: progress per channel evaluated (a callback may cancel)


Combine = Callable[[CamInputs], torch.Tensor]  # -> (B, 1, *S) before the ReLU


def space(t: torch.Tensor, first: int = 2) -> tuple[int, ...]:
    """The spatial dimensions of ``t`` from ``first`` on: (2, 3) for (B, K, h, w), (2, 3, 4) for (B, K, t, h, w)."""
    return tuple(range(first, t.dim()))


def per_channel(weights: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """Channel weights (B, K) shaped to broadcast over ``acts`` (B, K, *S): (B, K, 1, 1) or (B, K, 1, 1, 1)."""
    return weights.reshape(*weights.shape[:2], *[1] * (acts.dim() - 2))


def upsample(maps: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """(N, C, *S) -> (N, C, *size): bilinear for pictures, trilinear for videos and volumes."""
    return F.interpolate(maps, size=size, mode="trilinear" if maps.dim() == 5 else "bilinear", align_corners=False)


def _layers(model: Model, x: torch.Tensor, layer: LayerSpec | Sequence[LayerSpec]) -> list[LayerRef]:
    if layer is None:
        return [default_cam_layer(model, tuple(x.shape[1:]))]
    if isinstance(layer, (list, tuple)):
        if not layer:
            raise LayerError("layer is an empty list; give one or more layer names")
        return [resolve_layer(model, item) for item in layer]
    return [resolve_layer(model, layer)]


def cam_engine(model: Any, x: torch.Tensor, *, target: Target, layer: LayerSpec | Sequence[LayerSpec], method: str,
               combine: Combine, needs_grad: bool = True, relu: bool = True, precision: str = "fp32",
               batch_size: int | None = None, no_bf16: str | None = None, top_channels: int | None = None,
               progress: ProgressArg = False) -> Result:
    """Shared CAM computation: ``relu(combine(A))`` per layer, upsampled to (B, 1, H, W) — (B, 1, T, H, W) for a
    video input (B, C, T, H, W), whose layers give (B, K, t, h, w).

    With several layers each map is scaled by its per-image maximum and the maps are averaged.
    """
    wrapped, x = prepare(model, x, target, precision, no_bf16=no_bf16)
    refs = _layers(wrapped, x, layer)
    with Guard(wrapped.module, grad="from_capture" if needs_grad else False) as guard, \
            compute_precision(wrapped, precision):
        captures = [guard.capture(ref, grad=needs_grad) for ref in refs]
        output = wrapped.module(wrapped.working_copy(x))
        acts = [capture.check() for capture in captures]
        for ref, a in zip(refs, acts):
            if a.dim() not in (4, 5):
                raise LayerError(f"layer {ref.label!r} outputs shape {tuple(a.shape)}, not a (B, C, h, w) feature map "
                                 f"(nor a video's (B, C, t, h, w))")
            if a.dim() != x.dim():
                grid = "(B, C, t, h, w)" if x.dim() == 5 else "(B, C, h, w)"
                raise LayerError(f"layer {ref.label!r} outputs shape {tuple(a.shape)} for an input of shape {tuple(x.shape)}; "
                                 f"pick a layer whose maps are {grid} like the input")
        scores, classes = resolve_target(target, output)
        grads: Sequence[torch.Tensor | None] = [None] * len(acts)
        if needs_grad:
            if not scores.requires_grad:
                raise TargetError("the target score does not depend on the explained layer: a target that ignores "
                                  "the model's output, or a layer after the output")
            grads = torch.autograd.grad(scores.sum(), acts, allow_unused=True)
            missing = [ref.label for ref, g in zip(refs, grads) if g is None]
            if missing:
                raise LayerError(f"the target score does not depend on layer {missing[0]!r}; pick a layer before the output")
    fixed = fixed_target(target, classes)
    rows = batch_size or default_rows(math.prod(x.shape[2:-1]), x.shape[-1])  # a video's frames count as area
    maps = []
    for ref, a, g in zip(refs, acts, grads):
        inputs = CamInputs(wrapped, x, ref, a.detach().float(), None if g is None else g.float(), fixed,
                           scores.detach(), precision, rows, top_channels,
                           output.detach() if isinstance(output, torch.Tensor) else None, progress)
        low = combine(inputs)
        maps.append(low.clamp_min(0) if relu else low)
    size = tuple(x.shape[2:])  # (H, W), or (T, H, W)
    if len(maps) == 1:
        low_res = maps[0]
        data = upsample(low_res, size)
    else:
        low_res = None
        ups = [upsample(m, size) for m in maps]
        data = torch.stack([u / u.abs().amax(dim=space(u, 1), keepdim=True).clamp_min(EPS) for u in ups]).mean(0)
    return package(wrapped, x, data, method=method, classes=classes, scores=scores, output=output, kind="map",
                   layer="+".join(ref.label for ref in refs), low_res=low_res,
                   layer_shape=tuple(acts[0].shape[1:]),
                   units=CAM_UNITS.get(method, f"{method} value") if len(maps) == 1 else "share of each layer's peak, averaged")


def weighted_sum(acts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_k w_k A_k: channel weights (B, K, 1, ...) or element weights (B, K, *S) -> (B, 1, *S)."""
    return (weights * acts).sum(dim=1, keepdim=True)


# -- gradient-weighted variants --------------------------------------------------------------------
def _gradcam(c: CamInputs) -> torch.Tensor:
    return weighted_sum(c.acts, c.grads.mean(dim=space(c.grads), keepdim=True))  # GAP of gradients (Eq. 1)


def _gradcam_pp(c: CamInputs) -> torch.Tensor:
    g2 = c.grads**2
    g3 = g2 * c.grads
    alpha = g2 / (2 * g2 + c.acts.sum(dim=space(c.acts), keepdim=True) * g3 + EPS)  # Eq. 19, exponential head
    alpha = torch.where(c.grads != 0, alpha, torch.zeros_like(alpha))
    return weighted_sum(c.acts, (alpha * c.grads.clamp_min(0)).sum(dim=space(c.acts), keepdim=True))


def _xgradcam(c: CamInputs) -> torch.Tensor:
    norm = c.acts.sum(dim=space(c.acts), keepdim=True) + EPS
    return weighted_sum(c.acts, (c.grads * c.acts / norm).sum(dim=space(c.acts), keepdim=True))


def _layercam(c: CamInputs) -> torch.Tensor:
    return weighted_sum(c.acts, c.grads.clamp_min(0))  # element-wise positive gradients


def _hirescam(c: CamInputs) -> torch.Tensor:
    return weighted_sum(c.acts, c.grads)  # element-wise gradients, no averaging


# -- costs, in forward passes of one picture (a backward counts as two) ---------------------------------------
def _cam_cost(context: CostContext) -> Cost:
    """One forward, and the head's backward from the output to the layer (at most one more forward's worth)."""
    return Cost(2.0 * context.pictures * context.area())


def _forward_cost(context: CostContext) -> Cost:
    """One forward (CAM, Eigen-CAM: no gradients)."""
    return Cost(1.0 * context.pictures * context.area())


def _channel_cost(context: CostContext) -> Cost:
    """The explaining forward and one forward per channel of the layer (Score-CAM, Ablation-CAM), or per
    ``top_channels``; Score-CAM adds one forward of a blank picture when it scores every channel. Memory:
    Score-CAM's upsampled maps of one image (K, H, W) twice over in float32, and a batch of ``batch_size`` rows."""
    chosen = context.special.get("layer")
    shapes = [context.layer_shape(one) for one in chosen] if isinstance(chosen, (list, tuple)) and chosen else [context.layer_shape()]
    counts = [int(shape[0]) if shape else 512 for shape in shapes]  # several layers: each is explained in turn
    top = context.options.get("top_channels")
    evaluated = sum(min(channels, top or channels) for channels in counts)
    scorecam = context.tool.name == "scorecam"
    blank = len(counts) if scorecam and top is None else 0
    colours, picture = int(context.x.shape[1]), tuple(int(v) for v in context.x.shape[2:])  # (H, W) or (T, H, W)
    memory = 2 * max(counts) * math.prod(picture) * 4 if scorecam else 0
    batch_size = context.options.get("batch_size")
    if batch_size:
        per_row = bytes_per_row(context.model, (colours, *picture)) if context.model is not None else None
        memory += min(batch_size, evaluated) * (colours * math.prod(picture) * 4 + (per_row or 0))
    return Cost((1 + blank + evaluated) * context.pictures * context.area(), memory,
                f"{evaluated:,} channels of the layer per picture")


def _register_cam(name: str, paper: str, combine: Combine, doc: str, *, title: str, note: str) -> Callable[..., Result]:
    def method(model: Any, x: torch.Tensor, *, target: Target = None, layer: LayerSpec | Sequence[LayerSpec] = None,
               relu: bool = True, precision: Precision = "fp32") -> Result:
        return cam_engine(model, x, target=target, layer=layer, method=name, combine=combine, relu=relu,
                          precision=precision)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = doc + """

    ``layer``: a name, a module, a list of them (maps fused: each scaled by its maximum, then
    averaged) or None for the last convolutional map.

    Options:
        relu: True keeps only the regions that speak for the class (the paper); False also shows, as negative
            values, the regions that speak against it.
        precision: "fp32" (exact) or "bf16" (autocast: faster on CPUs with bfloat16 units; maps agree with fp32
            to a correlation of 0.99+).
    """
    return register(name, family="attribution", group="cam", takes="images", returns="map", paper=paper,
                    cost=_cam_cost, report=ReportSpec(title=title, note=note))(method)


gradcam = _register_cam(
    "gradcam", "Selvaraju et al. 2017, Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
    _gradcam, "Grad-CAM: the layer's channels weighted by their average gradient, ReLU'd, (B, 1, H, W).",
    title="Grad-CAM", note="Where the last convolutional layer found evidence for the class: its maps weighted by how much "
                           "the class's score depends on each. Coarse (one value per cell of the layer's grid, enlarged "
                           "to the picture) but specific to the class.")
gradcam_pp = _register_cam(
    "gradcam_pp", "Chattopadhyay et al. 2018, Grad-CAM++: Improved Visual Explanations for Deep Convolutional Networks",
    _gradcam_pp, "Grad-CAM++: channel weights from positive gradients with higher-order pixel coefficients, (B, 1, H, W).",
    title="Grad-CAM++", note="Grad-CAM with weights that give every region of evidence its due when the class appears "
                             "more than once in the picture.")
xgradcam = _register_cam(
    "xgradcam", "Fu et al. 2020, Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of CNNs",
    _xgradcam, "XGrad-CAM: channel weights = activation-normalized sum of gradient x activation, (B, 1, H, W).",
    title="XGrad-CAM", note="Grad-CAM with each channel's weight scaled by its own activation, so that the map accounts "
                            "for the class's score more faithfully.")
layercam = _register_cam(
    "layercam", "Jiang et al. 2021, LayerCAM: Exploring Hierarchical Class Activation Maps for Localization",
    _layercam, "LayerCAM: each activation weighted by its own positive gradient, (B, 1, H, W).",
    title="LayerCAM", note="Each position of the layer weighted by its own positive gradient instead of one weight per "
                           "channel: finer detail, and it also works at earlier layers.")
hirescam = _register_cam(
    "hirescam", "Draelos & Carin 2020, Use HiResCAM instead of Grad-CAM for faithful explanations",
    _hirescam, "HiResCAM: element-wise gradient x activation summed over channels, (B, 1, H, W).",
    title="HiResCAM", note="Gradient times activation at each position, added over the channels: exactly the places the "
                           "score is computed from at that layer.")


# -- CAM (Zhou et al.) --------------------------------------------------------------------------------
def linear_weights(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """A linear layer's (weight (out, in), bias (out,) or None): nn.Linear, or a wrapper that gives them as
    ``convscope_linear`` (a Keras Dense, whose kernel is (in, out)); None for any other module."""
    if isinstance(module, nn.Linear):
        return module.weight, module.bias
    given = getattr(module, "convscope_linear", None)
    return given if isinstance(given, tuple) else None


def _gap_linear_head(c: CamInputs) -> torch.Tensor:
    """The weights (classes, K) of the linear layer that makes the output from the global average of the layer's maps."""
    pooled = c.acts.mean(dim=space(c.acts))  # (B, K)
    if c.output is None or c.output.dim() != 2:
        raise LayerError("cam needs a model whose output is a (B, classes) tensor of logits; use gradcam")
    output = c.output.float()  # the explaining forward's output: no second forward
    for module in c.model.module.modules():
        found = linear_weights(module)
        if found is None or tuple(found[0].shape) != (output.shape[-1], pooled.shape[1]):
            continue
        weight, bias = found
        predicted = F.linear(pooled, weight.float(), None if bias is None else bias.float())
        tolerance = 1e-2 if c.precision == "bf16" else 1e-4
        if torch.allclose(predicted, output, rtol=tolerance, atol=tolerance * float(output.abs().max())):
            return weight
    raise LayerError(f"cam needs a head that is global average pooling of layer {c.ref.label!r} followed by one "
                     f"Linear layer (ResNet, EfficientNet); this model's head differs: use gradcam")


def _cam(c: CamInputs) -> torch.Tensor:
    if c.output is None or c.output.dim() != 2:
        raise LayerError("cam reads the class's weights in a classifier's linear head, and this model's output is not "
                         "(B, classes) logits (a segmentation model or a detector); use gradcam")
    if not isinstance(c.target, torch.Tensor):
        raise TargetError("cam explains a class (it reads the class's weights); pass a class index, not a callable")
    head = _gap_linear_head(c)
    weights = head.detach().float()[c.target.to(head.device)]  # (B, K)
    return weighted_sum(c.acts, per_channel(weights, c.acts))


@register("cam", family="attribution", group="cam", takes="images", returns="map", cost=_forward_cost,
          paper="Zhou et al. 2016, Learning Deep Features for Discriminative Localization",
          report=ReportSpec(title="CAM (class activation map)",
                            note="The original class activation map: the last layer's maps weighted by the class's own "
                                 "weights in the final layer. Only for networks that end in global average pooling and "
                                 "one linear layer."))
def cam(model: Any, x: torch.Tensor, *, target: Target = None, layer: LayerSpec = None, relu: bool = True,
        precision: Precision = "fp32") -> Result:
    """CAM: the last feature maps weighted by the class's weights in the linear layer after global
    average pooling, (B, 1, H, W). Only for GAP→linear heads; a clear error otherwise.

    Options:
        relu: True keeps only the regions that speak for the class (the paper); False also shows, as negative
            values, the regions that speak against it.
        precision: "fp32" (exact) or "bf16" (autocast: faster on CPUs with bfloat16 units; maps agree with fp32
            to a correlation of 0.99+).
    """
    return cam_engine(model, x, target=target, layer=layer, method="cam", combine=_cam, needs_grad=False, relu=relu,
                      precision=precision)


# -- Eigen-CAM ----------------------------------------------------------------------------------------
def _eigencam(c: CamInputs) -> torch.Tensor:
    batch, channels = c.acts.shape[:2]
    flat = c.acts.reshape(batch, channels, -1).transpose(1, 2)  # (B, positions, K)
    centered = flat - flat.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(centered, full_matrices=False)
    projection = (centered @ vh[:, 0, :, None])[..., 0]  # (B, hw): the first principal component
    # the singular vector's sign is arbitrary: orient it along the mean activation
    sign = torch.sign((projection * flat.mean(dim=2)).sum(dim=1, keepdim=True))
    return (projection * torch.where(sign == 0, torch.ones_like(sign), sign)).reshape(batch, 1, *c.acts.shape[2:])


@register("eigencam", family="attribution", group="cam", takes="images", returns="map", cost=_forward_cost,
          paper="Muhammad & Yeasin 2020, Eigen-CAM: Class Activation Map using Principal Components",
          report=ReportSpec(title="Eigen-CAM",
                            note="The strongest common pattern in the last layer's activations: where the network looks, "
                                 "whatever the class (every class gets this same map)."))
def eigencam(model: Any, x: torch.Tensor, *, target: Target = None, layer: LayerSpec | Sequence[LayerSpec] = None,
             relu: bool = True, precision: Precision = "fp32") -> Result:
    """Eigen-CAM: the first principal component of the layer's activations, (B, 1, H, W). Class-agnostic:
    ``target`` only names the class in the result; no gradients.

    Options:
        relu: True keeps only the regions that speak for the class (the paper); False also shows, as negative
            values, the regions that speak against it.
        precision: "fp32" (exact) or "bf16" (autocast: faster on CPUs with bfloat16 units; maps agree with fp32
            to a correlation of 0.99+).
    """
    return cam_engine(model, x, target=target, layer=layer, method="eigencam", combine=_eigencam, needs_grad=False,
                      relu=relu, precision=precision)


# -- Score-CAM ---------------------------------------------------------------------------------------
def _scorecam_combine(score: str) -> Combine:
    kind = "probability" if score == "probability" else "logit"  # logit_softmax: a softmax over channels of the logits

    def combine(c: CamInputs) -> torch.Tensor:
        batch, channels = c.acts.shape[:2]
        size = tuple(c.x.shape[2:])  # (H, W), or (T, H, W)
        module = c.model.module
        weights = torch.zeros(batch, channels, device=c.acts.device)
        per_image = min(channels, c.top_channels or channels)
        with Guard(module, grad=False), compute_precision(c.model, c.precision), \
                tracker(c.progress, batch * per_image, "scorecam channels") as bar:
            pixels = c.model.working_copy(c.x)
            for b in range(batch):
                up = upsample(c.acts[b:b + 1], size)[0]  # (K, *size)
                low, high = up.amin(dim=space(up, 1), keepdim=True), up.amax(dim=space(up, 1), keepdim=True)
                span = (high - low).flatten()
                live = torch.nonzero(span > EPS * high.abs().amax().clamp_min(1)).flatten()
                masks = (up - low) / (high - low).clamp_min(EPS)
                if c.top_channels is None:
                    # constant maps normalize to zero: they all share the score of the blank input
                    dead_score = row_scores(module(torch.zeros_like(pixels[b:b + 1])), c.target, b, kind)
                    scores = dead_score.expand(channels).clone()
                else:  # only the strongest channels take part
                    live = _strongest(c.acts[b], live, c.top_channels)
                    scores = torch.full((channels,), float("-inf") if score == "logit_softmax" else 0.0,
                                        device=c.acts.device)
                for start in range(0, live.numel(), c.batch_size):
                    chunk = live[start:start + c.batch_size]
                    masked = channels_last(pixels[b:b + 1] * masks[chunk, None].to(pixels.dtype))
                    scores[chunk] = row_scores(module(masked), c.target, b, kind)
                    bar.advance(chunk.numel())
                bar.advance(per_image - live.numel())  # constant maps: nothing to evaluate
                if score == "logit_softmax":
                    scores = scores.softmax(dim=0) if torch.isfinite(scores).any() else torch.zeros_like(scores)
                weights[b] = scores
        return weighted_sum(c.acts, per_channel(weights, c.acts))

    return combine


@register("scorecam", family="attribution", group="cam", takes="images", returns="map", cost=_channel_cost,
          paper="Wang et al. 2020, Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks",
          quick={"top_channels": 4},
          report=ReportSpec(title="Score-CAM",
                            note="Each channel of the layer weighted by the class's probability when the picture is seen "
                                 "only where that channel is active: no gradients, one forward pass per channel."))
def scorecam(model: Any, x: torch.Tensor, *, target: Target = None, layer: LayerSpec | Sequence[LayerSpec] = None,
             score: Literal["probability", "logit_softmax"] = "probability", relu: bool = True,
             top_channels: TopChannels = None, batch_size: BatchSize = None, precision: Precision = "fp32",
             progress: ProgressArg = None) -> Result:
    """Score-CAM: each channel weighted by the target's score on the input masked by that channel's
    upsampled, min-max-normalized map, (B, 1, H, W). One forward per non-constant channel, batched.

    ``score``: "probability" (the paper: softmax probability of the class) or "logit_softmax"
    (pytorch-grad-cam: a softmax over channels of the class logits). ``top_channels``: a faster
    approximation that evaluates only the channels with the largest mean activation (others weigh 0).

    Options:
        score: how a masked picture scores a channel: "probability" (the class's softmax probability, the paper)
            or "logit_softmax" (a softmax over channels of the class's logits, pytorch-grad-cam's variant: use it to
            compare with that library).
        relu: True keeps only the regions that speak for the class (the paper); False also shows, as negative
            values, the regions that speak against it.
        top_channels: score only this many channels, those with the largest mean activation (the others weigh 0):
            a faster approximation for layers with many channels (1280 on EfficientNet-Lite0); None scores all.
        batch_size: masked pictures per forward; None picks about 16 pictures of 224x224. Lower it when memory is short.
        precision: "fp32" (exact) or "bf16" (autocast: faster on CPUs with bfloat16 units; maps agree with fp32
            to a correlation of 0.99+).
        progress: None (a bar on a terminal), False, True, or a callback fn(done, total, what) that may raise Cancelled.
    """
    return cam_engine(model, x, target=target, layer=layer, method="scorecam", combine=_scorecam_combine(score),
                      needs_grad=False, relu=relu, precision=precision, batch_size=batch_size, top_channels=top_channels,
                      progress=progress)


# -- Ablation-CAM ------------------------------------------------------------------------------------
def _ablationcam(c: CamInputs) -> torch.Tensor:
    batch, channels = c.acts.shape[:2]
    weights = torch.zeros(batch, channels, device=c.acts.device)
    plan: dict[str, torch.Tensor] = {}

    def ablate(output: torch.Tensor) -> torch.Tensor:
        rows = plan["channels"].to(output.device)
        edited = output.clone()
        edited[torch.arange(rows.numel(), device=output.device), rows] = 0  # row i loses channel rows[i]
        return edited

    per_image = min(channels, c.top_channels or channels)
    with Guard(c.model.module, grad=False) as guard, compute_precision(c.model, c.precision), \
            tracker(c.progress, batch * per_image, "ablationcam channels") as bar:
        pixels = c.model.working_copy(c.x)
        guard.edit(c.ref, ablate)
        for b in range(batch):
            base = c.scores[b].float()
            live = torch.nonzero(c.acts[b].abs().amax(dim=space(c.acts[b], 1)) > 0).flatten()  # ablating a zero map changes nothing
            live = _strongest(c.acts[b], live, c.top_channels)
            for start in range(0, live.numel(), c.batch_size):
                plan["channels"] = chunk = live[start:start + c.batch_size]
                rows = pixels[b:b + 1].repeat(chunk.numel(), *[1] * (pixels.dim() - 1))  # real copies: the model may work in place
                ablated = row_scores(c.model.module(rows), c.target, b)
                weights[b, chunk.to(weights.device)] = (base - ablated) / _nonzero(base)
                bar.advance(chunk.numel())
            bar.advance(per_image - live.numel())  # all-zero channels: nothing to ablate
    return weighted_sum(c.acts, per_channel(weights, c.acts))


def _strongest(acts: torch.Tensor, channels: torch.Tensor, top: int | None) -> torch.Tensor:
    """The ``top`` of ``channels`` with the largest mean activation in ``acts`` (K, *S); all if None."""
    if top is None or channels.numel() <= top:
        return channels
    strength = acts[channels.to(acts.device)].mean(dim=space(acts, 1))
    return channels[strength.topk(top).indices.to(channels.device)]


def _nonzero(value: torch.Tensor) -> torch.Tensor:
    return torch.where(value.abs() < EPS, torch.full_like(value, EPS), value)


@register("ablationcam", family="attribution", group="cam", takes="images", returns="map", cost=_channel_cost,
          paper="Desai & Ramaswamy 2020, Ablation-CAM: Visual Explanations for Deep Convolutional Network via Gradient-free Localization",
          quick={"top_channels": 4},
          report=ReportSpec(title="Ablation-CAM",
                            note="Each channel of the layer weighted by how much the class's score drops when that channel "
                                 "is switched off: no gradients, one forward pass per channel."))
def ablationcam(model: Any, x: torch.Tensor, *, target: Target = None, layer: LayerSpec | Sequence[LayerSpec] = None,
                relu: bool = True, top_channels: TopChannels = None, batch_size: BatchSize = None,
                precision: Fp32Only = "fp32", progress: ProgressArg = None) -> Result:
    """Ablation-CAM: each channel weighted by the relative drop of the target score when that channel
    is set to zero, (B, 1, H, W). One forward per non-zero channel, batched; ``top_channels`` ablates
    only the channels with the largest mean activation (a faster approximation; others weigh 0).

    Options:
        relu: True keeps only the regions that speak for the class (the paper); False also shows, as negative
            values, the regions that speak against it.
        top_channels: ablate only this many channels, those with the largest mean activation (the others weigh 0):
            a faster approximation for layers with many channels; None ablates all.
        batch_size: ablated copies per forward; None picks about 16 pictures of 224x224. Lower it when memory is short.
        precision: the arithmetic, "fp32" only here: the score drops it measures are below bfloat16's resolution.
        progress: None (a bar on a terminal), False, True, or a callback fn(done, total, what) that may raise Cancelled.
    """
    return cam_engine(model, x, target=target, layer=layer, method="ablationcam", combine=_ablationcam,
                      needs_grad=False, relu=relu, precision=precision, batch_size=batch_size,
                      no_bf16="the per-channel score drops it measures are below bfloat16's resolution",
                      top_channels=top_channels, progress=progress)


# -- Guided Grad-CAM ---------------------------------------------------------------------------------
def _guided_gradcam_cost(context: CostContext) -> Cost:
    """Guided backpropagation (a forward and a backward to the input) and Grad-CAM."""
    return Cost(5.0 * context.pictures * context.area())


@register("guided_gradcam", family="attribution", group="cam", takes="images", returns="pixels", cost=_guided_gradcam_cost,
          paper="Selvaraju et al. 2017, Grad-CAM (Guided Grad-CAM: guided backpropagation x Grad-CAM)",
          report=ReportSpec(title="Guided Grad-CAM",
                            note="Guided backpropagation's fine edges kept only where Grad-CAM found evidence: detail "
                                 "inside the region that speaks for the class."))
def guided_gradcam(model: Any, x: torch.Tensor, *, target: Target = None, layer: LayerSpec = None,
                   precision: Fp32Only = "fp32") -> Result:
    """Guided Grad-CAM: guided backpropagation multiplied by the upsampled Grad-CAM map, (B, C, H, W).

    Options:
        precision: the arithmetic, "fp32" only here: guided backpropagation's bfloat16 pixel gradients do not agree with fp32.
    """
    coarse = gradcam(model, x, target=target, layer=layer, precision=precision)  # first: a bad layer fails fast
    guided = guided_backprop(model, x, target=fixed_target(target, coarse.target), precision=precision)
    data = guided.data * coarse.data.to(guided.data.device)
    meta = {k: v for k, v in guided.meta.items() if k != "scores"}
    meta.update(signed=False, units="|guided backprop x Grad-CAM|")
    return package(as_model(model), x, data, method="guided_gradcam", classes=guided.target, kind="pixels",
                   scores=guided.meta["scores"], output=None, layer=coarse.layer, **meta)
