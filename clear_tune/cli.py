"""The ``clear-tune`` console script: one entry point for every command.

``clear-tune run SPEC.yaml ...`` is ``python -m clear_tune.run SPEC.yaml ...``, and likewise ``train``,
``report``, ``data`` and ``submit``: every command ``X`` is ``clear_tune/X/__main__.py`` with its parser and
``main(argv)``, both entry points call that ``main`` through one error wrapper
(:func:`clear_tune._cli_errors.run_cli`). Each command's module is imported only when it is used, so
``clear-tune --help`` is instant and a command whose module is missing fails with one line.

Example:
    >>> from clear_tune.cli import main
    >>> main(["run", "search_spaces/smoke.yaml", "--dry-run"])   # doctest: +SKIP
    0
"""

from __future__ import annotations

import importlib
import sys

from clear_tune._cli_errors import run_cli

# command -> (module holding `main`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("clear_tune.run.__main__", "run (or --resume, --dry-run) a search from a YAML spec on Ray Tune"),
    "train": ("clear_tune.train.__main__", "train and evaluate ONE config (a single trial)"),
    "report": ("clear_tune.report.__main__", "build tables and the HTML report of an experiment"),
    "data": ("clear_tune.data.__main__", "download datasets and print dataset statistics"),
    "submit": ("clear_tune.submit.__main__", "submit a search to a Ray cluster, SLURM or KubeRay"),
}


def _usage() -> str:
    lines = ["usage: clear-tune COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'clear-tune COMMAND --help' for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to its command's ``main``; returns the exit code (errors: one line, code 2)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"choose one of {', '.join(COMMANDS)}"
        print(f"error: unknown command {name!r}; {hint}", file=sys.stderr)
        return 2
    module_name = COMMANDS[name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        print(
            f"error: the {name!r} command is not available ({exc.name} is missing); reinstall clear-tune",
            file=sys.stderr,
        )
        return 2
    sys.argv[0] = f"clear-tune {name}"
    return run_cli(module.main, rest)


if __name__ == "__main__":
    sys.exit(main())
