"""Optuna's pruners inside Ray Tune: :class:`OptunaPrunerScheduler`, a ``TrialScheduler`` bridge.

Ray Tune has ASHA and HyperBand but not Optuna's pruners (median, percentile, successive halving,
hyperband, Wilcoxon). The bridge keeps its own Optuna study: every Ray trial gets an Optuna trial
(``study.ask()``), each reported intermediate value (``metric`` at step ``time_attr``, the epoch) is
``trial.report``-ed, and when ``trial.should_prune()`` says so the Ray trial is STOPPED. Finished Ray
trials are told to the study as COMPLETE (their last value), stopped ones as PRUNED, errored ones as FAIL,
so the pruner compares each running trial with the finished ones exactly as in a plain Optuna loop.

Example:
    >>> import optuna
    >>> from clear_tune.tune import OptunaPrunerScheduler
    >>> scheduler = OptunaPrunerScheduler(optuna.pruners.MedianPruner(n_startup_trials=2),
    ...                                   metric="valid_score", mode="max")
    >>> scheduler.debug_string()
    'OptunaPrunerScheduler(MedianPruner): 0 running, 0 pruned'
"""

from __future__ import annotations

import math
import pickle
from typing import TYPE_CHECKING, Any

import optuna
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController


class OptunaPrunerScheduler(FIFOScheduler):
    """Stop Ray Tune trials that an Optuna ``pruner`` would prune (trials are run in FIFO order)."""

    def __init__(
        self,
        pruner: optuna.pruners.BasePruner,
        *,
        metric: str,
        mode: str = "max",
        time_attr: str = "epoch",
        storage: optuna.storages.BaseStorage | str | None = None,
        study_name: str | None = None,
    ) -> None:
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
        self._metric, self._mode, self._time_attr = metric, mode, time_attr
        self._pruner = pruner
        self._study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            load_if_exists=study_name is not None,
            pruner=pruner,
            direction="maximize" if mode == "max" else "minimize",
        )
        self._trials: dict[str, optuna.Trial] = {}
        self._last_value: dict[str, float] = {}
        self._last_step: dict[str, int] = {}
        self.pruned: dict[str, int] = {}  # Ray trial id -> step (epoch) at which it was pruned

    @property
    def study(self) -> optuna.Study:
        return self._study

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        # Metric and mode are fixed at construction; accept a matching TuneConfig.
        return (metric is None or metric == self._metric) and (mode is None or mode == self._mode)

    def on_trial_add(self, tune_controller: "TuneController", trial: Trial) -> None:
        if trial.trial_id not in self._trials:
            self._trials[trial.trial_id] = self._study.ask()

    def on_trial_result(self, tune_controller: "TuneController", trial: Trial, result: dict[str, Any]) -> str:
        if trial.trial_id not in self._trials:  # e.g. a trial restored into a fresh scheduler
            self.on_trial_add(tune_controller, trial)
        value, step = result.get(self._metric), result.get(self._time_attr)
        if value is None or step is None or (isinstance(value, float) and math.isnan(value)):
            return TrialScheduler.CONTINUE
        step = int(step)
        ot_trial = self._trials[trial.trial_id]
        if self._last_step.get(trial.trial_id) != step:  # Optuna ignores a repeated step anyway
            ot_trial.report(float(value), step)
            self._last_step[trial.trial_id] = step
            self._last_value[trial.trial_id] = float(value)
        if ot_trial.should_prune():
            self.pruned[trial.trial_id] = step
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: "TuneController", trial: Trial, result: dict[str, Any]) -> None:
        self._finish(trial.trial_id, failed=False)

    def on_trial_error(self, tune_controller: "TuneController", trial: Trial) -> None:
        self._finish(trial.trial_id, failed=True)

    def on_trial_remove(self, tune_controller: "TuneController", trial: Trial) -> None:
        self._finish(trial.trial_id, failed=True)

    def _finish(self, trial_id: str, *, failed: bool) -> None:
        ot_trial = self._trials.pop(trial_id, None)
        if ot_trial is None:
            return
        value = self._last_value.get(trial_id)
        if failed or value is None:
            self._study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)
        elif trial_id in self.pruned:
            self._study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
        else:
            self._study.tell(ot_trial, value)

    def debug_string(self) -> str:
        return f"OptunaPrunerScheduler({type(self._pruner).__name__}): {len(self._trials)} running, {len(self.pruned)} pruned"

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(self.__dict__, fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            self.__dict__.update(pickle.load(fh))
