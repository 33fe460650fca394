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
    "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(
        min_resource=3, reduction_factor=2, min_early_stopping_rate=0
    ),
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

    class FakeTrial:  # only trial_id and status are read by the bridge
        def __init__(self, trial_id):
            self.trial_id, self.status = trial_id, "PENDING"

    scheduler = OptunaPrunerScheduler(
        optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=1), metric="valid_score", mode="max"
    )
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


class _Trial:  # what the bridge reads of a Ray trial
    def __init__(self, trial_id, status="PENDING"):
        self.trial_id, self.status = trial_id, status


def test_bridge_restart_on_the_same_storage_without_ray(tmp_path):
    """Direct calls, two bridges on one SQLite file (a driver restart): the second one, unpickled as Ray
    unpickles tuner.pkl and relocated to the file's new place, re-attaches a RUNNING trial (repeated steps
    are skipped), stops again a trial that was pruned, prunes a new bad trial at once on the first one's
    history, and ``fail_running_trials`` closes what never came back."""
    import pickle
    import shutil

    from clear_tune.tune._pruner import fail_running_trials

    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=2)
    first = OptunaPrunerScheduler(
        pruner, metric="valid_score", mode="max", storage=f"sqlite:///{tmp_path / 'a.db'}", study_name="exp"
    )
    tuner_pkl = pickle.dumps(first)  # what Ray saves when the Tuner is built: no study in it
    assert b"sqlite:///" in tuner_pkl and pickle.loads(tuner_pkl)._study is None
    done, cut, gone, lagged = _Trial("done"), _Trial("cut"), _Trial("gone"), _Trial("lagged")
    for trial in (done, cut, gone, lagged):
        first.on_trial_add(None, trial)
    for step in (1, 2, 3):
        assert first.on_trial_result(None, done, {"epoch": step, "valid_score": 0.5}) == "CONTINUE"
    first.on_trial_complete(None, done, {})
    for step in (1, 2):
        assert first.on_trial_result(None, cut, {"epoch": step, "valid_score": 0.6}) == "CONTINUE"
    assert first.on_trial_result(None, lagged, {"epoch": 2, "valid_score": 0.1}) == "STOP"
    first.on_trial_complete(None, lagged, {})
    shutil.move(tmp_path / "a.db", tmp_path / "b.db")  # the experiment moved (or another node's mirror)

    second = pickle.loads(tuner_pkl)
    second.relocate(f"sqlite:///{tmp_path / 'b.db'}", study_name="exp")
    for trial in (done, cut, lagged, _Trial("bad")):
        second.on_trial_add(None, trial)
    assert second.on_trial_result(None, lagged, {"epoch": 1, "valid_score": 0.1}) == "STOP"  # pruned before
    assert second.on_trial_result(None, _Trial("bad"), {"epoch": 2, "valid_score": 0.1}) == "STOP"  # on 'done'
    second.on_trial_complete(None, _Trial("bad"), {})
    assert second.on_trial_result(None, cut, {"epoch": 2, "valid_score": 0.6}) == "CONTINUE"  # repeated step
    assert second.on_trial_result(None, cut, {"epoch": 3, "valid_score": 0.7}) == "CONTINUE"
    second.on_trial_complete(None, cut, {})
    assert not (tmp_path / "a.db").exists()

    study = optuna.load_study(study_name="exp", storage=f"sqlite:///{tmp_path / 'b.db'}")
    by_id = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert {k: t.state.name for k, t in by_id.items()} == {
        "done": "COMPLETE",
        "cut": "COMPLETE",
        "gone": "RUNNING",
        "lagged": "PRUNED",
        "bad": "PRUNED",
    }
    assert by_id["cut"].intermediate_values == {1: 0.6, 2: 0.6, 3: 0.7} and by_id["cut"].value == 0.7
    assert fail_running_trials(f"sqlite:///{tmp_path / 'b.db'}", "exp") == 1
    assert optuna.load_study(study_name="exp", storage=f"sqlite:///{tmp_path / 'b.db'}").trials[2].state.name == "FAIL"


# --- the bridge's study across an interruption and Tuner.restore (what `clear_tune.run --resume` does) ---

RESUME_STEPS = 6
RESUME_TRIALS = ["good0", "good1", "good2", "bad0"]


def checkpointed(config):
    """Good curves climb from 0.5, bad ones stay at 0.1; a checkpoint every step, so a restored trial goes on
    from where it was (as the harness's trainable does)."""
    import json
    import tempfile
    from pathlib import Path

    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start = json.loads((Path(folder) / "step.json").read_text())["step"]
    good = config["name"].startswith("good")
    for step in range(start + 1, RESUME_STEPS + 1):
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "step.json").write_text(json.dumps({"step": step}))
            value = 0.5 + 0.01 * step if good else 0.1
            tune.report({"epoch": step, "valid_score": value}, checkpoint=tune.Checkpoint.from_directory(folder))


class InterruptAt(tune.Callback):
    """Ctrl-C the driver (SIGINT to this process, Ray's own handler) once ``name`` reports ``step``."""

    def __init__(self, name, step, marker):
        self.name, self.step, self.marker = name, step, str(marker)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        import os
        import signal
        from pathlib import Path

        if trial.config["name"] == self.name and result["epoch"] >= self.step and not Path(self.marker).exists():
            Path(self.marker).touch()  # once: Ray pickles this callback into tuner.pkl, the resumed run has it too
            os.kill(os.getpid(), signal.SIGINT)


def test_pruner_history_survives_tuner_restore(ray_session, tmp_path):
    """good0 and good1 finish, good2 is interrupted at step 3; after Tuner.restore the bridge (unpickled from
    tuner.pkl, as Ray does) reloads its SQLite study: good2 goes on in its own Optuna trial, and bad0, the
    first trial after the restart, is pruned at step 3 on the strength of good0 and good1. An in-memory study
    would have forgotten them and, with n_startup_trials=2, let bad0 run to the end."""
    storage = f"sqlite:///{tmp_path / 'pruner.db'}"
    scheduler = OptunaPrunerScheduler(
        optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=3),
        metric="valid_score",
        mode="max",
        storage=storage,
        study_name="resume",
    )
    tune.Tuner(
        checkpointed,
        param_space={"name": tune.grid_search(RESUME_TRIALS)},
        tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=1, reuse_actors=True),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path),
            name="exp",
            verbose=0,
            callbacks=[InterruptAt("good2", 3, tmp_path / "interrupted")],
        ),
    ).fit()
    study = optuna.load_study(study_name="resume", storage=storage)
    before = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    finished = sorted(t.state.name for t in before.values() if t.state.is_finished())
    assert finished == ["COMPLETE", "COMPLETE"]  # good0, good1
    assert [sorted(t.intermediate_values) for t in before.values() if not t.state.is_finished()] == [[1, 2, 3]]

    results = tune.Tuner.restore(str(tmp_path / "exp"), trainable=checkpointed, resume_unfinished=True).fit()
    ids = {r.config["name"]: r.metrics["trial_id"] for r in results}
    last_epoch = {r.config["name"]: r.metrics["epoch"] for r in results}
    assert last_epoch == {"good0": RESUME_STEPS, "good1": RESUME_STEPS, "good2": RESUME_STEPS, "bad0": 3}
    after = {t.user_attrs["ray_trial_id"]: t for t in optuna.load_study(study_name="resume", storage=storage).trials}
    assert len(after) == len(RESUME_TRIALS) and set(after) == set(ids.values())  # one Optuna trial per Ray trial
    for name in ("good0", "good1"):  # history kept as it was
        assert after[ids[name]].state.name == "COMPLETE"
        assert after[ids[name]].intermediate_values == before[ids[name]].intermediate_values
    good2 = after[ids["good2"]]  # re-attached: steps 1-3 from before the interruption, 4-6 after
    assert good2.state.name == "COMPLETE" and sorted(good2.intermediate_values) == list(range(1, RESUME_STEPS + 1))
    assert after[ids["bad0"]].state.name == "PRUNED" and max(after[ids["bad0"]].intermediate_values) == 3


PRUNED_SPEC = """
experiment: prunedrun
data: {source: synthetic, options: {n_users: 150, n_items: 100, d_v: 16, d_t: 16, seed: 0}}
backbones: [lightgcn]
seeds: [0, 1, 2, 3, 4, 5]
trainer: {epochs: 10, patience: 10, emb_dim: 8, batch_size: 256}
projection: {mode: "off"}
scheduler: {kind: median, grace_period: 2, n_startup_trials: 2}
max_concurrent: 1
"""


@pytest.mark.slow
def test_run_resume_keeps_the_pruner_study_at_a_uri_and_moves_its_local_copy(tmp_path):
    """``clear_tune.run`` with a median pruner and a ``file://`` results URI, Ctrl-C'd after some trials, then
    ``--resume``d from another local mirror (as a driver on another node would): the resumed run works on the
    ``pruner.db`` fetched from the URI, which keeps the trials finished before the interruption, and copies it
    back; every Ray trial has exactly one Optuna trial whose state matches its record."""
    import os
    import signal
    import subprocess
    import time
    from pathlib import Path

    from clear_tune.records import read_records

    repo = Path(__file__).resolve().parents[1]
    spec_path = tmp_path / "prunedrun.yaml"
    spec_path.write_text(PRUNED_SPEC)
    uri = f"file://{tmp_path}/remote"
    exp, records_dir = tmp_path / "remote" / "prunedrun", tmp_path / "remote" / "prunedrun" / "records"
    cmd = [sys.executable, "-m", "clear_tune.run", str(spec_path), "--results", uri, "--verbose", "0", "--no-report"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}

    first = subprocess.Popen(
        cmd,
        cwd=repo,
        env={**env, "CLEAR_TUNE_LOCAL_DIR": str(tmp_path / "node_a")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 240
    while len(list(records_dir.glob("*.json"))) < 3 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)
    out, _ = first.communicate(timeout=180)
    assert first.returncode == 130, out
    done_before = {r["trial_id"]: r["status"] for r in read_records(records_dir)}
    assert 2 <= len(done_before) < 6, out
    node_a = next((tmp_path / "node_a").glob("prunedrun-*/pruner.db"))
    assert (exp / "pruner.db").read_bytes() == node_a.read_bytes()  # copied to the URI when the run stopped
    state = lambda t: t.state.name  # noqa: E731
    history = {
        t.number: (state(t), t.intermediate_values, t.user_attrs["ray_trial_id"])
        for t in optuna.load_study(study_name="prunedrun", storage=f"sqlite:///{node_a}").trials
    }
    finished_before = {n: h for n, h in history.items() if h[0] != "RUNNING"}
    recorded_states = sorted({"completed": "COMPLETE", "pruned": "PRUNED"}[s] for s in done_before.values())
    told = sorted(h[0] for h in finished_before.values())
    # the study is told a trial's end when Ray ends it, its record is written just after: Ctrl-C can fall between,
    # for the one trial that was running (max_concurrent 1); the resumed run then records it as the study says
    assert told == recorded_states or (
        len(told) == len(recorded_states) + 1 and all(told.count(x) >= recorded_states.count(x) for x in told)
    ), (told, recorded_states)

    resumed = subprocess.run(
        cmd + ["--resume"],
        cwd=repo,
        env={**env, "CLEAR_TUNE_LOCAL_DIR": str(tmp_path / "node_b")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "warning" not in resumed.stderr, resumed.stderr
    records = read_records(records_dir)
    assert (
        len(records) == 6
        and {r["trial_id"]: r["status"] for r in records if r["trial_id"] in done_before} == done_before
    )
    node_b = next((tmp_path / "node_b").glob("prunedrun-*/pruner.db"))
    assert (exp / "pruner.db").read_bytes() == node_b.read_bytes()
    trials = optuna.load_study(study_name="prunedrun", storage=f"sqlite:///{node_b}").trials
    for number, h in finished_before.items():  # the history the pruner compared against after the resume
        assert (
            state(trials[number]),
            trials[number].intermediate_values,
            trials[number].user_attrs["ray_trial_id"],
        ) == h
    for number, h in history.items():  # the trial Ctrl-C caught mid-way went on in its own Optuna trial
        if h[0] == "RUNNING":
            assert state(trials[number]) != "RUNNING" and h[1].items() <= trials[number].intermediate_values.items()
    assert len({t.user_attrs["ray_trial_id"] for t in trials}) == len(trials) == 6  # one per Ray trial, none lost
    assert sorted(state(t) for t in trials) == sorted(
        {"completed": "COMPLETE", "pruned": "PRUNED"}[r["status"]] for r in records
    )
    for trial in trials:  # each Optuna trial holds every epoch its Ray trial reported (re-attached after Ctrl-C)
        assert sorted(trial.intermediate_values) == list(range(1, max(trial.intermediate_values) + 1))
    assert len(optuna.load_study(study_name="prunedrun", storage=f"sqlite:///{node_a}").trials) == len(history)
