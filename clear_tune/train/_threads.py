"""How many intra-op threads a trial's torch uses, so that a CPU trial never collapses on a shared machine.

Why: torch's CPU kernels run each large enough op as an OpenMP parallel region, and every region ends at a
barrier. When another process holds one of the cores, the thread the kernel descheduled holds up the others
at every barrier of every op: a CLEAR epoch on the default synthetic data measured 0.12 s alone with two
threads and 2.5 times that beside a second 2-thread torch job, while one thread stayed within the share of
the machine it could have (BENCHMARKS.md, ``benchmarks/bench_contention.py``). Yet alone, two threads are
up to 1.9 times faster than one. So ``threads: auto`` (the default everywhere: the single-trial command,
harness trials, the benchmarks) decides again before every epoch, from what the other processes left free:

* a batch too small for a second thread to pay for its barriers (:data:`PARALLEL_WORK`): one thread;
* else the CPUs the other processes left free over the last epoch (``/proc/stat``'s busy time minus this
  process's own), at least one, at most the CPUs this process may use (its affinity mask) and the trial's
  budget (a Ray trial's ``cpus``). Where ``/proc/stat`` cannot be read: one thread, which cannot collapse.

An integer is used as it is, every epoch.

Example:
    >>> from clear_tune.train import ThreadGovernor
    >>> ThreadGovernor("auto", work=1e6).threads_now()      # tiny batches: one thread
    1
    >>> ThreadGovernor(3, work=1e6).threads_now()
    3
"""

from __future__ import annotations

import os
import time
from typing import Any

# Multiply-adds per mini-batch below which one thread is as fast as two (BENCHMARKS.md: the smoke spec's
# data is below it, the default synthetic set and Baby-scale feature backbones far above).
PARALLEL_WORK = 2e7


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


def _busy_seconds() -> tuple[float, float] | None:
    """``(busy, total)`` CPU seconds of the whole machine since boot (``/proc/stat``), or None."""
    try:
        with open("/proc/stat") as fh:
            fields = [float(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return (sum(fields[:8]) - idle) / hz, sum(fields[:8]) / hz


class ThreadGovernor:
    """Chooses the thread count before each epoch (see the module docstring); ``threads_now()`` applies it."""

    def __init__(self, threads: int | str, *, work: float, cpu_budget: float | None = None) -> None:
        self.fixed = None if isinstance(threads, str) else max(1, int(threads))
        self.cap = available_cpus() if cpu_budget is None else max(1, min(available_cpus(), int(cpu_budget)))
        self.parallel = work >= PARALLEL_WORK and self.cap > 1
        self._last: tuple[float, float, float] | None = None  # (machine busy s, wall s, own CPU s)
        self.threads: int | None = None  # set in torch by the first threads_now()
        self.history: list[int] = []  # the count chosen for each epoch, in order

    def _sample(self) -> tuple[float, float, float] | None:
        machine = _busy_seconds()
        return None if machine is None else (machine[0], time.monotonic(), time.process_time())

    def others_busy(self) -> float | None:
        """Cores the other processes kept busy since the last call (a short look the first time)."""
        if self._last is None:
            self._last = self._sample()
            if self._last is None:
                return None
            time.sleep(0.1)
        now = self._sample()
        if now is None or self._last is None:
            return None
        (busy0, wall0, own0), (busy1, wall1, own1) = self._last, now
        self._last = now
        wall = max(wall1 - wall0, 1e-3)
        cores = os.cpu_count() or 1
        machine = min(cores, (busy1 - busy0) / wall)  # busy cores, this process included
        return max(0.0, machine - (own1 - own0) / wall)

    def threads_now(self) -> int:
        """The thread count for the next epoch, set in torch."""
        if self.fixed is not None:
            threads = self.fixed
        elif not self.parallel:
            threads = 1
        else:
            others = self.others_busy()
            free = available_cpus() - others if others is not None else 1
            threads = max(1, min(self.cap, int(free + 0.25)))
        if threads != self.threads:
            import torch

            torch.set_num_threads(threads)
        self.threads = threads
        self.history.append(threads)
        return threads
