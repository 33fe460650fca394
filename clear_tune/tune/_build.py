"""Spec -> Ray Tune parts: search algorithm, scheduler/pruner and the trimmed progress table.

- ``search.kind: grid``  -> no searcher; the deduplicated trials become ONE ``tune.grid_search`` dimension.
- ``search.kind: optuna`` -> Ray Tune's ``OptunaSearch`` over :class:`~clear_tune.spec.OptunaSpace`
  (define-by-run), sampler TPE by default and seeded, the study persisted in
  ``<experiment>/optuna.db`` (Optuna RDB storage on SQLite) so ``optuna-dashboard sqlite:///...`` opens it.
- ``scheduler.kind``: ``asha`` / ``hyperband`` are Ray's; ``median``, ``percentile``,
  ``successive_halving``, ``optuna_hyperband`` and ``wilcoxon`` are Optuna pruners run through
  :class:`~clear_tune.tune.OptunaPrunerScheduler`. Time is the epoch; the value is valid recall@20.
  Given a ``storage`` (the harness passes ``<experiment>/pruner.db``), the bridge's own study persists
  there, so ``--resume`` keeps the pruner's history (see :mod:`clear_tune.tune._pruner`).

Example:
    >>> from clear_tune.tune import make_scheduler
    >>> make_scheduler(spec)   # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
from ray.tune import CLIReporter
from ray.tune.experiment import Trial
from ray.tune.search.optuna import OptunaSearch
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler, TrialScheduler

from clear_tune.spec import OptunaSpace, Spec
from clear_tune.tune._pruner import OptunaPrunerScheduler
from clear_tune.tune._trainable import BEST_METRIC, METRIC

OPTUNA_DB = "optuna.db"
PRUNER_DB = "pruner.db"  # the Optuna-pruner bridge's study: apart from optuna.db, which Ray's searcher owns
OPTUNA_PRUNERS = frozenset({"median", "percentile", "successive_halving", "optuna_hyperband", "wilcoxon"})


def optuna_storage_url(experiment_dir: str | Path) -> str:
    return f"sqlite:///{Path(experiment_dir).resolve() / OPTUNA_DB}"


def pruner_storage_url(experiment_dir: str | Path) -> str:
    return f"sqlite:///{Path(experiment_dir).resolve() / PRUNER_DB}"


def make_sampler(kind: str, seed: int | None) -> optuna.samplers.BaseSampler:
    samplers = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "qmc": optuna.samplers.QMCSampler,
        "gp": optuna.samplers.GPSampler,
    }
    return samplers[kind](seed=seed)


def make_searcher(spec: Spec, experiment_dir: str | Path) -> Any | None:
    """``OptunaSearch`` persisted to ``<experiment_dir>/optuna.db`` for optuna specs; None for grid."""
    if spec.model.search.kind != "optuna":
        return None
    Path(experiment_dir).mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(optuna_storage_url(experiment_dir))
    return PruneAwareOptunaSearch(
        space=OptunaSpace(spec),
        metric=BEST_METRIC,
        mode="max",
        sampler=make_sampler(spec.model.search.sampler, spec.model.search.seed),
        study_name=spec.name,
        storage=storage,
    )


class PruneAwareOptunaSearch(OptunaSearch):
    """Ray's ``OptunaSearch`` that tells Optuna a trial stopped by a scheduler is PRUNED, not COMPLETE.

    Ray's version marks every trial that reported a value COMPLETE, so trials cut short by ASHA or
    :class:`OptunaPrunerScheduler` would look like finished ones to TPE and in optuna-dashboard. Our
    trainable flags its last report with ``final``; a trial that ends without it was stopped from outside.
    """

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        stopped = result is not None and not error and not result.get("final") and not result.get("failed")
        if stopped and trial_id in self._ot_trials and trial_id not in self._completed_trials:
            self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result=result, error=error)


def make_scheduler(spec: Spec, *, storage: str | None = None) -> TrialScheduler:
    """The spec's scheduler; Optuna pruners come wrapped in :class:`OptunaPrunerScheduler`, whose study
    lives in ``storage`` (an RDB URL, study name = the experiment name) or, without one, in memory."""
    s = spec.model.scheduler
    max_t = s.max_t or spec.trainer.epochs
    common = {"time_attr": "epoch", "metric": METRIC, "mode": "max"}
    if s.kind == "fifo":
        return FIFOScheduler()
    if s.kind == "asha":
        return ASHAScheduler(max_t=max_t, grace_period=min(s.grace_period, max_t),
                             reduction_factor=s.reduction_factor, **common)
    if s.kind == "hyperband":
        return FinishingHyperBandScheduler(max_t=max_t, reduction_factor=s.reduction_factor, **common)
    pruner = make_pruner(s.kind, spec)
    return OptunaPrunerScheduler(pruner, metric=METRIC, mode="max", time_attr="epoch", storage=storage,
                                 study_name=spec.name if storage is not None else None)


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
    s = spec.model.scheduler
    if s.kind != "hyperband":
        return None
    max_t, eta = s.max_t or spec.trainer.epochs, s.reduction_factor
    # HyperBandScheduler's own bracket arithmetic (ray/tune/schedulers/hyperband.py)
    s_max_1 = int(round(math.log(max_t) / math.log(eta))) + 1
    if s_max_1 < 2 or int(max_t / eta) == 0:
        return (f"scheduler: hyperband with max_t {max_t} and reduction_factor {eta:g} has a single bracket "
                "and stops no trial; use asha, a larger max_t or a smaller reduction_factor")
    first, second = (math.ceil(s_max_1 / (b + 1) * eta**b) for b in (0, 1))
    needed = first + math.ceil(second / eta) + 1  # a full first bracket, then more than the second keeps
    if spec.model.max_concurrent < needed:
        return (f"scheduler: Ray's hyperband halves only trials that are live at the same time and max_concurrent "
                f"({spec.model.max_concurrent}) caps them, so it will stop few or no trials; set max_concurrent to "
                f"at least {needed} (Ray still runs only as many trials as the resources allow; the others wait) "
                "or use asha")
    if spec.expected_trials() < needed:
        return (f"scheduler: Ray's hyperband needs at least {needed} trials live at the same time to stop any, and "
                f"this search has {spec.expected_trials()}; use asha or an Optuna pruner")
    return None


def make_pruner(kind: str, spec: Spec) -> optuna.pruners.BasePruner:
    s = spec.model.scheduler
    max_t = s.max_t or spec.trainer.epochs
    warmup = s.grace_period  # Optuna may prune once step >= n_warmup_steps: the same as ASHA's grace period
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=s.n_startup_trials, n_warmup_steps=warmup,
                                           interval_steps=s.interval_steps)
    if kind == "percentile":
        return optuna.pruners.PercentilePruner(s.percentile, n_startup_trials=s.n_startup_trials,
                                               n_warmup_steps=warmup, interval_steps=s.interval_steps)
    if kind == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=s.grace_period,
                                                      reduction_factor=int(s.reduction_factor))
    if kind == "optuna_hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=s.grace_period, max_resource=max_t,
                                              reduction_factor=int(s.reduction_factor))
    if kind == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(p_threshold=s.p_threshold, n_startup_steps=s.grace_period)
    raise ValueError(f"unknown pruner {kind!r}")


def make_reporter(spec: Spec) -> CLIReporter:
    """Ray's progress table trimmed to trial, arm, backbone, k, λ, epoch, valid R@20 and best so far."""
    short = spec.metric.replace("recall", "R").replace("ndcg", "N").replace("precision", "P")
    return CLIReporter(
        metric_columns={"arm": "arm", "backbone": "backbone", "k": "k", "lambda": "λ", "epoch": "epoch",
                        METRIC: f"valid {short}", BEST_METRIC: "best"},
        parameter_columns=_NoColumns(),
        max_report_frequency=30,
        sort_by_metric=False,
        max_column_length=24,
    )


class _NoColumns(dict):
    """An empty but truthy column mapping: Ray shows no config columns (the metrics above say it all)."""

    def __bool__(self) -> bool:
        return True
