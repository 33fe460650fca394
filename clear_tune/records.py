"""Append-only trial records: one JSON file per finished trial, written atomically.

``results/<experiment>/records/<trial_id>.json`` holds one :data:`TrialRecord`. A record is written to a
temporary file in the same folder, flushed, fsynced and renamed into place, so a crash leaves either the
whole record or nothing. ``records_dir`` may also be a storage URI (``s3://``, ``gs://``, ``file://`` ...,
see :mod:`clear_tune._storage`): the record is then written through ``pyarrow.fs`` to a temporary name and
moved into place, or, on object stores that cannot rename, written once under its final name (an object
appears only when its upload completes). Records are never rewritten: a trial that is re-run after ``--resume`` writes
under its same id only if no record exists yet.

Schema of a record (all keys always present; ``None`` where not applicable)::

    trial_id      str     unique within the experiment (stable across --resume)
    experiment    str
    arm           str     named sub-space of the spec ("full", "no_projection", "dynamic", ...)
    status        "completed" | "pruned" | "failed"
    reason        str | None   one line: why it was pruned/failed, or how it stopped ("early_stop", "max_epochs")
    config        dict    TrainConfig.model_dump()
    dataset       dict    RecDataset.stats() plus provenance (kind, source, seed ...)
    best_epoch    int | None
    epochs_run    int
    valid         dict    {"recall@10": .., "recall@20": .., "ndcg@10": .., ...} at best_epoch
    test          dict    same keys, at best_epoch (reported, never used to select)
    curve         list    [{"epoch": e, "loss": .., "valid": {metric: value}}] one per evaluation
    spectrum      list    [{"epoch": e, "k": k, "before": [σ..], "after": [σ̃..]}] one per projection refresh
    sec_per_epoch float   median seconds per training epoch
    sec_per_eval  float   median seconds per full evaluation
    peak_mem_mb   float   peak RSS of the worker (CPU) or peak CUDA memory (GPU)
    device        str     "cpu" | "cuda:0" ...
    node_id       str | None   Ray node id
    node_ip       str | None
    gpu_ids       list
    wall_start    float   unix seconds
    wall_end      float

Example:
    >>> import tempfile
    >>> from clear_tune.records import write_record, read_records
    >>> d = tempfile.mkdtemp()
    >>> write_record(d, {"trial_id": "t1", "status": "completed"})
    True
    >>> [r["trial_id"] for r in read_records(d)]
    ['t1']
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from clear_tune import _storage

TrialRecord = dict[str, Any]
RECORD_STATUSES = ("completed", "pruned", "failed")


def record_path(records_dir: str | os.PathLike[str], trial_id: str) -> Path:
    return Path(records_dir) / f"{trial_id}.json"


def write_record(records_dir: str | os.PathLike[str], record: TrialRecord, *, overwrite: bool = False) -> bool:
    """Atomically write ``record`` as ``<records_dir>/<trial_id>.json``; returns False if it already existed."""
    if _storage.is_uri(records_dir):
        text = json.dumps(record, indent=1, default=_jsonable)
        return _storage.write_text(_storage.join(records_dir, f"{record['trial_id']}.json"), text,
                                   overwrite=overwrite)
    directory = Path(records_dir)
    directory.mkdir(parents=True, exist_ok=True)
    target = record_path(directory, record["trial_id"])
    if target.exists() and not overwrite:
        return False
    fd, tmp = tempfile.mkstemp(prefix=f".{record['trial_id']}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh, indent=1, default=_jsonable)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def read_records(records_dir: str | os.PathLike[str]) -> list[TrialRecord]:
    """All complete records in ``records_dir`` sorted by trial id (temporary files are ignored)."""
    if _storage.is_uri(records_dir):
        return [json.loads(_storage.read_text(_storage.join(records_dir, n))) for n in record_names(records_dir)]
    directory = Path(records_dir)
    if not directory.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json")) if not p.name.startswith(".")]


def record_names(records_dir: str | os.PathLike[str]) -> list[str]:
    """Sorted file names of the complete records in ``records_dir`` (a folder or a storage URI)."""
    return [n for n in _storage.list_files(records_dir) if n.endswith(".json") and not n.startswith(".")]


def read_record(records_dir: str | os.PathLike[str], trial_id: str) -> TrialRecord | None:
    """The record of ``trial_id``, or None when there is none (or it is not valid JSON)."""
    location = _storage.join(records_dir, f"{trial_id}.json")
    if not _storage.is_file(location):
        return None
    try:
        return json.loads(_storage.read_text(location))
    except ValueError:
        return None


def set_aside_record(records_dir: str | os.PathLike[str], trial_id: str, suffix: str) -> None:
    """Rename ``<trial_id>.json`` to ``<trial_id>.json<suffix>`` so it is no longer read as a record."""
    _storage.move(_storage.join(records_dir, f"{trial_id}.json"),
                  _storage.join(records_dir, f"{trial_id}.json{suffix}"))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dataset_summary(dataset: Any) -> dict[str, Any]:
    """What a record says of its dataset: :meth:`RecDataset.stats` plus where it came from (provenance)."""
    return {**dataset.stats(), "provenance": dict(dataset.provenance)}
