"""LightGCN (He et al., SIGIR 2020): layer-mean propagation of ID embeddings over the user-item graph.

E = mean(E⁰, Â E⁰, ..., Â^L E⁰) with Â = D^-1/2 A D^-1/2 the symmetric-normalised bipartite graph of the
train interactions, built once per dataset (``ctx.cache["ui_adjacency"]``). The L2 term is over the
batch's layer-0 embeddings, ``reg · ½(‖e⁰_u‖² + ‖e⁰_i+‖² + ‖e⁰_i-‖²) / B`` as in the paper's code.

Option: ``n_layers`` (default 2).

Example:
    >>> import torch
    >>> from clear_tune.models import LightGCN
    >>> from clear_tune.models._base import ModelContext
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), None, None, torch.device("cpu"))
    >>> users, items = LightGCN(ctx, emb_dim=8).embeddings()
    >>> users.shape, items.shape
    (torch.Size([3, 8]), torch.Size([4, 8]))
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from clear_tune.config import ProjectionConfig
from clear_tune.graphs import bipartite_adjacency, cached, propagate
from clear_tune.models._base import ModelContext, Recommender
from clear_tune.models._common import bpr_loss, l2_per_row, xavier_embedding


def ui_adjacency(ctx: ModelContext) -> torch.Tensor:
    """The normalised train graph of ``ctx``, built on its device once and memoised in ``ctx.cache``."""
    return cached(
        ctx.cache,
        "ui_adjacency",
        lambda: bipartite_adjacency(ctx.train_users, ctx.train_items, n_users=ctx.n_users, n_items=ctx.n_items),
    )


class LightGCN(Recommender):
    name = "lightgcn"
    uses_features = False
    default_reg_weight = 1e-4
    options: ClassVar[dict[str, Any]] = {"n_layers": 2}

    def __init__(
        self,
        ctx: ModelContext,
        *,
        emb_dim: int = 64,
        reg_weight: float = 1e-4,
        projection: ProjectionConfig | None = None,
        seed: int = 0,
        n_layers: int = 2,
    ) -> None:
        super().__init__()
        self.n_users, self.n_layers, self.reg_weight = ctx.n_users, n_layers, reg_weight
        self.user_emb = xavier_embedding(ctx.n_users, emb_dim)
        self.item_emb = xavier_embedding(ctx.n_items, emb_dim)
        self.adjacency = ui_adjacency(ctx)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])  # (M + N, d)
        final = propagate(self.adjacency, ego, self.n_layers)
        return final[: self.n_users], final[self.n_users :]

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        user_all, item_all = self.propagate()
        main = bpr_loss(user_all[users], item_all[pos], item_all[neg])
        reg = l2_per_row(self.user_emb(users), self.item_emb(pos), self.item_emb(neg))
        return main + self.reg_weight * reg

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate()
