"""``submit ray-job``: run a spec on an existing Ray cluster through Ray's Job Submission API.

The working dir (the repository, minus .gitignore'd files such as ``.venv`` and ``results``) is shipped
with the job; the driver runs there as ``python -m clear_tune.run SPEC``. Python packages, by default,
are the project's direct dependencies pinned to the versions in ``constraints.txt`` (Ray itself is
left out: the cluster's Ray must be the one the job runs under). ``--no-pip`` uses the cluster's
environment as it is (what a cluster built from the project's image or venv wants, and the only choice
on a machine without a package index); ``--requirements FILE`` ships a pip requirements file instead.

Example:
    >>> from clear_tune.submit import ray_job_runtime_env
    >>> env = ray_job_runtime_env(working_dir=".", pip=None)
    >>> sorted(env)
    ['env_vars', 'excludes', 'working_dir']
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from clear_tune.errors import ClearTuneError, SpecError

# Never shipped even if a .gitignore forgets them: environments, VCS data, results of earlier runs.
ALWAYS_EXCLUDED = [".venv/", ".git/", "results/", "test-artifacts/", "__pycache__/", "*.pyc"]
# The cluster provides Ray; installing another one into the job's environment breaks the job.
NOT_PIP_INSTALLED = {"ray"}
TERMINAL_STATES = {"SUCCEEDED", "FAILED", "STOPPED"}


def pinned_requirements(project_root: str | os.PathLike[str] = ".") -> list[str]:
    """The project's direct dependencies as ``name==version`` lines, versions from ``constraints.txt``."""
    import tomllib

    root = Path(project_root)
    pyproject, constraints = root / "pyproject.toml", root / "constraints.txt"
    if not pyproject.is_file() or not constraints.is_file():
        raise SpecError(
            f"{root.resolve()}: pyproject.toml and constraints.txt are needed to pin the job's "
            "packages; run from the repository root, or pass --requirements FILE or --no-pip"
        )
    pins = {}
    for line in constraints.read_text().splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if sep:
            pins[_canonical(name)] = version.strip()
    requirements = []
    for dependency in tomllib.loads(pyproject.read_text())["project"]["dependencies"]:
        name = re.split(r"[\[<>=!~; ]", dependency, maxsplit=1)[0]
        if _canonical(name) in NOT_PIP_INSTALLED:
            continue
        pinned = pins.get(_canonical(name))
        requirements.append(f"{name}=={pinned}" if pinned else dependency)
    return requirements


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def ray_job_runtime_env(
    *,
    working_dir: str | os.PathLike[str],
    pip: list[str] | None,
    env_vars: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The job's ``runtime_env``: shipped working dir, optional pinned pip packages, env vars."""
    runtime_env: dict[str, Any] = {
        "working_dir": str(working_dir),
        "excludes": list(ALWAYS_EXCLUDED),
        # One intra-op thread per trial unless the user says otherwise: trials share a node's cores.
        "env_vars": {"OMP_NUM_THREADS": "1", **(env_vars or {})},
    }
    if pip:
        runtime_env["pip"] = {"packages": list(pip), "pip_check": False}
    return runtime_env


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # connection refused, wrong port, not a job server ...
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClearTuneError(
            f"cannot reach a Ray job server at {address} ({first_line}); start the head with "
            "`ray start --head --dashboard-host 0.0.0.0` and pass --address http://HEAD:8265"
        ) from None


def submit_ray_job(
    *,
    address: str,
    entrypoint: str,
    runtime_env: dict[str, Any],
    submission_id: str | None = None,
    entrypoint_num_cpus: float = 0,
    metadata: dict[str, str] | None = None,
) -> str:
    """Submit ``entrypoint`` to the job server at ``address``; return the job's submission id."""
    client = _client(address)
    try:
        return client.submit_job(
            entrypoint=entrypoint,
            runtime_env=runtime_env,
            submission_id=submission_id,
            entrypoint_num_cpus=entrypoint_num_cpus,
            metadata=metadata or {},
        )
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClearTuneError(f"the job server at {address} refused the job: {first_line}") from None


def follow_ray_job(address: str, job_id: str, *, out=None, poll_s: float = 1.0) -> str:
    """Stream the job's logs to ``out`` until it ends; return its final status (``SUCCEEDED`` ...)."""
    out = out or sys.stdout
    client = _client(address)

    async def _stream() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    asyncio.run(_stream())
    # The log stream closes when the job ends; the status may take a moment to become terminal.
    while (status := str(client.get_job_status(job_id)).rsplit(".", 1)[-1]) not in TERMINAL_STATES:
        time.sleep(poll_s)
    return status


def follow_instructions(address: str, job_id: str) -> list[str]:
    """Lines telling the user how to follow, query and stop the job with Ray's own CLI."""
    return [
        f"follow logs:  ray job logs --follow {job_id} --address {address}",
        f"status:       ray job status {job_id} --address {address}",
        f"stop:         ray job stop {job_id} --address {address}",
    ]
