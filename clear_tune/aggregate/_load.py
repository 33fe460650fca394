"""Read one experiment folder: its trial records plus what the harness wrote about it.

The harness writes ``records/*.json`` (one per finished trial), ``spec.yaml`` (a copy of the search spec)
and ``experiment.json`` (:class:`~clear_tune.experiment.ExperimentInfo`: name, search kind, expected number
of trials, the select metric, Ray nodes/GPUs). Only the records are required; the two metadata files may be
absent on an interrupted or hand-assembled experiment, and then whatever depends on them (e.g. "trials
missing") is reported unknown and configs are chosen on valid Recall@20. The folder may be a storage URI
(``s3://bucket/results/grid``, ``file:///...``): :class:`~clear_tune.experiment.Experiment` reads it.

Example:
    >>> import tempfile
    >>> from clear_tune.records import write_record
    >>> d = tempfile.mkdtemp()
    >>> _ = write_record(f"{d}/records", {"trial_id": "t1", "status": "completed"})
    >>> exp = load_experiment(d)
    >>> len(exp.records), exp.expected_trials is None, exp.select_metric
    (1, True, 'recall@20')
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from clear_tune.errors import DataError
from clear_tune.experiment import Experiment, ExperimentInfo, Location
from clear_tune.records import TrialRecord, read_records, record_names


@dataclass(frozen=True)
class LoadedExperiment:
    """Everything the tables and the report are built from."""

    experiment: Experiment
    name: str
    records: list[TrialRecord]
    info: ExperimentInfo = field(default_factory=ExperimentInfo)  # the defaults when experiment.json is absent
    has_info: bool = False
    spec: dict[str, Any] | None = None  # spec.yaml (None when absent)

    @property
    def path(self) -> Location:
        return self.experiment.root

    @property
    def select_metric(self) -> str:
        """The valid metric that chose configs in this experiment (``experiment.json``; Recall@20 without it)."""
        return self.info.select_metric

    @property
    def expected_trials(self) -> int | None:
        """How many trials the search was set up to run, or None when experiment.json does not say."""
        return self.info.expected_trials

    @property
    def missing_trials(self) -> int | None:
        expected = self.expected_trials
        return None if expected is None else max(expected - len(self.records), 0)


def load_experiment(experiment_dir: str | os.PathLike[str] | Experiment) -> LoadedExperiment:
    """Load ``experiment_dir``; raises :class:`DataError` (one line) when it is missing or holds no records."""
    experiment = experiment_dir if isinstance(experiment_dir, Experiment) else Experiment(experiment_dir)
    if not experiment.exists():
        raise DataError(
            f"experiment folder {str(experiment)!r} does not exist; "
            "pass results/<experiment> as written by clear_tune.run"
        )
    try:
        records = read_records(experiment.records)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(
            f"trial record {str(_first_unreadable(experiment.records))!r} is not valid JSON; move it out of the "
            "records folder or fix it"
        ) from None
    if not records:
        raise DataError(
            f"no trial records in {str(experiment.records)!r}; wait until the first trial of the search finishes, "
            "or check the experiment path"
        )
    info = experiment.read_info()
    name = str((info.name if info is not None else None) or records[0].get("experiment") or experiment.name)
    return LoadedExperiment(
        experiment=experiment,
        name=name,
        records=records,
        info=info or ExperimentInfo(),
        has_info=info is not None,
        spec=_read_yaml(experiment.spec_copy),
    )


def _first_unreadable(records: Location) -> Location | None:
    for file_name in record_names(records):
        try:
            json.loads((records / file_name).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return records / file_name
    return None


def _read_yaml(file: Location) -> dict[str, Any] | None:
    if not file.is_file():
        return None
    try:
        value = yaml.safe_load(file.read_text())
    except yaml.YAMLError:
        return None
    return value if isinstance(value, dict) else None
