"""Pictures of a robustness sweep: a grid of perturbed pictures with their maps, and probability curves."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .core import normalize, overlay

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..metrics.robustness import Robustness

__all__ = ["robustness_curves", "robustness_figure"]


def robustness_figure(sweep: Robustness, *, alpha: float = 0.6, panel_size: float = 1.9) -> Figure:
    """Rows = perturbations, columns = the original and each strength: the perturbed picture with the map
    for the original class over it, titled with the top-1, p(original class) and the rank correlation
    with the original map; a changed top-1 is titled in red."""
    from matplotlib.figure import Figure

    names = list(dict.fromkeys(row.perturbation for row in sweep.rows))
    per_row = {name: [i for i, row in enumerate(sweep.rows) if row.perturbation == name] for name in names}
    ncols = 1 + max((len(v) for v in per_row.values()), default=0)
    fig = Figure(figsize=(panel_size * ncols, (panel_size + 0.45) * len(names) + 0.5), layout="constrained")
    axes = fig.subplots(max(1, len(names)), ncols, squeeze=False)
    original = overlay(sweep.original_picture, normalize(sweep.original_map, "minmax"), alpha=alpha, weighted=True)
    for r, name in enumerate(names):
        axes[r, 0].imshow(original)
        axes[r, 0].set_title(f"original\n{sweep.original_label[:18]} {sweep.original_probability:.0%}", fontsize=7)
        axes[r, 0].set_ylabel(name, fontsize=9)
        axes[r, 0].set_xticks([])
        axes[r, 0].set_yticks([])
        for c in range(1, ncols):
            axes[r, c].set_axis_off()
        for c, i in enumerate(per_row[name], start=1):
            row = sweep.rows[i]
            ax = axes[r, c]
            ax.imshow(overlay(sweep.pictures[i], normalize(sweep.maps[i], "minmax"), alpha=alpha, weighted=True))
            flipped = row.predicted != sweep.original_class
            ax.set_title(f"{row.strength:g}: {row.label[:16]}\np(orig) {row.original_probability:.0%} · ρ {row.rank_correlation:.2f}",
                         fontsize=7, color="#b00020" if flipped else "black")
    fig.suptitle(f"robustness of '{sweep.original_label}' ({sweep.method} for the original class; red: the top-1 changed)",
                 fontsize=9)
    return fig


def robustness_curves(sweep: Robustness, *, size: tuple[float, float] = (7.0, 3.2)) -> Figure:
    """p(original class) against strength, one line per perturbation (strengths in each one's own unit,
    so each line is drawn against its position in the sweep)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    ax = fig.subplots()
    names = list(dict.fromkeys(row.perturbation for row in sweep.rows))
    for name in names:
        rows = [row for row in sweep.rows if row.perturbation == name]
        ax.plot(np.arange(1, len(rows) + 1), [row.original_probability for row in rows], marker="o", label=name)
    ax.axhline(sweep.original_probability, color="#777777", lw=1, ls="--", label="original")
    ax.set_xlabel("strength (mildest to strongest)", fontsize=8)
    ax.set_ylabel(f"p({sweep.original_label[:20]})", fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncols=3)
    return fig
