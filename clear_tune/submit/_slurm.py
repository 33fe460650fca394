"""``submit slurm``: a batch script that starts a Ray cluster inside a SLURM allocation and runs a spec.

The script follows Ray's documented SLURM pattern: one task per node; the Ray head on the first node;
a worker on every other node, each through its own ``srun`` step; the driver starts only when the
cluster reports every node alive (``python -m clear_tune.submit wait-nodes``); on exit (success, error
or ``scancel``'s SIGTERM) every ``srun`` step is stopped so the allocation is released cleanly. Results
go to a path every node can write, by default ``$SLURM_SUBMIT_DIR/results``.

Ray token authentication (:data:`AUTH_BLOCK`) follows Ray's own variables, so nothing new to learn:
``RAY_AUTH_MODE=token`` (or ``disabled``) in the job's environment, and the token from ``RAY_AUTH_TOKEN``,
``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``. With ``RAY_AUTH_MODE`` unset the script does what
``ray start --head`` does (token mode when a token exists) but decides it once for every process: Ray's
workers and a driver given an address never turn token mode on by themselves, so left alone they could not
join a head that did. The token travels to the other nodes in the srun steps' environment, never printed.

Example:
    >>> from clear_tune.submit import SlurmOptions, render_slurm_script
    >>> script = render_slurm_script("search_spaces/smoke.yaml", SlurmOptions(nodes=2, gpus_per_node=1))
    >>> "#SBATCH --nodes=2" in script and "ray start --head" in script
    True
"""

from __future__ import annotations

import shlex
import string
from dataclasses import dataclass, field

from clear_tune.errors import SpecError
from clear_tune.submit._command import run_command, shell_join


@dataclass(frozen=True, kw_only=True)
class SlurmOptions:
    """What ``#SBATCH`` asks for and how the nodes' Ray processes are started."""

    nodes: int = 2
    gpus_per_node: int = 0
    cpus_per_node: int | None = None  # None: whatever SLURM gives the task
    time: str | None = None  # HH:MM:SS or D-HH:MM:SS
    partition: str | None = None
    account: str | None = None
    job_name: str = "clear-tune"
    workdir: str | None = None  # cd here first; None: the submit dir
    results: str | None = None  # shared path or storage URI; None: $SLURM_SUBMIT_DIR/results
    log_dir: str = "."
    python: str = "python"
    setup: list[str] = field(default_factory=list)  # shell lines run first, e.g. "source .venv/bin/activate"
    port: int = 6379
    node_wait_s: int = 300
    stop_grace_s: int = 20
    resume: bool = False
    extra_sbatch: list[str] = field(default_factory=list)
    exclusive: bool = True

    def check(self) -> None:
        if self.nodes < 1:
            raise SpecError(f"--nodes {self.nodes}: a SLURM job needs at least one node")
        if self.gpus_per_node < 0 or (self.cpus_per_node is not None and self.cpus_per_node < 1):
            raise SpecError("--gpus-per-node must be >= 0 and --cpus-per-node >= 1")
        if self.time is not None and not _looks_like_slurm_time(self.time):
            raise SpecError(f"--time {self.time!r}: use SLURM's MM, HH:MM:SS or D-HH:MM:SS format, e.g. 12:00:00")


def _looks_like_slurm_time(value: str) -> bool:
    days, _, clock = value.rpartition("-")
    parts = clock.split(":")
    return (not days or days.isdigit()) and 1 <= len(parts) <= 3 and all(p.isdigit() for p in parts)


# Kept apart from the script so tests can run it alone under bash; it needs $PYTHON set before it.
AUTH_BLOCK = """\
# Ray token authentication: head, workers and driver must agree on RAY_AUTH_MODE and hold the same token.
# RAY_AUTH_MODE=token|disabled in the job's environment (sbatch passes the submitter's; or use a --setup line)
# decides; unset, token mode is on when a token exists (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
# ~/.ray/auth_token on this node), as `ray start --head` would do. Workers and a driver given an address never
# switch it on by themselves, so the mode is exported here for all of them. The token goes to every node as
# RAY_AUTH_TOKEN in the srun steps' environment (--export=ALL), so no shared home is needed; it is never printed.
# Token mode with no token anywhere: one is made for this job only (held in memory, written nowhere).
TOKEN_FILE=${RAY_AUTH_TOKEN_PATH:-${HOME:-}/.ray/auth_token}
if [ -z "${RAY_AUTH_MODE:-}" ]; then
  if [ -n "${RAY_AUTH_TOKEN:-}" ] || [ -s "$TOKEN_FILE" ]; then RAY_AUTH_MODE=token; else RAY_AUTH_MODE=disabled; fi
fi
export RAY_AUTH_MODE
if [ "$RAY_AUTH_MODE" = token ]; then
  if [ -n "${RAY_AUTH_TOKEN:-}" ]; then
    TOKEN_SOURCE="the RAY_AUTH_TOKEN variable"
  elif [ -s "$TOKEN_FILE" ]; then
    TOKEN_SOURCE=$TOKEN_FILE
    RAY_AUTH_TOKEN=$(<"$TOKEN_FILE")
  elif [ -n "${RAY_AUTH_TOKEN_PATH:-}" ]; then
    echo "clear-tune: RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH is empty or unreadable on $(hostname);" \\
      "point it at the cluster's token file or unset it" >&2
    exit 3
  else
    TOKEN_SOURCE="a new one made for this job"
    RAY_AUTH_TOKEN=$("$PYTHON" -c 'import secrets; print(secrets.token_hex(32))') || exit 3
  fi
  export RAY_AUTH_TOKEN
  unset RAY_AUTH_TOKEN_PATH  # the file may exist only on this node; the variable reaches every node
  echo "clear-tune: Ray token authentication on (token: $TOKEN_SOURCE; passed to every node in the srun environment)"
else
  echo "clear-tune: Ray authentication mode: $RAY_AUTH_MODE"
fi
"""


class _Template(string.Template):
    delimiter = "@@"  # the script is bash: keep "$" for the shell


_SCRIPT = _Template("""\
#!/bin/bash
# Generated by: python -m clear_tune.submit slurm
# A Ray cluster over the allocation (head on the first node, one worker per other node), then the search.
@@sbatch
set -uo pipefail

@@cd
@@setup
PYTHON=@@python
RAY_PORT=@@port
RESULTS=@@results
case "$RESULTS" in *://*) ;; *) mkdir -p "$RESULTS" ;; esac   # a storage URI is not a local folder

@@auth

mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
HEAD_NODE=${NODES[0]}
# Some clusters report several addresses (IPv4 and IPv6); Ray wants one.
HEAD_IP=$(srun --nodes=1 --ntasks=1 -w "$HEAD_NODE" hostname --ip-address | awk '{print $1}')
RAY_HEAD="$HEAD_IP:$RAY_PORT"
CPUS_PER_NODE=@@cpus
GPUS_PER_NODE=@@gpus
echo "clear-tune: ${#NODES[@]} node(s), head $HEAD_NODE at $RAY_HEAD, $CPUS_PER_NODE CPU / $GPUS_PER_NODE GPU per node"

STEP_PIDS=()
stop_cluster() {
  # Stop the srun steps (SIGTERM, then SIGKILL after a grace period) so no Ray process outlives the job.
  trap - EXIT INT TERM
  [ ${#STEP_PIDS[@]} -eq 0 ] && return
  kill -TERM "${STEP_PIDS[@]}" 2>/dev/null
  for _ in $(seq @@grace); do
    kill -0 "${STEP_PIDS[@]}" 2>/dev/null || break
    sleep 1
  done
  kill -KILL "${STEP_PIDS[@]}" 2>/dev/null
  wait 2>/dev/null
}
trap 'stop_cluster' EXIT
trap 'stop_cluster; exit 143' INT TERM

CPU_ARG=()
[ -n "$CPUS_PER_NODE" ] && CPU_ARG=(--num-cpus "$CPUS_PER_NODE")

srun --nodes=1 --ntasks=1 -w "$HEAD_NODE" --export=ALL \\
  ray start --head --node-ip-address="$HEAD_IP" --port="$RAY_PORT" "${CPU_ARG[@]}" --num-gpus "$GPUS_PER_NODE" \\
  --include-dashboard false --disable-usage-stats --block &
STEP_PIDS+=($!)

for WORKER_NODE in "${NODES[@]:1}"; do
  srun --nodes=1 --ntasks=1 -w "$WORKER_NODE" --export=ALL \\
    ray start --address "$RAY_HEAD" "${CPU_ARG[@]}" --num-gpus "$GPUS_PER_NODE" --disable-usage-stats --block &
  STEP_PIDS+=($!)
done

# The driver starts only once every node has joined (or the job fails here, in one line).
"$PYTHON" -m clear_tune.submit wait-nodes --address "$RAY_HEAD" --count ${#NODES[@]} --timeout @@node_wait || exit 3

@@driver
STATUS=$?
echo "clear-tune: search finished with status $STATUS; results in $RESULTS"
exit $STATUS
""")


def render_slurm_script(spec: str, options: SlurmOptions) -> str:
    """The sbatch script that runs ``spec`` on ``options.nodes`` nodes (spec path as seen from workdir)."""
    options.check()
    sbatch = [
        f"--job-name={options.job_name}",
        f"--nodes={options.nodes}",
        "--ntasks-per-node=1",
        f"--output={options.log_dir.rstrip('/')}/%x-%j.out",
    ]
    if options.exclusive:
        sbatch.append("--exclusive")
    if options.cpus_per_node is not None:
        sbatch.append(f"--cpus-per-task={options.cpus_per_node}")
    if options.gpus_per_node:
        sbatch.append(f"--gpus-per-task={options.gpus_per_node}")
    for flag, value in (("time", options.time), ("partition", options.partition), ("account", options.account)):
        if value:
            sbatch.append(f"--{flag}={value}")
    sbatch += options.extra_sbatch
    driver = run_command(spec, python="@PYTHON@", address="@RAY_HEAD@", results="@RESULTS@", resume=options.resume)
    driver_line = (
        shell_join(driver)
        .replace("@PYTHON@", '"$PYTHON"')
        .replace("@RAY_HEAD@", '"$RAY_HEAD"')
        .replace("@RESULTS@", '"$RESULTS"')
    )
    cpus = str(options.cpus_per_node) if options.cpus_per_node is not None else "${SLURM_CPUS_PER_TASK:-}"
    return _SCRIPT.substitute(
        sbatch="\n".join(f"#SBATCH {line}" for line in sbatch),
        cd=f"cd {shlex.quote(options.workdir)}" if options.workdir else 'cd "${SLURM_SUBMIT_DIR:-$PWD}"',
        setup="\n".join(options.setup),
        python=shlex.quote(options.python),
        auth=AUTH_BLOCK.rstrip("\n"),
        port=options.port,
        results=shlex.quote(options.results) if options.results else '"${SLURM_SUBMIT_DIR:-$PWD}/results"',
        cpus=cpus,
        gpus=options.gpus_per_node,
        grace=options.stop_grace_s,
        node_wait=options.node_wait_s,
        driver=driver_line,
    )
