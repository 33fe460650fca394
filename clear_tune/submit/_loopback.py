"""A real multi-node Ray cluster on 127.0.0.1, for tests, benchmarks and trying ``--address`` locally.

Each node is one ``ray start --block`` process in its own session, with its own temp dir and explicit
ports, so it never touches another Ray on the machine (``ray stop`` would kill every Ray process of
the user; we stop only the process groups we started).

Example:
    >>> from clear_tune.submit import LoopbackCluster
    >>> with LoopbackCluster(workers=[{"node_b": 1}]) as cluster:  # doctest: +SKIP
    ...     print(cluster.address, cluster.dashboard_url)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clear_tune.errors import ClearTuneError

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@dataclass
class LoopbackNode:
    """One ``ray start --block`` process (the leader of its own process group)."""

    name: str
    process: subprocess.Popen
    temp_dir: Path
    log_path: Path
    resources: dict[str, float] = field(default_factory=dict)

    def raylet_pid(self) -> int | None:
        """Pid of this node's raylet (in its ``ray start`` process group), or None when it is gone."""
        for pid, name in _group_members(self.process.pid):
            if name == "raylet":
                return pid
        return None

    def kill_raylet(self) -> int:
        """SIGKILL this node's raylet (the node dies as a crashed machine would); returns its pid."""
        pid = self.raylet_pid()
        if pid is None:
            raise RuntimeError(f"node {self.name}: no raylet process found")
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self, *, grace_s: float = 2.0) -> None:
        """Stop every process of this node: SIGTERM the group, then SIGKILL what is left.

        Ray drains a node for up to 30 s on SIGTERM; a test cluster has nothing worth draining, so the
        grace period is short.
        """
        if self.process.poll() is None:
            _signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(self.process.pid, signal.SIGKILL)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 5
        while _group_members(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)


def _group_members(pgid: int) -> list[tuple[int, str]]:
    """``(pid, command name)`` of every live process in process group ``pgid`` (Linux ``/proc``)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ..."; comm may hold spaces, so split after the last ')'.
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            members.append((int(entry.name), name))
    return members


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class LoopbackCluster:
    """A head plus ``len(workers)`` worker nodes, each with ``cpus_per_node`` CPUs, on this machine.

    ``workers`` lists each worker's custom resources (e.g. ``[{"node_b": 1}]``). ``address`` is the GCS
    address for ``--address``; ``dashboard_url`` the Jobs API address for ``submit ray-job``; both are
    on 127.0.0.1, and the dashboard binds there only. Every node is started with ``--node-ip-address
    127.0.0.1``, which Ray itself turns into the machine's routable address for node-to-node traffic
    (``ray._private.services.resolve_ip_for_localhost``), so ``ray.nodes()`` shows that address.
    """

    def __init__(
        self,
        *,
        workers: list[dict[str, float]] | None = None,
        cpus_per_node: int = 1,
        root: str | os.PathLike[str] | None = None,
        ray_bin: str | None = None,
        env: dict[str, str] | None = None,
        start_timeout_s: float = 90.0,
    ) -> None:
        self.worker_resources = list(workers if workers is not None else [{"node_b": 1}])
        self.cpus_per_node = cpus_per_node
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="ct-cluster-", dir="/tmp"))
        self.ray_bin = ray_bin or str(Path(sys.executable).with_name("ray"))
        # Token auth off unless the caller asks: a token file another Ray left in ~/.ray would otherwise switch
        # the nodes to token mode while clients connecting by explicit address stay in disabled mode.
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", **(env or {})}
        self.env.pop("RAY_ADDRESS", None)
        self.start_timeout_s = start_timeout_s
        self.port = free_port()
        self.dashboard_port = free_port()
        self.nodes: list[LoopbackNode] = []

    # -- addresses -------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{LOOPBACK}:{self.dashboard_port}"

    @property
    def head(self) -> LoopbackNode:
        return self.nodes[0]

    @property
    def workers(self) -> list[LoopbackNode]:
        return self.nodes[1:]

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "LoopbackCluster":
        try:
            self._start_node("head", head=True, resources={})
            self.wait_for_nodes(1)
            for index, resources in enumerate(self.worker_resources):
                self._start_node(f"worker{index + 1}", head=False, resources=resources)
            self.wait_for_nodes(len(self.nodes))
        except BaseException:
            self.stop(keep_logs=True)  # the error names the log folder
            raise
        return self

    def _start_node(self, name: str, *, head: bool, resources: dict[str, float]) -> None:
        temp_dir = self.root / name
        temp_dir.mkdir(parents=True, exist_ok=True)
        ports = {
            "--node-manager-port": free_port(),
            "--object-manager-port": free_port(),
            "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--runtime-env-agent-port": free_port(),
            "--metrics-export-port": free_port(),
        }
        cmd = [self.ray_bin, "start", "--block", "--node-ip-address", LOOPBACK,
               "--num-cpus", str(self.cpus_per_node), "--num-gpus", "0",
               "--temp-dir", str(temp_dir), "--disable-usage-stats"]
        if head:
            cmd += ["--head", "--port", str(self.port), "--include-dashboard", "true",
                    "--dashboard-host", LOOPBACK, "--dashboard-port", str(self.dashboard_port),
                    "--ray-client-server-port", str(free_port())]
        else:
            cmd += ["--address", self.address]
        if resources:
            cmd += ["--resources", json.dumps(resources)]
        for flag, port in ports.items():
            cmd += [flag, str(port)]
        log_path = self.root / f"{name}.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                       start_new_session=True)
        self.nodes.append(LoopbackNode(name, process, temp_dir, log_path, dict(resources)))

    def alive_nodes(self) -> list[dict[str, Any]]:
        """The cluster's alive nodes as the GCS reports them (asked from a subprocess, not this one)."""
        probe = (
            "import json, ray; ray.init(address=%r, logging_level='ERROR', log_to_driver=False);"
            "print(json.dumps([{'node_id': n['NodeID'], 'ip': n['NodeManagerAddress'],"
            " 'resources': n['Resources']} for n in ray.nodes() if n['Alive']]))" % self.address
        )
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=self.env,
                             timeout=60)
        if out.returncode != 0:
            return []
        return json.loads(out.stdout.strip().splitlines()[-1])

    def wait_for_nodes(self, count: int) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.process.poll() is not None:
                    raise ClearTuneError(f"ray node {node.name} exited early; see {node.log_path}")
            if self._gcs_ready() and len(self.alive_nodes()) >= count:
                return
            time.sleep(0.5)
        raise ClearTuneError(f"loopback cluster: {count} nodes not alive after {self.start_timeout_s:.0f}s; "
                             f"see logs in {self.root}")

    def _gcs_ready(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.port), timeout=1):
                return True
        except OSError:
            return False

    def client_env(self) -> dict[str, str]:
        """Environment for drivers and clients of this cluster (same auth mode, no stray RAY_ADDRESS)."""
        return dict(self.env)

    def stop(self, *, keep_logs: bool = False) -> None:
        for node in reversed(self.nodes):
            node.stop()
        if self._own_root and not keep_logs:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LoopbackCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
