"""The small interface every backbone implements, so the trainer never special-cases a model.

A backbone is an ``nn.Module`` built from a :class:`~clear_tune.data.RecDataset` already moved to a
device (see :class:`ModelContext`). Per epoch the trainer calls ``start_epoch(epoch)`` once (resample
edge dropout, refresh the CLEAR projection when due), then ``loss(users, pos, neg)`` per mini-batch, and
``embeddings()`` under ``torch.no_grad()`` for full-ranking evaluation: scores are always
``user_emb @ item_emb.T``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from clear_tune.projection import CrossModalProjection


@dataclass
class ModelContext:
    """What a backbone is built from: the train graph and features as tensors on ``device``.

    ``train_users``/``train_items`` are ``(E,)`` int64 tensors of the train interactions.
    ``image_feat``/``text_feat`` are ``(n_items, d_v)``/``(n_items, d_t)`` float32 or ``None``.
    ``cache`` is a per-dataset dict where backbones memoise graphs built once (normalised adjacency,
    kNN item graphs) so trials on the same dataset in one process do not rebuild them.
    """

    n_users: int
    n_items: int
    train_users: torch.Tensor
    train_items: torch.Tensor
    image_feat: torch.Tensor | None
    text_feat: torch.Tensor | None
    device: torch.device
    cache: dict[str, Any] = field(default_factory=dict)


class Recommender(nn.Module):
    """Base class: subclasses set ``name``, ``uses_features`` and ``default_reg_weight``."""

    name: ClassVar[str]
    uses_features: ClassVar[bool] = False
    default_reg_weight: ClassVar[float] = 1e-4

    def __init__(self) -> None:
        super().__init__()
        self.projection: CrossModalProjection | None = None

    def start_epoch(self, epoch: int) -> None:
        """Called once before each training epoch (epochs count from 1)."""

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """Scalar training loss for a mini-batch of ``(B,)`` user, positive item and negative item ids."""
        raise NotImplementedError

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final ``(n_users, D)`` and ``(n_items, D)`` embeddings for evaluation; score = inner product."""
        raise NotImplementedError

    def spectrum_history(self) -> list[dict[str, Any]]:
        """Singular values of the cross-covariance before/after projection at every refresh."""
        return [] if self.projection is None else list(self.projection.history)
