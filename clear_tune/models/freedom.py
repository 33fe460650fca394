"""FREEDOM (Zhou & Shen, ACM MM 2023) as MMRec's ``FREEDOM``: a frozen item-item graph plus a degree-pruned
user-item graph.

* item-item graph A_mm: per modality, cosine top-``knn_k`` neighbours of the RAW features (self included),
  weights ``1/sqrt(r_i r_j)``; ``A_mm = mm_image_weight · A_img + (1 − w) · A_txt``; built once per dataset
  from the features as loaded, and frozen;
* per epoch (``start_epoch``): keep ``(1 − dropout)·E`` train edges drawn without replacement with
  probability ∝ 1/sqrt(d_u d_i), re-normalise the kept graph; evaluation uses the full normalised graph;
* ``h = A_mm^{n_mm_layers} · E_item``; LightGCN with ``n_ui_layers`` over the pruned graph (mean of layers);
  item representation ``i_g + h``;
* loss = BPR(u, i+, i−) + reg · (BPR(u, φ_v(v)P_v ±) + BPR(u, φ_t(t)P_t ±)) with ``F.logsigmoid`` as in
  MMRec, the graph user embedding u, and the encoders ``φ_v = Linear(d_v → d)``, ``φ_t = Linear(d_t → d)``
  (``nn.Linear``'s own initialisation, as MMRec leaves them). CLEAR's projection acts on the encoder outputs;
* what is trained, as MMRec: the ID tables (``xavier_uniform_``), the encoders and, with
  ``train_raw_features`` (default true: MMRec wraps the features in ``nn.Embedding.from_pretrained(...,
  freeze=False)``), the raw features themselves; ``train_raw_features: false`` keeps them fixed, which
  is what the FREEDOM paper describes and makes a step independent of N · d_raw;
* faster, same algorithm: MMRec encodes all N items in every batch although its modality BPR terms read
  only ``<u, Ṽ[i+] − Ṽ[i−]>``. Encoder and projection are affine, so that gap is
  ``((V_raw[i+] − V_raw[i−]) W_v) P_v`` (the bias cancels): one ``B × d_raw`` product instead of ``N × d_raw``.

Options: ``knn_k`` (10), ``mm_image_weight`` (0.1), ``dropout`` (0.8), ``n_mm_layers`` (1),
``n_ui_layers`` (2), ``train_raw_features`` (true). MMRec's grid: ``dropout`` ∈ {0.8, 0.9},
``reg_weight`` ∈ {0, 1e-5, 1e-4, 1e-3}.

Example:
    >>> import torch
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.models import ModelContext, build_model
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 3, 0]), torch.randn(4, 10),
    ...                    torch.randn(4, 6), torch.device("cpu"))
    >>> model = build_model(TrainConfig(backbone="freedom", emb_dim=8, projection={"k": 2},
    ...                                 model_options={"knn_k": 2}), ctx)
    >>> model.start_epoch(1)
    >>> bool(model.loss(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([3, 3])) > 0)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from clear_tune.graphs import bipartite_adjacency, degree_sensitive_edges, propagate, spmm
from clear_tune.models import _losses as L
from clear_tune.models._base import Member, ModelContext
from clear_tune.models._features import FeatureBackbone
from clear_tune.models._graph_cache import modality_knn_graph, ui_adjacency, ui_edge_norm
from clear_tune.models._layers import MemberEmbedding, MemberLinear
from clear_tune.models._registry import register_backbone


@register_backbone
class FREEDOM(FeatureBackbone):
    name = "freedom"
    default_reg_weight = 1e-4
    mmrec_grid: ClassVar[dict[str, list[Any]]] = {"dropout": [0.8, 0.9], "reg_weight": [0.0, 1e-5, 1e-4, 1e-3]}

    def __init__(
        self,
        ctx: ModelContext,
        *,
        members: Sequence[Member],
        emb_dim: int = 64,
        seed: int = 0,
        knn_k: int = 10,
        mm_image_weight: float = 0.1,
        dropout: float = 0.8,
        n_mm_layers: int = 1,
        n_ui_layers: int = 2,
        train_raw_features: bool = True,
    ) -> None:
        super().__init__(ctx, members=members)
        assert ctx.image_feat is not None and ctx.text_feat is not None
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")
        R = self.n_members
        self.n_users, self.n_items = ctx.n_users, ctx.n_items
        self.dropout, self.n_mm_layers, self.n_ui_layers = dropout, n_mm_layers, n_ui_layers
        self.user_emb = MemberEmbedding(R, ctx.n_users, emb_dim)
        self.item_emb = MemberEmbedding(R, ctx.n_items, emb_dim)
        self.init_modalities(
            ctx,
            MemberLinear(R, ctx.image_feat.shape[1], emb_dim, init="torch", bias_init="torch"),
            MemberLinear(R, ctx.text_feat.shape[1], emb_dim, init="torch", bias_init="torch"),
            train_raw_features=train_raw_features,
        )
        self.full_graph = ui_adjacency(ctx)
        self.mm_graph, self.mm_graph_t = modality_knn_graph(ctx, knn_k=knn_k, image_weight=mm_image_weight)
        self.edge_users, self.edge_items, self.edge_weights = ctx.train_users, ctx.train_items, ui_edge_norm(ctx)
        self.generator = torch.Generator().manual_seed(seed)  # on the CPU: one seed, one draw on any device
        self.train_graph = self.full_graph

    def start_epoch(self, epoch: int) -> None:
        self.refresh_projection(epoch)
        if self.dropout > 0.0:
            kept = degree_sensitive_edges(self.edge_weights, keep_ratio=1.0 - self.dropout, generator=self.generator)
            self.train_graph = bipartite_adjacency(
                self.edge_users[kept], self.edge_items[kept], n_users=self.n_users, n_items=self.n_items
            )

    def propagate(self, graph: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(users (R, M, d), items (R, N, d))``: LightGCN over ``graph`` plus the item-graph term ``h``."""
        h: torch.Tensor = self.item_emb.weight  # (R, N, d)
        for _ in range(self.n_mm_layers):
            h = spmm(self.mm_graph, h, matrix_t=self.mm_graph_t)
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight], dim=1)  # (R, M + N, d)
        final = propagate(graph, ego, self.n_ui_layers)
        return final[:, : self.n_users], final[:, self.n_users :] + h

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        user_all, item_all = self.propagate(self.train_graph)
        u = user_all.index_select(1, users)  # (R, B, d)
        main = L.bpr(L.scores(u, item_all.index_select(1, pos)), L.scores(u, item_all.index_select(1, neg)))
        image_gap, text_gap = self.encode_gaps(*self.raw_gaps(pos, neg))  # (R, B, d) each: Ṽ[i+] − Ṽ[i−], ...
        no_gap = torch.zeros((), device=u.device)
        modal = L.bpr(L.scores(u, image_gap), no_gap) + L.bpr(L.scores(u, text_gap), no_gap)
        return main + self.reg_weight * modal

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate(self.full_graph)
