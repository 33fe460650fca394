"""The Ray cluster a search runs on: an embedded local Ray, or an existing cluster at ``--address``.

Example:
    >>> from clear_tune.tune import ray_cluster
    >>> with ray_cluster(None, verbose=0) as resources:   # doctest: +SKIP
    ...     resources["CPU"]
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from clear_tune.errors import SpecError
from clear_tune.spec import Spec


@contextmanager
def ray_cluster(address: str | None, *, verbose: int) -> Iterator[dict[str, float]]:
    """Connect to ``address`` (or start a local Ray) unless Ray is already up; yields the cluster resources and
    shuts down only what it started. A cluster that cannot be reached is one :class:`SpecError` line."""
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # keep Ray's classic table so our trimmed columns show
    # Checkpointing every evaluation makes Ray snapshot often; that is intended (exact --resume), not a problem.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started = False
    if not ray.is_initialized():
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=verbose > 1,
                configure_logging=True,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            if address is None:
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SpecError(
                f"--address {address}: cannot connect to a Ray cluster ({first}); check the address "
                "or leave --address out to start a local Ray"
            ) from None
        started = True
    try:
        yield ray.cluster_resources()
    finally:
        if started:
            ray.shutdown()


def cluster_info(address: str | None) -> dict[str, Any]:
    """What ``experiment.json`` says of the cluster: address, live nodes, CPUs and GPUs."""
    import ray

    cluster = ray.cluster_resources()
    return {
        "address": address or "local",
        "nodes": len([n for n in ray.nodes() if n.get("Alive")]),
        "cpus": cluster.get("CPU", 0),
        "gpus": cluster.get("GPU", 0),
    }


def gpus_per_trial(spec: Spec, cluster: dict[str, float]) -> float:
    """The spec's GPU fraction per trial, or 0 (with a one-line warning) on a cluster without GPUs."""
    gpus = spec.settings.resources.gpus
    if gpus > 0 and cluster.get("GPU", 0) == 0:
        print(
            f"warning: {spec.path}: resources.gpus={gpus:g} but the Ray cluster has no GPU; running on CPU",
            file=sys.stderr,
        )
        return 0.0
    return gpus
