"""Write tables as CSV (numbers), Markdown and LaTeX (text) under ``results/<experiment>/tables/``.

Example:
    >>> import tempfile, pandas as pd
    >>> from clear_tune.aggregate import Table, write_tables
    >>> t = Table("demo", "Demo", "a note", pd.DataFrame({"x": [1.0]}), pd.DataFrame({"x": ["1.0 ± 0.1"]}))
    >>> sorted(p.name for p in write_tables([t], tempfile.mkdtemp()))
    ['demo.csv', 'demo.md', 'demo.tex']
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from clear_tune._storage import atomic_file
from clear_tune.aggregate._tables import Table

_LATEX_SPECIAL = re.compile(r"([&%$#_{}])")
_LATEX_SYMBOLS = {
    "±": r"$\pm$",
    "λ": r"$\lambda$",
    "ρ": r"$\rho$",
    "Δ": r"$\Delta$",
    "≤": r"$\le$",
    "—": "--",
    "−": "-",
    "×": r"$\times$",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def write_tables(tables: list[Table], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write ``<name>.csv``, ``<name>.md`` and ``<name>.tex`` for each table; returns the paths written.

    Each file is written to a temporary name and renamed, so a reader (or a crash) never sees half a table.
    """
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for table in tables:
        outputs = {
            f"{table.name}.csv": table.data.to_csv(index=False),
            f"{table.name}.md": to_markdown(table),
            f"{table.name}.tex": to_latex(table),
        }
        for filename, text in outputs.items():
            target = directory / filename
            with atomic_file(target) as out:
                out.write(text.encode("utf-8"))
            written.append(target)
    return written


def to_markdown(table: Table) -> str:
    """``### title``, the table (GitHub pipes), then the note in italics."""
    body = table.display.to_markdown(index=False) if not table.display.empty else "_no rows yet_"
    return f"### {table.title}\n\n{body}\n\n_{table.note}_\n"


def to_latex(table: Table) -> str:
    """A ``table`` environment with booktabs rules; cells are escaped and unicode symbols made math."""
    display = (
        table.display.astype(str).map(lambda cell: emphasis_to_latex(latex_escape(cell)))
        if not table.display.empty
        else pd.DataFrame({"": ["no rows yet"]})
    )
    display.columns = [latex_escape(str(c)) for c in display.columns]
    tabular = display.style.hide(axis="index").to_latex(hrules=True, column_format="l" * len(display.columns))
    return (
        "% requires \\usepackage{booktabs}\n\\begin{table}[ht]\n\\centering\n\\small\n"
        f"\\caption{{{latex_escape(table.title)}}}\n\\label{{tab:{table.name}}}\n{tabular}"
        f"\\par\\footnotesize {latex_escape(table.note)}\n\\end{{table}}\n"
    )


def emphasis_to_latex(text: str) -> str:
    """A table cell's emphasis (``**best**``, ``<u>second</u>``: the paper table's) as ``\\textbf`` /
    ``\\underline``."""
    text = re.sub(r"\*\*(.+?)\*\*", r"\\textbf{\1}", text)
    return re.sub(r"<u>(.+?)</u>", r"\\underline{\1}", text)


def latex_escape(text: str) -> str:
    escaped = _LATEX_SPECIAL.sub(r"\\\1", text.replace("\\", r"\textbackslash{}"))
    for symbol, latex in _LATEX_SYMBOLS.items():
        escaped = escaped.replace(symbol, latex)
    return escaped
