"""The experiment folder: where one search lives, and what the harness says about it (``experiment.json``).

One owner for the layout every other stage reads or writes::

    <results>/<experiment>/           a local (or shared) folder, or a storage URI (s3://, gs://, file://, ...)
        tuner.pkl, <trial folders>/   Ray Tune's experiment state and checkpoints
        records/<trial_id>.json       one record per finished trial (clear_tune.records)
        spec.yaml                     the spec the experiment started with
        experiment.json               ExperimentInfo: name, search, expected trials, select metric, cluster
        optuna.db, pruner.db          Optuna's SQLite studies (a local mirror for a URI: see study_dir)
        tables/, report.html          clear_tune.report

:class:`Location` is a file or folder at a local path or a storage URI. Every read, write (atomic), listing
and move goes through it, so no other module asks which of the two it has. What cannot live at a URI
(SQLite studies, a report being rendered) goes to :meth:`Experiment.local_dir`, the experiment folder itself
when it is local and a mirror under ``$CLEAR_TUNE_LOCAL_DIR`` (default ``~/.cache/clear-tune``) otherwise,
copied to the URI by :meth:`Experiment.publish`.

Example:
    >>> import tempfile
    >>> from clear_tune.experiment import Experiment, ExperimentInfo
    >>> exp = Experiment(tempfile.mkdtemp())
    >>> exp.write_info(ExperimentInfo(name="demo", expected_trials=3, select_metric="ndcg@20"))
    >>> exp.read_info().select_metric, exp.records.files()
    ('ndcg@20', [])
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from clear_tune import _storage
from clear_tune.errors import SpecError

# URI schemes pyarrow.fs.FileSystem.from_uri (and so Ray Tune's storage_path) understands.
STORAGE_SCHEMES = ("file", "local", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "mock")
OPTUNA_DB = "optuna.db"  # Ray's Optuna searcher's study (for optuna-dashboard)
PRUNER_DB = "pruner.db"  # the Optuna-pruner bridge's own study, apart from optuna.db
STUDY_FILES = (OPTUNA_DB, PRUNER_DB)


def check_results_location(results: str) -> None:
    """A plain folder, or a storage URI with a scheme Ray's storage supports (checked offline: no connection);
    anything else is a one-line :class:`SpecError` naming ``results``."""
    if "://" not in results:
        return
    scheme = results.split("://", 1)[0].lower()
    if not _storage.is_uri(results) or scheme not in STORAGE_SCHEMES:
        raise SpecError(
            f"results: {results!r} has no storage scheme Ray supports; use a (shared) folder such as "
            f"/mnt/shared/results or a URI starting with one of {', '.join(s + '://' for s in STORAGE_SCHEMES)}"
        )
    if scheme in ("s3", "gs", "gcs") and not results.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]:
        raise SpecError(f"results: {results!r} names no bucket; write it as {scheme}://BUCKET/PATH")


class Location:
    """A file or folder at a local path or a storage URI; ``location / "name"`` is a child.

    Writes are atomic (a temporary name moved into place where the filesystem can rename; one write under
    the final name on object stores, where an object appears only once complete).
    """

    def __init__(self, where: str | os.PathLike[str] | Location) -> None:
        self._where: str | Path = (
            where._where if isinstance(where, Location) else str(where) if _storage.is_uri(where) else Path(where)
        )

    def __truediv__(self, name: str) -> Location:
        return Location(_storage.join(self._where, name))

    def __str__(self) -> str:
        return str(self._where)

    def __repr__(self) -> str:
        return f"Location({str(self._where)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    @property
    def name(self) -> str:
        return _storage.name(self._where)

    @property
    def is_remote(self) -> bool:
        """Whether this is a storage URI (then :attr:`path` is None)."""
        return isinstance(self._where, str)

    @property
    def path(self) -> Path | None:
        """The local path, or None for a storage URI."""
        return None if isinstance(self._where, str) else self._where

    def is_file(self) -> bool:
        return _storage.is_file(self._where)

    def is_dir(self) -> bool:
        return _storage.is_dir(self._where)

    def files(self) -> list[str]:
        """Sorted names of the files directly in this folder ([] when it does not exist)."""
        return _storage.list_files(self._where)

    def read_bytes(self) -> bytes:
        return _storage.read_bytes(self._where)

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def write_bytes(self, data: bytes, *, overwrite: bool = True, durable: bool = False) -> bool:
        """Write atomically; ``overwrite=False`` keeps an existing file and returns False. ``durable`` fsyncs."""
        return _storage.write_bytes(self._where, data, overwrite=overwrite, durable=durable)

    def write_text(self, text: str, *, overwrite: bool = True, durable: bool = False) -> bool:
        return self.write_bytes(text.encode("utf-8"), overwrite=overwrite, durable=durable)

    def move_to(self, target: Location) -> None:
        _storage.move(self._where, target._where)

    def download_to(self, local: Path) -> bool:
        """Copy this file to the local path ``local``; False when it does not exist."""
        return _storage.download_file(str(self._where), local)

    def upload_from(self, local: Path) -> None:
        """Write the local file ``local`` here."""
        self.write_bytes(Path(local).read_bytes())


class ExperimentInfo(BaseModel):
    """``experiment.json``: what the harness set up, for the tables and the report to read back.

    ``select_metric`` is the valid metric that chose configs (the trainer's early stopping, the search, the
    tables and the report all use it). Unknown keys of older files are ignored; missing ones are None.
    """

    model_config = ConfigDict(extra="ignore")

    name: str | None = None
    spec_path: str | None = None
    search: str | None = None
    sampler: str | None = None
    scheduler: str | None = None
    expected_trials: int | None = Field(None, ge=0)
    select_metric: str = "recall@20"
    arms: list[str] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=list)
    # the spec's plugins: entry as written, kind, where it was and the digest of the files that travelled
    plugins: list[dict[str, str]] = Field(default_factory=list)
    ray: dict[str, Any] = Field(default_factory=dict)
    started_at: float | str | None = None
    resumed_at: list[float] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _older_spellings(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            data.setdefault("spec_path", data.get("spec"))
            metric = data.get("metric")  # written as "valid recall@20" before select_metric existed
            if "select_metric" not in data and isinstance(metric, str):
                data["select_metric"] = metric.removeprefix("valid ")
        return data


class Experiment:
    """The folder of one experiment (see the module docstring); ``where`` is ``<results>/<experiment>``."""

    def __init__(self, where: str | os.PathLike[str] | Location) -> None:
        self.root = Location(where)
        if self.root.path is not None:
            self.root = Location(self.root.path.resolve())

    @classmethod
    def of(cls, results: str, name: str) -> Experiment:
        """``<results>/<name>`` (``results`` a folder or a storage URI)."""
        return cls(_storage.join(results, name))

    def __str__(self) -> str:
        return str(self.root)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def records(self) -> Location:
        return self.root / "records"

    @property
    def spec_copy(self) -> Location:
        return self.root / "spec.yaml"

    @property
    def info_file(self) -> Location:
        return self.root / "experiment.json"

    def exists(self) -> bool:
        return self.root.is_dir()

    def has_ray_state(self) -> bool:
        """Whether Ray Tune saved an experiment state here (``tuner.pkl``), i.e. there is something to resume."""
        return (self.root / "tuner.pkl").is_file()

    def ray_storage(self) -> tuple[str, str]:
        """``(storage_path, name)`` for Ray Tune's ``RunConfig``: the folder's parent (or URI prefix) and name."""
        where = str(self.root)
        if self.root.is_remote:
            prefix, _, query = where.partition("?")
            parent = prefix.rstrip("/").rsplit("/", 1)[0]
            return (f"{parent}?{query}" if query else parent), self.name
        return str(Path(where).parent), self.name

    # ------------------------------------------------------------------------------------ experiment.json
    def read_info(self) -> ExperimentInfo | None:
        """``experiment.json``, or None when it is absent or unreadable (it is optional for the report)."""
        if not self.info_file.is_file():
            return None
        try:
            return ExperimentInfo.model_validate(json.loads(self.info_file.read_text()))
        except (ValueError, TypeError):
            return None

    def write_info(self, info: ExperimentInfo) -> None:
        self.info_file.write_text(info.model_dump_json(indent=1))

    def start(self, info: ExperimentInfo, spec_text: str, *, resume: bool) -> ExperimentInfo:
        """Write ``spec.yaml`` (once) and ``experiment.json`` (``started_at`` kept, ``resumed_at`` appended)."""
        self.spec_copy.write_text(spec_text, overwrite=False)
        old = self.read_info()
        info = info.model_copy(
            update={
                "started_at": old.started_at if old is not None and old.started_at is not None else time.time(),
                "resumed_at": [*(old.resumed_at if old is not None else []), *([time.time()] if resume else [])],
            }
        )
        self.write_info(info)
        return info

    # ------------------------------------------------------------------------ what must be on a local disk
    def local_dir(self) -> Path:
        """The experiment folder itself when it is local; for a URI its local mirror (SQLite, the report)."""
        if self.root.path is not None:
            return self.root.path
        return _storage.local_mirror(str(self.root))

    def study_dir(self, *, resume: bool) -> Path:
        """Where the Optuna SQLite studies live (:meth:`local_dir`); for a URI, ``resume`` fetches their copies
        from the URI when the mirror has none."""
        local = self.local_dir()
        local.mkdir(parents=True, exist_ok=True)
        if resume and self.root.is_remote:
            for db in STUDY_FILES:
                if not (local / db).is_file():
                    (self.root / db).download_to(local / db)
        return local

    def publish(self, files: list[Path]) -> list[str]:
        """For a URI, copy these local files (under :meth:`local_dir`) to the same relative names there;
        returns the targets ([] for a local experiment, whose files are already in place)."""
        if not self.root.is_remote:
            return []
        base, targets = self.local_dir(), []
        for file in files:
            target = self.root
            for part in file.relative_to(base).parts:
                target = target / part
            target.upload_from(file)
            targets.append(str(target))
        return targets
