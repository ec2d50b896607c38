"""Pictures of a robustness sweep (kind "robustness"): a grid of perturbed pictures with their maps, and
probability curves."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .scale import Scale, blend, colorbar, relative, relative_scale, scale_of

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..metrics.robustness import Robustness

__all__ = ["SCALES", "VIEWS", "robustness_curves", "robustness_figure", "sweep_figure"]

FLIP_COLOR = "#c8102e"
TIE_COLOR = "#d08a00"  # a swap between the two classes of the original's near-tie: amber, not red
SCALES = ("each", "original")
VIEWS = ("grid", "curves")


def _scale(sweep: Robustness, scale: str) -> tuple[Scale, bool]:
    """The grid's one colour scale and whether the maps are signed: "each" divides every map by its own largest
    |value| (a relative scale); "original" keeps raw values on the original map's scale (so weaker evidence
    looks weaker)."""
    original = np.nan_to_num(sweep.original.map)
    signed = bool(original.size and original.min() < 0)
    if scale == "each":
        return relative_scale(signed), signed
    return scale_of(original, signed=signed, units=f"{sweep.method} value", scope="the original map's scale"), signed


def _shown(values: np.ndarray, scale: str, signed: bool) -> np.ndarray:
    return relative(values, signed) if scale == "each" else np.nan_to_num(values)


def _frame(ax: Axes, color: str, width: float) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_color(color)
        spine.set_linewidth(width)


def robustness_figure(sweep: Robustness, *, alpha: float = 0.65, scale: str = "each", panel_size: float = 1.9,
                      peaks: bool = True) -> Figure:
    """Rows = perturbations, columns = the original and each strength (mildest to strongest as given):
    the perturbed picture with the map for the original class over it, titled with the top-1, p(original
    class) and the rank correlation ρ with the original map. A changed top-1 is titled and framed in red.

    scale: "each" (every map min-max on its own: where the evidence is) or "original" (divided by the
           original map's maximum: how strong it still is).
    alpha: the map's opacity where it is highest (it fades with the value, so the perturbed picture shows).
    peaks: mark each map's maximum with a white ``+``.
    """
    from matplotlib.figure import Figure

    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    groups = sweep.by_perturbation()
    index = {id(row): i for i, row in enumerate(sweep.rows)}
    ncols = 1 + max((len(rows) for rows in groups.values()), default=0)
    nrows = max(1, len(groups))
    fig = Figure(figsize=(panel_size * ncols, (panel_size + 0.42) * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    colours, signed = _scale(sweep, scale)
    original = blend(sweep.original.picture, _shown(sweep.original.map, scale, signed), colours, alpha=alpha)
    for r, (name, rows) in enumerate(groups.items()):
        ax = axes[r, 0]
        ax.imshow(original)
        if peaks and sweep.original.peak is not None:
            ax.plot(sweep.original.peak[1], sweep.original.peak[0], "+", color="white", ms=7, mew=1.5)
        ax.set_title(f"original\n{sweep.original.label[:18]} {sweep.original.probability:.0%}", fontsize=7)
        ax.set_ylabel(name, fontsize=9)
        _frame(ax, "black", 1.0)
        for c in range(1, ncols):
            axes[r, c].set_axis_off()
        for c, row in enumerate(rows, start=1):
            i = index[id(row)]
            ax = axes[r, c]
            ax.set_axis_on()
            ax.imshow(blend(sweep.pictures[i], _shown(sweep.maps[i], scale, signed), colours, alpha=alpha))
            if peaks and row.peak is not None:
                ax.plot(row.peak[1], row.peak[0], "+", color="white", ms=7, mew=1.5)
            color = TIE_COLOR if row.tie_swap else FLIP_COLOR if row.flipped else "black"
            rho = "—" if math.isnan(row.rank_correlation) else f"{row.rank_correlation:.2f}"
            ax.set_title(f"{row.strength:g}: {row.label[:16]}\np(orig) {row.original_probability:.0%} · ρ {rho}",
                         fontsize=7, color=color)
            _frame(ax, color, 1.5 if row.tie_swap else 2.5 if row.flipped else 0.5)
    colorbar(fig, list(axes.flat), colours, fontsize=7, fraction=0.02, shrink=0.6)
    how = "each map scaled on its own" if scale == "each" else "maps on the original map's scale"
    changed = "red: the top-1 changed; amber: it swapped within the near-tie" if sweep.original.tied else "red: the top-1 changed"
    fig.suptitle(f"robustness of '{sweep.original.label}': {sweep.method} for the original class ({how}; "
                 f"{changed}; +: the map's peak)", fontsize=9)
    return fig


def robustness_curves(sweep: Robustness, *, ncols: int = 4, panel_size: tuple[float, float] = (2.2, 1.7)) -> Figure:
    """Small multiples, one per perturbation: p(original class) against the strength in its own unit,
    starting from the unperturbed picture where the perturbation has an identity strength (grey dot);
    the dashed line is the original probability, a red ``x`` marks a changed top-1."""
    from matplotlib.figure import Figure

    groups = sweep.by_perturbation()
    ncols = max(1, min(ncols, len(groups)))
    nrows = max(1, -(-len(groups) // ncols))
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    for ax in axes.flat[len(groups):]:
        ax.set_axis_off()
    for ax, (name, rows) in zip(axes.flat, groups.items()):
        perturbation = sweep.perturbations.get(name)
        points = sorted((row.strength, row.original_probability, row.flipped and not row.tie_swap, row.tie_swap) for row in rows)
        identity = perturbation.identity if perturbation is not None else None
        if identity is not None:
            points = sorted(points + [(identity, sweep.original.probability, False, False)])
            ax.plot([identity], [sweep.original.probability], "o", color="#777777", ms=5, zorder=3)
        strengths = [p[0] for p in points]
        probabilities = [p[1] for p in points]
        ax.plot(strengths, probabilities, "-o", color="#1f4e79", ms=3.5, lw=1.5)
        flips = [(p[0], p[1]) for p in points if p[2]]
        if flips:
            ax.plot(*zip(*flips), "x", color=FLIP_COLOR, ms=7, mew=2, zorder=4)
        swaps = [(p[0], p[1]) for p in points if p[3]]
        if swaps:
            ax.plot(*zip(*swaps), "o", color=TIE_COLOR, ms=6, mfc="none", mew=1.6, zorder=4)
        ax.axhline(sweep.original.probability, color="#777777", lw=0.8, ls="--")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel(perturbation.unit if perturbation is not None else "strength", fontsize=7)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"p({sweep.original.label[:18]})", fontsize=7)
    swapped = "; amber o: swapped within the near-tie" if sweep.original.tied else ""
    fig.suptitle(f"p('{sweep.original.label}') against strength (grey: unperturbed; dashed: its p; red x: the top-1 changed"
                 f"{swapped})", fontsize=8)
    return fig


def sweep_figure(sweep: Robustness, *, view: str = "grid", alpha: float = 0.65, scale: str = "each",
                 peaks: bool = True) -> Figure:
    """The sweep's figure: ``view="grid"`` (:func:`robustness_figure` with ``alpha``, ``scale``, ``peaks``; the
    default) or ``"curves"`` (:func:`robustness_curves`: p(original class) against strength)."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
    if view == "curves":
        return robustness_curves(sweep)
    return robustness_figure(sweep, alpha=alpha, scale=scale, peaks=peaks)


def _caption(sweep: Robustness) -> str:
    worst = sweep.worst(1)
    costliest = f"; the costliest: {worst[0].perturbation} {worst[0].strength:g} (p = {worst[0].original_probability:.0%})" \
        if worst else ""
    return f"robustness of '{sweep.original.label}' (p = {sweep.original.probability:.0%}): {sweep.flip_summary()}{costliest}"


def _verdict(sweep: Robustness) -> str:
    """What to conclude, in words: for a near-tie, that swaps between the tied classes are no loss of robustness."""
    o, other = sweep.original, sweep.original.tied_with
    if other is None:
        return ""
    return (f"The model could not decide on the original picture: {o.label} {o.probability:.0%} against {other[1]} "
            f"{other[2]:.0%}. {len(sweep.tie_swaps)} of the {len(sweep.flips)} changes of the top-1 only swap these two "
            f"(amber, ≈ in the table) and say little about robustness; {len(sweep.real_flips)} went to another class (red, *).")


def _html(sweep: Robustness, *, alpha: float = 0.65, scale: str = "each", peaks: bool = True) -> str:
    from .trust import result_block

    tied = sweep.original.tied
    columns = ["perturbation", "strength", "top-1 (* changed, ≈ swapped within the tie)" if tied else "top-1 (* changed)",
               "p(top-1)", "p(original)", "rank ρ", "peak moved"]
    rows = [[r.perturbation, r.strength, r.label + (" ≈" if r.tie_swap else " *" if r.flipped else ""), f"{r.probability:.1%}",
             f"{r.original_probability:.1%}", round(r.rank_correlation, 2),
             "—" if math.isnan(r.peak_shift_fraction) else f"{r.peak_shift_fraction:.0%}"] for r in sweep.rows]
    figures = [(robustness_curves(sweep), "probability against strength", False),
               (robustness_figure(sweep, alpha=alpha, scale=scale, peaks=peaks), "robustness grid", True)]
    notes = "".join(f"; note: {n}" for n in sweep.notes)
    return result_block(sweep, figures, caption=_caption(sweep) + notes, text=sweep.table(), columns=columns, rows=rows,
                        verdict=_verdict(sweep))


def _register() -> None:
    from .dispatch import drawer

    drawer("robustness", figure=sweep_figure, caption=_caption, text=lambda sweep: sweep.table(), html=_html)


_register()
