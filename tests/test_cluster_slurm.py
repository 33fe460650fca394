"""Issue 5, test 5: the generated SLURM script runs end to end under stand-in sbatch/srun/scontrol.

``tests/fakeslurm`` holds bash stand-ins: ``sbatch`` runs the script here with SLURM's environment
(``SLURM_JOB_NODELIST=fakenode1,fakenode2`` ...), ``srun`` runs a step's command here (each fake node's
``ray start`` gets its own temp dir and ports), ``scontrol show hostnames`` expands host lists and
``hostname --ip-address`` answers 127.0.0.1. So the script's real ``ray start`` lines start a real
two-node Ray cluster on this machine, the smoke spec runs on it, and the script's trap stops it: once with
Ray's token authentication off, once on (the token found in a fake home, as ``ray start --head`` would).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures.loopback import free_port

from clear_tune.records import read_records
from clear_tune.submit._slurm import AUTH_BLOCK

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


def run_smoke_under_fake_slurm(
    tmp_path: Path, env_changes: dict[str, str | None], during: Callable[[int], None] | None = None
) -> tuple[str, str]:
    """Submit the smoke spec with ``submit slurm --wait`` under the fake SLURM; ``during(head_port)`` runs in a
    thread while the job does. Checks the search finished on both nodes and nothing was left running;
    returns (submit's stdout + stderr, the job log)."""
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
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    for key in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(key, None)
    env.update({k: v for k, v in env_changes.items() if v is not None})
    port = free_port()
    watcher = threading.Thread(target=during, args=(port,), daemon=True) if during else None
    try:
        if watcher:
            watcher.start()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "clear_tune.submit",
                "slurm",
                "search_spaces/smoke.yaml",
                "--nodes",
                "2",
                "--cpus-per-node",
                "1",
                "--port",
                str(port),
                "--python",
                sys.executable,
                "--workdir",
                str(REPO),
                "--results",
                str(results),
                "--log-dir",
                str(logs),
                "--script",
                str(tmp_path / "smoke.sbatch"),
                "--wait",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
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
        if watcher:
            watcher.join(timeout=30)
        return done.stdout + done.stderr, output
    finally:
        for pid in processes_mentioning(str(ray_tmp)):  # only if the script's trap failed
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        subprocess.run(["rm", "-rf", str(ray_tmp)])


def test_generated_slurm_script_runs_the_smoke_spec_on_a_fake_two_node_allocation(tmp_path: Path) -> None:
    _, output = run_smoke_under_fake_slurm(tmp_path, {"RAY_AUTH_MODE": "disabled"})
    assert "clear-tune: Ray authentication mode: disabled" in output


def gcs_answers(port: int, token: str | None) -> str:
    """What the head's GCS says to one RPC carrying ``token`` (None: no authorization header): "OK" or the gRPC
    status name. A raw call so a refusal is immediate (ray.init with a bad token retries for ~20 s); the method
    is Ray 2.60's node-table query (Ray is pinned in constraints.txt)."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            "/ray.rpc.NodeInfoGcsService/GetAllNodeInfo",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        metadata = (("authorization", f"Bearer {token}"),) if token is not None else None
        try:
            call(b"", metadata=metadata, timeout=5)
            return "OK"
        except grpc.RpcError as exc:
            return exc.code().name


def test_slurm_script_with_ray_token_auth_runs_the_smoke_spec(tmp_path: Path) -> None:
    """RAY_AUTH_MODE unset and a token in ~/.ray/auth_token: `ray start --head` alone would switch token mode on
    and the workers and driver, which never do by themselves, could not join. The script decides token mode for
    all and hands the token to every step: both nodes join, the search finishes, the head refuses callers
    without the token, and the token appears in no log."""
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    token = "c1ea7" + os.urandom(16).hex()
    (home / ".ray" / "auth_token").write_text(token + "\n")
    answers: dict[str, str] = {}

    def probe(port: int) -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and answers.get("token") != "OK":
            answers["token"] = gcs_answers(port, token)
            if answers["token"] != "OK":
                time.sleep(0.5)
        answers["none"] = gcs_answers(port, None)
        answers["wrong"] = gcs_answers(port, "0" * 64)

    console, output = run_smoke_under_fake_slurm(tmp_path, {"HOME": str(home)}, during=probe)
    assert f"Ray token authentication on (token: {home}/.ray/auth_token;" in output
    assert answers == {"token": "OK", "none": "UNAUTHENTICATED", "wrong": "UNAUTHENTICATED"}
    assert token not in console and token not in output
    assert token not in (tmp_path / "smoke.sbatch").read_text()


def run_auth_block(tmp_path: Path, env: dict[str, str]) -> tuple[dict[str, str], str]:
    """Run the script's auth block alone under bash with ``env``; returns (its exported Ray variables, stdout)."""
    exported = tmp_path / "exported.env"
    script = f"PYTHON={sys.executable}\n{AUTH_BLOCK}\nenv | grep '^RAY_AUTH' > {exported}\n"
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    done = subprocess.run(
        ["bash", "-uo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ["PATH"], "HOME": str(home), **env},
    )
    assert done.returncode == 0, done.stderr
    variables = dict(line.split("=", 1) for line in exported.read_text().splitlines())
    return variables, done.stdout


def test_auth_block_decides_one_mode_for_every_node(tmp_path: Path) -> None:
    file_token, env_token = "f" * 64, "e" * 64
    assert run_auth_block(tmp_path, {})[0] == {"RAY_AUTH_MODE": "disabled"}  # no token anywhere: as Ray does

    (tmp_path / "home" / ".ray").mkdir(parents=True)
    (tmp_path / "home" / ".ray" / "auth_token").write_text(file_token)
    found, said = run_auth_block(tmp_path, {})
    assert found == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": file_token} and file_token not in said
    assert run_auth_block(tmp_path, {"RAY_AUTH_MODE": "disabled"})[0] == {"RAY_AUTH_MODE": "disabled"}

    # the variable wins over any file; a file named by RAY_AUTH_TOKEN_PATH is read and the path dropped
    assert run_auth_block(tmp_path, {"RAY_AUTH_TOKEN": env_token})[0] == {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": env_token,
    }
    elsewhere = tmp_path / "token.txt"
    elsewhere.write_text(env_token + "\n")
    found, said = run_auth_block(tmp_path, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(elsewhere)})
    assert found == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": env_token} and str(elsewhere) in said

    elsewhere.unlink()  # a token file named but missing: stop, rather than run with some other token
    done = subprocess.run(
        ["bash", "-uc", f"PYTHON={sys.executable}\n{AUTH_BLOCK}"],
        capture_output=True,
        text=True,
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path / "home"),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(elsewhere),
        },
        timeout=30,
    )
    assert done.returncode == 3 and f"RAY_AUTH_TOKEN_PATH={elsewhere} is empty or unreadable" in done.stderr

    (tmp_path / "home" / ".ray" / "auth_token").unlink()
    found, said = run_auth_block(tmp_path, {"RAY_AUTH_MODE": "token"})  # token mode, no token: one for this job
    assert re.fullmatch(r"[0-9a-f]{64}", found["RAY_AUTH_TOKEN"]) and found["RAY_AUTH_TOKEN"] not in said
    assert "a new one made for this job" in said and not (tmp_path / "home" / ".ray" / "auth_token").exists()
