"""Schedulers that judge the members of fused trials, and the mailbox that carries their verdicts back.

A fused Ray trial trains several trials (members) in one model array, so Ray's trial-level decisions (STOP,
PAUSE) cannot prune one member. The member-level schedulers read each member's numbers from a result's
``members`` entry (``clear_tune.tune._trainable``), apply their rule to each member exactly as they would to
a trial, and post the members to prune to :class:`Verdicts`, a Ray actor; the trainable takes them right
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


def post_verdicts(name: str, group: str, verdicts: dict[str, str]) -> None:
    """Post ``verdicts`` (member key -> reason) for ``group`` and wait until the mailbox has them."""
    import ray

    if verdicts:
        ray.get(verdicts_actor(name).post.remote(group, verdicts))


def member_results(result: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """The members of a fused trial's result (None for a plain trial's). Ray hands schedulers and searchers
    results flattened (``members/<trial key>/<field>``; trial keys hold no ``/``), so both forms are read.
    A ``records_only`` result re-reports an epoch whose records just changed (members a scheduler pruned):
    nothing in it is judged again, but its members' ``left``/``status`` are news."""
    members = result.get("members")
    if members is None:
        flat = [(key.split("/", 2), value) for key, value in result.items() if key.startswith("members/")]
        if not flat:
            return None
        members = {}
        for (_, trial_key, name), value in flat:
            members.setdefault(trial_key, {})[name] = value
    return members


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
            return cutoff is not None and value < cutoff
        return False


class MemberASHAScheduler(ASHAScheduler):
    """Ray's ASHA for plain trials; for a fused trial, the same rung rule applied to each member.

    ``verdicts`` names the mailbox actor (:func:`start_verdicts`); members stopped by the rule, or reaching
    ``max_t``, are posted there with the reason their record gives.
    """

    def __init__(self, *, verdicts: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._verdicts = verdicts
        self._member_rungs = Rungs(min_t=kwargs.get("grace_period", 1), max_t=kwargs["max_t"],
                                   reduction_factor=kwargs.get("reduction_factor", 4))

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        members = member_results(result)
        if members is None:
            return super().on_trial_result(tune_controller, trial, result)
        if result.get("records_only"):
            return TrialScheduler.CONTINUE
        epoch, verdicts = result[self._time_attr], {}
        for key, member in members.items():
            value = member.get("valid_score")
            if value is None:
                continue
            stop = self._member_rungs.judge(key, epoch, self._metric_op * value)
            if member["left"]:
                continue  # finished this epoch: its value counts for the others, it needs no verdict
            if stop or epoch >= self._max_t:
                verdicts[key] = f"stopped by the asha scheduler at epoch {epoch}"
        post_verdicts(self._verdicts, result["group"], verdicts)
        self._num_stopped += len(verdicts)
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> None:
        if result is not None and "members" in result:
            self._trial_info.pop(trial.trial_id, None)  # members were judged (and recorded) result by result
            return
        super().on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._trial_info.pop(trial.trial_id, None)
