"""FREEDOM (Zhou & Shen, ACM MM 2023): a frozen item-item graph plus a degree-pruned user-item graph.

Reference behaviour is MMRec's ``FREEDOM``; what we keep and what we change:

* item-item graph A_mm: for each modality, cosine top-``knn_k`` neighbours of the RAW features (self
  included), weights ``1/sqrt(r_i r_j)``; ``A_mm = mm_image_weight · A_img + (1 − w) · A_txt``; built once per
  dataset (``ctx.cache``) and frozen;
* per epoch (``start_epoch``): keep ``(1 − dropout)·E`` train edges drawn without replacement with
  probability ∝ 1/sqrt(d_u d_i) (``torch.multinomial``), re-normalise the kept graph; evaluation uses the
  full normalised graph;
* ``h = A_mm^{n_mm_layers} · E_item``; LightGCN with ``n_ui_layers`` over the pruned graph (mean of layers);
  item representation ``i_g + h``;
* loss = BPR(u, i+, i−) + reg · (BPR(u, φ_v(v)P_v ±) + BPR(u, φ_t(t)P_t ±)), with the graph user embedding u,
  encoders ``Linear(d_v → d)``, ``Linear(d_t → d)`` (Xavier init) and CLEAR's projection on their outputs;
* faster, same algorithm: MMRec encodes all N items in every batch although its modality BPR terms read
  only ``<u, Ṽ[i+] − Ṽ[i−]>``. Encoder and projection are affine, so we compute that gap directly as
  ``((V_raw[i+] − V_raw[i−]) W_vᵀ) P_v`` (the bias cancels): one ``B × d_raw`` product instead of
  ``N × d_raw`` (and of MMRec's 2B rows), same values and gradients. All items are encoded only for a
  projection refresh, under ``no_grad``;
* one deliberate difference: MMRec wraps the raw features in ``nn.Embedding.from_pretrained(...,
  freeze=False)``, so Adam also updates the 4096-d raw image features; we keep raw features fixed (the
  kNN graph is built from them either way), which is what the paper describes and what makes the per-batch
  cost independent of N · d_v.

Options: ``knn_k`` (10), ``mm_image_weight`` (0.1), ``dropout`` (0.8), ``n_mm_layers`` (1),
``n_ui_layers`` (2). ``reg_weight`` default 1e-4 (MMRec's grid: 0, 1e-5, 1e-4, 1e-3).

Example:
    >>> import torch
    >>> from clear_tune.models import FREEDOM
    >>> from clear_tune.models._base import ModelContext
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 3, 0]), torch.randn(4, 10),
    ...                    torch.randn(4, 6), torch.device("cpu"))
    >>> model = FREEDOM(ctx, emb_dim=8, knn_k=2)
    >>> model.start_epoch(1)
    >>> model.loss(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([3, 3])).item() > 0
    True
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from clear_tune.config import ProjectionConfig
from clear_tune.graphs import (
    bipartite_adjacency,
    cached,
    degree_sensitive_edges,
    edge_norm,
    knn_item_graph,
    mix_graphs,
    propagate,
    spmm,
    transpose,
)
from clear_tune.models._base import ModelContext
from clear_tune.models._common import FeatureBackbone, bpr_gap_loss, bpr_loss, xavier_embedding, xavier_linear
from clear_tune.models.lightgcn import ui_adjacency


def modality_item_graph(ctx: ModelContext, *, knn_k: int, image_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """FREEDOM's frozen ``A_mm`` and its transpose, ``(N, N)`` CSR each, memoised in ``ctx.cache``."""

    def build() -> tuple[torch.Tensor, torch.Tensor]:
        assert ctx.image_feat is not None and ctx.text_feat is not None
        image = cached(ctx.cache, f"knn_image_{knn_k}", lambda: knn_item_graph(ctx.image_feat, k=knn_k))
        text = cached(ctx.cache, f"knn_text_{knn_k}", lambda: knn_item_graph(ctx.text_feat, k=knn_k))
        mixed = mix_graphs(image, text, weight=image_weight)
        return mixed, transpose(mixed)

    return cached(ctx.cache, f"mm_graph_{knn_k}_{image_weight}", build)


def init_graphs(model: torch.nn.Module, ctx: ModelContext, *, knn_k: int, mm_image_weight: float, seed: int) -> None:
    """Give ``model`` the graphs FREEDOM and CLEAR share: the full normalised user-item graph (evaluation, and
    training until the first ``start_epoch`` drops edges), the frozen item graph ``A_mm``, the train edges with
    their ``1/sqrt(d_u d_i)`` weights, and the edge-dropout generator (a module attribute, so the trainer
    checkpoints its state)."""
    model.full_graph = ui_adjacency(ctx)
    model.mm_graph, model.mm_graph_t = modality_item_graph(ctx, knn_k=knn_k, image_weight=mm_image_weight)
    model.edge_users, model.edge_items = ctx.train_users, ctx.train_items
    model.edge_weights = cached(
        ctx.cache, "ui_edge_norm", lambda: edge_norm(ctx.train_users, ctx.train_items, ctx.n_users, ctx.n_items)
    )
    model.generator = torch.Generator().manual_seed(seed)  # on the CPU: one seed, one dropout draw on any device
    model.train_graph = model.full_graph


class FREEDOM(FeatureBackbone):
    name = "freedom"
    default_reg_weight = 1e-4
    options: ClassVar[dict[str, Any]] = {
        "knn_k": 10, "mm_image_weight": 0.1, "dropout": 0.8, "n_mm_layers": 1, "n_ui_layers": 2,
    }

    def __init__(
        self,
        ctx: ModelContext,
        *,
        emb_dim: int = 64,
        reg_weight: float = 1e-4,
        projection: ProjectionConfig | None = None,
        seed: int = 0,
        knn_k: int = 10,
        mm_image_weight: float = 0.1,
        dropout: float = 0.8,
        n_mm_layers: int = 1,
        n_ui_layers: int = 2,
    ) -> None:
        super().__init__()
        assert ctx.image_feat is not None and ctx.text_feat is not None
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")
        self.n_users, self.n_items = ctx.n_users, ctx.n_items
        self.reg_weight, self.dropout = reg_weight, dropout
        self.n_mm_layers, self.n_ui_layers = n_mm_layers, n_ui_layers
        self.user_emb = xavier_embedding(ctx.n_users, emb_dim)
        self.item_emb = xavier_embedding(ctx.n_items, emb_dim)
        self.init_modalities(
            ctx,
            xavier_linear(ctx.image_feat.shape[1], emb_dim),
            xavier_linear(ctx.text_feat.shape[1], emb_dim),
            projection=projection or ProjectionConfig(mode="off"),
        )
        init_graphs(self, ctx, knn_k=knn_k, mm_image_weight=mm_image_weight, seed=seed)

    def start_epoch(self, epoch: int) -> None:
        self.refresh_projection(epoch)
        if self.dropout > 0.0:
            kept = degree_sensitive_edges(self.edge_weights, keep_ratio=1.0 - self.dropout, generator=self.generator)
            self.train_graph = bipartite_adjacency(
                self.edge_users[kept], self.edge_items[kept], n_users=self.n_users, n_items=self.n_items
            )

    def propagate(self, graph: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.item_emb.weight  # (N, d)
        for _ in range(self.n_mm_layers):
            h = spmm(self.mm_graph, h, matrix_t=self.mm_graph_t)
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight])  # (M + N, d)
        final = propagate(graph, ego, self.n_ui_layers)
        return final[: self.n_users], final[self.n_users :] + h

    def modal_gaps(self, pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Ṽ[pos] − Ṽ[neg], T̃[pos] − T̃[neg])``, ``(B, d)`` each: all that MMRec's modality BPR terms read."""
        return self.encode_gaps(*self.raw_gaps(pos, neg))

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        user_all, item_all = self.propagate(self.train_graph)
        u = user_all[users]  # (B, d)
        main = bpr_loss(u, item_all[pos], item_all[neg])
        image_gap, text_gap = self.modal_gaps(pos, neg)
        modal = bpr_gap_loss(u, image_gap) + bpr_gap_loss(u, text_gap)
        return main + self.reg_weight * modal

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.propagate(self.full_graph)
