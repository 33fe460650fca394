"""LightGCN (He et al., SIGIR 2020) as MMRec's ``LightGCN``: layer-mean propagation of ID embeddings.

E = mean(E⁰, Â E⁰, ..., Â^L E⁰) with Â = D^-1/2 A D^-1/2 the symmetric-normalised bipartite train graph
(:func:`~clear_tune.models._graph_cache.ui_adjacency`, built once per dataset). As MMRec: tables drawn
with ``xavier_uniform_``; MMRec's ``BPRLoss`` on the propagated rows plus ``reg_weight`` times its
``EmbLoss`` over the batch's layer-0 rows, ``(‖E⁰_U‖_F + ‖E⁰_I+‖_F + ‖E⁰_I−‖_F) / B`` (unsquared norms).
Negatives come from the trainer, among items seen in train as in MMRec's data loader.

Options: ``n_layers`` (default 2); ``regulariser``: ``"emb_loss"`` (MMRec's, the default) or ``"half_square"``
(the LightGCN paper's code, ``Σ ½‖·‖² / B``). With ``negatives: all_items`` in the trainer and
``regulariser: half_square`` this is the paper's LightGCN; BENCHMARKS.md (*LightGCN: MMRec's form or the
paper's*) measures what either change does on Baby. MMRec's grid: ``n_layers`` ∈ {1, 2, 3, 4},
``reg_weight`` ∈ {1e-2 … 1e-6}.

Example:
    >>> import torch
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.models import ModelContext, build_model
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), None, None, torch.device("cpu"))
    >>> config = TrainConfig(backbone="lightgcn", projection={"mode": "off"}, emb_dim=8)
    >>> users, items = build_model(config, ctx).embeddings()
    >>> users.shape, items.shape
    (torch.Size([1, 3, 8]), torch.Size([1, 4, 8]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from clear_tune.graphs import propagate
from clear_tune.models import _losses as L
from clear_tune.models._base import Member, ModelContext, Recommender
from clear_tune.models._graph_cache import ui_adjacency
from clear_tune.models._layers import MemberEmbedding
from clear_tune.models._registry import register_backbone

REGULARISERS = {"emb_loss": L.emb_norm, "half_square": L.half_square}


@register_backbone
class LightGCN(Recommender):
    name = "lightgcn"
    default_reg_weight = 1e-4
    mmrec_grid: ClassVar[dict[str, list[Any]]] = {
        "n_layers": [1, 2, 3, 4],
        "reg_weight": [1e-2, 1e-3, 1e-4, 1e-5, 1e-6],
    }

    def __init__(
        self,
        ctx: ModelContext,
        *,
        members: Sequence[Member],
        emb_dim: int = 64,
        seed: int = 0,
        n_layers: int = 2,
        regulariser: str = "emb_loss",
    ) -> None:
        super().__init__(ctx, members=members)
        if regulariser not in REGULARISERS:
            raise ValueError(f"regulariser={regulariser!r} is not one of {sorted(REGULARISERS)}")
        self.n_users, self.n_layers, self.regulariser = ctx.n_users, n_layers, REGULARISERS[regulariser]
        self.user_emb = MemberEmbedding(self.n_members, ctx.n_users, emb_dim)
        self.item_emb = MemberEmbedding(self.n_members, ctx.n_items, emb_dim)
        self.adjacency = ui_adjacency(ctx)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight], dim=1)  # (R, M + N, d)
        final = propagate(self.adjacency, ego, self.n_layers)
        return final[:, : self.n_users], final[:, self.n_users :]

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        user_all, item_all = self.propagate()  # (R, M, d), (R, N, d)
        u = user_all.index_select(1, users)  # (R, B, d)
        main = L.mmrec_bpr(L.scores(u, item_all.index_select(1, pos)), L.scores(u, item_all.index_select(1, neg)))
        reg = self.regulariser(self.user_emb(users), self.item_emb(pos), self.item_emb(neg))
        return main + self.reg_weight * reg

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate()
