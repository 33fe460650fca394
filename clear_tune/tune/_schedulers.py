"""Schedulers: Ray Tune's own (``fifo``, ``asha``, ``hyperband``) and Optuna's pruners through the bridge.

- ``asha`` / ``hyperband`` are Ray's (HyperBand with :class:`FinishingHyperBandScheduler`'s fix, and a capacity
  warning when ``max_concurrent`` leaves it one bracket: :func:`hyperband_capacity_warning`);
- ``median``, ``percentile``, ``successive_halving``, ``optuna_hyperband`` and ``wilcoxon`` are Optuna pruners
  (:func:`make_pruner`) run through :class:`~clear_tune.tune.OptunaPrunerScheduler`; given a ``storage`` (the
  harness passes ``<experiment>/pruner.db``) the bridge's own study persists there, so ``--resume`` keeps the
  pruner's history (see :mod:`clear_tune.tune._pruner`).

Time is the epoch; the value is the valid select metric. The names are :data:`clear_tune.spec.SCHEDULERS`.

Example:
    >>> from clear_tune.tune import make_scheduler
    >>> make_scheduler(spec)   # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, HyperBandScheduler, TrialScheduler

from clear_tune.spec import OPTUNA_PRUNERS, Spec
from clear_tune.tune._members import MemberASHAScheduler
from clear_tune.tune._pruner import OptunaPrunerScheduler
from clear_tune.tune._trainable import METRIC


def make_scheduler(spec: Spec, *, storage: str | None = None, verdicts: str | None = None) -> TrialScheduler:
    """The spec's scheduler; Optuna pruners come wrapped in :class:`OptunaPrunerScheduler`, whose study
    lives in ``storage`` (an RDB URL, study name = the experiment name) or, without one, in memory.

    ASHA and the Optuna pruners also judge the members of fused trials and post their verdicts to the
    mailbox actor ``verdicts`` (:mod:`clear_tune.tune._members`); Ray's HyperBand judges whole trials (a
    spec with it runs unfused)."""
    s = spec.settings.scheduler
    max_t = s.max_t or spec.trainer.epochs
    common: dict[str, Any] = {"time_attr": "epoch", "metric": METRIC, "mode": "max"}
    if s.kind == "fifo":
        return FIFOScheduler()
    if s.kind == "asha":
        return MemberASHAScheduler(
            max_t=max_t,
            grace_period=min(s.grace_period, max_t),
            reduction_factor=s.reduction_factor,
            verdicts=verdicts,
            **common,
        )
    if s.kind == "hyperband":
        return FinishingHyperBandScheduler(max_t=max_t, reduction_factor=s.reduction_factor, **common)
    assert s.kind in OPTUNA_PRUNERS, s.kind
    pruner = make_pruner(s.kind, spec)
    return OptunaPrunerScheduler(
        pruner,
        metric=METRIC,
        mode="max",
        time_attr="epoch",
        storage=storage,
        study_name=spec.name if storage is not None else None,
        verdicts=verdicts,
    )


class FinishingHyperBandScheduler(HyperBandScheduler):
    """Ray's ``HyperBandScheduler`` that cannot leave a trial PAUSED forever once its bracket is finished.

    When a bracket finishes, Ray stops its PAUSED trials (``_Bracket.cleanup_full``) but misses one whose
    pause is still being saved: a trial told to PAUSE at max_t while another trial's result finishes the
    bracket. That trial turns PAUSED a moment later, nothing unpauses or stops it, and ``Tuner.fit`` spins
    forever (seen with our trainable, whose last report carries a checkpoint). So each time Ray asks for a
    trial to run, stop the PAUSED trials of finished brackets first.
    """

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        for band in self._hyperbands:
            for bracket in band:
                if bracket is not None and bracket.finished():
                    for trial in bracket.current_trials():
                        if trial.status == Trial.PAUSED:
                            tune_controller.stop_trial(trial)
        return super().choose_trial_to_run(tune_controller)


def hyperband_capacity_warning(spec: Spec) -> str | None:
    """Why Ray's ``hyperband`` would stop few or no trials of this spec, or None.

    Ray's HyperBand is synchronous: a bracket is filled with the trials that are live at once and halves
    only those, while Ray's search generator creates a new trial only when fewer than ``max_concurrent``
    are live (PAUSED ones count). The first bracket never halves, so with the default ``max_concurrent: 1``
    every trial lands in it and runs to max_t (ray-project/ray#12536). Ray starts only as many trials as
    the resources allow whatever ``max_concurrent`` says, so raising it costs no memory on the nodes.
    """
    s = spec.settings.scheduler
    if s.kind != "hyperband":
        return None
    max_t, eta = s.max_t or spec.trainer.epochs, s.reduction_factor
    # HyperBandScheduler's own bracket arithmetic (ray/tune/schedulers/hyperband.py)
    s_max_1 = int(round(math.log(max_t) / math.log(eta))) + 1
    if s_max_1 < 2 or int(max_t / eta) == 0:
        return (
            f"scheduler: hyperband with max_t {max_t} and reduction_factor {eta:g} has a single bracket "
            "and stops no trial; use asha, a larger max_t or a smaller reduction_factor"
        )
    first, second = (math.ceil(s_max_1 / (b + 1) * eta**b) for b in (0, 1))
    needed = first + math.ceil(second / eta) + 1  # a full first bracket, then more than the second keeps
    if spec.settings.max_concurrent < needed:
        return (
            f"scheduler: Ray's hyperband halves only trials that are live at the same time and max_concurrent "
            f"({spec.settings.max_concurrent}) caps them, so it will stop few or no trials; set max_concurrent to "
            f"at least {needed} (Ray still runs only as many trials as the resources allow; the others wait) "
            "or use asha"
        )
    if spec.expected_trials() < needed:
        return (
            f"scheduler: Ray's hyperband needs at least {needed} trials live at the same time to stop any, and "
            f"this search has {spec.expected_trials()}; use asha or an Optuna pruner"
        )
    return None


def make_pruner(kind: str, spec: Spec) -> optuna.pruners.BasePruner:
    s = spec.settings.scheduler
    max_t = s.max_t or spec.trainer.epochs
    warmup = s.grace_period  # Optuna may prune once step >= n_warmup_steps: the same as ASHA's grace period
    if kind == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=s.n_startup_trials, n_warmup_steps=warmup, interval_steps=s.interval_steps
        )
    if kind == "percentile":
        return optuna.pruners.PercentilePruner(
            s.percentile, n_startup_trials=s.n_startup_trials, n_warmup_steps=warmup, interval_steps=s.interval_steps
        )
    if kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=s.grace_period, reduction_factor=int(s.reduction_factor)
        )
    if kind == "optuna_hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=s.grace_period, max_resource=max_t, reduction_factor=int(s.reduction_factor)
        )
    if kind == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=s.p_threshold, n_startup_steps=s.grace_period)
    raise ValueError(f"unknown pruner {kind!r}")
