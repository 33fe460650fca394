"""How many intra-op threads a trial's torch uses, chosen so that a CPU trial never collapses on a shared
machine.

Why: torch's CPU kernels run each large enough op as an OpenMP parallel region, and every region ends at a
barrier. When another process holds one of the cores, the thread the kernel descheduled holds up the
others at every barrier of every small op: a CLEAR epoch on the default synthetic data measured 0.1 s alone
and up to 10 s beside a second 2-thread torch job, while one thread stayed at 0.1 s in every case
(BENCHMARKS.md, ``benchmarks/bench_contention.py``). Small ops gain nothing from a second thread anyway.

The policy (``threads: auto``, the default everywhere: the single-trial command, harness trials, the
benchmarks): one thread unless a batch's work is big enough for the second thread to pay off
(:data:`PARALLEL_WORK`: the raw-feature product of a Baby-scale feature backbone is), and then the CPUs
this process may use (its affinity mask), capped by what the trial was given (a Ray trial's ``cpus``).
Threads wait passively between regions (``OMP_WAIT_POLICY=PASSIVE``, which ``import clear_tune`` sets
unless the environment says otherwise, before torch starts OpenMP), so a waiting thread yields its core
instead of spinning on it. An integer is used as it is.

Example:
    >>> from clear_tune.train import choose_threads
    >>> choose_threads("auto", work=1e6, cpu_budget=2)   # tiny batches: one thread
    1
    >>> choose_threads(3, work=1e6, cpu_budget=2)
    3
"""

from __future__ import annotations

import os
from typing import Any

# Multiply-adds per mini-batch above which a second intra-op thread pays for its barriers (measured in
# BENCHMARKS.md: Baby-scale feature backbones are far above it, the default synthetic set far below).
PARALLEL_WORK = 2e9


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask; all CPUs where there is none)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def batch_work(config: Any, dataset: Any) -> float:
    """A batch's multiply-adds, roughly: the raw-feature product over all items (feature backbones) plus the
    propagation over the train graph, for ``config.batch_size`` interactions and ``emb_dim``-wide rows."""
    d = config.emb_dim
    features = 0.0
    if dataset.image_feat is not None and dataset.text_feat is not None:
        features = dataset.n_items * (dataset.image_feat.shape[1] + dataset.text_feat.shape[1]) * d * 3
    graph = 2 * len(dataset.train) * d * 4
    return features + graph + config.batch_size * d * 6


def choose_threads(threads: int | str, *, work: float, cpu_budget: float | None = None) -> int:
    """``threads`` when it is an integer; for ``"auto"`` one thread below :data:`PARALLEL_WORK` and otherwise
    the CPUs this process may use, at most ``cpu_budget`` (a Ray trial's CPUs)."""
    if not isinstance(threads, str):
        return max(1, int(threads))
    if work < PARALLEL_WORK:
        return 1
    cpus = available_cpus()
    return max(1, min(cpus, int(cpu_budget)) if cpu_budget else cpus)


def apply_threads(threads: int) -> None:
    """Set torch's intra-op thread count (inter-op stays torch's own choice)."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
