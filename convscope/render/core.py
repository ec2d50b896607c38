"""Colormaps, overlays, grids and PNG export for Results and raw maps."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .scale import MAX_OPACITY, Scale, blend, colorbar, display_values, result_scale, with_colorbar

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..result import Result

NORMALIZE_MODES = ("minmax", "max", "percentile", "signed")


def _as_numpy(maps: Any) -> np.ndarray:
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().float().cpu().numpy()
    return np.asarray(maps, dtype=np.float32)


def normalize(maps: Any, mode: str = "minmax", *, percentile: float = 99.5) -> np.ndarray:
    """Scale each map of (H, W) or (B, H, W) into [0, 1] for display.

    minmax:     (m - min) / (max - min) per image.
    max:        m / max per image (zero stays zero; for non-negative maps like Grad-CAM).
    percentile: |m| clipped at its ``percentile`` and divided by it (spiky maps such as gradients).
    signed:     m / max|m| mapped to [0, 1] with 0.5 at zero (for a diverging colormap).
    A constant map becomes all zeros (0.5 for signed).
    """
    if mode not in NORMALIZE_MODES:
        raise ValueError(f"unknown normalization {mode!r}; choose one of {', '.join(NORMALIZE_MODES)}")
    arr = _as_numpy(maps)
    single = arr.ndim == 2
    batch = arr[None] if single else arr
    flat = batch.reshape(batch.shape[0], -1)
    if mode == "minmax":
        low, high = flat.min(1), flat.max(1)
        span = high - low
        out = (flat - low[:, None]) / np.where(span > 0, span, 1)[:, None]
        out[span <= 0] = 0
    elif mode == "max":
        high = np.clip(flat.max(1), 0, None)
        out = np.clip(flat, 0, None) / np.where(high > 0, high, 1)[:, None]
    elif mode == "percentile":
        mag = np.abs(flat)
        high = np.percentile(mag, percentile, axis=1)
        out = np.clip(mag / np.where(high > 0, high, 1)[:, None], 0, 1)
    else:
        high = np.abs(flat).max(1)
        out = 0.5 + 0.5 * flat / np.where(high > 0, high, 1)[:, None]
    out = out.reshape(batch.shape).astype(np.float32)
    return out[0] if single else out


def colorize(map01: Any, cmap: str = "jet") -> np.ndarray:
    """A [0, 1] map (H, W) -> uint8 RGB (H, W, 3) through a matplotlib colormap."""
    import matplotlib

    colors = matplotlib.colormaps[cmap](np.clip(_as_numpy(map01), 0, 1))[..., :3]
    return (colors * 255 + 0.5).astype(np.uint8)


def to_uint8_image(image: Any, size: tuple[int, int] | None = None) -> np.ndarray:
    """A picture (path, PIL image, array) as uint8 RGB (H, W, 3), resized to ``size`` = (H, W)."""
    from PIL import Image

    from ..images import load_image

    pil = load_image(image)
    if size is not None and pil.size != (size[1], size[0]):
        pil = pil.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(pil, dtype=np.uint8)


def tensor_to_images(x: torch.Tensor, mean: Sequence[float] | None = None,
                     std: Sequence[float] | None = None) -> np.ndarray:
    """A preprocessed batch (B, C, H, W) back to uint8 RGB pictures (B, H, W, 3).

    Without mean/std each image is min-max scaled (the best guess for an unknown normalization).
    """
    from ..images import to_uint8

    data = x.detach().float().cpu()
    if std is not None:
        data = data * torch.tensor(std).view(1, -1, 1, 1)
    if mean is not None:
        data = data + torch.tensor(mean).view(1, -1, 1, 1)
    if mean is None and std is None:
        low = data.amin(dim=(1, 2, 3), keepdim=True)
        high = data.amax(dim=(1, 2, 3), keepdim=True)
        data = (data - low) / (high - low).clamp_min(1e-12)
    return to_uint8(data)


def overlay(image: np.ndarray, map01: Any, *, alpha: float = 0.5, cmap: str = "jet",
            weighted: bool = False) -> np.ndarray:
    """Blend a colorized [0, 1] map over a uint8 RGB picture of the same H×W.

    ``weighted``: the map's own value scales the opacity, so low values leave the picture visible
    (right for sparse maps such as gradients).
    """
    values = np.clip(_as_numpy(map01), 0, 1)
    heat = colorize(values, cmap).astype(np.float32)
    if heat.shape[:2] != image.shape[:2]:
        raise ValueError(f"map {heat.shape[:2]} and image {image.shape[:2]} differ in size")
    opacity = alpha * values[..., None] if weighted else alpha
    blended = (1 - opacity) * image.astype(np.float32) + opacity * heat
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def _scale(result: Result, index: int | None, *, signed: bool | None = None, clip: float | None = None,
           cmap: str | None = None, scale: Scale | None = None) -> Scale:
    chosen = scale or result_scale(result, index, signed=signed, clip=clip)
    return replace(chosen, cmap=cmap) if cmap else chosen


def result_map(result: Result, index: int = 0, *, cmap: str | None = None, signed: bool | None = None,
               clip: float | None = None, scale: Scale | None = None) -> np.ndarray:
    """The colorized map of image ``index`` alone, uint8 (H, W, 3), on its sign-aware scale
    (:func:`convscope.render.scale.result_scale`; ``scale`` to impose one, e.g. shared by a batch)."""
    return _scale(result, index, signed=signed, clip=clip, cmap=cmap, scale=scale).colours(display_values(result)[index])


def overlay_result(result: Result, index: int = 0, *, image: Any = None, alpha: float | None = None,
                   cmap: str | None = None, signed: bool | None = None, clip: float | None = None,
                   scale: Scale | None = None, uniform: bool = False) -> np.ndarray:
    """The heatmap of image ``index`` over its picture (the explained input unless ``image`` given); the
    opacity follows the value (``alpha`` at the strongest), so the photo shows where the map says nothing."""
    values = display_values(result)[index]
    chosen = _scale(result, index, signed=signed, clip=clip, cmap=cmap, scale=scale)
    height, width = values.shape[-2:]
    picture = to_uint8_image(image, (height, width)) if image is not None else result.images()[index]
    return blend(picture, values, chosen, alpha=MAX_OPACITY if alpha is None else alpha, uniform=uniform)


def _title(result: Result, index: int) -> str:
    label = result.labels[index] if result.labels else None
    probs = result.meta.get("probabilities")
    text = result.method + (f" · {label}" if label else "")
    if probs is not None:
        text += f" ({float(probs[index]):.1%})"
    return text


def grid_figure(panels: Sequence[np.ndarray], titles: Sequence[str] | None = None, *, ncols: int = 4,
                suptitle: str | None = None, panel_size: float = 2.6) -> Figure:
    """A matplotlib figure showing uint8 (H, W, 3) or (H, W) panels in a grid with titles."""
    from matplotlib.figure import Figure

    count = len(panels)
    ncols = max(1, min(ncols, count))
    nrows = max(1, -(-count // ncols))
    fig = Figure(figsize=(panel_size * ncols, panel_size * nrows + (0.4 if suptitle else 0)), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < count:
            panel = panels[i]
            ax.imshow(panel, cmap="gray" if np.ndim(panel) == 2 else None)
            if titles is not None and i < len(titles):
                ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


def result_figure(result: Result, *, alpha: float | None = None, cmap: str | None = None, image: Any = None,
                  signed: bool | None = None, clip: float | None = None, shared: bool = False) -> Figure:
    """One row per image: the picture, the map over it, and the map alone with its colour bar (units and
    scale). ``shared``: one colour scale for the whole batch (to compare pictures) instead of one per picture."""
    from matplotlib.figure import Figure

    count = len(result)
    common = _scale(result, None, signed=signed, clip=clip, cmap=cmap) if shared else None
    pictures = result.images() if image is None and result.inputs is not None else None
    fig = Figure(figsize=(7.4, 2.45 * count + 0.5), layout="constrained")
    axes = fig.subplots(count, 3, squeeze=False)
    for i in range(count):
        chosen = common or _scale(result, i, signed=signed, clip=clip, cmap=cmap)
        over = overlay_result(result, i, image=image, alpha=alpha, scale=chosen)
        base = pictures[i] if pictures is not None else to_uint8_image(image, over.shape[:2])
        panels = (base, over, result_map(result, i, scale=chosen))
        for ax, panel, title in zip(axes[i], panels, ("input", _title(result, i), "the map alone")):
            ax.imshow(panel)
            ax.set_title(title, fontsize=8)
            ax.set_axis_off()
        if common is None or i == count - 1:
            colorbar(fig, list(axes[i]) if common is None else list(axes[:, 2]), chosen, fontsize=7)
    layer = f" — layer {result.layer}" if result.layer else ""
    caveat = result.meta.get("caveat")
    fig.suptitle(f"{result.method}{layer}" + (f"\n{_fill(caveat, 110)}" if caveat else ""), fontsize=9)
    return fig


def _fill(text: str, width: int) -> str:
    import textwrap

    return textwrap.fill(str(text), width)


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 (H, W[, 3]) -> PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


# how every figure is written: cropped to what is drawn, so a long title or a legend outside the axes is never
# cut off (what notebooks' inline backend does)
FIGURE_SAVE = {"bbox_inches": "tight", "pad_inches": 0.05}


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """A matplotlib figure rendered to PNG bytes (no GUI backend needed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, **FIGURE_SAVE)
    return buffer.getvalue()


def canvas_array(fig: Figure, dpi: int = 110) -> np.ndarray:
    """A matplotlib figure as uint8 RGB (H, W, 3), its exact size at ``dpi`` (not cropped: see
    ``encode.figure_array`` for the cropped drawing)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def data_uri(png: bytes) -> str:
    """PNG bytes as an inline ``data:`` URI for self-contained HTML."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def save_grid(panels: Sequence[np.ndarray], path: str | Path, titles: Sequence[str] | None = None, **kw: Any) -> Path:
    """Write :func:`grid_figure` to a PNG file."""
    path = Path(path)
    path.write_bytes(figure_png(grid_figure(panels, titles, **kw)))
    return path


def save_result(result: Result, path: str | Path, *, image: Any = None, index: int | None = None,
                **style: Any) -> Path:
    """Write ``result`` to ``path`` (format from the suffix): :func:`convscope.render.save`."""
    from .dispatch import save

    return save(result, path, image=image, index=index, **style)


# -- the drawers of explanation results (kinds "map" and "pixels") ----------------------------------------
def _explanation_figure(result: Result, *, index: int | None = None, image: Any = None, **style: Any) -> Figure:
    return result_figure(result if index is None else result[index], image=image, **style)


def _explanation_picture(result: Result, *, index: int | None = None, image: Any = None, colorbar: bool = True,
                         **style: Any) -> np.ndarray | None:
    """One image's overlay (``index``, or the only image of the batch) with its colour bar on the right
    (``colorbar=False``: the overlay alone, pixel for pixel the picture's size); None for a batch (a figure)."""
    if index is None and len(result) != 1:
        return None
    index = index or 0
    style.pop("shared", None)
    chosen = _scale(result, index, signed=style.pop("signed", None), clip=style.pop("clip", None),
                    cmap=style.pop("cmap", None), scale=style.pop("scale", None))
    over = overlay_result(result, index, image=image, scale=chosen, **style)
    return with_colorbar(over, chosen) if colorbar else over


def explanation_caption(result: Result) -> str:
    """'gradcam · tabby (38.1%) · layer _swish@1' (the first image's class)."""
    parts = [_title(result, 0)] if len(result) else [result.method]
    if len(result) > 1:
        parts.append(f"{len(result)} images")
    if result.layer:
        parts.append(f"layer {result.layer}")
    return " · ".join(parts)


def _explanation_text(result: Result) -> str:
    lines = []
    for i in range(len(result)):
        label = result.labels[i] if result.labels else "custom target"
        lines.append(f"{result.method} for '{label}'" + (f" at layer {result.layer}" if result.layer else ""))
    caveat = result.meta.get("caveat")
    return "\n".join([*dict.fromkeys(lines), *([f"note: {caveat}"] if caveat else [])])


def _image_caption(result: Result, index: int) -> str:
    label = result.labels[index] if result.labels else "custom target"
    probs = result.meta.get("probabilities")
    return f"picture {index + 1}: explaining '{label}'" + (f" (p = {float(probs[index]):.1%})" if probs is not None else "")


def explanation_html(result: Result, *, mask: float | None = None, width: int = 224, index: int | None = None,
                     image: Any = None, signed: bool | None = None, clip: float | None = None, cmap: str | None = None,
                     alpha: float | None = None, shared: bool = False) -> str:
    """Per picture, its overlay and the map alone with its colour bar, captioned with the class explained and
    the colour scale — and with ``mask`` (a share of the map's largest value, 0..1) the mask where the map
    reaches it and the picture seen through it (the occlusion triple: heatmap, mask, what the model needs)."""
    import html

    from .encode import image_uri

    if mask is not None and not 0 <= mask <= 1:
        raise ValueError(f"mask is a share of the map's largest value, between 0 and 1; got {mask!r}")
    if index is not None:
        result = result[index]
    pictures = (result.images() if image is None else to_uint8_image(image, tuple(result.data.shape[-2:]))[None]
                .repeat(len(result), axis=0)) if result.inputs is not None or image is not None else None
    common = _scale(result, None, signed=signed, clip=clip, cmap=cmap) if shared else None
    values = display_values(result)
    cells = []
    for i in range(len(result)):
        chosen = common or _scale(result, i, signed=signed, clip=clip, cmap=cmap)
        caption = _image_caption(result, i)
        over = overlay_result(result, i, image=image, alpha=alpha, scale=chosen)
        alone = with_colorbar(chosen.colours(values[i]), chosen)
        panels = [(image_uri(over, photo=True), caption, width),
                  (image_uri(alone), caption + " map and colour bar", round(width * alone.shape[1] / alone.shape[0]))]
        if mask is not None and pictures is not None:
            peak = float(values[i].max())
            keep = (values[i] >= mask * peak) & (peak > 0)
            panels += [(image_uri((keep * 255).astype(np.uint8), photo=False), caption + " mask", width),
                       (image_uri(pictures[i] * keep[..., None].astype(np.uint8), photo=True), caption + " through the mask", width)]
        images = "".join(f'<img src="{uri}" alt="{html.escape(alt)}" width="{w}" style="max-width:100%">'
                         for uri, alt, w in panels)
        note = f" · mask: {mask:.0%} of the largest value" if mask is not None else ""
        cells.append(f'<figure class="convscope {result.kind}">{images}<figcaption>{html.escape(caption + note)}'
                     f'<br><small>colours: {html.escape(chosen.describe())}</small></figcaption></figure>')
    caveat = result.meta.get("caveat")
    layer = f" · layer {result.layer}" if result.layer else ""
    note = f'<p class="caveat">{html.escape(str(caveat))}</p>' if caveat else ""
    return f'<div class="convscope cards" title="{html.escape(result.method + layer)}">{"".join(cells)}{note}</div>'


def _register() -> None:
    from .dispatch import drawer

    for kind in ("map", "pixels"):
        drawer(kind, figure=_explanation_figure, picture=_explanation_picture, html=explanation_html,
               caption=explanation_caption, text=_explanation_text)


_register()
