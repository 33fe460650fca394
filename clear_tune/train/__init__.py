"""The trainer of one trial or one fused group of trials (:mod:`clear_tune.train._trainer`, one file top to
bottom) and its command, ``python -m clear_tune.train`` (:mod:`clear_tune.train.__main__`).

Example:
    >>> from clear_tune.train import Trainer, train
    >>> callable(train) and Trainer.__name__
    'Trainer'
"""

from clear_tune.train._device import model_context, model_generators, peak_memory_mb, resolve_device
from clear_tune.train._progress import LEFT, EpochReport, MemberEpoch, MemberProgress
from clear_tune.train._threads import ThreadGovernor, available_cpus, batch_work
from clear_tune.train._trainer import RESUMABLE_CHANGES, Trainer, train

__all__ = [
    "LEFT",
    "RESUMABLE_CHANGES",
    "EpochReport",
    "MemberEpoch",
    "MemberProgress",
    "ThreadGovernor",
    "Trainer",
    "available_cpus",
    "batch_work",
    "model_context",
    "model_generators",
    "peak_memory_mb",
    "resolve_device",
    "train",
]
