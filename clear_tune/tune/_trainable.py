"""The Ray Tune function trainable: one trial = one :class:`~clear_tune.train.Trainer` run.

The driver puts the dataset(s) in Ray's object store ONCE (``tune.with_parameters``), so no trial process
loads or generates data again. On every evaluation the trainable reports the valid metrics and the
best-so-far WITH a checkpoint holding the full trainer state (exact continuation after a pause, a
pruned-then-resumed run, a preempted node or ``--resume``) and ``record.json``: everything the driver's
:class:`~clear_tune.tune.RecordWriter` needs to write the trial record (curve, spectrum, timings, node
and GPU ids) without bloating Ray's per-result logs.

A :class:`~clear_tune.errors.ClearTuneError` inside the trial (NaN loss, a config only found bad at run
time) is NOT an infrastructure fault: the trial reports ``failed`` with its one-line reason and ends
normally, so Ray does not retry it and the search goes on.

Example (what the harness does; see :func:`clear_tune.run.run_search`):
    >>> from ray import tune
    >>> trainable = tune.with_parameters(run_trial, datasets={...})   # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from clear_tune.records import dataset_summary, to_json, training_part

TRAINER_FILE = "trainer.pt"
RECORD_FILE = "record.json"
METRIC = "valid_score"  # the select metric (valid recall@20) at the reported epoch: schedulers, pruners
BEST_METRIC = "best_score"  # best-so-far of the select metric: what Optuna's search maximises


def dataset_key(source: str, options: dict[str, Any]) -> str:
    """How the driver and the trainable name one dataset (source + sorted options)."""
    return json.dumps([source, options], sort_keys=True)


def plan_of(config: dict[str, Any], trial_id: str):
    """The :class:`~clear_tune.spec.TrialPlan` of a Ray trial config (Optuna trials get their id as suffix)."""
    from clear_tune.spec import TrialPlan, trial_key

    param = config["trial"]
    plan = TrialPlan.from_param({**param, "key": param.get("key") or "pending"})
    if not param.get("key"):
        plan = TrialPlan(plan.arm, trial_key(plan.arm, plan.config, suffix=trial_id), plan.config)
    return plan


def run_trial(config: dict[str, Any], *, datasets: dict[str, Any], recorded: frozenset[str] = frozenset(),
              cpus_per_trial: float = 1.0, checkpoint_every: int = 1, checkpoint_interval_s: float = 0.0) -> None:
    """Train one trial, reporting every evaluation to Ray Tune; a checkpoint with the first and the last
    evaluation, and otherwise every ``checkpoint_every`` evaluations once ``checkpoint_interval_s``
    seconds have passed since the previous one (a checkpoint costs ~10 ms: fast trials skip most)."""
    import ray
    import torch
    from ray import tune

    from clear_tune.errors import ClearTuneError

    torch.set_num_threads(max(1, int(cpus_per_trial)))  # several trials share a node's cores
    context = tune.get_context()
    plan = plan_of(config, context.get_trial_id())
    if plan.key in recorded:
        return  # finished before an interruption (its record exists): nothing to train or report again
    cfg = plan.config
    dataset = datasets[dataset_key(cfg.data, cfg.data_options)]
    placement = {
        "node_id": ray.get_runtime_context().get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
    }
    meta = {"wall_start": time.time(), "restores": 0}
    progress_cols = _progress_columns(plan)

    trainer = None
    evaluations = 0
    last_checkpoint = -math.inf  # time.monotonic() of the last checkpoint
    try:
        from clear_tune.train import Trainer

        trainer = Trainer(cfg, dataset)
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                if (Path(folder) / TRAINER_FILE).is_file():
                    trainer.load_checkpoint(Path(folder) / TRAINER_FILE)
                    saved = json.loads((Path(folder) / RECORD_FILE).read_text())
                    meta = {"wall_start": saved["wall_start"], "restores": saved.get("restores", 0) + 1}

        def on_epoch(tr: Any, report: Any) -> None:
            nonlocal evaluations, last_checkpoint
            if report.valid is None:
                return  # not an evaluation epoch: nothing new to report or prune on
            evaluations += 1
            last = tr.stop_reason == "early_stop" or report.epoch >= tr.config.epochs
            metrics = {
                "epoch": report.epoch,
                "loss": report.loss,
                METRIC: report.valid[tr.config.select_metric],
                BEST_METRIC: report.best_valid,
                "best_epoch": report.best_epoch,
                "sec_train": report.sec_train,
                "final": last,  # the trainer stopped on its own; without it a scheduler stopped the trial
                **{f"valid_{name}": value for name, value in report.valid.items()},
                # enough for the driver to extend the last checkpoint's record to this epoch exactly
                "best_valid": dict(tr.best_metrics["valid"]),
                "best_test": dict(tr.best_metrics["test"]),
                **progress_cols,
            }
            metrics["trial_info"] = {**placement, **meta, "device": str(tr.device),
                                     "sec_per_epoch": statistics.median(tr.sec_train)}
            due = (evaluations - 1) % checkpoint_every == 0 and time.monotonic() - last_checkpoint >= checkpoint_interval_s
            if not last and evaluations > 1 and not due:
                tune.report(metrics)
                return
            last_checkpoint = time.monotonic()
            record = {**tr.result(), **placement, **meta}
            if last:
                record["stop_reason"] = tr.stop_reason or "max_epochs"
            _report(metrics, record, trainer=tr)

        trainer.fit(on_epoch)
    except ClearTuneError as exc:
        # Deterministic trial failure: record it and end normally so Ray neither retries nor stops the search.
        training = trainer.result() if trainer is not None else training_part(config=cfg.model_dump(),
                                                                               dataset=dataset_summary(dataset))
        record = {**training, **placement, **meta}
        record["stop_reason"] = "failed"
        record["failed_reason"] = str(exc).splitlines()[0]
        epoch = trainer.epoch if trainer is not None else 0
        metrics = {"epoch": epoch, METRIC: math.nan, BEST_METRIC: math.nan, "failed": record["failed_reason"], "final": True,
                   **progress_cols}
        _report(metrics, record, trainer=None)


def _report(metrics: dict[str, Any], record: dict[str, Any], *, trainer: Any) -> None:
    from ray import tune

    with tempfile.TemporaryDirectory(prefix="clear_tune_ckpt_") as folder:
        if trainer is not None:
            trainer.save_checkpoint(os.path.join(folder, TRAINER_FILE), durable=False)  # Ray persists it
        with open(os.path.join(folder, RECORD_FILE), "w") as fh:
            fh.write(to_json(record, indent=None))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def _progress_columns(plan: Any) -> dict[str, Any]:
    pj = plan.config.projection
    return {
        "arm": plan.arm,
        "backbone": plan.config.backbone,
        "k": pj.k if pj.active else "-",
        "lambda": pj.strength,
    }
