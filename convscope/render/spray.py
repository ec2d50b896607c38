"""Pictures of SpRAy (kind "strategies": Lapuschkin et al. 2019): a class's prediction strategies, one row each.

Each row is one cluster of explanations: its mean map (the normalized maps averaged; the density of the map's mass
against a uniform map's, on one sequential scale shared by the rows, so a corner spot and a spread map compare
truthfully) titled with the cluster's size and where its mass lies, then the pictures nearest its mean with their own
map over them (each scaled by its peak). Above the rows, the Laplacian's smallest eigenvalues with the eigengap that
suggested the number of clusters; the verdict in words is the figure's title.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import numpy as np

from .scale import Scale, blend, colorbar, relative, relative_scale, scale_of

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..metrics.spray import Strategies

__all__ = ["draw_eigenvalues", "strategies_figure"]

EXAMPLES = 6  # example pictures per row
COLUMN = 1.3  # inches per picture column: 1 + 6 columns and two colour bars stay under the report's width
CHOSEN = "#b00020"
SUGGESTED = "#777777"


def density_scale(strategies: Strategies) -> Scale:
    """The mean maps' scale: each cell's share of the mass over a uniform map's share (1 = uniform), 0 to the largest
    over all clusters."""
    cells = strategies.mean_maps.shape[-1] ** 2
    return scale_of(strategies.mean_maps * cells, signed=False, units="mass per cell, × uniform", scope="all rows")


def draw_eigenvalues(ax: Axes, strategies: Strategies) -> None:
    """The smallest eigenvalues of the normalized Laplacian on a square-root axis (the scale the eigengap is measured
    on), the chosen number of clusters marked by its gap (and the suggested one when a number was forced)."""
    values = np.asarray(strategies.eigenvalues, dtype=np.float64)
    positions = np.arange(1, len(values) + 1)
    ax.plot(positions, values, "o-", color="#333333", markersize=3.5, linewidth=1)
    ax.set_yscale("function", functions=(lambda v: np.sqrt(np.clip(v, 0, None)), np.square))
    top = max(float(values.max()), 1e-3)
    ax.set_ylim(0, top * 1.15)
    marks = [(strategies.clusters, CHOSEN, f"{strategies.clusters} {'forced' if strategies.forced else 'by the eigengap'}")]
    if strategies.forced and strategies.suggested != strategies.clusters:
        marks.append((strategies.suggested, SUGGESTED, f"{strategies.suggested} suggested"))
    for count, color, words in marks:
        if count < len(values):
            ax.annotate("", xy=(count + 0.5, values[count]), xytext=(count + 0.5, values[count - 1]),
                        arrowprops={"arrowstyle": "<->", "color": color, "linewidth": 1.2})
            ax.axvline(count + 0.5, color=color, linestyle=":", linewidth=0.8)
            middle = ((np.sqrt(max(values[count - 1], 0.0)) + np.sqrt(max(values[count], 0.0))) / 2) ** 2
            ax.text(count + 0.7, middle, words, color=color, fontsize=7, va="center")
    ax.set_xticks(positions)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("eigenvalue index", fontsize=7)
    ax.set_ylabel("Laplacian eigenvalue\n(square-root axis)", fontsize=7)
    ax.set_title(f"spectrum of the {strategies.neighbours}-nearest-neighbour graph of "
                 f"{strategies.clustered} maps", fontsize=8)


def _row_title(strategies: Strategies, cluster: int) -> str:
    row = strategies.describe()[cluster]
    return f"{cluster + 1}: {row['pictures']} pictures, {row['share']:.0%}\n" + textwrap.fill(row["where"], 24)


def _example(strategies: Strategies, index: int) -> np.ndarray:
    """The example's map over its thumbnail (opacity from the value), or the map alone when no picture was kept."""
    heat = relative(strategies.example_maps[index], False)
    if strategies.pictures is not None and index in strategies.pictures:
        return blend(strategies.pictures[index], heat, relative_scale(False))
    return relative_scale(False).colours(heat)


def strategies_figure(strategies: Strategies, *, examples: int = EXAMPLES) -> Figure:
    """The eigenvalue panel, then one row per strategy: its mean map (density against a uniform map, one colour bar
    for the column) and up to ``examples`` of the pictures nearest its mean with their map (one colour bar)."""
    from matplotlib.figure import Figure

    examples = max(1, min(int(examples), 8))
    shown = max(1, min(examples, max((len(v) for v in strategies.examples.values()), default=0)))
    rows = strategies.clusters
    fig = Figure(figsize=(COLUMN * (shown + 1) + 1.9, 2.3 + 1.55 * rows), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[2.0, 1.55 * rows])
    spectrum_ax, words_ax = top.subplots(1, 2, width_ratios=[1.0, 1.25])
    draw_eigenvalues(spectrum_ax, strategies)
    words_ax.set_axis_off()
    words_ax.text(0.0, 1.0, _summary_words(strategies), fontsize=7, va="top", ha="left", family="monospace",
                  transform=words_ax.transAxes)
    means, pictures = bottom.subfigures(1, 2, width_ratios=[COLUMN + 0.9, COLUMN * shown + 0.6])
    density = density_scale(strategies)
    cells = strategies.mean_maps.shape[-1] ** 2
    mean_axes = means.subplots(rows, 1, squeeze=False)[:, 0]
    example_grid = pictures.subplots(rows, shown, squeeze=False)
    drawn = []
    for cluster, ax in enumerate(mean_axes):
        ax.imshow(density.colours(strategies.mean_maps[cluster] * cells), interpolation="nearest")
        ax.set_title(_row_title(strategies, cluster), fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
        chosen = strategies.examples.get(cluster, [])[:shown]
        for column, cell in enumerate(example_grid[cluster]):
            cell.set_axis_off()
            if column < len(chosen):
                cell.imshow(_example(strategies, chosen[column]))
                cell.set_title(f"{'nearest: ' if column == 0 else ''}{strategies._id(chosen[column])}", fontsize=6)
                drawn.append(cell)
    colorbar(means, list(mean_axes), density, fontsize=6, fraction=0.08, pad=0.03)
    if drawn:
        colorbar(pictures, drawn, relative_scale(False), fontsize=6, fraction=0.025)
    what = f"{strategies.method} maps of " if strategies.method else "maps of "
    name = f"'{strategies.name}'" if strategies.name else "one class"
    fig.suptitle(textwrap.fill(f"SpRAy on {what}{name}: {strategies.verdict}", 22 * (shown + 1)), fontsize=9)
    return fig


def _summary_words(strategies: Strategies) -> str:
    """The per-cluster table, short enough for the panel beside the spectrum."""
    lines = [f"{'':<3}{'pictures':>9}{'share':>7}{'centre':>8}  {'richest quarter':<17}"]
    for row in strategies.describe():
        quarter = "-" if np.isnan(row["quadrant_share"]) else f"{row['quadrant']} {row['quadrant_share']:.0%}"
        centre = "-" if np.isnan(row["centre"]) else f"{row['centre']:.0%}"
        lines.append(f"{row['cluster'] + 1:<3}{row['pictures']:>9}{row['share']:>7.0%}{centre:>8}  {quarter:<17}")
    separation = "" if np.isnan(strategies.separation) else f"silhouette {strategies.separation:.2f}; "
    lines.append(f"{separation}eigengap {strategies.eigengap:.3f}")
    if strategies.sampled:
        lines.append(f"{strategies.clustered} of {len(strategies)} clustered, the rest")
        lines.append("joined the nearest mean map")
    if strategies.without_evidence:
        lines.append(f"{strategies.without_evidence} maps without positive evidence")
    return "\n".join(lines)


# -- the drawer of kind "strategies" ---------------------------------------------------------------------------
def _caption(strategies: Strategies) -> str:
    return f"SpRAy: {strategies.verdict}"


def _html(strategies: Strategies, *, examples: int = EXAMPLES) -> str:
    from .trust import result_block

    columns = ["strategy", "pictures", "share", "where", "centre", "richest quarter", "half the mass in"]
    rows = [[row["cluster"] + 1, row["pictures"], f"{row['share']:.0%}", row["where"],
             "-" if np.isnan(row["centre"]) else f"{row['centre']:.0%}",
             "-" if np.isnan(row["quadrant_share"]) else f"{row['quadrant']} {row['quadrant_share']:.0%}",
             "-" if np.isnan(row["focus"]) else f"{row['focus']:.0%} of the picture"] for row in strategies.describe()]
    caption = (f"SpRAy (Lapuschkin et al. 2019): {len(strategies)} maps clustered by where their mass lies; each row is one "
               f"strategy, its mean map and the pictures nearest it. {strategies.verdict}")
    return result_block(strategies, [(strategies_figure(strategies, examples=examples), "SpRAy strategies")], caption=caption,
                        text=strategies.table(), columns=columns, rows=rows, verdict=strategies.verdict)


def _register() -> None:
    from .dispatch import drawer

    drawer("strategies", figure=strategies_figure, caption=_caption, text=lambda strategies: strategies.table(), html=_html)


_register()
