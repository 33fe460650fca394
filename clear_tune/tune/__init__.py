"""Ray Tune wiring, one concept per module: the trainable (``_trainable``), search algorithms (``_search``),
schedulers (``_schedulers``), the member-level schedulers of fused trials and their verdicts mailbox
(``_members``), the Optuna-pruner bridge (``_pruner``), the driver's record writer
(``_records``), the progress table (``_reporter``), the Ray cluster (``_cluster``) and the Tuner built from
them (``_tuner``). :mod:`clear_tune.run` uses only what this package exports.

Example:
    >>> import optuna
    >>> from clear_tune.tune import OptunaPrunerScheduler
    >>> OptunaPrunerScheduler(optuna.pruners.MedianPruner(), metric="valid_score").debug_string()
    'OptunaPrunerScheduler(MedianPruner): 0 running, 0 pruned'
"""

from clear_tune.tune._cluster import cluster_info, gpus_per_trial, ray_cluster
from clear_tune.tune._members import MemberASHAScheduler, Rungs, start_verdicts, verdicts_actor, verdicts_name
from clear_tune.tune._pruner import OptunaPrunerScheduler, fail_running_trials, pruner_storage_url
from clear_tune.tune._records import RecordWriter, summary_line
from clear_tune.tune._reporter import make_reporter
from clear_tune.tune._schedulers import (
    FinishingHyperBandScheduler,
    hyperband_capacity_warning,
    make_pruner,
    make_scheduler,
)
from clear_tune.tune._search import FusedOptunaSearch, make_sampler, make_searcher, optuna_storage_url
from clear_tune.tune._tracking import tracking_callbacks
from clear_tune.tune._trainable import BEST_METRIC, METRIC, dataset_key, group_of, plan_of, run_trial
from clear_tune.tune._tuner import build_tuner, restore_tuner, trial_name

__all__ = [
    "BEST_METRIC",
    "METRIC",
    "FinishingHyperBandScheduler",
    "FusedOptunaSearch",
    "MemberASHAScheduler",
    "OptunaPrunerScheduler",
    "RecordWriter",
    "Rungs",
    "build_tuner",
    "cluster_info",
    "dataset_key",
    "fail_running_trials",
    "gpus_per_trial",
    "group_of",
    "hyperband_capacity_warning",
    "make_pruner",
    "make_reporter",
    "make_sampler",
    "make_scheduler",
    "make_searcher",
    "optuna_storage_url",
    "plan_of",
    "pruner_storage_url",
    "ray_cluster",
    "restore_tuner",
    "run_trial",
    "start_verdicts",
    "summary_line",
    "tracking_callbacks",
    "trial_name",
    "verdicts_actor",
    "verdicts_name",
]
