"""Shared ``main`` wrapper: turn library errors into one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

from clear_tune.errors import ClearTuneError


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Call ``main(argv)``; a :class:`ClearTuneError` becomes ``error: ...`` and exit 2, Ctrl-C exit 130."""
    try:
        return int(main(argv) or 0)
    except ClearTuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the output went to a pipe that closed early (| head): nothing to report
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
