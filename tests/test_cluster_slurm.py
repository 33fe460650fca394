"""Issue 5, test 5: the generated SLURM script runs end to end under stand-in sbatch/srun/scontrol.

``tests/fakeslurm`` holds bash stand-ins: ``sbatch`` runs the script here with SLURM's environment
(``SLURM_JOB_NODELIST=fakenode1,fakenode2`` ...), ``srun`` runs a step's command here (each fake node's
``ray start`` gets its own temp dir and ports), ``scontrol show hostnames`` expands host lists and
``hostname --ip-address`` answers 127.0.0.1. So the script's real ``ray start`` lines start a real
two-node Ray cluster on this machine, the smoke spec runs on it, and the script's trap stops it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from clear_tune.records import read_records
from clear_tune.submit import free_port

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[1]
FAKESLURM = REPO / "tests" / "fakeslurm"


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_generated_slurm_script_runs_the_smoke_spec_on_a_fake_two_node_allocation(tmp_path: Path) -> None:
    results, logs = tmp_path / "results", tmp_path / "logs"
    logs.mkdir()
    # Ray's unix socket paths must stay short: the fake nodes' temp dirs go under /tmp, not tmp_path.
    ray_tmp = Path(tempfile.mkdtemp(prefix="fs-", dir="/tmp"))
    env = {
        **os.environ,
        "PATH": f"{FAKESLURM}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "FAKESLURM_TMP": str(ray_tmp),
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "clear_tune.submit", "slurm", "search_spaces/smoke.yaml",
             "--nodes", "2", "--cpus-per-node", "1", "--port", str(free_port()), "--python", sys.executable,
             "--workdir", str(REPO), "--results", str(results), "--log-dir", str(logs),
             "--script", str(tmp_path / "smoke.sbatch"), "--wait"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert list(logs.glob("smoke-*.out")), done.stdout + done.stderr
        [job_log] = logs.glob("smoke-*.out")
        output = job_log.read_text()
        assert done.returncode == 0, done.stdout + done.stderr + output[-5000:]
        assert "SLURM job finished with status 0" in done.stdout
        assert "2 node(s), head fakenode1 at 127.0.0.1:" in output
        assert "clear-tune: 2/2 Ray nodes alive" in output
        assert output.index("2/2 Ray nodes alive") < output.index("5 of 5 trials recorded")
        records = read_records(results / "smoke" / "records")
        assert len(records) == 5 and all(r["status"] == "completed" for r in records)
        assert len({r["node_id"] for r in records}) == 2  # two at a time on two one-CPU nodes
        # clean shutdown: no Ray process of either fake node is left
        assert processes_mentioning(str(ray_tmp)) == []
    finally:
        for pid in processes_mentioning(str(ray_tmp)):  # only if the script's trap failed
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        subprocess.run(["rm", "-rf", str(ray_tmp)])
