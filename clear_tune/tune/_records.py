"""Driver-side Ray Tune callbacks: trial records (one atomic JSON per trial) and one summary line per trial.

Records are written by the DRIVER, so trials from every node of a cluster land in one folder. The data
comes from the trial's last checkpoint (``record.json``, see :mod:`clear_tune.tune._trainable`), read
through Ray's storage filesystem so shared paths work; status is decided here:

- ``completed``: the trainer stopped on its own (early stopping or max epochs);
- ``pruned``: a scheduler/pruner stopped it; ``reason`` names it and the epoch reached;
- ``failed``: the trial reported a one-line :class:`~clear_tune.errors.ClearTuneError`, or Ray gave up on
  it after ``max_failures`` infrastructure retries.

An existing record is never overwritten (``write_record`` refuses), so ``--resume`` cannot lose results.

Example:
    >>> from clear_tune.tune import RecordWriter
    >>> writer = RecordWriter("results/demo/records", experiment="demo", scheduler="asha")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from clear_tune.experiment import Location
from clear_tune.records import RECORD_FIELDS, new_record, read_record, set_aside_record, write_record
from clear_tune.tune._trainable import RECORD_FILE, dataset_key, plan_of


class RecordWriter(Callback):
    """Write one :mod:`clear_tune.records` record per finished trial (completed, pruned or failed)."""

    def __init__(self, records_dir: str | os.PathLike[str] | Location, *, experiment: str, scheduler: str,
                 datasets: dict[str, dict[str, Any]] | None = None, select_metric: str = "recall@20") -> None:
        self.records_dir = Location(records_dir)
        self.experiment, self.scheduler = experiment, scheduler
        self.datasets = datasets or {}  # dataset_key -> stats + provenance, for trials that never reported
        self.select_metric = select_metric
        self.written: list[dict[str, Any]] = []
        self._tails: dict[str, dict[int, dict[str, Any]]] = {}  # trial id -> epoch -> reported result

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any],
                        **info: Any) -> None:
        # Results between checkpoints: kept so a pruned trial's record reaches the epoch it was stopped at.
        if "best_valid" in result:
            self._tails.setdefault(trial.trial_id, {})[int(result["epoch"])] = {
                "epoch": int(result["epoch"]), "loss": result.get("loss"), "best_epoch": result.get("best_epoch"),
                "valid": {k[6:]: v for k, v in result.items() if k.startswith("valid_") and k != "valid_score"},
                "best_valid": result["best_valid"], "best_test": result["best_test"],
                "info": result.get("trial_info") or {},
            }
    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._write(trial, error=None)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._write(trial, error=_error_line(trial))

    def _write(self, trial: Trial, *, error: str | None) -> None:
        plan = plan_of(trial.config, trial.trial_id)
        existing = read_record(self.records_dir, plan.key)
        if existing is not None and existing.get("status") != "failed":
            return  # recorded before an interruption; records are final (the trainable skipped it on resume)
        saved = _read_checkpoint_record(trial)
        record = new_record(**{
            "config": plan.config.model_dump(),
            "dataset": self.datasets.get(dataset_key(plan.config.data, plan.config.data_options), {}),
            **{k: v for k, v in saved.items() if k in RECORD_FIELDS},  # the trial's own, where it wrote them
        })
        _extend_with_tail(record, self._tails.pop(trial.trial_id, {}))
        stop_reason = saved.get("stop_reason")
        if error is not None:
            status, reason = "failed", error
        elif stop_reason == "failed":
            status, reason = "failed", saved.get("failed_reason") or "failed"
        elif stop_reason in ("early_stop", "max_epochs"):
            status, reason = "completed", stop_reason
        else:
            status = "pruned"
            reason = f"stopped by the {self.scheduler} scheduler at epoch {record['epochs_run']}"
        record.update(trial_id=plan.key, experiment=self.experiment, arm=plan.arm, status=status, reason=reason,
                      wall_end=time.time())
        if record["wall_start"] is None:
            record["wall_start"] = record["wall_end"]
        _set_aside_failed(self.records_dir, plan.key, new_status=status)
        if write_record(self.records_dir, record):
            self.written.append(record)
            print(summary_line(record, self.select_metric), file=sys.stderr, flush=True)


def summary_line(record: dict[str, Any], select_metric: str = "recall@20") -> str:
    """``[completed] <trial_id>: valid R@20 0.1234 (best epoch 12 of 20), test R@20 0.1111, 3.4 s/epoch``."""
    short = select_metric.replace("recall", "R").replace("ndcg", "N").replace("precision", "P")
    valid, test = record.get("valid") or {}, record.get("test") or {}
    parts = [f"[{record['status']}] {record['trial_id']}:"]
    if select_metric in valid:
        parts.append(f"valid {short} {valid[select_metric]:.4f} (best epoch {record['best_epoch']} of "
                     f"{record['epochs_run']}), test {short} {test.get(select_metric, float('nan')):.4f}")
    else:
        parts.append(f"{record['epochs_run']} epochs")
    if record.get("sec_per_epoch"):
        parts.append(f"{record['sec_per_epoch']:.2f} s/epoch")
    if record["status"] != "completed":
        parts.append(f"({record['reason']})")
    return " ".join(parts)


def _set_aside_failed(records_dir: Location, trial_id: str, *, new_status: str) -> None:
    """``--resume --retry-failed``: a retried trial's new result replaces its FAILED record, which is kept
    beside it as ``<trial_id>.json.failed-<unix time>`` (not read as a record). Other records stay final."""
    if new_status == "failed":
        return
    old = read_record(records_dir, trial_id)
    if old is not None and old.get("status") == "failed":
        set_aside_record(records_dir, trial_id, f".failed-{int(time.time())}")


def _extend_with_tail(record: dict[str, Any], tail: dict[int, dict[str, Any]]) -> None:
    """Append the evaluations reported after the last checkpoint (checkpoint_every > 1) to ``record``."""
    newer = [tail[e] for e in sorted(tail) if e > (record.get("epochs_run") or 0)]
    if not newer:
        return
    record["curve"] = list(record.get("curve") or []) + [
        {"epoch": p["epoch"], "loss": p["loss"], "valid": p["valid"]} for p in newer]
    last = newer[-1]
    record.update(epochs_run=last["epoch"], best_epoch=last["best_epoch"] or None,
                  valid=dict(last["best_valid"]), test=dict(last["best_test"]))
    for key, value in last["info"].items():
        if key in RECORD_FIELDS and record.get(key) in (None, []):
            record[key] = value


def _read_checkpoint_record(trial: Trial) -> dict[str, Any]:
    checkpoint = trial.checkpoint
    if checkpoint is None:
        return {}
    try:
        path = os.path.join(checkpoint.path, RECORD_FILE)
        with checkpoint.filesystem.open_input_stream(path) as fh:
            return json.loads(fh.read().decode())
    except (OSError, ValueError):
        return {}


def _error_line(trial: Trial) -> str:
    """The last ``SomeError: message`` line of the trial's error, or a pointer to the error file."""
    text = ""
    try:
        error = trial.get_error()
        text = str(error) if error is not None else ""
    except Exception:  # the error file may be on storage that is gone; fall back to the local copy
        pass
    if not text and trial.error_file and os.path.isfile(trial.error_file):
        text = Path(trial.error_file).read_text(errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in reversed(lines):
        head = line.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "Interrupt", "Died")) and " " not in head:
            return line[:300]
    return (lines[-1][:300] if lines else "trial failed") + f" (see {trial.error_file or 'the trial log'})"
