"""Colour by meaning: how raw values become colours, and the colour bar that says so.

A :class:`Scale` maps raw values to a colormap and knows what they mean:

- **unsigned** values (Grad-CAM and the other CAMs, gradient magnitudes, activations) go on a sequential map
  (``inferno``) from 0 (or the smallest value, when it is below 0 for an unsigned quantity) to the largest;
- **signed** values (integrated gradients, input × gradient, occlusion, RISE around its average, LIME weights)
  go on a diverging map (``RdBu_r``) with symmetric limits ``[-L, L]``, so 0 — "no effect" — is the
  neutral white, evidence for the class red and evidence against it blue.

Overlays take their opacity from the value (its distance from 0), so the photo stays readable where the
map says nothing. Every heatmap is drawn with a colour bar carrying the units and the scope of the scale
("per picture", "shared by the column", "clipped at the 99.5th percentile").

What a result's values mean comes from the result itself: ``meta["signed"]`` (set by the method),
``meta["neutral"]`` (a per-image value that means "no effect", e.g. RISE's average score) and
``meta["units"]``; without them a map is signed when it has negative values, and pixel gradients are shown
as their magnitude (Simonyan et al. 2013).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..result import Result

__all__ = [
    "DIVERGING",
    "SEQUENTIAL",
    "Scale",
    "blend",
    "colorbar",
    "colorbar_strip",
    "display_values",
    "result_scale",
    "scale_of",
    "with_colorbar",
]

SEQUENTIAL = "inferno"  # unsigned: dark (nothing) -> bright yellow (most)
DIVERGING = "RdBu_r"  # signed: blue (against) -> white (no effect) -> red (for)
PIXEL_CLIP = 99.5  # pixel gradients are spiky: their scale stops at this percentile of |value|
MAX_OPACITY = 0.75  # an overlay's strongest value still lets a quarter of the photo through


def _numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float32)


@dataclass(frozen=True)
class Scale:
    """Raw values -> colours. ``low``/``high``: the values at the ends of the colour bar (``-L``/``L`` when signed);
    ``units``: what the values are; ``scope``: what the limits were computed over; ``clipped``: values beyond the
    limits exist (drawn at the ends)."""

    signed: bool
    low: float
    high: float
    units: str = "value"
    cmap: str = SEQUENTIAL
    scope: str = "per picture"
    clipped: bool = False

    def position(self, values: Any) -> np.ndarray:
        """Where each value sits on the colour bar, in [0, 1] (0 stays at 0.5 on a signed scale)."""
        values = _numpy(values)
        span = self.high - self.low
        if not span > 0:
            return np.full(values.shape, 0.5 if self.signed else 0.0, np.float32)
        return np.clip((values - self.low) / span, 0, 1).astype(np.float32)

    def strength(self, values: Any) -> np.ndarray:
        """How much each value says, in [0, 1]: |value| / L when signed, its position when not."""
        if not self.signed:
            return self.position(values)
        limit = max(abs(self.low), abs(self.high))
        if not limit > 0:
            return np.zeros(np.shape(values), np.float32)
        return np.clip(np.abs(_numpy(values)) / limit, 0, 1).astype(np.float32)

    def colours(self, values: Any) -> np.ndarray:
        """uint8 RGB (..., 3) of the values through the colormap."""
        import matplotlib

        rgba = matplotlib.colormaps[self.cmap](self.position(values))
        return (rgba[..., :3] * 255 + 0.5).astype(np.uint8)

    def neutral(self) -> np.ndarray:
        """The colour of "nothing": 0 on a signed scale, the bottom of an unsigned one (uint8 RGB (3,))."""
        return self.colours(np.zeros(1, np.float32) if self.signed else np.full(1, self.low, np.float32))[0]

    def describe(self) -> str:
        """'Grad-CAM value, 0 to 0.013, per picture' — what a caption says about the colours."""
        clip = f", clipped at the {PIXEL_CLIP:g}th percentile" if self.clipped else ""
        ends = f"−{_short(self.high)} to +{_short(self.high)}, 0 = white" if self.signed else \
            f"{_short(self.low)} to {_short(self.high)}"
        return f"{self.units}: {ends}" + (f", {self.scope}" if self.scope else "") + clip

    def label(self) -> str:
        """The colour bar's label: the units, and the scope in brackets."""
        return f"{self.units} ({self.scope})" if self.scope else self.units


def _short(value: float) -> str:
    return f"{value:.2g}" if value and (abs(value) < 0.01 or abs(value) >= 1000) else f"{value:.3g}"


def scale_of(values: Any, *, signed: bool | None = None, units: str = "value", scope: str = "per picture",
             clip: float | None = None) -> Scale:
    """The scale that shows ``values`` (any shape) truthfully.

    signed: None decides from the values (negative values -> signed). A signed scale is symmetric about 0
    with ``L = max |value|``; an unsigned one runs from ``min(0, smallest)`` to the largest value. ``clip``
    (a percentile, e.g. 99.5) stops the scale there, for spiky values such as gradients.
    """
    flat = _numpy(values).reshape(-1)
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        flat = np.zeros(1, np.float32)
    if signed is None:
        signed = bool(flat.min() < 0)
    if signed:
        magnitude = np.abs(flat)
        limit = float(np.percentile(magnitude, clip)) if clip is not None else float(magnitude.max())
        clipped = clip is not None and float(magnitude.max()) > limit
        return Scale(True, -limit, limit, units, DIVERGING, scope, clipped)
    low = min(0.0, float(flat.min()))
    high = float(np.percentile(flat, clip)) if clip is not None else float(flat.max())
    high = max(high, low)
    return Scale(False, low, high, units, SEQUENTIAL, scope, clip is not None and float(flat.max()) > high)


# -- what a result's values mean -----------------------------------------------------------------------------
def is_signed(result: Result) -> bool:
    """Whether ``result``'s values are drawn signed: its method says so in ``meta["signed"]``; else maps are
    signed when they hold negative values and pixel gradients are shown as magnitudes."""
    said = result.meta.get("signed")
    if said is not None:
        return bool(said)
    if result.data.dim() == 4 and result.data.shape[1] > 1:
        return False
    return bool((result.data < 0).any())


def display_values(result: Result) -> np.ndarray:
    """(B, H, W) float32: what is coloured for each image. Maps as they are, less ``meta["neutral"]`` (the value
    that means "no effect"); signed pixel attributions summed over colour channels (their sign kept, as
    Captum's visualizer does); unsigned pixel gradients as the largest |value| over channels."""
    data = result.data.detach().float().cpu()
    signed_pixels = data.dim() == 4 and data.shape[1] > 1 and is_signed(result)
    # otherwise a map as it is, or pixel gradients' magnitude: Result.maps (which also checks the shape)
    values = data.sum(dim=1) if signed_pixels else result.maps().detach().float().cpu()
    neutral = result.meta.get("neutral")
    if neutral is not None:
        values = values - torch.as_tensor(neutral, dtype=torch.float32).reshape(-1, 1, 1)
    return values.numpy()


def units_of(result: Result) -> str:
    """What the values are, for the colour bar ("drop in probability when covered"); the method's
    ``meta["units"]``, else "<method> value"."""
    return str(result.meta.get("units") or f"{result.method} value")


def result_scale(result: Result, index: int | None = None, *, signed: bool | None = None,
                 clip: float | None = None, scope: str | None = None) -> Scale:
    """The scale of image ``index`` of ``result`` (``None``: one scale shared by the whole batch).
    Pixel gradients are clipped at the 99.5th percentile unless ``clip`` says otherwise."""
    values = display_values(result)
    if index is not None:
        values = values[index]
    if clip is None and result.data.dim() == 4 and result.data.shape[1] > 1:
        clip = PIXEL_CLIP
    signed = is_signed(result) if signed is None else signed
    scope = scope or ("per picture" if index is not None or len(result) == 1 else "shared by all pictures")
    return scale_of(values, signed=signed, units=units_of(result), scope=scope, clip=clip)


# -- drawing ---------------------------------------------------------------------------------------------------
def blend(picture: np.ndarray, values: Any, scale: Scale, *, alpha: float = MAX_OPACITY,
          uniform: bool = False) -> np.ndarray:
    """The coloured values over a uint8 RGB picture of the same H×W. The opacity follows the value's strength
    (``alpha`` at the strongest, 0 where the map says nothing), so the photo stays readable; ``uniform``
    blends everywhere at ``alpha`` (the old tint, for maps meant to cover everything)."""
    values = _numpy(values)
    if values.shape != picture.shape[:2]:
        raise ValueError(f"map {values.shape} and image {picture.shape[:2]} differ in size")
    heat = scale.colours(values).astype(np.float32)
    opacity = np.full(values.shape, alpha, np.float32) if uniform else alpha * scale.strength(values)
    blended = (1 - opacity[..., None]) * picture.astype(np.float32) + opacity[..., None] * heat
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def _mappable(scale: Scale) -> Any:
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    high = scale.high if scale.high > scale.low else scale.low + 1.0
    return ScalarMappable(Normalize(scale.low, high), matplotlib.colormaps[scale.cmap])


def colorbar(fig: Figure, ax: Axes | list[Axes], scale: Scale, *, fontsize: float = 7, label: bool = True,
             **options: Any) -> Any:
    """A colour bar for ``scale`` next to ``ax`` in ``fig``, labelled with the units and scope; signed scales
    mark 0."""
    bar = fig.colorbar(_mappable(scale), ax=ax, fraction=options.pop("fraction", 0.046), pad=options.pop("pad", 0.02),
                       **options)
    bar.ax.tick_params(labelsize=fontsize)
    _ticks(bar, scale)
    if label:
        bar.set_label(scale.label(), fontsize=fontsize)
    return bar


def colorbar_strip(scale: Scale, height: int, *, dpi: int = 110) -> np.ndarray:
    """A vertical colour bar as a uint8 RGB picture ``height`` pixels tall (to stand beside a picture): the
    label (units and scope) on its left, the values on its right."""
    from matplotlib.figure import Figure

    from .core import canvas_array

    fontsize = 6 if height < 200 else 7
    label = _wrap(scale.label(), height, fontsize)
    extra = label.count("\n")  # a second line of label needs room left of the bar
    width = round(fontsize * (13.5 + 2.5 * extra))
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    left = 0.30 + 0.1 * extra
    bar_ax = fig.add_axes((left, 0.04, 0.13 * 13.5 / (13.5 + 2.5 * extra), 0.92))
    bar = fig.colorbar(_mappable(scale), cax=bar_ax)
    bar.ax.tick_params(labelsize=fontsize, length=2, pad=1)
    _ticks(bar, scale)
    bar.ax.yaxis.set_label_position("left")
    bar.set_label(label, fontsize=fontsize, labelpad=1, linespacing=1.0)
    strip = canvas_array(fig, dpi)
    if strip.shape[0] != height:  # rounding: pad or cut to the picture's height
        from PIL import Image

        strip = np.asarray(Image.fromarray(strip).resize((strip.shape[1], height), Image.BILINEAR))
    return strip


def _ticks(bar: Any, scale: Scale) -> None:
    """Short tick labels; a signed scale shows -L, 0 and L, an unsigned one about five round values."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    if scale.signed:
        bar.set_ticks([scale.low, 0.0, scale.high])
    else:
        bar.ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: _tick(value)))


def _tick(value: float) -> str:
    """A tick label: 0, 0.12, -0.098, 3.5e-05, 1.2e+03 (2 significant digits, no trailing noise)."""
    if value == 0:
        return "0"
    text = f"{value:.2g}"
    return text.replace("-", "−")


def _wrap(text: str, height: int, fontsize: float) -> str:
    """Wrap a colour bar's label to the bar's height (at most two lines; longer labels are shortened)."""
    import textwrap

    chars = max(16, int(0.9 * height / (fontsize * 110 / 72 * 0.58)))
    return "\n".join(textwrap.wrap(text, chars, max_lines=2, placeholder="…"))


MIN_BAR_HEIGHT = 160  # pixels: a smaller picture is enlarged (nearest neighbour) so its colour bar can be read


def with_colorbar(picture: np.ndarray, scale: Scale) -> np.ndarray:
    """``picture`` (uint8 (H, W, 3)) with the colour bar of ``scale`` on its right; a picture under
    ``MIN_BAR_HEIGHT`` pixels is first enlarged by a whole factor (nearest neighbour: every pixel stays a square)."""
    factor = -(-MIN_BAR_HEIGHT // picture.shape[0]) if picture.shape[0] < MIN_BAR_HEIGHT else 1
    if factor > 1:
        picture = picture.repeat(factor, axis=0).repeat(factor, axis=1)
    strip = colorbar_strip(scale, picture.shape[0])
    return np.ascontiguousarray(np.concatenate([picture, strip], axis=1))


def relative_scale(signed: bool, what: str = "map") -> Scale:
    """The scale of maps that were each divided by their own largest |value| (:func:`relative`): 0..1, or
    -1..1 with 0 neutral — for grids where every small map has its own range and one colour bar serves all."""
    if signed:
        return Scale(True, -1.0, 1.0, f"share of each {what}'s largest |value|", DIVERGING, "")
    return Scale(False, 0.0, 1.0, f"share of each {what}'s peak", SEQUENTIAL, "")


def relative(values: Any, signed: bool) -> np.ndarray:
    """(H, W) values divided by their largest |value| (NaN -> 0): what :func:`relative_scale` colours."""
    values = np.nan_to_num(_numpy(values))
    if not signed:
        values = np.clip(values, 0, None)
    peak = float(np.abs(values).max()) if values.size else 0.0
    return values / peak if peak > 0 else np.zeros_like(values)


def shared(scales: list[Scale], scope: str) -> Scale:
    """One scale covering all of ``scales`` (signed if any is), for pictures drawn side by side."""
    signed = any(s.signed for s in scales)
    if signed:
        limit = max(max(abs(s.low), abs(s.high)) for s in scales)
        return replace(scales[0], signed=True, low=-limit, high=limit, cmap=DIVERGING, scope=scope,
                       clipped=any(s.clipped for s in scales))
    return replace(scales[0], low=min(s.low for s in scales), high=max(s.high for s in scales), scope=scope,
                   clipped=any(s.clipped for s in scales))
