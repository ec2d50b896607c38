"""The comparison grid (kind "comparison"): rows = models (or target classes), columns = the picture and each method."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any

import numpy as np

from .core import normalize, overlay, to_uint8_image

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..compare import Cell, Comparison

__all__ = ["comparison_figure", "comparison_panels"]


def _style(cell: Cell) -> dict[str, Any]:
    from .core import default_style

    return default_style(cell.result) if cell.result is not None else {}


def comparison_panels(comparison: Comparison, image: str | int = 0, *, size: int = 224,
                      alpha: float | None = None) -> list[list[np.ndarray | None]]:
    """Rows × (picture + methods) uint8 panels on the common frame (None: the method did not apply).

    The picture column outlines what the row's model saw; in method cells the part it never saw is
    dimmed. Maps are scaled by the method's usual display mode, per cell (``scale="each"``) or over the
    whole column (``scale="column"``)."""
    from ..compare import crop_box

    name = comparison.images[image] if isinstance(image, int) else image
    picture = comparison.pictures[name]
    rows: list[list[np.ndarray | None]] = [[] for _ in comparison.rows]
    for r, row in enumerate(comparison.rows):
        height, width = comparison.frame_maps(comparison.methods[0], name, size=size)[1].shape[1:]
        base = to_uint8_image(picture, (height, width))
        x0, y0, x1, y1 = crop_box(comparison.models[row], picture.size)
        sx, sy = width / picture.size[0], height / picture.size[1]
        framed = base.copy()
        box = (round(y0 * sy), round(x0 * sx), max(1, round(y1 * sy)) - 1, max(1, round(x1 * sx)) - 1)
        _outline(framed, box)
        rows[r].append(framed)
    for method in comparison.methods:
        maps, seen = comparison.frame_maps(method, name, size=size)
        cells = [comparison.cells[(row, method, name)] for row in comparison.rows]
        style = next((_style(c) for c in cells if c.result is not None), {})
        mode = style.get("mode", "minmax")
        scaled = np.zeros_like(maps)
        if comparison.scale == "column" and seen.any():
            values = np.concatenate([maps[r][seen[r]] for r in range(len(cells)) if cells[r].result is not None] or [np.zeros(1)])
            flat = normalize(values[None], mode)[0]
            start = 0
            for r, cell in enumerate(cells):
                if cell.result is not None:
                    count = int(seen[r].sum())
                    scaled[r][seen[r]] = flat[start:start + count]
                    start += count
        else:
            for r, cell in enumerate(cells):
                if cell.result is not None:
                    scaled[r][seen[r]] = normalize(maps[r][seen[r]][None], mode)[0]
        for r, cell in enumerate(cells):
            if cell.result is None:
                rows[r].append(None)
                continue
            base = rows[r][0]
            clean = to_uint8_image(picture, base.shape[:2])
            blended = overlay(clean, scaled[r], alpha=style.get("alpha", 0.5) if alpha is None else alpha,
                              cmap=style.get("cmap", "jet"), weighted=style.get("weighted", False))
            blended[~seen[r]] = (clean[~seen[r]] * 0.35 + 80).astype(np.uint8)  # the model never saw this part
            rows[r].append(blended)
    return rows


def _outline(picture: np.ndarray, box: tuple[int, int, int, int], color: tuple[int, int, int] = (255, 230, 0)) -> None:
    top, left, bottom, right = box
    picture[top:bottom + 1, [left, right]] = color
    picture[[top, bottom], left:right + 1] = color


def _cell_title(cell: Cell) -> str:
    text = f"top-1 {cell.top1.label[:22]} {cell.top1.probability:.0%}"
    if cell.explained is not None and cell.explained != cell.top1.label:
        prob = f" {cell.probability:.0%}" if cell.probability is not None else ""
        text += f"\nexplains {cell.explained[:20]}{prob}"
    return text


def comparison_figure(comparison: Comparison, image: str | int | None = None, *, size: int = 224,
                      alpha: float | None = None, panel_size: float = 2.4) -> Figure:
    """Rows × (picture + methods) for one picture, or every picture's block stacked; each cell titled
    with the row's model's top-1 label and probability (and the class explained when it differs)."""
    from matplotlib.figure import Figure

    names = comparison.images if image is None else [comparison.images[image] if isinstance(image, int) else image]
    ncols = 1 + len(comparison.methods)
    nrows = len(comparison.rows) * len(names)
    width, height = comparison.pictures[names[0]].size
    panel_height = panel_size * min(1.5, height / width)
    fig = Figure(figsize=(panel_size * ncols, (panel_height + 0.45) * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for block, name in enumerate(names):
        panels = comparison_panels(comparison, name, size=size, alpha=alpha)
        for r, row in enumerate(comparison.rows):
            line = axes[block * len(comparison.rows) + r]
            first = comparison.cells[(row, comparison.methods[0], name)]
            line[0].imshow(panels[r][0])
            line[0].set_title(f"{name}\n{_cell_title(first)}", fontsize=7)
            line[0].set_ylabel(textwrap.fill(row, 18), fontsize=8)
            line[0].set_xticks([])
            line[0].set_yticks([])
            for c, method in enumerate(comparison.methods, start=1):
                ax = line[c]
                ax.set_axis_off()
                cell = comparison.cells[(row, method, name)]
                if panels[r][c] is None:
                    ax.imshow(np.full_like(panels[r][0], 235))
                    ax.text(0.5, 0.5, textwrap.fill(f"{method} does not apply: {cell.error}", 30), ha="center",
                            va="center", fontsize=6, transform=ax.transAxes, wrap=True)
                    ax.set_title(method, fontsize=8)
                    continue
                ax.imshow(panels[r][c])
                ax.set_title(f"{method}\n{_cell_title(cell)}", fontsize=7)
    what = "models" if comparison.rows_are == "models" else "target classes"
    scale = "maps scaled per cell" if comparison.scale == "each" else "one scale per method column"
    fig.suptitle(f"{len(comparison.rows)} {what} × {len(comparison.methods)} methods · {scale} · "
                 "yellow box: what the model saw", fontsize=9)
    return fig



def _caption(comparison: Comparison) -> str:
    what = "models" if comparison.rows_are == "models" else "target classes"
    return (f"{len(comparison.rows)} {what} × {len(comparison.methods)} methods ({', '.join(comparison.methods)}) on "
            f"{len(comparison.images)} picture(s)")


def _html(comparison: Comparison, image: str | int | None = None, *, size: int = 224, alpha: float | None = None,
          panel_size: float = 2.4) -> str:
    from .trust import result_block

    fig = comparison_figure(comparison, image, size=size, alpha=alpha, panel_size=panel_size)
    return result_block(comparison, [(fig, "comparison grid")], caption=_caption(comparison), text=comparison.table())


def _register() -> None:
    from .dispatch import drawer

    drawer("comparison", figure=comparison_figure, caption=_caption, text=lambda comparison: comparison.table(), html=_html)


_register()
