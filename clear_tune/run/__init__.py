"""``python -m clear_tune.run SPEC.yaml``: a search over CLEAR configs on Ray Tune (+ Optuna).

:func:`run_search` (:mod:`clear_tune.run._search`) is the whole run, orchestration only; the command's
parser is :mod:`clear_tune.run.__main__`.

Example:
    >>> from clear_tune.run import run_search, SearchOutcome
    >>> callable(run_search) and SearchOutcome.__name__
    'SearchOutcome'
"""

from clear_tune.run._search import SearchOutcome, run_search

__all__ = ["SearchOutcome", "run_search"]
