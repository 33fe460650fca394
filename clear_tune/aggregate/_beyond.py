"""The beyond-accuracy table: who the chosen configs recommend (coverage, Gini, popularity bias, novelty).

Per dataset x backbone the best config without projection and the best with CLEAR (chosen by validation, as
everywhere), with their test beyond-accuracy metrics at the largest K (:mod:`clear_tune.exposure`), mean ± std
over seeds. Records from before these metrics existed show "—".

Example:
    >>> from clear_tune.aggregate import config_summary, trials_frame
    >>> frame = trials_frame([{"trial_id": "a", "status": "completed", "config": {"seed": 0},
    ...     "valid": {"recall@20": 0.2}, "test": {"recall@20": 0.1, "coverage@20": 0.4}}])
    >>> beyond_accuracy_table(config_summary(frame)).display.loc[0, "coverage@20"]
    '0.4000 (1 seed)'
"""

from __future__ import annotations

import pandas as pd

from clear_tune.aggregate._select import GROUP, best_configs
from clear_tune.config import DEFAULT_SELECT_METRIC
from clear_tune.exposure import EXPOSURE_METRICS


def beyond_accuracy_table(summary: pd.DataFrame, *, select_metric: str = DEFAULT_SELECT_METRIC):
    from clear_tune.aggregate._tables import Table, _cell, short_name

    chooser = f"valid.{select_metric}"
    ks = sorted({int(c.split("@")[1].split(".")[0]) for c in summary.columns if c.startswith("test.coverage@")})
    k = ks[-1] if ks else 20
    metrics = [f"{m}@{k}" for m in EXPOSURE_METRICS]
    active = (
        summary["projection_active"].astype(bool) if "projection_active" in summary else pd.Series(False, summary.index)
    )
    sides = (
        ("", best_configs(summary, where=~active, metric=chooser)),
        (" + CLEAR", best_configs(summary, where=active, metric=chooser)),
    )
    data_rows, display_rows = [], []
    for dataset, backbone in summary[list(GROUP)].drop_duplicates().sort_values(list(GROUP)).itertuples(index=False):
        for suffix, best in sides:
            hit = best[(best["dataset"] == dataset) & (best["backbone"] == backbone)]
            if hit.empty:
                continue
            row = hit.iloc[0]
            data_rows.append(
                {
                    "dataset": dataset,
                    "model": backbone + suffix,
                    "config_label": row["config_label"],
                    **{f"test.{m}.{s}": row.get(f"test.{m}.{s}") for m in metrics for s in ("mean", "std")},
                }
            )
            display_rows.append(
                {
                    "dataset": dataset,
                    "model": backbone + suffix,
                    "config": row["config_label"],
                    **{m: _cell(row, f"test.{m}") if f"test.{m}.mean" in row else "—" for m in metrics},
                }
            )
    columns = ["dataset", "model", "config_label", *(f"test.{m}.{s}" for m in metrics for s in ("mean", "std"))]
    note = (
        f"Test top-{k} lists of the configs chosen by mean valid {short_name(select_metric)} (best without / with "
        f"projection): coverage = share of items recommended to someone; Gini of the items' recommendation counts; "
        f"ARP = mean train popularity of a user's list; APLT = share of long-tail items (outside the 20% most popular) "
        f"in a list; novelty = mean −log2 of the share of users who interacted with a listed item."
    )
    return Table(
        "beyond_accuracy",
        "Beyond accuracy: coverage, concentration, popularity bias, novelty",
        note,
        pd.DataFrame(data_rows, columns=columns),
        pd.DataFrame(display_rows, columns=["dataset", "model", "config", *metrics]),
    )
