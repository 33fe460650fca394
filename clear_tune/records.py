"""The trial record: its schema and defaults, its JSON form, and the append-only folder of records.

``<experiment>/records/<trial_id>.json`` holds one record per finished trial. Everything that builds a
record builds it here: the trainer fills the :data:`TRAINING_FIELDS` (:func:`training_part`), the harness
adds where and how the trial ran and how it ended (:func:`new_record`). A record is written atomically
through :class:`~clear_tune.experiment.Location` (a local folder, fsynced, or a storage URI) and never
rewritten: a trial re-run after ``--resume`` writes under its id only if no record exists yet.

Schema (every key always present; ``None`` where not applicable)::

    trial_id      str     unique within the experiment (stable across --resume)
    experiment    str
    arm           str     named sub-space of the spec ("full", "no_projection", "dynamic", ...)
    status        "completed" | "pruned" | "failed"
    reason        str | None   one line: why it was pruned/failed, or how it stopped ("early_stop", "max_epochs")
    config        dict    TrainConfig.model_dump()
    dataset       dict    RecDataset.stats() plus provenance (kind, source, seed ...): dataset_summary()
    best_epoch    int | None
    epochs_run    int
    valid         dict    {"recall@10": .., "recall@20": .., "ndcg@10": .., ...} at best_epoch
    test          dict    same keys, at best_epoch (reported, never used to select)
    curve         list    [{"epoch": e, "loss": .., "valid": {metric: value}}] one per evaluation
    spectrum      list    [{"epoch": e, "k": k, "before": [σ..], "after": [σ̃..]}] one per projection refresh
    sec_per_epoch float   median seconds per training epoch (of the model array the trial trained in)
    sec_per_eval  float   median seconds per full evaluation
    peak_mem_mb   float   peak RSS of the worker (CPU) or peak CUDA memory (GPU)
    device        str     "cpu" | "cuda:0" ...
    fused         dict | None  {"group": id, "members": n}: the trial trained in a fused model array of n members
    node_id       str | None   Ray node id
    node_ip       str | None
    gpu_ids       list
    wall_start    float   unix seconds
    wall_end      float

Beside a record, ``<trial_id>.users.npz`` (:func:`write_user_metrics`, :func:`read_user_metrics`) holds the
trial's per-user valid and test values (Recall@K, NDCG@K) at its best-valid epoch, for tests over users; records
from before it existed have none, and the tables say so.

Example:
    >>> import tempfile
    >>> from clear_tune.records import new_record, read_records, write_record
    >>> d = tempfile.mkdtemp()
    >>> write_record(d, new_record(trial_id="t1", status="completed"))
    True
    >>> [(r["trial_id"], r["epochs_run"]) for r in read_records(d)]
    [('t1', 0)]
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from clear_tune.experiment import Location

TrialRecord = dict[str, Any]


class Status(str, Enum):
    """How a trial ended, as its record says (a ``str``: ``Status.COMPLETED == "completed"``, JSON as the value)."""

    COMPLETED = "completed"
    PRUNED = "pruned"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


class StopReason(str, Enum):
    """Why the trainer stopped training a member; :attr:`status` is the record status it ends in (None: it may
    train again, or its record is written elsewhere)."""

    EARLY_STOP = "early_stop"  # patience ran out: completed
    MAX_EPOCHS = "max_epochs"  # the epoch budget: completed (a later fit() with more epochs goes on)
    PRUNED = "pruned"  # a scheduler's verdict
    FAILED = "failed"  # a non-finite loss, or a config found bad at run time
    STOPPED = "stopped"  # paused by on_epoch (Ray stopped the trial): it may go on
    RECORDED = "recorded"  # its record exists already (a resumed group skips it)

    def __str__(self) -> str:
        return self.value

    @property
    def status(self) -> Status | None:
        return _STATUS_OF.get(self)

    @property
    def left(self) -> bool:
        """Whether the member left the array for good (it is no longer trained)."""
        return self in (StopReason.EARLY_STOP, StopReason.FAILED, StopReason.PRUNED)


_STATUS_OF = {
    StopReason.EARLY_STOP: Status.COMPLETED,
    StopReason.MAX_EPOCHS: Status.COMPLETED,
    StopReason.PRUNED: Status.PRUNED,
    StopReason.FAILED: Status.FAILED,
}
RECORD_STATUSES = tuple(s.value for s in Status)


def stopped_by(scheduler: str, epoch: int) -> str:
    """The one wording of a scheduler's verdict in a record's ``reason``."""
    return f"stopped by the {scheduler} scheduler at epoch {epoch}"


# The trainer's part of a record, key -> default factory.
TRAINING_FIELDS: dict[str, Callable[[], Any]] = {
    "config": dict,
    "dataset": dict,
    "best_epoch": lambda: None,
    "epochs_run": lambda: 0,
    "valid": dict,
    "test": dict,
    "curve": list,
    "spectrum": list,
    "sec_per_epoch": lambda: None,
    "sec_per_eval": lambda: None,
    "peak_mem_mb": lambda: None,
    "device": lambda: None,
}
# ... and the harness's part: identity, outcome, placement.
HARNESS_FIELDS: dict[str, Callable[[], Any]] = {
    "trial_id": lambda: None,
    "experiment": lambda: None,
    "arm": lambda: None,
    "status": lambda: Status.FAILED.value,
    "reason": lambda: None,
    "fused": lambda: None,
    "node_id": lambda: None,
    "node_ip": lambda: None,
    "gpu_ids": list,
    "wall_start": lambda: None,
    "wall_end": lambda: None,
}
RECORD_FIELDS: tuple[str, ...] = (
    "trial_id",
    "experiment",
    "arm",
    "status",
    "reason",
    *TRAINING_FIELDS,
    "fused",
    "node_id",
    "node_ip",
    "gpu_ids",
    "wall_start",
    "wall_end",
)


def training_part(*, stop_reason: str | None = None, **values: Any) -> dict[str, Any]:
    """The trainer's fields (:data:`TRAINING_FIELDS`, defaults for those not given) plus its ``stop_reason``."""
    unknown = set(values) - set(TRAINING_FIELDS)
    if unknown:
        raise KeyError(f"not trainer fields of a trial record: {sorted(unknown)}")
    return {
        **{key: values[key] if key in values else default() for key, default in TRAINING_FIELDS.items()},
        "stop_reason": stop_reason,
    }


def new_record(**values: Any) -> TrialRecord:
    """A complete record: every key of :data:`RECORD_FIELDS`, ``values`` where given and defaults elsewhere.

    Keys that are not record fields (a trainer's ``stop_reason``, say) are dropped.
    """
    defaults = {**TRAINING_FIELDS, **HARNESS_FIELDS}
    return {key: values[key] if key in values else defaults[key]() for key in RECORD_FIELDS}


def dataset_summary(dataset: Any) -> dict[str, Any]:
    """What a record says of its dataset: :meth:`RecDataset.stats` plus where it came from (provenance)."""
    return {**dataset.stats(), "provenance": dict(dataset.provenance)}


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy / torch arrays and scalars (a scalar's tolist() is its number)
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(value: Any, *, indent: int | None = 1) -> str:
    """The one JSON encoding of records and of what carries them (numpy and torch values become numbers)."""
    return json.dumps(value, indent=indent, default=_jsonable)


def _folder(records_dir: str | os.PathLike[str] | Location) -> Location:
    return records_dir if isinstance(records_dir, Location) else Location(records_dir)


def write_record(
    records_dir: str | os.PathLike[str] | Location, record: TrialRecord, *, overwrite: bool = False
) -> bool:
    """Atomically write ``record`` as ``<records_dir>/<trial_id>.json``; returns False if it already existed."""
    target = _folder(records_dir) / f"{record['trial_id']}.json"
    return target.write_text(to_json(record), overwrite=overwrite, durable=True)


def record_names(records_dir: str | os.PathLike[str] | Location) -> list[str]:
    """Sorted file names of the complete records in ``records_dir`` (temporary files are ignored)."""
    return [n for n in _folder(records_dir).files() if n.endswith(".json") and not n.startswith(".")]


def read_records(records_dir: str | os.PathLike[str] | Location) -> list[TrialRecord]:
    """All complete records in ``records_dir`` sorted by trial id."""
    folder = _folder(records_dir)
    return [json.loads((folder / name).read_text()) for name in record_names(folder)]


def read_record(records_dir: str | os.PathLike[str] | Location, trial_id: str) -> TrialRecord | None:
    """The record of ``trial_id``, or None when there is none (or it is not valid JSON)."""
    location = _folder(records_dir) / f"{trial_id}.json"
    if not location.is_file():
        return None
    try:
        return json.loads(location.read_text())
    except ValueError:
        return None


def set_aside_record(records_dir: str | os.PathLike[str] | Location, trial_id: str, suffix: str) -> None:
    """Rename ``<trial_id>.json`` to ``<trial_id>.json<suffix>`` so it is no longer read as a record."""
    folder = _folder(records_dir)
    (folder / f"{trial_id}.json").move_to(folder / f"{trial_id}.json{suffix}")


# ------------------------------------------------------------------------------- per-user results
USER_METRICS_SUFFIX = ".users.npz"
PerUser = dict[str, dict[str, Any]]  # split -> {"users": (n,) ids, "recall@20": (n,) values, ...}


def user_metrics_bytes(per_user: PerUser) -> bytes:
    """``per_user`` as a compressed ``.npz``: user ids int32, values float16 (recall and NDCG lie in [0, 1])."""
    import io

    import numpy as np

    arrays: dict[str, Any] = {  # Any: savez's **kwds share the signature with its allow_pickle: bool
        f"{split}/{name}": np.asarray(values, dtype=np.int32 if name == "users" else np.float16)
        for split, columns in per_user.items()
        for name, values in columns.items()
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def user_metrics_from_bytes(data: bytes) -> PerUser:
    import io

    import numpy as np

    out: PerUser = {}
    with np.load(io.BytesIO(data)) as archive:
        for key in archive.files:
            split, name = key.split("/", 1)
            out.setdefault(split, {})[name] = archive[key]
    return out


def write_user_metrics(records_dir: str | os.PathLike[str] | Location, trial_id: str, per_user: PerUser) -> bool:
    """Atomically write a trial's per-user values at its best-valid epoch beside its record
    (``<trial_id>.users.npz``); returns False if the file already existed (it is never rewritten)."""
    target = _folder(records_dir) / f"{trial_id}{USER_METRICS_SUFFIX}"
    return target.write_bytes(user_metrics_bytes(per_user), overwrite=False, durable=True)


def read_user_metrics(records_dir: str | os.PathLike[str] | Location, trial_id: str) -> PerUser | None:
    """A trial's per-user values (``{split: {"users": ids, "recall@20": float16 values, ...}}``), or None for a
    record written without them (older experiments, a trial that never evaluated)."""
    location = _folder(records_dir) / f"{trial_id}{USER_METRICS_SUFFIX}"
    if not location.is_file():
        return None
    try:
        return user_metrics_from_bytes(location.read_bytes())
    except (OSError, ValueError, KeyError):
        return None


# --------------------------------------------------------------- trial <-> tune: what a Ray trial reports
VALID_SCORE = "valid_score"  # the select metric at the reported epoch (best over the members evaluated)
BEST_SCORE = "best_score"  # its best so far (over the members): what Optuna's search maximises


@dataclass(frozen=True)
class MemberReport:
    """One member of a (fused) Ray trial at one report: what the member-level schedulers judge."""

    evaluated: bool
    valid_score: float | None
    best_score: float | None
    best_epoch: int
    left: bool  # its final record rides with this report
    status: Status | None  # how it ended, once it left

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = None if self.status is None else self.status.value
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MemberReport:
        status = values.get("status")
        return cls(
            evaluated=bool(values.get("evaluated")),
            valid_score=values.get(VALID_SCORE),
            best_score=values.get(BEST_SCORE),
            best_epoch=int(values.get("best_epoch") or 0),
            left=bool(values.get("left")),
            status=None if status is None else Status(status),
        )


@dataclass(frozen=True)
class TrialReport:
    """One report of a Ray trial (:mod:`clear_tune.tune._trainable`), flattened once at the Ray boundary
    (:meth:`flatten`) and read back once by every consumer (:meth:`from_result`): schedulers, the searcher, the
    record writer and the trackers. ``extra`` carries the progress table's columns and, for a trial of one member,
    what the record writer needs to extend a trial Ray stopped (``valid_<metric>``, ``loss``, ``best_valid``, ...).

    Example:
        >>> report = TrialReport(epoch=2, valid_score=0.3, best_score=0.3, final=False, group="g",
        ...                      members={"a": MemberReport(True, 0.3, 0.3, 2, False, None)})
        >>> flat = report.flatten()
        >>> again = TrialReport.from_result({"epoch": 2, "members/a/valid_score": 0.3})
        >>> flat["valid_score"], again.members["a"].valid_score
        (0.3, 0.3)
    """

    epoch: int
    valid_score: float
    best_score: float
    final: bool
    group: str | None
    members: dict[str, MemberReport]
    records_only: bool = False  # re-reports an epoch whose records just changed (members a scheduler pruned)
    failed: str | None = None  # the whole group failed with this one-line reason
    extra: dict[str, Any] = field(default_factory=dict)

    def flatten(self) -> dict[str, Any]:
        """The dict handed to ``ray.tune.report`` (Ray flattens ``members`` further to ``members/<key>/<field>``)."""
        out: dict[str, Any] = {
            "epoch": self.epoch,
            VALID_SCORE: self.valid_score,
            BEST_SCORE: self.best_score,
            "final": self.final,
            **self.extra,
        }
        if self.group is not None:
            out["group"] = self.group
        if self.members:
            out["members"] = {key: member.as_dict() for key, member in self.members.items()}
        if self.records_only:
            out["records_only"] = True
        if self.failed is not None:
            out["failed"] = self.failed
        return out

    @classmethod
    def from_result(cls, result: dict[str, Any]) -> TrialReport:
        """Read a result back, nested as reported or flattened as Ray hands it to schedulers and searchers."""
        members = result.get("members")
        if members is None:
            members = {}
            for key, value in result.items():
                if key.startswith("members/"):
                    _, trial_key, name = key.split("/", 2)  # trial keys hold no "/"
                    members.setdefault(trial_key, {})[name] = value
        known = {"epoch", VALID_SCORE, BEST_SCORE, "final", "group", "members", "records_only", "failed"}
        return cls(
            epoch=int(result.get("epoch") or 0),
            valid_score=result.get(VALID_SCORE, math.nan),
            best_score=result.get(BEST_SCORE, math.nan),
            final=bool(result.get("final")),
            group=result.get("group"),
            members={key: MemberReport.from_dict(values) for key, values in members.items()},
            records_only=bool(result.get("records_only")),
            failed=result.get("failed"),
            extra={k: v for k, v in result.items() if k not in known and not k.startswith("members/")},
        )

    @property
    def fused(self) -> bool:
        """Whether the report carries members (the harness's trials always do; a plain trainable does not)."""
        return bool(self.members)
