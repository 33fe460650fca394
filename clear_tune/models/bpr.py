"""MF-BPR (Rendle et al., UAI 2009) as MMRec's ``BPR``: score = <γ_u, γ_i>, trained with the BPR loss.

As MMRec: user and item tables of ``emb_dim`` drawn with ``xavier_normal_``; the loss is MMRec's
``BPRLoss`` ``mean(-log(1e-10 + σ(s⁺ − s⁻)))`` plus ``reg_weight`` times its ``EmbLoss``
``(‖γ_U‖_F + ‖γ_I+‖_F + ‖γ_I−‖_F) / B`` (unsquared Frobenius norms of the batch rows).
MMRec's grid: ``reg_weight`` ∈ {2, 1, 0.1, 0.01, 1e-3, 1e-4, 1e-5}.

Example:
    >>> import torch
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.models import ModelContext, build_model
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), None, None, torch.device("cpu"))
    >>> model = build_model(TrainConfig(backbone="bpr", projection={"mode": "off"}, emb_dim=8), ctx)
    >>> bool(model.loss(torch.tensor([0]), torch.tensor([1]), torch.tensor([0])) > 0)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from clear_tune.models import _losses as L
from clear_tune.models._base import Member, ModelContext, Recommender
from clear_tune.models._layers import MemberEmbedding
from clear_tune.models._registry import register_backbone


@register_backbone
class BPR(Recommender):
    name = "bpr"
    default_reg_weight = 1e-4
    mmrec_grid: ClassVar[dict[str, list[Any]]] = {"reg_weight": [2.0, 1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5]}

    def __init__(self, ctx: ModelContext, *, members: Sequence[Member], emb_dim: int = 64, seed: int = 0) -> None:
        super().__init__(ctx, members=members)
        self.user_emb = MemberEmbedding(self.n_members, ctx.n_users, emb_dim, init="xavier_normal")
        self.item_emb = MemberEmbedding(self.n_members, ctx.n_items, emb_dim, init="xavier_normal")

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        u, i_pos, i_neg = self.user_emb(users), self.item_emb(pos), self.item_emb(neg)  # (R, B, d) each
        main = L.mmrec_bpr(L.scores(u, i_pos), L.scores(u, i_neg))  # (R,)
        return main + self.reg_weight * L.emb_norm(u, i_pos, i_neg)

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_emb.weight, self.item_emb.weight  # (R, M, d), (R, N, d)
