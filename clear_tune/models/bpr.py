"""MF-BPR (Rendle et al., UAI 2009/2012): score = <γ_u, γ_i>, trained with the BPR loss.

Choices: Xavier-initialised user and item tables of ``emb_dim``; the L2 term is LightGCN's
``reg · ½(‖γ_u‖² + ‖γ_i+‖² + ‖γ_i-‖²) / B`` over the batch rows (MMRec uses unsquared norms instead).

Example:
    >>> import torch
    >>> from clear_tune.models import BPR
    >>> from clear_tune.models._base import ModelContext
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), None, None, torch.device("cpu"))
    >>> model = BPR(ctx, emb_dim=8)
    >>> model.loss(torch.tensor([0]), torch.tensor([1]), torch.tensor([0])).item() > 0
    True
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from clear_tune.config import ProjectionConfig
from clear_tune.models._base import ModelContext, Recommender
from clear_tune.models._common import bpr_loss, l2_per_row, xavier_embedding


class BPR(Recommender):
    name = "bpr"
    uses_features = False
    default_reg_weight = 1e-4
    options: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        ctx: ModelContext,
        *,
        emb_dim: int = 64,
        reg_weight: float = 1e-4,
        projection: ProjectionConfig | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.reg_weight = reg_weight
        self.user_emb = xavier_embedding(ctx.n_users, emb_dim)
        self.item_emb = xavier_embedding(ctx.n_items, emb_dim)

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        u, i_pos, i_neg = self.user_emb(users), self.item_emb(pos), self.item_emb(neg)  # (B, d) each
        return bpr_loss(u, i_pos, i_neg) + self.reg_weight * l2_per_row(u, i_pos, i_neg)

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_emb.weight, self.item_emb.weight
