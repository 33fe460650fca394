"""The paper's Table 2 layout: models as rows, datasets × metrics as columns, best bold, second underlined, and the
"Improv." row of CLEAR over the best baseline, starred where the corrected test over users holds.

Each baseline row is the backbone's best config WITHOUT projection (its preset grid, chosen by validation), the
CLEAR row the ``clear`` backbone's best config; cells are test means over seeds at each trial's best-valid epoch.
Emphasis is written as ``**x**`` (best) and ``<u>x</u>`` (second) in the display text: Markdown shows it as is, the
LaTeX and HTML writers turn it into ``\\textbf``/``\\underline`` and ``<b>``/``<u>``.

Example:
    >>> from clear_tune.aggregate import config_summary, trials_frame
    >>> records = [{"trial_id": f"{b}", "status": "completed", "config": {"backbone": b, "seed": 0,
    ...             "projection": {"mode": "off" if b != "clear" else "fixed"}},
    ...             "valid": {"recall@20": v}, "test": {"recall@20": v}} for b, v in (("vbpr", 0.1), ("clear", 0.2))]
    >>> frame = trials_frame(records)
    >>> paper_table(frame, config_summary(frame)).display["synthetic R@20"].tolist()
    ['<u>0.1000</u>', '**0.2000**', '+100.00%']
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from clear_tune.aggregate._select import best_configs
from clear_tune.aggregate._significance import CORRECTION_NAMES, UserTests, correct
from clear_tune.config import DEFAULT_SELECT_METRIC
from clear_tune.metrics import short_name

METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
# the paper's row order (Table 2); backbones it does not list follow, then CLEAR last
PAPER_ORDER = (
    "bpr",
    "lightgcn",
    "layergcn",
    "vbpr",
    "mmgcn",
    "grcn",
    "dualgnn",
    "lattice",
    "slmrec",
    "bm3",
    "mmssl",
    "freedom",
    "dragon",
    "smore",
    "mgcn",
    "lgmrec",
    "mentor",
)
CLEAR = "clear"


def paper_table(
    frame: pd.DataFrame,
    summary: pd.DataFrame,
    *,
    select_metric: str = DEFAULT_SELECT_METRIC,
    users: UserTests | None = None,
):
    from clear_tune.aggregate._tables import Table

    chooser = f"valid.{select_metric}"
    if summary.empty or chooser + ".mean" not in summary:
        return Table(
            "paper",
            "Overall comparison (paper Table 2 layout)",
            "no completed trials yet",
            pd.DataFrame(),
            pd.DataFrame(),
        )
    active = summary["projection_active"].astype(bool)
    baselines = best_configs(summary, where=~active & (summary["backbone"] != CLEAR), metric=chooser)
    clear = best_configs(summary, where=summary["backbone"] == CLEAR, metric=chooser)
    chosen = pd.concat([baselines, clear], ignore_index=True)
    datasets = sorted(chosen["dataset"].unique())
    names = sorted(
        chosen["backbone"].unique(),
        key=lambda b: (b == CLEAR, PAPER_ORDER.index(b) if b in PAPER_ORDER else len(PAPER_ORDER), b),
    )
    columns = [(d, m) for d in datasets for m in METRICS]
    values = pd.DataFrame(index=names, columns=[f"{d} {short_name(m)}" for d, m in columns], dtype=float)
    keys: dict[tuple[str, str], str] = {}
    for _, row in chosen.iterrows():
        keys[(row["dataset"], row["backbone"])] = row["config_key"]
        for d, m in columns:
            if d == row["dataset"]:
                values.loc[row["backbone"], f"{d} {short_name(m)}"] = row.get(f"test.{m}.mean", math.nan)
    display = values.map(lambda v: "—" if not np.isfinite(v) else f"{v:.4f}").astype(object)
    for column in values.columns:  # best bold, second underlined
        order = values[column].dropna().sort_values(ascending=False)
        if len(order) > 0:
            display.loc[order.index[0], column] = f"**{display.loc[order.index[0], column]}**"
        if len(order) > 1:
            display.loc[order.index[1], column] = f"<u>{display.loc[order.index[1], column]}</u>"
    improvement = {}
    comparisons = []
    if CLEAR in values.index and len(values.index) > 1:
        for d, m in columns:
            column = f"{d} {short_name(m)}"
            others = values.loc[[b for b in values.index if b != CLEAR], column].dropna()
            if others.empty or not np.isfinite(values.loc[CLEAR, column]):
                continue
            best = others.idxmax()
            improvement[column] = 100.0 * (values.loc[CLEAR, column] / others.max() - 1.0)
            tests = None if users is None else UserTests(users.frame, users.load, metric=m, correction=users.correction)
            comparisons.append(
                (column, None if tests is None else tests.compare(keys.get((d, best)), keys.get((d, CLEAR))))
            )
    p_corrected = correct(
        [math.nan if c is None else c.t_pvalue for _, c in comparisons],
        method=users.correction if users is not None else "holm",
    )
    starred = {column: bool(np.isfinite(p) and p < 0.05) for (column, _), p in zip(comparisons, p_corrected)}
    data = values.reset_index(names="model")
    display = display.reset_index(names="model")
    if improvement:
        data.loc[len(data)] = {"model": "improvement %", **improvement}
        display.loc[len(display)] = {
            "model": "Improv.",
            **{
                c: f"{improvement[c]:+.2f}%" + ("*" if starred.get(c) else "") if c in improvement else ""
                for c in values.columns
            },
        }
    name = CORRECTION_NAMES[users.correction] if users is not None else "Holm"
    note = (
        f"Rows: each baseline's best config without projection and CLEAR's best config, chosen by mean valid "
        f"{short_name(select_metric)} over seeds; cells: test means over seeds at each trial's best-valid epoch; "
        "best bold, second underlined. Improv.: CLEAR over the best baseline of each column; * = the paired t-test "
        f"over users on that metric (per-user values averaged over shared seeds) holds at 0.05 after {name}'s "
        "correction over the columns."
    )
    return Table("paper", "Overall comparison (paper Table 2 layout)", note, data, display.fillna(""))
