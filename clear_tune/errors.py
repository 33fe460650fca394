"""The one exception family the library raises for bad input.

Every message is a single line that says what is wrong, where, and how to fix it. Command-line
entry points catch :class:`ClearTuneError`, print ``error: <message>`` and exit with status 2.
"""

from __future__ import annotations


class ClearTuneError(Exception):
    """Base class: a user-facing, one-line error (bad data, bad spec, bad config)."""

    exit_code = 2


class DataError(ClearTuneError):
    """A dataset is missing, malformed or inconsistent."""


class SpecError(ClearTuneError):
    """A search-space YAML file or a trial config is invalid."""


class TrainingError(ClearTuneError):
    """A trial cannot go on (for example a NaN/inf loss); the trial fails, the search goes on."""


def describe_exception(exc: BaseException) -> str:
    """``Type: first line (file:line)`` of an exception raised by someone else's code, for a one-line error."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}{': ' + text if text else ''}{where}"
