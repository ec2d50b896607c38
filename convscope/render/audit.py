"""Pictures of a shortcut audit: the worst images with map and region, shares per class, swap examples."""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

import numpy as np

from .core import normalize, overlay

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..metrics.audit import Audit

__all__ = ["audit_figure", "region_outline"]


def region_outline(picture: np.ndarray, region: np.ndarray, color: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """``picture`` (h, w, 3) uint8 with the border pixels of the bool ``region`` (h, w) drawn in ``color``."""
    inside = region.astype(bool)
    padded = np.pad(inside, 1, mode="edge")
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    out = picture.copy()
    out[inside & ~interior] = color
    return out


def audit_figure(audit: Audit, k: int = 8) -> Figure:
    """Three rows: the ``k`` worst images (the map over the picture, the object's outline in white,
    titled with prediction, share and area), per-class mean share against a uniform map's, and up to ``k``
    background-swap composites titled with what the model predicted."""
    from matplotlib.figure import Figure

    worst = [i for i in audit.worst(k) if i in audit.examples]
    swaps = [] if audit.swap is None else audit.swap.examples[:k]
    ncols = max(len(worst), len(swaps), 4)
    nrows = 2 + (1 if swaps else 0)
    fig = Figure(figsize=(1.7 * ncols, 2.1 * (nrows - 1) + 1.5 + 0.7), layout="constrained")
    grid = fig.add_gridspec(nrows, ncols, height_ratios=[2.1, 1.5] + ([2.1] if swaps else []))
    for col, i in enumerate(worst):
        ax = fig.add_subplot(grid[0, col])
        picture, heat_map, region = audit.examples[i]
        heat = overlay(picture, normalize(heat_map, "minmax"), alpha=0.5)
        ax.imshow(region_outline(heat, region))
        truth = f"{audit._name(int(audit.label[i]))} → " if audit.label[i] >= 0 else ""
        flagged = bool(audit.is_flagged[i])
        ax.set_title(f"{truth}{audit._name(int(audit.predicted[i]))}\nshare {audit.share[i]:.0%} of area {audit.area[i]:.0%}"
                     f"{' FLAG' if flagged else ''}", fontsize=7, color="#b00020" if flagged else "black")
        ax.set_axis_off()
    bars = fig.add_subplot(grid[1, :])
    table = audit.per_class()
    names = list(table)
    positions = np.arange(len(names))
    bars.bar(positions - 0.2, [table[n]["share"] for n in names], 0.4, label=f"share of the {audit.method} map on the object",
             color="#4a78c2")
    bars.bar(positions + 0.2, [table[n]["area"] for n in names], 0.4, label="a uniform map (the object's area)", color="#bbbbbb")
    bars.set_xticks(positions, [f"{n}: {table[n]['flagged']:.0%} flagged, concentration {table[n]['concentration']:.2f}"
                                for n in names], fontsize=8)
    bars.set_ylim(0, 1)
    bars.set_ylabel("share", fontsize=8)
    bars.legend(fontsize=7, loc="upper right")
    for col, (picture, obj, back, guess) in enumerate(swaps):
        ax = fig.add_subplot(grid[2, col])
        ax.imshow(picture)
        follows = "object" if guess == obj else "background" if guess == back else "neither"
        ax.set_title(f"{audit._name(obj)} on {audit._name(back)}'s\nbackground → {audit._name(guess)}", fontsize=7,
                     color="#b00020" if follows == "background" else "black")
        ax.set_axis_off()
    fig.suptitle(textwrap.fill(audit.verdict, 12 * ncols + 40), fontsize=8)
    return fig

