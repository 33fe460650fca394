"""Fault tolerance on a REAL two-node Ray cluster on this machine (issue 5, tests 1-4).

One head and one worker (custom resource ``node_b``), each a real ``ray start`` with one CPU, its own
temp dir and ports (:class:`clear_tune.submit.LoopbackCluster`). Drivers run as subprocesses with
``--address`` (never ``ray.init`` in this process, which may hold the session's local Ray). The worker
node is killed by the last test, so the order of the tests matters (pytest keeps file order).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures.loopback import LoopbackCluster

from clear_tune.records import read_records

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster():
    cluster = LoopbackCluster(
        workers=[{"node_b": 1}], cpus_per_node=1, env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    )
    cluster.start()
    nodes = cluster.alive_nodes()
    cluster.head_id = next(n["node_id"] for n in nodes if "node_b" not in n["resources"])
    cluster.worker_id = next(n["node_id"] for n in nodes if "node_b" in n["resources"])
    yield cluster
    cluster.stop()


def write_spec(
    folder: Path,
    name: str,
    *,
    epochs: int,
    eval_every: int = 1,
    users: int = 120,
    strengths: str = "[0.5, 0.9]",
    max_failures: int = 1,
    fusion: str = "{max_members: 2}",
) -> Path:
    """A grid of 4 CLEAR trials (k x λ) on tiny synthetic data, two Ray trials at a time: in fused model arrays
    of two members by default, each its own Ray trial with ``fusion="{enabled: false}"``."""
    path = folder / f"{name}.yaml"
    path.write_text(f"""\
experiment: {name}
data:
  source: synthetic
  options: {{n_users: {users}, n_items: 80, d_v: 16, d_t: 16, pref_dim: 8}}
trainer: {{epochs: {epochs}, patience: {epochs}, emb_dim: 16, batch_size: 256, eval_every: {eval_every}}}
projection: {{k: [2, 4], strength: {strengths}}}
max_concurrent: 2
max_failures: {max_failures}
fusion: {fusion}
checkpoint_interval_s: 0   # checkpoint every evaluation: the kill tests check exact continuation
""")
    return path


def start_driver(
    cluster: LoopbackCluster, spec: Path, results: Path, *extra: str, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    with open(log, "a") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "clear_tune.run",
                str(spec),
                "--address",
                cluster.address,
                "--results",
                str(results),
                "--no-report",
                *extra,
            ],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**cluster.client_env(), **(env or {})},
        )


def finish(process: subprocess.Popen, log: Path, timeout: float = 150) -> None:
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    assert process.returncode == 0, log.read_text()[-4000:]


def trial_dirs(exp_dir: Path) -> list[Path]:
    return [p for p in exp_dir.iterdir() if p.is_dir() and (p / "params.json").is_file()] if exp_dir.is_dir() else []


def latest_checkpoint_record(trial_dir: Path) -> dict | None:
    """The (unfused) trial's record as of its latest checkpoint: so far while it trains, final once it left."""
    checkpoints = sorted(trial_dir.glob("checkpoint_*"))
    for checkpoint in reversed(checkpoints):
        for path in (
            checkpoint / "members" / f"{trial_dir.name}.json",
            checkpoint / "records" / f"{trial_dir.name}.json",
        ):
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError):  # absent, or being written
                continue
    return None


def reported_epochs(trial_dir: Path) -> list[int]:
    """Epochs the trial reported to Ray Tune, in order, across every (re)start (``result.json``)."""
    lines = (trial_dir / "result.json").read_text().splitlines() if (trial_dir / "result.json").is_file() else []
    return [json.loads(line)["epoch"] for line in lines if line.strip()]


def assert_continued_from_a_checkpoint(epochs: list[int], *, first: int, last: int) -> None:
    """After a restart the trial re-reports from its last checkpoint Ray had persisted (which may be a
    few evaluations behind the kill), never from the first epoch again, and it reaches the end."""
    assert epochs[-1] == last, epochs
    restarts = [i for i in range(1, len(epochs)) if epochs[i] <= epochs[i - 1]]
    assert all(epochs[i] > first for i in restarts), epochs


def wait_until(
    condition, *, timeout: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None
):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"driver ended before {what}:\n" + (log.read_text()[-4000:] if log else ""))
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}" + (":\n" + log.read_text()[-4000:] if log else ""))


def expected_keys(spec: Path) -> set[str]:
    from clear_tune.spec import load_spec

    return {plan.key for plan in load_spec(spec).grid_trials()}


def test_trials_land_on_both_nodes(cluster: LoopbackCluster, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "both_nodes", epochs=3)
    log = tmp_path / "driver.log"
    finish(start_driver(cluster, spec, tmp_path / "results", log=log), log)
    records = read_records(tmp_path / "results" / "both_nodes" / "records")
    assert {r["trial_id"] for r in records} == expected_keys(spec)
    assert all(r["status"] == "completed" for r in records)
    # one CPU per node and two trials at a time: both nodes must have run trials
    assert {r["node_id"] for r in records} == {cluster.head_id, cluster.worker_id}
    assert all(r["node_ip"] for r in records)


def test_a_plugin_file_travels_to_the_worker_node(cluster: LoopbackCluster, tmp_path: Path) -> None:
    """The spec's plugin deletes its own file once the driver has imported it, so the trials on both nodes can only
    import the copy that came with them through Ray's object store (clear_tune._plugins)."""
    plugin = tmp_path / "plugin_src" / "travelling_model.py"
    plugin.parent.mkdir()
    plugin.write_text(
        (REPO / "examples" / "single_model.py").read_text().replace('"feature_mf"', '"travelling_mf"')
        + "\nimport os, pathlib\nif os.environ.get('DELETE_AFTER_IMPORT'):\n    pathlib.Path(__file__).unlink()\n"
    )
    spec = write_spec(tmp_path, "plugin_nodes", epochs=2, fusion="{enabled: false}")
    spec.write_text(spec.read_text() + f"plugins: [{plugin}]\nbackbones: [travelling_mf]\n")
    log = tmp_path / "driver.log"
    finish(start_driver(cluster, spec, tmp_path / "results", log=log, env={"DELETE_AFTER_IMPORT": "1"}), log)
    assert not plugin.exists()
    records = read_records(tmp_path / "results" / "plugin_nodes" / "records")
    assert len(records) == 4 and all(r["status"] == "completed" for r in records), log.read_text()[-3000:]
    assert {r["config"]["backbone"] for r in records} == {"travelling_mf"}
    assert {r["node_id"] for r in records} == {cluster.head_id, cluster.worker_id}


def test_submit_ray_job_runs_the_smoke_spec_on_the_cluster(cluster: LoopbackCluster, tmp_path: Path) -> None:
    results = tmp_path / "results"
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "clear_tune.submit",
            "ray-job",
            "search_spaces/smoke.yaml",
            "--address",
            cluster.dashboard_url,
            "--no-pip",
            "--python",
            sys.executable,
            "--results",
            str(results),
            "--wait",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        env=cluster.client_env(),
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    head = done.stdout.splitlines()
    assert head[0].startswith("submitted job ") and "ray job logs --follow" in done.stdout
    job_id = head[0].split()[2]
    assert f"job {job_id} SUCCEEDED" in done.stdout
    assert "5 of 5 trials recorded" in done.stdout  # the driver's own summary, streamed back by --wait
    records = read_records(results / "smoke" / "records")
    assert len(records) == 5 and all(r["status"] == "completed" for r in records)
    assert {r["node_id"] for r in records} <= {cluster.head_id, cluster.worker_id}
    print(f"ray-job smoke spec: {time.monotonic() - started:.1f}s")


def test_killed_driver_resumes_without_rerunning_finished_trials(cluster: LoopbackCluster, tmp_path: Path) -> None:
    # Three trials, two at a time, so at some moment one has finished and another is half-way.
    spec = write_spec(
        tmp_path, "resume", epochs=40, eval_every=4, users=1000, strengths="[0.5, 0.7, 0.9]", fusion="{enabled: false}"
    )
    spec.write_text(spec.read_text().replace("k: [2, 4]", "k: [2]"))
    results = tmp_path / "results"
    exp_dir, records_dir = results / "resume", results / "resume" / "records"
    log = tmp_path / "driver.log"
    # Ray Tune saves its experiment state every second here (Ray's default adapts to the run's length),
    # so the kill below always finds the unfinished trial's latest checkpoint in the saved state.
    env = {"TUNE_GLOBAL_CHECKPOINT_S": "1"}
    driver = start_driver(cluster, spec, results, log=log, env=env)

    def finished_and_halfway():
        recorded = {p.stem for p in records_dir.glob("*.json")} if records_dir.is_dir() else set()
        for trial in trial_dirs(exp_dir):
            saved = latest_checkpoint_record(trial)
            state_files = list(exp_dir.glob("experiment_state-*.json"))
            if (
                recorded
                and trial.name not in recorded
                and saved
                and saved["epochs_run"] >= 8
                and state_files
                and state_files[0].stat().st_mtime > max(c.stat().st_mtime for c in trial.glob("checkpoint_*"))
            ):
                return trial, saved
        return None

    trial, saved = wait_until(
        finished_and_halfway, timeout=150, what="a finished and a half-way trial", process=driver, log=log
    )
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    killed_at = time.time()
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in records_dir.glob("*.json")}
    # what Ray Tune logged for the finished trials: a re-run would rewrite or extend these
    logged = {name: (exp_dir / Path(name).stem / "result.json").read_bytes() for name in before}
    assert 1 <= len(before) < 3 and trial.name not in {Path(n).stem for n in before}

    finish(start_driver(cluster, spec, results, "--resume", log=log, env=env), log)
    records = {r["trial_id"]: r for r in read_records(records_dir)}
    assert set(records) == expected_keys(spec) and all(r["status"] == "completed" for r in records.values())
    # finished trials: their records are byte-for-byte untouched, and they were not run again
    for name, (content, mtime) in before.items():
        assert (records_dir / name).read_bytes() == content and (records_dir / name).stat().st_mtime_ns == mtime
        assert (
            (exp_dir / Path(name).stem / "result.json").read_bytes().startswith(logged[name])
        )  # Ray may flush its last line late
        assert reported_epochs(exp_dir / Path(name).stem) == list(range(4, 41, 4))
    # the half-way trial continued from its checkpoint: its clock started before the kill and its
    # reported epochs never went back to the start
    resumed = records[trial.name]
    assert resumed["epochs_run"] == 40 and resumed["wall_start"] < killed_at
    epochs = reported_epochs(trial)
    assert_continued_from_a_checkpoint(epochs, first=4, last=40)
    assert len(resumed["curve"]) == 10


def test_killing_the_worker_raylet_reschedules_its_trials_on_the_head(cluster: LoopbackCluster, tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path, "node_loss", epochs=40, eval_every=4, users=400, max_failures=3, fusion="{enabled: false}"
    )
    results = tmp_path / "results"
    exp_dir, records_dir = results / "node_loss", results / "node_loss" / "records"
    log = tmp_path / "driver.log"
    driver = start_driver(cluster, spec, results, log=log)

    def running_on_worker():
        recorded = {p.stem for p in records_dir.glob("*.json")} if records_dir.is_dir() else set()
        for trial in trial_dirs(exp_dir):
            saved = latest_checkpoint_record(trial)
            if (
                saved
                and saved["node_id"] == cluster.worker_id
                and trial.name not in recorded
                and saved["epochs_run"] < 30
            ):
                return trial
        return None

    victim = wait_until(
        running_on_worker, timeout=120, what="a trial running on the worker node", process=driver, log=log
    )
    cluster.workers[0].kill_raylet()
    killed_at = time.time()
    finish(driver, log, timeout=200)

    assert cluster.workers[0].process.poll() is not None  # the node really went down
    records = read_records(records_dir)
    ids = [r["trial_id"] for r in records]
    assert sorted(ids) == sorted(expected_keys(spec)) and len(ids) == len(set(ids))  # none lost, none twice
    assert all(r["status"] == "completed" and r["epochs_run"] == 40 for r in records), [r["reason"] for r in records]
    assert not list(records_dir.glob(".*.tmp"))
    moved = next(r for r in records if r["trial_id"] == victim.name)
    assert moved["node_id"] == cluster.head_id  # finished on the surviving node
    # restored from its checkpoint, not from zero: the trial's clock (kept in the checkpoint) started
    # before the kill, and the epochs it reported never went back
    assert moved["wall_start"] < killed_at
    epochs = reported_epochs(victim)
    assert_continued_from_a_checkpoint(epochs, first=4, last=40)
