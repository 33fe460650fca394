"""The Ray Tune function trainable: one Ray trial = one group of trials trained as one model array.

A group (:class:`~clear_tune.spec.TrialGroup`) is one trial, or several fused trials whose configs differ
only in their projection and ``reg_weight``: one :class:`~clear_tune.train.Trainer` trains them all as the
members of one model array, each keeping its own trial key and record. The driver puts the dataset(s) in
Ray's object store ONCE (``tune.with_parameters``), so no trial process loads or generates data again.

Every evaluation is reported to Ray Tune: the best current and best-so-far valid score over the members
(``valid_score``, ``best_score``: what trial-level schedulers and Optuna's search read) and each member's own
numbers under ``members``, which the member-level schedulers (:mod:`clear_tune.tune._members`) judge. Their
verdicts come back through a Ray actor right after the report, and the trainer drops the pruned members.
A member that leaves (early stopping, max epochs, a pruning verdict, a non-finite loss) gets its final record
at once: the trainable writes it into a checkpoint (``records/<trial_id>.json``) and the driver's
:class:`~clear_tune.tune.RecordWriter` writes it into the experiment. Checkpoints also hold the full trainer
state (exact continuation after a pause, a preempted node or ``--resume``) and each live member's record so
far (``members/<trial_id>.json``), for a trial that Ray stops or gives up on.

A :class:`~clear_tune.errors.ClearTuneError` inside the trial (a config only found bad at run time) is NOT
an infrastructure fault: every unfinished member is recorded ``failed`` with its one-line reason and the
trial ends normally, so Ray does not retry it and the search goes on.

Example (what the harness does; see :func:`clear_tune.run.run_search`):
    >>> from ray import tune
    >>> trainable = tune.with_parameters(run_trial, datasets={...})   # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from clear_tune.records import (
    BEST_SCORE,
    USER_METRICS_SUFFIX,
    VALID_SCORE,
    MemberReport,
    Status,
    StopReason,
    TrialReport,
    dataset_summary,
    new_record,
    to_json,
    training_part,
    user_metrics_bytes,
)

TRAINER_FILE = "trainer.pt"
RECORD_FILE = "record.json"  # the group's own: when it started, how often it was restored
FINAL_DIR, LIVE_DIR = "records", "members"  # in a checkpoint: final member records, live members' so far
METRIC = VALID_SCORE  # the select metric at the reported epoch (best over the members): schedulers
BEST_METRIC = BEST_SCORE  # best-so-far of the select metric (over the members): what Optuna's search maximises


def dataset_key(source: str, options: dict[str, Any]) -> str:
    """How the driver and the trainable name one dataset (source + sorted options)."""
    return json.dumps([source, options], sort_keys=True)


def plan_of(param: dict[str, Any], trial_id: str):
    """The :class:`~clear_tune.spec.TrialPlan` of one trial's param (Optuna trials get their Ray id as suffix)."""
    from clear_tune.spec import TrialPlan, trial_key

    plan = TrialPlan.from_param({**param, "key": param.get("key") or "pending"})
    if not param.get("key"):
        plan = TrialPlan(plan.arm, trial_key(plan.arm, plan.config, suffix=trial_id), plan.config)
    return plan


def group_of(config: dict[str, Any], trial_id: str):
    """The :class:`~clear_tune.spec.TrialGroup` of a Ray trial config: a grid group, or one Optuna suggestion."""
    from clear_tune.spec import TrialGroup

    param = config["trial"]
    if "members" in param:
        return TrialGroup.from_param(param)
    plan = plan_of(param, trial_id)
    return TrialGroup(plan.key, (plan,))


def run_trial(
    config: dict[str, Any],
    *,
    datasets: dict[str, Any],
    recorded: frozenset[str] = frozenset(),
    cpus_per_trial: float = 1.0,
    checkpoint_every: int = 1,
    checkpoint_interval_s: float = 0.0,
    judged: str | None = None,
    plugins: tuple[Any, ...] = (),
) -> None:
    """Train one group, reporting every evaluation; see the module docstring. Checkpoints come with the first
    evaluation, whenever a member leaves, at the end, and otherwise every ``checkpoint_every`` evaluations once
    ``checkpoint_interval_s`` seconds have passed (a checkpoint costs ~10 ms: fast trials skip most). ``judged``:
    the mailbox actor of the member-level scheduler that judges the members (its verdicts are fetched after
    every report), or None. ``plugins``: the spec's (:mod:`clear_tune._plugins`), imported first, from their
    original files where this node sees them, else from the copies that came with the trial."""
    from ray import tune

    from clear_tune._plugins import load_plugins
    from clear_tune.errors import ClearTuneError

    load_plugins(list(plugins))
    group = group_of(config, tune.get_context().get_trial_id())
    if all(plan.key in recorded for plan in group.plans):
        return  # finished before an interruption (its records exist): nothing to train or report again
    run = _GroupRun(
        group,
        datasets,
        checkpoint_every=checkpoint_every,
        checkpoint_interval_s=checkpoint_interval_s,
        judged=judged,
        cpus=cpus_per_trial,
    )
    try:
        run.start(recorded)
        run.trainer.fit(run.on_epoch)
    except ClearTuneError as exc:
        run.fail_all(str(exc).splitlines()[0])


class _GroupRun:
    """One group's training inside its Ray trial: the trainer, where it runs, and what was reported."""

    def __init__(
        self,
        group: Any,
        datasets: dict[str, Any],
        *,
        checkpoint_every: int,
        checkpoint_interval_s: float,
        judged: str | None,
        cpus: float,
    ) -> None:
        import ray

        first = group.plans[0].config
        self.group, self.dataset = group, datasets[dataset_key(first.data, first.data_options)]
        self.checkpoint_every, self.checkpoint_interval_s, self.judged = checkpoint_every, checkpoint_interval_s, judged
        self.cpus = cpus  # the trial's CPUs: at most this many torch threads (several trials share a node)
        self.placement = {
            "node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": ray.util.get_node_ip_address(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        }
        self.meta = {"wall_start": time.time(), "restores": 0}
        self.trainer: Any = None
        self.final: dict[int, dict[str, Any]] = {}  # member index -> final record (cumulative, rides in checkpoints)
        self.verdicts: dict[int, str] = {}  # member index -> why a scheduler pruned it
        self.evaluations, self.last_checkpoint = 0, -math.inf

    def start(self, recorded: frozenset[str]) -> None:
        from ray import tune

        from clear_tune.train import Trainer

        self.trainer = Trainer([plan.config for plan in self.group.plans], self.dataset, cpu_budget=self.cpus)
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                if (Path(folder) / TRAINER_FILE).is_file():
                    self.trainer.load_checkpoint(Path(folder) / TRAINER_FILE)
                    saved = json.loads((Path(folder) / RECORD_FILE).read_text())
                    self.meta = {"wall_start": saved["wall_start"], "restores": saved.get("restores", 0) + 1}
                    for name in os.listdir(Path(folder) / FINAL_DIR):
                        record = json.loads((Path(folder) / FINAL_DIR / name).read_text())
                        self.final[self._index(record["trial_id"])] = record
        # members recorded by the driver after the checkpoint Ray restored: they never train again
        self.trainer.drop_members(
            [i for i, plan in enumerate(self.group.plans) if plan.key in recorded], StopReason.RECORDED
        )

    def _index(self, key: str) -> int:
        return next(i for i, plan in enumerate(self.group.plans) if plan.key == key)

    # ------------------------------------------------------------------------------------- per epoch
    def on_epoch(self, trainer: Any, report: Any) -> set[int] | None:
        last_epoch = report.epoch >= trainer.config.epochs
        leaving = [m for m in report.members if m.stop_reason is not None or last_epoch]
        if report.sec_eval is None and not leaving:
            return None  # not an evaluation epoch and nobody left: nothing new to report or prune on
        evaluated = [m for m in report.members if m.valid is not None]
        self.evaluations += bool(evaluated)
        for m in leaving:
            self.final[m.member] = self.member_record(m.member, m.stop_reason or StopReason.MAX_EPOCHS)
        live = len(report.members) - len(leaving)
        scores = [m.valid[trainer.members[m.member].config.select_metric] for m in evaluated]
        extra: dict[str, Any] = self.progress_columns(live)
        if len(self.group.plans) == 1 and evaluated:  # enough for the driver to extend a trial Ray stopped
            only = trainer.members[0]
            extra.update(
                {f"valid_{name}": value for name, value in evaluated[0].valid.items()},
                loss=report.loss,
                best_epoch=report.best_epoch,
                sec_train=report.sec_train,
                best_valid=dict(only.best_metrics["valid"]),
                best_test=dict(only.best_metrics["test"]),
                # gpu_ids (a list) stays out: Ray's TensorBoard logger cannot log lists; records have it
                trial_info={
                    "node_id": self.placement["node_id"],
                    "node_ip": self.placement["node_ip"],
                    **self.meta,
                    "device": str(trainer.device),
                },
            )
        trial_report = TrialReport(
            epoch=report.epoch,
            valid_score=max(scores, default=math.nan),
            best_score=max((p.best_valid for p in trainer.members if p.best_valid > -math.inf), default=math.nan),
            final=live == 0,  # the trainer stopped on its own; without it a scheduler stopped the trial
            group=self.group.key,
            members={self.group.plans[m.member].key: self._member_report(trainer, m) for m in report.members},
            extra=extra,
        )
        due = (
            self.evaluations - 1
        ) % self.checkpoint_every == 0 and time.monotonic() - self.last_checkpoint >= self.checkpoint_interval_s
        self._report(trial_report, checkpoint=bool(leaving) or self.evaluations == 1 or due)
        if live == 0 or not self.judged or not evaluated:
            return None
        pruned = self._take_verdicts(trainer)
        if pruned:  # their records, at once: re-report this epoch with them as left
            members = dict(trial_report.members)
            for m in pruned:
                key = self.group.plans[m].key
                members[key] = replace(members[key], left=True, status=Status.PRUNED)
            self._report(replace(trial_report, members=members, records_only=True), checkpoint=True)
        return set(pruned) or None

    def _member_report(self, trainer: Any, m: Any) -> MemberReport:
        progress = trainer.members[m.member]
        final = self.final.get(m.member)
        return MemberReport(
            evaluated=m.valid is not None,
            valid_score=m.valid[progress.config.select_metric] if m.valid else None,
            best_score=m.best_valid if m.best_valid > -math.inf else None,
            best_epoch=m.best_epoch,
            left=final is not None,
            status=None if final is None else Status(final["status"]),
        )

    def _take_verdicts(self, trainer: Any) -> list[int]:
        """Members the scheduler pruned on this report (its verdicts, through the mailbox actor); their records."""
        import ray

        from clear_tune.tune._members import verdicts_actor

        verdicts = ray.get(verdicts_actor(self.judged).take.remote(self.group.key))
        pruned = []
        for key, reason in verdicts.items():
            m = self._index(key)
            if m in self.final or m not in trainer.live:
                continue
            trainer.prune(m, reason)
            self.final[m] = self.member_record(m, StopReason.PRUNED, reason=reason)
            pruned.append(m)
        return pruned

    # ------------------------------------------------------------------------------------ records
    def member_record(self, m: int, stop_reason: StopReason | str, *, reason: str | None = None) -> dict[str, Any]:
        """Member ``m``'s record: final for ``early_stop``/``max_epochs``/``failed``/``pruned``, else so far."""
        progress, plan = self.trainer.members[m], self.group.plans[m]
        known = stop_reason if isinstance(stop_reason, StopReason) else None  # "live": a record so far
        status = known.status.value if known is not None and known.status is not None else None
        reason = reason or (progress.failed_reason if known == StopReason.FAILED else str(stop_reason))
        return new_record(
            **self.trainer.result(m),
            trial_id=plan.key,
            arm=plan.arm,
            status=status,
            reason=reason,
            fused=self._fused(progress),
            **self.placement,
            wall_start=self.meta["wall_start"],
            wall_end=time.time(),
        )

    def _fused(self, progress: Any) -> dict[str, Any] | None:
        n = len(self.group.plans)
        return None if n == 1 else {"group": self.group.key, "members": n, "share_s": round(progress.share_s, 6)}

    def fail_all(self, reason: str) -> None:
        """A config only found bad at run time: every member without a final record fails with ``reason``."""
        for m, plan in enumerate(self.group.plans):
            if m in self.final:
                continue
            if self.trainer is not None:
                record = self.member_record(m, StopReason.FAILED, reason=reason)
            else:
                record = new_record(
                    **training_part(config=plan.config.model_dump(), dataset=dataset_summary(self.dataset)),
                    trial_id=plan.key,
                    arm=plan.arm,
                    status=Status.FAILED.value,
                    reason=reason,
                    **self.placement,
                    wall_start=self.meta["wall_start"],
                    wall_end=time.time(),
                )
            self.final[m] = record
        epoch = self.trainer.epoch if self.trainer is not None else 0
        self._report(
            TrialReport(
                epoch=epoch,
                valid_score=math.nan,
                best_score=math.nan,
                final=True,
                group=None,
                members={},
                failed=reason,
                extra=self.progress_columns(0),
            ),
            checkpoint=True,
            with_trainer=False,
        )

    def _report(self, report: TrialReport, *, checkpoint: bool, with_trainer: bool = True) -> None:
        from ray import tune

        metrics = report.flatten()  # the one place a report becomes Ray's dict
        if not checkpoint:
            tune.report(metrics)
            return
        self.last_checkpoint = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="clear_tune_ckpt_") as folder:
            if with_trainer:
                self.trainer.save_checkpoint(os.path.join(folder, TRAINER_FILE), durable=False)  # Ray persists it
            for sub in (FINAL_DIR, LIVE_DIR):
                os.mkdir(os.path.join(folder, sub))
            for m, record in self.final.items():
                _write_json(os.path.join(folder, FINAL_DIR, f"{self.group.plans[m].key}.json"), record)
                per_user = self.trainer.members[m].best_per_user if self.trainer is not None else None
                if per_user:  # the member's per-user values at its best epoch, beside its record
                    path = os.path.join(folder, FINAL_DIR, f"{self.group.plans[m].key}{USER_METRICS_SUFFIX}")
                    with open(path, "wb") as fh:
                        fh.write(user_metrics_bytes(per_user))
            if self.trainer is not None:
                for m in self.trainer.live:
                    if m not in self.final:
                        _write_json(
                            os.path.join(folder, LIVE_DIR, f"{self.group.plans[m].key}.json"),
                            self.member_record(m, "live"),
                        )
            _write_json(os.path.join(folder, RECORD_FILE), self.meta)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    def progress_columns(self, live: int) -> dict[str, Any]:
        """What the progress table shows of the group: arm, backbone, k, λ (ranges for a group), members."""
        plans = self.group.plans
        ks = sorted({p.config.projection.k for p in plans if p.config.projection.active})
        lambdas = sorted({p.config.projection.strength for p in plans})

        def span(values: list[float]) -> str:
            if not values:
                return "-"
            return f"{values[0]:g}" if len(values) == 1 else f"{values[0]:g}..{values[-1]:g}"

        return {
            "arm": "/".join(sorted({p.arm for p in plans})),
            "backbone": plans[0].config.backbone,
            "k": span(ks),
            "lambda": span(lambdas),
            "live": f"{live}/{len(plans)}",
        }


def _write_json(path: str, value: Any) -> None:
    with open(path, "w") as fh:
        fh.write(to_json(value, indent=None))
