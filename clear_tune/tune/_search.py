"""Search algorithms: the full grid needs none; ``search.kind: optuna`` is Ray Tune's ``OptunaSearch``.

Optuna search runs over :class:`~clear_tune.spec.OptunaSpace` (define-by-run), with the spec's sampler (TPE by
default) seeded by ``search.seed``, and its study persisted in ``<experiment>/optuna.db`` (Optuna RDB storage on
SQLite) so that ``optuna-dashboard sqlite:///.../optuna.db`` opens it.

Example:
    >>> from clear_tune.tune import make_sampler
    >>> type(make_sampler("tpe", 0)).__name__
    'TPESampler'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from clear_tune.experiment import OPTUNA_DB
from clear_tune.spec import OptunaSpace, Spec
from clear_tune.tune._trainable import BEST_METRIC


def optuna_storage_url(study_dir: str | Path) -> str:
    return f"sqlite:///{Path(study_dir).resolve() / OPTUNA_DB}"


def make_sampler(kind: str, seed: int | None) -> optuna.samplers.BaseSampler:
    samplers = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "qmc": optuna.samplers.QMCSampler,
        "gp": optuna.samplers.GPSampler,
    }
    return samplers[kind](seed=seed)


def make_searcher(spec: Spec, study_dir: str | Path) -> Any | None:
    """``OptunaSearch`` persisted to ``<study_dir>/optuna.db`` for optuna specs; None for grid."""
    if spec.settings.search.kind != "optuna":
        return None
    Path(study_dir).mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(optuna_storage_url(study_dir))
    return PruneAwareOptunaSearch(
        space=OptunaSpace(spec),
        metric=BEST_METRIC,
        mode="max",
        sampler=make_sampler(spec.settings.search.sampler, spec.settings.search.seed),
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
