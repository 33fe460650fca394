"""The driver's record writer: one atomic JSON record per finished trial, fused members included.

Records are written by the DRIVER, so trials from every node of a cluster land in one folder. A trial's
(or a fused member's) final record is built by the trainable (:mod:`clear_tune.tune._trainable`) when it
leaves and rides in the checkpoint reported with it (``records/<trial_id>.json``): the writer copies it into
the experiment as soon as that checkpoint arrives (``on_checkpoint``), read through Ray's storage filesystem
so shared paths work. What the trainable could not record, the writer records when its Ray trial ends,
from the live member's record so far in the last checkpoint (``members/<trial_id>.json``) extended by the
results reported after it:

- ``completed`` / ``pruned`` / ``failed`` as the trainable recorded it (early stopping or max epochs; a
  member-level scheduler's verdict; a non-finite loss or a config found bad at run time);
- ``pruned``: a trial-level scheduler (Ray's HyperBand) stopped the trial; ``reason`` names it and the epoch;
- ``failed``: Ray gave up on the trial after ``max_failures`` infrastructure retries.

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
from clear_tune.records import (
    RECORD_FIELDS,
    USER_METRICS_SUFFIX,
    new_record,
    read_record,
    set_aside_record,
    write_record,
)
from clear_tune.tune._trainable import FINAL_DIR, LIVE_DIR, dataset_key, group_of


class RecordWriter(Callback):
    """Write one :mod:`clear_tune.records` record per finished trial or fused member (completed, pruned, failed)."""

    def __init__(
        self,
        records_dir: str | os.PathLike[str] | Location,
        *,
        experiment: str,
        scheduler: str,
        datasets: dict[str, dict[str, Any]] | None = None,
        select_metric: str = "recall@20",
    ) -> None:
        self.records_dir = Location(records_dir)
        self.experiment, self.scheduler = experiment, scheduler
        self.datasets = datasets or {}  # dataset_key -> stats + provenance, for trials that never reported
        self.select_metric = select_metric
        self.written: list[dict[str, Any]] = []
        self._done: set[str] = set()  # trial keys recorded by this process
        self._tails: dict[str, dict[int, dict[str, Any]]] = {}  # trial key -> epoch -> reported result

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any
    ) -> None:
        # Results between checkpoints of a one-member trial: kept so that, stopped by a trial-level scheduler,
        # its record reaches the epoch it was stopped at.
        if "best_valid" in result:
            key = group_of(trial.config, trial.trial_id).plans[0].key
            self._tails.setdefault(key, {})[int(result["epoch"])] = {
                "epoch": int(result["epoch"]),
                "loss": result.get("loss"),
                "best_epoch": result.get("best_epoch"),
                "valid": {k[6:]: v for k, v in result.items() if k.startswith("valid_") and k != "valid_score"},
                "best_valid": result["best_valid"],
                "best_test": result["best_test"],
                "info": result.get("trial_info") or {},
            }

    def on_checkpoint(self, iteration: int, trials: list[Trial], trial: Trial, checkpoint: Any, **info: Any) -> None:
        for record in _checkpoint_records(checkpoint, FINAL_DIR).values():
            self._finish(record, checkpoint)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._write(trial, error=None)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._write(trial, error=_error_line(trial))

    def _write(self, trial: Trial, *, error: str | None) -> None:
        """The Ray trial ended: every member the trainable recorded, then the others (stopped by Ray, or failed)."""
        group = group_of(trial.config, trial.trial_id)
        final = _checkpoint_records(trial.checkpoint, FINAL_DIR)
        live = _checkpoint_records(trial.checkpoint, LIVE_DIR)
        for plan in group.plans:
            if plan.key in final:  # the trainable's own record: an outcome reached before any error
                self._finish(final[plan.key], trial.checkpoint)
                continue
            existing = read_record(self.records_dir, plan.key)
            if plan.key in self._done or (existing is not None and existing.get("status") != "failed"):
                continue  # recorded already; records are final (the trainable skipped it on resume)
            record = new_record(
                **{
                    "config": plan.config.model_dump(),
                    "dataset": self.datasets.get(dataset_key(plan.config.data, plan.config.data_options), {}),
                    **{
                        k: v for k, v in (final.get(plan.key) or live.get(plan.key) or {}).items() if k in RECORD_FIELDS
                    },
                }
            )
            _extend_with_tail(record, self._tails.pop(plan.key, {}))
            if error is not None:
                status, reason = "failed", error
            else:
                status, reason = "pruned", f"stopped by the {self.scheduler} scheduler at epoch {record['epochs_run']}"
            record.update(trial_id=plan.key, arm=plan.arm, status=status, reason=reason, wall_end=time.time())
            if record["wall_start"] is None:
                record["wall_start"] = record["wall_end"]
            self._finish(record)

    def _finish(self, record: dict[str, Any], checkpoint: Any = None) -> None:
        """Write ``record`` unless it is there already (a failed record is set aside for a retried trial's), with
        its per-user values first when the checkpoint carries them (so a record never lacks a file it has)."""
        key = record["trial_id"]
        if key in self._done:
            return
        record = {**record, "experiment": self.experiment}
        _set_aside_failed(self.records_dir, key, new_status=record["status"])
        per_user = _checkpoint_file(checkpoint, FINAL_DIR, f"{key}{USER_METRICS_SUFFIX}")
        if per_user is not None and read_record(self.records_dir, key) is None:
            (self.records_dir / f"{key}{USER_METRICS_SUFFIX}").write_bytes(per_user, overwrite=True, durable=True)
        if write_record(self.records_dir, record):
            self.written.append(record)
            print(summary_line(record, self.select_metric), file=sys.stderr, flush=True)
        self._done.add(key)


def summary_line(record: dict[str, Any], select_metric: str = "recall@20") -> str:
    """``[completed] <trial_id>: valid R@20 0.1234 (best epoch 12 of 20), test R@20 0.1111, 3.4 s/epoch``."""
    from clear_tune.metrics import short_name

    short = short_name(select_metric)
    valid, test = record.get("valid") or {}, record.get("test") or {}
    parts = [f"[{record['status']}] {record['trial_id']}:"]
    if select_metric in valid:
        parts.append(
            f"valid {short} {valid[select_metric]:.4f} (best epoch {record['best_epoch']} of "
            f"{record['epochs_run']}), test {short} {test.get(select_metric, float('nan')):.4f}"
        )
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
        {"epoch": p["epoch"], "loss": p["loss"], "valid": p["valid"]} for p in newer
    ]
    last = newer[-1]
    record.update(
        epochs_run=last["epoch"],
        best_epoch=last["best_epoch"] or None,
        valid=dict(last["best_valid"]),
        test=dict(last["best_test"]),
    )
    for key, value in last["info"].items():
        if key in RECORD_FIELDS and record.get(key) in (None, []):
            record[key] = value


def _checkpoint_records(checkpoint: Any, folder: str) -> dict[str, dict[str, Any]]:
    """The records in ``<checkpoint>/<folder>/`` by trial key ({} without a checkpoint or that folder)."""
    if checkpoint is None:
        return {}
    import pyarrow.fs

    base = os.path.join(checkpoint.path, folder)
    try:
        infos = checkpoint.filesystem.get_file_info(pyarrow.fs.FileSelector(base, allow_not_found=True))
        records = {}
        for file in infos:
            if file.type == pyarrow.fs.FileType.File and file.base_name.endswith(".json"):
                with checkpoint.filesystem.open_input_stream(file.path) as fh:
                    record = json.loads(fh.read().decode())
                records[record["trial_id"]] = record
        return records
    except (OSError, ValueError):
        return {}


def _checkpoint_file(checkpoint: Any, folder: str, name: str) -> bytes | None:
    """The bytes of ``<checkpoint>/<folder>/<name>``, or None."""
    if checkpoint is None:
        return None
    try:
        with checkpoint.filesystem.open_input_stream(os.path.join(checkpoint.path, folder, name)) as fh:
            return fh.read()
    except (OSError, ValueError):
        return None


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
