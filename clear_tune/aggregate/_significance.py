"""Significance over users: is config B better than config A on the same users, after correcting for many tests?

Each user is a paired observation (19,445 of them on Baby), so a gain of a few percent can be told from noise,
which three seeds cannot. :func:`compare_users` takes two configs' per-user test values (a user's value averaged
over the seeds both configs share, :func:`per_user_means`) and gives the relative gain, a paired t-test and a
Wilcoxon signed-rank test (scipy), the effect size (Cohen's d_z: mean difference / its standard deviation) and a
bootstrap 95% confidence interval of the relative gain (users resampled with replacement, seeded).
:func:`correct` adjusts the p-values of the comparisons in one table: Holm's step-down by default, Bonferroni or
Benjamini-Hochberg as options.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a = rng.random(2000)
    >>> result = compare_users(a, a + 0.05 + 0.1 * rng.standard_normal(2000))
    >>> round(result.relative_gain, 2), result.t_pvalue < 1e-6, result.ci_low > 0
    (0.1, True, True)
    >>> correct([0.01, 0.04, 0.03], method="holm").round(3).tolist()
    [0.03, 0.06, 0.06]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

Correction = Literal["holm", "bonferroni", "fdr_bh"]
CORRECTIONS: tuple[str, ...] = ("holm", "bonferroni", "fdr_bh")
CORRECTION_NAMES = {"holm": "Holm", "bonferroni": "Bonferroni", "fdr_bh": "Benjamini-Hochberg"}
BOOTSTRAP_RESAMPLES = 1000


@dataclass(frozen=True)
class UserComparison:
    """Config B against config A over the same users (see the module docstring)."""

    n_users: int
    mean_a: float
    mean_b: float
    relative_gain: float  # mean_b / mean_a - 1
    t_pvalue: float
    wilcoxon_pvalue: float
    effect_size: float  # Cohen's d_z
    ci_low: float  # bootstrap 95% CI of relative_gain
    ci_high: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def per_user_means(per_seed: Sequence[np.ndarray]) -> np.ndarray:
    """The mean over seeds of per-user values ``(n_users,)`` each (the same users, in the same order)."""
    return np.mean(np.stack([np.asarray(v, dtype=np.float64) for v in per_seed]), axis=0)


def compare_users(
    a: np.ndarray, b: np.ndarray, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> UserComparison:
    """Paired tests of ``b`` against ``a`` (per-user values of one metric, same users in the same order)."""
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"per-user values must be two vectors of one length, got {a.shape} and {b.shape}")
    n = a.size
    diff = b - a
    mean_a, mean_b = float(a.mean()) if n else math.nan, float(b.mean()) if n else math.nan
    gain = mean_b / mean_a - 1.0 if mean_a > 0 else math.nan
    nonzero = np.count_nonzero(diff)
    if n < 2 or nonzero == 0:
        t_p = w_p = 1.0 if n >= 2 else math.nan
        d_z = 0.0 if n >= 2 else math.nan
    else:
        t_p = float(stats.ttest_rel(b, a).pvalue)
        w_p = float(stats.wilcoxon(b, a, zero_method="wilcox").pvalue) if nonzero >= 1 else math.nan
        sd = float(diff.std(ddof=1))
        d_z = float(diff.mean() / sd) if sd > 0 else math.inf * np.sign(diff.mean())
    low = high = math.nan
    if n >= 2 and mean_a > 0:
        rng = np.random.default_rng(seed)
        gains = np.empty(resamples)
        for start in range(0, resamples, 100):  # 100 resamples at a time: n x 100 indices in memory
            stop = min(start + 100, resamples)
            index = rng.integers(0, n, size=(stop - start, n))
            gains[start:stop] = b[index].mean(axis=1) / a[index].mean(axis=1) - 1.0
        low, high = (float(q) for q in np.nanpercentile(gains, [2.5, 97.5]))
    return UserComparison(n, mean_a, mean_b, gain, t_p, w_p, d_z, low, high)


def correct(pvalues: Sequence[float], *, method: Correction = "holm") -> np.ndarray:
    """Adjusted p-values for a family of tests (NaN entries stay NaN and do not count)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    valid = ~np.isnan(p)
    m = int(valid.sum())
    if m == 0:
        return out
    q = p[valid]
    if method == "bonferroni":
        adjusted = np.minimum(q * m, 1.0)
    elif method == "holm":
        order = np.argsort(q)
        steps = np.maximum.accumulate((m - np.arange(m)) * q[order])
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(steps, 1.0)
    elif method == "fdr_bh":
        from scipy import stats

        adjusted = stats.false_discovery_control(q, method="bh")
    else:
        raise ValueError(f"unknown correction {method!r}; choose one of {', '.join(CORRECTIONS)}")
    out[valid] = adjusted
    return out


PerUserLoader = Callable[[str], "dict[str, dict[str, np.ndarray]] | None"]


def config_users(
    frame: Any, config_key: str, seeds: Sequence[int], *, metric: str, split: str, load: PerUserLoader
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(user ids, per-user values averaged over seeds)`` of one config's completed trials on ``seeds``, or None
    when one of them has no per-user values (a record from before they were kept)."""
    rows = frame[(frame["config_key"] == config_key) & (frame["status"] == "completed") & frame["seed"].isin(seeds)]
    vectors, users = [], None
    for trial_id in rows.sort_values("seed")["trial_id"]:
        per_user = load(str(trial_id))
        if per_user is None or split not in per_user or metric not in per_user[split]:
            return None
        ids = np.asarray(per_user[split]["users"])
        if users is not None and not np.array_equal(ids, users):
            return None  # different users: not one dataset's split
        users = ids
        vectors.append(per_user[split][metric])
    if not vectors:
        return None
    assert users is not None  # set with the first vector
    return users, per_user_means(vectors)


def compare_configs(
    frame: Any, config_a: str, config_b: str, *, metric: str, load: PerUserLoader, split: str = "test"
) -> UserComparison | None:
    """Config B against config A over users: per-user ``split`` values of ``metric`` averaged over the seeds both
    completed (:func:`compare_users`), or None without per-user values for every trial involved."""
    done = frame[frame["status"] == "completed"]
    seeds = sorted(
        set(done[done["config_key"] == config_a]["seed"]) & set(done[done["config_key"] == config_b]["seed"])
    )
    if not seeds:
        return None
    a = config_users(frame, config_a, seeds, metric=metric, split=split, load=load)
    b = config_users(frame, config_b, seeds, metric=metric, split=split, load=load)
    if a is None or b is None or not np.array_equal(a[0], b[0]):
        return None
    return compare_users(a[1], b[1])


class UserTests:
    """The tests over users one set of tables runs: configs compared on the test value of ``metric``, p-values
    corrected over each table's family (``correction``); without a loader (or per-user files) every comparison is
    None and the tables say the per-user data is missing."""

    def __init__(self, frame: Any, load: PerUserLoader | None, *, metric: str, correction: Correction = "holm") -> None:
        if correction not in CORRECTIONS:
            raise ValueError(f"unknown correction {correction!r}; choose one of {', '.join(CORRECTIONS)}")
        self.frame, self.load, self.metric, self.correction = frame, load, metric, correction
        self._cache: dict[tuple[str, str], UserComparison | None] = {}

    @property
    def name(self) -> str:
        return CORRECTION_NAMES[self.correction]

    def compare(self, config_a: str | None, config_b: str | None) -> UserComparison | None:
        if self.load is None or config_a is None or config_b is None or config_a == config_b:
            return None
        key = (config_a, config_b)
        if key not in self._cache:
            self._cache[key] = compare_configs(self.frame, config_a, config_b, metric=self.metric, load=self.load)
        return self._cache[key]

    def corrected(self, comparisons: Sequence[UserComparison | None]) -> tuple[np.ndarray, np.ndarray]:
        """The family's t and Wilcoxon p-values, corrected; NaN where a comparison is missing."""
        t = [math.nan if c is None else c.t_pvalue for c in comparisons]
        w = [math.nan if c is None else c.wilcoxon_pvalue for c in comparisons]
        return correct(t, method=self.correction), correct(w, method=self.correction)


# The columns a table carries per comparison over users (data: numbers; display: "users: ..." text).
USER_COLUMNS = [
    "users_n",
    "users_gain_pct",
    "users_ci_low_pct",
    "users_ci_high_pct",
    "users_effect_dz",
    "p_users_t",
    "p_users_wilcoxon",
    "p_users_t_corrected",
    "p_users_wilcoxon_corrected",
]


def user_columns(comparison: UserComparison | None) -> dict[str, float]:
    """The :data:`USER_COLUMNS` of one comparison (NaN without one; the corrected ones are filled per table)."""
    if comparison is None:
        return {name: math.nan for name in USER_COLUMNS}
    c = comparison
    return {
        "users_n": c.n_users,
        "users_gain_pct": 100 * c.relative_gain,
        "users_ci_low_pct": 100 * c.ci_low,
        "users_ci_high_pct": 100 * c.ci_high,
        "users_effect_dz": c.effect_size,
        "p_users_t": c.t_pvalue,
        "p_users_wilcoxon": c.wilcoxon_pvalue,
        "p_users_t_corrected": math.nan,
        "p_users_wilcoxon_corrected": math.nan,
    }


def star_user_tests(
    data: Any, display: Any, rows: np.ndarray, users: UserTests | None, *, column: str | None = None
) -> None:
    """Correct the p-values of the comparisons in ``rows`` (a boolean mask over the table) as one family, and
    show them: the gain over users with its 95% CI, d_z, corrected p (t / Wilcoxon); ``column`` gets a * where
    the corrected t-test holds at 0.05."""
    method = users.correction if users is not None else "holm"
    name = CORRECTION_NAMES[method]
    data["p_users_t_corrected"] = np.nan
    data["p_users_wilcoxon_corrected"] = np.nan
    if rows.any():
        data.loc[rows, "p_users_t_corrected"] = correct(data.loc[rows, "p_users_t"].to_numpy(float), method=method)
        data.loc[rows, "p_users_wilcoxon_corrected"] = correct(
            data.loc[rows, "p_users_wilcoxon"].to_numpy(float), method=method
        )
    gains, tests = [], []
    for i in range(len(data)):
        row = data.iloc[i]
        if not rows[i]:
            gains.append("")
            tests.append("")
        elif not np.isfinite(row["users_n"]):
            gains.append("no per-user data")
            tests.append("n/a")
        else:
            gains.append(
                f"{row['users_gain_pct']:+.2f}% [{row['users_ci_low_pct']:+.2f}, {row['users_ci_high_pct']:+.2f}]"
                f" d_z {row['users_effect_dz']:+.3f}"
            )
            tests.append(f"{_p(row['p_users_t_corrected'])} / {_p(row['p_users_wilcoxon_corrected'])}")
            if column is not None and row["p_users_t_corrected"] < 0.05 and display.iloc[i][column] not in ("", "—"):
                display.iloc[i, display.columns.get_loc(column)] = display.iloc[i][column] + "*"
    display["users: Δ [95% CI], d_z"] = gains
    display[f"users: p t / W ({name})"] = tests


def user_note(users: UserTests | None, family: str) -> str:
    metric = "the select metric" if users is None else users.metric
    name = CORRECTION_NAMES[users.correction] if users is not None else "Holm"
    return (
        f"Over users: each user's test {metric} averaged over the seeds both configs share, as paired "
        "observations; Δ = relative gain of the row over the config it is compared with, with a bootstrap 95% CI "
        f"(1,000 resamples of users) and Cohen's d_z; p = paired t-test / Wilcoxon signed-rank, {name}-corrected over "
        f"the {family} of this table (* where the corrected t-test holds at 0.05). 'no per-user data': a record from "
        "before per-user values were kept."
    )


def _p(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3g}"
