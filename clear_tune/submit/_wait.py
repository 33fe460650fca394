"""``submit wait-nodes``: block until a Ray cluster reports N alive nodes (used by the SLURM script).

Example:
    >>> from clear_tune.submit import wait_for_nodes
    >>> wait_for_nodes("127.0.0.1:6379", count=2, timeout_s=300)  # doctest: +SKIP
    2
"""

from __future__ import annotations

import logging
import socket
import sys
import time

from clear_tune.errors import ClearTuneError


def _gcs_listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except (OSError, ValueError):
        return False


def wait_for_nodes(address: str, *, count: int, timeout_s: float = 300.0, poll_s: float = 1.0) -> int:
    """Wait until ``count`` nodes are alive in the cluster at ``address`` (``HOST:PORT``); return how many."""
    deadline = time.monotonic() + timeout_s
    # ray.init blocks for a long time on an address nobody listens on yet, so wait for the port first.
    while not _gcs_listening(address):
        if time.monotonic() > deadline:
            raise ClearTuneError(
                f"no Ray head is listening at {address} after {timeout_s:.0f}s; check the head's srun step output"
            )
        time.sleep(poll_s)
    import ray

    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # auth mismatch, version mismatch, head died in between ...
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ClearTuneError(f"cannot join the Ray cluster at {address}: {first_line}") from None
    try:
        alive, reported = 0, -1
        while True:
            alive = sum(1 for node in ray.nodes() if node["Alive"])
            if alive != reported:
                print(f"clear-tune: {alive}/{count} Ray nodes alive", file=sys.stderr, flush=True)
                reported = alive
            if alive >= count:
                return alive
            if time.monotonic() > deadline:
                raise ClearTuneError(
                    f"only {alive} of {count} Ray nodes joined {address} within {timeout_s:.0f}s; "
                    "check the workers' srun step output"
                )
            time.sleep(poll_s)
    finally:
        ray.shutdown()
