"""LayerGCN (Zhou et al., DASFAA 2023) as MMRec's ``LayerGCN``: layer-refined propagation of ID embeddings
over a per-epoch pruned user-item graph.

MMRec's form, point by point:

* tables E⁰ = [E_U ; E_I] drawn with ``xavier_uniform_``; no other parameter;
* per layer ``l = 1..n_layers``: ``X_l = Â X'_{l-1}`` (``X'_0 = E⁰``, Â the symmetric-normalised graph),
  then every node's row is scaled by its cosine similarity to the ego layer, ``X'_l = cos(X_l, E⁰) ⊙ X_l``
  (``F.cosine_similarity``, eps 1e-8, the weights are not detached); the final embedding is the SUM
  ``X'_1 + ... + X'_L`` (the ego layer itself is not added);
* per epoch (``start_epoch``, MMRec's ``pre_epoch_processing``) with ``dropout > 0``: keep
  ``int(E · (1 − dropout))`` train edges, alternating per epoch between drawing them without replacement
  with probability ∝ 1/sqrt(d_u d_i) (odd epochs, MMRec's first call) and uniformly at random (even
  epochs), and re-normalise the kept graph, ``D'^-1/2 A' D'^-1/2`` over the kept edges' degrees;
  ``dropout = 0`` trains on the full graph. Evaluation always uses the full normalised graph;
* loss = Σ_B −log σ(s⁺ − s⁻) (a SUM over the batch, ``F.logsigmoid``, as MMRec's inline ``bpr_loss``)
  + ``reg_weight`` · MMRec's ``L2Loss`` of the batch's layer-0 rows, ``½ (‖E⁰_U‖² + ‖E⁰_I+‖² + ‖E⁰_I−‖²)``
  (no division by the batch size). Negatives come from the trainer, among items seen in train.

No CLEAR: an interaction-only backbone. Options: ``n_layers`` (4), ``dropout`` (0.1).
MMRec's grid: ``n_layers`` ∈ {4}, ``dropout`` ∈ {0, 0.1, 0.2}, ``reg_weight`` ∈ {1e-2, 1e-3, 1e-4, 1e-5}.
The uniform epochs draw their subset from this model's generator (MMRec uses Python's ``random``):
the same distribution, not the same draws.

Example:
    >>> import torch
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.models import ModelContext, build_model
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 3, 0]), None, None,
    ...                    torch.device("cpu"))
    >>> model = build_model(TrainConfig(backbone="layergcn", projection={"mode": "off"}, emb_dim=8), ctx)
    >>> model.start_epoch(1)
    >>> model.train_graph.values().numel()   # int(4 · 0.9) = 3 kept edges, both directions
    6
    >>> [e.shape for e in model.embeddings()]
    [torch.Size([1, 3, 8]), torch.Size([1, 4, 8])]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from clear_tune.graphs import bipartite_adjacency, degree_sensitive_edges, spmm, uniform_edge_subset
from clear_tune.models import _losses as L
from clear_tune.models._base import Member, ModelContext, Recommender
from clear_tune.models._graph_cache import ui_adjacency, ui_edge_norm
from clear_tune.models._layers import MemberEmbedding
from clear_tune.models._registry import register_backbone


def layer_refined_propagate(adjacency: torch.Tensor, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """``Σ_l cos(X_l, E⁰) ⊙ X_l`` with ``X_l = Â X'_{l-1}``: ``(R, n, d)`` in, ``(R, n, d)`` out."""
    layer, total = ego, None
    for _ in range(n_layers):  # n_layers >= 1
        layer = spmm(adjacency, layer)  # (R, n, d)
        layer = layer * F.cosine_similarity(layer, ego, dim=-1).unsqueeze(-1)  # row-wise weight (R, n, 1)
        total = layer if total is None else total + layer
    assert total is not None  # n_layers >= 1 (checked by the model)
    return total


@register_backbone
class LayerGCN(Recommender):
    name = "layergcn"
    default_reg_weight = 1e-4
    mmrec_grid: ClassVar[dict[str, list[Any]]] = {
        "n_layers": [4],
        "dropout": [0.0, 0.1, 0.2],
        "reg_weight": [1e-2, 1e-3, 1e-4, 1e-5],
    }

    def __init__(
        self,
        ctx: ModelContext,
        *,
        members: Sequence[Member],
        emb_dim: int = 64,
        seed: int = 0,
        n_layers: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(ctx, members=members)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")
        if n_layers < 1:
            raise ValueError(f"n_layers={n_layers} must be at least 1")
        self.n_users, self.n_items, self.n_layers, self.dropout = ctx.n_users, ctx.n_items, n_layers, dropout
        self.user_emb = MemberEmbedding(self.n_members, ctx.n_users, emb_dim)
        self.item_emb = MemberEmbedding(self.n_members, ctx.n_items, emb_dim)
        self.full_graph = ui_adjacency(ctx)
        self.edge_users, self.edge_items, self.edge_weights = ctx.train_users, ctx.train_items, ui_edge_norm(ctx)
        self.generator = torch.Generator().manual_seed(seed)  # on the CPU: one seed, one draw on any device
        self.train_graph = self.full_graph

    def start_epoch(self, epoch: int) -> None:
        if self.dropout <= 0.0:
            self.train_graph = self.full_graph
            return
        keep = 1.0 - self.dropout
        if epoch % 2 == 1:  # MMRec's first call prunes by degree, then it alternates with uniform pruning
            kept = degree_sensitive_edges(self.edge_weights, keep_ratio=keep, generator=self.generator)
        else:
            kept = uniform_edge_subset(
                self.edge_weights.numel(), keep_ratio=keep, device=self.edge_weights.device, generator=self.generator
            )
        self.train_graph = bipartite_adjacency(
            self.edge_users[kept], self.edge_items[kept], n_users=self.n_users, n_items=self.n_items
        )

    def propagate(self, graph: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(users (R, M, d), items (R, N, d))`` after layer-refined propagation over ``graph``."""
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight], dim=1)  # (R, M + N, d)
        final = layer_refined_propagate(graph, ego, self.n_layers)
        return final[:, : self.n_users], final[:, self.n_users :]

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        user_all, item_all = self.propagate(self.train_graph)
        u = user_all.index_select(1, users)  # (R, B, d)
        pos_scores, neg_scores = L.scores(u, item_all.index_select(1, pos)), L.scores(u, item_all.index_select(1, neg))
        bpr_sum = -L.batch_sum(F.logsigmoid(pos_scores - neg_scores))  # MMRec's inline bpr_loss: a sum
        ego_rows = (self.user_emb(users), self.item_emb(pos), self.item_emb(neg))  # (R, B, d) each
        l2 = 0.5 * sum(L.squared_norm(rows) for rows in ego_rows)  # MMRec's L2Loss: no division by B
        return bpr_sum + self.reg_weight * l2

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate(self.full_graph)
