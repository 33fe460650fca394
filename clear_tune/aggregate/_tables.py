"""The five result tables of a CLEAR search (paper Tables 2-4, Figs. 3-4), built from the tidy frame.

Each builder returns a :class:`Table`: ``data`` holds numbers (for CSV, NaN where a cell is missing) and
``display`` the same content as text (``mean ± std`` over seeds, for Markdown, LaTeX and HTML; a missing
cell reads ``pruned``/``failed``/``—``, never 0). Selection is by validation everywhere, on the experiment's
select metric (``select_metric``, recorded in experiment.json; Recall@20 by default), and every table says
which metric chose (see ``_select``).

Example:
    >>> from clear_tune.aggregate import trials_frame, build_tables
    >>> frame = trials_frame([{"trial_id": "a", "status": "completed", "config": {"seed": 0},
    ...     "valid": {"recall@20": 0.2}, "test": {"recall@20": 0.1}}])
    >>> [t.name for t in build_tables(frame)]
    ['overall', 'generalization', 'ablation', 'sensitivity', 'efficiency', 'beyond_accuracy', 'paper']
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from clear_tune.aggregate._beyond import beyond_accuracy_table
from clear_tune.aggregate._frame import VARIANT_NAMES, VARIANTS
from clear_tune.aggregate._paper import paper_table
from clear_tune.aggregate._select import (
    GROUP,
    MIN_WILCOXON_PAIRS,
    best_configs,
    config_summary,
    paired_test,
    paired_values,
)
from clear_tune.aggregate._significance import (
    USER_COLUMNS,
    Correction,
    PerUserLoader,
    UserTests,
    star_user_tests,
    user_columns,
    user_note,
)
from clear_tune.config import DEFAULT_SELECT_METRIC
from clear_tune.metrics import short_name

TEST_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


SHORT = {m: short_name(m) for m in TEST_METRICS}


def test_name(select_metric: str = DEFAULT_SELECT_METRIC) -> str:
    """What the ablation's p-values are: the paired tests on the test value of the select metric."""
    return (
        "two-sided paired t-test (scipy.stats.ttest_rel) and Wilcoxon signed-rank test (scipy.stats.wilcoxon, "
        f"only with >= {MIN_WILCOXON_PAIRS} non-zero pairs) on test {short_name(select_metric)} over the seeds "
        "shared with the full model"
    )


TEST_NAME = test_name()
PRUNING_NOTE = (
    "Pruning saved: for each pruned trial, the epochs it would have run = the median epochs_run of the "
    "completed trials of the same arm, dataset and backbone (config.epochs when none completed), minus the "
    "epochs it ran; hours saved = those epochs x the trial's own wall-seconds per epoch."
)


@dataclass(frozen=True)
class Table:
    """One result table: numbers for CSV, text for Markdown/LaTeX/HTML, and what it shows."""

    name: str
    title: str
    note: str
    data: pd.DataFrame
    display: pd.DataFrame


def build_tables(
    frame: pd.DataFrame,
    *,
    select_metric: str = DEFAULT_SELECT_METRIC,
    per_user: PerUserLoader | None = None,
    correction: Correction = "holm",
) -> list[Table]:
    """All seven tables, configs chosen by the mean valid ``select_metric`` over seeds; ``per_user`` loads a trial's
    per-user values (:func:`clear_tune.records.read_user_metrics`) for the tests over users, corrected over each
    table's comparisons by ``correction``."""
    summary = config_summary(frame)
    users = UserTests(frame, per_user, metric=select_metric, correction=correction)
    return [
        overall_table(summary, select_metric=select_metric, users=users),
        generalization_table(summary, select_metric=select_metric, users=users),
        ablation_table(frame, summary, select_metric=select_metric, users=users),
        sensitivity_table(summary, select_metric=select_metric),
        efficiency_table(frame),
        beyond_accuracy_table(summary, select_metric=select_metric),
        paper_table(frame, summary, select_metric=select_metric, users=users),
    ]


def mean_std(mean: float, std: float, n: int, *, digits: int = 4) -> str:
    """``"0.0812 ± 0.0010"``; one seed has no spread (``"0.0812 (1 seed)"``); NaN mean -> ``"—"``."""
    if mean is None or not np.isfinite(mean):
        return "—"
    if n <= 1 or std is None or not np.isfinite(std):
        return f"{mean:.{digits}f} (1 seed)"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _cell(row: pd.Series, metric: str) -> str:
    if row.get("n_completed", 0) == 0:
        return _missing(row)
    return mean_std(row.get(f"{metric}.mean", math.nan), row.get(f"{metric}.std", math.nan), int(row["n_completed"]))


def _missing(row: pd.Series) -> str:
    if row.get("n_pruned", 0):
        return "pruned"
    return "failed" if row.get("n_failed", 0) else "—"


def _metric_columns(prefix: str) -> list[str]:
    return [f"{prefix}.{m}.{s}" for m in TEST_METRICS for s in ("mean", "std")]


def overall_table(
    summary: pd.DataFrame, *, select_metric: str = DEFAULT_SELECT_METRIC, users: UserTests | None = None
) -> Table:
    """Table 2 layout: per dataset x backbone the best-valid config and its test metrics (mean ± std), and per
    dataset with a ``clear`` backbone an "Improv." row: CLEAR over the best other backbone, starred where the
    corrected test over users holds."""
    chooser, label = f"valid.{select_metric}", f"valid {short_name(select_metric)}"
    best = best_configs(summary, metric=chooser)
    groups = summary[list(GROUP)].drop_duplicates().sort_values(list(GROUP))
    rows = groups.merge(best, on=list(GROUP), how="left")
    counts = summary.groupby(list(GROUP))[["n_pruned", "n_failed"]].sum()
    rows = rows.drop(columns=["n_pruned", "n_failed"]).join(counts, on=list(GROUP))
    rows["n_completed"] = rows["n_completed"].fillna(0).astype(int)
    data = _select_columns(
        rows,
        ["dataset", "backbone", "config_label", "arm", "n_completed"],
        [chooser] + [f"test.{m}" for m in TEST_METRICS],
    )
    display = pd.DataFrame(
        {
            "dataset": rows["dataset"],
            "backbone": rows["backbone"],
            f"chosen config (by {label})": rows["config_label"].where(rows["n_completed"] > 0, "no completed config"),
            "seeds": rows["n_completed"],
            label: [_cell(r, chooser) for _, r in rows.iterrows()],
            **{f"test {SHORT[m]}": [_cell(r, f"test.{m}") for _, r in rows.iterrows()] for m in TEST_METRICS},
        }
    )
    improvements = []  # per dataset: CLEAR (the paper's own model) over its best baseline
    for dataset, chosen in rows[rows["n_completed"] > 0].groupby("dataset"):
        clear, others = chosen[chosen["backbone"] == "clear"], chosen[chosen["backbone"] != "clear"]
        if clear.empty or others.empty:
            continue
        c, b = clear.iloc[0], others.sort_values(f"{chooser}.mean", ascending=False).iloc[0]
        improvements.append((dataset, c, b, None if users is None else users.compare(b["config_key"], c["config_key"])))
    if improvements:
        p_t = users.corrected([i[3] for i in improvements])[0] if users is not None else [math.nan] * len(improvements)
        extra_data, extra_display = [], []
        for (dataset, c, b, _comparison), p in zip(improvements, p_t):
            gains = {m: _improvement(b, c, f"test.{m}.mean") for m in TEST_METRICS}
            star = "*" if np.isfinite(p) and p < 0.05 else ""
            extra_data.append(
                {
                    "dataset": dataset,
                    "backbone": "improvement %",
                    "config_label": f"clear vs {b['backbone']}",
                    **{f"test.{m}.mean": gains[m] for m in TEST_METRICS},
                    "p_users_corrected": p,
                }
            )
            extra_display.append(
                {
                    "dataset": dataset,
                    "backbone": "Improv.",
                    f"chosen config (by {label})": f"clear vs best baseline ({b['backbone']})",
                    **{f"test {SHORT[m]}": _pct(gains[m]) + (star if m == select_metric else "") for m in TEST_METRICS},
                }
            )
        data = pd.concat([data, pd.DataFrame(extra_data)], ignore_index=True)
        display = pd.concat([display.astype(object), pd.DataFrame(extra_display).astype(object)], ignore_index=True)
        display = display.where(display.notna(), "")
    note = (
        f"Config chosen by mean {label} over seeds; test metrics reported at each trial's best-valid epoch, mean ± "
        "sample std over seeds. Improv.: CLEAR over the best other backbone (by the same validation) on the test "
        f"means; * = the paired t-test over users on test {short_name(select_metric)} (per-user values averaged over "
        f"shared seeds) holds at p < 0.05 after {users.name if users else 'Holm'}'s correction over the datasets."
    )
    return Table("overall", "Overall performance (paper Table 2 layout)", note, data, display)


def generalization_table(
    summary: pd.DataFrame, *, select_metric: str = DEFAULT_SELECT_METRIC, users: UserTests | None = None
) -> Table:
    """Table 3 layout: backbone without projection vs backbone + CLEAR, with the improvement in %."""
    chooser, label = f"valid.{select_metric}", f"valid {short_name(select_metric)}"
    base = best_configs(summary, where=~summary["projection_active"].astype(bool), metric=chooser)
    clear = best_configs(summary, where=summary["projection_active"].astype(bool), metric=chooser)
    pairs = summary[list(GROUP)].drop_duplicates().sort_values(list(GROUP))
    data_rows, display_rows = [], []
    for dataset, backbone in pairs.itertuples(index=False):  # one row per dataset x backbone: a handful
        b = _lookup(base, dataset, backbone)
        c = _lookup(clear, dataset, backbone)
        if b is None and c is None:
            continue
        for model, row in ((backbone, b), (f"{backbone} + CLEAR", c)):
            data_rows.append(
                {
                    "dataset": dataset,
                    "backbone": backbone,
                    "model": model,
                    "config_label": None if row is None else row["config_label"],
                    **{
                        f"test.{m}.{s}": math.nan if row is None else row.get(f"test.{m}.{s}", math.nan)
                        for m in TEST_METRICS
                        for s in ("mean", "std")
                    },
                }
            )
            display_rows.append(
                {
                    "dataset": dataset,
                    "model": model,
                    "config": "not searched" if row is None else row["config_label"],
                    **{SHORT[m]: "—" if row is None else _cell(row, f"test.{m}") for m in TEST_METRICS},
                }
            )
        improvement = {m: _improvement(b, c, f"test.{m}.mean") for m in TEST_METRICS}
        comparison = (
            None if users is None or b is None or c is None else users.compare(b["config_key"], c["config_key"])
        )
        data_rows.append(
            {
                "dataset": dataset,
                "backbone": backbone,
                "model": "improvement %",
                "config_label": None,
                **{f"test.{m}.mean": improvement[m] for m in TEST_METRICS},
                **user_columns(comparison),
            }
        )
        display_rows.append(
            {
                "dataset": dataset,
                "model": "Improv.",
                "config": "",
                **{
                    SHORT[m]: "—" if not np.isfinite(improvement[m]) else f"{improvement[m]:+.2f}%"
                    for m in TEST_METRICS
                },
            }
        )
    data = pd.DataFrame(
        data_rows, columns=["dataset", "backbone", "model", "config_label", *_metric_columns("test"), *USER_COLUMNS]
    )
    display = pd.DataFrame(display_rows, columns=["dataset", "model", "config", *(SHORT[m] for m in TEST_METRICS)])
    improv = (data["model"] == "improvement %").to_numpy()
    star_user_tests(data, display, improv, users, column=SHORT.get(select_metric))
    note = (
        f"Each side is the best config by mean {label} among configs without (λ = 0 or mode off) / with projection; "
        "improvement = (CLEAR − base) / base on the test means. " + user_note(users, "backbones")
    )
    return Table(
        "generalization", "Generalization: backbone vs backbone + CLEAR (paper Table 3 layout)", note, data, display
    )


def ablation_table(
    frame: pd.DataFrame,
    summary: pd.DataFrame,
    *,
    select_metric: str = DEFAULT_SELECT_METRIC,
    users: UserTests | None = None,
) -> Table:
    """Fig. 3: full (fixed k) vs w/o null-space vs dynamic ratio per dataset x backbone, with paired p-values
    (on the test value of the select metric)."""
    chooser, label = f"valid.{select_metric}", f"valid {short_name(select_metric)}"
    compared = f"test.{select_metric}"
    reported = list(dict.fromkeys([chooser, "test.recall@20", "test.ndcg@20"]))
    chosen = {v: best_configs(summary, where=summary["variant"] == v, metric=chooser) for v in VARIANTS}
    # configs that exist but never completed, so the table can say "pruned"/"failed" instead of dropping them
    tried = summary.groupby([*GROUP, "variant"])[["n_completed", "n_pruned", "n_failed"]].sum()
    data_rows, display_rows = [], []
    for dataset, backbone in summary[list(GROUP)].drop_duplicates().sort_values(list(GROUP)).itertuples(index=False):
        present = [v for v in VARIANTS if (dataset, backbone, v) in tried.index]
        if len(present) < 2:
            continue  # nothing to ablate against
        full = _lookup(chosen["full"], dataset, backbone)
        for variant in present:
            row = _lookup(chosen[variant], dataset, backbone)
            test, comparison = None, None
            if row is not None and full is not None and variant != "full":
                pairs = paired_values(frame, full["config_key"], row["config_key"], compared)
                test = paired_test(pairs["a"], pairs["b"])
                comparison = None if users is None else users.compare(full["config_key"], row["config_key"])
            delta = _improvement(full, row, f"{compared}.mean") if variant != "full" else math.nan
            status_row = tried.loc[(dataset, backbone, variant)]
            data_rows.append(
                {
                    "dataset": dataset,
                    "backbone": backbone,
                    "variant": variant,
                    "config_label": None if row is None else row["config_label"],
                    "n_seeds": 0 if row is None else int(row["n_completed"]),
                    **{
                        f"{m}.{s}": math.nan if row is None else row.get(f"{m}.{s}", math.nan)
                        for m in reported
                        for s in ("mean", "std")
                    },
                    "delta_vs_full_pct": delta,
                    "n_pairs": None if test is None else test.n_pairs,
                    "p_ttest_rel": math.nan if test is None else test.t_pvalue,
                    "p_wilcoxon": math.nan if test is None else test.wilcoxon_pvalue,
                    **user_columns(comparison),
                }
            )
            missing = _missing(status_row)
            display_rows.append(
                {
                    "dataset": dataset,
                    "backbone": backbone,
                    "variant": VARIANT_NAMES[variant],
                    "config": missing if row is None else row["config_label"],
                    "seeds": 0 if row is None else int(row["n_completed"]),
                    label: missing if row is None else _cell(row, chooser),
                    "test R@20": missing if row is None else _cell(row, "test.recall@20"),
                    "test N@20": missing if row is None else _cell(row, "test.ndcg@20"),
                    f"Δ {short_name(select_metric)} vs full": "" if variant == "full" else _pct(delta),
                    "p (paired t)": "" if variant == "full" else _p(None if test is None else test.t_pvalue),
                    "p (Wilcoxon)": "" if variant == "full" else _p(None if test is None else test.wilcoxon_pvalue),
                }
            )
    columns = [
        "dataset",
        "backbone",
        "variant",
        "config_label",
        "n_seeds",
        *(f"{m}.{s}" for m in reported for s in ("mean", "std")),
        "delta_vs_full_pct",
        "n_pairs",
        "p_ttest_rel",
        "p_wilcoxon",
        *USER_COLUMNS,
    ]
    display_columns = [
        "dataset",
        "backbone",
        "variant",
        "config",
        "seeds",
        label,
        "test R@20",
        "test N@20",
        f"Δ {short_name(select_metric)} vs full",
        "p (paired t)",
        "p (Wilcoxon)",
    ]
    data, display = pd.DataFrame(data_rows, columns=columns), pd.DataFrame(display_rows, columns=display_columns)
    display = display.rename(columns={"p (paired t)": "seeds: p (paired t)", "p (Wilcoxon)": "seeds: p (Wilcoxon)"})
    star_user_tests(data, display, (data["variant"] != "full").to_numpy(), users)
    note = (
        f"Each variant is its best config by mean {label}. Seed-level p-values: {test_name(select_metric)}; n/a = "
        "too few pairs. " + user_note(users, "rows")
    )
    return Table(
        "ablation", "Ablation: full model vs w/o null-space vs dynamic ratio (paper Fig. 3)", note, data, display
    )


def sensitivity_table(summary: pd.DataFrame, *, select_metric: str = DEFAULT_SELECT_METRIC) -> Table:
    """Fig. 4: the λ x k grid of valid and test values of the select metric (fixed-k configs; per cell its
    best-valid config)."""
    valid_col, test_col = f"valid.{select_metric}", f"test.{select_metric}"
    name = short_name(select_metric)
    fixed = summary[summary["variant"] == "full"]
    keys = [*GROUP, "strength", "k"]
    best = best_configs(fixed, by=tuple(keys), metric=valid_col)
    cells = fixed.groupby(keys)[["n_completed", "n_pruned", "n_failed"]].sum().reset_index()
    cells = cells.merge(
        best[
            [
                *keys,
                "config_label",
                *(f"{m}.{s}" for m in (valid_col, test_col) for s in ("mean", "std") if f"{m}.{s}" in best.columns),
            ]
        ],
        on=keys,
        how="left",
    )
    for column in (f"{m}.{s}" for m in (valid_col, test_col) for s in ("mean", "std")):
        if column not in cells.columns:
            cells[column] = math.nan
    cells = cells.rename(columns={"strength": "lambda"})
    text = [
        _missing(r)
        if r["n_completed"] == 0 or not np.isfinite(r[f"{valid_col}.mean"])
        else f"{r[f'{valid_col}.mean']:.4f} / {r[f'{test_col}.mean']:.4f}"
        for _, r in cells.iterrows()
    ]
    display = (
        cells.assign(cell=text)
        .pivot_table(index=["dataset", "backbone", "lambda"], columns="k", values="cell", aggfunc="first")
        .rename(columns=lambda k: f"k={k}")
        .fillna("not run")
        .reset_index()
        .rename(columns={"lambda": "λ"})
    )
    display.columns.name = None
    return Table(
        "sensitivity",
        f"Sensitivity: valid / test {name} over the λ × k grid (paper Fig. 4)",
        f"Each cell: mean valid {name} / mean test {name} over seeds of the fixed-k config with that λ and k "
        "(best by valid when several differ elsewhere).",
        cells,
        display,
    )


def efficiency_table(frame: pd.DataFrame) -> Table:
    """Table 4: seconds/epoch, memory, epochs to best, trial- and GPU-hours, and what pruning saved."""
    work = frame.copy()
    completed = work[work["status"] == "completed"]
    typical = completed.groupby(["arm", *GROUP])["epochs_run"].median().rename("typical_epochs")
    work = work.join(typical, on=["arm", *GROUP])
    would_run = work["typical_epochs"].fillna(pd.to_numeric(work["max_epochs"], errors="coerce"))
    pruned = work["status"] == "pruned"
    work["epochs_saved"] = np.where(pruned, np.clip(would_run - work["epochs_run"], 0, None), 0.0)
    seconds_per_epoch = (work["hours"] * 3600 / work["epochs_run"].where(work["epochs_run"] > 0)).fillna(
        work["sec_per_epoch"]
    )
    work["hours_saved"] = (work["epochs_saved"] * seconds_per_epoch / 3600).fillna(0.0)
    work["gpu_hours"] = work["hours"] * work["n_gpus"]
    work["completed_best_epoch"] = work["best_epoch"].where(work["status"] == "completed")

    def summarise(group: pd.DataFrame) -> pd.Series:
        used = group["hours"].sum(min_count=1)
        saved = group["hours_saved"].sum()
        return pd.Series(
            {
                "trials": len(group),
                "completed": int((group["status"] == "completed").sum()),
                "pruned": int((group["status"] == "pruned").sum()),
                "failed": int((group["status"] == "failed").sum()),
                "sec_per_epoch_median": group["sec_per_epoch"].median(),
                "sec_per_eval_median": group["sec_per_eval"].median(),
                "peak_mem_mb_max": group["peak_mem_mb"].max(),
                "epochs_to_best_median": group["completed_best_epoch"].median(),
                "epochs_run": int(group["epochs_run"].sum()),
                "trial_hours": used,
                "gpu_hours": group["gpu_hours"].sum(min_count=1) if group["n_gpus"].gt(0).any() else 0.0,
                "epochs_saved_by_pruning": group["epochs_saved"].sum(),
                "hours_saved_by_pruning": saved,
                "pruning_saved_pct": 100 * saved / (used + saved) if used and (used + saved) > 0 else math.nan,
            }
        )

    per_group = work.groupby(list(GROUP)).apply(summarise, include_groups=False).reset_index()
    total = summarise(work).to_frame().T.assign(dataset="all", backbone="all")
    data = pd.concat([per_group, total[per_group.columns]], ignore_index=True)
    numeric = [c for c in data.columns if c not in GROUP]
    data[numeric] = data[numeric].apply(pd.to_numeric, errors="coerce")
    display = pd.DataFrame(
        {
            "dataset": data["dataset"],
            "backbone": data["backbone"],
            "trials (done/pruned/failed)": [
                f"{int(r.trials)} ({int(r.completed)}/{int(r.pruned)}/{int(r.failed)})" for r in data.itertuples()
            ],
            "s/epoch": data["sec_per_epoch_median"].map(lambda v: _num(v, "{:.2f}")),
            "peak mem (MB)": data["peak_mem_mb_max"].map(lambda v: _num(v, "{:.0f}")),
            "epochs to best": data["epochs_to_best_median"].map(lambda v: _num(v, "{:.0f}")),
            "trial-hours": data["trial_hours"].map(lambda v: _num(v, "{:.3f}")),
            "GPU-hours": data["gpu_hours"].map(lambda v: _num(v, "{:.3f}")),
            "pruning saved (epochs / h / %)": [
                f"{r.epochs_saved_by_pruning:.0f} / {r.hours_saved_by_pruning:.3f} / "
                f"{_num(r.pruning_saved_pct, '{:.1f}%')}"
                for r in data.itertuples()
            ],
        }
    )
    return Table(
        "efficiency",
        "Efficiency (paper Table 4 layout)",
        "s/epoch and epochs to best are medians (epochs to best over completed trials); "
        "peak memory is the maximum over trials (CUDA peak on GPU, RSS on CPU). " + PRUNING_NOTE,
        data,
        display,
    )


def _lookup(best: pd.DataFrame, dataset: str, backbone: str) -> pd.Series | None:
    hit = best[(best["dataset"] == dataset) & (best["backbone"] == backbone)]
    return None if hit.empty else hit.iloc[0]


def _improvement(base: pd.Series | None, other: pd.Series | None, column: str) -> float:
    if base is None or other is None:
        return math.nan
    b, o = base.get(column, math.nan), other.get(column, math.nan)
    return 100.0 * (o - b) / b if np.isfinite(b) and np.isfinite(o) and b != 0 else math.nan


def _select_columns(rows: pd.DataFrame, fixed: list[str], metrics: list[str]) -> pd.DataFrame:
    columns = fixed + [f"{m}.{s}" for m in metrics for s in ("mean", "std")]
    return rows.reindex(columns=columns)


def _pct(value: float) -> str:
    return "—" if not np.isfinite(value) else f"{value + 0.0:+.2f}%".replace("-0.00%", "+0.00%")


def _p(value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:.3g}"


def _num(value: float, pattern: str) -> str:
    return "—" if value is None or not np.isfinite(float(value)) else pattern.format(float(value))
