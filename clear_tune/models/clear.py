"""CLEAR's own backbone (paper §3.5, Algorithm 1 lines 9-16, Eq. 14-16).

Per mini-batch::

    Ṽ, T̃   = φ_v(V_raw) P_v, φ_t(T_raw) P_t                        (N, d) each, line 10
    H_v     = GCN([P_user_v ; Ṽ], A_drop),  H_t likewise              (M + N, d) each, line 11
    E_u     = α_u,v H_v[u] + α_u,t H_t[u],  α_u = softmax(w_u)        line 12
    S_i     = H_v[i] + H_t[i];   E_i = S_i + (A_mm^L S)_i              lines 13-14
    loss    = BPR(<E_u, E_i+> − <E_u, E_i−>) + γ · mean_B(‖H_v[u]‖² + ‖H_t[u]‖² + ‖w_u‖²)    Eq. 14-16

Choices the paper leaves open (all options can be changed through ``model_options``):

* φ_v, φ_t are two-layer MLPs ``Linear(d_raw → d) → LeakyReLU → Linear(d → d)``; the raw features are
  fixed inputs (no gradient to them), so the big ``N × d_raw`` product is done once forward and once for
  the weight gradient per batch, nothing more;
* users have one learnable "modality preference" embedding per modality (``M × d``, Xavier); items have
  no ID embedding: their representation comes from the projected features only;
* the modality GCN is LightGCN propagation (no weights, mean of ``n_layers + 1`` layer outputs) over the
  symmetric-normalised user-item graph, one propagation per modality (two width-d sparse products
  measured faster on CPU than one of width 2d);
* A_drop: each epoch every train edge is kept with probability ``1 − edge_dropout`` (uniform; or
  FREEDOM's degree-sensitive sampling with ``degree_sensitive=True``) and the kept graph is re-normalised;
  evaluation uses the full graph (as FREEDOM/MMRec do);
* Fuse: w_u ∈ R² per user, softmax over modalities (so ‖w_u‖² pulls the mix towards equal weights);
* ItemGraph: ``n_mm_layers`` hops of FREEDOM's frozen kNN graph A_mm (cosine top-``knn_k`` over RAW
  features, ``mm_image_weight`` · A_img + (1 − w) · A_txt) applied to S = H_v[items] + H_t[items], added to S;
* Eq. 15's E_u^v, E_u^t are the propagated user rows H_v[u], H_t[u] (line 16); the regulariser is the mean
  over the batch's users; γ is ``reg_weight`` (default 1e-4).

Example:
    >>> import torch
    >>> from clear_tune.config import ProjectionConfig
    >>> from clear_tune.models import CLEAR
    >>> from clear_tune.models._base import ModelContext
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 3, 0]), torch.randn(4, 10),
    ...                    torch.randn(4, 6), torch.device("cpu"))
    >>> model = CLEAR(ctx, emb_dim=8, projection=ProjectionConfig(k=2), knn_k=2)
    >>> model.start_epoch(1)
    >>> model.projection.current_rank, [e.shape[1] for e in model.embeddings()]
    (2, [8, 8])
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from clear_tune.config import ProjectionConfig
from clear_tune.graphs import (
    bipartite_adjacency,
    degree_sensitive_edges,
    propagate,
    spmm,
    uniform_edge_dropout,
)
from clear_tune.models._base import ModelContext
from clear_tune.models._common import FeatureBackbone, bpr_loss, xavier_embedding, xavier_linear
from clear_tune.models.freedom import init_graphs


def mlp_encoder(d_raw: int, d: int) -> nn.Sequential:
    return nn.Sequential(xavier_linear(d_raw, d), nn.LeakyReLU(), xavier_linear(d, d))


class CLEAR(FeatureBackbone):
    name = "clear"
    default_reg_weight = 1e-4
    options: ClassVar[dict[str, Any]] = {
        "n_layers": 2, "edge_dropout": 0.1, "degree_sensitive": False,
        "knn_k": 10, "mm_image_weight": 0.1, "n_mm_layers": 1,
    }

    def __init__(
        self,
        ctx: ModelContext,
        *,
        emb_dim: int = 64,
        reg_weight: float = 1e-4,
        projection: ProjectionConfig | None = None,
        seed: int = 0,
        n_layers: int = 2,
        edge_dropout: float = 0.1,
        degree_sensitive: bool = False,
        knn_k: int = 10,
        mm_image_weight: float = 0.1,
        n_mm_layers: int = 1,
    ) -> None:
        super().__init__()
        assert ctx.image_feat is not None and ctx.text_feat is not None
        if not 0.0 <= edge_dropout < 1.0:
            raise ValueError(f"edge_dropout={edge_dropout} must be in [0, 1)")
        self.n_users, self.n_items, self.dim = ctx.n_users, ctx.n_items, emb_dim
        self.reg_weight, self.n_layers, self.n_mm_layers = reg_weight, n_layers, n_mm_layers
        self.edge_dropout, self.degree_sensitive = edge_dropout, degree_sensitive
        self.user_pref_image = xavier_embedding(ctx.n_users, emb_dim)  # layer-0 user rows of H_v
        self.user_pref_text = xavier_embedding(ctx.n_users, emb_dim)  # ... and of H_t
        self.fusion = xavier_embedding(ctx.n_users, 2)  # w_u
        self.init_modalities(
            ctx,
            mlp_encoder(ctx.image_feat.shape[1], emb_dim),
            mlp_encoder(ctx.text_feat.shape[1], emb_dim),
            projection=projection or ProjectionConfig(mode="off"),
        )
        init_graphs(self, ctx, knn_k=knn_k, mm_image_weight=mm_image_weight, seed=seed)

    def start_epoch(self, epoch: int) -> None:
        self.refresh_projection(epoch)
        if self.edge_dropout > 0.0:
            keep_ratio = 1.0 - self.edge_dropout
            if self.degree_sensitive:
                kept = degree_sensitive_edges(self.edge_weights, keep_ratio=keep_ratio, generator=self.generator)
            else:
                kept = uniform_edge_dropout(
                    self.edge_users.numel(), keep_ratio=keep_ratio, device=self.edge_users.device,
                    generator=self.generator,
                )
            self.train_graph = bipartite_adjacency(
                self.edge_users[kept], self.edge_items[kept], n_users=self.n_users, n_items=self.n_items
            )

    def propagate(self, graph: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Modality GCNs and item graph: ``(H_v users (M, d), H_t users (M, d), E_item (N, d))``."""
        V, T = self.modal_features()  # (N, d) each, projected (Eq. 10)
        # Two width-d products beat one width-2d product on CPU (fewer large temporaries), same values.
        H_v = propagate(graph, torch.cat([self.user_pref_image.weight, V]), self.n_layers)  # (M + N, d)
        H_t = propagate(graph, torch.cat([self.user_pref_text.weight, T]), self.n_layers)
        S = H_v[self.n_users :] + H_t[self.n_users :]  # (N, d): H_v[i] + H_t[i]
        aggregated = S
        for _ in range(self.n_mm_layers):
            aggregated = spmm(self.mm_graph, aggregated, matrix_t=self.mm_graph_t)
        return H_v[: self.n_users], H_t[: self.n_users], S + aggregated

    @staticmethod
    def fuse(H_v_user: torch.Tensor, H_t_user: torch.Tensor, fusion_logits: torch.Tensor) -> torch.Tensor:
        """E_u = α_v H_v[u] + α_t H_t[u] with α = softmax(w_u); ``(n, d), (n, d), (n, 2) -> (n, d)``."""
        alpha = torch.softmax(fusion_logits, dim=1)
        return alpha[:, :1] * H_v_user + alpha[:, 1:] * H_t_user

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        H_v_user, H_t_user, E_item = self.propagate(self.train_graph)
        H_v_u, H_t_u, w_u = H_v_user[users], H_t_user[users], self.fusion(users)  # (B, d), (B, d), (B, 2)
        E_u = self.fuse(H_v_u, H_t_u, w_u)  # (B, d)
        reg = (H_v_u.pow(2).sum(1) + H_t_u.pow(2).sum(1) + w_u.pow(2).sum(1)).mean()  # Eq. 15, batch mean
        return bpr_loss(E_u, E_item[pos], E_item[neg]) + self.reg_weight * reg

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        H_v_user, H_t_user, E_item = self.propagate(self.full_graph)
        return self.fuse(H_v_user, H_t_user, self.fusion.weight), E_item
