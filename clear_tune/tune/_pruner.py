"""Optuna's pruners inside Ray Tune: :class:`OptunaPrunerScheduler`, a ``TrialScheduler`` bridge.

Ray Tune has ASHA and HyperBand but not Optuna's pruners (median, percentile, successive halving,
hyperband, Wilcoxon). The bridge keeps its own Optuna study: every Ray trial gets an Optuna trial
(``study.ask()``, the Ray trial id kept as the user attr ``ray_trial_id``), each reported intermediate
value (``metric`` at step ``time_attr``, the epoch) is ``trial.report``-ed, and when
``trial.should_prune()`` says so the Ray trial is STOPPED. Finished Ray trials are told to the study as
COMPLETE (their last value), stopped ones as PRUNED, errored ones as FAIL, so the pruner compares each
running trial with the finished ones exactly as in a plain Optuna loop. The members of a fused trial
(:mod:`clear_tune.tune._members`) are judged the same way, one Optuna trial per member (keyed by its trial
key), and pruned through the verdicts mailbox instead of a STOP.

Surviving ``--resume``: Ray Tune never saves or restores a scheduler's state. ``Tuner.restore`` takes the
scheduler from ``tuner.pkl``, which Ray pickles once when the Tuner is BUILT, before any trial ran
(ray 2.60: ``TunerInternal.__init__`` writes it; ``_restore_from_path_or_uri`` unpickles ``_tune_config``
with it; ``TuneController.__getstate__`` leaves ``_scheduler_alg`` out of the experiment state and never
calls ``TrialScheduler.save``/``restore``). An in-memory study therefore comes back empty, and a median
pruner would prune nothing until ``n_startup_trials`` NEW trials finish. So give the bridge an RDB
``storage`` (SQLite: the harness uses ``<experiment>/pruner.db``) and a fixed ``study_name``: the study is
loaded when it exists, finished trials stay as history, and a Ray trial that comes back re-attaches to its
own RUNNING Optuna trial (the steps it reported are already there). The pickle holds only the storage URL,
never an open study, and :meth:`OptunaPrunerScheduler.relocate` points a restored bridge at the study's
current place. Trials left RUNNING by a Ray trial that never comes back are ignored by Optuna's pruners;
:func:`fail_running_trials` marks them FAIL once a search is complete.

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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from clear_tune.experiment import PRUNER_DB
from clear_tune.records import MemberReport, Status, TrialReport
from clear_tune.tune._members import MemberJudge

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController

RAY_TRIAL_ID = "ray_trial_id"  # Optuna user attr: the Ray trial an Optuna trial belongs to


def pruner_storage_url(study_dir: str | Path) -> str:
    """The bridge's study, ``<study_dir>/pruner.db`` (beside Ray's searcher's ``optuna.db``), as an RDB URL."""
    return f"sqlite:///{Path(study_dir).resolve() / PRUNER_DB}"


_RUNNING = optuna.trial.TrialState.RUNNING


class OptunaPrunerScheduler(MemberJudge, FIFOScheduler):
    """Stop Ray Tune trials that an Optuna ``pruner`` would prune (trials are run in FIFO order).

    ``storage`` (an RDB URL such as ``sqlite:///.../pruner.db``, or an ``RDBStorage``) with a ``study_name``
    keeps the pruner's history across ``Tuner.restore``; without it the study lives in memory.
    """

    _metric: str  # always given here (Ray's base class allows None)

    def __init__(
        self,
        pruner: optuna.pruners.BasePruner,
        *,
        metric: str,
        mode: str = "max",
        time_attr: str = "epoch",
        storage: optuna.storages.BaseStorage | str | None = None,
        study_name: str | None = None,
        verdicts: str | None = None,
    ) -> None:
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
        self._metric, self._mode, self._time_attr = metric, mode, time_attr
        self._pruner = pruner
        # Keep the URL, not the storage object: see __getstate__.
        self._storage = storage.url if isinstance(storage, optuna.storages.RDBStorage) else storage
        self._study_name = study_name
        self._verdicts = verdicts  # the mailbox actor fused trials take their members' verdicts from
        self._study: optuna.Study | None = None
        self._reset_attachments()
        self.pruned: dict[str, int] = {}  # Ray trial id -> step (epoch) at which it was pruned
        _ = self.study  # open (or create) it now: a bad storage fails before any trial runs

    def _reset_attachments(self) -> None:
        self._members_of: dict[str, set[str]] = {}  # Ray trial id -> the fused members judged in it
        self._trials: dict[str, optuna.Trial] = {}  # Ray trial id (or member key) -> its RUNNING Optuna trial
        self._history: dict[str, optuna.trial.FrozenTrial] | None = None  # the study's trials by Ray id, lazily
        self._finished: set[str] = set()  # Ray ids told to the study by this process
        self._last_value: dict[str, float] = {}
        self._reported: dict[str, set[int]] = {}  # Ray id -> steps already in the Optuna trial

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            self._study = optuna.create_study(
                storage=self._storage,
                study_name=self._study_name,
                load_if_exists=self._study_name is not None,
                pruner=self._pruner,
                sampler=optuna.samplers.RandomSampler(),  # never samples: Ray's searcher picks the configs
                direction="maximize" if self._mode == "max" else "minimize",
            )
        return self._study

    def relocate(self, storage: str, *, study_name: str) -> None:
        """Use the study ``study_name`` at ``storage`` from now on: after ``Tuner.restore`` the experiment
        (and its study) may have moved, while the bridge unpickled from ``tuner.pkl`` names the old URL."""
        self._storage, self._study_name, self._study = storage, study_name, None
        self._reset_attachments()
        _ = self.study

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        # Metric and mode are fixed at construction; accept a matching TuneConfig.
        return (metric is None or metric == self._metric) and (mode is None or mode == self._mode)

    def on_trial_add(self, tune_controller: TuneController, trial: Trial) -> None:
        if isinstance(getattr(trial, "config", None), dict) and "trial" in trial.config:
            return  # the harness's trials report their members: each gets its Optuna trial when it first reports
        self._attach(trial.trial_id, finished=trial.status in (Trial.TERMINATED, Trial.ERROR))

    def _attach(self, tid: str, *, finished: bool = False) -> optuna.Trial | None:
        """The RUNNING Optuna trial of ``tid`` (a Ray trial id, or a fused member's trial key): its own from the
        study after a restore, else a new one. None for one whose Optuna trial is already finished (history:
        it is never reported to again)."""
        if tid in self._trials:
            return self._trials[tid]
        if tid in self._finished:
            return None
        if self._history is None:  # once per process: a restored trial finds its Optuna trial here
            self._history = {
                t.user_attrs[RAY_TRIAL_ID]: t
                for t in self.study.get_trials(deepcopy=False)
                if RAY_TRIAL_ID in t.user_attrs
            }
        known = self._history.get(tid)
        if known is not None and known.state != _RUNNING:
            if known.state == optuna.trial.TrialState.PRUNED:  # Ray's saved state lagged the prune: stop it again
                self.pruned.setdefault(tid, max(known.intermediate_values, default=0))
            return None
        if known is not None:
            # FrozenTrial has no public handle back to a live Trial; Optuna's own code uses _trial_id too.
            ot_trial = optuna.trial.Trial(self.study, known._trial_id)
            self._reported[tid] = set(known.intermediate_values)
            if known.intermediate_values:
                self._last_value[tid] = known.intermediate_values[max(known.intermediate_values)]
        elif finished:
            return None  # restored as finished but unknown to the study: nothing to compare it with now
        else:
            ot_trial = self.study.ask()
            ot_trial.set_user_attr(RAY_TRIAL_ID, tid)
            self._reported[tid] = set()
        self._trials[tid] = ot_trial
        return ot_trial

    def _judge(self, tid: str, step: int, value: Any) -> bool | None:
        """Report ``value`` at ``step`` for ``tid``; True when the pruner prunes it, None when it is history."""
        ot_trial = self._attach(tid)
        if ot_trial is None:  # finished in the study already: never reported to again
            return None
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        reported = self._reported[tid]
        if step not in reported:  # a trial resumed from an older checkpoint repeats steps; Optuna would warn
            ot_trial.report(float(value), step)
            reported.add(step)
            self._last_value[tid] = float(value)
        if ot_trial.should_prune():
            self.pruned[tid] = step
            return True
        return False

    def on_trial_result(self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]) -> str:
        report = TrialReport.from_result(result)
        step = result.get(self._time_attr)
        if not report.fused:  # a plain trial: judged, and stopped, as a whole
            if step is None:
                return TrialScheduler.CONTINUE
            verdict = self._judge(trial.trial_id, int(step), result.get(self._metric))
            if verdict is None:
                return TrialScheduler.STOP if trial.trial_id in self.pruned else TrialScheduler.CONTINUE
            return TrialScheduler.STOP if verdict else TrialScheduler.CONTINUE
        self._members_of.setdefault(trial.trial_id, set()).update(report.members)
        self.judge_members(report)
        return TrialScheduler.CONTINUE

    def judge_member(self, key: str, epoch: int, member: MemberReport, *, records_only: bool) -> bool:
        if member.left:  # its record is written with this result: it now counts as finished
            if member.status != Status.PRUNED:
                self.pruned.pop(key, None)
            self._finish(key, failed=member.status == Status.FAILED)
            return False
        if records_only or member.valid_score is None:
            return False
        verdict = self._judge(key, epoch, member.valid_score)
        if verdict is None:  # pruned before an interruption that Ray's saved state lagged: prune it again
            verdict = key in self.pruned
        return verdict  # told PRUNED when its record comes back (the records_only result), not before

    @property
    def verdict_name(self) -> str:  # type: ignore[override]
        return type(self._pruner).__name__

    def on_trial_complete(self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]) -> None:
        for tid in self._members_of.pop(trial.trial_id, {trial.trial_id}):
            self._finish(tid, failed=False)

    def on_trial_error(self, tune_controller: TuneController, trial: Trial) -> None:
        for tid in self._members_of.pop(trial.trial_id, {trial.trial_id}):
            self._finish(tid, failed=True)

    def on_trial_remove(self, tune_controller: TuneController, trial: Trial) -> None:
        for tid in self._members_of.pop(trial.trial_id, {trial.trial_id}):
            self._finish(tid, failed=True)

    def _finish(self, tid: str, *, failed: bool) -> None:
        ot_trial = self._trials.pop(tid, None)
        if ot_trial is None:
            return
        self._finished.add(tid)
        value = self._last_value.get(tid)
        if failed or value is None:
            self.study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)
        elif tid in self.pruned:
            self.study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
        else:
            self.study.tell(ot_trial, value)

    def debug_string(self) -> str:
        return (
            f"OptunaPrunerScheduler({type(self._pruner).__name__}): "
            f"{len(self._trials)} running, {len(self.pruned)} pruned"
        )

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles the scheduler into tuner.pkl. An RDB study must not travel in it: unpickling one
        # reconnects at once, creating tables at a path that may be gone after a move. Live Optuna trials
        # are re-attached by Ray trial id instead.
        state = self.__dict__.copy()
        state.update(_trials={}, _history=None, _finished=set(), _last_value={}, _reported={}, _members_of={})
        if self._storage is not None:
            state["_study"] = None
        return state

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(self.__getstate__(), fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            self.__dict__.update(pickle.load(fh))


def fail_running_trials(storage: str, study_name: str) -> int:
    """Mark FAIL every Optuna trial still RUNNING in the bridge's study; returns how many.

    Call it only once a search is complete: before that, a RUNNING trial may belong to a Ray trial that an
    interrupted run will resume. Optuna's pruners ignore RUNNING trials, so this only tidies the history
    (``optuna-dashboard``, a later analysis), it changes no pruning decision.
    """
    study = optuna.load_study(study_name=study_name, storage=storage)
    running = study.get_trials(deepcopy=False, states=(_RUNNING,))
    for trial in running:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(running)
