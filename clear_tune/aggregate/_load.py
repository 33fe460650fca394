"""Read one experiment folder: its trial records plus the harness's ``experiment.json`` and ``spec.yaml``.

The harness writes ``results/<experiment>/records/*.json`` (one per finished trial), ``spec.yaml`` (a copy
of the search spec) and ``experiment.json`` (name, search kind, expected number of trials, start time, Ray
nodes/GPUs). Only the records are required; the two metadata files may be absent on an interrupted or
hand-assembled experiment, and then whatever depends on them (e.g. "trials missing") is reported unknown.
The experiment may also be a storage URI (``s3://bucket/results/grid``, ``file:///...``): then it is read
through ``pyarrow.fs`` (:mod:`clear_tune._storage`) and ``Experiment.path`` is that URI string.

Example:
    >>> import tempfile
    >>> from clear_tune.records import write_record
    >>> d = tempfile.mkdtemp()
    >>> _ = write_record(f"{d}/records", {"trial_id": "t1", "status": "completed"})
    >>> exp = load_experiment(d)
    >>> len(exp.records), exp.expected_trials is None
    (1, True)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clear_tune import _storage
from clear_tune.errors import DataError
from clear_tune.records import TrialRecord, read_records, record_names

# The harness helper names the expected count; accept the plausible spellings so we never silently miss it.
_EXPECTED_KEYS = ("expected_trials", "n_trials_expected", "expected_n_trials", "n_trials", "num_trials", "expected")


@dataclass(frozen=True)
class Experiment:
    """Everything the tables and the report are built from."""

    path: Path | str  # a string when the experiment lives at a storage URI
    name: str
    records: list[TrialRecord]
    meta: dict[str, Any] = field(default_factory=dict)  # experiment.json ({} when absent)
    spec: dict[str, Any] | None = None  # spec.yaml (None when absent)

    @property
    def expected_trials(self) -> int | None:
        """How many trials the search was set up to run, or None when experiment.json does not say."""
        for key in _EXPECTED_KEYS:
            value = self.meta.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
                return int(value)
        return None

    @property
    def missing_trials(self) -> int | None:
        expected = self.expected_trials
        return None if expected is None else max(expected - len(self.records), 0)


def load_experiment(experiment_dir: str | os.PathLike[str]) -> Experiment:
    """Load ``experiment_dir``; raises :class:`DataError` (one line) when it is missing or holds no records."""
    path: Path | str = str(experiment_dir) if _storage.is_uri(experiment_dir) else Path(experiment_dir)
    if not _storage.is_dir(path):
        raise DataError(f"experiment folder {str(path)!r} does not exist; pass results/<experiment> as written by clear_tune.run")
    records_dir = _storage.join(path, "records") if isinstance(path, str) else path / "records"
    try:
        records = read_records(records_dir)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(
            f"trial record {str(_first_unreadable(records_dir))!r} is not valid JSON; move it out of the records folder or fix it"
        ) from None
    if not records:
        raise DataError(
            f"no trial records in {str(records_dir)!r}; wait until the first trial of the search finishes, "
            "or check the experiment path"
        )
    meta = _read_json(_storage.join(path, "experiment.json"))
    spec = _read_yaml(_storage.join(path, "spec.yaml"))
    name = str(meta.get("name") or records[0].get("experiment") or _storage.name(path))
    return Experiment(path=path, name=name, records=records, meta=meta, spec=spec)


def _first_unreadable(records_dir: Path | str) -> Path | str | None:
    for file_name in record_names(records_dir):
        file = _storage.join(records_dir, file_name) if isinstance(records_dir, str) else records_dir / file_name
        try:
            json.loads(_storage.read_text(file))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return file
    return None


def _read_json(file: Path | str) -> dict[str, Any]:
    if not _storage.is_file(file):
        return {}
    try:
        value = json.loads(_storage.read_text(file))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}  # metadata is optional: a half-written file must not stop the report
    return value if isinstance(value, dict) else {}


def _read_yaml(file: Path | str) -> dict[str, Any] | None:
    if not _storage.is_file(file):
        return None
    try:
        value = yaml.safe_load(_storage.read_text(file))
    except yaml.YAMLError:
        return None
    return value if isinstance(value, dict) else None
