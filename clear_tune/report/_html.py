"""Assemble one self-contained HTML page: a header, the tables and the figures, Plotly's JS inlined once.

Nothing is loaded from the network: plotly.js is embedded in a single ``<script>`` in ``<head>`` and every
figure div is written with ``include_plotlyjs=False``. Each figure sits in ``<div class="figure">`` so a
test can check that every one of them rendered.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from datetime import datetime, timezone

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from clear_tune.aggregate import Table

WIDE_FIGURES = {"parallel-coordinates", "learning-curves"}
# Plotly sizes a plot when its script runs, before later grid items exist; resize once layout is final.
_RESIZE = (
    "<script>window.addEventListener('load',function(){document.querySelectorAll('.plotly-graph-div')"
    ".forEach(function(d){Plotly.Plots.resize(d);});});</script>"
)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2630}
main{max-width:1280px;margin:0 auto;padding:18px 22px 60px}
h1{font-size:1.5rem;margin:.2rem 0 .6rem}
h2{font-size:1.15rem;margin:2rem 0 .5rem;border-bottom:1px solid #d5d9de;padding-bottom:.25rem}
h3{font-size:1rem;margin:1.2rem 0 .3rem}
.header{background:#fff;border:1px solid #d5d9de;border-radius:8px;padding:12px 16px}
.header dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0;font-size:.92rem}
.header dt{font-weight:600;color:#4a5561}.header dd{margin:0}
.warn{background:#fff4e0;border:1px solid #e9b44c;border-radius:6px;padding:8px 12px;margin:10px 0;font-size:.92rem}
.info{background:#e8f1fb;border:1px solid #9cc0e6;border-radius:6px;padding:8px 12px;margin:10px 0;font-size:.92rem}
.tablewrap{overflow-x:auto;background:#fff;border:1px solid #d5d9de;border-radius:6px}
table.tbl{border-collapse:collapse;font-size:.82rem;width:100%}
table.tbl th,table.tbl td{padding:4px 8px;border-bottom:1px solid #eceff2;text-align:left;white-space:nowrap}
table.tbl th{background:#eef1f4;position:sticky;top:0}
table.tbl tr:hover td{background:#f3f8ff}
.note{font-size:.8rem;color:#5a6570;margin:.3rem 0 0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:14px}
.figure.wide{grid-column:1/-1}
.figure{background:#fff;border:1px solid #d5d9de;border-radius:6px;padding:4px;min-width:0}
nav{font-size:.85rem;margin:.4rem 0} nav a{margin-right:12px;color:#1f5f99}
"""


def render_page(
    *,
    title: str,
    header: list[tuple[str, str]],
    warnings: list[str],
    notices: list[str],
    tables: Iterable[Table],
    figures: list[tuple[str, str, go.Figure]],
) -> str:
    """The whole page. ``figures`` are ``(section, name, figure)``; sections appear in first-seen order."""
    head_rows = "".join(f"<dt>{html.escape(k)}</dt><dd>{v}</dd>" for k, v in header)
    banners = "".join(f'<div class="warn">{html.escape(w)}</div>' for w in warnings)
    banners += "".join(f'<div class="info">{html.escape(n)}</div>' for n in notices)
    table_html = "".join(_table(t) for t in tables)
    sections: dict[str, list[str]] = {}
    for section, name, figure in figures:
        sections.setdefault(section, []).append(_figure(name, figure))
    figure_html = "".join(
        f'<h2 id="{_anchor(s)}">{html.escape(s)}</h2><div class="grid">{"".join(divs)}</div>'
        for s, divs in sections.items()
    )
    nav = "".join(f'<a href="#{_anchor(s)}">{html.escape(s)}</a>' for s in ["Tables", *sections])
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head>\n<body><main>'
        f'<h1>{html.escape(title)}</h1><div class="header"><dl>{head_rows}</dl></div>{banners}'
        f'<nav>{nav}</nav><h2 id="tables">Tables</h2>{table_html}{figure_html}'
        f'<p class="note">Generated {generated} by clear_tune.report.</p></main>{_RESIZE}</body></html>\n'
    )


def _emphasis(body: str) -> str:
    """The escaped emphasis markers of a table cell (``**best**``, ``<u>second</u>``) as HTML."""
    body = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", body)
    return body.replace("&lt;u&gt;", "<u>").replace("&lt;/u&gt;", "</u>")


def _table(table: Table) -> str:
    body = _emphasis(
        table.display.to_html(index=False, classes="tbl", border=0, na_rep="—", escape=True)
        if not table.display.empty
        else '<p class="note">No rows yet.</p>'
    )
    return (
        f'<h3 id="table-{table.name}">{html.escape(table.title)}</h3><div class="tablewrap">{body}</div>'
        f'<p class="note">{html.escape(table.note)}</p>'
    )


def _figure(name: str, figure: go.Figure) -> str:
    div = pio.to_html(
        figure,
        include_plotlyjs=False,
        full_html=False,
        div_id=f"fig-{_anchor(name)}",
        config={"displaylogo": False, "responsive": True},
        default_height=f"{figure.layout.height or 400}px",
    )
    wide = " wide" if name in WIDE_FIGURES else ""
    return f'<div class="figure{wide}" data-figure="{html.escape(name)}">{div}</div>'


def _anchor(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def compact_json(value: object) -> str:
    """A short, escaped one-line rendering of a metadata value for the header."""
    if isinstance(value, (str, int, float)):
        return html.escape(str(value))
    return html.escape(json.dumps(value, sort_keys=True, default=str))
