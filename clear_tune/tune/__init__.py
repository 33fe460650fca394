"""Ray Tune wiring: the trial trainable, Optuna search, the Optuna-pruner bridge and driver callbacks.

Example:
    >>> import optuna
    >>> from clear_tune.tune import OptunaPrunerScheduler
    >>> OptunaPrunerScheduler(optuna.pruners.MedianPruner(), metric="valid_score").debug_string()
    'OptunaPrunerScheduler(MedianPruner): 0 running, 0 pruned'
"""

from clear_tune.tune._build import (
    PruneAwareOptunaSearch,
    OPTUNA_DB,
    make_pruner,
    make_reporter,
    make_sampler,
    make_scheduler,
    make_searcher,
    optuna_storage_url,
)
from clear_tune.tune._callbacks import RECORD_KEYS, RecordWriter, best_by_validation, summary_line
from clear_tune.tune._pruner import OptunaPrunerScheduler
from clear_tune.tune._trainable import BEST_METRIC, METRIC, dataset_key, plan_of, run_trial

__all__ = [
    "BEST_METRIC",
    "METRIC",
    "OPTUNA_DB",
    "OptunaPrunerScheduler",
    "PruneAwareOptunaSearch",
    "RECORD_KEYS",
    "RecordWriter",
    "best_by_validation",
    "dataset_key",
    "make_pruner",
    "make_reporter",
    "make_sampler",
    "make_scheduler",
    "make_searcher",
    "optuna_storage_url",
    "plan_of",
    "run_trial",
    "summary_line",
]
