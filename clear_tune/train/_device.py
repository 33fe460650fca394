"""Where a trial runs: the device, the dataset's tensors on it (shared by the trials of one process), peak
memory, and the generators a backbone keeps.

Example:
    >>> from clear_tune.train import resolve_device
    >>> resolve_device("cpu").type
    'cpu'
"""

from __future__ import annotations

import random
import resource
import sys
import weakref
from typing import Any

import numpy as np
import torch

from clear_tune.data import RecDataset
from clear_tune.errors import TrainingError
from clear_tune.models import ModelContext


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the current CUDA device when available, else CPU."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingError("device 'cuda' was asked for but no CUDA GPU is visible: use --device auto or cpu")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# One ModelContext per (dataset object, device) in this process, so trials on one dataset share the
# device copies and whatever graphs backbones memoise in ctx.cache. Entries go when the dataset does.
_CONTEXTS: dict[tuple[int, str], ModelContext] = {}


def model_context(dataset: RecDataset, device: torch.device) -> ModelContext:
    """The dataset's train graph and features as tensors on ``device`` (memoised per dataset)."""
    key = (id(dataset), str(device))
    if key not in _CONTEXTS:
        feats = [
            None if f is None else torch.as_tensor(f, dtype=torch.float32, device=device)
            for f in (dataset.image_feat, dataset.text_feat)
        ]
        train = torch.as_tensor(dataset.train, dtype=torch.long, device=device)  # (E, 2)
        _CONTEXTS[key] = ModelContext(
            n_users=dataset.n_users,
            n_items=dataset.n_items,
            train_users=train[:, 0].contiguous(),
            train_items=train[:, 1].contiguous(),
            image_feat=feats[0],
            text_feat=feats[1],
            device=device,
        )
        weakref.finalize(dataset, _CONTEXTS.pop, key, None)
    return _CONTEXTS[key]


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on ``device``, or this process's peak RSS on CPU, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def model_generators(model: torch.nn.Module) -> dict[str, torch.Generator]:
    """Every :class:`torch.Generator` a backbone keeps as an attribute (edge dropout, say), by dotted name.

    They are not in ``state_dict()``, so the trainer checkpoints their states itself.
    """
    return {
        f"{name}.{attr}" if name else attr: value
        for name, module in model.named_modules()
        for attr, value in vars(module).items()
        if isinstance(value, torch.Generator)
    }


def global_rng_state() -> dict[str, Any]:
    """The process-wide RNG states (torch, CUDA, numpy, Python), for a checkpoint."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_global_rng_state(rng: dict[str, Any]) -> None:
    """Restore :func:`global_rng_state` output (CUDA states only where CUDA is available)."""
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
