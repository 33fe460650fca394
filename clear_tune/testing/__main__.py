"""``python -m clear_tune.testing [--plugin FILE.py ...] BACKBONE``: run the backbone contract, print what passed."""

from __future__ import annotations

import argparse
import sys

from clear_tune._cli_errors import run_cli


def main(argv: list[str] | None = None) -> int:
    from clear_tune._plugins import load_plugins, parse_plugin_argument, resolve_plugins
    from clear_tune.testing import check_backbone

    parser = argparse.ArgumentParser(
        prog="python -m clear_tune.testing",
        description="Check that a backbone keeps the contract clear-tune's harness relies "
        "on (shapes, λ = 0 identity, fused = alone, checkpoints, determinism).",
    )
    parser.add_argument("backbone", help="a registered name, e.g. visual_mf, or pkg.module:Class")
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="FILE.py|pkg.module|mmrec=PATH",
        help="import this first, repeatable",
    )
    parser.add_argument(
        "--clear-at", nargs=2, metavar=("IMAGE", "TEXT"), help="encoders of a single-model or MMRec model"
    )
    args = parser.parse_args(argv)
    load_plugins(resolve_plugins([parse_plugin_argument(p) for p in args.plugin], where="--plugin"))
    clear_at = {"image": args.clear_at[0], "text": args.clear_at[1]} if args.clear_at else None
    print(check_backbone(args.backbone, clear_at=clear_at))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
