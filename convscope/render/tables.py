"""Tables (kind "table": ``cs.summary``, predictions, rankings as text): text on the command line, an HTML
table in reports and notebooks, a monospace figure when a picture is asked for."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FOLD_ROWS", "table_html"]

FOLD_ROWS = 40  # longer tables fold into <details> in reports and notebooks


def table_html(table: Any) -> str:
    """``<table>`` from a table's columns and rows (its text in ``<pre>`` when it has none)."""
    title = f"<caption>{html.escape(table.title)}</caption>" if getattr(table, "title", "") else ""
    columns, rows = getattr(table, "columns", ()), getattr(table, "rows", ())
    if not columns:
        return f'<div class="convscope table">{title}<pre>{html.escape(str(table))}</pre></div>'
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in rows)
    table_html = f'<table class="convscope table">{title}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    if len(rows) > FOLD_ROWS:  # a long table (every layer of a network) folds: its size is in the summary line
        what = html.escape(getattr(table, "title", "") or "table")
        return f'<details class="convscope table"><summary>{what}: {len(rows):,} rows</summary>{table_html}</details>'
    return table_html


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def table_figure(table: Any, **style: Any) -> Figure:
    """The table's text in a monospace figure sized to it."""
    from matplotlib.figure import Figure

    lines = str(table).splitlines() or [""]
    width = max(len(line) for line in lines)
    fig = Figure(figsize=(max(2.0, 0.075 * width + 0.4), max(0.6, 0.17 * len(lines) + 0.3)))
    fig.text(0.02, 0.98, "\n".join(lines), family="monospace", fontsize=8, va="top", ha="left")
    return fig


def _register() -> None:
    from .dispatch import drawer

    drawer("table", figure=table_figure, html=lambda table, **style: table_html(table),
           caption=lambda table: getattr(table, "title", "") or "table", text=str, textual=True)


_register()
