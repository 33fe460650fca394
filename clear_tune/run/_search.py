"""Run (or resume) one search, top to bottom: spec -> datasets -> Ray Tune -> records -> tables and report.

Flow: validate the whole spec (nothing is written on error) -> load each dataset ONCE on the driver (Ray's
object store carries it to the trials) -> start or join Ray -> write ``spec.yaml`` and ``experiment.json``
-> run the trials (grid or Optuna search; ASHA/HyperBand or an Optuna pruner) while the driver writes one
record per finished trial -> print the best config by validation -> build the tables and the report.

The experiment folder and what lives in it belong to :mod:`clear_tune.experiment`; the Ray Tune parts to
:mod:`clear_tune.tune`; choosing the best config to :mod:`clear_tune.aggregate`. Ctrl-C stops cleanly;
``--resume`` continues with ``Tuner.restore``: finished trials are not re-run, unfinished ones continue from
their last checkpoint, failed ones stay failed unless ``--retry-failed``.

Example:
    >>> from clear_tune.run import run_search
    >>> outcome = run_search("search_spaces/smoke.yaml", results="/tmp/ct")   # doctest: +SKIP
    >>> outcome.complete                                                       # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

from clear_tune.errors import DataError, SpecError
from clear_tune.experiment import OPTUNA_DB, PRUNER_DB, Experiment, ExperimentInfo, Location
from clear_tune.records import dataset_summary, read_records, record_names
from clear_tune.spec import OPTUNA_PRUNERS, Spec, load_spec


@dataclass
class SearchOutcome:
    """What a search left behind (also what ``--resume`` would continue)."""

    experiment_dir: Location
    expected: int
    records: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    report: Any = None

    @property
    def complete(self) -> bool:
        return len(self.records) >= self.expected

    def counts(self) -> dict[str, int]:
        out = {"completed": 0, "pruned": 0, "failed": 0}
        for rec in self.records:
            out[rec["status"]] = out.get(rec["status"], 0) + 1
        return out


def run_search(
    spec_path: str | os.PathLike[str],
    *,
    address: str | None = None,
    resume: bool = False,
    retry_failed: bool = False,
    results: str | None = None,
    verbose: int = 1,
    build_report: bool = True,
) -> SearchOutcome:
    """Run (or ``resume``) the search described by ``spec_path``; see the module docstring."""
    spec = load_spec(spec_path, results=results)
    experiment = Experiment.of(spec.settings.results, spec.name)
    try:
        _check_experiment(spec, experiment, resume=resume)
    except DataError as exc:  # an unreachable bucket / bad credentials: one line naming 'results'
        raise SpecError(f"{spec.path}: results: {exc}") from None
    datasets = _load_datasets(spec)  # DataError (one line) before anything is written or started
    study_dir = experiment.study_dir(resume=resume)
    if experiment.root.is_remote and verbose:
        print(f"results at {experiment}; local files (Optuna study, report) in {study_dir}")

    import optuna

    from clear_tune import tune as ct

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with ct.ray_cluster(address, verbose=verbose) as cluster:
            gpus = ct.gpus_per_trial(spec, cluster)
            if (warning := ct.hyperband_capacity_warning(spec)) is not None:
                print(f"warning: {spec.path}: {warning}", file=sys.stderr)
            experiment.start(_experiment_info(spec, ct.cluster_info(address)), spec.path.read_text(), resume=resume)
            pruner_storage = _pruner_storage(spec, study_dir, resume=resume)
            verdicts = _verdicts(spec)
            trainable = _trainable(
                spec, datasets, gpus, experiment, resume=resume, retry_failed=retry_failed, verdicts=verdicts
            )
            if resume:
                tuner = ct.restore_tuner(
                    spec,
                    experiment,
                    trainable,
                    retry_failed=retry_failed,
                    pruner_storage=pruner_storage,
                    verdicts=verdicts,
                )
            else:
                writer = ct.RecordWriter(
                    experiment.records,
                    experiment=spec.name,
                    scheduler=spec.settings.scheduler.kind,
                    select_metric=spec.metric,
                    datasets={key: dataset_summary(ds) for key, ds in datasets.items()},
                )
                tuner = ct.build_tuner(
                    spec,
                    experiment,
                    trainable,
                    writer,
                    verbose=verbose,
                    study_dir=study_dir,
                    pruner_storage=pruner_storage,
                    groups=spec.groups(datasets),
                    verdicts=verdicts,
                )
            tuner.fit()
            if pruner_storage is not None and len(record_names(experiment.records)) >= spec.expected_trials():
                ct.fail_running_trials(pruner_storage, spec.name)  # complete: nothing RUNNING can come back now
    finally:
        _MAILBOXES.clear()
        _publish_studies(spec, experiment, study_dir)
    return _finish(spec, spec_path, experiment, results=results, build=build_report)


def _check_experiment(spec: Spec, experiment: Experiment, *, resume: bool) -> None:
    has_state = experiment.has_ray_state()
    if resume and not has_state:
        raise SpecError(
            f"{spec.path}: nothing to resume in {experiment}: run without --resume to start this experiment"
        )
    saved = experiment.spec_copy
    if resume and saved.is_file() and saved.read_text() != spec.path.read_text():
        raise SpecError(
            f"{spec.path}: differs from the spec this experiment started with ({saved}); resume with "
            f"that file, or start a new experiment under another name"
        )
    if not resume and (has_state or record_names(experiment.records)):
        raise SpecError(
            f"{spec.path}: {experiment} already holds experiment {spec.name!r}: add --resume to continue it, "
            "or change 'experiment' (or --results) to start a new one"
        )


def _load_datasets(spec: Spec) -> dict[str, Any]:
    """Each distinct dataset of the spec, loaded once, by :func:`clear_tune.tune.dataset_key`."""
    from clear_tune.data import load_dataset
    from clear_tune.tune import dataset_key

    out: dict[str, Any] = {}
    for data in spec.settings.data:
        key = dataset_key(data.source, data.options)
        if key not in out:
            out[key] = load_dataset(data.source, **data.options)
    return out


def _experiment_info(spec: Spec, cluster: dict[str, Any]) -> ExperimentInfo:
    s = spec.settings
    return ExperimentInfo(
        name=spec.name,
        spec_path=str(spec.path),
        search=s.search.kind,
        sampler=s.search.sampler if s.search.kind == "optuna" else None,
        scheduler=s.scheduler.kind,
        expected_trials=spec.expected_trials(),
        select_metric=spec.metric,
        arms=list(spec.arms),
        seeds=s.seeds,
        ray=cluster,
        plugins=[{"entry": p.entry, "kind": p.kind, "target": p.target, "digest": p.digest} for p in spec.plugins],
    )


def _pruner_storage(spec: Spec, study_dir: Any, *, resume: bool) -> str | None:
    """The Optuna-pruner bridge's study, ``pruner.db`` beside ``optuna.db``; None for Ray's schedulers."""
    from clear_tune.tune import pruner_storage_url

    if spec.settings.scheduler.kind not in OPTUNA_PRUNERS:
        return None
    if not resume:
        # A new experiment (no Ray state, no records: checked): a pruner.db here was left by a start that
        # failed before Ray saved anything, or by an older experiment in a reused local mirror. Its finished
        # trials are not this experiment's and would bias the pruner.
        (study_dir / PRUNER_DB).unlink(missing_ok=True)
    return pruner_storage_url(study_dir)


def _verdicts(spec: Spec) -> str | None:
    """The mailbox through which member-level schedulers prune fused members (none for fifo and hyperband)."""
    from clear_tune.tune import start_verdicts, verdicts_name

    if spec.settings.scheduler.kind in ("fifo", "hyperband"):
        return None
    name = verdicts_name(spec.name)
    _MAILBOXES.append(start_verdicts(name))  # a named actor lives only while a handle to it does
    return name


_MAILBOXES: list[Any] = []


def _trainable(
    spec: Spec,
    datasets: dict[str, Any],
    gpus: float,
    experiment: Experiment,
    *,
    resume: bool,
    retry_failed: bool,
    verdicts: str | None,
) -> Any:
    from ray import tune

    from clear_tune.tune import run_trial

    # Our records, not Ray's periodically saved state, say which trials finished: a trial whose record
    # was written just before a crash may still look unfinished to Tuner.restore, and must not train again.
    recorded = frozenset(
        r["trial_id"]
        for r in read_records(experiment.records)
        if resume and not (retry_failed and r.get("status") == "failed")
    )
    s = spec.settings
    return tune.with_resources(
        tune.with_parameters(
            run_trial,
            datasets=datasets,
            recorded=recorded,
            cpus_per_trial=s.resources.cpus,
            checkpoint_every=s.checkpoint_every,
            checkpoint_interval_s=s.checkpoint_interval_s,
            judged=verdicts,
            plugins=tuple(spec.plugins),
        ),
        {"cpu": s.resources.cpus, "gpu": gpus},
    )


def _publish_studies(spec: Spec, experiment: Experiment, study_dir: Any) -> None:
    """For a URI, copy the local SQLite studies there: ``optuna.db`` (optuna search), ``pruner.db`` (pruners)."""
    used = {OPTUNA_DB: spec.settings.search.kind == "optuna", PRUNER_DB: spec.settings.scheduler.kind in OPTUNA_PRUNERS}
    files = [study_dir / db for db, wanted in used.items() if wanted and (study_dir / db).is_file()]
    try:
        experiment.publish(files)
    except Exception as exc:  # never hide the search's own outcome behind an upload problem
        print(
            f"warning: copying the Optuna studies {[str(f) for f in files]} to {experiment} failed "
            f"({type(exc).__name__}: {exc})",
            file=sys.stderr,
        )


def _finish(spec: Spec, spec_path: Any, experiment: Experiment, *, results: str | None, build: bool) -> SearchOutcome:
    from clear_tune.aggregate import best_by_validation, short_name

    outcome = SearchOutcome(experiment.root, spec.expected_trials(), read_records(experiment.records))
    outcome.best = best_by_validation(outcome.records, spec.metric)
    c = outcome.counts()
    print(
        f"\n{len(outcome.records)} of {outcome.expected} trials recorded in {experiment.records} "
        f"({c['completed']} completed, {c['pruned']} pruned, {c['failed']} failed)"
    )
    if not outcome.complete:
        extra = f" --results {results}" if results else ""
        print(
            f"the search stopped before every trial finished; resume with: "
            f"python -m clear_tune.run {spec_path}{extra} --resume"
        )
    if outcome.best is not None:
        b = outcome.best
        cfg, pj = b["config"], b["config"]["projection"]
        print(
            f"best by validation (mean over seeds {b['seeds']} of valid {spec.metric}): {b['valid_mean']:.4f} "
            f"(test {short_name(spec.metric)} {b['test_mean']:.4f}) - arm {b['arm']}, backbone {cfg['backbone']}, "
            f"mode {pj['mode']}, k {pj['k']}, λ {pj['strength']:g}"
            + (f", ρ {pj['energy']:g}" if pj["mode"] == "dynamic" else "")
        )
    if build and outcome.records:
        outcome.report = _build_report(experiment)
    return outcome


def _build_report(experiment: Experiment) -> Any:
    from clear_tune.report import build_report

    try:
        paths = build_report(experiment)
    except Exception as exc:  # the search's results are safe on disk: a report problem must not hide them
        print(
            f"warning: building the report failed ({type(exc).__name__}: {exc}); "
            f"retry with: python -m clear_tune.report {experiment}",
            file=sys.stderr,
        )
        return None
    print(f"tables: {paths.tables_dir}\nreport: {paths.html}")
    if paths.uploaded_to:
        print(f"report and tables copied to {paths.uploaded_to}")
    return paths
