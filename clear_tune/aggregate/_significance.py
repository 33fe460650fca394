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
from collections.abc import Sequence
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


def compare_users(a: np.ndarray, b: np.ndarray, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> UserComparison:
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
