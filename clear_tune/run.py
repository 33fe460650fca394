"""``python -m clear_tune.run SPEC.yaml``: run a search over CLEAR configs on Ray Tune (+ Optuna).

Flow: validate the whole spec (nothing written on error) -> load each dataset ONCE on the driver and put it
in Ray's object store -> run the trials (grid or Optuna search; ASHA/HyperBand or an Optuna pruner) -> the
driver writes one record per finished trial under ``<results>/<experiment>/records/`` -> build the tables
and report (``clear_tune.report``) or, until that exists, print the best config by validation.

``<results>/<experiment>/`` holds Ray Tune's experiment folder (``tuner.pkl``, trial folders with
checkpoints), ``records/``, ``spec.yaml`` (a copy of the spec), ``experiment.json``, for Optuna
searches ``optuna.db`` and, for Optuna pruners, ``pruner.db`` (the pruner's own study, so that ``--resume``
keeps its history). Ctrl-C stops cleanly; ``--resume`` continues with ``Tuner.restore``: finished
trials are not re-run, unfinished ones continue from their last checkpoint, failed ones stay failed
unless ``--retry-failed``.

``results`` may be a storage URI Ray supports (``s3://bucket/results``, ``gs://...``, ``file:///...``):
Ray Tune keeps its experiment state and checkpoints there (``RunConfig(storage_path=URI)``), and the driver
writes records, ``spec.yaml`` and ``experiment.json`` there through ``pyarrow.fs``. Optuna's SQLite studies
cannot live on object storage: they are kept in the local mirror folder (:func:`clear_tune._storage.local_mirror`,
``$CLEAR_TUNE_LOCAL_DIR`` or ``~/.cache/clear-tune``) and copied to ``<URI>/<experiment>/optuna.db`` (and
``pruner.db``) when the search stops; ``--resume`` fetches those copies when the local ones are missing.

Example:
    >>> from clear_tune.run import run_search
    >>> outcome = run_search("search_spaces/smoke.yaml", results="/tmp/ct")   # doctest: +SKIP
    >>> outcome.complete                                                       # doctest: +SKIP
    True
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clear_tune import _storage
from clear_tune.errors import DataError, SpecError
from clear_tune.records import read_records, record_names
from clear_tune.spec import Spec, load_spec


@dataclass
class SearchOutcome:
    """What a search left behind (also what ``--resume`` would continue)."""

    experiment_dir: Path | str  # a string when results is a storage URI
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
    exp_dir: Path | str = spec.experiment_location if _storage.is_uri(spec.model.results) else spec.experiment_dir.resolve()
    records_dir = _sub(exp_dir, "records")
    try:
        _check_experiment_dir(spec, exp_dir, resume=resume)
    except DataError as exc:  # an unreachable bucket / bad credentials: one line naming 'results'
        raise SpecError(f"{spec.path}: results: {exc}") from None
    datasets = _load_datasets(spec)  # DataError (one line) before anything is written or started
    study_dir = _study_dir(exp_dir, resume=resume, verbose=verbose)

    import optuna
    import ray
    from ray import tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # keep Ray's classic table so our trimmed columns show
    # Checkpointing every evaluation makes Ray snapshot often; that is intended (exact --resume), not a problem.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started_ray = False
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, logging_level="warning",
                     log_to_driver=verbose > 1, configure_logging=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            if address is None:
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SpecError(f"--address {address}: cannot connect to a Ray cluster ({first}); check the address "
                            "or leave --address out to start a local Ray") from None
        started_ray = True
    try:
        gpus = _gpus_per_trial(spec, ray.cluster_resources())
        from clear_tune.tune._build import hyperband_capacity_warning

        if (hyperband := hyperband_capacity_warning(spec)) is not None:
            print(f"warning: {spec.path}: {hyperband}", file=sys.stderr)
        _write_experiment_files(spec, exp_dir, resume=resume, address=address)
        from clear_tune.tune import RecordWriter, dataset_key, run_trial

        pruner_storage = _pruner_storage(spec, study_dir, resume=resume)

        # Our records, not Ray's periodically saved state, say which trials finished: a trial whose record
        # was written just before a crash may still look unfinished to Tuner.restore, and must not train again.
        recorded = frozenset(
            r["trial_id"] for r in read_records(records_dir) if resume and not (retry_failed and r.get("status") == "failed")
        )
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, datasets=datasets, recorded=recorded, cpus_per_trial=spec.model.resources.cpus,
                                 checkpoint_every=spec.model.checkpoint_every,
                                 checkpoint_interval_s=spec.model.checkpoint_interval_s),
            {"cpu": spec.model.resources.cpus, "gpu": gpus},
        )
        if resume:
            tuner = tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True,
                                       resume_errored=retry_failed, restart_errored=False)
            _relocate_pruner(tuner, spec, pruner_storage)
        else:
            stats = {dataset_key(d.source, d.options): _dataset_stats(datasets[dataset_key(d.source, d.options)])
                     for d in spec.model.data}
            writer = RecordWriter(records_dir, experiment=spec.name, scheduler=spec.model.scheduler.kind,
                                  datasets=stats, select_metric=spec.metric)
            tuner = _new_tuner(spec, exp_dir, trainable, writer, verbose, study_dir=study_dir,
                               pruner_storage=pruner_storage)
        tuner.fit()
        if pruner_storage is not None and len(record_names(records_dir)) >= spec.expected_trials():
            from clear_tune.tune._pruner import fail_running_trials

            fail_running_trials(pruner_storage, spec.name)  # complete: nothing RUNNING can come back now
    finally:
        if started_ray:
            ray.shutdown()
        _upload_study(spec, exp_dir, study_dir)
    return _finish(spec, spec_path, exp_dir, results=results, build=build_report)


def _sub(exp_dir: Path | str, name: str) -> Path | str:
    """``exp_dir/name``: a Path for a folder, a string for a storage URI."""
    return exp_dir / name if isinstance(exp_dir, Path) else _storage.join(exp_dir, name)


def _study_dir(exp_dir: Path | str, *, resume: bool, verbose: int) -> Path:
    """Where Optuna's SQLite study lives: the experiment folder, or the local mirror for a storage URI."""
    if isinstance(exp_dir, Path):
        return exp_dir
    from clear_tune.tune._build import OPTUNA_DB, PRUNER_DB

    local = _storage.local_mirror(exp_dir)
    for db in (OPTUNA_DB, PRUNER_DB):
        if resume and not (local / db).is_file():
            _storage.download_file(_storage.join(exp_dir, db), local / db)
    if verbose:
        print(f"results at {exp_dir}; local files (Optuna study, report) in {local}")
    return local


def _upload_study(spec: Spec, exp_dir: Path | str, study_dir: Path) -> None:
    """Storage URI: copy the local SQLite studies to ``<URI>/<experiment>/``: ``optuna.db`` (optuna search)
    and ``pruner.db`` (Optuna pruner)."""
    from clear_tune.tune._build import OPTUNA_DB, OPTUNA_PRUNERS, PRUNER_DB

    if isinstance(exp_dir, Path):
        return
    wanted = {OPTUNA_DB: spec.model.search.kind == "optuna", PRUNER_DB: spec.model.scheduler.kind in OPTUNA_PRUNERS}
    for db in (db for db, used in wanted.items() if used and (study_dir / db).is_file()):
        try:
            _storage.upload_file(study_dir / db, _storage.join(exp_dir, db))
        except Exception as exc:  # never hide the search's own outcome behind an upload problem
            print(f"warning: copying the Optuna study {study_dir / db} to {exp_dir} failed "
                  f"({type(exc).__name__}: {exc})", file=sys.stderr)


def _pruner_storage(spec: Spec, study_dir: Path, *, resume: bool) -> str | None:
    """The Optuna-pruner bridge's study, ``pruner.db`` beside ``optuna.db``; None for Ray's schedulers."""
    from clear_tune.tune._build import OPTUNA_PRUNERS, PRUNER_DB, pruner_storage_url

    if spec.model.scheduler.kind not in OPTUNA_PRUNERS:
        return None
    study_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        # A new experiment (no Ray state, no records: checked): a pruner.db here was left by a start that
        # failed before Ray saved anything, or by an older experiment in a reused local mirror. Its finished
        # trials are not this experiment's and would bias the pruner.
        (study_dir / PRUNER_DB).unlink(missing_ok=True)
    return pruner_storage_url(study_dir)


def _relocate_pruner(tuner: Any, spec: Spec, storage: str | None) -> None:
    """Point a restored Optuna-pruner bridge at this run's ``pruner.db``.

    ``Tuner.restore`` unpickles the scheduler from ``tuner.pkl`` (Ray keeps no other scheduler state; see
    :mod:`clear_tune.tune._pruner`), so it names the study of the run that BUILT the Tuner: another place
    when the experiment folder moved, or when the local mirror is elsewhere ($CLEAR_TUNE_LOCAL_DIR, another
    node). Ray has no public accessor for a restored Tuner's scheduler, hence the private attributes.
    """
    if storage is None:
        return
    from clear_tune.tune._pruner import OptunaPrunerScheduler

    tune_config = getattr(getattr(tuner, "_local_tuner", None), "_tune_config", None)
    scheduler = getattr(tune_config, "scheduler", None)
    if not isinstance(scheduler, OptunaPrunerScheduler):
        print(f"warning: the Optuna pruner of the restored experiment was not found; its study stays where the "
              f"experiment started instead of {storage}", file=sys.stderr)
        return
    scheduler.relocate(storage, study_name=spec.name)


def _new_tuner(spec: Spec, exp_dir: Path | str, trainable: Any, writer: Any, verbose: int, *,
               study_dir: Path | None = None, pruner_storage: str | None = None) -> Any:
    from ray import tune
    from ray.tune import CheckpointConfig, FailureConfig, RunConfig

    from clear_tune.tune import make_reporter, make_scheduler, make_searcher

    searcher = make_searcher(spec, study_dir if study_dir is not None else exp_dir)
    if searcher is None:
        param_space = {"trial": tune.grid_search([plan.to_param() for plan in spec.run_order()])}
        num_samples = 1
    else:
        param_space, num_samples = {}, spec.expected_trials()
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=make_scheduler(spec, storage=pruner_storage),
            num_samples=num_samples,
            max_concurrent_trials=spec.model.max_concurrent,
            reuse_actors=True,  # a trial process (torch imported, dataset mapped) serves the next trial
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
        ),
        run_config=RunConfig(
            name=spec.name,
            # a folder's parent, or the results URI itself: Ray resolves URIs with pyarrow.fs like we do
            storage_path=str(exp_dir.parent) if isinstance(exp_dir, Path) else spec.model.results.rstrip("/"),
            callbacks=[writer],
            progress_reporter=make_reporter(spec),
            verbose=verbose,
            failure_config=FailureConfig(max_failures=spec.model.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=spec.model.checkpoints_to_keep),
        ),
    )


def trial_name(trial: Any) -> str:
    """Ray trial (and folder) name: the trial key for grid trials, arm + Ray id for Optuna ones."""
    param = trial.config.get("trial", {}) if isinstance(trial.config, dict) else {}
    return param.get("key") or f"{param.get('arm', 'trial')}-{trial.trial_id}"


def _check_experiment_dir(spec: Spec, exp_dir: Path | str, *, resume: bool) -> None:
    has_state = _storage.is_file(_sub(exp_dir, "tuner.pkl"))
    has_records = bool(record_names(_sub(exp_dir, "records")))
    if resume and not has_state:
        raise SpecError(f"{spec.path}: nothing to resume in {exp_dir}: run without --resume to start this experiment")
    saved = _sub(exp_dir, "spec.yaml")
    if resume and _storage.is_file(saved) and _storage.read_text(saved) != spec.path.read_text():
        raise SpecError(f"{spec.path}: differs from the spec this experiment started with ({saved}); resume with "
                        f"that file, or start a new experiment under another name")
    if not resume and (has_state or has_records):
        raise SpecError(
            f"{spec.path}: {exp_dir} already holds experiment {spec.name!r}: add --resume to continue it, "
            "or change 'experiment' (or --results) to start a new one"
        )


def _load_datasets(spec: Spec) -> dict[str, Any]:
    from clear_tune.data import load_dataset
    from clear_tune.tune import dataset_key

    out = {}
    for data in spec.model.data:
        key = dataset_key(data.source, data.options)
        if key not in out:
            out[key] = load_dataset(data.source, **data.options)
    return out


def _dataset_stats(dataset: Any) -> dict[str, Any]:
    return {**dataset.stats(), "provenance": dict(dataset.provenance)}


def _gpus_per_trial(spec: Spec, cluster: dict[str, float]) -> float:
    gpus = spec.model.resources.gpus
    if gpus > 0 and cluster.get("GPU", 0) == 0:
        print(f"warning: {spec.path}: resources.gpus={gpus:g} but the Ray cluster has no GPU; running on CPU",
              file=sys.stderr)
        return 0.0
    return gpus


def _write_experiment_files(spec: Spec, exp_dir: Path | str, *, resume: bool, address: str | None) -> None:
    import ray

    if isinstance(exp_dir, Path):
        exp_dir.mkdir(parents=True, exist_ok=True)
        if not (exp_dir / "spec.yaml").exists():
            shutil.copyfile(spec.path, exp_dir / "spec.yaml")
    else:
        _storage.write_text(_storage.join(exp_dir, "spec.yaml"), spec.path.read_text(), overwrite=False)
    info_path = _sub(exp_dir, "experiment.json")
    info = json.loads(_storage.read_text(info_path)) if _storage.is_file(info_path) else {}
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cluster = ray.cluster_resources()
    info.update({
        "name": spec.name,
        "spec_path": str(spec.path),
        "search": spec.model.search.kind,
        "sampler": spec.model.search.sampler if spec.model.search.kind == "optuna" else None,
        "scheduler": spec.model.scheduler.kind,
        "expected_trials": spec.expected_trials(),
        "metric": f"valid {spec.metric}",
        "arms": list(spec.arms),
        "seeds": spec.model.seeds,
        "ray": {"address": address or "local", "nodes": len(nodes), "cpus": cluster.get("CPU", 0),
                "gpus": cluster.get("GPU", 0)},
    })
    info.setdefault("started_at", time.time())
    if resume:
        info.setdefault("resumed_at", []).append(time.time())
    if not isinstance(exp_dir, Path):
        _storage.write_text(info_path, json.dumps(info, indent=1))
        return
    fd, tmp = tempfile.mkstemp(prefix=".experiment.", suffix=".tmp", dir=exp_dir)
    with os.fdopen(fd, "w") as fh:
        json.dump(info, fh, indent=1)
    os.replace(tmp, info_path)


def _finish(spec: Spec, spec_path: Any, exp_dir: Path | str, *, results: str | None, build: bool) -> SearchOutcome:
    from clear_tune.tune import best_by_validation

    records_dir = _sub(exp_dir, "records")
    outcome = SearchOutcome(exp_dir, spec.expected_trials(), read_records(records_dir))
    outcome.best = best_by_validation(records_dir, spec.metric)
    c = outcome.counts()
    print(f"\n{len(outcome.records)} of {outcome.expected} trials recorded in {records_dir} "
          f"({c['completed']} completed, {c['pruned']} pruned, {c['failed']} failed)")
    if not outcome.complete:
        extra = f" --results {results}" if results else ""
        print(f"the search stopped before every trial finished; resume with: "
              f"python -m clear_tune.run {spec_path}{extra} --resume")
    if outcome.best is not None:
        b = outcome.best
        cfg, pj = b["config"], b["config"]["projection"]
        print(f"best by validation (mean over seeds {b['seeds']} of valid {spec.metric}): {b['valid_mean']:.4f} "
              f"(test {b['test_mean']:.4f}) - arm {b['arm']}, backbone {cfg['backbone']}, mode {pj['mode']}, "
              f"k {pj['k']}, λ {pj['strength']:g}" + (f", ρ {pj['energy']:g}" if pj["mode"] == "dynamic" else ""))
    if build and outcome.records:
        outcome.report = _build_report(exp_dir)
    return outcome


def _build_report(exp_dir: Path | str) -> Any:
    try:
        from clear_tune.report import build_report
    except ImportError:
        print(f"tables and report: not built (clear_tune.report is not installed); records are in {_sub(exp_dir, 'records')}")
        return None
    try:
        paths = build_report(exp_dir)
    except Exception as exc:  # the search's results are safe on disk: a report problem must not hide them
        print(f"warning: building the report failed ({type(exc).__name__}: {exc}); "
              f"retry with: python -m clear_tune.report {exp_dir}", file=sys.stderr)
        return None
    tables, html = getattr(paths, "tables_dir", None), getattr(paths, "html", None)
    print(f"tables: {tables}\nreport: {html}" if html is not None else f"tables and report: {paths}")
    if getattr(paths, "uploaded_to", None):
        print(f"report and tables copied to {paths.uploaded_to}")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clear_tune.run",
        description="Run a hyperparameter search over CLEAR configs on Ray Tune with Optuna search and pruning. "
                    "Without --address an embedded local Ray is started.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python -m clear_tune.run search_spaces/grid.yaml --dry-run\n"
               "  python -m clear_tune.run search_spaces/grid.yaml\n"
               "  python -m clear_tune.run search_spaces/optuna.yaml --address 10.0.0.5:6379\n"
               "  python -m clear_tune.run search_spaces/grid.yaml --resume\n\n"
               "results: <results>/<experiment>/ holds Ray Tune's experiment folder, records/ (one JSON per\n"
               "trial), spec.yaml, experiment.json, optuna.db (optuna searches), pruner.db (Optuna pruners),\n"
               "tables/ and report.html.\n"
               "results may be a storage URI (s3://bucket/results, gs://..., file:///...): Ray's storage and our\n"
               "records go there; the Optuna study and the report are built in a local mirror folder\n"
               "($CLEAR_TUNE_LOCAL_DIR, default ~/.cache/clear-tune) and copied to the URI.",
    )
    parser.add_argument("spec", help="search-space YAML (e.g. search_spaces/grid.yaml)")
    parser.add_argument("--address", default=None,
                        help="connect to an existing Ray cluster, e.g. 10.0.0.5:6379 or 'auto' (default: start a local Ray)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the spec, print the trial table and the count after deduplication; run and write nothing")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted experiment: finished trials are kept, unfinished ones continue "
                             "from their last checkpoint")
    parser.add_argument("--retry-failed", action="store_true",
                        help="with --resume: also retry trials that Ray gave up on after max_failures infrastructure "
                             "faults (default: they stay failed); trials failed by their own config or a NaN loss "
                             "are final")
    parser.add_argument("--results", default=None,
                        help="folder, or storage URI (s3://, gs://, file://, ...), that holds <experiment>/; overrides the spec's 'results'")
    parser.add_argument("--no-report", action="store_true", help="do not build the tables and report at the end")
    parser.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                        help="0 quiet, 1 progress table (default), 2 also trial logs")
    args = parser.parse_args(argv)
    if args.retry_failed and not args.resume:
        parser.error("--retry-failed needs --resume")
    if args.dry_run:
        spec = load_spec(args.spec, results=args.results)
        print(f"{spec.path}: experiment {spec.name!r} -> {spec.experiment_location}")
        print(spec.table())
        return 0
    outcome = run_search(args.spec, address=args.address, resume=args.resume, retry_failed=args.retry_failed,
                         results=args.results, verbose=args.verbose, build_report=not args.no_report)
    return 0 if outcome.complete else 130


if __name__ == "__main__":
    from clear_tune._cli_errors import run_cli

    sys.exit(run_cli(main))
