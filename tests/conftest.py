"""Shared fixtures. Real parts only: a real local Ray, real data files when ../shared is present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_AMAZON = REPO.parent / "shared" / "data" / "amazon"

# Two cores: keep each test process to one intra-op thread so parallel pieces don't thrash.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def amazon_dir() -> Path:
    """``../shared/data/amazon`` (Baby and Sports graphs); the test is skipped when it is absent."""
    if not (SHARED_AMAZON / "baby" / "baby.inter").is_file():
        pytest.skip("../shared/data/amazon is not present")
    return SHARED_AMAZON


@pytest.fixture(scope="session")
def ray_session():
    """One real local Ray instance for the whole test session (started lazily, shut down at the end)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave things worth looking at (screenshots, reports): ``test-artifacts/``."""
    path = REPO / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


# Not test modules: plugin files the tests import on purpose (one fails to import), fake servers and tools.
collect_ignore_glob = ["fixtures/plugins/*", "fakeslurm/*", "s3/*", "gcs/*"]

# Modules whose every test starts Ray (a local instance, a loopback cluster, or a search in a subprocess).
RAY_MODULES = {
    "test_run",
    "test_run_resume",
    "test_cluster",
    "test_cluster_slurm",
    "test_tune_pruner",
    "test_tune_schedulers",
    "test_tracking",
    "test_storage",
    "test_storage_gcs",
}


def pytest_collection_modifyitems(config, items):
    """Mark every test that starts Ray ``ray`` (``make test-fast`` runs ``-m "not ray"``): the modules above, and any
    test that asks for the session's Ray."""
    for item in items:
        module = getattr(item, "module", None)
        name = module.__name__.rsplit(".", 1)[-1] if module is not None else ""
        if name in RAY_MODULES or "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)
