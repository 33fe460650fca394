"""``python -m clear_tune.submit``: the SLURM script, the KubeRay manifest, the Ray Jobs request and errors.

Everything here is fast and needs no cluster; submitting to a real cluster is in ``test_cluster.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fixtures.loopback import free_port

from clear_tune.submit import (
    KubeRayOptions,
    SlurmOptions,
    pinned_requirements,
    ray_job_runtime_env,
    render_kuberay_manifest,
    render_slurm_script,
    run_command,
)

REPO = Path(__file__).resolve().parents[1]
FAKESLURM = REPO / "tests" / "fakeslurm"


def submit(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None, timeout: float = 60):
    return subprocess.run(
        [sys.executable, "-m", "clear_tune.submit", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture()
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text("experiment: tiny_exp\narms:\n  full:\n    k: [2, 4]\n")
    return path


def test_slurm_dry_run_prints_a_valid_script_following_rays_pattern(spec_file: Path) -> None:
    done = submit(
        "slurm",
        str(spec_file),
        "--nodes",
        "4",
        "--gpus-per-node",
        "8",
        "--time",
        "12:00:00",
        "--partition",
        "gpu",
        "--results",
        "/shared/results",
        "--dry-run",
    )
    assert done.returncode == 0, done.stderr
    script = done.stdout
    for line in (
        "#SBATCH --nodes=4",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-task=8",
        "#SBATCH --time=12:00:00",
        "#SBATCH --partition=gpu",
        "#SBATCH --job-name=tiny-exp",
    ):
        assert line in script.splitlines()
    assert "ray start --head" in script and 'srun --nodes=1 --ntasks=1 -w "$HEAD_NODE"' in script
    assert 'for WORKER_NODE in "${NODES[@]:1}"' in script
    # the driver starts after the node count check, and talks to the head; results go to the shared path
    wait_at = script.index("wait-nodes --address")
    driver_at = script.index("-m clear_tune.run")
    assert wait_at < driver_at
    assert f'{spec_file} --address "$RAY_HEAD" --results "$RESULTS"' in script
    assert "RESULTS=/shared/results" in script
    assert "trap 'stop_cluster' EXIT" in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert not list(Path.cwd().glob("*.sbatch"))  # --dry-run writes nothing


def test_slurm_script_defaults_to_submit_dir_results_and_allocated_cpus() -> None:
    script = render_slurm_script("spec.yaml", SlurmOptions(nodes=1, resume=True))
    assert 'RESULTS="${SLURM_SUBMIT_DIR:-$PWD}/results"' in script
    assert "CPUS_PER_NODE=${SLURM_CPUS_PER_TASK:-}" in script
    assert "--gpus-per-task" not in script
    assert "--resume" in script.split("-m clear_tune.run", 1)[1].splitlines()[0]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--time", "twelve hours"], "--time 'twelve hours'"),
        (["--nodes", "0"], "--nodes 0"),
    ],
)
def test_slurm_bad_options_are_one_line_errors(spec_file: Path, args: list[str], needle: str) -> None:
    done = submit("slurm", str(spec_file), *args, "--dry-run")
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and needle in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_slurm_without_dry_run_writes_and_submits_with_sbatch(spec_file: Path, tmp_path: Path) -> None:
    # A stand-in sbatch that only records what it was given (the end-to-end run is in test_cluster.py).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        '#!/bin/bash\necho "$@" > "$(dirname "$0")/args"\necho "Submitted batch job 4242"\n'
    )
    (bin_dir / "sbatch").chmod(0o755)
    done = submit(
        "slurm",
        str(spec_file),
        "--nodes",
        "2",
        "--script",
        str(tmp_path / "job.sbatch"),
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )
    assert done.returncode == 0, done.stderr
    assert "submitted SLURM job 4242" in done.stdout and "tail -f ./tiny-exp-4242.out" in done.stdout
    assert (bin_dir / "args").read_text().split() == [str(tmp_path / "job.sbatch")]
    assert "#SBATCH --nodes=2" in (tmp_path / "job.sbatch").read_text()


def test_slurm_without_sbatch_on_path_says_where_the_script_is(spec_file: Path, tmp_path: Path) -> None:
    done = submit("slurm", str(spec_file), "--script", str(tmp_path / "j.sbatch"), env={"PATH": "/nonexistent"})
    assert done.returncode == 2 and "sbatch not found" in done.stderr and str(tmp_path / "j.sbatch") in done.stderr


def test_fake_scontrol_expands_slurm_host_lists() -> None:
    out = subprocess.run(
        [str(FAKESLURM / "scontrol"), "show", "hostnames", "gpu[01-03,07],login,cpu5"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["gpu01", "gpu02", "gpu03", "gpu07", "login", "cpu5"]


def test_kuberay_manifest_is_a_rayjob_with_gpu_workers(spec_file: Path) -> None:
    done = submit("kuberay", str(spec_file), "--workers", "4", "--gpus-per-worker", "8", "--pvc", "shared-results")
    assert done.returncode == 0, done.stderr
    job = yaml.safe_load(done.stdout)
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["metadata"]["name"] == "tiny-exp"
    spec = job["spec"]
    assert spec["entrypoint"] == f"python -m clear_tune.run {spec_file} --results /mnt/results/results"
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    [group] = cluster["workerGroupSpecs"]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 4
    [worker] = group["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert worker["image"].endswith("-gpu")
    assert worker["volumeMounts"] == [{"name": "results", "mountPath": "/mnt/results"}]
    assert group["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "shared-results"
    head = cluster["headGroupSpec"]
    assert {p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]} == {6379, 8265, 10001}
    assert yaml.safe_load(spec["runtimeEnvYAML"]) == {"env_vars": {"OMP_NUM_THREADS": "1"}}
    assert "&id" not in done.stdout  # no YAML anchors: kubectl users read this


def test_kuberay_cpu_only_and_custom_image() -> None:
    text = render_kuberay_manifest(
        "s.yaml",
        KubeRayOptions(workers=2, image="me/clear:1", name="x1", working_dir_uri="https://h/repo.zip", pip=["a==1"]),
    )
    job = yaml.safe_load(text)
    worker = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in worker["resources"]["limits"] and worker["image"] == "me/clear:1"
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert env["working_dir"] == "https://h/repo.zip" and env["pip"]["packages"] == ["a==1"]


def test_kuberay_bad_name_is_a_one_line_error(spec_file: Path) -> None:
    done = submit("kuberay", str(spec_file), "--name", "Bad_Name")
    assert done.returncode == 2 and done.stderr.startswith("error: --name 'Bad_Name'")


def test_pinned_requirements_come_from_constraints_and_leave_ray_to_the_cluster() -> None:
    pins = pinned_requirements(REPO)
    names = {line.split("==")[0].lower() for line in pins}
    assert all("==" in line for line in pins)
    assert "torch==2.13.0" in pins and {"numpy", "pandas", "optuna", "plotly"} <= names
    assert "ray" not in names and not any(n.startswith("ray[") for n in names)


def test_ray_job_runtime_env_ships_the_working_dir_without_venv_or_results() -> None:
    env = ray_job_runtime_env(working_dir="/repo", pip=["numpy==2.0"])
    assert env["working_dir"] == "/repo" and env["pip"]["packages"] == ["numpy==2.0"]
    assert {".venv/", ".git/", "results/"} <= set(env["excludes"])
    assert "pip" not in ray_job_runtime_env(working_dir="/repo", pip=None)


def test_run_command_is_the_documented_driver_line() -> None:
    assert run_command("s.yaml", address="h:6379", resume=True) == [
        "python",
        "-m",
        "clear_tune.run",
        "s.yaml",
        "--address",
        "h:6379",
        "--resume",
    ]


def test_ray_job_against_nothing_listening_is_a_one_line_error(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("experiment: e\n")
    done = submit(
        "ray-job",
        "s.yaml",
        "--no-pip",
        "--working-dir",
        str(tmp_path),
        "--results",
        str(tmp_path / "r"),
        "--address",
        f"http://127.0.0.1:{free_port()}",
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: cannot reach a Ray job server at http://127.0.0.1:")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "content, needle",
    [
        (None, "not found"),
        ("a: [1, 2\n", "not valid YAML"),
        ("- 1\n- 2\n", "must be a YAML mapping"),
    ],
)
def test_bad_spec_files_are_one_line_errors(tmp_path: Path, content: str | None, needle: str) -> None:
    if content is not None:
        (tmp_path / "s.yaml").write_text(content)
    done = submit("ray-job", "s.yaml", "--no-pip", "--working-dir", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2 and needle in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_ray_job_spec_outside_the_working_dir_is_refused(tmp_path: Path, spec_file: Path) -> None:
    other = tmp_path / "wd"
    other.mkdir()
    done = submit("ray-job", str(spec_file), "--no-pip", "--working-dir", str(other))
    assert done.returncode == 2 and "outside the working dir" in done.stderr


def test_wait_nodes_gives_up_in_one_line_when_no_head_listens() -> None:
    done = submit("wait-nodes", "--address", f"127.0.0.1:{free_port()}", "--count", "2", "--timeout", "1")
    assert done.returncode == 2
    assert done.stderr.startswith("error: no Ray head is listening at 127.0.0.1:") and "Traceback" not in done.stderr


def test_plugins_must_travel_with_the_job(tmp_path: Path) -> None:
    """Ray Jobs ship the working dir: a plugin file or MMRec tree outside it, or missing, is refused in one line;
    SLURM (a shared file system) and KubeRay (the image / repository zip) check the paths exist."""
    work, outside = tmp_path / "wd", tmp_path / "elsewhere"
    (work / "plugins").mkdir(parents=True)
    outside.mkdir()
    (work / "plugins" / "mine.py").write_text("X = 1\n")
    (outside / "theirs.py").write_text("X = 1\n")
    spec = work / "s.yaml"
    for plugins, needle in [
        (
            "[plugins/mine.py, ../elsewhere/theirs.py]",
            "plugins[1]: ../elsewhere/theirs.py lies outside the working dir",
        ),
        ("[{mmrec: ../elsewhere}]", "plugins[0].mmrec: ../elsewhere lies outside the working dir"),
        ("[plugins/missing.py]", "plugins[0]: plugins/missing.py does not exist under"),
    ]:
        spec.write_text(f"experiment: e\nplugins: {plugins}\n")
        done = submit(
            "ray-job",
            "s.yaml",
            "--no-pip",
            "--working-dir",
            str(work),
            "--address",
            f"http://127.0.0.1:{free_port()}",
            cwd=work,
        )
        assert done.returncode == 2 and needle in done.stderr and len(done.stderr.strip().splitlines()) == 1, (
            done.stderr
        )
    spec.write_text("experiment: e\nbackbones: ['plugins/gone.py:Model']\n")
    done = submit("slurm", "s.yaml", "--nodes", "1", "--dry-run", cwd=work)
    assert done.returncode == 2 and "backbones[0]: plugins/gone.py does not exist under" in done.stderr
    spec.write_text("experiment: e\nplugins: [plugins/mine.py]\n")
    assert submit("slurm", "s.yaml", "--nodes", "1", "--dry-run", cwd=work).returncode == 0
    assert submit("kuberay", "s.yaml", cwd=work).returncode == 0
