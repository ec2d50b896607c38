"""Gradient methods: how the target score changes with each input pixel, (B, C, H, W).

Each is one forward and one backward to the input with no parameter requiring grad; guided
backprop and deconvnet change only the backward of ReLU-like activations (``hooks.RectifierRule``).
Integrated gradients and SmoothGrad evaluate their many points in batches.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch

from ..engine import BF16_GRADIENTS, compute_precision, default_rows, gaussian_blur, package, prepare
from ..errors import ConvscopeError, LayerError, TargetError
from ..hooks import Guard
from ..models import Model
from ..options import Fp32Only, PythonOnly
from ..registry import register
from ..result import Result
from ..targets import Target, resolve_target

__all__ = ["deconvnet", "guided_backprop", "input_x_gradient", "integrated_gradients", "saliency", "smoothgrad"]


def input_gradient(scores: torch.Tensor, pixels: torch.Tensor) -> tuple[torch.Tensor]:
    """d sum(scores) / d pixels — a clear error when the score does not depend on the input."""
    if not scores.requires_grad:
        raise TargetError("the target score does not depend on the input; check the target callable")
    return torch.autograd.grad(scores.sum(), pixels)


def _no_layer(method: str, layer: Any) -> None:
    if layer is not None:
        raise LayerError(f"{method} explains input pixels and takes no layer; use gradcam for a layer's view")


def gradient_pass(model: Model, x: torch.Tensor, target: Target, *, rule: str | None = None,
                  precision: Fp32Only = "fp32") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, int | None]:
    """One forward + backward to the input: (gradient (B, C, H, W) float32, scores, classes, output,
    number of activations the rectifier ``rule`` rewrote)."""
    with Guard(model.module) as guard, compute_precision(model, precision):
        mode = guard.rectifier_rule(rule) if rule else None
        pixels = model.working_copy(x).requires_grad_(True)
        output = model.module(pixels.clone())  # a non-leaf copy: the model may work in place on its input
        scores, classes = resolve_target(target, output)
        (grad,) = input_gradient(scores, pixels)
    return grad.float(), scores, classes, output, (mode.count if mode else None)


@register("saliency", family="attribution", group="gradient", takes="images", returns="pixels",
          paper="Simonyan, Vedaldi & Zisserman 2013, Deep Inside Convolutional Networks")
def saliency(model: Any, x: torch.Tensor, *, target: Target = None, layer: None = None, abs: bool = True,
             precision: Fp32Only = "fp32") -> Result:
    """Vanilla gradient saliency: |d score / d pixel|, (B, C, H, W).

    Rendering shows the maximum over channels, as in the paper. Cost: one forward and one backward
    to the input, no weight gradients.

    Options:
        abs: True for |gradient| (the paper); False keeps the sign.
        precision: "fp32" only (bf16 is refused: its pixel gradients do not agree with fp32).
    """
    _no_layer("saliency", layer)
    wrapped, x = prepare(model, x, target, precision, no_bf16=BF16_GRADIENTS)
    grad, scores, classes, output, _ = gradient_pass(wrapped, x, target, precision=precision)
    data = grad.abs() if abs else grad
    return package(wrapped, x, data, method="saliency", classes=classes, scores=scores, output=output)


@register("input_x_gradient", family="attribution", group="gradient", takes="images", returns="pixels",
          paper="Shrikumar et al. 2016, Not Just a Black Box: Learning Important Features Through Propagating Activation Differences")
def input_x_gradient(model: Any, x: torch.Tensor, *, target: Target = None, layer: None = None,
                     precision: Fp32Only = "fp32") -> Result:
    """Input × gradient: x · d score / d x, signed, (B, C, H, W) (a first-order Taylor attribution).

    Options:
        precision: "fp32" only (bf16 is refused: its pixel gradients do not agree with fp32).
    """
    _no_layer("input_x_gradient", layer)
    wrapped, x = prepare(model, x, target, precision, no_bf16=BF16_GRADIENTS)
    grad, scores, classes, output, _ = gradient_pass(wrapped, x, target, precision=precision)
    data = x.detach().to(grad.device, torch.float32) * grad
    return package(wrapped, x, data, method="input_x_gradient", classes=classes, scores=scores, output=output)


def _rectified(method: str, rule: str, model: Any, x: torch.Tensor, target: Target, layer: Any, precision: str) -> Result:
    _no_layer(method, layer)
    wrapped, x = prepare(model, x, target, precision, no_bf16=BF16_GRADIENTS)
    grad, scores, classes, output, count = gradient_pass(wrapped, x, target, rule=rule, precision=precision)
    if not count:
        warnings.warn(f"{method}: the model has no ReLU-like activation (ReLU, ReLU6, LeakyReLU, F.relu) on the "
                      f"gradient path; the result equals the plain gradient", stacklevel=3)
    return package(wrapped, x, grad, method=method, classes=classes, scores=scores, output=output, rewritten=count)


@register("guided_backprop", family="attribution", group="gradient", takes="images", returns="pixels",
          paper="Springenberg et al. 2015, Striving for Simplicity: The All Convolutional Net")
def guided_backprop(model: Any, x: torch.Tensor, *, target: Target = None, layer: None = None,
                    precision: Fp32Only = "fp32") -> Result:
    """Guided backpropagation: at every ReLU-like activation only positive gradients pass where the
    input was positive, (B, C, H, W). ``meta["rewritten"]`` counts the activations changed.

    Options:
        precision: "fp32" only (bf16 is refused: its pixel gradients do not agree with fp32).
    """
    return _rectified("guided_backprop", "guided", model, x, target, layer, precision)


@register("deconvnet", family="attribution", group="gradient", takes="images", returns="pixels",
          paper="Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks")
def deconvnet(model: Any, x: torch.Tensor, *, target: Target = None, layer: None = None,
              precision: Fp32Only = "fp32") -> Result:
    """Deconvnet: ReLU-like activations pass only positive gradients, ignoring the forward's sign,
    (B, C, H, W). ``meta["rewritten"]`` counts the activations changed.

    Options:
        precision: "fp32" only (bf16 is refused: its pixel gradients do not agree with fp32).
    """
    return _rectified("deconvnet", "deconvnet", model, x, target, layer, precision)


# -- integrated gradients ---------------------------------------------------------------------------
def _quadrature(steps: int, rule: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Points in [0, 1] and weights summing to 1 for the path integral."""
    if steps < 1:
        raise ConvscopeError(f"steps must be at least 1, got {steps}")
    if rule == "gausslegendre":
        import numpy as np

        nodes, weights = np.polynomial.legendre.leggauss(steps)
        alphas, weights = (nodes + 1) / 2, weights / 2
    elif rule == "riemann_middle":
        alphas = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
        weights = torch.full((steps,), 1 / steps, dtype=torch.float64)
    elif rule == "riemann_trapezoid":
        if steps < 2:
            raise ConvscopeError("riemann_trapezoid needs steps >= 2")
        alphas = torch.linspace(0, 1, steps, dtype=torch.float64)
        weights = torch.full((steps,), 1 / (steps - 1), dtype=torch.float64)
        weights[0] = weights[-1] = 0.5 / (steps - 1)
    else:
        raise ConvscopeError(f"unknown rule {rule!r}; choose gausslegendre, riemann_middle or riemann_trapezoid")
    as_tensor = lambda v: torch.as_tensor(v, dtype=torch.float32, device=device)
    return as_tensor(alphas), as_tensor(weights)


def baseline_for(model: Model, x: torch.Tensor, baseline: Any) -> torch.Tensor:
    """The reference input (B, C, H, W): "zeros" (zero in the model's input space), "black" (a black
    picture, given the normalization), "blur" (x blurred with a Gaussian of sigma = 1/20 of the width),
    or a tensor of shape (C, H, W), (1, C, H, W) or (B, C, H, W)."""
    if isinstance(baseline, torch.Tensor):
        base = baseline.detach().to(x.device, x.dtype)
        base = base[None] if base.dim() == 3 else base
        if base.dim() != 4 or base.shape[1:] != x.shape[1:] or base.shape[0] not in (1, x.shape[0]):
            raise ConvscopeError(f"baseline shape {tuple(baseline.shape)} does not fit x {tuple(x.shape)}")
        return base.expand_as(x)
    if baseline == "zeros":
        return torch.zeros_like(x)
    if baseline == "black":
        mean = torch.tensor(model.mean or (0.0,), device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(model.std or (1.0,), device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return ((0 - mean) / std).expand_as(x).clone()
    if baseline == "blur":
        return gaussian_blur(x, max(1.0, x.shape[-1] / 20))
    raise ConvscopeError(f"unknown baseline {baseline!r}; use 'zeros', 'black', 'blur' or a tensor")


@register("integrated_gradients", family="attribution", group="gradient", takes="images", returns="pixels",
          paper="Sundararajan, Taly & Yan 2017, Axiomatic Attribution for Deep Networks", quick={"steps": 4})
def integrated_gradients(model: Any, x: torch.Tensor, *, target: Target = None, layer: None = None, steps: int = 50,
                         baseline: Literal["zeros", "black", "blur"] | PythonOnly[torch.Tensor] = "zeros",
                         rule: Literal["gausslegendre", "riemann_middle", "riemann_trapezoid"] = "gausslegendre", batch_size: int | None = None,
                         precision: Fp32Only = "fp32") -> Result:
    """Integrated gradients: (x - x') · ∫ d score(x' + a (x - x')) / dx da, signed, (B, C, H, W).

    All ``steps`` points of every image are evaluated in batches of ``batch_size`` rows.
    ``meta["delta"]`` = sum(attribution) - (score(x) - score(baseline)), the completeness error.

    Options:
        steps: points on the path from the baseline to x (more: smaller completeness error).
        baseline: the reference input: "zeros", "black" (a black picture), "blur" (x blurred) or a tensor.
        rule: the quadrature: "gausslegendre" (most accurate per step), "riemann_middle" or "riemann_trapezoid".
        batch_size: rows per forward/backward (None: about 16 images of 224x224).
        precision: "fp32" only (bf16 is refused: its pixel gradients do not agree with fp32).
    """
    _no_layer("integrated_gradients", layer)
    wrapped, x = prepare(model, x, target, precision, no_bf16=BF16_GRADIENTS)
    batch = x.shape[0]
    rows = batch_size or default_rows(*x.shape[-2:])
    with Guard(wrapped.module), compute_precision(wrapped, precision):
        inputs = wrapped.working_copy(x)
        base = baseline_for(wrapped, inputs, baseline).contiguous(memory_format=torch.channels_last)
        alphas, weights = _quadrature(steps, rule, inputs.device)
        with torch.no_grad():  # both ends in one forward: the target and the completeness check
            ends = wrapped.module(torch.cat([inputs, base]))
        scores, classes = resolve_target(target, ends[:batch])
        fixed: Target = classes if classes is not None else target
        base_scores, _ = resolve_target(fixed, ends[batch:])
        diff = inputs - base
        total = torch.zeros(inputs.shape, dtype=torch.float32, device=inputs.device)
        for start in range(0, steps * batch, rows):
            index = torch.arange(start, min(start + rows, steps * batch), device=inputs.device)
            step, image = index // batch, index % batch
            a = alphas[step].view(-1, 1, 1, 1).to(inputs.dtype)
            points = (base[image] + a * diff[image]).requires_grad_(True)
            out = wrapped.module(points.clone())
            chunk_scores, _ = resolve_target(fixed if classes is None else classes[image], out)
            (grad,) = input_gradient(chunk_scores, points)
            total.index_add_(0, image, grad.float() * weights[step].view(-1, 1, 1, 1))
    data = diff.float() * total
    delta = data.sum(dim=(1, 2, 3)) - (scores.float() - base_scores.float())
    return package(wrapped, x, data, method="integrated_gradients", classes=classes, scores=scores, output=ends[:batch],
                   delta=delta.detach(), baseline_scores=base_scores.detach().float(), steps=steps)


# -- SmoothGrad -------------------------------------------------------------------------------------
SMOOTHGRAD_VARIANTS = ("mean", "square", "var")


@register("smoothgrad", family="attribution", group="gradient", takes="images", returns="pixels",
          paper="Smilkov et al. 2017, SmoothGrad: removing noise by adding noise (VarGrad: Adebayo et al. 2018)",
          quick={"samples": 2})
def smoothgrad(model: Any, x: torch.Tensor, *, target: Target = None, layer: None = None, method: str = "saliency",
               samples: int = 32, sigma: float = 0.15, variant: Literal["mean", "square", "var"] = "mean", seed: int = 0,
               batch_size: int | None = None, precision: Fp32Only = "fp32", **method_options: Any) -> Result:
    """SmoothGrad over any gradient method: the average of ``method`` on ``samples`` noisy copies of x,
    (B, C, H, W). Noise is Gaussian with std ``sigma`` × (max - min) of each image.

    variant: "mean" (SmoothGrad), "square" (SmoothGrad², the mean of squares), "var" (VarGrad).
    Sample s uses the same noise for every image, drawn from ``seed`` — so the answer depends neither
    on ``batch_size`` nor on which other images share the batch.

    Options:
        method: the gradient method averaged (saliency, input_x_gradient, guided_backprop, deconvnet, integrated_gradients).
        samples: noisy copies per image.
        sigma: noise standard deviation as a fraction of each image's value range.
        variant: "mean" (SmoothGrad), "square" (SmoothGrad², mean of squares) or "var" (VarGrad, the variance).
        seed: the noise's seed (same seed, same answer).
        batch_size: rows per forward/backward (None: about 16 images of 224x224).
        precision: "fp32" only (bf16 is refused: its pixel gradients do not agree with fp32).
    """
    from ..registry import get

    _no_layer("smoothgrad", layer)
    inner = get(method)
    if inner.group != "gradient" or inner.name == "smoothgrad":
        raise ConvscopeError(f"smoothgrad wraps a pixel-gradient method (saliency, guided_backprop, ...), not {method!r}")
    if variant not in SMOOTHGRAD_VARIANTS:
        raise ConvscopeError(f"unknown variant {variant!r}; choose one of {', '.join(SMOOTHGRAD_VARIANTS)}")
    if samples < 1:
        raise ConvscopeError(f"samples must be at least 1, got {samples}")
    wrapped, x = prepare(model, x, target, precision, no_bf16=BF16_GRADIENTS)
    batch = x.shape[0]
    with Guard(wrapped.module, grad=False), compute_precision(wrapped, precision):
        output = wrapped.module(wrapped.working_copy(x))
        scores, classes = resolve_target(target, output)
    fixed: Target = classes if classes is not None else target
    clean = x.detach()
    scale = sigma * (clean.amax(dim=(1, 2, 3)) - clean.amin(dim=(1, 2, 3))).view(-1, 1, 1, 1)
    per_call = max(1, (batch_size or default_rows(*x.shape[-2:])) // batch)
    total = sq_total = None
    for first in range(0, samples, per_call):
        draws = range(first, min(first + per_call, samples))
        noise = torch.cat([_noise(seed, s, x.shape[1:]) for s in draws]).to(clean.device, clean.dtype)  # (k, C, H, W)
        noisy = (clean[None] + noise[:, None] * scale[None]).reshape(-1, *x.shape[1:])  # sample-major (k*B, C, H, W)
        chunk_target = fixed.repeat(len(draws)) if isinstance(fixed, torch.Tensor) else fixed
        part = inner.fn(wrapped, noisy, target=chunk_target, precision=precision, **method_options).data
        part = part.float().reshape(len(draws), batch, *part.shape[1:])
        total = part.sum(0) if total is None else total + part.sum(0)
        sq_total = (part**2).sum(0) if sq_total is None else sq_total + (part**2).sum(0)
    mean, mean_sq = total / samples, sq_total / samples
    data = {"mean": mean, "square": mean_sq, "var": (mean_sq - mean**2).clamp_min(0)}[variant]
    return package(wrapped, x, data, method="smoothgrad", classes=classes, scores=scores, output=output,
                   inner=method, variant=variant, samples=samples, sigma=sigma)


def _noise(seed: int, sample: int, shape: torch.Size) -> torch.Tensor:
    """Standard normal noise (1, C, H, W) for one sample, the same on every machine (CPU generator)."""
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + sample)
    return torch.randn((1, *shape), generator=generator)


