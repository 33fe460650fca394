"""Ray Tune's ``Tuner`` for a spec: a new one, or one restored from the experiment folder (``--resume``).

The pieces are this package's: the searcher (:mod:`._search`), the scheduler or pruner bridge
(:mod:`._schedulers`, :mod:`._pruner`), the record writer (:mod:`._records`) and the progress table
(:mod:`._reporter`). Grid search hands the deduplicated trials to Ray as ONE ``tune.grid_search``
dimension, in the spec's launch order; Optuna search samples ``expected_trials`` configs.

Fused groups (:meth:`~clear_tune.spec.Spec.groups`) are the grid's points: one Ray trial per group.

Example:
    >>> from clear_tune.tune import build_tuner
    >>> tuner = build_tuner(spec, experiment, trainable, writer, verbose=1)   # doctest: +SKIP
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from clear_tune.experiment import Experiment
from clear_tune.spec import Spec
from clear_tune.tune._pruner import OptunaPrunerScheduler
from clear_tune.tune._reporter import make_reporter
from clear_tune.tune._schedulers import make_scheduler
from clear_tune.tune._search import make_searcher
from clear_tune.tune._tracking import tracking_callbacks


def trial_name(trial: Any) -> str:
    """Ray trial (and folder) name: the group key for grid trials (a lone trial's own key), arm + Ray id for
    Optuna ones."""
    param = trial.config.get("trial", {}) if isinstance(trial.config, dict) else {}
    return param.get("key") or f"{param.get('arm', 'trial')}-{trial.trial_id}"


def build_tuner(
    spec: Spec,
    experiment: Experiment,
    trainable: Any,
    writer: Any,
    *,
    verbose: int,
    study_dir: Path,
    pruner_storage: str | None,
    groups: list[Any],
    verdicts: str | None,
) -> Any:
    """A new ``tune.Tuner`` running ``trainable`` over the spec's trial ``groups`` (grid search), state and
    checkpoints in ``experiment``; ``verdicts`` names the mailbox of member-level schedulers."""
    from ray import tune
    from ray.tune import CheckpointConfig, FailureConfig, RunConfig

    settings = spec.settings
    searcher = make_searcher(spec, study_dir)
    if searcher is None:
        param_space = {"trial": tune.grid_search([group.to_param() for group in groups])}
        num_samples = 1
    else:
        param_space, num_samples = {}, spec.expected_trials()
    storage_path, name = experiment.ray_storage()
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=make_scheduler(spec, storage=pruner_storage, verdicts=verdicts),
            num_samples=num_samples,
            max_concurrent_trials=settings.max_concurrent,
            reuse_actors=True,  # a trial process (torch imported, dataset mapped) serves the next trial
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,  # a folder, or a URI Ray resolves with pyarrow.fs as we do
            callbacks=[writer, *tracking_callbacks(spec, writer)],
            progress_reporter=make_reporter(spec, fused=any(len(g.plans) > 1 for g in groups)),
            verbose=verbose,
            failure_config=FailureConfig(max_failures=settings.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=settings.checkpoints_to_keep),
        ),
    )


def restore_tuner(
    spec: Spec,
    experiment: Experiment,
    trainable: Any,
    *,
    retry_failed: bool,
    pruner_storage: str | None,
    verdicts: str | None,
) -> Any:
    """``Tuner.restore`` of ``experiment``: finished trials stay, unfinished ones continue from their last
    checkpoint, failed ones are retried only with ``retry_failed``; an Optuna-pruner bridge is pointed at
    this run's ``pruner.db``."""
    from ray import tune

    tuner = tune.Tuner.restore(
        str(experiment.root),
        trainable=trainable,
        resume_unfinished=True,
        resume_errored=retry_failed,
        restart_errored=False,
    )
    if pruner_storage is not None:
        _relocate_pruner(tuner, spec, pruner_storage)
    return tuner  # the scheduler unpickled from tuner.pkl names the mailbox by the experiment, as this run does


def _relocate_pruner(tuner: Any, spec: Spec, storage: str) -> None:
    """Point a restored Optuna-pruner bridge at this run's ``pruner.db``.

    ``Tuner.restore`` unpickles the scheduler from ``tuner.pkl`` (Ray keeps no other scheduler state; see
    :mod:`clear_tune.tune._pruner`), so it names the study of the run that BUILT the Tuner: another place
    when the experiment folder moved, or when the local mirror is elsewhere ($CLEAR_TUNE_LOCAL_DIR, another
    node). Ray has no public accessor for a restored Tuner's scheduler, hence the private attributes.
    """
    tune_config = getattr(getattr(tuner, "_local_tuner", None), "_tune_config", None)
    scheduler = getattr(tune_config, "scheduler", None)
    if not isinstance(scheduler, OptunaPrunerScheduler):
        print(
            f"warning: the Optuna pruner of the restored experiment was not found; its study stays where the "
            f"experiment started instead of {storage}",
            file=sys.stderr,
        )
        return
    scheduler.relocate(storage, study_name=spec.name)
