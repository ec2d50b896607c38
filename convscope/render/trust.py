"""Pictures of the trust metrics: deletion/insertion curves (kind "curve"), method rankings ("ranking") and
sanity-check cascades ("sanity"); and the HTML block every trust and workflow result shares in reports:
its figures, its caption and its table."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .scale import colorbar, relative, relative_scale

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..metrics.faithfulness import Curve, Ranking
    from ..metrics.sanity import SanityReport

__all__ = ["curve_figure", "ranking_figure", "result_block", "sanity_figure"]


# -- deletion / insertion -----------------------------------------------------------------------------------
def curve_figure(curves: Curve | Sequence[Curve]) -> Figure:
    """One panel per curve: every image's score against the fraction of pixels changed, AUC in the legend."""
    from matplotlib.figure import Figure

    curves = [curves] if not isinstance(curves, Sequence) else list(curves)
    fig = Figure(figsize=(4.2 * len(curves), 3.2), layout="constrained")
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, curve in zip(axes, curves):
        fractions = curve.fractions.numpy()
        for i, (scores, auc) in enumerate(zip(curve.scores.numpy(), curve.auc.tolist())):
            ax.plot(fractions, scores, label=f"image {i}: AUC {auc:.3f}")
            ax.fill_between(fractions, scores, alpha=0.12)
        verb = "removed" if curve.metric == "deletion" else "revealed"
        ax.set(xlabel=f"fraction of pixels {verb}", ylabel="probability", xlim=(0, 1), ylim=(0, None),
               title=f"{curve.metric} · {curve.method} (fill {curve.fill})")
        ax.legend(fontsize=7)
    return fig


def ranking_figure(ranking: Ranking) -> Figure:
    """One panel per metric: each method's batch-mean curve, the random baseline dashed."""
    from matplotlib.figure import Figure

    kinds = ranking.metric
    fig = Figure(figsize=(4.6 * len(kinds), 3.4), layout="constrained")
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    for ax, kind in zip(axes, kinds):
        for row in ranking.rows:
            curve = ranking.curves[row.method][kind]
            auc = row.deletion_auc if kind == "deletion" else row.insertion_auc
            ax.plot(curve.fractions.numpy(), curve.scores.mean(0).numpy(), "--" if row.baseline else "-",
                    color="gray" if row.baseline else None, label=f"{row.method} ({auc:.3f})")
        better = "lower" if kind == "deletion" else "higher"
        ax.set(xlabel="fraction of pixels " + ("removed" if kind == "deletion" else "revealed"), ylabel="probability",
               xlim=(0, 1), ylim=(0, None), title=f"{kind} AUC ({better} is better)")
        ax.legend(fontsize=7)
    return fig


# -- the sanity check ----------------------------------------------------------------------------------------
def _short(label: str, width: int = 18) -> str:
    label = re.sub(r"\s+", " ", label)
    return label if len(label) <= width else "…" + label[-(width - 1):]


def sanity_figure(report: SanityReport, index: int = 0, *, columns: int = 8) -> Figure:
    """The original map and the maps after evenly spaced steps (top), similarity per step (bottom), for
    image ``index`` of the batch."""
    from matplotlib.figure import Figure

    total = report.maps.shape[0]
    count = min(columns, total)  # evenly spaced maps, the original and the fully randomized one included
    picks = sorted({round(i * (total - 1) / max(1, count - 1)) for i in range(count)})
    fig = Figure(figsize=(1.7 * len(picks), 1.9 + 2.8), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.9, 2.8])
    axes = top.subplots(1, len(picks), squeeze=False)[0]
    signed = bool((report.maps[0, index] < 0).any())
    colours = relative_scale(signed)
    for ax, k in zip(axes, picks):
        ax.imshow(colours.colours(relative(report.maps[k, index], signed)))
        ax.set_axis_off()
        ax.set_title("original" if k == 0 else f"+ {_short(report.layers[k - 1])}", fontsize=7)
    colorbar(top, list(axes), colours, fontsize=6, fraction=0.03)
    ax = bottom.subplots()
    steps = range(1, len(report.layers) + 1)
    ax.plot(steps, report.rank_correlation[:, index].numpy(), "o-", label="rank correlation |map|")
    if report.rank_correlation_signed is not None:
        ax.plot(steps, report.rank_correlation_signed[:, index].numpy(), "s-", label="rank correlation signed")
    ax.plot(steps, report.ssim[:, index].numpy(), "^-", label="SSIM")
    ax.axhline(report.threshold, color="gray", linestyle="--", linewidth=1, label=f"threshold {report.threshold}")
    ax.set_xticks(list(steps), [_short(n, 20) for n in report.layers], rotation=60, ha="right", fontsize=6)
    lowest = min(float(report.rank_correlation[:, index].min()), float(report.ssim[:, index].min()),
                 float(report.rank_correlation_signed[:, index].min()) if report.rank_correlation_signed is not None else 0.0)
    ax.set(ylim=(min(-0.2, lowest - 0.05), 1.05), ylabel="similarity to original",
           title=f"{report.method}: {'passed' if report.passed else 'FAILED'} (score {float(report.score[index]):.2f}; "
                 f"cascading randomization, output → input)")
    ax.legend(fontsize=7)
    return fig


# -- reports and notebooks ------------------------------------------------------------------------------------
def result_block(obj: Any, figures: Sequence[tuple[Figure, str] | tuple[Figure, str, bool | None]], *, text: str = "",
                 caption: str = "", columns: Sequence[str] = (), rows: Sequence[Sequence[Any]] = (), verdict: str = "") -> str:
    """The HTML of a trust or workflow result: the ``verdict`` first (one line in words: what to conclude), its
    figures inline (each at most the page's width; ``(figure, alt, photo)``: JPEG for figures of photos, PNG for
    charts, None: by the picture — see ``render.encode``), the caption, and its table (cells when ``columns``
    are given, else ``text`` as it prints)."""
    from ..result import Table
    from .encode import figure_img
    from .tables import table_html

    pictures = "".join(figure_img(fig, alt, photo=rest[0] if rest else None) for fig, alt, *rest in figures)
    lead = f'<p class="verdict">{html.escape(verdict)}</p>' if verdict else ""
    words = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    plain = f"<pre>{html.escape(text)}</pre>" if text else ""
    table = table_html(Table(text, columns=columns, rows=rows)) if columns else plain
    return f'<figure class="convscope {html.escape(obj.kind)}">{lead}{pictures}{words}{table}</figure>'


def _ranking_caption(ranking: Ranking) -> str:
    primary = ranking.metric[0]
    trusted = len(ranking.trusted)
    methods = len(ranking.rows) - 1
    return (f"methods ranked by {primary} AUC ({'lower' if primary == 'deletion' else 'higher'} is better); {trusted} of "
            f"{methods} beat the random map on {' and '.join(ranking.metric)} (better by more than {ranking.margin:.0%} of "
            f"its AUC): {ranking.verdict}")


def _against_random(ranking: Ranking, method: str) -> str:
    """A row's standing against the random map in words: 'better on both', 'insertion only', 'no better'."""
    won = ranking.beats_random(method)
    if won and all(won.values()):
        return "better on both" if len(won) > 1 else "better"
    better = [kind for kind, ok in won.items() if ok]
    return f"{better[0]} only" if better else "no better"


def _ranking_html(ranking: Ranking) -> str:
    columns = ["method", *(f"{k} AUC {'↓' if k == 'deletion' else '↑'}" for k in ranking.metric), "against random", "seconds"]
    rows = [[f"{r.method} (baseline)" if r.baseline else r.method,
             *(round(r.deletion_auc if k == "deletion" else r.insertion_auc, 4) for k in ranking.metric),  # type: ignore[arg-type]
             "—" if r.baseline else _against_random(ranking, r.method), round(r.seconds, 2)] for r in ranking.rows]
    primary = ranking.metric[0]
    caption = (f"methods ranked by {primary} AUC ({'lower' if primary == 'deletion' else 'higher'} is better); a method "
               f"beats the random map when its AUC is better by more than {ranking.margin:.0%} of the random map's")
    return result_block(ranking, [(ranking_figure(ranking), "deletion and insertion curves", False)], caption=caption,
                        text=ranking.table(), columns=columns, rows=rows, verdict=ranking.verdict)


def _curve_caption(curve: Curve) -> str:
    better = "lower" if curve.metric == "deletion" else "higher"
    return f"{curve.metric} curve of {curve.method}: mean AUC {curve.mean_auc:.3f} ({better} is better)"


def _sanity_caption(report: SanityReport) -> str:
    scores = ", ".join(f"{v:.2f}" for v in report.score.tolist())
    verdict = "PASSED" if report.passed else "FAILED"
    return (f"sanity check of {report.method} {verdict}: mean rank correlation with the original map over the cascade "
            f"{scores} (passes below {report.threshold:g})")


def _sanity_html(report: SanityReport, index: int | None = None, *, columns: int = 8) -> str:
    """Every image's cascade (or image ``index``'s) and the table of batch means."""
    indices = range(report.maps.shape[1]) if index is None else [index]
    figures = [(sanity_figure(report, i, columns=columns), f"sanity check, image {i}") for i in indices]
    records = report.records()
    header = ["randomized (cumulative)", "rank corr |map|", "rank corr signed", "SSIM"]
    rows = [[r["randomized"], round(r["rank_correlation"], 3),
             "-" if r["rank_correlation_signed"] is None else round(r["rank_correlation_signed"], 3), round(r["ssim"], 3)]
            for r in records]
    return result_block(report, figures, caption=_sanity_caption(report), text=report.table(), columns=header, rows=rows)


def _register() -> None:
    from .dispatch import drawer

    drawer("ranking", figure=ranking_figure, caption=_ranking_caption, text=lambda ranking: ranking.table(),
           html=_ranking_html)
    drawer("curve", figure=curve_figure, caption=_curve_caption, text=lambda curve: curve.table())
    drawer("sanity", figure=sanity_figure, caption=_sanity_caption, text=lambda report: report.table(), html=_sanity_html)


_register()
