"""Ray's own schedulers (``scheduler.kind: hyperband`` / ``asha``) stopping trials on the real local Ray.

A scripted trainable with known curves shows WHICH trials each scheduler stops and at which epoch; one
tiny real search through ``make_scheduler`` and the record writer shows stopped trials recorded as pruned.
Also two ways Ray's HyperBand fails a user, and what the harness does about them: a trial left PAUSED
forever (fixed by :class:`FinishingHyperBandScheduler`) and a concurrency limit that stops it from
stopping anything (a one-line warning).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest
import ray.cloudpickle
from ray import tune
from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler

from clear_tune.run import run_search
from clear_tune.spec import load_spec
from clear_tune.tune import FinishingHyperBandScheduler, make_scheduler

# Ray's workers cannot import a test module: ship this module's functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

MAX_T = 9
LEVELS = {"best": 0.9, "good": 0.7, "mid": 0.5, "bad": 0.1}


def scripted(config):
    """A flat curve at its level (plus a small rise), checkpointed every step: HyperBand PAUSEs trials at
    its milestones and resumes the survivors from their checkpoints, as the harness's trainable allows."""
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start = json.loads((Path(folder) / "step.json").read_text())["step"]
    level = LEVELS[config["name"].rstrip("0123456789")]
    for step in range(start + 1, MAX_T + 1):
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "step.json").write_text(json.dumps({"step": step}))
            tune.report(
                {"epoch": step, "valid_score": level + 0.001 * step}, checkpoint=tune.Checkpoint.from_directory(folder)
            )


def _fit(scheduler, names, tmp_path, name, *, max_concurrent=None):
    results = tune.Tuner(
        scripted,
        param_space={"name": tune.grid_search(names)},
        tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name=name, verbose=0),
    ).fit()
    assert not results.errors
    return {r.config["name"]: r.metrics["epoch"] for r in results}


def test_hyperband_stops_bad_curves_at_its_first_milestone(ray_session, tmp_path):
    # max_t 9, eta 3: brackets s=0 (3 trials, no halving), s=1 (5 trials, milestone 3, keeps ceil(5/3) = 2),
    # filled in trial order. So the first three run to max_t whatever they report; of the next five the two
    # best go on to max_t and the three bad ones are stopped at epoch 3. No concurrency limit: HyperBand
    # fills a bracket with the trials that exist at once (see test_hyperband_under_a_concurrency_limit).
    names = ["mid0", "mid1", "mid2", "bad0", "best0", "bad1", "good0", "bad2"]
    scheduler = FinishingHyperBandScheduler(
        time_attr="epoch", metric="valid_score", mode="max", max_t=MAX_T, reduction_factor=3
    )
    last_epoch = _fit(scheduler, names, tmp_path, "hyperband")
    assert last_epoch == {"mid0": 9, "mid1": 9, "mid2": 9, "best0": 9, "good0": 9, "bad0": 3, "bad1": 3, "bad2": 3}
    assert scheduler.state()["num_stopped"] == 3


def test_asha_stops_bad_curves_at_the_grace_period(ray_session, tmp_path):
    # grace 3, eta 3: rungs at 3 (and 9 = max_t). A trial is stopped at a rung when it is below the top third
    # of what the trials before it recorded there; the first trial only meets itself and always goes on.
    names = ["good0", "best0", "bad0", "mid0", "bad1"]
    scheduler = ASHAScheduler(
        time_attr="epoch", metric="valid_score", mode="max", max_t=MAX_T, grace_period=3, reduction_factor=3
    )
    last_epoch = _fit(scheduler, names, tmp_path, "asha", max_concurrent=1)
    assert last_epoch == {"good0": 9, "best0": 9, "bad0": 3, "mid0": 3, "bad1": 3}


HB_SPEC = """
experiment: {name}
data: {{source: synthetic, options: {{n_users: 120, n_items: 80, d_v: 16, d_t: 16, seed: 0}}}}
backbones: [lightgcn]
seeds: [0, 1, 2, 3, 4]
trainer: {{epochs: 3, patience: 3, emb_dim: 8, batch_size: 512}}
projection: {{mode: "off"}}
scheduler: {{kind: hyperband, max_t: 3, reduction_factor: 3}}
"""


@pytest.mark.slow
def test_hyperband_through_the_harness_records_stopped_trials_as_pruned(ray_session, tmp_path, capsys):
    # max_t 3, eta 3: bracket s=0 takes the first 2 trials (to epoch 3), s=1 the next 3, milestone 1, keeps 1.
    spec_path = tmp_path / "hb.yaml"
    spec_path.write_text(HB_SPEC.format(name="hb") + "max_concurrent: 5\n")
    spec = load_spec(spec_path)
    assert isinstance(make_scheduler(spec), FinishingHyperBandScheduler)
    order = [plan.key for plan in spec.run_order()]  # shuffled: a scheduler prunes

    outcome = run_search(spec_path, results=str(tmp_path / "results"), verbose=0, build_report=False)
    assert "warning" not in capsys.readouterr().err
    records = {r["trial_id"]: r for r in outcome.records}
    assert outcome.complete and set(records) == set(order)
    pruned = sorted(k for k, r in records.items() if r["status"] == "pruned")
    assert len(pruned) == 2 and set(pruned) <= set(order[2:])
    for key, rec in records.items():
        if key in pruned:
            assert rec["epochs_run"] == 1 and [p["epoch"] for p in rec["curve"]] == [1]
            assert rec["reason"] == "stopped by the hyperband scheduler at epoch 1"
        else:
            assert rec["status"] == "completed" and rec["epochs_run"] == 3 and rec["reason"] == "max_epochs"


class _Trial:  # what HyperBand reads of a Ray trial
    def __init__(self, name):
        self.trial_id, self.status, self.is_saving = name, "RUNNING", False


class _Controller:  # what HyperBand calls on Ray's TuneController: stop_trial, as Ray does it for a PAUSED trial
    def __init__(self, scheduler):
        self.scheduler, self.stopped = scheduler, []

    def stop_trial(self, trial):
        self.scheduler.on_trial_remove(self, trial)
        trial.status = "TERMINATED"
        self.stopped.append(trial.trial_id)


@pytest.mark.parametrize("cls", [HyperBandScheduler, FinishingHyperBandScheduler])
def test_hyperband_stops_a_trial_paused_while_its_bracket_finished(cls):
    """The hang Ray's HyperBand can end in (seen in the harness): max_t 3, eta 3, bracket 0 holds a and b.
    a reaches max_t first and is told to PAUSE; while its pause is being saved (still RUNNING), b's result
    finishes the bracket, and Ray stops only the trials already PAUSED. a turns PAUSED afterwards: Ray's
    scheduler never runs or stops it again; ours stops it the next time a trial to run is chosen."""
    scheduler = cls(time_attr="epoch", metric="valid_score", mode="max", max_t=3, reduction_factor=3)
    controller = _Controller(scheduler)
    a, b = _Trial("a"), _Trial("b")
    for trial in (a, b):
        scheduler.on_trial_add(controller, trial)
    assert scheduler.on_trial_result(controller, a, {"epoch": 3, "valid_score": 0.5}) == "PAUSE"
    a.is_saving = True  # Ray saves the pause checkpoint asynchronously; a is still RUNNING
    assert scheduler.on_trial_result(controller, b, {"epoch": 3, "valid_score": 0.4}) == "STOP"
    a.is_saving, a.status = False, "PAUSED"  # the save resolved
    assert scheduler.choose_trial_to_run(controller) is None
    assert controller.stopped == ([] if cls is HyperBandScheduler else ["a"])


def test_hyperband_under_a_concurrency_limit_is_flagged(tmp_path):
    """With max_concurrent below what a band needs live at once, Ray's HyperBand puts every trial in its first
    bracket (which never halves): the run warns in one line instead of silently stopping nothing."""
    from clear_tune.tune import hyperband_capacity_warning

    path = tmp_path / "hb.yaml"
    path.write_text(HB_SPEC.format(name="hb"))  # max_concurrent defaults to 1
    assert hyperband_capacity_warning(load_spec(path)) == (
        "scheduler: Ray's hyperband halves only trials that are live at the same time and max_concurrent (1) "
        "caps them, so it will stop few or no trials; set max_concurrent to at least 4 (Ray still runs only as "
        "many trials as the resources allow; the others wait) or use asha"
    )
    path.write_text(HB_SPEC.format(name="hb") + "max_concurrent: 4\n")
    assert hyperband_capacity_warning(load_spec(path)) is None
    path.write_text(HB_SPEC.format(name="hb").replace("max_t: 3", "max_t: 2") + "max_concurrent: 4\n")
    assert "has a single bracket and stops no trial" in hyperband_capacity_warning(load_spec(path))
    path.write_text(HB_SPEC.format(name="hb").replace("kind: hyperband", "kind: asha"))
    assert hyperband_capacity_warning(load_spec(path)) is None
