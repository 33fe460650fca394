"""Experiment tracking on Ray Tune's own logger callbacks: one MLflow / W&B run per TRIAL, fused or not.

``tracking: {mlflow: URI, wandb: {project: ...}, tensorboard: true|false}`` adds the callbacks of
:func:`tracking_callbacks` after the :class:`~clear_tune.tune.RecordWriter`. Ray's callbacks open one run per
RAY trial, which here is a group of fused trials (:mod:`clear_tune.tune._trainable`); their subclasses below
(reusing Ray's setup, MLflow client, W&B logging actor and clean-up) open one run per MEMBER, named by its
trial key, from what the driver gets anyway:

- params: its config, flattened (``projection/k``); tags: ``experiment``, ``trial_key``, ``arm``, ``backbone``,
  ``group`` (fused members) and, once it ends, ``status`` and ``reason``;
- each evaluation it reports (``result["members"][key]``), at step = epoch: ``valid_score`` and ``best_score``
  (the select metric); an unfused trial's results also carry ``loss`` and every ``valid/<metric>``;
- when the writer writes its final record (``writer.written``; records come in checkpoints, or when the Ray
  trial ends): the rest of its curve (``loss``, ``valid/<metric>`` of each evaluation not logged yet), the
  final ``best/valid/<metric>``, ``best/test/<metric>``, ``best_epoch``, ``epochs_run``; then the run ends
  (MLflow: FINISHED, KILLED when pruned, FAILED).

Metric names spell ``@`` as ``_at_`` (``valid/recall_at_20``; MLflow allows no ``@``). W&B: one logging actor
per Ray trial, as in Ray, holding one W&B run per member (``reinit="create_new"``), ``epoch`` the x-axis, files
in ``<experiment>/wandb`` (``wandb sync`` offline runs from there). MLflow runs survive ``--resume`` (the
callback's state rides in Ray's experiment state); W&B opens new runs for members that train again.
``tensorboard: false`` passes a no-op ``TBXLoggerCallback``, so Ray adds only its CSV and JSON loggers; true
passes one that skips lists of non-numbers (``trial_info.gpu_ids``, which Ray's warns about).

Example:
    >>> from clear_tune.tune import tracking_callbacks
    >>> callbacks = tracking_callbacks(spec, writer)   # [TBX logger, MLflow?, W&B?]   # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

from ray.tune.logger import TBXLoggerCallback

from clear_tune.experiment import Experiment
from clear_tune.records import BEST_SCORE, VALID_SCORE, TrialReport
from clear_tune.tune._trainable import group_of


def tracking_callbacks(spec: Any, writer: Any) -> list[Any]:
    """Ray callbacks for ``spec.settings.tracking``; ``writer`` is the RecordWriter whose records end the runs."""
    tracking = spec.settings.tracking
    callbacks: list[Any] = [] if tracking.tensorboard else [_NoTensorBoard()]  # Ray adds TBX unless it has one
    if tracking.tensorboard and os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0") != "1":
        callbacks.append(_TensorBoard())
    if tracking.mlflow is not None:
        callbacks.append(__getattr__("MLflowTracking")(writer, spec.name, tracking_uri=tracking.mlflow))
    if tracking.wandb is not None:
        w, folder = tracking.wandb, Experiment.of(spec.settings.results, spec.name).local_dir()  # W&B's files
        folder.mkdir(parents=True, exist_ok=True)
        callbacks.append(
            __getattr__("WandbTracking")(
                writer,
                spec.name,
                project=w.project,
                group=w.group or spec.name,
                entity=w.entity,
                mode=w.mode,
                dir=str(folder),
            )
        )
    return callbacks


class _TensorBoard(TBXLoggerCallback):
    """Ray's TBX logger without the lists it cannot log (``trial_info.gpu_ids``: Ray warns about them)."""

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        super().log_trial_result(iteration, trial, _numeric_lists(result))


class _NoTensorBoard(TBXLoggerCallback):
    """Stands in for Ray's TBX logger (so Ray adds none) and writes nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # no tensorboardX writer; logs nothing
        pass

    log_trial_start = log_trial_result = log_trial_end = __init__


def _numeric_lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _numeric_lists(v)
            for k, v in value.items()
            if not (isinstance(v, (list, tuple)) and not all(isinstance(x, (int, float)) for x in v))
        }
    return value


def _name(metric: str) -> str:
    return metric.replace("@", "_at_")


# one member's update: (identity, rows [(epoch, metrics)], final metrics or None while it trains)
Update = tuple[dict[str, Any], list, dict[str, float] | None]


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class _Members:
    """What both trackers share: the members a result or a new record is about, and what to log for each, as
    updates ``(identity, rows, final)``: rows ``[(epoch, metrics)]``, final metrics (None while it trains)."""

    # each tracker's own: log the updates of one trial
    _send: Callable[[Any, list[Update]], None]

    def _init_members(self, writer: Any, experiment: str) -> None:
        self._writer, self._experiment, self._seen = writer, experiment, 0  # _seen: records of writer.written handled
        self._opened, self._closed = set[str](), set[str]()  # trial keys whose run exists / has ended
        self._logged: dict[str, list[int]] = {}  # trial key -> epochs logged with their whole evaluation
        self._groups: dict[str, Any] = {}  # Ray trial id -> its TrialGroup

    def _identity(self, key: str, arm: str, config: Any, group: str | None, **tags: Any) -> dict[str, Any]:
        """The run's name and tags, and its params (the flattened config) when the run is not open yet."""
        from ray.tune.utils import flatten_dict

        tags.update(experiment=self._experiment, trial_key=key, arm=arm, **({} if group is None else {"group": group}))
        identity: dict[str, Any] = {"key": key, "tags": tags}
        if key not in self._opened:
            config = config() if callable(config) else config
            identity["tags"]["backbone"] = config.get("backbone")
            identity["params"] = flatten_dict(config, delimiter="/")
            self._opened.add(key)
        return identity

    def _evaluations(self, trial: Any, result: dict[str, Any]) -> list[Update]:
        """An update for each member this result reports an evaluation of."""
        report = TrialReport.from_result(result)
        if report.records_only or not report.fused:
            return []
        group = self._groups.get(trial.trial_id) or self._groups.setdefault(
            trial.trial_id, group_of(trial.config, trial.trial_id)
        )
        epoch, fused = report.epoch, len(group.plans) > 1
        out: list[Update] = []
        for plan in group.plans:
            member = report.members.get(plan.key)
            if member is None or not member.evaluated or plan.key in self._closed:
                continue
            metrics = {VALID_SCORE: member.valid_score, BEST_SCORE: member.best_score}
            if not fused:  # an unfused trial reports its whole evaluation
                metrics.update(
                    {f"valid/{_name(k[6:])}": v for k, v in report.extra.items() if k.startswith("valid_")},
                    loss=report.extra.get("loss"),
                )
                self._logged.setdefault(plan.key, []).append(epoch)
            identity = self._identity(plan.key, plan.arm, plan.config.model_dump, group.key if fused else None)
            out.append((identity, [(epoch, _numbers(metrics))], None))
        return out

    def _new_records(self) -> list[Update]:
        """The closing update of each member whose record the writer wrote since last time: the curve it has
        not logged yet, its final metrics, status and reason."""
        records, self._seen = self._writer.written[self._seen :], len(self._writer.written)
        out: list[Update] = []
        for record in records:
            key = record["trial_id"]
            if key in self._closed:
                continue
            identity = self._identity(
                key,
                record["arm"],
                record["config"],
                (record.get("fused") or {}).get("group"),
                status=record["status"],
                reason=record.get("reason") or "",
            )
            done = set(self._logged.pop(key, []))
            rows = [
                (
                    int(p["epoch"]),
                    _numbers({"loss": p.get("loss"), **{f"valid/{_name(m)}": v for m, v in p["valid"].items()}}),
                )
                for p in record.get("curve") or []
                if int(p["epoch"]) not in done
            ]
            final = _numbers(
                {
                    **{f"best/valid/{_name(m)}": v for m, v in (record.get("valid") or {}).items()},
                    **{f"best/test/{_name(m)}": v for m, v in (record.get("test") or {}).items()},
                    "best_epoch": record.get("best_epoch"),
                    "epochs_run": record.get("epochs_run"),
                }
            )
            self._closed.add(key)
            out.append((identity, rows, final))
        return out

    def log_trial_start(self, trial: Any) -> None:
        pass  # a member's run opens with its first evaluation (or its record): recorded members open none

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        self._send(trial, self._evaluations(trial, result))

    def on_checkpoint(self, iteration: int, trials: list[Any], trial: Any, checkpoint: Any, **info: Any) -> None:
        self._send(trial, self._new_records())  # the writer, called before us, copied them from the checkpoint

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        self._send(trial, self._new_records())  # the writer recorded every member that was left
        self._groups.pop(trial.trial_id, None)


def _build_mlflow() -> type:
    from mlflow.entities import Metric, Param, RunTag
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class MLflowTracking(_Members, MLflowLoggerCallback):
        """MLflow: one run per trial key in the MLflow experiment named like ours."""

        __qualname__ = "MLflowTracking"

        def __init__(self, writer: Any, experiment: str, *, tracking_uri: str) -> None:
            MLflowLoggerCallback.__init__(self, tracking_uri, experiment_name=experiment)
            self._init_members(writer, experiment)
            self._runs: dict[str, str] = {}  # trial key -> MLflow run id

        def get_state(self) -> dict[str, Any]:  # saved with Ray's experiment state: --resume reuses the runs
            return {"runs": dict(self._runs), "closed": sorted(self._closed), "logged": dict(self._logged)}

        def set_state(self, state: dict[str, Any]) -> None:
            self._runs, self._closed, self._logged = dict(state["runs"]), set(state["closed"]), dict(state["logged"])
            self._opened = set(self._runs)

        def _send(self, trial: Any, updates: list[Update]) -> None:
            client, now = self.mlflow_util._get_client(), int(time.time() * 1000)
            for identity, rows, final in updates:
                key, tags = identity["key"], identity["tags"]
                if key not in self._runs:
                    assert self.tags is not None  # MLflowLoggerCallback.setup() makes it {} when not given
                    run = self.mlflow_util.start_run(run_name=key, tags={**self.tags, **tags})
                    self._runs[key] = run.info.run_id
                    params = [Param(k, str(v)[:6000]) for k, v in identity.get("params", {}).items()]
                    for i in range(0, len(params), 100):  # MLflow's batch limits: 100 params, 1000 metrics
                        client.log_batch(self._runs[key], params=params[i : i + 100])
                rows = rows if final is None else [*rows, (int(final.get("epochs_run", 0)), final)]
                metrics = [Metric(k, v, now, step) for step, m in rows for k, v in m.items()]
                ends = [RunTag(k, str(tags[k])) for k in ("status", "reason") if k in tags]
                for i in range(0, len(metrics) or 1, 900):
                    client.log_batch(self._runs[key], metrics=metrics[i : i + 900], tags=ends if i == 0 else [])
                if final is not None:
                    end = {"completed": "FINISHED", "pruned": "KILLED"}.get(tags["status"], "FAILED")
                    self.mlflow_util.end_run(status=end, run_id=self._runs[key])

    return MLflowTracking


def _build_wandb() -> type:
    from ray.air.integrations.wandb import WandbLoggerCallback, _QueueItem, _WandbLoggingActor

    class WandbMembersActor(_WandbLoggingActor):
        """Ray's W&B logging actor (one per Ray trial) holding one W&B run per member."""

        __qualname__ = "WandbMembersActor"

        def run(self) -> None:
            os.environ["WANDB_START_METHOD"] = "thread"
            runs: dict[str, Any] = {}
            while True:
                kind, items = self.queue.get()
                if kind == _QueueItem.END:
                    break
                for item in items:
                    run = runs.get(item["key"])
                    if run is None:
                        run = runs[item["key"]] = self._wandb.init(**self.kwargs, **item["init"], reinit="create_new")
                        run.define_metric("*", step_metric="epoch")
                    for row in item["rows"]:
                        run.log(row)
                    if "summary" in item:
                        run.summary.update(item["summary"])
                        run.config.update(item["status"], allow_val_change=True)
                        runs.pop(item["key"]).finish(exit_code=int(item["status"]["status"] == "failed"))
            for run in runs.values():
                run.finish()

    class WandbTracking(_Members, WandbLoggerCallback):
        """W&B: one run per trial key, in W&B group ``group`` (default: the experiment name)."""

        __qualname__ = "WandbTracking"
        _logger_actor_cls = WandbMembersActor

        def __init__(self, writer: Any, experiment: str, *, mode: str | None, **init: Any) -> None:
            WandbLoggerCallback.__init__(self, project=init.pop("project"), group=init.pop("group"))
            self._init_members(writer, experiment)
            self._mode, self._init = mode, {k: v for k, v in {**init, "mode": mode}.items() if v is not None}

        def setup(self, *args: Any, **kwargs: Any) -> None:
            if self._mode not in ("offline", "disabled"):  # Ray's asks for an API key unless $WANDB_MODE says so
                super().setup(*args, **kwargs)

        def log_trial_start(self, trial: Any) -> None:
            if trial not in self._trial_queues:
                os.makedirs(trial.local_path, exist_ok=True)  # the actor's working directory
                self._start_logging_actor(trial, [], project=self.project, group=self.group, **self._init)

        def _send(self, trial: Any, updates: list[Update]) -> None:
            items = []
            for identity, rows, final in updates:
                tags = identity["tags"]
                labels = [f"{k}:{tags[k]}"[:64] for k in ("experiment", "arm", "backbone", "group") if k in tags]
                init = {"name": identity["key"], "config": {**identity.get("params", {}), **tags}, "tags": labels}
                item = {"key": identity["key"], "init": init, "rows": [{**m, "epoch": epoch} for epoch, m in rows]}
                if final is not None:
                    item.update(
                        summary={k: v for k, v in final.items() if not math.isnan(v)},
                        status={"status": tags["status"], "reason": tags["reason"]},
                    )
                items.append(item)
            if items:
                self.log_trial_start(trial)
                self._trial_queues[trial].put((_QueueItem.RESULT, items))  # one queue item per Ray trial result

        def log_trial_end(self, trial: Any, failed: bool = False) -> None:
            _Members.log_trial_end(self, trial, failed)
            if trial in self._trial_queues:
                WandbLoggerCallback.log_trial_end(self, trial, failed)

        def __del__(self) -> None:
            try:
                super().__del__()
            except AttributeError:  # at interpreter exit, when Ray's module globals are gone already
                pass

    return WandbTracking


def __getattr__(name: str) -> Any:
    """The tracker classes, built on first use (Ray's integrations import mlflow/wandb, ~1 s); pickle finds them."""
    builders = {
        "MLflowTracking": _build_mlflow,
        "WandbTracking": _build_wandb,
        "WandbMembersActor": lambda: __getattr__("WandbTracking")._logger_actor_cls,
    }
    if name not in builders:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in globals():
        globals()[name] = builders[name]()
    return globals()[name]
