"""``python -m clear_tune.report results/<experiment> [--open]``: tables + report.html for an experiment."""

from __future__ import annotations

import argparse
import sys
import webbrowser

from clear_tune._cli_errors import run_cli
from clear_tune.report._build import build_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clear_tune.report",
        description=(
            "Aggregate an experiment's trial records into tables (CSV/Markdown/LaTeX) and an offline HTML report."
        ),
    )
    parser.add_argument(
        "experiment",
        help="the experiment folder, e.g. results/grid, or its storage URI "
        "(s3://bucket/results/grid: tables and report are built locally, then copied there)",
    )
    parser.add_argument("--open", action="store_true", help="open report.html in the default browser afterwards")
    args = parser.parse_args(argv)
    paths = build_report(args.experiment)
    print(f"tables: {paths.tables_dir}")
    print(f"report: {paths.html}")
    if paths.uploaded_to:
        print(f"copied to: {paths.uploaded_to}/tables/ and {paths.uploaded_to}/report.html")
    if args.open and not webbrowser.open(paths.html.resolve().as_uri()):
        print("note: no browser could be opened here; open the report file yourself", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
