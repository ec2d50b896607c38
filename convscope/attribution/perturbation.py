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
the answer depends neither on ``batch_size`` nor on the other images of the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..engine import compute_precision, package, perturbation_rows, prepare
from ..errors import ConvscopeError
from ..hooks import Guard
from ..models import Model
from ..options import Precision
from ..progress import ProgressArg, tracker
from ..registry import register
from ..result import Result
from ..targets import Target, resolve_target
from .gradient import _no_layer, baseline_for

__all__ = ["SCORES", "masked_image", "occlusion", "occlusion_mask", "rise", "superpixels"]

SCORES = ("probability", "logit")
FILLS = ("mean", "blur")


# -- shared pieces -------------------------------------------------------------------------------------
def _score(output: Any, fixed: Target, images: torch.Tensor, kind: str) -> torch.Tensor:
    """The target's score (n,) float32 for rows of ``output`` that belong to images ``images`` (n,):
    the class's softmax probability or logit, or the callable's value as it is."""
    if isinstance(fixed, torch.Tensor):
        out = output.float()
        chosen = fixed.to(out.device)[images.to(out.device)][:, None]
        return (out.softmax(dim=1) if kind == "probability" else out).gather(1, chosen)[:, 0]
    scores, _ = resolve_target(fixed, output)
    return scores.float()


def _clean_forward(model: Model, pixels: torch.Tensor, target: Target, kind: str
                   ) -> tuple[Any, torch.Tensor, torch.Tensor | None, Target, torch.Tensor]:
    """(output, target scores, classes, the fixed target, clean score (B,) in ``kind``)."""
    output = model.module(pixels.clone())  # a copy: the model may work in place on its input
    scores, classes = resolve_target(target, output)
    fixed: Target = classes if classes is not None else target
    index = torch.arange(pixels.shape[0], device=pixels.device)
    return output, scores, classes, fixed, _score(output, fixed, index, kind)


def _check_choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConvscopeError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, allowed))}")


def _count(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConvscopeError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _fill_tensor(model: Model, pixels: torch.Tensor, fill: Any) -> torch.Tensor:
    """What hidden pixels become, broadcastable to ``pixels`` (B, C, H, W): a value in the model's input
    space (0 = the dataset's mean colour for normalized inputs), "mean" (each image's mean colour) or
    "blur" (the image blurred with a Gaussian of sigma = 1/20 of its width)."""
    if isinstance(fill, str) and fill not in FILLS:
        try:
            fill = float(fill)  # the CLI passes "--set fill=0.5" as text
        except ValueError:
            raise ConvscopeError(f"unknown fill {fill!r}; use a number (in the model's input space), 'mean' or 'blur'") from None
    if fill == "mean":
        return pixels.mean(dim=(2, 3), keepdim=True)
    if fill == "blur":
        return baseline_for(model, pixels, "blur")
    if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not math.isfinite(fill):
        raise ConvscopeError(f"fill must be a finite number, 'mean' or 'blur', got {fill!r}")
    return torch.full((1, 1, 1, 1), float(fill), device=pixels.device, dtype=pixels.dtype)


def _rows_of(pixels: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Fresh copies of images ``images`` (n,) of ``pixels`` (channels-last, as the forward wants them)."""
    return pixels[images].contiguous(memory_format=torch.channels_last)


def _start(model: Any, x: torch.Tensor, target: Target, precision: str, layer: Any, method: str,
           score: str) -> tuple[Model, torch.Tensor]:
    _no_layer(method, layer)
    _check_choice("score", score, SCORES)
    return prepare(model, x, target, precision)


_COMMON_OPTIONS = """
        score: "probability" (the target's softmax probability, default) or "logit"; a callable target is used as it is.
        batch_size: perturbed images per forward (None: the fastest size that fits memory, ~16 of 224x224 on CPU).
        precision: "fp32" (exact) or "bf16" (autocast + channels-last; maps agree with fp32 to 0.98+).
        progress: None (a bar on a terminal), False, True, or a callback fn(done, total, what) that may raise Cancelled."""


def _options_doc(fn: Any) -> Any:
    fn.__doc__ = fn.__doc__.rstrip() + _COMMON_OPTIONS + "\n    "
    return fn


# -- occlusion -----------------------------------------------------------------------------------------
def _sides(name: str, value: Any, size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) in pixels from an int or float per side (below 1: a share of the picture's side)."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2:
        raise ConvscopeError(f"{name} must be a number or a pair (h, w), got {value!r}")
    out = []
    for v, side in zip(pair, size):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ConvscopeError(f"{name} must be positive pixels (e.g. 32) or a share of the side below 1 (e.g. 0.25), "
                                 f"got {value!r}")
        if v < 1:
            out.append(max(1, round(v * side)))
        elif v != int(v):
            raise ConvscopeError(f"{name} {v!r} is neither whole pixels nor a share of the side below 1")
        else:
            out.append(int(v))
    return out[0], out[1]


def _positions(side: int, window: int, stride: int) -> list[int]:
    """Window starts along one side; the last window sits flush with the edge so every pixel is covered."""
    starts = list(range(0, side - window + 1, stride))
    if starts[-1] != side - window:
        starts.append(side - window)
    return starts


def _cover(starts: Sequence[int], window: int, side: int, device: torch.device) -> torch.Tensor:
    """(n, side) float indicator: row i is 1 where window i covers the pixel."""
    index = torch.arange(side, device=device)
    begin = torch.tensor(starts, device=device)[:, None]
    return ((index >= begin) & (index < begin + window)).float()


@register("occlusion", family="attribution", group="perturbation", takes="images", returns="map",
          paper="Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks",
          quick={"window": 0.5, "stride": 0.5})
@_options_doc
def occlusion(model: Any, x: torch.Tensor, *, target: Target = None, layer: None = None,
              window: float | tuple[float, float] | None = None, stride: float | tuple[float, float] | None = None,
              fill: str | float = 0.0, score: Literal["probability", "logit"] = "probability", batch_size: int | None = None, precision: Precision = "fp32",
              progress: ProgressArg = None) -> Result:
    """Occlusion: the drop in the target's score when a window hides each part of the picture, averaged
    over the windows that cover each pixel, (B, 1, H, W). Positive: hiding it hurts the class.

    One forward per window and image, batched. ``meta["grid"]`` (B, nh, nw) holds each window's drop,
    ``meta["rows"]`` / ``meta["cols"]`` the windows' top and left edges, ``meta["base"]`` the clean
    score. ``occlusion_mask`` and ``masked_image`` turn the map into seed 000's mask and masked picture.

    Options:
        window: side in pixels (32, or (h, w)) or as a share of the picture's side below 1 (0.25); None: 1/7 of the side (32 at 224).
        stride: step between windows, in pixels or as a share of the side; None: half the window.
        fill: what the window shows: a value in the model's input space (0: the mean colour when normalized),
            "mean" (the image's mean colour) or "blur".
    """
    wrapped, x = _start(model, x, target, precision, layer, "occlusion", score)
    batch, _, height, width = x.shape
    wh, ww = _sides("window", window if window is not None else (max(1, round(height / 7)), max(1, round(width / 7))),
                    (height, width))
    if wh > height or ww > width:
        raise ConvscopeError(f"window {wh}x{ww} is larger than the {height}x{width} picture; use at most {height}x{width}")
    sh, sw = _sides("stride", stride if stride is not None else (max(1, wh // 2), max(1, ww // 2)), (height, width))
    tops, lefts = _positions(height, wh, sh), _positions(width, ww, sw)
    windows = len(tops) * len(lefts)
    rows = perturbation_rows(wrapped, x, batch_size)
    with Guard(wrapped.module, grad=False), compute_precision(wrapped, precision), \
            tracker(progress, batch * windows, "occlusion") as bar:
        pixels = wrapped.working_copy(x)
        output, scores, classes, fixed, base = _clean_forward(wrapped, pixels, target, score)
        fills = _fill_tensor(wrapped, pixels, fill).expand_as(pixels)
        drops = torch.empty(batch * windows, dtype=torch.float32, device=pixels.device)
        for start in range(0, batch * windows, rows):  # job j: image j // windows, window j % windows
            jobs = torch.arange(start, min(start + rows, batch * windows), device=pixels.device)
            images = jobs // windows
            chunk = _rows_of(pixels, images)
            for r, (j, b) in enumerate(zip(jobs.tolist(), images.tolist())):
                top, left = tops[(j % windows) // len(lefts)], lefts[j % len(lefts)]
                chunk[r, :, top:top + wh, left:left + ww] = fills[b, :, top:top + wh, left:left + ww]
            drops[start:start + len(jobs)] = base[images] - _score(wrapped.module(chunk), fixed, images, score)
            bar.advance(len(jobs))
    grid = drops.view(batch, len(tops), len(lefts))
    # every window is a product of a row band and a column band: sum the drops covering each pixel, divide by the count
    cover_h, cover_w = _cover(tops, wh, height, grid.device), _cover(lefts, ww, width, grid.device)
    total = torch.einsum("bij,ih,jw->bhw", grid, cover_h, cover_w)
    data = (total / (cover_h.sum(0)[:, None] * cover_w.sum(0)[None, :]))[:, None]
    return package(wrapped, x, data, method="occlusion", classes=classes, scores=scores, output=output,
                   grid=grid, base=base, score=score, window=(wh, ww), stride=(sh, sw), rows=tuple(tops),
                   cols=tuple(lefts), windows=windows)


def occlusion_mask(result: Result, threshold: float = 0.5) -> torch.Tensor:
    """(B, 1, H, W) bool: the pixels whose occlusion costs at least ``threshold`` (0..1) of the image's
    largest drop — seed 000's mask. An image whose map has no positive drop gets an empty mask.
    (``convscope.roi(result, threshold=...)`` gives one image's largest region, box and crop.)"""
    if not 0 <= threshold <= 1:
        raise ConvscopeError(f"threshold is a share of the largest drop, between 0 and 1; got {threshold}")
    data = result.data.detach()
    if data.dim() != 4 or data.shape[1] != 1:
        raise ConvscopeError(f"occlusion_mask needs a (B, 1, H, W) map, got {result.method} of shape {tuple(data.shape)}")
    peak = data.amax(dim=(1, 2, 3), keepdim=True)
    return (data >= threshold * peak) & (peak > 0)


def masked_image(result: Result, mask: torch.Tensor | None = None, *, threshold: float = 0.5) -> np.ndarray:
    """The explained pictures seen through ``mask`` (B, 1, H, W) bool (default: ``occlusion_mask(result,
    threshold)``): uint8 (B, H, W, 3), black outside the mask — seed 000's third picture."""
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


@register("rise", family="attribution", group="perturbation", takes="images", returns="map",
          paper="Petsiuk, Das & Saenko 2018, RISE: Randomized Input Sampling for Explanation of Black-box Models",
          quick={"masks": 8})
@_options_doc
def rise(model: Any, x: torch.Tensor, *, target: Target = None, layer: None = None, masks: int = 1000, cells: int = 7,
         p: float = 0.5, fill: str | float = 0.0, seed: int = 0, score: Literal["probability", "logit"] = "probability", batch_size: int | None = None,
         precision: Precision = "fp32", progress: ProgressArg = None) -> Result:
    """RISE: the average of random smooth masks, each weighted by the target's score on the picture seen
    through it, S = sum_i score(x * M_i) M_i / (N p), (B, 1, H, W).

    The paper uses 4000-8000 masks; 1000 (the default) gives the same picture with more speckle. Every
    image sees the same masks, drawn from ``seed``. ``meta["base"]``: the clean score.

    Options:
        masks: number of random masks N (more: smoother, slower; the paper uses 4000).
        cells: the masks' grid is cells x cells before upsampling (the paper: 7).
        p: probability that a cell is kept (the paper: 0.5).
        fill: what masked-out pixels become: a value in the model's input space (0: the mean colour when normalized),
            "mean" or "blur".
        seed: the masks' seed (same seed, same answer).
    """
    wrapped, x = _start(model, x, target, precision, layer, "rise", score)
    batch, _, height, width = x.shape
    _count("masks", masks)
    _count("cells", cells)
    if cells > min(height, width):
        raise ConvscopeError(f"cells={cells} is more than the {height}x{width} picture's side; use at most {min(height, width)}")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
        raise ConvscopeError(f"p is the probability of keeping a cell, 0 < p <= 1; got {p!r}")
    bank = _RiseMasks(masks, cells, float(p), seed, (height, width))
    rows = perturbation_rows(wrapped, x, batch_size)
    with Guard(wrapped.module, grad=False), compute_precision(wrapped, precision), \
            tracker(progress, batch * masks, "rise") as bar:
        pixels = wrapped.working_copy(x)
        output, scores, classes, fixed, base = _clean_forward(wrapped, pixels, target, score)
        fills = _fill_tensor(wrapped, pixels, fill).expand_as(pixels)
        total = torch.zeros(batch, 1, height, width, dtype=torch.float32, device=pixels.device)
        for start in range(0, batch * masks, rows):  # job j: mask j // batch on image j % batch (each mask made once)
            jobs = torch.arange(start, min(start + rows, batch * masks), device=pixels.device)
            images, which = jobs % batch, jobs // batch
            first = int(which[0])
            mask = bank.make(range(first, int(which[-1]) + 1), pixels.device, pixels.dtype)[which - first]  # (n, 1, H, W)
            chunk = torch.lerp(fills[images], pixels[images], mask).contiguous(memory_format=torch.channels_last)
            weight = _score(wrapped.module(chunk), fixed, images, score)
            total.index_add_(0, images, weight.view(-1, 1, 1, 1) * mask.float())
            bar.advance(len(jobs))
    data = total / (masks * float(p))
    return package(wrapped, x, data, method="rise", classes=classes, scores=scores, output=output, base=base,
                   score=score, masks=masks, cells=cells, p=float(p), seed=seed)


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


@register("superpixels", family="attribution", group="perturbation", takes="images", returns="map",
          paper="Ribeiro, Singh & Guestrin 2016, \"Why Should I Trust You?\": Explaining the Predictions of Any Classifier (LIME)",
          quick={"segments": 8, "samples": 8})
@_options_doc
def superpixels(model: Any, x: torch.Tensor, *, target: Target = None, layer: None = None, segments: int = 50,
                compactness: float = 10.0, samples: int = 500, kernel_width: float = 0.25, ridge: float = 1.0,
                fill: str | float = 0.0, seed: int = 0, score: Literal["probability", "logit"] = "probability", batch_size: int | None = None,
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
        segments: about how many SLIC superpixels (scikit-image's n_segments).
        compactness: SLIC's balance of colour and space (higher: squarer segments).
        samples: random on/off samples per image (the first is the full picture).
        kernel_width: width of the exponential kernel on the cosine distance (LIME: 0.25).
        ridge: the ridge penalty alpha of the linear fit (LIME: 1).
        fill: what switched-off segments become: a value in the model's input space (0: the mean colour when normalized), "mean" or "blur".
        seed: the samples' seed (same seed, same answer).
    """
    wrapped, x = _start(model, x, target, precision, layer, "superpixels", score)
    batch, _, height, width = x.shape
    _count("segments", segments)
    _count("samples", samples, 2)
    for name, value in (("compactness", compactness), ("kernel_width", kernel_width), ("ridge", ridge)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConvscopeError(f"{name} must be a positive number, got {value!r}")
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
        output, scores, classes, fixed, base = _clean_forward(wrapped, pixels, target, score)
        fills = _fill_tensor(wrapped, pixels, fill).expand_as(pixels)
        seg = [torch.from_numpy(label).to(pixels.device) for label in labels]
        on = [z.to(device=pixels.device, dtype=torch.bool) for z in draws]
        y = torch.empty(batch * samples, dtype=torch.float32, device=pixels.device)
        for start in range(0, batch * samples, rows):  # job j: sample j % samples of image j // samples
            jobs = torch.arange(start, min(start + rows, batch * samples), device=pixels.device)
            images = jobs // samples
            keep = torch.stack([on[b][s][seg[b]] for b, s in zip(images.tolist(), (jobs % samples).tolist())])
            chunk = torch.where(keep[:, None], pixels[images], fills[images]).contiguous(memory_format=torch.channels_last)
            y[start:start + len(jobs)] = _score(wrapped.module(chunk), fixed, images, score)
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
    return package(wrapped, x, data, method="superpixels", classes=classes, scores=scores, output=output, base=base,
                   score=score, segments=torch.stack(seg), weights=coefficients,
                   intercept=torch.tensor(intercepts), fit=torch.tensor(fits), samples=samples, seed=seed)
