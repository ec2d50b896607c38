"""Pictures of embeddings: 2-D scatter maps coloured by label with misclassified points marked,
thumbnail maps (each point drawn as its image), and several t-SNE perplexities side by side.

Every function returns a matplotlib ``Figure`` (no GUI backend) or a uint8 array; save with
``convscope.render.figure_png`` / ``fig.savefig``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..features.embed import Embedding, Projection

__all__ = ["label_colors", "perplexity_figure", "scatter_figure", "thumbnail_canvas", "thumbnail_figure"]

UNLABELLED = (0.6, 0.6, 0.6)
MAX_LEGEND = 30


def label_colors(names: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """A distinct colour per label: tab10 up to 10 labels, tab20 up to 20, then evenly along 'turbo'."""
    import matplotlib

    count = len(names)
    if count <= 10:
        cmap, positions = matplotlib.colormaps["tab10"], [i / 10 + 0.05 for i in range(count)]
    elif count <= 20:
        cmap, positions = matplotlib.colormaps["tab20"], [i / 20 + 0.025 for i in range(count)]
    else:
        cmap, positions = matplotlib.colormaps["turbo"], list(np.linspace(0.05, 0.95, count))
    return {name: tuple(float(c) for c in cmap(p)[:3]) for name, p in zip(names, positions)}


def _coords(embedding: Embedding, projection: Projection | np.ndarray) -> np.ndarray:
    points = getattr(projection, "coords", projection)
    points = np.asarray(points, dtype=np.float32)
    if points.shape != (len(embedding), 2):
        raise InputError(f"the map has shape {points.shape}; expected ({len(embedding)}, 2), one 2-D point per image")
    return points


def _colour_key(embedding: Embedding, color_by: str) -> tuple[list[str | None], str]:
    """The label that colours each point: the true label, or the prediction when there is none."""
    if color_by not in ("auto", "label", "prediction"):
        raise InputError(f"unknown color_by {color_by!r}; choose 'auto', 'label' or 'prediction'")
    if color_by == "prediction" or (color_by == "auto" and all(label is None for label in embedding.labels)):
        if embedding.predicted_labels is None:
            return [None] * len(embedding), "label"
        return list(embedding.predicted_labels), "prediction"
    return list(embedding.labels), "label"


def _draw_scatter(ax: Axes, embedding: Embedding, points: np.ndarray, *, color_by: str, size: float | None,
                  mark_misclassified: bool) -> tuple[list[Any], list[str]]:
    """Points coloured by label on ``ax``; misclassified ones get a black-edged cross. -> legend handles, names."""
    from matplotlib.lines import Line2D

    from ..features.embed import sort_labels

    keys, _ = _colour_key(embedding, color_by)
    names = sort_labels({k for k in keys if k is not None})
    colours = label_colors(names)
    size = size if size is not None else float(np.clip(3000 / max(len(points), 1), 4, 40))
    handles, labels = [], []
    for name in [*names, None]:
        rows = np.array([k == name for k in keys], dtype=bool)
        if not rows.any():
            continue
        colour = colours.get(name, UNLABELLED) if name is not None else UNLABELLED
        ax.scatter(points[rows, 0], points[rows, 1], s=size, color=colour, alpha=0.8, linewidths=0)
        handles.append(Line2D([], [], marker="o", linestyle="", color=colour, markersize=6))
        labels.append(name if name is not None else "no label")
    wrong = embedding.misclassified() if mark_misclassified else np.zeros(len(points), dtype=bool)
    if wrong.any():
        marker_colours = [colours.get(k, UNLABELLED) if k is not None else UNLABELLED
                          for k in np.array(keys, dtype=object)[wrong]]
        ax.scatter(points[wrong, 0], points[wrong, 1], s=max(size * 4.0, 40.0), marker="X", c=marker_colours,
                   edgecolors="black", linewidths=0.9, zorder=3)
        handles.append(Line2D([], [], marker="X", linestyle="", color="white", markeredgecolor="black", markersize=8))
        labels.append(f"misclassified ({int(wrong.sum())})")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    return handles, labels


def _legend(owner: Any, handles: list[Any], labels: list[str], title: str, **where: Any) -> None:
    if not handles:
        return
    if len(handles) > MAX_LEGEND:  # keep the misclassified entry
        handles, labels = [*handles[:MAX_LEGEND - 1], handles[-1]], [*labels[:MAX_LEGEND - 1], labels[-1]]
    owner.legend(handles, labels, title=title, fontsize=8, title_fontsize=8, frameon=False,
                 ncols=1 if len(handles) <= 16 else 2, **where)


def _title(embedding: Embedding, projection: Any) -> str:
    method = getattr(projection, "title", "2-D map")
    return f"{embedding.model} · {embedding.layer} · {method}"


def scatter_figure(embedding: Embedding, projection: Projection | np.ndarray, *, color_by: str = "auto",
                   mark_misclassified: bool = True, size: float | None = None, title: str | None = None,
                   figsize: tuple[float, float] = (7.5, 6.0)) -> Figure:
    """A 2-D map: one dot per image coloured by its label (``color_by="prediction"``, or "auto" when
    there are no labels: by the model's prediction), misclassified images as black-edged crosses, a legend."""
    from matplotlib.figure import Figure

    points = _coords(embedding, projection)
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    handles, labels = _draw_scatter(ax, embedding, points, color_by=color_by, size=size,
                                    mark_misclassified=mark_misclassified)
    _, key = _colour_key(embedding, color_by)
    _legend(fig, handles, labels, key, loc="outside right center")
    accuracy = embedding.accuracy()
    extra = f" — accuracy {accuracy:.1%}" if accuracy is not None else ""
    ax.set_title(title or _title(embedding, projection) + extra, fontsize=9)
    return fig


def perplexity_figure(embedding: Embedding, projections: Sequence[Projection], *, color_by: str = "auto",
                      ncols: int | None = None, panel_size: float = 4.0) -> Figure:
    """Several maps of the same embedding side by side (t-SNE at several perplexities), one legend."""
    from matplotlib.figure import Figure

    if not projections:
        raise InputError("perplexity_figure needs at least one map (e.g. from tsne_sweep)")
    count = len(projections)
    ncols = max(1, min(ncols or count, count))
    nrows = -(-count // ncols)
    fig = Figure(figsize=(panel_size * ncols + 1.4, panel_size * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    handles: list[Any] = []
    labels: list[str] = []
    for ax, projection in zip(axes.flat, projections):
        handles, labels = _draw_scatter(ax, embedding, _coords(embedding, projection), color_by=color_by, size=None,
                                        mark_misclassified=True)
        ax.set_title(getattr(projection, "title", "2-D map"), fontsize=9)
    for ax in list(axes.flat)[count:]:
        ax.set_axis_off()
    _, key = _colour_key(embedding, color_by)
    _legend(fig, handles, labels, key, loc="outside right center")
    fig.suptitle(f"{embedding.model} · {embedding.layer} · {len(embedding)} images", fontsize=10)
    return fig


def _placements(points: np.ndarray, canvas: int, thumb: int, snap: bool) -> tuple[np.ndarray, np.ndarray]:
    """Top-left pixel (x, y) of each thumbnail and the indices drawn, scaling the points into the canvas
    (aspect kept). With ``snap`` the canvas is a grid of thumb-sized cells and every point takes the
    free cell nearest to it (points in a random but fixed order), so all images show and none overlap;
    dense clusters spread into blobs around their place. Without, each image sits exactly at its point,
    later ones on top."""
    low, high = points.min(0), points.max(0)
    span = float(max((high - low).max(), 1e-12))
    usable = canvas - thumb
    centre_px = usable / 2 + (points - (low + high) / 2) / span * usable + thumb / 2  # (N, 2) x, y
    if not snap:
        return np.clip(np.rint(centre_px - thumb / 2), 0, usable).astype(int), np.arange(len(points))
    cells = canvas // thumb
    if cells * cells < len(points):
        raise InputError(f"{len(points)} thumbnails of {thumb} px do not fit a {canvas}-px grid; use a smaller thumb or a larger size")
    grid = np.stack(np.meshgrid(np.arange(cells), np.arange(cells), indexing="xy"), -1).reshape(-1, 2)  # (C, 2) col, row
    centres = (grid + 0.5) * thumb
    free = np.ones(len(grid), dtype=bool)
    corners = np.zeros((len(points), 2), dtype=int)
    for index in np.random.default_rng(0).permutation(len(points)):
        distance = ((centres - centre_px[index]) ** 2).sum(1)
        distance[~free] = np.inf
        chosen = int(distance.argmin())
        free[chosen] = False
        corners[index] = grid[chosen] * thumb
    return corners, np.arange(len(points))


def thumbnail_canvas(embedding: Embedding, projection: Projection | np.ndarray, *, size: int = 1600,
                     thumb: int | None = None, snap: bool = True, border: int = 2,
                     background: int = 255) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The thumbnail map as one uint8 picture (size, size, 3): each image drawn at its 2-D point, framed
    in its label's colour. -> (canvas, corners (M, 2) x, y of each drawn thumbnail, indices (M,) drawn).

    ``thumb``: side of each drawn thumbnail (default: a grid of about 1.4·√N cells per side, at most
    twice the stored size). ``snap``: every image in its own grid cell, the free one nearest its point
    (no overlap); False: exactly at its point, overlapping.
    """
    from PIL import Image

    if embedding.thumbnails is None:
        raise InputError("this embedding has no thumbnails; run embed(..., thumbnail_size=48)")
    points = _coords(embedding, projection)
    thumb = _drawn_size(size, len(points), embedding.thumbnails.shape[1], thumb)
    keys, _ = _colour_key(embedding, "auto")
    from ..features.embed import sort_labels

    colours = label_colors(sort_labels({k for k in keys if k is not None}))
    canvas = np.full((size, size, 3), background, dtype=np.uint8)
    corners, drawn = _placements(points, size, thumb, snap)
    for (x, y), index in zip(corners, drawn):
        picture = embedding.thumbnails[index]
        if picture.shape[0] != thumb:
            picture = np.asarray(Image.fromarray(picture).resize((thumb, thumb), Image.BILINEAR))
        tile = picture.copy()
        if border:
            key = keys[index]
            colour = np.array(colours.get(key, UNLABELLED) if key is not None else UNLABELLED) * 255
            tile[:border], tile[-border:], tile[:, :border], tile[:, -border:] = colour, colour, colour, colour
        canvas[y:y + thumb, x:x + thumb] = tile
    return canvas, corners, drawn


def thumbnail_figure(embedding: Embedding, projection: Projection | np.ndarray, *, size: int = 1600,
                     thumb: int | None = None, snap: bool = True, title: str | None = None,
                     figsize: tuple[float, float] = (10.0, 9.0)) -> Figure:
    """The thumbnail map (:func:`thumbnail_canvas`) in a figure with a legend of the frame colours;
    misclassified images carry a black-edged cross in their corner."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from ..features.embed import sort_labels

    canvas, corners, drawn = thumbnail_canvas(embedding, projection, size=size, thumb=thumb, snap=snap)
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    ax.imshow(canvas, interpolation="lanczos" if canvas.shape[0] > 1200 else "nearest")
    ax.set_axis_off()
    wrong = embedding.misclassified()[drawn]
    thumb_px = _drawn_size(canvas.shape[0], len(embedding), embedding.thumbnails.shape[1], thumb)
    if wrong.any():
        tips = corners[wrong] + np.array([thumb_px * 0.85, thumb_px * 0.15])
        ax.scatter(tips[:, 0], tips[:, 1], s=40, marker="X", c="white", edgecolors="black", linewidths=1.0, zorder=3)
    keys, key = _colour_key(embedding, "auto")
    names = sort_labels({k for k in keys if k is not None})
    colours = label_colors(names)
    handles = [Line2D([], [], marker="s", linestyle="", markerfacecolor="none", markeredgecolor=colours[n],
                      markeredgewidth=2, markersize=9) for n in names]
    labels = list(names)
    if wrong.any():
        handles.append(Line2D([], [], marker="X", linestyle="", color="white", markeredgecolor="black", markersize=8))
        labels.append(f"misclassified ({int(wrong.sum())})")
    _legend(fig, handles, labels, f"frame: {key}", loc="outside right center")
    layout = "snapped to a grid" if snap else "at their points"
    ax.set_title(title or f"{_title(embedding, projection)} — {len(drawn)} images {layout}", fontsize=9)
    return fig


def _drawn_size(size: int, count: int, stored: int, thumb: int | None) -> int:
    """The thumbnail side thumbnail_canvas uses (same rule)."""
    if thumb is None:
        thumb = int(np.clip(size / (1.4 * np.sqrt(count) + 1), 12, stored * 2))
    return int(min(max(thumb, 4), size))


# -- the drawers of embeddings and 2-D maps (kinds "embedding", "projection") -------------------------------
def _stored_map(embedding: Embedding) -> Any:
    """The embedding's own map; PCA (instant) when it was made with ``projection="none"``."""
    if embedding.projection is not None:
        return embedding.projection
    from ..features.embed import pca

    return pca(embedding.features)


def _few_figure(embedding: Embedding) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 1.2))
    fig.text(0.5, 0.5, f"{embedding.model} · {embedding.layer}: {len(embedding)} image — a map needs two or more",
             ha="center", va="center", fontsize=9)
    return fig


def _embedding_figure(embedding: Embedding, *, view: str = "map", index: int | None = None, image: Any = None,
                      **style: Any) -> Figure:
    """``view="map"``: the scatter map (:func:`scatter_figure`); ``"thumbnails"``: each image at its place
    (:func:`thumbnail_figure`)."""
    if view not in ("map", "thumbnails"):
        raise InputError(f"unknown view {view!r}; choose 'map' or 'thumbnails'")
    if len(embedding) < 2:
        return _few_figure(embedding)
    projection = _stored_map(embedding)
    if view == "thumbnails":
        return thumbnail_figure(embedding, projection, **style)
    return scatter_figure(embedding, projection, **style)


def _embedding_caption(embedding: Embedding) -> str:
    method = embedding.projection.title if embedding.projection is not None else "PCA"
    accuracy = embedding.accuracy()
    scored = f", top-1 accuracy {accuracy:.1%}" if accuracy is not None else ""
    return f"{len(embedding)} images in the feature space of {embedding.model} ({embedding.layer}), {method}{scored}"


def _embedding_text(embedding: Embedding) -> str:
    wrong = int(embedding.misclassified().sum())
    lines = [repr(embedding), _embedding_caption(embedding)]
    if wrong:
        lines.append(f"{wrong} misclassified (crosses on the map)")
    return "\n".join(lines)


def _projection_figure(projection: Projection, *, index: int | None = None, image: Any = None, **style: Any) -> Figure:
    """The map of the embedding it was made from; plain dots for a map of bare features."""
    source = getattr(projection, "source", None)
    if source is not None and len(source) == len(projection):
        return scatter_figure(source, projection, **style)
    from matplotlib.figure import Figure

    fig = Figure(figsize=style.get("figsize", (6.0, 6.0)), layout="constrained")
    ax = fig.subplots()
    points = np.asarray(projection.coords, dtype=np.float32)
    ax.scatter(points[:, 0], points[:, 1], s=float(np.clip(3000 / max(len(points), 1), 4, 40)), color="#4477aa", alpha=0.8,
               linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(style.get("title") or f"{projection.title} · {len(points)} points", fontsize=9)
    return fig


def _projection_caption(projection: Projection) -> str:
    return f"{projection.title} of {len(projection)} points"


def _register() -> None:
    from .dispatch import drawer

    drawer("embedding", figure=_embedding_figure, caption=_embedding_caption, text=_embedding_text)
    drawer("projection", figure=_projection_figure, caption=_projection_caption, text=_projection_caption)


_register()
