"""Pictures of feature visualization results: filter grids, feature-map grids, activations as masks,
and the pictures made by optimization (maximize, class_image, dream). matplotlib ``Figure``s (no GUI)
or uint8 arrays; results keep raw values, scaling for display happens only here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from .core import _as_numpy, grid_figure, normalize, tensor_to_images, to_uint8_image
from .scale import Scale, colorbar, relative, relative_scale

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..result import Result

__all__ = [
    "activation_mask",
    "activation_masks_figure",
    "compare_filters_figure",
    "dream_figure",
    "feature_map_grid",
    "feature_walk_figure",
    "filter_mosaic",
    "filters_figure",
    "optimization_grid",
    "optimization_images",
    "scale_maps",
]

BACKGROUND = 1.0  # separators between tiles: white


# -- filters ---------------------------------------------------------------------------------------
def _tile_grid(tiles: np.ndarray, ncols: int, gap: int = 1) -> np.ndarray:
    """(N, h, w[, 3]) tiles in [0, 1] -> one mosaic with ``gap``-pixel separators."""
    count, h, w = tiles.shape[:3]
    ncols = max(1, min(ncols, count))
    nrows = -(-count // ncols)
    shape = (nrows * (h + gap) + gap, ncols * (w + gap) + gap, *tiles.shape[3:])
    mosaic = np.full(shape, BACKGROUND, dtype=np.float32)
    for i in range(count):
        r, c = divmod(i, ncols)
        mosaic[gap + r * (h + gap):gap + r * (h + gap) + h, gap + c * (w + gap):gap + c * (w + gap) + w] = tiles[i]
    return mosaic


def _upscale(tiles: np.ndarray, target: int = 24) -> np.ndarray:
    """Nearest-neighbour upscaling so a kernel of k pixels is drawn about ``target`` pixels wide."""
    factor = max(1, math.ceil(target / max(tiles.shape[1:3])))
    return tiles.repeat(factor, axis=1).repeat(factor, axis=2)


def _symmetric(weights: torch.Tensor) -> torch.Tensor:
    """Per filter (dim 0): w / max|w| mapped to [0, 1] with zero at 0.5 (grey)."""
    scale = weights.abs().flatten(1).amax(1).clamp_min(1e-12).view(-1, *([1] * (weights.dim() - 1)))
    return 0.5 + 0.5 * weights / scale


# the grey kernel tiles: each filter divided by its own largest |weight|, 0 = mid grey
WEIGHT_SCALE = Scale(True, -1.0, 1.0, "weight ÷ the filter's largest |weight|", "gray", "")


def filter_mosaic(result: Result, *, max_filters: int = 64, max_inputs: int = 8, ncols: int | None = None) -> np.ndarray:
    """The kernels of a ``filters`` result as one picture, (H, W, 3) or (H, W) floats in [0, 1].

    The first layer of a colour model (``meta["colour"]``): one RGB tile per filter. Other layers: per
    filter, its first ``max_inputs`` input channels side by side in grey. Each filter is scaled by its
    own largest |weight|: grey is 0, white positive, black negative (colour: per channel the same).

    Options:
        max_filters: the most filters drawn (the first ones).
        max_inputs: the most input channels drawn per filter (grey mode).
        ncols: filters per row (default: about square).
    """
    w = result.data.detach().float().cpu()[:max_filters]  # (n, in, kh, kw)
    n = w.shape[0]
    if result.meta.get("colour") and w.shape[1] == 3:
        tiles = _symmetric(w).permute(0, 2, 3, 1).numpy()  # (n, kh, kw, 3)
        return _tile_grid(_upscale(tiles), ncols or math.ceil(math.sqrt(n)))
    inputs = min(max_inputs, w.shape[1])
    scaled = _symmetric(w[:, :inputs])  # (n, m, kh, kw), one scale per filter
    strips = _upscale(scaled.reshape(n * inputs, *w.shape[2:]).numpy())  # (n*m, kh', kw')
    kh, kw = strips.shape[1:]
    strips = strips.reshape(n, inputs, kh, kw)
    blocks = np.full((n, kh, inputs * (kw + 1) - 1), BACKGROUND, dtype=np.float32)
    for j in range(inputs):
        blocks[:, :, j * (kw + 1):j * (kw + 1) + kw] = strips[:, j]
    per_row = ncols or max(1, round(math.sqrt(n * kh / blocks.shape[2] * 1.5)))
    return _tile_grid(blocks, per_row, gap=3)


def _filters_title(result: Result, shown: int, inputs: int) -> str:
    shape = tuple(result.data.shape)
    head = f"{result.layer}: {result.meta.get('type', 'conv')} {shape}"
    parts = [f"{shown} of {shape[0]} filters" + (" (each by its largest |weight|: grey = 0)" if result.meta.get("colour")
                                                  and shape[1] == 3 else "")]
    if not (result.meta.get("colour") and shape[1] == 3):
        parts.append(f"first {inputs} of {shape[1]} input channels each" if inputs < shape[1] else f"{shape[1]} input channel(s) each")
    smooth = result.meta.get("smoothness")
    if smooth is not None and not math.isnan(smooth):
        parts.append(f"smoothness {smooth:.2f}")
    return head + "\n" + ", ".join(parts)


def filters_figure(result: Result, *, max_filters: int = 64, max_inputs: int = 8, title: str | None = None,
                   ncols: int | None = None) -> Figure:
    """A figure of :func:`filter_mosaic`, titled with the layer, its type and shape.

    Options:
        max_filters: the most filters drawn.
        max_inputs: the most input channels drawn per filter (grey mode).
        title: replaces the default title.
        ncols: filters per row (default: about square).
    """
    from matplotlib.figure import Figure

    mosaic = filter_mosaic(result, max_filters=max_filters, max_inputs=max_inputs, ncols=ncols)
    height, width = mosaic.shape[:2]
    scale = 7.0 / max(height, width)
    fig = Figure(figsize=(max(3.0, width * scale), max(2.0, height * scale) + 0.6), layout="constrained")
    ax = fig.subplots()
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if mosaic.ndim == 2:  # grey tiles: one bar says what grey, white and black are
        colorbar(fig, ax, WEIGHT_SCALE, fontsize=7, fraction=0.03)
    shown = min(max_filters, result.data.shape[0])
    ax.set_title(title or _filters_title(result, shown, min(max_inputs, result.data.shape[1])), fontsize=9)
    return fig


def compare_filters_figure(trained: Result, untrained: Result, *, max_filters: int = 32, max_inputs: int = 8,
                           names: Sequence[str] = ("trained", "random init")) -> Figure:
    """Two ``filters`` results side by side ("is my model trained?"), each titled with its smoothness.

    Options:
        max_filters: the most filters drawn per side.
        max_inputs: the most input channels drawn per filter (grey mode).
        names: the two panel titles.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 5.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, result, name in zip(axes, (trained, untrained), names):
        ax.imshow(filter_mosaic(result, max_filters=max_filters, max_inputs=max_inputs), cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"{name} (smoothness {result.meta.get('smoothness', float('nan')):.2f})", fontsize=10)
    fig.suptitle(f"{trained.layer}: {tuple(trained.data.shape)}", fontsize=10)
    return fig


# -- feature maps ----------------------------------------------------------------------------------
def _channels(result: Result, index: int, k: int, channels: Sequence[int] | None) -> list[int]:
    from ..features.activations import top_channels

    if channels is not None:
        return [int(c) for c in channels]
    return top_channels(result, k, index=index).tolist()


def scale_maps(maps: torch.Tensor) -> np.ndarray:
    """(N, h, w) feature maps for display, each divided by its own largest |value| (``render.scale.relative``):
    in [0, 1] when the layer has no negative values (0 stays dark, so a map saturated everywhere — ReLU6 at 6 —
    is bright, not blank), in [-1, 1] with 0 in the middle when it has (a pre-activation layer)."""
    values = maps.detach().float().cpu().numpy()
    signed = bool(values.size and values.min() < 0)
    return np.stack([relative(m, signed) for m in values]) if len(values) else values


def maps_scale(maps: torch.Tensor, cmap: str = "viridis") -> Scale:
    """The colour scale of :func:`scale_maps`' output: each channel relative to its own peak; a signed layer on
    the diverging map centred at 0, an unsigned one on ``cmap``."""
    signed = bool(maps.numel() and float(maps.min()) < 0)
    scale = relative_scale(signed, "channel")
    return scale if signed else replace(scale, cmap=cmap)


def feature_map_grid(result: Result, *, index: int = 0, k: int = 8, channels: Sequence[int] | None = None,
                     ncols: int = 4, cmap: str = "viridis") -> Figure:
    """The ``k`` channels with the largest mean activation (or ``channels``) of image ``index`` of a
    ``feature_maps`` result, each scaled on its own (:func:`scale_maps`): seed 001's 2×4 grid of 8 maps.

    Options:
        index: which image of the batch.
        k: how many channels (strongest first).
        channels: draw these channels instead of the top k.
        ncols: maps per row.
        cmap: matplotlib colormap.
    """
    chosen = _channels(result, index, k, channels)
    maps = result.data[index, chosen].detach().float().cpu()
    means = maps.mean(dim=(1, 2)).tolist()
    colours = maps_scale(maps, cmap)
    panels = [colours.colours(m) for m in scale_maps(maps)]
    titles = [f"ch {c} (mean {v:.2g})" for c, v in zip(chosen, means)]
    shape = "×".join(map(str, result.data.shape[1:]))
    how = "chosen channels" if channels is not None else f"top {len(chosen)} channels by mean activation"
    fig = grid_figure(panels, titles, ncols=ncols, suptitle=f"{result.layer} ({shape}): {how}", panel_size=2.2)
    colorbar(fig, list(fig.axes), colours, fontsize=7, fraction=0.025)
    return fig


def feature_walk_figure(maps: Mapping[str, Result] | Sequence[Result], *, index: int = 0, k: int = 6,
                        cmap: str = "viridis", image: bool = True, panel_size: float = 1.5) -> Figure:
    """One row per layer (seed 003's walk through every conv layer): the input, then the layer's ``k``
    strongest channels for image ``index``, each scaled on its own (:func:`scale_maps`); small maps are
    enlarged without smoothing (each activation a visible square).

    Options:
        index: which image of the batch.
        k: channels per layer (strongest first).
        cmap: matplotlib colormap.
        image: show the input picture at the start of the first row.
        panel_size: inches per map.
    """
    from matplotlib.figure import Figure

    results = list(maps.values()) if isinstance(maps, Mapping) else list(maps)
    cols = k + 1
    fig = Figure(figsize=(panel_size * cols, (panel_size + 0.05) * len(results) + 0.3), layout="constrained")
    axes = fig.subplots(len(results), cols, squeeze=False)
    scales: list[tuple[int, Scale]] = []
    for row, result in enumerate(results):
        for ax in axes[row]:
            ax.set_axis_off()
        label = axes[row][0]
        if image and row == 0 and result.inputs is not None:
            label.imshow(tensor_to_images(result.inputs[index:index + 1], result.mean, result.std)[0])
        shape = "×".join(map(str, result.data.shape[1:]))
        label.text(0.5, -0.08 if image and row == 0 else 0.5, f"{result.layer}\n{shape}", fontsize=7, ha="center",
                   va="top" if image and row == 0 else "center", transform=label.transAxes)
        if result.data.dim() != 4:  # a vector (a Linear layer): no maps to draw
            axes[row][1].text(0.0, 0.5, f"a vector of {result.data[index].numel()} values, not maps", fontsize=7,
                              va="center", transform=axes[row][1].transAxes)
            continue
        chosen = _channels(result, index, k, None)
        data = result.data[index, chosen].detach().float().cpu()
        colours = maps_scale(data, cmap)
        scales.append((row, colours))
        for j, (c, m) in enumerate(zip(chosen, scale_maps(data))):
            axes[row][j + 1].imshow(colours.colours(m))
            axes[row][j + 1].set_title(f"ch {c}", fontsize=7)
    if scales and len({colours for _, colours in scales}) == 1:  # one bar for every row
        colorbar(fig, [ax for row, _ in scales for ax in axes[row][1:]], scales[0][1], fontsize=7, fraction=0.02, shrink=0.6)
    else:  # signed and unsigned layers: a bar per row
        for row, colours in scales:
            colorbar(fig, list(axes[row][1:]), colours, fontsize=6, fraction=0.02)
    fig.suptitle(f"feature maps, {k} strongest channels per layer", fontsize=10)
    return fig


def activation_mask(image: Any, activation: Any, *, threshold: float | None = None) -> np.ndarray:
    """The picture seen through one channel (seed 002): the activation (h, w), clipped at 0, scaled
    by its maximum and upsampled to the picture, multiplies the picture; uint8 (H, W, 3).
    ``threshold`` in [0, 1] makes a hard mask (value >= threshold) instead.

    ``image``: anything ``load_image`` reads, or uint8 (H, W, 3).

    Options:
        threshold: None for a soft mask, or a level in [0, 1] for a binary one.
    """
    picture = image if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 else to_uint8_image(image)
    act = torch.as_tensor(_as_numpy(activation))
    if act.dim() != 2:
        raise ValueError(f"activation must be one map (h, w), got shape {tuple(act.shape)}")
    up = F.interpolate(act[None, None], size=picture.shape[:2], mode="bilinear", align_corners=False)[0, 0].numpy()
    mask = normalize(up, "max")
    if threshold is not None:
        mask = (mask >= threshold).astype(np.float32)
    return np.clip(picture.astype(np.float32) * mask[..., None] + 0.5, 0, 255).astype(np.uint8)


def activation_masks_figure(result: Result, *, index: int = 0, k: int = 4, channels: Sequence[int] | None = None,
                            image: Any = None) -> Figure:
    """The input, then the input masked by each of the ``k`` strongest channels (or ``channels``).

    Options:
        index: which image of the batch.
        k: how many channels (strongest first).
        channels: use these channels instead of the top k.
        image: the picture to mask (default: the explained input, un-normalized).
    """
    chosen = _channels(result, index, k, channels)
    own = image is None
    picture = tensor_to_images(result.inputs[index:index + 1], result.mean, result.std)[0] if own else to_uint8_image(image)
    panels = [picture] + [activation_mask(picture, result.data[index, c]) for c in chosen]
    titles = ["input"] + [f"ch {c}" for c in chosen]
    return grid_figure(panels, titles, ncols=len(panels), suptitle=f"{result.layer}: activations as masks")


# -- optimization results --------------------------------------------------------------------------
def optimization_images(result: Result) -> np.ndarray:
    """The pictures of a maximize / class_image / dream result as uint8 RGB (B, H, W, 3)."""
    from ..images import to_uint8

    return to_uint8(result.data)


def _optimization_titles(result: Result) -> list[str]:
    meta = result.meta
    if result.method == "class_image" and result.labels is not None:
        return [f"{label} ({float(p):.1%})" for label, p in zip(result.labels, meta["probability"])]
    values = meta.get("values")
    targets = meta.get("targets")
    titles = []
    for i in range(len(result)):
        head = f"ch {targets[i]}" if targets else f"#{i}"
        titles.append(head if values is None else f"{head}: {float(values[i]):.3g}")
    return titles


def optimization_grid(result: Result, *, ncols: int = 8, titles: Sequence[str] | bool = True, panel_size: float = 1.6) -> Figure:
    """The pictures of a maximize or class_image result in a grid (seed 002's 8×8 grid of filters),
    titled with the channel and its final activation (or the class and its probability).

    Options:
        ncols: pictures per row.
        titles: True (channel/class and value), False, or your own list.
        panel_size: inches per picture.
    """
    panels = list(optimization_images(result))
    names = _optimization_titles(result) if titles is True else (list(titles) if titles else None)
    layer = f" — {result.layer}" if result.layer else ""
    return grid_figure(panels, names, ncols=ncols, suptitle=f"{result.method}{layer}: {result.meta.get('objective', '')}",
                       panel_size=panel_size)


def dream_figure(result: Result, *, index: int = 0) -> Figure:
    """The photo before and after Deep Dream, side by side.

    Options:
        index: which image of the batch.
    """
    after = optimization_images(result)[index]
    original = result.meta.get("original")
    panels, names = [after], [f"dream: {result.layer}"]
    if original is not None:
        before = (original[index].detach().float().cpu().clamp(0, 1) * 255 + 0.5).to(torch.uint8)
        before = before.expand(3, -1, -1) if before.shape[0] == 1 else before
        panels.insert(0, before.permute(1, 2, 0).numpy())
        names.insert(0, "photo")
    aspect = after.shape[1] / after.shape[0]
    fig = grid_figure(panels, names, ncols=len(panels), panel_size=4.0)
    fig.set_size_inches(4.0 * aspect * len(panels), 4.4)
    return fig


# -- the drawers of feature results (kinds "picture", "feature_maps", "feature_walk", "filters") ------------
# Result.save / show pass ``image=None`` and ``index=None`` to every drawer: both mean "the default" here.
def _picture_figure(result: Result, *, index: int | None = None, image: Any = None, **style: Any) -> Figure:
    chosen = result if index is None else result[index]
    if chosen.method == "dream" and chosen.meta.get("original") is not None and len(chosen) == 1:
        return dream_figure(chosen)
    return optimization_grid(chosen, **style)


def _picture_picture(result: Result, *, index: int | None = None, image: Any = None, **style: Any) -> np.ndarray | None:
    """The optimized picture itself, pixel for pixel (one image, or ``index``); None for a batch (a grid)."""
    if index is None and len(result) != 1:
        return None
    from ..images import to_uint8

    return to_uint8(result.data[index or 0:(index or 0) + 1])[0]


PICTURE_TILE = 128  # CSS pixels of one optimized picture in a page's grid (tiles wrap to the page's width)


def _dream_pair(result: Result) -> list[tuple[np.ndarray, str]]:
    """(picture, title) of the photo and its dream."""
    after = optimization_images(result)[0]
    before = (result.meta["original"][0].detach().float().cpu().clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    before = before.expand(3, -1, -1) if before.shape[0] == 1 else before
    return [(before.permute(1, 2, 0).numpy(), "the photo"), (after, f"the dream at {result.layer}")]


def _picture_html(result: Result, **style: Any) -> str:
    """Deep Dream next to its photo; several pictures (maximize) as a grid of tiles that wraps to the page's
    width, each titled; one picture as itself — every picture a JPEG (they are photo-like), none wider than
    the page. With drawing options: the figure."""
    import html

    from .encode import CONTENT_WIDTH, figure_img, image_uri, img_tag

    words = _picture_caption(result)
    caption = f"<figcaption>{html.escape(words)}</figcaption>"
    if style:
        return f'<figure class="convscope picture">{figure_img(_picture_figure(result, **style), words)}{caption}</figure>'
    if result.method == "dream" and result.meta.get("original") is not None and len(result) == 1:
        half = (CONTENT_WIDTH - 40) // 2
        cells = []
        for picture, title in _dream_pair(result):
            height, width = picture.shape[:2]
            shown = min(width, half)
            tag = img_tag(image_uri(picture, photo=True), shown, round(height * shown / width), title)
            cells.append(f"<figure>{tag}<figcaption>{html.escape(title)}</figcaption></figure>")
        return f'<div class="convscope picture cards">{"".join(cells)}<p>{html.escape(words)}</p></div>'
    pictures = optimization_images(result)
    if len(result) == 1:
        height, width = pictures[0].shape[:2]
        tag = img_tag(image_uri(pictures[0], photo=True), max(width, 224), round(height * max(width, 224) / width), words)
        return f'<figure class="convscope picture">{tag}{caption}</figure>'
    titles = _optimization_titles(result)
    cells = []
    for picture, title in zip(pictures, titles):
        height, width = picture.shape[:2]
        tag = img_tag(image_uri(picture, photo=True), PICTURE_TILE, round(height * PICTURE_TILE / width), title)
        cells.append(f"<figure>{tag}<figcaption>{html.escape(title)}</figcaption></figure>")
    return f'<div class="convscope picture tiles">{"".join(cells)}<p>{html.escape(words)}</p></div>'


def _picture_caption(result: Result) -> str:
    targets = result.meta.get("targets")
    channels = (f"what {len(targets)} channels of {result.layer} want to see (one picture per channel; title: the channel "
                f"and the mean activation it reaches)" if targets and result.layer else
                f"what {result.meta.get('objective', '')} wants to see")
    what = {"class_image": "the picture the model wants for " + ", ".join(dict.fromkeys(result.labels or [])),
            "dream": f"Deep Dream at {result.layer}", "maximize": channels}
    return what.get(result.method, result.method) + (f" · {len(result)} pictures" if len(result) > 1 else "")


def _picture_text(result: Result) -> str:
    """One line per picture: what it maximizes and what it reached."""
    lines = []
    if result.method == "class_image":
        for label, p in zip(result.labels or [], result.meta.get("probability", [])):
            lines.append(f"class_image '{label}': the model gives it p = {float(p):.1%}")
    elif result.method == "dream":
        lines.append(f"dream: {result.meta.get('objective', result.layer)}, {result.meta.get('octaves')} octaves x "
                     f"{result.meta.get('steps')} steps, {tuple(result.data.shape[-2:])} pixels")
    else:
        titles = _optimization_titles(result)
        lines.append(f"maximize {result.meta.get('objective', '')}: " + ", ".join(titles))
    return "\n".join(lines) or _picture_caption(result)


def vector_figure(result: Result, *, index: int = 0, k: int = 16) -> Figure:
    """A layer whose output is a vector (B, N) (a Linear layer): its ``k`` largest values for image ``index``."""
    from matplotlib.figure import Figure

    values = result.data[index].detach().float().cpu().flatten()
    top = values.topk(min(k, values.numel()))
    fig = Figure(figsize=(6.0, 0.25 * len(top.values) + 1.0), layout="constrained")
    ax = fig.subplots()
    ax.barh(range(len(top.values)), top.values.numpy()[::-1], color="#4477aa")
    ax.set_yticks(range(len(top.values)), [str(int(i)) for i in top.indices.tolist()[::-1]], fontsize=7)
    ax.set_xlabel("activation")
    ax.set_title(f"{result.layer}: the {len(top.values)} largest of {values.numel()} values", fontsize=9)
    return fig


def _feature_maps_figure(result: Result, *, index: int | None = None, image: Any = None, k: int = 8,
                         masks: bool = False, **style: Any) -> Figure:
    """The strongest channels of one image (``masks=True``: the picture seen through them); a vector layer as bars."""
    index = index or 0
    if result.data.dim() != 4:
        return vector_figure(result, index=index, k=max(k, 16))
    if masks:
        return activation_masks_figure(result, index=index, k=min(k, 8), image=image, **style)
    return feature_map_grid(result, index=index, k=k, **style)


def _feature_maps_caption(result: Result) -> str:
    shape = tuple(result.data.shape[1:])
    return f"feature maps of {result.layer} {shape}, strongest channels first"


def _feature_maps_text(result: Result) -> str:
    shape = tuple(result.data.shape[1:])
    if result.data.dim() != 4:
        return f"{result.layer}: {shape} values for {len(result)} picture(s)"
    means = result.meta.get("mean_activation")
    top = top_channels_text(result) if means is not None else ""
    return f"{result.layer}: {shape} maps for {len(result)} picture(s){top}"


def top_channels_text(result: Result, k: int = 5) -> str:
    from ..features.activations import top_channels

    chosen = top_channels(result, k)
    means = result.data[0].float().mean(dim=(1, 2))
    return "; strongest channels of picture 0: " + ", ".join(f"{int(c)} ({float(means[c]):.3g})" for c in chosen)


def _walk_figure(walk: Mapping[str, Result], *, index: int | None = None, image: Any = None, **style: Any) -> Figure:
    return feature_walk_figure(walk, index=index or 0, **style)


def _walk_caption(walk: Mapping[str, Result]) -> str:
    names = list(walk)
    shown = ", ".join(names[:4]) + (f" … {names[-1]}" if len(names) > 4 else "")
    return f"feature maps of {len(names)} layers ({shown}), strongest channels first"


WALK_CHANNELS = 5  # channels per layer in pages: fewer, larger maps (a 14×14 map drawn ~150 px wide is legible)


def _walk_html(walk: Mapping[str, Result], *, index: int | None = None, image: Any = None, **style: Any) -> str:
    """The walk as one picture at most the page's width: the input, then each layer's ``WALK_CHANNELS``
    strongest channels, drawn large (nearest neighbour: one square per activation); the sizes in words."""
    import html

    from .encode import figure_img

    style = {"k": WALK_CHANNELS, "panel_size": 1.6, **style}
    fig = feature_walk_figure(walk, index=index or 0, **style)
    sizes = ", ".join(f"{label} {'×'.join(map(str, result.data.shape[-2:]))}" for label, result in walk.items()
                      if result.data.dim() == 4)
    words = _walk_caption(walk) + (f"; map sizes: {sizes}" if sizes else "")
    return (f'<figure class="convscope feature_walk">{figure_img(fig, words)}'
            f"<figcaption>{html.escape(words)}</figcaption></figure>")


def _walk_text(walk: Mapping[str, Result]) -> str:
    return "\n".join(f"{label}: {tuple(result.data.shape[1:])}" for label, result in walk.items())


def _filters_figure(result: Result, *, index: int | None = None, image: Any = None, **style: Any) -> Figure:
    return filters_figure(result, **style)


def _filters_caption(result: Result) -> str:
    return f"filters of {result.layer} {tuple(result.data.shape)}"


def filters_reading(result: Result) -> str:
    """How to read these kernels, in plain words, for their size: a 3×3 stem is not AlexNet's 11×11."""
    shape = tuple(result.data.shape)
    kh, kw = shape[-2:]
    colour = bool(result.meta.get("colour")) and shape[1] == 3
    size = f"{kh}×{kw}"
    if kh * kw <= 9:
        read = ("a colour the filter responds to (a tile of mostly one colour) or a direction in which brightness changes "
                "(a light side next to a dark one)" if colour else
                "a direction in which the input changes (a light side next to a dark one) or a small spot")
        return (f"{size} kernels, {kh * kw} weights per channel, enlarged without smoothing: too small for the oriented "
                f"edges and colour blobs of AlexNet's 11×11 filters. Read each tile as {read}; in a trained network most "
                f"tiles are such smooth steps, in an untrained one they are speckled noise.")
    if kh * kw <= 25:
        return (f"{size} kernels, enlarged without smoothing: a trained network shows short edges and "
                + ("colour contrasts" if colour else "spots") + "; an untrained one speckled noise.")
    return (f"{size} kernels, enlarged without smoothing: a trained network shows oriented edges, stripes "
            + ("and colour blobs" if colour else "and blobs") + " (as AlexNet's 11×11 filters); an untrained one noise.")


def _filters_html(result: Result, *, index: int | None = None, image: Any = None, **style: Any) -> str:
    """The kernel mosaic (PNG: sharp squares) at most the page's width, and how to read kernels of this size."""
    import html

    from .encode import figure_img

    words = _filters_caption(result)
    colour = bool(result.meta.get("colour")) and result.data.shape[1] == 3
    style = {"ncols": 8, **style} if colour else style  # colour tiles: a wide, low mosaic (one line of reading per row)
    return (f'<figure class="convscope filters">{figure_img(filters_figure(result, **style), words, photo=False)}'
            f"<figcaption>{html.escape(words)}. {html.escape(filters_reading(result))}</figcaption></figure>")


def _filters_text(result: Result) -> str:
    smooth = result.meta.get("smoothness")
    known = smooth is not None and not math.isnan(smooth)
    extra = f", smoothness {smooth:.2f} (about 0: random init; clearly positive: trained)" if known else ""
    return f"{result.layer}: {result.meta.get('type', 'conv')} kernels {tuple(result.data.shape)}{extra}"


def _register() -> None:
    from .dispatch import drawer

    drawer("picture", figure=_picture_figure, picture=_picture_picture, html=_picture_html, caption=_picture_caption,
           text=_picture_text)
    drawer("feature_maps", figure=_feature_maps_figure, caption=_feature_maps_caption, text=_feature_maps_text)
    drawer("feature_walk", figure=_walk_figure, caption=_walk_caption, text=_walk_text, html=_walk_html)
    drawer("filters", figure=_filters_figure, caption=_filters_caption, text=_filters_text, html=_filters_html)


_register()
