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
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..engine import Cost, compute_precision, default_rows, memory_budget
from ..errors import ConvscopeError, InputError, LayerError
from ..hooks import Guard, LayerRef
from ..layers import is_conv, resolve_layer, trace
from ..models import Model, as_model
from ..options import BatchSize, Precision, PythonOnly, Seed
from ..progress import ProgressArg, tracker
from ..registry import CostContext, LayerUse, ReportSpec, register
from ..result import Result
from .activations import _resolve_refs, _Tap, structure_trace
from .objectives import Evaluation, Objective, as_objective, class_logit, layer_l2, objective_from_string
from .param import Transform, correlate_gradient, image_param, resolve_transforms

__all__ = ["class_image", "default_dream_layer", "dream", "maximize"]

# -- option types: bounds a demanding user never reaches, that stop absurd values ----------------------------
Steps = Annotated[int, Field(ge=1, le=4096)]
Side = Annotated[int, Field(ge=8, le=2048)]
PictureSize = Side | tuple[Side, Side] | None
Pictures = Annotated[int, Field(ge=1, le=512)] | None
LearningRate = Annotated[float, Field(gt=0, le=10)]
Transforms = Literal["default", "lucid", "none"] | PythonOnly[Callable[..., Any]] | PythonOnly[list[Callable[..., Any]]] | None
ObjectiveText = Annotated[str, Field(min_length=1, max_length=2000)]
ObjectiveArg = ObjectiveText | PythonOnly[Objective]
ClassIndex = Annotated[int, Field(ge=0, le=1_000_000)]
Classes = ClassIndex | Annotated[list[ClassIndex], Field(min_length=1, max_length=512)]
COST_NOTE = "each step a forward and a backward (3 forwards)"


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


def _as_float(t: Any) -> Any:
    """Half-precision values (autocast) as float32; float32 and float64 as they are."""
    return t.float() if isinstance(t, torch.Tensor) and t.dtype in (torch.float16, torch.bfloat16) else t


def _param_dtype(model: Model) -> torch.dtype:
    """Pictures are optimized in float32, or float64 for a double-precision model."""
    return torch.float64 if model.dtype == torch.float64 else torch.float32


def _batch(objective: Objective, batch: int | None) -> int:
    if batch is not None and objective.batch is not None and batch != objective.batch:
        raise ConvscopeError(f"batch={batch} but the objective {objective} gives {objective.batch} per-image targets; drop batch=")
    return batch or objective.batch or 1


def _objective(model: Model, objective: Objective | str, layer: Any = None, shape: tuple[int, ...] | None = None) -> Objective:
    """An Objective from an Objective, the shorthand "layer:channel" / "logit:class", or channels only
    ("17", "0-15", "3,5,9") of ``layer`` (default: :func:`default_dream_layer`, a mid-network convolution)."""
    if isinstance(objective, str) and ":" not in objective:
        ref = default_dream_layer(model, shape) if layer is None else resolve_layer(model, layer)
        return objective_from_string(f"{ref.label}:{objective.strip()}")
    found = as_objective(objective)
    if layer is not None:
        label = resolve_layer(model, layer).label
        if found.layers != (label,):
            raise LayerError(f"the objective {found} names its own layers; drop layer={label!r} (layer= is for an objective "
                             f"given as channels only, like '17' or '0-15')")
    return found


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


# -- memory and batch rows ---------------------------------------------------------------------------------
def saved_bytes(model: Model, layers: Sequence[str], size: tuple[int, int], *, whole: bool = False) -> int | None:
    """About the bytes autograd keeps for ONE picture of ``size`` in a forward that stops after the deepest
    of ``layers`` (``whole``: the forward runs to the output): every leaf layer's output up to there, twice
    (the gradients of the backward). From the layer trace at ``size`` — the one the tool itself makes, so
    it is cached — or, for a model whose head takes one size only, at its own size scaled by area; None
    when it cannot be known cheaply."""
    traced = tuple(size)
    try:
        try:
            records = trace(model.module, (model.channels, *traced))
        except RuntimeError:
            if model.input_size is None or tuple(model.input_size) == traced:
                return None
            traced = tuple(model.input_size)
            records = trace(model.module, (model.channels, *traced))
        refs = [resolve_layer(model, label) for label in layers]
    except (ConvscopeError, RuntimeError):
        return None
    end = len(records)
    if refs and not whole:
        positions = [next((i for i, r in enumerate(records) if r.module is ref.module and r.call == (ref.call or 0)), None)
                     for ref in refs]
        if None in positions:
            return None
        end = max(positions) + 1
    values = sum(math.prod(r.output_shape) for r in records[:end] if r.is_leaf and r.output_shape)
    itemsize = torch.empty(0, dtype=model.dtype).element_size()
    return int(2 * values * itemsize * (size[0] * size[1]) / (traced[0] * traced[1]))


def _rows(model: Model, objective: Objective, size: tuple[int, int], batch: int, batch_size: int | None) -> tuple[int, int | None]:
    """(pictures per forward, bytes autograd keeps per picture or None). ``batch_size`` when given; else
    about 8 pictures of 224x224 on a CPU (a batch of 64 costs twice as much per picture with the default
    allocator; see benchmarks/bench_optimize.py) or the whole batch on a GPU, fewer when they would pass
    :func:`convscope.engine.memory_budget`. A coupled objective (diversity) runs the whole batch at once."""
    per_picture = saved_bytes(model, objective.layers, size, whole=objective.needs_output)
    if objective.coupled:
        return batch, per_picture
    if batch_size is not None:
        return min(batch, batch_size), per_picture
    automatic = default_rows(*size, per_224=8) if model.device.type == "cpu" else batch
    if per_picture:
        automatic = min(automatic, max(1, memory_budget(model.device) // per_picture))
    return max(1, min(batch, automatic)), per_picture


def _optimization_cost(context: CostContext, objective: Objective, pictures: int, size: tuple[int, int], steps: int,
                       what: str) -> Cost:
    """``pictures`` x (``steps`` x (forward + backward) + the final forward) at ``size`` (a fair upper bound: the
    forward really stops at the objective's layer); memory: one chunk's autograd graph plus the pictures,
    their parameters and Adam's two moments."""
    rows, per_picture = _rows(context.model, objective, size, pictures, context.options.get("batch_size"))
    memory = rows * (per_picture or 0) + pictures * context.model.channels * size[0] * size[1] * 4 * 12
    return Cost(pictures * (3 * steps + 1) * context.area(*size), memory,
                f"{pictures} picture{'s' if pictures != 1 else ''} x {steps} steps at {size[0]}x{size[1]}, {what}")


def _maximize_cost(context: CostContext) -> Cost:
    if context.model is None:
        return Cost(0)
    options = context.options
    try:
        size = _size(context.model, options["size"])
        objective = _objective(context.model, options["objective"], context.special.get("layer"), (context.model.channels, *size))
        pictures = _batch(objective, options["batch"])
    except (ConvscopeError, RuntimeError):
        return Cost(0)  # the tool says what is wrong, before any work
    return _optimization_cost(context, objective, pictures, size, options["steps"], COST_NOTE)


def _class_image_cost(context: CostContext) -> Cost:
    classes = _classes(context.special.get("target"))  # a missing or bad class is refused before any work
    if context.model is None:
        return Cost(0)
    try:
        size = _size(context.model, context.options["size"])
        objective = class_logit(classes)
    except (ConvscopeError, RuntimeError):
        return Cost(0)
    return _optimization_cost(context, objective, objective.batch or 1, size, context.options["steps"], COST_NOTE)


# -- the optimization loop ---------------------------------------------------------------------------------
def _optimize(wrapped: Model, objective: Objective, *, steps: int, size: tuple[int, int], batch: int, param: str,
              decorrelate: bool, transforms: Transform | None, lr: float, seed: int, precision: str,
              batch_size: int | None, progress: ProgressArg, what: str) -> dict[str, Any]:
    """The optimization loop shared by maximize and class_image.

    Each step: pictures from the parameters -> transforms -> the model's normalization -> forward up to
    the objective's deepest layer, in chunks of ``rows`` pictures (gradients of different pictures are
    independent unless the objective couples them) -> gradients to the model's input (and to the
    picture, for objectives that read it) -> one backward through transforms and parameterization.
    Progress: one unit per chunk of a step (a step of 64 pictures on a CPU is several seconds of work).
    """
    device = wrapped.device
    refs = _resolve_refs(wrapped, objective.layers, (wrapped.channels, *size))
    _check_runs_at(wrapped, objective, size)
    generator = torch.Generator().manual_seed(int(seed))
    rows, _ = _rows(wrapped, objective, size, batch, batch_size)
    chunks = [slice(i, min(i + rows, batch)) for i in range(0, batch, rows)]
    dtype = _param_dtype(wrapped)

    def model_input(images: torch.Tensor, transform: Transform | None) -> torch.Tensor:
        x = images if transform is None else transform(images, generator)
        if tuple(x.shape[-2:]) != size:  # a transform changed the size; the model sees ``size`` (fixed-size heads)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return wrapped.normalize(x)

    def score(tap: _Tap, x: torch.Tensor, images: torch.Tensor, output: bool, part: slice | None) -> tuple[torch.Tensor, Any]:
        x = x.to(wrapped.dtype) if x.dtype != wrapped.dtype else x
        with compute_precision(wrapped, precision):
            acts, out = tap.run(wrapped.module, x.contiguous(memory_format=torch.channels_last), output=output)
        acts = {k: _as_float(v) for k, v in acts.items()}
        return objective(Evaluation(acts, _as_float(out), images, part)), _as_float(out)

    def step_gradients(tap: _Tap, picture: Any, bar: Any) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        images = picture.image()
        x = model_input(images, transforms)
        if len(chunks) == 1:
            scores, _ = score(tap, x, images, objective.needs_output, None)
            if not scores.requires_grad:
                raise ConvscopeError(f"objective {objective} does not depend on the picture; nothing to optimize")
            grads = torch.autograd.grad(scores.sum(), picture.params)
            bar.advance(1)
            return scores, grads
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
            bar.advance(1)  # a callback may cancel here: the next chunk never runs
        grads = torch.autograd.grad((x, images), picture.params, grad_outputs=(torch.cat(x_rows), torch.cat(image_rows)))
        return torch.cat(parts), grads

    with Guard(wrapped.module) as guard, tracker(progress, steps * len(chunks), what) as bar:
        history = torch.empty(batch, steps, device=device)  # on the device: no sync per step
        tap = _Tap(guard, wrapped, refs)
        picture = image_param(param, batch, wrapped.channels, size, decorrelate=decorrelate, generator=generator,
                              device=device, dtype=dtype)
        optimizer = torch.optim.Adam(picture.params, lr=lr)
        for step in range(steps):
            scores, grads = step_gradients(tap, picture, bar)
            for tensor, grad in zip(picture.params, grads):
                tensor.grad = -grad  # Adam minimizes; objectives are maximized
            optimizer.step()
            history[:, step] = scores.detach().float()
        with torch.no_grad():
            images = picture.image().detach()
            inputs = wrapped.normalize(images)
            finals = [score(tap, inputs[part], images[part], objective.needs_output or what == "class_image",
                            None if len(chunks) == 1 else part) for part in chunks]
    outputs = [out for _, out in finals]
    output = torch.cat(outputs).float() if all(isinstance(o, torch.Tensor) for o in outputs) else None
    return {"images": images.float(), "values": torch.cat([v for v, _ in finals]).float(), "output": output,
            "history": history.cpu(), "inputs": inputs.float(), "layers": [ref.label for ref in refs.values()]}


def _per_image(targets: list[int] | None, batch: int) -> list[int] | None:
    """The objective's channel/class per picture (for titles), or None."""
    if targets is None:
        return None
    return targets * batch if len(targets) == 1 else list(targets)


@register("maximize", family="features", takes="model", returns="picture", cost=_maximize_cost,
          layer=LayerUse("maps", "a convolution about 60% of the way through the network"),
          paper="Olah, Mordvintsev & Schubert 2017, Feature Visualization (Distill)",
          quick={"steps": 32, "size": 96},
          report=ReportSpec(options={"objective": "0-63", "steps": 64, "size": 96}, quick={"objective": "0-7", "steps": 16, "size": 64},
                            title="What the channels want to see",
                            note="Pictures grown from noise, each changed step by step until one channel of a layer in the "
                                 "middle of the network responds strongly (title: the channel and how strongly it responds); "
                                 "the repeated motif is the pattern that channel detects."))
def maximize(model: Any, objective: ObjectiveArg = "0-7", *, layer: Any = None, steps: Steps = 256, size: PictureSize = None,
             batch: Pictures = None, param: Literal["fft", "pixel"] = "fft", decorrelate: bool = True, transforms: Transforms = "default",
             lr: LearningRate = 0.05, seed: Seed = 0, precision: Precision = "fp32", batch_size: BatchSize = None,
             progress: ProgressArg = None) -> Result:
    """Activation maximization: the pictures that excite a channel, a neuron or a class most.

    ``data`` (B, C, H, W) in [0, 1]. ``objective``: an Objective (``channel(L, c) - 0.05 * total_variation()``), the shorthand
    ``"layer:channel"`` / ``"logit:class"``, or channels only (``"17"``, ``"0-15"``) of ``layer`` (default: a
    convolution about 60% of the way through the network, :func:`default_dream_layer`).
    ``channel(L, range(64))`` optimizes 64 pictures at once, one per channel.
    ``meta``: ``history`` (B, steps) objective values during the run (on transformed pictures),
    ``values`` (B,) the objective on the final, un-transformed pictures (for a channel objective: its
    mean activation), ``objective`` (its repr). ``inputs`` holds the pictures normalized for the model.
    Lucid's recipe: Olah, Mordvintsev & Schubert 2017, Feature Visualization (Distill).

    Options:
        objective: what to maximize: "layer:channel" (e.g. "_blocks.8._expand_conv:17"), "layer:0-15" or "layer:3,5,9"
            (one picture per channel, optimized together), "layer:channel:x:y" (one neuron), "logit:281" (a class),
            or channels only ("17", "0-15") of the chosen layer. Default "0-7": the first eight channels of a layer
            about 60% of the way through the network (or of layer=).
        steps: optimization steps; more give cleaner pictures (256 is Lucid's default, 64 a quick look).
        size: side of the pictures in pixels, or (height, width); default: the model's input size.
        batch: how many pictures to optimize together when the objective does not say (different seeds of one objective).
        param: "fft" (a 1/f-scaled spectrum: smooth, natural-looking pictures) or "pixel" (plain pixels: noisier).
        decorrelate: optimize colours in ImageNet's decorrelated colour space (natural colours; 3-channel models only).
        transforms: random views each step so the picture works seen from anywhere: "default" (shift, zoom and rotate in
            one resampling), "lucid" (Lucid's five-step chain) or "none" (sharper but adversarial-looking noise).
        lr: Adam's learning rate; lower it if pictures saturate, raise it if they stay grey.
        seed: random seed of the start picture and the transforms (same seed, same pictures).
        precision: "fp32" or "bf16" (autocast forward: faster on CPUs with bfloat16 units; same motifs, not the same pixels).
        batch_size: pictures per forward; default about 8 of 224x224 on a CPU, all on a GPU (never changes the answer).
    """
    wrapped = as_model(model)
    picture_size = _size(wrapped, size)
    objective = _objective(wrapped, objective, layer, (wrapped.channels, *picture_size))
    run = _optimize(wrapped, objective, steps=steps, size=picture_size, batch=_batch(objective, batch), param=param,
                    decorrelate=decorrelate, transforms=resolve_transforms(transforms, min(picture_size)), lr=lr,
                    seed=seed, precision=precision, batch_size=batch_size, progress=progress, what="maximize")
    return Result(data=run["images"], method="maximize", layer=",".join(run["layers"]) or None, kind="picture",
                  meta={"objective": repr(objective), "history": run["history"], "values": run["values"],
                        "targets": _per_image(objective.targets, len(run["images"])),
                        "param": param, "steps": steps, "seed": seed, "lr": lr, "precision": precision},
                  inputs=run["inputs"], mean=wrapped.mean, std=wrapped.std)


def _classes(target: Any) -> int | list[int]:
    """class_image's target checked: a class index or a list of them (one picture each)."""
    from pydantic import TypeAdapter, ValidationError

    from ..errors import TargetError

    if target is None:
        raise TargetError("class_image needs target=: the class to draw (an output index, e.g. 281), or a list of classes")
    if isinstance(target, torch.Tensor):
        target = target.tolist()
    if isinstance(target, bool) or callable(target):
        raise TargetError(f"class_image draws a class: target must be a class index or a list of them, got {target!r}")
    try:
        return TypeAdapter(Classes).validate_python(target, strict=False)
    except ValidationError:
        raise TargetError(f"class_image's target must be a class index (0 or more) or a list of up to 512, got {target!r}") from None


@register("class_image", family="features", takes="model", returns="picture", cost=_class_image_cost,
          paper="Simonyan, Vedaldi & Zisserman 2013, Deep Inside Convolutional Networks (class model visualization)",
          quick={"steps": 32},
          report=ReportSpec(options={"steps": 128}, quick={"steps": 24}, title="The picture the model wants for a class",
                            note="A picture optimized until the model is sure it shows the class (title: the class and the "
                                 "probability the model gives it); recognizable parts show what the class means to the model."))
def class_image(model: Any, target: Any = None, *, steps: Steps = 256, size: PictureSize = None,
                param: Literal["fft", "pixel"] = "fft", decorrelate: bool = True, transforms: Transforms = "default",
                lr: LearningRate = 0.05, seed: Seed = 0, precision: Precision = "fp32", batch_size: BatchSize = None,
                progress: ProgressArg = None) -> Result:
    """Class image: the picture the model finds most like a class (its logit maximized).

    ``maximize(class_logit(target))``, (B, C, H, W) in [0, 1]. ``target``: the class to draw (an output index,
    e.g. 281 for ImageNet's tabby), or a list of classes (one picture each) — a sequence of classes gives one
    picture per class in one run. ``meta["probability"]`` (B,) is the model's softmax probability of the
    class on the final picture as it is (no transforms); ``meta["predicted"]`` the top-1 class.
    Simonyan, Vedaldi & Zisserman 2013 (class model visualization), with Lucid's parameterization and
    transforms.

    Options:
        steps: optimization steps; more give cleaner pictures (256 by default, 64 a quick look).
        size: side of the pictures in pixels, or (height, width); default: the model's input size (a model whose head takes one
            size only needs it).
        param: "fft" (a 1/f-scaled spectrum: smooth, natural-looking pictures) or "pixel" (plain pixels: noisier).
        decorrelate: optimize colours in ImageNet's decorrelated colour space (natural colours; 3-channel models only).
        transforms: random views each step: "default" (shift, zoom and rotate in one resampling), "lucid" (Lucid's chain)
            or "none" (sharper but adversarial-looking noise).
        lr: Adam's learning rate; lower it if pictures saturate, raise it if they stay grey.
        seed: random seed of the start picture and the transforms (same seed, same pictures).
        precision: "fp32" or "bf16" (autocast forward: faster on CPUs with bfloat16 units).
        batch_size: pictures per forward; default about 8 of 224x224 on a CPU, all on a GPU (never changes the answer).
    """
    wrapped = as_model(model)
    class_index = _classes(target)
    objective = class_logit(class_index)
    picture_size = _size(wrapped, size)
    run = _optimize(wrapped, objective, steps=steps, size=picture_size, batch=_batch(objective, None), param=param,
                    decorrelate=decorrelate, transforms=resolve_transforms(transforms, min(picture_size)), lr=lr,
                    seed=seed, precision=precision, batch_size=batch_size, progress=progress, what="class_image")
    output = run["output"]
    classes = torch.as_tensor(class_index, dtype=torch.long).reshape(-1)
    classes = classes.expand(output.shape[0]) if classes.numel() == 1 else classes
    probs = output.softmax(dim=1)
    return Result(data=run["images"], method="class_image", target=classes, labels=wrapped.labels_for(classes), kind="picture",
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
    """The picture to dream on as (B, C, H, W) in [0, 1] on the model's device, in float32 (float64 for a
    double-precision model)."""
    device, dtype = model.device, _param_dtype(model)
    if isinstance(image, torch.Tensor):  # a preprocessed batch: undo the normalization
        x = image.detach()
        x = x[None] if x.dim() == 3 else x
        model.check_input(x)
        x = model.denormalize(x.to(device, dtype)).clamp(0, 1)
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
    return x.to(device, dtype)


def _octave_sizes(height: int, width: int, octaves: int, octave_scale: float) -> list[tuple[int, int]]:
    """The pyramid, small to large; the smallest octave keeps at least 32 pixels on its shorter side."""
    octaves = max(1, min(octaves, 1 + int(math.log(max(1.0, min(height, width) / 32)) / math.log(octave_scale))))
    return [(max(1, round(height / octave_scale**i)), max(1, round(width / octave_scale**i))) for i in reversed(range(octaves))]


def _dream_cost(context: CostContext) -> Cost:
    """steps x (forward + backward) at each octave's area, per picture (a fair upper bound: the forward stops at
    the layer); memory: the autograd graph up to the layer at the largest octave."""
    model, options = context.model, context.options
    image = context.inputs.get(context.tool.inputs[1])
    if model is None:
        return Cost(0)
    try:
        height, width = _photo_shape(model, image, options["size"])
        shape = (model.channels, height, width)
        if options["objective"] is None:
            layer = context.special.get("layer")
            labels = [(default_dream_layer(model, shape) if layer is None else resolve_layer(model, layer)).label]
            whole = False
        else:
            objective = _objective(model, options["objective"], context.special.get("layer"), shape)
            labels, whole = list(objective.layers), objective.needs_output
    except (ConvscopeError, RuntimeError, OSError):
        return Cost(0)  # the tool says what is wrong, before any work
    pictures = int(image.shape[0]) if isinstance(image, torch.Tensor) and image.dim() == 4 else 1
    sizes = _octave_sizes(height, width, options["octaves"], options["octave_scale"])
    forwards = pictures * options["steps"] * 3 * sum(context.area(h, w) for h, w in sizes)
    per_picture = saved_bytes(model, labels, (height, width), whole=whole) or 0
    memory = pictures * (per_picture + model.channels * height * width * 4 * 8)
    return Cost(forwards, memory, f"{pictures} picture{'s' if pictures != 1 else ''} of {height}x{width}, {len(sizes)} octaves x "
                                  f"{options['steps']} steps, {COST_NOTE}")


@register("dream", family="features", takes="image", returns="picture", cost=_dream_cost,
          layer=LayerUse("maps", "a convolution about 60% of the way through the network"),
          paper="Mordvintsev, Olah & Tyka 2015, Inceptionism: Going Deeper into Neural Networks",
          quick={"octaves": 2, "steps": 4, "size": 160},
          report=ReportSpec(title="Deep Dream", quick={"octaves": 2, "steps": 3},
                            note="The photo changed step by step so that a layer in the middle of the network responds more "
                                 "(left: the photo, right: the dream); the patterns that grow are what that layer looks for."))
def dream(model: Any, image: Any, layer: Any = None, *, octaves: Annotated[int, Field(ge=1, le=12)] = 4,
          octave_scale: Annotated[float, Field(gt=1, le=4)] = 1.4, steps: Annotated[int, Field(ge=1, le=1024)] = 10,
          lr: Annotated[float, Field(gt=0, le=1)] = 0.01, jitter: Annotated[int, Field(ge=0, le=512)] = 32,
          size: Annotated[int, Field(ge=8, le=2048)] | None = None, objective: ObjectiveArg | None = None,
          decorrelate: bool = True, seed: Seed = 0, precision: Precision = "fp32", progress: ProgressArg = None) -> Result:
    """Deep Dream: the photo changed to excite a layer more ("whatever you see there, more of it").

    ``data`` (B, C, H, W) in [0, 1] at the photo's own size. Gradient ascent on ``layer_l2(layer)`` (the
    mean squared activation) at ``octaves`` scales, small to large, each ``octave_scale`` times the
    previous; at each step the picture is shifted by a random offset (up to ``jitter`` pixels) and moved
    by ``lr`` times the gradient divided by its mean absolute value; with ``decorrelate`` (3-channel
    models) the gradient is taken in Lucid's decorrelated colour space (``param.correlate_gradient``),
    which keeps the photo's colours instead of adding rainbow noise.
    ``image``: a path, PIL image, array, sample name, or a preprocessed tensor (B, C, H, W).
    ``layer=None`` picks :func:`default_dream_layer`. Mordvintsev, Olah & Tyka 2015, Inceptionism.

    Options:
        octaves: how many scales to dream at, small to large (1: the photo's size only; more: larger patterns).
        octave_scale: size ratio between consecutive scales.
        steps: gradient steps per scale; more make the patterns stronger.
        lr: step size in [0, 1] pixel units (the gradient is normalized by its mean absolute value); higher changes the photo faster.
        jitter: largest random shift in pixels before each step (hides the grid artefacts of strided layers).
        size: resize the photo so its longer side is this many pixels first (default: keep its size).
        objective: dream on another objective than the layer's mean squared activation: "layer:channel" (one channel's
            patterns), "logit:class", or channels only ("17") of the chosen layer.
        decorrelate: step in the decorrelated colour space (keeps the photo's colours; 3-channel models).
        seed: random seed of the shifts (same seed, same picture).
        precision: "fp32" or "bf16" (autocast forward: faster on CPUs with bfloat16 units).
    """
    wrapped = as_model(model)
    photo_shape = _photo_shape(wrapped, image, size)
    height, width = photo_shape
    shape = (wrapped.channels, height, width)
    if objective is None:
        ref = default_dream_layer(wrapped, shape) if layer is None else resolve_layer(wrapped, layer)
        objective = layer_l2(ref.label)
    else:
        objective = _objective(wrapped, objective, layer, shape)
    refs = _resolve_refs(wrapped, objective.layers, shape)
    _check_runs_at(wrapped, objective, (height, width))
    sizes = _octave_sizes(height, width, octaves, octave_scale)
    octaves = len(sizes)
    generator = torch.Generator().manual_seed(int(seed))
    detail = None
    with Guard(wrapped.module) as guard, tracker(progress, octaves * steps, "dream") as bar:
        base = _photo(wrapped, image, size)  # inside the guard: never an inference tensor
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
                x = wrapped.normalize(rolled).to(wrapped.dtype).contiguous(memory_format=torch.channels_last)
                with compute_precision(wrapped, precision):
                    acts, out = tap.run(wrapped.module, x, output=objective.needs_output)
                scores = objective(Evaluation({k: _as_float(v) for k, v in acts.items()}, _as_float(out), rolled))
                if not scores.requires_grad:
                    raise ConvscopeError(f"objective {objective} does not depend on the picture; nothing to dream")
                (grad,) = torch.autograd.grad(scores.sum(), leaf)
                if decorrelate and grad.shape[1] == 3:
                    grad = correlate_gradient(grad)
                grad = grad / grad.abs().mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
                picture = (picture + lr * grad).clamp(0, 1).detach()
                history[:, octave * steps + step] = scores.detach().float()
                bar.advance(1)  # a callback may cancel here: the next step never runs
            detail = picture - octave_base
        inputs = wrapped.normalize(picture)
    return Result(data=picture.float(), method="dream", layer=",".join(ref.label for ref in refs.values()) or None, kind="picture",
                  meta={"objective": repr(objective), "history": history.cpu(), "original": base.float(),
                        "octaves": octaves, "octave_scale": octave_scale, "steps": steps, "lr": lr, "seed": seed,
                        "precision": precision},
                  inputs=inputs.float(), mean=wrapped.mean, std=wrapped.std)
