"""``build_report(experiment_dir)``: tables under ``tables/`` and one offline ``report.html``.

Works on a finished, running or interrupted experiment: it uses the records that exist and says how many
trials are missing (from ``experiment.json``; "unknown" when that file is absent).

Configs are chosen on the experiment's select metric (``experiment.json``), which every table and the
report's header name. For an experiment at a storage URI (``s3://...``, ``file://...``) the tables and
``report.html`` are built in its local folder (:meth:`clear_tune.experiment.Experiment.local_dir`:
``$CLEAR_TUNE_LOCAL_DIR`` or ``~/.cache/clear-tune``, ``/<experiment>-<hash>/``) so they can be opened
here, then copied to ``<URI>/tables/`` and ``<URI>/report.html`` (``ReportPaths.uploaded_to``).

Example:
    >>> import tempfile
    >>> from clear_tune.records import write_record
    >>> d = tempfile.mkdtemp()
    >>> _ = write_record(f"{d}/records", {"trial_id": "t1", "status": "completed", "config": {"seed": 0},
    ...                  "valid": {"recall@20": 0.1}, "test": {"recall@20": 0.1}, "wall_start": 0, "wall_end": 9})
    >>> paths = build_report(d)
    >>> paths.html.name, (paths.tables_dir / "overall.csv").is_file()
    ('report.html', True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from clear_tune._storage import atomic_file
from clear_tune.aggregate import (
    LoadedExperiment,
    build_tables,
    config_summary,
    load_experiment,
    short_name,
    trials_frame,
    write_tables,
)
from clear_tune.records import read_user_metrics
from clear_tune.report import _figures as figs
from clear_tune.report._html import compact_json, render_page
from clear_tune.report._users import user_gain_figure

if TYPE_CHECKING:
    from clear_tune.experiment import Experiment

_KIND_WARNING = {
    "synthetic": "synthetic interactions and generated features",
    "semi-synthetic": "a real interaction graph with generated (random) item features",
}


@dataclass(frozen=True)
class ReportPaths:
    """Where :func:`build_report` wrote its outputs."""

    tables_dir: Path
    html: Path
    uploaded_to: str | None = None  # the experiment's storage URI the outputs were copied to, if any


def build_report(experiment_dir: str | os.PathLike[str] | Experiment) -> ReportPaths:
    """Aggregate ``experiment_dir``'s records into ``tables/`` (CSV, Markdown, LaTeX) and ``report.html``.

    Raises :class:`clear_tune.errors.DataError` when the folder is missing or holds no records; files from an
    earlier build are only replaced (atomically) once the new ones are complete.
    """
    experiment = load_experiment(experiment_dir)
    metric = experiment.select_metric
    frame = trials_frame(experiment.records)
    summary = config_summary(frame)

    def per_user(trial_id: str):
        return read_user_metrics(experiment.experiment.records, trial_id)

    tables = build_tables(frame, select_metric=metric, per_user=per_user)
    out_dir = experiment.experiment.local_dir()
    tables_dir = out_dir / "tables"
    written = write_tables(tables, tables_dir)
    _write_atomic(tables_dir / "trials.csv", frame.to_csv(index=False))

    by_name = {t.name: t for t in tables}
    records = {str(r.get("trial_id")): r for r in experiment.records}
    figures: list[tuple[str, str, object]] = []
    for name, fig in figs.heatmap_figures(summary, metric):
        figures.append(("Sensitivity: λ × k", name, fig))
    for section, name, fig in (
        ("Ablation and generalization", "ablation", figs.ablation_figure(by_name["ablation"])),
        ("Ablation and generalization", "generalization", figs.generalization_figure(by_name["generalization"])),
        (
            "Ablation and generalization",
            "per-user-gain",
            user_gain_figure(frame, summary, per_user, select_metric=metric, generalization=by_name["generalization"]),
        ),
        ("Spectrum and learning curves", "spectrum", figs.spectrum_figure(frame, records, summary, metric)),
        ("Spectrum and learning curves", "learning-curves", figs.learning_curves_figure(frame, records, metric)),
        ("All trials", "parallel-coordinates", figs.parallel_coordinates_figure(frame, metric)),
        ("Cluster use", "timeline", figs.timeline_figure(frame)),
        ("Cluster use", "best-so-far", figs.best_so_far_figure(frame, metric)),
    ):
        if fig is not None:
            figures.append((section, name, fig))

    page = render_page(
        title=f"clear-tune report — {experiment.name}",
        header=_header(experiment, frame),
        warnings=_warnings(frame),
        notices=_notices(experiment),
        tables=tables,
        figures=figures,  # type: ignore[arg-type]
    )
    html_path = out_dir / "report.html"
    _write_atomic(html_path, page)
    published = experiment.experiment.publish([*written, tables_dir / "trials.csv", html_path])
    return ReportPaths(tables_dir=tables_dir, html=html_path, uploaded_to=str(experiment.path) if published else None)


def _header(experiment: LoadedExperiment, frame: pd.DataFrame) -> list[tuple[str, str]]:
    info, spec = experiment.info, experiment.spec or {}
    counts = frame["status"].value_counts()
    searched = [
        f"search: {compact_json(info.search or spec.get('search') or 'unknown')}",
        f"arms: {compact_json(', '.join(sorted(frame['arm'].astype(str).unique())))}",
        f"backbones: {compact_json(', '.join(sorted(frame['backbone'].astype(str).unique())))}",
        f"k ∈ {{{', '.join(map(str, sorted(frame['k'].unique())))}}}",
        f"λ ∈ {{{', '.join(f'{v:g}' for v in sorted(frame['strength'].unique()))}}}",
    ]
    datasets = frame.groupby(["dataset", "dataset_kind"]).size().reset_index()
    data_text = "; ".join(f"{compact_json(d)} ({compact_json(k)})" for d, k, _ in datasets.itertuples(index=False))
    starts, ends = frame["wall_start"].dropna(), frame["wall_end"].dropna()
    started = info.started_at or (starts.min() if not starts.empty else "unknown")
    if isinstance(started, (int, float)) and not isinstance(started, bool):
        started = _iso(started)
    last = _iso(ends.max()) if not ends.empty else "unknown"
    spec_path = info.spec_path
    return [
        ("experiment", compact_json(experiment.name) + f" — <code>{compact_json(str(experiment.path))}</code>"),
        ("searched", " · ".join(searched) + (f" (spec <code>{compact_json(spec_path)}</code>)" if spec_path else "")),
        ("data", data_text),
        ("when", f"started {compact_json(started)}; last trial finished {compact_json(last)}"),
        ("cluster", _cluster_text(info.ray, frame)),
        (
            "trials",
            f"{len(frame)} recorded: {int(counts.get('completed', 0))} completed, "
            f"{int(counts.get('pruned', 0))} pruned, {int(counts.get('failed', 0))} failed; "
            + _missing_text(experiment),
        ),
        (
            "selection",
            f"best config by mean valid {short_name(experiment.select_metric)} over seeds "
            f"(select metric {compact_json(experiment.select_metric)}); "
            "test numbers are reported, never used to choose",
        ),
    ]


def _cluster_text(ray: dict, frame: pd.DataFrame) -> str:
    nodes = frame["node_id"].fillna(frame["node_ip"]).dropna().nunique()
    gpus = frame.loc[frame["n_gpus"] > 0, ["node_id", "gpu_ids"]].drop_duplicates()
    gpu_count = sum(len(str(g).split(",")) for g in gpus["gpu_ids"]) if not gpus.empty else 0
    devices = ", ".join(sorted(frame["device"].dropna().astype(str).unique())) or "unknown"
    used = f"records: {max(nodes, 1)} node(s), {gpu_count} GPU(s) used ({compact_json(devices)})"
    return (f"Ray: {compact_json(ray)}; " if ray else "") + used


def _missing_text(experiment: LoadedExperiment) -> str:
    expected = experiment.expected_trials
    if expected is None:
        return "expected count unknown (no experiment.json), so missing trials cannot be computed"
    missing = experiment.missing_trials
    return f"{expected} expected, {missing} missing" + (" (still running or interrupted)" if missing else "")


def _warnings(frame: pd.DataFrame) -> list[str]:
    warnings = []
    for kind, what in _KIND_WARNING.items():
        names = sorted(frame.loc[frame["dataset_kind"] == kind, "dataset"].astype(str).unique())
        if names:
            warnings.append(
                f"{', '.join(names)}: {kind} data ({what}). These numbers are NOT the paper's real-feature results "
                "and must not be compared with them."
            )
    return warnings


def _notices(experiment: LoadedExperiment) -> list[str]:
    missing = experiment.missing_trials
    if missing:
        return [
            f"This experiment is incomplete: {missing} of {experiment.expected_trials} trials have no record yet. "
            "Everything below shows only the trials that are done."
        ]
    if missing is None:
        return ["No experiment.json: the number of expected trials is unknown, so missing trials cannot be counted."]
    return []


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(float(ts), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _write_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as out:
        out.write(text.encode("utf-8"))
