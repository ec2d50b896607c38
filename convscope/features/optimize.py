"""Feature visualization by optimization: what input a channel, a neuron or a class wants, and Deep Dream.

``maximize`` runs Lucid's recipe (Olah, Mordvintsev & Schubert 2017): a parameterized picture (FFT
spectrum, decorrelated colour, sigmoid to [0, 1]) goes through random transforms and the model's own
normalization; Adam changes the parameters to increase the objective. It is fast because

* the forward **stops at the deepest layer the objective reads** (a forward hook raises a private
  exception there), so nothing after that layer runs, and the backward starts from it;
* only the **input gradients** are computed: inside ``Guard`` no parameter requires grad, and
  ``torch.autograd.grad`` differentiates with respect to the parameterization alone;
* a **batch of objectives** (``channel(L, range(64))``) is one optimization of a batch of pictures.

``dream`` is Deep Dream (Mordvintsev, Olah & Tyka 2015): gradient ascent on a photo's layer
activations (``layer_l2``), octave by octave, with random shifts and normalized gradient steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..engine import PRECISIONS, compute_precision, default_rows
from ..errors import ConvscopeError, InputError, LayerError
from ..hooks import Guard, LayerRef
from ..layers import is_conv, resolve_layer, trace
from ..models import Model, as_model
from ..options import Precision
from ..progress import ProgressArg, tracker
from ..result import Result
from .activations import _resolve_refs, _Tap, structure_trace
from .objectives import Evaluation, Objective, as_objective, class_logit, layer_l2
from .param import Transform, correlate_gradient, image_param, resolve_transforms

__all__ = ["class_image", "default_dream_layer", "dream", "maximize"]


def _size(model: Model, size: int | Sequence[int] | None) -> tuple[int, int]:
    if size is None:
        if model.input_size is None:
            raise InputError("this model has no input_size; pass size=(H, W) (or wrap it in cs.Model(..., input_size=...))")
        return model.input_size
    if isinstance(size, int):
        size = (size, size)
    height, width = (int(s) for s in size)
    if height < 8 or width < 8:
        raise InputError(f"size {height}x{width} is too small; use at least 8x8 pixels")
    return height, width


def _normalizer(model: Model, device: torch.device) -> Any:
    """[0, 1] pictures -> the model's input space (its own mean/std)."""
    mean = None if model.mean is None else torch.tensor(model.mean, device=device).view(1, -1, 1, 1)
    std = None if model.std is None else torch.tensor(model.std, device=device).view(1, -1, 1, 1)

    def normalize(images: torch.Tensor) -> torch.Tensor:
        if mean is not None:
            images = images - mean
        if std is not None:
            images = images / std
        return images

    return normalize


def _check_common(steps: int, lr: float, precision: str) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ConvscopeError(f"steps must be a positive int, got {steps!r}")
    if not lr > 0:
        raise ConvscopeError(f"lr must be positive, got {lr!r}")
    if precision not in PRECISIONS:
        raise ConvscopeError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")


def _batch(objective: Objective, batch: int | None) -> int:
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise ConvscopeError(f"batch must be a positive int, got {batch!r}")
    if batch is not None and objective.batch is not None and batch != objective.batch:
        raise ConvscopeError(f"batch={batch} but the objective {objective} gives {objective.batch} per-image targets; drop batch=")
    return batch or objective.batch or 1


def _check_runs_at(model: Model, objective: Objective, size: tuple[int, int]) -> None:
    """An objective that reads the model's output needs the whole model to run at ``size``."""
    if not objective.needs_output:
        return
    try:
        trace(model.module, (model.channels, *size))
    except RuntimeError as exc:
        own = f"; it was built for {model.input_size[0]}x{model.input_size[1]}" if model.input_size else ""
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"the model's output cannot be computed on {size[0]}x{size[1]} pictures{own} ({first})") from None


def _optimize(wrapped: Model, objective: Objective, *, steps: int, size: tuple[int, int], batch: int, param: str,
              decorrelate: bool, transforms: Transform | None, lr: float, seed: int, precision: str,
              batch_size: int | None, progress: ProgressArg, what: str) -> dict[str, Any]:
    """The optimization loop shared by maximize and class_image.

    Each step: pictures from the parameters -> transforms -> the model's normalization -> forward up to
    the objective's deepest layer, in chunks of ``rows`` pictures (gradients of different pictures are
    independent unless the objective couples them) -> gradients to the model's input (and to the
    picture, for objectives that read it) -> one backward through transforms and parameterization.
    """
    device = wrapped.device
    refs = _resolve_refs(wrapped, objective.layers, (wrapped.channels, *size))
    _check_runs_at(wrapped, objective, size)
    generator = torch.Generator().manual_seed(int(seed))
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ConvscopeError(f"batch_size must be a positive int, got {batch_size!r}")
    # on a CPU about 8 pictures of 224x224 per forward (a batch of 64 costs twice as much per picture with the default
    # allocator; see benchmarks/bench_optimize.py); on a GPU all at once
    automatic = batch if device.type != "cpu" else default_rows(*size, per_224=8)
    rows = batch if objective.coupled else min(batch, batch_size or automatic)
    chunks = [slice(i, min(i + rows, batch)) for i in range(0, batch, rows)]

    def model_input(images: torch.Tensor, transform: Transform | None) -> torch.Tensor:
        x = images if transform is None else transform(images, generator)
        if tuple(x.shape[-2:]) != size:  # a transform changed the size; the model sees ``size`` (fixed-size heads)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return normalize(x)

    def score(tap: _Tap, x: torch.Tensor, images: torch.Tensor, output: bool, part: slice | None) -> tuple[torch.Tensor, Any]:
        with compute_precision(wrapped, precision):
            acts, out = tap.run(wrapped.module, x.contiguous(memory_format=torch.channels_last), output=output)
        acts = {k: v.float() for k, v in acts.items()}
        out = out.float() if isinstance(out, torch.Tensor) else out
        return objective(Evaluation(acts, out, images, part)), out

    def step_gradients(tap: _Tap, picture: Any) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        images = picture.image()
        x = model_input(images, transforms)
        if len(chunks) == 1:
            scores, _ = score(tap, x, images, objective.needs_output, None)
            if not scores.requires_grad:
                raise ConvscopeError(f"objective {objective} does not depend on the picture; nothing to optimize")
            return scores, torch.autograd.grad(scores.sum(), picture.params)
        x_rows, image_rows, parts = [], [], []
        for part in chunks:  # the transforms ran on the whole batch: chunking never changes the answer
            xs = x[part].detach().requires_grad_(True)
            ims = images[part].detach().requires_grad_(True)
            s, _ = score(tap, xs, ims, objective.needs_output, part)
            if not s.requires_grad:
                raise ConvscopeError(f"objective {objective} does not depend on the picture; nothing to optimize")
            gx, gi = torch.autograd.grad(s.sum(), (xs, ims), allow_unused=True)
            x_rows.append(torch.zeros_like(xs) if gx is None else gx)
            image_rows.append(torch.zeros_like(ims) if gi is None else gi)
            parts.append(s.detach())
        grads = torch.autograd.grad((x, images), picture.params, grad_outputs=(torch.cat(x_rows), torch.cat(image_rows)))
        return torch.cat(parts), grads

    with Guard(wrapped.module) as guard, tracker(progress, steps, what) as bar:
        normalize = _normalizer(wrapped, device)  # inside the guard: a caller's inference_mode tensors cannot enter autograd
        history = torch.empty(batch, steps, device=device)  # on the device: no sync per step
        tap = _Tap(guard, wrapped, refs)
        picture = image_param(param, batch, wrapped.channels, size, decorrelate=decorrelate, generator=generator, device=device)
        optimizer = torch.optim.Adam(picture.params, lr=lr)
        for step in range(steps):
            scores, grads = step_gradients(tap, picture)
            for tensor, grad in zip(picture.params, grads):
                tensor.grad = -grad  # Adam minimizes; objectives are maximized
            optimizer.step()
            history[:, step] = scores.detach().float()
            bar.advance(1)
        with torch.no_grad():
            images = picture.image().detach()
            inputs = normalize(images)
            finals = [score(tap, inputs[part], images[part], objective.needs_output or what == "class_image",
                            None if len(chunks) == 1 else part) for part in chunks]
    outputs = [out for _, out in finals]
    output = torch.cat(outputs) if all(isinstance(o, torch.Tensor) for o in outputs) else None
    return {"images": images.float(), "values": torch.cat([v for v, _ in finals]).float(), "output": output,
            "history": history.cpu(), "inputs": inputs.float(), "layers": [ref.label for ref in refs.values()]}


def _per_image(targets: list[int] | None, batch: int) -> list[int] | None:
    """The objective's channel/class per picture (for titles), or None."""
    if targets is None:
        return None
    return targets * batch if len(targets) == 1 else list(targets)


def maximize(model: Any, objective: Objective | str, *, steps: int = 256, size: int | Sequence[int] | None = None,
             batch: int | None = None, param: Literal["fft", "pixel"] = "fft", decorrelate: bool = True,
             transforms: Any = "default", lr: float = 0.05, seed: int = 0, precision: Precision = "fp32",
             batch_size: int | None = None, progress: ProgressArg = None) -> Result:
    """The pictures that maximize ``objective``: ``data`` (B, C, H, W) in [0, 1] (display space).

    ``objective``: an Objective (``channel(L, c) - 0.05 * total_variation()``) or the shorthand
    ``"layer:channel"``; ``channel(L, range(64))`` optimizes 64 pictures at once, one per channel.
    ``meta``: ``history`` (B, steps) objective values during the run (on transformed pictures),
    ``values`` (B,) the objective on the final, un-transformed pictures (for a channel objective: its
    mean activation), ``objective`` (its repr). ``inputs`` holds the pictures normalized for the model.
    Lucid's recipe: Olah, Mordvintsev & Schubert 2017, Feature Visualization (Distill).

    Options:
        steps: optimization steps (Adam).
        size: picture size, an int or (H, W) (default: the model's input size).
        batch: pictures optimized together (default: one per target of the objective, else 1).
        param: "fft" (1/f-scaled spectrum: smooth, natural pictures) or "pixel".
        decorrelate: optimize colours in ImageNet's whitened colour space (3-channel models).
        transforms: "default" (Lucid's random shift, zoom and rotation in one resampling), "lucid" (Lucid's
            pad-jitter-scale-rotate-jitter chain), "none", or transform functions.
        lr: Adam's learning rate.
        seed: random seed of the start picture and the transforms (same seed, same pictures).
        precision: "fp32" or "bf16" (autocast forward).
        batch_size: pictures per forward (None: about 8 of 224x224 on a CPU, all on a GPU); never changes the answer.
        progress: None (a bar on a terminal), False, True or a callback fn(done, total, what).
    """
    wrapped = as_model(model)
    objective = as_objective(objective)
    _check_common(steps, lr, precision)
    picture_size = _size(wrapped, size)
    run = _optimize(wrapped, objective, steps=steps, size=picture_size, batch=_batch(objective, batch), param=param,
                    decorrelate=decorrelate, transforms=resolve_transforms(transforms, min(picture_size)), lr=lr,
                    seed=seed, precision=precision, batch_size=batch_size, progress=progress, what="maximize")
    return Result(data=run["images"], method="maximize", layer=",".join(run["layers"]) or None,
                  meta={"objective": repr(objective), "history": run["history"], "values": run["values"],
                        "targets": _per_image(objective.targets, len(run["images"])),
                        "param": param, "steps": steps, "seed": seed, "lr": lr, "precision": precision},
                  inputs=run["inputs"], mean=wrapped.mean, std=wrapped.std)


def class_image(model: Any, class_index: int | Sequence[int], *, steps: int = 256, size: int | Sequence[int] | None = None,
                param: Literal["fft", "pixel"] = "fft", decorrelate: bool = True, transforms: Any = "default", lr: float = 0.05,
                seed: int = 0, precision: Precision = "fp32", batch_size: int | None = None,
                progress: ProgressArg = None) -> Result:
    """The picture a class wants: ``maximize(class_logit(class_index))``, (B, C, H, W) in [0, 1].

    A sequence of classes gives one picture per class in one run. ``meta["probability"]`` (B,) is the
    model's softmax probability of the class on the final picture as it is (no transforms);
    ``meta["predicted"]`` the top-1 class. Simonyan, Vedaldi & Zisserman 2013 (class model
    visualization), with Lucid's parameterization and transforms.

    Options:
        steps: optimization steps (Adam).
        size: picture size, an int or (H, W) (default: the model's input size).
        param: "fft" (1/f-scaled spectrum) or "pixel".
        decorrelate: optimize colours in ImageNet's whitened colour space (3-channel models).
        transforms: "default" (random shift, zoom and rotation in one resampling), "lucid", "none", or transform functions.
        lr: Adam's learning rate.
        seed: random seed (same seed, same pictures).
        precision: "fp32" or "bf16" (autocast forward).
        batch_size: pictures per forward (None: about 8 of 224x224 on a CPU, all on a GPU); never changes the answer.
        progress: None (a bar on a terminal), False, True or a callback fn(done, total, what).
    """
    wrapped = as_model(model)
    objective = class_logit(class_index)
    _check_common(steps, lr, precision)
    picture_size = _size(wrapped, size)
    run = _optimize(wrapped, objective, steps=steps, size=picture_size, batch=_batch(objective, None), param=param,
                    decorrelate=decorrelate, transforms=resolve_transforms(transforms, min(picture_size)), lr=lr,
                    seed=seed, precision=precision, batch_size=batch_size, progress=progress, what="class_image")
    output = run["output"]
    classes = torch.as_tensor(class_index, dtype=torch.long).reshape(-1)
    classes = classes.expand(output.shape[0]) if classes.numel() == 1 else classes
    probs = output.softmax(dim=1)
    return Result(data=run["images"], method="class_image", target=classes, labels=wrapped.labels_for(classes),
                  meta={"objective": repr(objective), "history": run["history"], "values": run["values"],
                        "probability": probs.gather(1, classes[:, None].to(probs.device))[:, 0].cpu(),
                        "predicted": probs.argmax(dim=1).cpu(), "param": param, "steps": steps, "seed": seed,
                        "lr": lr, "precision": precision},
                  inputs=run["inputs"], mean=wrapped.mean, std=wrapped.std)


# -- Deep Dream --------------------------------------------------------------------------------------
def default_dream_layer(model: Any, input_size: Sequence[int] | None = None) -> LayerRef:
    """A layer for Deep Dream when none is named: the convolution about 60% of the way through the
    network's convolutions (textures and object parts, not edges and not whole classes).

    Options:
        input_size: (C, H, W) or (H, W) to trace with (default: the model's).
    """
    wrapped = as_model(model)
    if input_size is None:
        if wrapped.input_size is None:
            raise InputError("this model has no input_size; pass layer=... to dream")
        shape: tuple[int, ...] = (wrapped.channels, *wrapped.input_size)
    else:
        shape = tuple(int(s) for s in input_size)
        shape = (wrapped.channels, *shape) if len(shape) == 2 else shape
    records = structure_trace(wrapped, shape)
    convs = [r for r in records if is_conv(r.module) and r.output_shape is not None and len(r.output_shape) == 3]
    if not convs:
        raise LayerError("the model has no convolution to dream with; pass layer=...")
    chosen = convs[min(len(convs) - 1, int(0.6 * len(convs)))]
    shared = sum(1 for r in records if r.module is chosen.module) > 1
    return LayerRef(chosen.name, chosen.module, chosen.call if shared else None)


def _photo_shape(model: Model, image: Any, size: int | None) -> tuple[int, int]:
    """(H, W) of the picture ``_photo`` will make, without making it."""
    if isinstance(image, torch.Tensor):
        height, width = image.shape[-2:]
    else:
        from ..images import load_image

        width, height = load_image(image).size
    if size is None:
        return int(height), int(width)
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _photo(model: Model, image: Any, size: int | None) -> torch.Tensor:
    """The picture to dream on as (B, C, H, W) in [0, 1] on the model's device."""
    device = model.device
    if isinstance(image, torch.Tensor):  # a preprocessed batch: undo the normalization
        x = image.detach()
        x = x[None] if x.dim() == 3 else x
        model.check_input(x)
        x = x.to(device, torch.float32)
        if model.std is not None:
            x = x * torch.tensor(model.std, device=device).view(1, -1, 1, 1)
        if model.mean is not None:
            x = x + torch.tensor(model.mean, device=device).view(1, -1, 1, 1)
        x = x.clamp(0, 1)
        if size is not None:
            scale = size / max(x.shape[-2:])
            x = F.interpolate(x, size=(round(x.shape[-2] * scale), round(x.shape[-1] * scale)), mode="bilinear",
                              align_corners=False, antialias=scale < 1)
        return x
    import numpy as np
    from PIL import Image

    from ..images import load_image

    pil = load_image(image)
    if size is not None:
        scale = size / max(pil.size)
        pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))), Image.BICUBIC)
    if model.channels == 1:
        pil = pil.convert("L")
    elif model.channels != 3:
        raise InputError(f"dream reads 1- or 3-channel pictures; this model takes {model.channels}: pass a tensor")
    array = np.asarray(pil, dtype=np.float32) / 255.0
    x = torch.from_numpy(array)
    x = x[None, None] if x.dim() == 2 else x.permute(2, 0, 1)[None]
    return x.to(device)


def dream(model: Any, image: Any, layer: Any = None, *, octaves: int = 4, octave_scale: float = 1.4, steps: int = 10,
          lr: float = 0.01, jitter: int = 32, size: int | None = None, objective: Objective | str | None = None,
          decorrelate: bool = True, seed: int = 0, precision: Precision = "fp32", progress: ProgressArg = None) -> Result:
    """Deep Dream: the photo changed to excite ``layer`` more ("whatever you see there, more of it"),
    (B, C, H, W) in [0, 1] at the photo's own size.

    Gradient ascent on ``layer_l2(layer)`` (the mean squared activation) at ``octaves`` scales, small to
    large, each ``octave_scale`` times the previous; at each step the picture is shifted by a random
    offset (up to ``jitter`` pixels) and moved by ``lr`` times the gradient divided by its mean absolute
    value; with ``decorrelate`` (3-channel models) the gradient is taken in Lucid's decorrelated colour
    space (``param.correlate_gradient``), which keeps the photo's colours instead of adding rainbow noise.
    ``image``: a path, PIL image, array, sample name, or a preprocessed tensor (B, C, H, W).
    ``layer=None`` picks :func:`default_dream_layer`. Mordvintsev, Olah & Tyka 2015, Inceptionism.

    Options:
        octaves: number of scales (1: no pyramid).
        octave_scale: size ratio between consecutive octaves.
        steps: gradient steps per octave.
        lr: step size in [0, 1] pixel units (the gradient is normalized by its mean absolute value).
        jitter: largest random shift in pixels before each step.
        size: resize the photo so its longer side is this many pixels (default: keep its size).
        objective: dream on another objective instead of layer_l2(layer) (e.g. "layer:channel").
        decorrelate: step in the decorrelated colour space (natural colours; 3-channel models).
        seed: random seed of the shifts (same seed, same picture).
        precision: "fp32" or "bf16" (autocast forward).
        progress: None (a bar on a terminal), False, True or a callback fn(done, total, what).
    """
    wrapped = as_model(model)
    _check_common(steps, lr, precision)
    if not isinstance(octaves, int) or octaves < 1:
        raise ConvscopeError(f"octaves must be a positive int, got {octaves!r}")
    if not octave_scale > 1:
        raise ConvscopeError(f"octave_scale must be greater than 1, got {octave_scale!r}")
    photo_shape = _photo_shape(wrapped, image, size)
    height, width = photo_shape
    if objective is None:
        ref = default_dream_layer(wrapped, (wrapped.channels, height, width)) if layer is None else resolve_layer(wrapped, layer)
        objective = layer_l2(ref.label)
    else:
        objective = as_objective(objective)
    refs = _resolve_refs(wrapped, objective.layers, (wrapped.channels, height, width))
    _check_runs_at(wrapped, objective, (height, width))
    # the pyramid: the smallest octave keeps at least 32 pixels on its shorter side
    octaves = max(1, min(octaves, 1 + int(math.log(max(1.0, min(height, width) / 32)) / math.log(octave_scale))))
    sizes = [(max(1, round(height / octave_scale**i)), max(1, round(width / octave_scale**i))) for i in reversed(range(octaves))]
    generator = torch.Generator().manual_seed(int(seed))
    detail = None
    with Guard(wrapped.module) as guard, tracker(progress, octaves * steps, "dream") as bar:
        base = _photo(wrapped, image, size)  # inside the guard: never an inference tensor
        normalize = _normalizer(wrapped, base.device)
        history = torch.empty(base.shape[0], octaves * steps, device=base.device)
        tap = _Tap(guard, wrapped, refs)
        for octave, (h, w) in enumerate(sizes):
            octave_base = base if (h, w) == (height, width) else F.interpolate(
                base, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
            if detail is not None:
                detail = F.interpolate(detail, size=(h, w), mode="bilinear", align_corners=False)
            picture = octave_base if detail is None else (octave_base + detail).clamp(0, 1)
            shift = max(0, min(jitter, h // 4, w // 4))
            for step in range(steps):
                dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=generator))
                leaf = picture.detach().requires_grad_(True)
                rolled = torch.roll(leaf, shifts=(dy, dx), dims=(2, 3))
                x = normalize(rolled).contiguous(memory_format=torch.channels_last)
                with compute_precision(wrapped, precision):
                    acts, out = tap.run(wrapped.module, x, output=objective.needs_output)
                scores = objective(Evaluation({k: v.float() for k, v in acts.items()},
                                              out.float() if isinstance(out, torch.Tensor) else out, rolled))
                if not scores.requires_grad:
                    raise ConvscopeError(f"objective {objective} does not depend on the picture; nothing to dream")
                (grad,) = torch.autograd.grad(scores.sum(), leaf)
                if decorrelate and grad.shape[1] == 3:
                    grad = correlate_gradient(grad)
                grad = grad / grad.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
                picture = (picture + lr * grad).clamp(0, 1).detach()
                history[:, octave * steps + step] = scores.detach().float()
                bar.advance(1)
            detail = picture - octave_base
        inputs = normalize(picture.float())
    dreamed = picture.float()
    return Result(data=dreamed, method="dream", layer=",".join(ref.label for ref in refs.values()) or None,
                  meta={"objective": repr(objective), "history": history.cpu(), "original": base.float(),
                        "octaves": octaves, "octave_scale": octave_scale, "steps": steps, "lr": lr, "seed": seed,
                        "precision": precision},
                  inputs=inputs, mean=wrapped.mean, std=wrapped.std)
