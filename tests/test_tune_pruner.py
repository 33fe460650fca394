"""The Optuna-pruner bridge on the real local Ray, with a scripted trainable whose curves are known."""

from __future__ import annotations

import sys

import optuna
import pytest
import ray.cloudpickle
from ray import tune

from clear_tune.tune import OptunaPrunerScheduler

# Ray's workers cannot import a test module: ship this module's functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

STEPS = 6


def scripted(config):
    """Good trials climb from 0.5; bad ones stay at 0.1. Later good trials are slightly better."""
    for step in range(1, STEPS + 1):
        value = 0.5 + 0.01 * step + 0.001 * config["rank"] if config["good"] else 0.1
        tune.report({"epoch": step, "valid_score": value})


# Order matters (one trial at a time): two good trials finish first, so Optuna has its startup trials.
TRIALS = [
    {"name": "good0", "good": True, "rank": 0},
    {"name": "good1", "good": True, "rank": 1},
    {"name": "bad0", "good": False, "rank": 2},
    {"name": "good2", "good": True, "rank": 3},
    {"name": "bad1", "good": False, "rank": 4},
]

PRUNERS = {
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=3),
    "percentile": lambda: optuna.pruners.PercentilePruner(50.0, n_startup_trials=2, n_warmup_steps=3),
    "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=3, reduction_factor=2,
                                                                        min_early_stopping_rate=0),
}


@pytest.mark.parametrize("kind", sorted(PRUNERS))
def test_bad_curves_pruned_at_expected_step_good_never(kind, ray_session, tmp_path):
    scheduler = OptunaPrunerScheduler(PRUNERS[kind](), metric="valid_score", mode="max", time_attr="epoch")
    results = tune.Tuner(
        _with_curve,
        param_space={"name": tune.grid_search([t["name"] for t in TRIALS])},
        tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=1, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name=kind, verbose=0),
    ).fit()
    last_epoch = {r.config["name"]: r.metrics["epoch"] for r in results}
    assert last_epoch == {"good0": STEPS, "good1": STEPS, "good2": STEPS, "bad0": 3, "bad1": 3}
    # the bridge's own account and its Optuna study agree with what Ray did
    assert sorted(scheduler.pruned.values()) == [3, 3]
    states = [t.state for t in scheduler.study.trials]
    assert states.count(optuna.trial.TrialState.PRUNED) == 2
    assert states.count(optuna.trial.TrialState.COMPLETE) == 3


def _with_curve(config):
    spec = next(t for t in TRIALS if t["name"] == config["name"])
    scripted({**config, **spec})


def test_bridge_decisions_without_ray_controller():
    """Direct calls: a NaN (failed) report never prunes; a repeated step is not reported twice."""

    class FakeTrial:  # only trial_id is read by the bridge
        def __init__(self, trial_id):
            self.trial_id = trial_id

    scheduler = OptunaPrunerScheduler(optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1),
                                      metric="valid_score", mode="max")
    good, bad = FakeTrial("a"), FakeTrial("b")
    for t in (good, bad):
        scheduler.on_trial_add(None, t)
    for step in (1, 2):
        assert scheduler.on_trial_result(None, good, {"epoch": step, "valid_score": 0.5}) == "CONTINUE"
    scheduler.on_trial_complete(None, good, {})
    assert scheduler.on_trial_result(None, bad, {"epoch": 1, "valid_score": float("nan")}) == "CONTINUE"
    assert scheduler.on_trial_result(None, bad, {"epoch": 1, "valid_score": 0.1}) == "STOP"
    assert scheduler.pruned == {"b": 1}
    scheduler.on_trial_complete(None, bad, {})
    assert [t.state.name for t in scheduler.study.trials] == ["COMPLETE", "PRUNED"]
