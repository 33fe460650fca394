"""Per-config statistics over seeds, selection by validation, and the paired test across seeds.

Only **completed** trials enter a config's mean ± std: a pruned trial's metrics are those of a run cut
short, so they would bias the mean downwards. ``std`` is the sample standard deviation (ddof = 1), NaN for
a single seed. Selection is always by the mean over seeds of the validation metric the experiment selects on
(``valid.recall@20`` by default, ``select_metric`` in experiment.json); test columns are carried along and
never looked at to choose.

Example:
    >>> from clear_tune.aggregate import trials_frame
    >>> frame = trials_frame([
    ...     {"trial_id": "a", "status": "completed", "config": {"projection": {"k": 2}},
    ...      "valid": {"recall@20": 0.2}, "test": {"recall@20": 0.1}},
    ...     {"trial_id": "b", "status": "completed", "config": {"projection": {"k": 4}},
    ...      "valid": {"recall@20": 0.1}, "test": {"recall@20": 0.3}}])
    >>> best_configs(config_summary(frame))["k"].tolist()   # best valid, not best test
    [2]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from clear_tune.config import DEFAULT_SELECT_METRIC

GROUP = ("dataset", "backbone")
_CONFIG = ["dataset", "backbone", "config_key"]
# The Wilcoxon signed-rank test cannot reach p < 0.05 (two-sided, exact) with fewer than 6 non-zero pairs.
MIN_WILCOXON_PAIRS = 6


def config_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, backbone, config): status counts, completed seeds, ``<metric>.mean/.std``."""
    metrics = [c for c in frame.columns if c.startswith(("valid.", "test."))]
    attributes = [c for c in frame.columns if c not in metrics and c not in _CONFIG]
    groups = frame.groupby(_CONFIG, sort=True, dropna=False)
    summary = groups[attributes].first()
    summary["arm"] = groups["arm"].agg(lambda arms: "/".join(sorted(set(map(str, arms)))))
    counts = pd.crosstab([frame[c] for c in _CONFIG], frame["status"]).reindex(
        columns=["completed", "pruned", "failed"], fill_value=0
    )
    summary[["n_completed", "n_pruned", "n_failed"]] = counts.reindex(summary.index, fill_value=0).to_numpy()
    summary["n_trials"] = groups.size()
    summary["status"] = np.select(
        [summary["n_completed"] > 0, summary["n_pruned"] > 0], ["completed", "pruned"], default="failed"
    )
    completed = frame[frame["status"] == "completed"]
    by_config = completed.groupby(_CONFIG, sort=True)
    summary["seeds"] = by_config["seed"].agg(lambda s: sorted(s.tolist())).reindex(summary.index)
    summary["n_seeds"] = summary["n_completed"]
    if metrics:
        moments = by_config[metrics].agg(["mean", "std"])
        moments.columns = [f"{metric}.{stat}" for metric, stat in moments.columns]
        summary = summary.join(moments)
    return summary.drop(columns=["trial_id", "seed"], errors="ignore").reset_index()


def best_configs(
    summary: pd.DataFrame,
    *,
    where: pd.Series | None = None,
    metric: str = f"valid.{DEFAULT_SELECT_METRIC}",
    by: tuple[str, ...] = GROUP,
) -> pd.DataFrame:
    """Per ``by`` group the config with the highest mean validation ``metric`` (completed configs only).

    ``where`` restricts the candidates (a boolean mask over ``summary``). Ties go to the smallest
    ``config_key`` so the choice is deterministic.
    """
    column = f"{metric}.mean"
    candidates = summary if where is None else summary[where]
    if column not in candidates.columns:
        return candidates.iloc[0:0]
    candidates = candidates[(candidates["n_completed"] > 0) & candidates[column].notna()]
    ordered = candidates.sort_values([*by, column, "config_key"], ascending=[True] * len(by) + [False, True])
    return ordered.drop_duplicates(list(by), keep="first").reset_index(drop=True)


@dataclass(frozen=True)
class PairedTest:
    """Paired comparison over the seeds two configs share (``b - a``)."""

    n_pairs: int
    mean_difference: float
    t_pvalue: float  # scipy.stats.ttest_rel, two-sided; NaN when n < 2 or all differences are equal (t undefined)
    wilcoxon_pvalue: float  # scipy.stats.wilcoxon, two-sided; NaN when fewer than MIN_WILCOXON_PAIRS non-zero pairs


def paired_values(frame: pd.DataFrame, config_a: str, config_b: str, metric: str) -> pd.DataFrame:
    """Completed values of ``metric`` for two configs, one row per shared seed (columns ``a``, ``b``)."""
    completed = frame[frame["status"] == "completed"]
    by_seed = completed.groupby(["config_key", "seed"])[metric].mean()
    a = by_seed.get(config_a, pd.Series(dtype=float)).rename("a")
    b = by_seed.get(config_b, pd.Series(dtype=float)).rename("b")
    return pd.concat([a, b], axis=1, join="inner").dropna()


def paired_test(a: np.ndarray | pd.Series, b: np.ndarray | pd.Series) -> PairedTest:
    """Paired t-test and Wilcoxon signed-rank test of ``b`` against ``a`` (same seeds, same order)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = b - a
    n = int(diff.size)
    t_p = math.nan
    if n >= 2 and not np.allclose(diff, diff[0], rtol=1e-9, atol=1e-12):
        t_p = float(stats.ttest_rel(b, a).pvalue)
    w_p = math.nan
    if int(np.count_nonzero(diff)) >= MIN_WILCOXON_PAIRS:
        w_p = float(stats.wilcoxon(b, a).pvalue)
    return PairedTest(
        n_pairs=n, mean_difference=float(diff.mean()) if n else math.nan, t_pvalue=t_p, wilcoxon_pvalue=w_p
    )


def best_by_validation(records: list[dict], select_metric: str = DEFAULT_SELECT_METRIC) -> dict | None:
    """The config with the best mean over seeds of valid ``select_metric`` among completed trials, over all
    datasets and backbones (what a search prints at its end); None when nothing completed.

    Returns ``{"config": config without its seed, "arm": ..., "valid_mean": ..., "test_mean": ..., "seeds": [...]}``,
    the test mean of the same metric only reported. Trials are replicates of one config exactly when the
    tables count them so (their ``config_key``).

    Example:
        >>> records = [{"trial_id": f"t{s}{k}", "status": "completed", "arm": "full",
        ...             "config": {"seed": s, "projection": {"k": k}}, "valid": {"ndcg@20": 0.1 * k + s / 100},
        ...             "test": {"ndcg@20": 0.2}} for s in (0, 1) for k in (2, 4)]
        >>> best = best_by_validation(records, "ndcg@20")
        >>> best["config"]["projection"]["k"], best["seeds"]
        (4, [0, 1])
    """
    from clear_tune.aggregate._frame import trials_frame

    frame = trials_frame(records)
    column = f"valid.{select_metric}"
    if frame.empty or column not in frame.columns:
        return None
    completed = frame[(frame["status"] == "completed") & frame[column].notna()]
    if completed.empty:
        return None
    test_column = f"test.{select_metric}"
    means = completed.groupby("config_key")[[column, test_column]].mean().reset_index()
    best = means.sort_values([column, "config_key"], ascending=[False, True]).iloc[0]
    rows = completed[completed["config_key"] == best["config_key"]].sort_values("trial_id")
    by_id = {str(r.get("trial_id")): r for r in records}
    config = {k: v for k, v in by_id[rows.iloc[0]["trial_id"]]["config"].items() if k != "seed"}
    return {
        "config": config,
        "arm": rows.iloc[0]["arm"],
        "valid_mean": float(best[column]),
        "test_mean": float(best[test_column]),
        "seeds": sorted(int(s) for s in rows["seed"]),
    }
