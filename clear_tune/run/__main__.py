"""``python -m clear_tune.run SPEC.yaml`` (also ``clear-tune run``): run, resume or dry-run a search."""

from __future__ import annotations

import argparse
import sys

from clear_tune._cli_errors import run_cli
from clear_tune.spec import load_spec


def build_parser() -> argparse.ArgumentParser:
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
    parser.add_argument(
        "--address",
        default=None,
        help="connect to an existing Ray cluster, e.g. 10.0.0.5:6379 or 'auto' (default: start a local Ray)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate the spec, print the trial table and the count after deduplication; run and write nothing",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted experiment: finished trials are kept, unfinished ones continue "
        "from their last checkpoint",
    )
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="with --resume: also retry trials that Ray gave up on after max_failures infrastructure "
        "faults (default: they stay failed); trials failed by their own config or a NaN loss "
        "are final",
    )
    parser.add_argument(
        "--results",
        default=None,
        help=(
            "folder, or storage URI (s3://, gs://, file://, ...), that holds <experiment>/; "
            "overrides the spec's 'results'"
        ),
    )
    parser.add_argument("--no-report", action="store_true", help="do not build the tables and report at the end")
    parser.add_argument(
        "--verbose",
        type=int,
        default=1,
        choices=(0, 1, 2),
        help="0 quiet, 1 progress table (default), 2 also trial logs",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.retry_failed and not args.resume:
        parser.error("--retry-failed needs --resume")
    if args.dry_run:
        from clear_tune.spec._estimate import estimate

        spec = load_spec(args.spec, results=args.results, dry_run=True)
        for warning in spec.warnings:
            print(f"warning: {spec.path}: {warning}", file=sys.stderr)
        print(f"{spec.path}: experiment {spec.name!r} -> {spec.experiment_location}")
        for plugin in spec.plugins:
            print(f"plugin {plugin.entry}: {plugin.kind} {plugin.target}")
        print(spec.table())
        print(spec.fusion_table())
        print(estimate(spec))
        return 0
    from clear_tune.run import run_search

    outcome = run_search(
        args.spec,
        address=args.address,
        resume=args.resume,
        retry_failed=args.retry_failed,
        results=args.results,
        verbose=args.verbose,
        build_report=not args.no_report,
    )
    return 0 if outcome.complete else 130


if __name__ == "__main__":
    sys.exit(run_cli(main))
