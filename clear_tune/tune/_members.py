"""Schedulers that judge the members of fused trials, and the mailbox that carries their verdicts back.

A fused Ray trial trains several trials (members) in one model array, so Ray's trial-level decisions (STOP,
PAUSE) cannot prune one member. The member-level schedulers (:class:`MemberJudge`) read each member's
numbers from the result (:class:`~clear_tune.records.TrialReport`), apply their rule to each member exactly as
they would to a trial, and post the members to prune to a mailbox, a Ray actor; the trainable takes them right
after its report (Ray Tune processes a result, scheduler included, before the trial continues) and drops
those members, recording them as pruned. A result without ``members`` (a plain function trainable) is judged
as a trial, as Ray's own scheduler would.

:class:`MemberASHAScheduler` is Ray's ``ASHAScheduler`` (one bracket, as the harness configures it) with
the same rung rule per member: a member reaching a rung it has no value at is stopped when its value is below
the ``1 - 1/reduction_factor`` quantile of the values recorded there. Optuna's pruners judge members through
:class:`~clear_tune.tune.OptunaPrunerScheduler`, one Optuna trial per member.

Example:
    >>> rungs = Rungs(min_t=1, max_t=9, reduction_factor=3)
    >>> [rungs.judge(key, 1, value) for key, value in (("a", 0.5), ("b", 0.2), ("c", 0.9))]
    [False, True, False]
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from clear_tune.records import MemberReport, TrialReport, stopped_by

VERDICTS_PREFIX = "clear_tune_verdicts:"


def verdicts_name(experiment: str) -> str:
    """The mailbox actor's name for one experiment (two searches on one cluster never share one)."""
    return f"{VERDICTS_PREFIX}{experiment}"


class _Verdicts:
    """Pending prunes per group: the scheduler posts, the group's trainable takes."""

    def __init__(self) -> None:
        self._pending: dict[str, dict[str, str]] = {}

    def post(self, group: str, verdicts: dict[str, str]) -> None:
        self._pending.setdefault(group, {}).update(verdicts)

    def take(self, group: str) -> dict[str, str]:
        return self._pending.pop(group, {})


_actor_name: str | None = None  # in a trial process: the mailbox this process's trials use


def start_verdicts(name: str) -> Any:
    """Create (or find) the mailbox actor ``name`` on the connected cluster; it ends with the driver."""
    import ray

    return ray.remote(num_cpus=0)(_Verdicts).options(name=name, get_if_exists=True).remote()


def verdicts_actor(name: str | None = None) -> Any:
    """The mailbox actor ``name`` (the last one used in this process when None)."""
    import ray

    global _actor_name
    _actor_name = name or _actor_name
    if _actor_name is None:
        raise RuntimeError("no verdicts mailbox: the harness starts one with start_verdicts()")
    return ray.get_actor(_actor_name)


def post_verdicts(name: str | None, group: str, verdicts: dict[str, str]) -> None:
    """Post ``verdicts`` (member key -> reason) for ``group`` and wait until the mailbox has them."""
    import ray

    if verdicts:
        ray.get(verdicts_actor(name).post.remote(group, verdicts))


class MemberJudge:
    """The base of the member-level schedulers: a fused trial's members judged one by one, as trials would be,
    the members to prune posted to the mailbox (``verdicts``, :func:`start_verdicts`) with the reason their
    records give. Subclasses implement :meth:`judge_member`."""

    verdict_name: str = "member-level"  # the scheduler's name in a pruned member's record
    _verdicts: str | None = None

    def judge_members(self, report: TrialReport) -> dict[str, str]:
        """Judge every member of ``report`` (also ``records_only`` reports: members that left are news); post
        and return the verdicts, member key -> reason."""
        verdicts = {}
        for key, member in report.members.items():
            if self.judge_member(key, report.epoch, member, records_only=report.records_only) and not member.left:
                verdicts[key] = stopped_by(self.verdict_name, report.epoch)
        if report.group is not None:
            post_verdicts(self._verdicts, report.group, verdicts)
        return verdicts

    def judge_member(self, key: str, epoch: int, member: MemberReport, *, records_only: bool) -> bool:
        """Take ``member``'s report into account; True to prune it (ignored for a member that left)."""
        raise NotImplementedError


class Rungs:
    """Ray's single-bracket ASHA rungs (``ray.tune.schedulers.async_hyperband._Bracket``), keyed by any id."""

    def __init__(self, *, min_t: int, max_t: int, reduction_factor: float) -> None:
        self.rf = reduction_factor
        n_rungs = int(np.log(max_t / min_t) / np.log(self.rf) + 1)
        self.rungs: list[tuple[float, dict[str, float]]] = [(min_t * self.rf**k, {}) for k in reversed(range(n_rungs))]

    def judge(self, key: str, t: float, value: float) -> bool:
        """Record ``value`` at the highest rung ``t`` reached that ``key`` has no value at; True to stop it."""
        for milestone, recorded in self.rungs:
            if t < milestone or key in recorded:
                continue
            cutoff = np.nanpercentile(list(recorded.values()), (1 - 1 / self.rf) * 100) if recorded else None
            recorded[key] = value
            return bool(cutoff is not None and value < cutoff)
        return False


class MemberASHAScheduler(MemberJudge, ASHAScheduler):
    """Ray's ASHA for plain trials; for a fused trial, the same rung rule applied to each member.

    ``verdicts`` names the mailbox actor (:func:`start_verdicts`); members stopped by the rule, or reaching
    ``max_t``, are posted there with the reason their record gives.
    """

    verdict_name = "asha"

    def __init__(self, *, verdicts: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._verdicts = verdicts
        self._member_rungs = Rungs(
            min_t=kwargs.get("grace_period", 1),
            max_t=kwargs["max_t"],
            reduction_factor=kwargs.get("reduction_factor", 4),
        )

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        report = TrialReport.from_result(result)
        if not report.fused:
            return super().on_trial_result(tune_controller, trial, result)
        verdicts = self.judge_members(report)
        self._num_stopped += len(verdicts)
        return TrialScheduler.CONTINUE

    def judge_member(self, key: str, epoch: int, member: MemberReport, *, records_only: bool) -> bool:
        if records_only or member.valid_score is None:
            return False
        # a member that leaves at this epoch still counts at the rung for the others
        assert self._metric_op is not None  # set with the mode (here, or by set_search_properties)
        stop = self._member_rungs.judge(key, epoch, self._metric_op * member.valid_score)
        return stop or epoch >= self._max_t

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> None:
        if result is not None and TrialReport.from_result(result).fused:
            self._trial_info.pop(trial.trial_id, None)  # members were judged (and recorded) result by result
            return
        super().on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._trial_info.pop(trial.trial_id, None)
