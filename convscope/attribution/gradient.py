"""Gradient methods: how the target score changes with each input pixel, (B, C, H, W).

Each is one forward and one backward to the input with no parameter requiring grad; guided
backprop and deconvnet change only the backward of ReLU-like activations (``hooks.RectifierRule``).
Integrated gradients and SmoothGrad evaluate their many points in batches, with progress and cancellation.
"""

from __future__ import annotations

import difflib
import math
import warnings
from typing import TYPE_CHECKING, Annotated, Any, Literal

import torch
from pydantic import Field

from ..engine import BF16_GRADIENTS, Cost, backward_bytes, channels_last, compute_precision, default_rows, gaussian_blur, package, prepare
from ..errors import ConvscopeError, LayerError, OptionError, TargetError
from ..hooks import Guard
from ..models import Model
from ..options import BatchSize, Fp32Only, PythonOnly, Seed
from ..progress import ProgressArg, tracker
from ..registry import CostContext, ReportSpec, register
from ..result import Result
from ..targets import OutputTarget, Target, fixed_target, resolve_target, row_scores, select_rows

if TYPE_CHECKING:
    from ..registry import Tool

__all__ = ["deconvnet", "guided_backprop", "input_x_gradient", "integrated_gradients", "saliency", "smoothgrad"]

Steps = Annotated[int, Field(ge=1, le=4096)]  # integrated gradients: a forward and a backward each
Samples = Annotated[int, Field(ge=1, le=10_000)]  # SmoothGrad: a run of the wrapped method each
Sigma = Annotated[float, Field(ge=0, le=2)]  # SmoothGrad's noise, a share of the picture's value range


def option_error(message: str, field: str | None) -> OptionError:
    """A one-line OptionError about option ``field`` (front ends point at that field: the web's 422)."""
    error = OptionError(message)
    error.field = field
    return error


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


# -- costs, in forward passes of one picture at the model's input size (a backward counts as two) -----------
def _rows_memory(context: CostContext, rows: int) -> int:
    """Bytes ``rows`` pictures of the call's size take in one forward + backward (0 when unknown)."""
    x = context.x
    if context.model is None or not isinstance(x, torch.Tensor):
        return 0
    per_row = backward_bytes(context.model, tuple(x.shape[1:]))
    return rows * per_row if per_row else 0


def _pass_cost(context: CostContext) -> Cost:
    """One forward and the backward to the input."""
    return Cost(3.0 * context.pictures * context.area())


@register("saliency", family="attribution", group="gradient", takes="images", returns="pixels", cost=_pass_cost,
          paper="Simonyan, Vedaldi & Zisserman 2013, Deep Inside Convolutional Networks",
          report=ReportSpec(title="Saliency (the gradient)",
                            note="How much a tiny change of each pixel would change the class's score: the brightest pixels "
                                 "matter most. Quick but noisy; it shows where the model is sensitive, not what it relies on."))
def saliency(model: Any, x: torch.Tensor, *, target: Target = None, layer: None = None, abs: bool = True,
             precision: Fp32Only = "fp32") -> Result:
    """Vanilla gradient saliency: |d score / d pixel|, (B, C, H, W).

    Rendering shows the maximum over channels, as in the paper. Cost: one forward and one backward
    to the input, no weight gradients.

    Options:
        abs: True shows how strongly each pixel moves the score (the paper); False keeps the sign, to see
            which pixels would raise the score if brightened and which would lower it.
        precision: the arithmetic, "fp32" only here: bfloat16 pixel gradients agree with fp32 only to a correlation of 0.5-0.9.
    """
    _no_layer("saliency", layer)
    wrapped, x = prepare(model, x, target, precision, no_bf16=BF16_GRADIENTS)
    grad, scores, classes, output, _ = gradient_pass(wrapped, x, target, precision=precision)
    data = grad.abs() if abs else grad
    return package(wrapped, x, data, method="saliency", classes=classes, scores=scores, output=output, kind="pixels",
                   signed=not abs, units="|d score / d pixel|" if abs else "d score / d pixel")


@register("input_x_gradient", family="attribution", group="gradient", takes="images", returns="pixels",
          cost=_pass_cost,
          paper="Shrikumar et al. 2016, Not Just a Black Box: Learning Important Features Through Propagating Activation Differences",
          report=ReportSpec(title="Input × gradient",
                            note="Each pixel's value times its gradient: red pixels push the class's score up, blue ones push "
                                 "it down. Sharper than saliency, and as noisy: look for clusters, not single pixels."))
def input_x_gradient(model: Any, x: torch.Tensor, *, target: Target = None, layer: None = None,
                     precision: Fp32Only = "fp32") -> Result:
    """Input × gradient: x · d score / d x, signed, (B, C, H, W) (a first-order Taylor attribution).

    Options:
        precision: the arithmetic, "fp32" only here: bfloat16 pixel gradients agree with fp32 only to a correlation of 0.5-0.9.
    """
    _no_layer("input_x_gradient", layer)
    wrapped, x = prepare(model, x, target, precision, no_bf16=BF16_GRADIENTS)
    grad, scores, classes, output, _ = gradient_pass(wrapped, x, target, precision=precision)
    data = x.detach().to(grad.device, torch.float32) * grad
    return package(wrapped, x, data, method="input_x_gradient", classes=classes, scores=scores, output=output, kind="pixels",
                   signed=True, units="pixel x gradient (score units)")


CAVEATS = {
    "deconvnet": {"caveat": "deconvnet passes gradients by their own sign and ignores the forward's, so its stripes and "
                            "checkerboard come from the method (the strides of the network), not from the model's evidence "
                            "(Zeiler & Fergus 2014 show it for one strong activation, not a class)"},
}


def _rectified(method: str, rule: str, model: Any, x: torch.Tensor, target: Target, layer: Any, precision: str) -> Result:
    _no_layer(method, layer)
    wrapped, x = prepare(model, x, target, precision, no_bf16=BF16_GRADIENTS)
    grad, scores, classes, output, count = gradient_pass(wrapped, x, target, rule=rule, precision=precision)
    if not count:
        warnings.warn(f"{method}: the model has no ReLU-like activation (ReLU, ReLU6, LeakyReLU, F.relu) on the "
                      f"gradient path; the result equals the plain gradient", stacklevel=3)
    return package(wrapped, x, grad, method=method, classes=classes, scores=scores, output=output, kind="pixels",
                   rewritten=count, signed=False, units=f"|{method.replace('_', ' ')} signal|", **CAVEATS.get(method, {}))


@register("guided_backprop", family="attribution", group="gradient", takes="images", returns="pixels",
          cost=_pass_cost, paper="Springenberg et al. 2015, Striving for Simplicity: The All Convolutional Net",
          report=ReportSpec(title="Guided backpropagation",
                            note="The gradient with every negative signal stopped on its way back: crisp edges of what the "
                                 "network sees. It barely depends on the class or on the trained weights (see the sanity "
                                 "check), so read it as the picture's edges, not as the evidence for the class."))
def guided_backprop(model: Any, x: torch.Tensor, *, target: Target = None, layer: None = None,
                    precision: Fp32Only = "fp32") -> Result:
    """Guided backpropagation: at every ReLU-like activation only positive gradients pass where the
    input was positive, (B, C, H, W). ``meta["rewritten"]`` counts the activations changed.

    Options:
        precision: the arithmetic, "fp32" only here: bfloat16 pixel gradients agree with fp32 only to a correlation of 0.5-0.9.
    """
    return _rectified("guided_backprop", "guided", model, x, target, layer, precision)


@register("deconvnet", family="attribution", group="gradient", takes="images", returns="pixels",
          cost=_pass_cost, paper="Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks",
          report=ReportSpec(title="Deconvnet",
                            note="Signals passed back through the network's rectifiers by their own sign only. Its stripes and "
                                 "checkerboard come from the network's strides, not from the picture: shown for completeness, "
                                 "not as evidence."))
def deconvnet(model: Any, x: torch.Tensor, *, target: Target = None, layer: None = None,
              precision: Fp32Only = "fp32") -> Result:
    """Deconvnet: ReLU-like activations pass only positive gradients, ignoring the forward's sign,
    (B, C, H, W). ``meta["rewritten"]`` counts the activations changed.

    Options:
        precision: the arithmetic, "fp32" only here: bfloat16 pixel gradients agree with fp32 only to a correlation of 0.5-0.9.
    """
    return _rectified("deconvnet", "deconvnet", model, x, target, layer, precision)


# -- integrated gradients ---------------------------------------------------------------------------
def _quadrature(steps: int, rule: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Points in [0, 1] and weights summing to 1 for the path integral (float32, CPU)."""
    if rule == "gausslegendre":
        import numpy as np

        nodes, weights = np.polynomial.legendre.leggauss(steps)
        alphas, weights = (nodes + 1) / 2, weights / 2
    elif rule == "riemann_middle":
        alphas = (torch.arange(steps, dtype=torch.float64) + 0.5) / steps
        weights = torch.full((steps,), 1 / steps, dtype=torch.float64)
    else:  # riemann_trapezoid: both ends of the path
        if steps < 2:
            raise option_error(f"integrated_gradients: rule='riemann_trapezoid' needs steps >= 2 (both ends of the path), "
                               f"got steps={steps}; use more steps or rule='gausslegendre'", "steps")
        alphas = torch.linspace(0, 1, steps, dtype=torch.float64)
        weights = torch.full((steps,), 1 / (steps - 1), dtype=torch.float64)
        weights[0] = weights[-1] = 0.5 / (steps - 1)
    return torch.as_tensor(alphas, dtype=torch.float32), torch.as_tensor(weights, dtype=torch.float32)


def as_batch(value: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    """A picture-shaped tensor option (C, H, W), (1, C, H, W) or (B, C, H, W) as (B, C, H, W) like ``x``."""
    given = value.detach().to(x.device, x.dtype)
    given = given[None] if given.dim() == x.dim() - 1 else given
    if given.dim() != x.dim() or given.shape[1:] != x.shape[1:] or given.shape[0] not in (1, x.shape[0]):
        raise option_error(f"{name} shape {tuple(value.shape)} does not fit x {tuple(x.shape)}; give (C, H, W), "
                           f"(1, C, H, W) or (B, C, H, W)", name)
    return given.expand_as(x)


def baseline_for(model: Model, x: torch.Tensor, baseline: Any) -> torch.Tensor:
    """The reference input (B, C, H, W): "zeros" (zero in the model's input space), "black" (a black
    picture, given the normalization), "blur" (x blurred with a Gaussian of sigma = 1/20 of the width),
    or a tensor of shape (C, H, W), (1, C, H, W) or (B, C, H, W)."""
    if isinstance(baseline, torch.Tensor):
        return as_batch(baseline, x, "baseline")
    if baseline == "zeros":
        return torch.zeros_like(x)
    if baseline == "black":
        per_channel = (1, -1, *[1] * (x.dim() - 2))  # (B, C, H, W) or a video's (B, C, T, H, W)
        mean = torch.tensor(model.mean or (0.0,), device=x.device, dtype=x.dtype).view(per_channel)
        std = torch.tensor(model.std or (1.0,), device=x.device, dtype=x.dtype).view(per_channel)
        return ((0 - mean) / std).expand_as(x).clone()
    if baseline == "blur":
        if x.dim() == 5:  # a video: each frame blurred on its own
            frames = x.transpose(1, 2).reshape(-1, x.shape[1], *x.shape[-2:])
            blurred = gaussian_blur(frames, max(1.0, x.shape[-1] / 20))
            return blurred.reshape(x.shape[0], x.shape[2], x.shape[1], *x.shape[-2:]).transpose(1, 2)
        return gaussian_blur(x, max(1.0, x.shape[-1] / 20))
    raise ConvscopeError(f"unknown baseline {baseline!r}; use 'zeros', 'black', 'blur' or a tensor")


def _ig_cost(context: CostContext) -> Cost:
    """Both ends of the path in one forward, then a forward and a backward per step; ``batch_size`` rows of
    graph at once."""
    steps, batch_size = context.options["steps"], context.options["batch_size"]
    memory = _rows_memory(context, min(batch_size, steps * context.pictures)) if batch_size else 0
    return Cost((2 + 3 * steps) * context.pictures * context.area(), memory, f"{steps} steps per picture")


@register("integrated_gradients", family="attribution", group="gradient", takes="images", returns="pixels",
          paper="Sundararajan, Taly & Yan 2017, Axiomatic Attribution for Deep Networks", quick={"steps": 4},
          cost=_ig_cost,
          report=ReportSpec(title="Integrated gradients",
                            note="Gradients added up along the way from a plain grey picture (the model's zero input) to this "
                                 "one: each pixel's share of "
                                 "the class's score, red for the class and blue against it; the shares add up to the score. "
                                 "Noisy pixel by pixel: look for clusters."))
def integrated_gradients(model: Any, x: torch.Tensor, *, target: Target = None, layer: None = None, steps: Steps = 50,
                         baseline: Literal["zeros", "black", "blur"] | PythonOnly[torch.Tensor] = "zeros",
                         rule: Literal["gausslegendre", "riemann_middle", "riemann_trapezoid"] = "gausslegendre",
                         batch_size: BatchSize = None, precision: Fp32Only = "fp32", progress: ProgressArg = None) -> Result:
    """Integrated gradients: (x - x') · ∫ d score(x' + a (x - x')) / dx da, signed, (B, C, H, W).

    All ``steps`` points of every image are evaluated in batches of ``batch_size`` rows.
    ``meta["delta"]`` = sum(attribution) - (score(x) - score(baseline)), the completeness error.

    Options:
        steps: points on the path from the baseline to the picture; each costs a forward and a backward.
            50 keeps the completeness error (meta["delta"]) near 1 % on ImageNet models; raise it when the
            error matters, lower it (8-16) for a quick look.
        baseline: the "absent" picture the path starts from: "zeros" (the dataset's mean colour for normalized
            models), "black" (a black picture) or "blur" (the picture blurred, which keeps its colours); from
            Python also a tensor (C, H, W) or (B, C, H, W).
        rule: how the path integral is summed: "gausslegendre" (most accurate for a given number of steps),
            "riemann_middle" or "riemann_trapezoid" (Captum's and the paper's simpler rules, to compare with them).
        batch_size: path points per forward and backward; None picks about 16 pictures of 224x224. Lower it
            when memory is short, raise it on a GPU.
        precision: the arithmetic, "fp32" only here: bfloat16 pixel gradients agree with fp32 only to a correlation of 0.5-0.9.
        progress: None (a bar on a terminal), False, True, or a callback fn(done, total, what) that may raise Cancelled.
    """
    _no_layer("integrated_gradients", layer)
    wrapped, x = prepare(model, x, target, precision, no_bf16=BF16_GRADIENTS)
    batch = x.shape[0]
    rows = batch_size or default_rows(math.prod(x.shape[2:-1]), x.shape[-1])  # a video's frames count as area
    alphas, weights = _quadrature(steps, rule)
    with Guard(wrapped.module), compute_precision(wrapped, precision), \
            tracker(progress, steps * batch, "integrated_gradients") as bar:
        inputs = wrapped.working_copy(x)
        base = channels_last(baseline_for(wrapped, inputs, baseline))
        alphas, weights = alphas.to(inputs.device), weights.to(inputs.device)
        with torch.no_grad():  # both ends in one forward: the target and the completeness check
            ends = wrapped.module(torch.cat([inputs, base]))
        clean_output = select_rows(ends, slice(0, batch))
        scores, classes = resolve_target(target, clean_output)
        fixed = fixed_target(target, classes)
        base_scores = row_scores(select_rows(ends, slice(batch, 2 * batch)), fixed)
        diff = inputs - base
        total = torch.zeros(inputs.shape, dtype=torch.float32, device=inputs.device)
        for start in range(0, steps * batch, rows):  # row j: step j // batch of image j % batch
            index = torch.arange(start, min(start + rows, steps * batch), device=inputs.device)
            step, image = index // batch, index % batch
            each = (-1, *[1] * (inputs.dim() - 1))  # one value per row, for (B, C, H, W) or (B, C, T, H, W)
            a = alphas[step].view(each).to(inputs.dtype)
            points = (base[image] + a * diff[image]).requires_grad_(True)
            out = wrapped.module(points.clone())
            (grad,) = input_gradient(row_scores(out, fixed, image), points)
            total.index_add_(0, image, grad.float() * weights[step].view(each))
            bar.advance(len(index))
    data = diff.float() * total
    delta = data.flatten(1).sum(dim=1) - (scores.float() - base_scores)
    return package(wrapped, x, data, method="integrated_gradients", classes=classes, scores=scores, output=clean_output,
                   kind="pixels", delta=delta.detach(), baseline_scores=base_scores.detach(), steps=steps, signed=True,
                   units="contribution to the score")


# -- SmoothGrad -------------------------------------------------------------------------------------
GradientMethod = Literal["saliency", "input_x_gradient", "guided_backprop", "deconvnet", "integrated_gradients"]
SET_BY_SMOOTHGRAD = ("precision", "batch_size")  # the inner method gets smoothgrad's own


def _inner_options(method: str, options: dict[str, Any]) -> tuple[Tool, dict[str, Any], dict[str, Any]]:
    """The wrapped method, the options given for it (checked by its own options model) and all of its options
    with their defaults; a one-line OptionError naming the option otherwise."""
    from ..registry import get

    inner = get(method)
    if inner.group != "gradient" or inner.name == "smoothgrad":
        raise option_error(f"smoothgrad wraps a pixel-gradient method (saliency, guided_backprop, ...), not {method!r}", "method")
    offered = [name for name in inner.options_model.model_fields if name not in SET_BY_SMOOTHGRAD]
    for name in options:
        if name not in offered:
            own = list(get("smoothgrad").options_model.model_fields)
            close = difflib.get_close_matches(name, own + offered, n=2, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise option_error(f"smoothgrad has no option {name!r}{hint} (smoothgrad options: {', '.join(own)}; "
                               f"{method} options: {', '.join(offered) or 'none'})", name)
    try:
        checked = inner.validate(options)
    except OptionError as exc:
        message = str(exc).removeprefix(inner.name + ": ")
        raise option_error(f"smoothgrad with method={method!r}: {message}", getattr(exc, "field", None)) from None
    return inner, {name: checked[name] for name in options}, checked


def _smoothgrad_cost(context: CostContext) -> Cost:
    """The clean forward, then the wrapped method on every noisy copy (its own cost per picture times ``samples``)."""
    own = context.tool.options_model.model_fields
    options = context.options
    inner, _, checked = _inner_options(options["method"], {k: v for k, v in options.items() if k not in own})
    checked = {**checked, **{k: options[k] for k in SET_BY_SMOOTHGRAD if k in checked}}
    each = inner.cost(CostContext(inner, context.model, context.inputs, {}, checked)) if inner.cost else _pass_cost(context)
    samples, batch_size = options["samples"], options["batch_size"]
    memory = each.memory
    if batch_size:
        memory = max(memory, _rows_memory(context, max(1, batch_size // context.pictures) * context.pictures))
    return Cost(context.pictures * context.area() + samples * each.forwards, memory,
                f"{samples} noisy copies of each picture through {inner.name}")


@register("smoothgrad", family="attribution", group="gradient", takes="images", returns="pixels",
          paper="Smilkov et al. 2017, SmoothGrad: removing noise by adding noise (VarGrad: Adebayo et al. 2018)",
          quick={"samples": 2}, cost=_smoothgrad_cost,
          report=ReportSpec(title="SmoothGrad",
                            note="Saliency averaged over copies of the picture with a little noise added: the noise cancels "
                                 "out, and the pixels that matter every time stay bright."))
def smoothgrad(model: Any, x: torch.Tensor, *, target: Target = None, layer: None = None, method: GradientMethod = "saliency",
               samples: Samples = 32, sigma: Sigma = 0.15, variant: Literal["mean", "square", "var"] = "mean", seed: Seed = 0,
               batch_size: BatchSize = None, precision: Fp32Only = "fp32", progress: ProgressArg = None,
               **method_options: Any) -> Result:
    """SmoothGrad over any gradient method: the average of ``method`` on ``samples`` noisy copies of x,
    (B, C, H, W). Noise is Gaussian with std ``sigma`` × (max - min) of each image.

    variant: "mean" (SmoothGrad), "square" (SmoothGrad², the mean of squares), "var" (VarGrad).
    Sample s uses the same noise for every image, drawn from ``seed`` — so the answer depends neither
    on ``batch_size`` nor on which other images share the batch. Other keyword options go to ``method``
    (``abs=False`` for saliency, ``steps=8`` for integrated_gradients) and are checked by its options.

    Options:
        method: the gradient method averaged over the noisy copies: saliency (the paper), input_x_gradient,
            guided_backprop, deconvnet or integrated_gradients (slowest: its steps for every copy).
        samples: noisy copies per picture; each costs one run of the method. The paper finds 20-50 enough;
            fewer gives speckled maps.
        sigma: the noise's standard deviation as a share of each picture's value range; the paper finds 0.1-0.2
            best. 0 gives the method itself; much more drowns the picture.
        variant: "mean" (SmoothGrad), "square" (SmoothGrad², the mean of squares: sharper, unsigned) or "var"
            (VarGrad, the variance across copies).
        seed: the noise's seed: the same seed gives the same map; change it to see how much the map depends on the noise.
        batch_size: noisy pictures per run of the method; None picks about 16 pictures of 224x224. Lower it when
            memory is short.
        precision: the arithmetic, "fp32" only here: bfloat16 pixel gradients agree with fp32 only to a correlation of 0.5-0.9.
        progress: None (a bar on a terminal), False, True, or a callback fn(done, total, what) that may raise Cancelled.
    """
    _no_layer("smoothgrad", layer)
    inner, given, _ = _inner_options(method, method_options)
    if "batch_size" in inner.options_model.model_fields:
        given["batch_size"] = batch_size
    wrapped, x = prepare(model, x, target, precision, no_bf16=BF16_GRADIENTS)
    batch = x.shape[0]
    with Guard(wrapped.module, grad=False), compute_precision(wrapped, precision):
        output = wrapped.module(wrapped.working_copy(x))
        scores, classes = resolve_target(target, output)
    fixed = fixed_target(target, classes)
    clean = x.detach()
    scale = sigma * (clean.flatten(1).amax(dim=1) - clean.flatten(1).amin(dim=1)).view(-1, *[1] * (clean.dim() - 1))
    per_call = max(1, (batch_size or default_rows(math.prod(x.shape[2:-1]), x.shape[-1])) // batch)  # frames count as area
    total = sq_total = None
    with tracker(progress, samples * batch, "smoothgrad") as bar:  # an inner loop reports into this bar
        for first in range(0, samples, per_call):
            draws = range(first, min(first + per_call, samples))
            noise = torch.cat([_noise(seed, s, x.shape[1:]) for s in draws]).to(clean.device, clean.dtype)  # (k, C, H, W)
            noisy = (clean[None] + noise[:, None] * scale[None]).reshape(-1, *x.shape[1:])  # sample-major (k*B, C, H, W)
            chunk_target = _repeated(fixed, len(draws), batch)
            once = inner.fn(wrapped, noisy, target=chunk_target, precision=precision, **given)
            inner_signed, inner_units = bool(once.meta.get("signed")), once.meta.get("units", f"{method} value")
            part = once.data.float().reshape(len(draws), batch, *once.data.shape[1:])
            total = part.sum(0) if total is None else total + part.sum(0)
            sq_total = (part**2).sum(0) if sq_total is None else sq_total + (part**2).sum(0)
            bar.advance(len(draws) * batch)
    mean, mean_sq = total / samples, sq_total / samples
    data = {"mean": mean, "square": mean_sq, "var": (mean_sq - mean**2).clamp_min(0)}[variant]
    return package(wrapped, x, data, method="smoothgrad", classes=classes, scores=scores, output=output, kind="pixels",
                   inner=method, variant=variant, samples=samples, sigma=sigma,
                   signed=variant == "mean" and inner_signed, units=f"{variant} of {inner_units} over noisy copies")


def _repeated(fixed: Target, times: int, batch: int) -> Target:
    """The fixed target for ``times`` sample-major copies of a batch of ``batch`` pictures (row i is picture i % batch)."""
    if isinstance(fixed, torch.Tensor):
        return fixed.repeat(times)
    if isinstance(fixed, OutputTarget) and hasattr(fixed, "select"):
        return fixed.select(torch.arange(times * batch) % batch)
    return fixed


def _noise(seed: int, sample: int, shape: torch.Size) -> torch.Tensor:
    """Standard normal noise (1, C, H, W) for one sample, the same on every machine (CPU generator)."""
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + sample)
    return torch.randn((1, *shape), generator=generator)
