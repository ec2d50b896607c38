"""Perturbation methods: how the target's score changes when parts of the picture are hidden, (B, 1, H, W).

- ``occlusion`` (Zeiler & Fergus 2014): a window slides over the picture; the map is the drop in score
  it causes, averaged over the windows that cover each pixel.
- ``rise`` (Petsiuk, Das & Saenko 2018): random low-resolution masks, upsampled with random shifts;
  the map is the score-weighted average of the masks.
- ``superpixels`` (LIME, Ribeiro, Singh & Guestrin 2016): SLIC superpixels switched on and off at random;
  the map is each superpixel's coefficient in a weighted ridge fit of the score.

No gradients at all: every perturbed image is one row of a batched forward under inference mode, in
the model's input space, on a channels-last copy. The target is resolved once from the clean forward
(``None`` -> top-1) and then fixed; every random choice comes from ``seed`` through a CPU generator, so
the answer depends neither on ``batch_size`` nor on the other images of the batch. Each batch of perturbed
pictures is one unit of progress: a progress callback that raises ``Cancelled`` stops the call there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import AfterValidator, Field

from ..engine import Cost, bytes_per_row, channels_last, compute_precision, default_rows, package, perturbation_rows, prepare
from ..errors import ConvscopeError, InputError
from ..hooks import Guard
from ..models import Model
from ..options import BatchSize, Precision, PythonOnly, Seed
from ..progress import ProgressArg, tracker
from ..registry import CostContext, ReportSpec, register
from ..result import Result
from ..targets import Target, fixed_target, resolve_target, row_scores
from .gradient import _no_layer, as_batch, baseline_for, option_error

__all__ = ["SCORES", "masked_image", "occlusion", "occlusion_mask", "rise", "superpixels"]

SCORES = ("probability", "logit")
FILLS = ("mean", "blur")


# -- option types ---------------------------------------------------------------------------------------
def _whole_or_share(value: float) -> float:
    """Whole pixels (returned as an int) or a share of the side below 1."""
    if value >= 1:
        if value != int(value):
            raise ValueError(f"{value:g} is neither whole pixels (e.g. 32) nor a share of the side below 1 (e.g. 0.25)")
        return int(value)
    return value


Side = Annotated[float, Field(gt=0, le=4096), AfterValidator(_whole_or_share)]  # pixels, or a share of the side below 1
Score = Literal["probability", "logit"]
Fill = Literal["mean", "blur"] | float | PythonOnly[torch.Tensor]
Masks = Annotated[int, Field(ge=1, le=100_000)]
Cells = Annotated[int, Field(ge=1, le=256)]
Share = Annotated[float, Field(gt=0, le=1)]
Segments = Annotated[int, Field(ge=1, le=4096)]
LimeSamples = Annotated[int, Field(ge=2, le=100_000)]


# -- shared pieces -------------------------------------------------------------------------------------
def _clean_forward(model: Model, pixels: torch.Tensor, target: Target, kind: str
                   ) -> tuple[Any, torch.Tensor, torch.Tensor | None, Target, torch.Tensor]:
    """(output, target scores, classes, the fixed target, clean score (B,) in ``kind``)."""
    output = model.module(pixels.clone())  # a copy: the model may work in place on its input
    scores, classes = resolve_target(target, output)
    fixed = fixed_target(target, classes)
    return output, scores, classes, fixed, row_scores(output, fixed, kind=kind)


def _fill_tensor(model: Model, pixels: torch.Tensor, fill: Any) -> torch.Tensor:
    """What hidden pixels become, broadcastable to ``pixels`` (B, C, H, W): a value in the model's input
    space (0 = the dataset's mean colour for normalized inputs), "mean" (each image's mean colour),
    "blur" (the image blurred with a Gaussian of sigma = 1/20 of its width) or a picture-shaped tensor."""
    if isinstance(fill, torch.Tensor):
        return as_batch(fill, pixels, "fill")
    if fill == "mean":
        return pixels.mean(dim=tuple(range(2, pixels.dim())), keepdim=True)  # each picture's (video's) mean colour
    if fill == "blur":
        return baseline_for(model, pixels, "blur")
    return torch.full((1,) * pixels.dim(), float(fill), device=pixels.device, dtype=pixels.dtype)


def _rows_of(pixels: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Fresh copies of images ``images`` (n,) of ``pixels`` (channels-last, as the forward wants them)."""
    return channels_last(pixels[images])


def _start(model: Any, x: torch.Tensor, target: Target, precision: str, layer: Any, method: str) -> tuple[Model, torch.Tensor]:
    _no_layer(method, layer)
    if isinstance(x, torch.Tensor) and x.dim() == 5 and method != "occlusion":
        raise InputError(f"{method} masks pictures (B, C, H, W); for a video (B, C, T, H, W) use occlusion, whose "
                         f"windows also cover time")
    return prepare(model, x, target, precision)


_COMMON_OPTIONS = """
        score: what the map measures: "probability" (the class's softmax probability, default: drops are bounded
            and comparable between pictures) or "logit" (the raw score, which does not saturate when the model is
            very sure); a callable target is used as it is.
        batch_size: perturbed pictures per forward; None picks the fastest size that fits in memory (about 16
            pictures of 224x224 on a CPU). Lower it only when memory is short.
        precision: "fp32" (exact) or "bf16" (autocast + channels-last: faster on CPUs with bfloat16 units; maps
            agree with fp32 to 0.98+).
        progress: None (a bar on a terminal), False, True, or a callback fn(done, total, what) that may raise Cancelled."""

_FILL_HELP = ('a number in the model\'s input space (0, the default, is the dataset\'s mean colour for a normalized '
              'model), "mean" (each picture\'s own mean colour) or "blur" (the picture blurred: hides detail, keeps '
              'colour); from Python also a tensor (C, H, W) or (B, C, H, W)')


def _options_doc(fn: Any) -> Any:
    fn.__doc__ = fn.__doc__.replace("{fill}", _FILL_HELP).rstrip() + _COMMON_OPTIONS + "\n    "
    return fn


# -- costs: forward passes of one picture at the model's input size, and memory ---------------------------
FLOAT = 4  # bytes


def _picture(context: CostContext) -> tuple[int, int, int, int]:
    """(B, C, H, W) of the call's pictures (a video is refused: only occlusion's windows cover time)."""
    if context.x.dim() == 5:
        raise InputError(f"{context.tool.name} masks pictures (B, C, H, W); for a video (B, C, T, H, W) use occlusion, "
                         f"whose windows also cover time")
    batch, channels, height, width = (int(v) for v in context.x.shape)
    return batch, channels, height, width


def _chunk_memory(context: CostContext, jobs: int, per_row: int = 0) -> int:
    """Bytes of one batch of perturbed pictures: their copies (``per_row`` more bytes each) and, when
    ``batch_size`` is given, the forward's activations (the automatic size fits the memory budget)."""
    _, channels, height, width = _picture(context)
    batch_size = context.options.get("batch_size")
    rows = min(jobs, batch_size or default_rows(height, width))
    forward = bytes_per_row(context.model, (channels, height, width)) if batch_size and context.model is not None else 0
    return rows * (3 * channels * height * width * FLOAT + per_row + (forward or 0))


# -- occlusion -----------------------------------------------------------------------------------------
def _sides(value: Any, size: tuple[int, ...]) -> tuple[int, ...]:
    """Window sides in pixels (frames) for a picture (H, W) or a video (T, H, W), from a checked ``Side`` or a
    tuple of them (below 1: a share of that side). On a video a single whole number or an (h, w) pair sizes
    the frames only (the time side is then None: its default); a single share applies to every side."""
    if isinstance(value, (tuple, list)):
        pair = tuple(value)
        if len(size) == 3 and len(pair) == 2:
            pair = (None, *pair)
        elif len(pair) != len(size):
            what = "(h, w)" if len(size) == 2 else "(t, h, w) or (h, w)"
            raise option_error(f"occlusion: a window or stride of {len(pair)} sides for a {len(size)}-D input; give {what}", "window")
    elif len(size) == 3 and value >= 1:
        pair = (None, value, value)
    else:
        pair = (value,) * len(size)
    return tuple(None if v is None else max(1, round(v * side)) if v < 1 else int(v) for v, side in zip(pair, size))


def _positions(side: int, window: int, stride: int) -> list[int]:
    """Window starts along one side; the last window sits flush with the edge so every pixel is covered."""
    starts = list(range(0, side - window + 1, stride))
    if starts[-1] != side - window:
        starts.append(side - window)
    return starts


@dataclass(frozen=True)
class _Windows:
    """Where occlusion's windows go on an H x W picture, or a T x H x W video (one tuple entry per side)."""

    window: tuple[int, ...]
    stride: tuple[int, ...]
    starts: tuple[list[int], ...]  # per side: the windows' first pixel (frame)

    @property
    def count(self) -> int:
        return math.prod(len(s) for s in self.starts)

    @property
    def shape(self) -> str:
        return "x".join(str(side) for side in self.window)


def _windows(window: Any, stride: Any, size: tuple[int, ...]) -> _Windows:
    """The windows for the checked ``window`` / ``stride`` options on ``size`` (H, W) or (T, H, W); a window larger
    than the input is refused. Defaults: 1/7 of each side on a picture; on a video a quarter of each side and of
    the frames (at least one frame), so that (4 x 4 x 4 positions at half-window strides) stays affordable."""
    video = len(size) == 3
    share = 4 if video else 7
    default = tuple(max(1, round(side / share)) for side in size)
    chosen = _sides(window, size) if window is not None else default
    sides = tuple(d if c is None else c for c, d in zip(chosen, default))
    if any(w > s for w, s in zip(sides, size)):
        big, shown = "x".join(map(str, sides)), "x".join(map(str, size))
        raise option_error(f"occlusion: window {big} is larger than the {shown} {'video' if video else 'picture'}; "
                           f"use at most {shown}", "window")
    half = tuple(max(1, w // 2) for w in sides)
    chosen_steps = _sides(stride, size) if stride is not None else half
    steps = tuple(h if c is None else c for c, h in zip(chosen_steps, half))
    return _Windows(sides, steps, tuple(_positions(s, w, st) for s, w, st in zip(size, sides, steps)))


def _cover(starts: Sequence[int], window: int, side: int, device: torch.device) -> torch.Tensor:
    """(n, side) float indicator: row i is 1 where window i covers the pixel."""
    index = torch.arange(side, device=device)
    begin = torch.tensor(starts, device=device)[:, None]
    return ((index >= begin) & (index < begin + window)).float()


def _occlusion_cost(context: CostContext) -> Cost:
    """The clean forward and one forward per window and picture; the drops (B, windows) and one batch."""
    batch, size = int(context.x.shape[0]), tuple(int(v) for v in context.x.shape[2:])
    found = _windows(context.options["window"], context.options["stride"], size)
    if len(size) == 2:
        memory = batch * found.count * FLOAT + _chunk_memory(context, batch * found.count)
    else:  # a video: one batch of perturbed copies (B, C, T, H, W) and the drops
        rows = min(batch * found.count, context.options.get("batch_size") or 16)
        memory = batch * found.count * FLOAT + rows * 3 * int(context.x.shape[1]) * math.prod(size) * FLOAT
    return Cost(batch * (1 + found.count) * context.area(), memory,
                f"{found.count:,} windows of {found.shape} per {'video' if len(size) == 3 else 'picture'}")


@register("occlusion", family="attribution", group="perturbation", takes="images", returns="map",
          paper="Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks",
          quick={"window": 0.5, "stride": 0.5}, cost=_occlusion_cost,
          report=ReportSpec(style={"mask": 0.5}, title="Occlusion: cover a part, watch the probability",
                            note="How much the class's probability drops when a grey square covers each part of the picture "
                                 "(red: covering it hurts, blue: it helps); then the mask where the drop is at least half "
                                 "the largest, and the picture seen through it: the part the model needs."))
@_options_doc
def occlusion(model: Any, x: torch.Tensor, *, target: Target = None, layer: None = None,
              window: Side | tuple[Side, Side] | tuple[Side, Side, Side] | None = None,
              stride: Side | tuple[Side, Side] | tuple[Side, Side, Side] | None = None,
              fill: Fill = 0.0, score: Score = "probability", batch_size: BatchSize = None, precision: Precision = "fp32",
              progress: ProgressArg = None) -> Result:
    """Occlusion: the drop in the target's score when a window hides each part of the picture, averaged
    over the windows that cover each pixel, (B, 1, H, W). Positive: hiding it hurts the class. A video
    (B, C, T, H, W) gets windows over time as well, a (t, h, w) box of frames, and a map (B, 1, T, H, W).

    One forward per window and image, batched. ``meta["grid"]`` (B, nh, nw) — (B, nt, nh, nw) for a video —
    holds each window's drop, ``meta["rows"]`` / ``meta["cols"]`` (and ``meta["frames"]``) the windows' top
    and left edges (first frames), ``meta["base"]`` the clean score. ``occlusion_mask`` and ``masked_image``
    turn a picture's map into seed 000's mask and masked picture.

    Options:
        window: the hidden square's side in pixels (32, or (h, w)) or as a share of the picture's side below 1
            (0.25); None: 1/7 of the side (32 at 224). Make it about the size of the parts you want to find: small
            windows give sharp maps but cost (side / stride)^2 forwards and miss objects larger than the window.
            A video also takes (t, h, w), t in frames; (h, w) or whole pixels keep the default t (a quarter of the
            frames), a share below 1 applies to the frames too; None: a quarter of every side.
        stride: the step between windows, in pixels or as a share of the side; None: half the window. A smaller
            stride gives a smoother map at a quadratic cost.
        fill: what the window shows: {fill}.
    """
    wrapped, x = _start(model, x, target, precision, layer, "occlusion")
    batch, size = x.shape[0], tuple(x.shape[2:])  # (H, W), or (T, H, W)
    found = _windows(window, stride, size)
    windows, starts, sides = found.count, found.starts, found.window
    rows = perturbation_rows(wrapped, x, batch_size)
    with Guard(wrapped.module, grad=False), compute_precision(wrapped, precision), \
            tracker(progress, batch * windows, "occlusion") as bar:
        pixels = wrapped.working_copy(x)
        fills = _fill_tensor(wrapped, pixels, fill).expand_as(pixels)
        output, scores, classes, fixed, base = _clean_forward(wrapped, pixels, target, score)
        drops = torch.empty(batch * windows, dtype=torch.float32, device=pixels.device)
        for start in range(0, batch * windows, rows):  # job j: image j // windows, window j % windows
            jobs = torch.arange(start, min(start + rows, batch * windows), device=pixels.device)
            images = jobs // windows
            chunk = _rows_of(pixels, images)
            for r, (j, b) in enumerate(zip(jobs.tolist(), images.tolist())):
                where = np.unravel_index(j % windows, [len(s) for s in starts])  # the window's index along each side
                box = tuple(slice(s[i], s[i] + w) for s, i, w in zip(starts, where, sides))
                chunk[(r, slice(None), *box)] = fills[(b, slice(None), *box)]
            drops[start:start + len(jobs)] = base[images] - row_scores(wrapped.module(chunk), fixed, images, score)
            bar.advance(len(jobs))
    grid = drops.view(batch, *[len(s) for s in starts])
    # every window is a product of bands, one per side: sum the drops covering each pixel, divide by the count
    covers = [_cover(s, w, side, grid.device) for s, w, side in zip(starts, sides, size)]
    if len(size) == 2:
        total = torch.einsum("bij,ih,jw->bhw", grid, *covers)
        data = (total / (covers[0].sum(0)[:, None] * covers[1].sum(0)[None, :]))[:, None]
    else:
        total = torch.einsum("bkij,kt,ih,jw->bthw", grid, *covers)
        counts = torch.einsum("t,h,w->thw", *(c.sum(0) for c in covers))
        data = (total / counts)[:, None]
    extra = {"frames": tuple(starts[0])} if len(size) == 3 else {}
    return package(wrapped, x, data, method="occlusion", classes=classes, scores=scores, output=output, kind="map",
                   grid=grid, base=base, score=score, window=sides, stride=found.stride, rows=tuple(starts[-2]),
                   cols=tuple(starts[-1]), windows=windows, signed=True, units=f"drop in {score} when covered", **extra)


def occlusion_mask(result: Result, threshold: float = 0.5) -> torch.Tensor:
    """(B, 1, H, W) bool — (B, 1, T, H, W) for a video: the pixels whose occlusion costs at least ``threshold``
    (0..1) of the image's largest drop — seed 000's mask. An image whose map has no positive drop gets an empty mask.
    (``convscope.roi(result, threshold=...)`` gives one image's largest region, box and crop.)"""
    if not 0 <= threshold <= 1:
        raise ConvscopeError(f"threshold is a share of the largest drop, between 0 and 1; got {threshold}")
    data = result.data.detach()
    if data.dim() not in (4, 5) or data.shape[1] != 1:
        raise ConvscopeError(f"occlusion_mask needs a (B, 1, H, W) map (or a video's (B, 1, T, H, W)), got {result.method} "
                             f"of shape {tuple(data.shape)}")
    peak = data.amax(dim=tuple(range(1, data.dim())), keepdim=True)
    return (data >= threshold * peak) & (peak > 0)


def masked_image(result: Result, mask: torch.Tensor | None = None, *, threshold: float = 0.5) -> np.ndarray:
    """The explained pictures seen through ``mask`` (B, 1, H, W) bool (default: ``occlusion_mask(result,
    threshold)``): uint8 (B, H, W, 3), black outside the mask — seed 000's third picture."""
    if result.data.dim() == 5:
        raise ConvscopeError("masked_image makes pictures; for a video use occlusion_mask(result) (B, 1, T, H, W) "
                             "and draw the clip with result.save('clip.gif')")
    mask = occlusion_mask(result, threshold) if mask is None else mask
    pictures = result.images()
    if mask.dim() != 4 or mask.shape[1] != 1 or tuple(mask.shape[2:]) != pictures.shape[1:3] or mask.shape[0] != len(pictures):
        raise ConvscopeError(f"mask must be (B, 1, H, W) = {(len(pictures), 1, *pictures.shape[1:3])}, got {tuple(mask.shape)}")
    keep = mask[:, 0].detach().cpu().numpy().astype(bool)
    return pictures * keep[..., None].astype(np.uint8)


# -- RISE ----------------------------------------------------------------------------------------------
class _RiseMasks:
    """N random masks (H, W) in [0, 1], each made on demand from its low-resolution grid and shift
    (all drawn up front from ``seed``): a cells x cells grid of Bernoulli(p) cells, upsampled bilinearly
    to (cells + 1) x the cell size and cropped at a random shift of less than one cell (the paper)."""

    def __init__(self, count: int, cells: int, p: float, seed: int, size: tuple[int, int]) -> None:
        generator = torch.Generator().manual_seed(int(seed))
        self.grids = (torch.rand(count, 1, cells, cells, generator=generator) < p).float()
        self.cell = (math.ceil(size[0] / cells), math.ceil(size[1] / cells))
        self.shift_y = torch.randint(0, self.cell[0], (count,), generator=generator).tolist()
        self.shift_x = torch.randint(0, self.cell[1], (count,), generator=generator).tolist()
        self.size, self.cells = size, cells

    def make(self, index: Sequence[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The masks ``index`` as (n, 1, H, W)."""
        up = ((self.cells + 1) * self.cell[0], (self.cells + 1) * self.cell[1])
        big = F.interpolate(self.grids[list(index)], size=up, mode="bilinear", align_corners=False)
        height, width = self.size
        crops = [big[r, :, self.shift_y[i]:self.shift_y[i] + height, self.shift_x[i]:self.shift_x[i] + width]
                 for r, i in enumerate(index)]
        return torch.stack(crops).to(device=device, dtype=dtype)


def _rise_cost(context: CostContext) -> Cost:
    """The clean forward and one forward per mask and picture. Memory: the mask bank (masks x cells^2 grids,
    drawn as floats and kept as floats) and, per batch, the masks upsampled to (cells + 1) cells and cropped."""
    batch, _, height, width = _picture(context)
    masks, cells = context.options["masks"], context.options["cells"]
    bank = 2 * masks * cells * cells * FLOAT
    upsampled = (cells + 1) ** 2 * math.ceil(height / cells) * math.ceil(width / cells) * FLOAT
    jobs = batch * masks
    rows = min(jobs, context.options["batch_size"] or default_rows(height, width))
    made = (math.ceil(rows / batch) + 1) * (upsampled + height * width * FLOAT)  # the distinct masks of one batch
    memory = bank + made + _chunk_memory(context, jobs, height * width * FLOAT) + batch * height * width * FLOAT
    return Cost(batch * (1 + masks) * context.area(), memory, f"{masks:,} masks of {cells}x{cells} cells per picture")


@register("rise", family="attribution", group="perturbation", takes="images", returns="map",
          paper="Petsiuk, Das & Saenko 2018, RISE: Randomized Input Sampling for Explanation of Black-box Models",
          quick={"masks": 8}, cost=_rise_cost,
          report=ReportSpec(title="RISE (random masks)",
                            note="The picture seen through many random masks: each pixel's value is the class's average "
                                 "probability when that pixel is visible, minus the overall average (red: it raises the "
                                 "probability, blue: it lowers it)."))
@_options_doc
def rise(model: Any, x: torch.Tensor, *, target: Target = None, layer: None = None, masks: Masks = 1000, cells: Cells = 7,
         p: Share = 0.5, fill: Fill = 0.0, seed: Seed = 0, score: Score = "probability", batch_size: BatchSize = None,
         precision: Precision = "fp32", progress: ProgressArg = None) -> Result:
    """RISE: the average of random smooth masks, each weighted by the target's score on the picture seen
    through it, S = sum_i score(x * M_i) M_i / (N p), (B, 1, H, W).

    The paper uses 4000-8000 masks; 1000 (the default) gives the same picture with more speckle. Every
    image sees the same masks, drawn from ``seed``. ``meta["base"]``: the clean score.

    Options:
        masks: how many random masks; each costs one forward per picture. More gives a smoother map: the paper
            uses 4000-8000, 1000 shows the same regions with more speckle, 100-200 is a rough preview.
        cells: the masks' grid is cells x cells before it is upsampled: the size of the parts the map can tell
            apart (the paper: 7). More cells find smaller parts but need more masks to settle.
        p: the probability that a cell is kept (visible); the paper's 0.5 is best for most models.
        fill: what masked-out pixels become: {fill}.
        seed: the masks' seed: the same seed gives the same map; change it to see how much the map depends on the masks.
    """
    wrapped, x = _start(model, x, target, precision, layer, "rise")
    batch, _, height, width = x.shape
    if cells > min(height, width):
        raise option_error(f"rise: cells={cells} is more than the {height}x{width} picture's side; "
                           f"use at most {min(height, width)}", "cells")
    bank = _RiseMasks(masks, cells, float(p), seed, (height, width))
    rows = perturbation_rows(wrapped, x, batch_size)
    with Guard(wrapped.module, grad=False), compute_precision(wrapped, precision), \
            tracker(progress, batch * masks, "rise") as bar:
        pixels = wrapped.working_copy(x)
        fills = _fill_tensor(wrapped, pixels, fill).expand_as(pixels)
        output, scores, classes, fixed, base = _clean_forward(wrapped, pixels, target, score)
        total = torch.zeros(batch, 1, height, width, dtype=torch.float32, device=pixels.device)
        score_sum = torch.zeros(batch, dtype=torch.float32, device=pixels.device)
        for start in range(0, batch * masks, rows):  # job j: mask j // batch on image j % batch (each mask made once)
            jobs = torch.arange(start, min(start + rows, batch * masks), device=pixels.device)
            images, which = jobs % batch, jobs // batch
            first = int(which[0])
            mask = bank.make(range(first, int(which[-1]) + 1), pixels.device, pixels.dtype)[which - first]  # (n, 1, H, W)
            chunk = torch.lerp(fills[images], pixels[images], mask).contiguous(memory_format=torch.channels_last)
            weight = row_scores(wrapped.module(chunk), fixed, images, score)
            total.index_add_(0, images, weight.view(-1, 1, 1, 1) * mask.float())
            score_sum.index_add_(0, images, weight.float())
            bar.advance(len(jobs))
    data = total / (masks * float(p))
    # "no effect": a pixel whose visibility does not matter gets the average masked score, E[score(x * M)]
    neutral = score_sum / masks
    return package(wrapped, x, data, method="rise", classes=classes, scores=scores, output=output, kind="map", base=base,
                   score=score, masks=masks, cells=cells, p=float(p), seed=seed, neutral=neutral, signed=True,
                   units=f"{score} when visible, minus the average")


# -- superpixels (LIME) ----------------------------------------------------------------------------------
def _segments(x: torch.Tensor, segments: int, compactness: float) -> list[np.ndarray]:
    """SLIC labels 0..S-1 (H, W) per image of x (B, C, H, W). SLIC sees each channel min-max scaled to
    0..1: the same picture whether or not the model's normalization is known (a per-channel affine map)."""
    from skimage.segmentation import slic

    values = x.detach().float().cpu()
    low, high = values.amin(dim=(2, 3), keepdim=True), values.amax(dim=(2, 3), keepdim=True)
    scaled = ((values - low) / (high - low).clamp_min(1e-12)).permute(0, 2, 3, 1).numpy()
    labels = []
    for picture in scaled:
        raw = slic(picture, n_segments=segments, compactness=compactness, start_label=0, channel_axis=-1)
        labels.append(np.unique(raw, return_inverse=True)[1].reshape(raw.shape))  # consecutive labels
    return labels


def _weighted_ridge(z: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, alpha: float
                    ) -> tuple[torch.Tensor, float, float]:
    """min_b,c sum_i w_i (y_i - z_i b - c)^2 + alpha |b|^2 (scikit-learn's Ridge with sample weights):
    (coefficients (S,), intercept, weighted R^2), float64."""
    w = weights / weights.sum()
    z_mean, y_mean = w @ z, w @ y
    zc, yc = z - z_mean, y - y_mean
    gram = zc.T @ (zc * w[:, None]) * weights.sum() + alpha * torch.eye(z.shape[1], dtype=z.dtype)
    coef = torch.linalg.solve(gram, zc.T @ (yc * w) * weights.sum())
    fitted = zc @ coef
    residual = float(w @ (yc - fitted) ** 2)
    spread = float(w @ yc**2)
    return coef, float(y_mean - z_mean @ coef), (1 - residual / spread) if spread > 0 else 1.0


def _superpixels_cost(context: CostContext) -> Cost:
    """The clean forward and one forward per sample and picture. Memory: the on/off design matrix (samples x
    segments, float64) of every picture and the weighted ridge fit's copies of it, and one batch's masks."""
    batch, _, height, width = _picture(context)
    samples, segments = context.options["samples"], context.options["segments"]
    design = samples * segments * 8  # float64
    memory = batch * design + 3 * design + _chunk_memory(context, batch * samples, height * width)
    return Cost(batch * (1 + samples) * context.area(), memory, f"{samples:,} samples of about {segments:,} segments per picture")


@register("superpixels", family="attribution", group="perturbation", takes="images", returns="map",
          paper="Ribeiro, Singh & Guestrin 2016, \"Why Should I Trust You?\": Explaining the Predictions of Any Classifier (LIME)",
          quick={"segments": 8, "samples": 8}, cost=_superpixels_cost,
          report=ReportSpec(title="Superpixels (LIME)",
                            note="The picture cut into patches of similar colour, switched on and off at random; a simple "
                                 "model fitted to the answers says how much each patch adds to the class's probability (red) "
                                 "or takes away (blue)."))
@_options_doc
def superpixels(model: Any, x: torch.Tensor, *, target: Target = None, layer: None = None, segments: Segments = 50,
                compactness: Annotated[float, Field(gt=0, le=1000)] = 10.0, samples: LimeSamples = 500,
                kernel_width: Annotated[float, Field(gt=0, le=100)] = 0.25, ridge: Annotated[float, Field(gt=0, le=1_000_000)] = 1.0,
                fill: Fill = 0.0, seed: Seed = 0, score: Score = "probability", batch_size: BatchSize = None,
                precision: Precision = "fp32", progress: ProgressArg = None) -> Result:
    """LIME with superpixels: SLIC segments switched on and off at random, the target's score on each
    sample fitted by a ridge regression weighted by closeness to the full picture; each pixel gets its
    segment's coefficient, (B, 1, H, W). Positive: the segment supports the class.

    As in LIME's image explainer: the first sample is the full picture, the others switch each segment
    on with probability 1/2; weights sqrt(exp(-d^2 / width^2)) with d the cosine distance to the full
    picture; ridge alpha 1. ``meta["segments"]`` (B, H, W) the labels, ``meta["weights"]`` one tensor of
    coefficients per image, ``meta["intercept"]`` and ``meta["fit"]`` (weighted R^2) per image. SLIC
    segments each image with its channels min-max scaled, so the model's normalization need not be known.

    Options:
        segments: about how many SLIC superpixels to cut the picture into (scikit-image's n_segments). More
            segments give a finer map but need more samples for a stable fit (keep samples at 10x segments or more).
        compactness: SLIC's balance of colour and space: higher gives squarer, more even segments, lower follows
            colour edges more closely.
        samples: random on/off pictures per picture (the first is the full picture); each costs one forward. More
            samples give a steadier fit (meta["fit"] says how well the linear model explains the scores).
        kernel_width: how fast a sample's weight falls with its distance from the full picture (LIME: 0.25);
            larger treats heavily masked samples as nearly as telling as light ones.
        ridge: the ridge penalty of the linear fit (LIME: 1); raise it to tame noisy coefficients when samples are few.
        fill: what switched-off segments become: {fill}.
        seed: the samples' seed: the same seed gives the same map; change it to see how much the map depends on the samples.
    """
    wrapped, x = _start(model, x, target, precision, layer, "superpixels")
    batch, _, height, width = x.shape
    labels = _segments(x, segments, float(compactness))
    draws = []  # per image: (samples, S) on/off, the same for a given seed wherever the image sits in the batch
    for label in labels:
        generator = torch.Generator().manual_seed(int(seed))
        z = torch.randint(0, 2, (samples, int(label.max()) + 1), generator=generator, dtype=torch.float64)
        z[0] = 1
        draws.append(z)
    rows = perturbation_rows(wrapped, x, batch_size)
    with Guard(wrapped.module, grad=False), compute_precision(wrapped, precision), \
            tracker(progress, batch * samples, "superpixels") as bar:
        pixels = wrapped.working_copy(x)
        fills = _fill_tensor(wrapped, pixels, fill).expand_as(pixels)
        output, scores, classes, fixed, base = _clean_forward(wrapped, pixels, target, score)
        seg = [torch.from_numpy(label).to(pixels.device) for label in labels]
        on = [z.to(device=pixels.device, dtype=torch.bool) for z in draws]
        y = torch.empty(batch * samples, dtype=torch.float32, device=pixels.device)
        for start in range(0, batch * samples, rows):  # job j: sample j % samples of image j // samples
            jobs = torch.arange(start, min(start + rows, batch * samples), device=pixels.device)
            images = jobs // samples
            keep = torch.stack([on[b][s][seg[b]] for b, s in zip(images.tolist(), (jobs % samples).tolist())])
            chunk = torch.where(keep[:, None], pixels[images], fills[images]).contiguous(memory_format=torch.channels_last)
            y[start:start + len(jobs)] = row_scores(wrapped.module(chunk), fixed, images, score)
            bar.advance(len(jobs))
    coefficients, intercepts, fits = [], [], []
    data = torch.empty(batch, 1, height, width, dtype=torch.float32, device=pixels.device)
    for b, z in enumerate(draws):
        cosine = z.sum(1) / (z.sum(1).sqrt() * math.sqrt(z.shape[1])).clamp_min(1e-12)
        weights = torch.sqrt(torch.exp(-((1 - cosine) ** 2) / kernel_width**2))
        coef, intercept, fit = _weighted_ridge(z, y[b * samples:(b + 1) * samples].double().cpu(), weights, float(ridge))
        coefficients.append(coef.float())
        intercepts.append(intercept)
        fits.append(fit)
        data[b, 0] = coef.float().to(data.device)[seg[b]]
    return package(wrapped, x, data, method="superpixels", classes=classes, scores=scores, output=output, kind="map",
                   base=base, score=score, segments=torch.stack(seg), weights=coefficients,
                   intercept=torch.tensor(intercepts), fit=torch.tensor(fits), samples=samples, seed=seed, signed=True,
                   units=f"{score} a segment adds (LIME weight)")
