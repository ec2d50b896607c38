"""Pictures of regions: a shortcut audit (kind "audit": the worst images with map and region, shares per class,
swap examples) and the regions of interest a map points at (kind "regions": each masked picture and its crop).

Each picture exists as a panel drawn into a given figure area (``draw_*``) and as a figure of its own
(``worst_figure``, ``share_figure``, ``swap_figure``); ``audit_figure`` stacks the three.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from .scale import blend, colorbar, relative, relative_scale

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..metrics.audit import Audit, StrategyAudit
    from ..roi import RegionOfInterest, Regions

__all__ = [
    "audit_figure",
    "draw_shares",
    "draw_swaps",
    "draw_worst",
    "region_figure",
    "region_outline",
    "regions_figure",
    "share_figure",
    "strategy_audit_figure",
    "swap_figure",
    "worst_figure",
]

FLAG_COLOR = "#b00020"


def region_outline(picture: np.ndarray, region: np.ndarray, color: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """``picture`` (h, w, 3) uint8 with the border pixels of the bool ``region`` (h, w) drawn in ``color``."""
    inside = region.astype(bool)
    padded = np.pad(inside, 1, mode="edge")
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    out = picture.copy()
    out[inside & ~interior] = color
    return out


def _worst_kept(audit: Audit, k: int) -> list[int]:
    """The ``k`` lowest-concentration images whose pictures the audit kept."""
    return [int(i) for i in audit.worst(len(audit)) if int(i) in audit.examples][:k]


def draw_worst(fig: Any, cells: list[Any], audit: Audit) -> None:
    """One image per cell (subplot specs), worst first: the map (scaled by its maximum, with one colour bar;
    the opacity follows the value, so zero leaves the picture as it is) over the picture, the object's outline
    in white, titled with the true and
    predicted class, the share of the map on the object and the share a uniform map would get."""
    drawn = []
    for cell, i in zip(cells, _worst_kept(audit, len(cells))):
        ax = fig.add_subplot(cell)
        drawn.append(ax)
        picture, heat_map, region = audit.examples[i]
        heat = blend(picture, relative(heat_map, False), relative_scale(False))
        ax.imshow(region_outline(heat, region))
        truth = f"{audit._name(int(audit.label[i]))} → " if audit.label[i] >= 0 else ""
        flagged = bool(audit.is_flagged[i])
        ax.set_title(f"{truth}{audit._name(int(audit.predicted[i]))}\nshare {audit.share[i]:.0%} of area {audit.area[i]:.0%}"
                     f"{' FLAG' if flagged else ''}", fontsize=7, color=FLAG_COLOR if flagged else "black")
        ax.set_axis_off()
    if drawn:
        colorbar(fig, drawn, relative_scale(False), fontsize=6, fraction=0.02)


def draw_shares(ax: Axes, audit: Audit) -> None:
    """Per class: the mean share of the map on the object next to a uniform map's (the object's area)."""
    table = audit.per_class()
    names = list(table)
    positions = np.arange(len(names))
    ax.bar(positions - 0.2, [table[n]["share"] for n in names], 0.4, label=f"share of the {audit.method} map on the object",
           color="#4a78c2")
    ax.bar(positions + 0.2, [table[n]["area"] for n in names], 0.4, label="a uniform map (the object's area)", color="#bbbbbb")
    ax.set_xticks(positions, [f"{n}: {table[n]['flagged']:.0%} flagged, concentration {table[n]['concentration']:.2f}"
                              for n in names], fontsize=8)
    for label, name in zip(ax.get_xticklabels(), names):
        label.set_color(FLAG_COLOR if table[name]["flagged"] > 0.5 else "black")
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylim(0, 1)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1], ["0", "25%", "50%", "75%", "100%"], fontsize=7)  # fixed: a stable layout
    ax.set_ylabel("share", fontsize=8)
    ax.legend(fontsize=7, loc="upper right")


def _same_composites(audits: Mapping[str, Audit]) -> list[tuple[np.ndarray, int, int, int]]:
    """The swap examples shared by every audit (the same data, regions and seed give the same composites)."""
    runs = [a.swap.examples if a.swap is not None else [] for a in audits.values()]
    if not runs[0]:
        raise InputError("the audit has no swap examples; run it with swap_backgrounds=True")
    for name, run in zip(list(audits)[1:], runs[1:]):
        if len(run) != len(runs[0]) or any(not np.array_equal(a[0], b[0]) for a, b in zip(run, runs[0])):
            raise InputError(f"audit {name!r} pasted other composites; audit the same data and regions with the same seed")
    return runs[0]


def draw_swaps(fig: Any, cells: list[Any], audits: Audit | Mapping[str, Audit]) -> None:
    """One background-swap composite per cell, titled with what was pasted where, and under it what each
    model predicted (red when the prediction follows the background, green when it follows the object)."""
    runs = audits if isinstance(audits, Mapping) else {"": audits}
    composites = _same_composites(runs)
    first = next(iter(runs.values()))
    guesses = {name: [e[3] for e in (a.swap.examples if a.swap is not None else [])] for name, a in runs.items()}
    for col, (cell, (picture, obj, back, _)) in enumerate(zip(cells, composites)):
        ax = fig.add_subplot(cell)
        ax.imshow(picture)
        ax.set_title(f"{first._name(obj)} pasted on\n{first._name(back)}'s background", fontsize=7)
        for line, (name, guess) in enumerate(guesses.items()):
            color = FLAG_COLOR if guess[col] == back else "#1b7a2f" if guess[col] == obj else "black"
            ax.text(0.5, -0.04 - 0.13 * line, f"{name + ' ' if name else ''}→ {first._name(guess[col])}", color=color,
                    fontsize=7, ha="center", va="top", transform=ax.transAxes)
        ax.set_axis_off()


def _grid(rows: int, ncols: int, heights: list[float], width: float = 1.7) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, sum(heights) + 0.7), layout="constrained")
    return fig, fig.add_gridspec(rows, ncols, height_ratios=heights)


def worst_figure(audit: Audit, k: int = 8) -> Figure:
    """The ``k`` lowest-concentration images (at most those the audit kept) with map and outline."""
    ncols = max(1, min(k, len(_worst_kept(audit, k))))
    fig, grid = _grid(1, ncols, [2.1])
    draw_worst(fig, [grid[0, c] for c in range(ncols)], audit)
    fig.suptitle(f"{audit.method}: the {ncols} images with the least of the map on the object", fontsize=8)
    return fig


def share_figure(audit: Audit) -> Figure:
    """Per-class bar chart: the share of the map on the object against a uniform map's."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 2.2 * len(audit.per_class())), 2.6), layout="constrained")
    draw_shares(fig.add_subplot(), audit)
    return fig


def swap_figure(audits: Audit | Mapping[str, Audit], k: int = 8) -> Figure:
    """Up to ``k`` background-swap composites titled with each audited model's prediction: one audit, or
    several by name (``{"biased": a, "balanced": b}``) run on the same data and regions with the same seed."""
    runs = audits if isinstance(audits, Mapping) else {"": audits}
    composites = _same_composites(runs)[:k]
    fig, grid = _grid(1, len(composites), [1.7 + 0.2 * len(runs)])
    draw_swaps(fig, [grid[0, c] for c in range(len(composites))], runs)
    rates = "; ".join(f"{name or 'the model'} follows the background in {a.swap.follows_background:.0%} of "
                      f"{len(a.swap)} composites" for name, a in runs.items() if a.swap is not None)
    fig.suptitle(f"objects pasted onto another class's background: {rates}", fontsize=8)
    return fig


def audit_figure(audit: Audit, k: int = 8) -> Figure:
    """Three rows: the ``k`` worst images (the map over the picture, the object's outline in white,
    titled with prediction, share and area), per-class mean share against a uniform map's, and up to ``k``
    background-swap composites titled with what the model predicted."""
    worst = _worst_kept(audit, k)
    swaps = [] if audit.swap is None else audit.swap.examples[:k]
    ncols = max(len(worst), len(swaps), 4)
    heights = [2.1, 1.5] + ([2.2] if swaps else [])
    fig, grid = _grid(len(heights), ncols, heights)
    draw_worst(fig, [grid[0, c] for c in range(len(worst))], audit)
    draw_shares(fig.add_subplot(grid[1, :]), audit)
    if swaps:
        draw_swaps(fig, [grid[2, c] for c in range(len(swaps))], audit)
    fig.suptitle(textwrap.fill(audit.verdict, 12 * ncols + 40), fontsize=8)
    return fig


# -- the drawer of kind "audit" ---------------------------------------------------------------------------------
def _audit_figure(audit: Audit, *, k: int = 8) -> Figure:
    return audit_figure(audit, k=k)


def _audit_html(audit: Audit, *, k: int = 8) -> str:
    from .trust import result_block

    columns = ["class", "images", "accuracy", "share", "area", "concentration", "hit", "flagged"]
    rows = [[name, row["images"], f"{row['accuracy']:.1%}", f"{row['share']:.1%}", f"{row['area']:.1%}",
             round(row["concentration"], 2), f"{row['hit']:.1%}", f"{row['flagged']:.1%}"]
            for name, row in audit.per_class().items()]
    return result_block(audit, [(audit_figure(audit, k=k), "audit")], caption=f"verdict: {audit.verdict}",
                        text=audit.table(), columns=columns, rows=rows)


# -- the mask-free audit (kind "strategy_audit") ---------------------------------------------------------------
def strategy_audit_figure(audit: StrategyAudit, *, classes: int = 4) -> Figure:
    """Each clustered class's strategies (its "strategies" picture: mean map per cluster, examples, eigengap), one
    above the other, the classes explained in several ways first; at most ``classes`` of them."""
    import matplotlib.pyplot as plt

    from .dispatch import picture

    order = sorted(audit.classes, key=lambda name: (-audit.classes[name].clusters, name))[:classes]
    pictures = [picture(audit.classes[name]) for name in order]
    dpi = 100
    if not pictures:
        fig, ax = plt.subplots(figsize=(6, 1))
        ax.text(0.5, 0.5, audit.verdict, ha="center", va="center", fontsize=8, wrap=True)
        ax.set_axis_off()
        return fig
    width = max(p.shape[1] for p in pictures)
    gap = np.full((12, width, 3), 255, np.uint8)
    rows = []
    for shown in pictures:
        padded = np.full((shown.shape[0], width, 3), 255, np.uint8)
        padded[:, :shown.shape[1]] = shown[..., :3]
        rows += [padded, gap]
    stacked = np.concatenate(rows[:-1])
    title = textwrap.fill(audit.verdict, max(60, width // 7))
    head = 0.2 + 0.16 * (title.count("\n") + 1)
    fig = plt.figure(figsize=(width / dpi, stacked.shape[0] / dpi + head), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, stacked.shape[0] / (stacked.shape[0] + head * dpi)))
    ax.imshow(stacked)
    ax.set_axis_off()
    fig.suptitle(title, fontsize=8, y=1 - 0.05 * head / (stacked.shape[0] / dpi + head))
    return fig


def _strategy_audit_html(audit: StrategyAudit, **style: Any) -> str:
    from .trust import result_block

    columns = ["class", "pictures", "strategies", "eigengap", "where each strategy's evidence lies"]
    rows = [[name, len(found), found.clusters, round(found.eigengap, 3),
             "; ".join(f"{share:.0%} {found.where(c)}" for c, share in enumerate(found.shares))]
            for name, found in audit.classes.items()]
    return result_block(audit, [(strategy_audit_figure(audit), "strategies")], caption=f"verdict: {audit.verdict}",
                        text=audit.table(), columns=columns, rows=rows)


# -- regions of interest (kind "regions") --------------------------------------------------------------------
def _box_outline(picture: np.ndarray, box: tuple[int, int, int, int], color: tuple[int, int, int] = (255, 230, 0)) -> np.ndarray:
    """``picture`` with the rectangle ``box`` (left, top, right, bottom; right/bottom exclusive) drawn in ``color``."""
    out = picture.copy()
    left, top, right, bottom = box
    out[top:bottom, [left, right - 1]] = color
    out[[top, bottom - 1], left:right] = color
    return out


def _region_title(regions: Regions, i: int) -> str:
    region = regions[i]
    if region is None:
        return f"{regions.names[i]}: no region"
    label = f" '{region.label}'" if region.label else ""
    return f"{regions.names[i]}{label}\n{region.coverage:.0%} of the picture"


def regions_figure(regions: Regions, *, panel_size: float = 2.2) -> Figure:
    """One row per region: the picture seen through the mask with its box outlined, and the crop (a note
    where the map was flat)."""
    from matplotlib.figure import Figure

    count = max(1, len(regions))
    fig = Figure(figsize=(2 * panel_size, (panel_size + 0.35) * count + 0.4), layout="constrained")
    axes = fig.subplots(count, 2, squeeze=False)
    for i, (left, right) in enumerate(axes):
        left.set_axis_off()
        right.set_axis_off()
        if i >= len(regions):
            continue
        region = regions[i]
        if region is None:
            left.text(0.5, 0.5, textwrap.fill(regions.notes[i] or "no region", 28), ha="center", va="center", fontsize=7,
                      transform=left.transAxes)
        else:
            left.imshow(_box_outline(region.masked, region.box))
            right.imshow(region.crop)
            right.set_title(f"crop {region.box[2] - region.box[0]}×{region.box[3] - region.box[1]}", fontsize=7)
        left.set_title(_region_title(regions, i), fontsize=7)
    fig.suptitle(f"where the {regions.method} map reaches {regions.threshold:.0%} of its range", fontsize=8)
    return fig


def region_figure(region: RegionOfInterest, *, panel_size: float = 2.6) -> Figure:
    """One region of interest: the picture seen through the mask with its box outlined, and the crop."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2 * panel_size, panel_size + 0.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.imshow(_box_outline(region.masked, region.box))
    left.set_title(_region_words(region), fontsize=7)
    right.imshow(region.crop)
    right.set_title(f"crop {region.box[2] - region.box[0]}×{region.box[3] - region.box[1]}", fontsize=7)
    left.set_axis_off()
    right.set_axis_off()
    return fig


def _region_words(region: RegionOfInterest) -> str:
    label = f"'{region.label}' " if region.label else ""
    return f"{label}region: {region.coverage:.0%} of the picture, box {region.box}"


def _regions_caption(regions: Regions) -> str:
    found = sum(region is not None for region in regions)
    return (f"regions where the {regions.method} map reaches {regions.threshold:.0%} of its range: {found} of "
            f"{len(regions)} found")


def _regions_html(regions: Regions) -> str:
    """One card per region: the picture through the mask and the crop (what the report's section shows)."""
    import html

    from .encode import image_uri, img_tag

    cards = []
    for i, region in enumerate(regions):
        if region is None:
            cards.append(f"<p>{html.escape(regions.names[i])}: {html.escape(regions.notes[i] or 'no region')}</p>")
            continue
        label = f"'{region.label}' " if region.label else ""
        words = f"{regions.names[i]}: {label}region, {region.coverage:.0%} of the picture, box {region.box}"
        masked, crop = region.masked, region.crop
        cards.append(f"<figure>{img_tag(image_uri(masked, photo=True), masked.shape[1], masked.shape[0], words)}"
                     f"{img_tag(image_uri(crop, photo=True), crop.shape[1], crop.shape[0], words + ' (crop)')}"
                     f"<figcaption>{html.escape(words)}</figcaption></figure>")
    return (f'<div class="convscope regions cards"><p class="note">{html.escape(_regions_caption(regions))}</p>'
            f'{"".join(cards)}</div>')


def _register() -> None:
    from .dispatch import drawer

    drawer("region", figure=region_figure, picture=lambda region: _box_outline(region.masked, region.box),
           caption=_region_words, text=_region_words)
    drawer("regions", figure=regions_figure, caption=_regions_caption, text=lambda regions: regions.table(),
           html=_regions_html)
    drawer("audit", figure=_audit_figure, caption=lambda audit: f"verdict: {audit.verdict}", text=lambda audit: audit.table(),
           html=_audit_html)
    drawer("strategy_audit", figure=strategy_audit_figure, caption=lambda audit: f"verdict: {audit.verdict}",
           text=lambda audit: audit.table(), html=_strategy_audit_html)


_register()
