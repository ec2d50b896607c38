"""The comparison grid (kind "comparison"): rows = models (or target classes), columns = the picture and each method."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import numpy as np
import torch

from .core import to_uint8_image
from .scale import MAX_OPACITY, PIXEL_CLIP, Scale, blend, colorbar, display_values, result_scale, scale_of, shared

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..compare import Cell, Comparison

__all__ = ["comparison_figure", "comparison_panels", "comparison_scales"]


Columns = dict[str, tuple[np.ndarray, np.ndarray]]  # method -> (R, H, W) displayed values (NaN: nothing), (R, H, W) seen


def _columns(comparison: Comparison, name: str, size: int) -> Columns:
    """Per method, every row's displayed values on the common frame (the sign-aware values render colours: see
    ``scale.display_values``) and where each row's model looked — placed once, read by the scales and the panels."""
    from ..compare import display_size, place_in_frame

    picture = comparison.pictures[name]
    height, width = display_size(picture.size, size)
    columns: Columns = {}
    for method in comparison.methods:
        maps = np.full((len(comparison.rows), height, width), np.nan, dtype=np.float32)
        seen = np.zeros((len(comparison.rows), height, width), dtype=bool)
        for r, row in enumerate(comparison.rows):
            cell = comparison.cells[(row, method, name)]
            if cell.result is not None:
                maps[r], seen[r] = place_in_frame(comparison.models[row], torch.from_numpy(display_values(cell.result)[0]),
                                                  picture.size, (height, width))
        columns[method] = (maps, seen)
    return columns


def comparison_scales(comparison: Comparison, image: str | int = 0, *, size: int = 224,
                      columns: Columns | None = None) -> dict[tuple[str, str], Scale]:
    """The colour scale of every (row, method) cell of one picture: its own (``scale="each"``) or the whole
    method column's (``scale="column"``), sign-aware (``render.scale``)."""
    name = comparison.images[image] if isinstance(image, int) else image
    columns = columns or _columns(comparison, name, size)
    scales: dict[tuple[str, str], Scale] = {}
    for method in comparison.methods:
        maps, seen = columns[method]
        cells = [(row, comparison.cells[(row, method, name)]) for row in comparison.rows]
        own = {row: result_scale(cell.result, 0) for row, cell in cells if cell.result is not None}
        for r, (row, cell) in enumerate(cells):
            if cell.result is None:
                continue
            values = maps[r][seen[r]]
            scales[(row, method)] = scale_of(values, signed=own[row].signed, units=own[row].units, scope="per cell",
                                             clip=PIXEL_CLIP if cell.result.data.shape[1] > 1 else None)
        if comparison.scale == "column" and own:
            column = shared([scales[(row, method)] for row in own], "one scale for the column")
            scales.update({(row, method): column for row in own})
    return scales


def comparison_panels(comparison: Comparison, image: str | int = 0, *, size: int = 224, alpha: float | None = None,
                      columns: Columns | None = None, scales: dict[tuple[str, str], Scale] | None = None,
                      ) -> list[list[np.ndarray | None]]:
    """Rows × (picture + methods) uint8 panels on the common frame (None: the method did not apply).

    The picture column outlines what the row's model saw; in method cells the part it never saw is
    dimmed. Maps are coloured by their meaning (``render.scale``), per cell (``scale="each"``) or with one
    scale for the whole column (``scale="column"``): :func:`comparison_scales`."""
    from ..compare import crop_box

    name = comparison.images[image] if isinstance(image, int) else image
    picture = comparison.pictures[name]
    columns = columns or _columns(comparison, name, size)
    scales = scales or comparison_scales(comparison, name, size=size, columns=columns)
    height, width = columns[comparison.methods[0]][1].shape[1:]
    base = to_uint8_image(picture, (height, width))
    rows: list[list[np.ndarray | None]] = [[] for _ in comparison.rows]
    for r, row in enumerate(comparison.rows):
        x0, y0, x1, y1 = crop_box(comparison.models[row], picture.size)
        sx, sy = width / picture.size[0], height / picture.size[1]
        framed = base.copy()
        box = (round(y0 * sy), round(x0 * sx), max(1, round(y1 * sy)) - 1, max(1, round(x1 * sx)) - 1)
        _outline(framed, box)
        rows[r].append(framed)
    for method in comparison.methods:
        maps, seen = columns[method]
        for r, row in enumerate(comparison.rows):
            cell = comparison.cells[(row, method, name)]
            if cell.result is None:
                rows[r].append(None)
                continue
            blended = blend(base, np.nan_to_num(maps[r]), scales[(row, method)], alpha=MAX_OPACITY if alpha is None else alpha)
            blended[~seen[r]] = (base[~seen[r]] * 0.35 + 80).astype(np.uint8)  # the model never saw this part
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
    bars = 0.75 * len(comparison.methods)  # each method column carries a colour bar
    fig = Figure(figsize=(panel_size * ncols + bars, (panel_height + 0.45) * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for block, name in enumerate(names):
        columns = _columns(comparison, name, size)
        scales = comparison_scales(comparison, name, size=size, columns=columns)
        panels = comparison_panels(comparison, name, size=size, alpha=alpha, columns=columns, scales=scales)
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
                if comparison.scale == "each":
                    colorbar(fig, ax, scales[(row, method)], fontsize=6)
                elif r == max(i for i, other in enumerate(comparison.rows) if (other, method) in scales):
                    block_axes = axes[block * len(comparison.rows):(block + 1) * len(comparison.rows)]
                    colorbar(fig, [line_axes[c] for line_axes in block_axes], scales[(row, method)], fontsize=6)
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
    return result_block(comparison, [(fig, "comparison grid", True)], caption=_caption(comparison), text=comparison.table())


def _register() -> None:
    from .dispatch import drawer

    drawer("comparison", figure=comparison_figure, caption=_caption, text=lambda comparison: comparison.table(), html=_html)


_register()
