"""CLEAR's own backbone (paper §3.5, Algorithm 1 lines 9-16, Eq. 14-16), written for a member array.

Per mini-batch, per member (every tensor below carries the member axis R first)::

    Ṽ, T̃   = φ_v(V_raw) P_v, φ_t(T_raw) P_t                        (N, d) each, line 10
    H_v     = GCN([P_user_v ; Ṽ], A_drop),  H_t likewise              (M + N, d) each, line 11
    E_u     = α_u,v H_v[u] + α_u,t H_t[u],  α_u = softmax(w_u)        line 12
    S_i     = H_v[i] + H_t[i];   E_i = S_i + (A_mm^L S)_i              lines 13-14
    loss    = BPR(<E_u, E_i+> − <E_u, E_i−>) + γ · mean_B(‖H_v[u]‖² + ‖H_t[u]‖² + ‖w_u‖²)    Eq. 14-16

Choices the paper leaves open (all options can be changed through ``model_options``):

* φ_v, φ_t are two-layer MLPs ``Linear(d_raw → d) → LeakyReLU → Linear(d → d)``; the raw features are
  fixed inputs (no gradient to them), so the big ``N × d_raw`` product is done once forward and once for
  the weight gradient per batch, for all members together;
* users have one learnable "modality preference" embedding per modality (``M × d``, Xavier); items have
  no ID embedding: their representation comes from the projected features only;
* the modality GCN is LightGCN propagation (no weights, mean of ``n_layers + 1`` layer outputs) over the
  symmetric-normalised user-item graph, one propagation per modality;
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
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.models import ModelContext, build_model
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 3, 0]), torch.randn(4, 10),
    ...                    torch.randn(4, 6), torch.device("cpu"))
    >>> model = build_model(TrainConfig(emb_dim=8, projection={"k": 2}, model_options={"knn_k": 2}), ctx)
    >>> model.start_epoch(1)
    >>> model.projection.members[0].current_rank, [e.shape for e in model.embeddings()]
    (2, [torch.Size([1, 3, 8]), torch.Size([1, 4, 8])])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from clear_tune.graphs import bipartite_adjacency, degree_sensitive_edges, propagate, spmm, uniform_edge_dropout
from clear_tune.models import _losses as L
from clear_tune.models._base import Member, ModelContext
from clear_tune.models._features import FeatureBackbone
from clear_tune.models._graph_cache import modality_knn_graph, ui_adjacency, ui_edge_norm
from clear_tune.models._layers import MemberEmbedding, MemberMLP
from clear_tune.models._registry import register_backbone


@register_backbone
class CLEAR(FeatureBackbone):
    name = "clear"
    default_reg_weight = 1e-4

    def __init__(
        self,
        ctx: ModelContext,
        *,
        members: Sequence[Member],
        emb_dim: int = 64,
        seed: int = 0,
        n_layers: int = 2,
        edge_dropout: float = 0.1,
        degree_sensitive: bool = False,
        knn_k: int = 10,
        mm_image_weight: float = 0.1,
        n_mm_layers: int = 1,
    ) -> None:
        super().__init__(ctx, members=members)
        assert ctx.image_feat is not None and ctx.text_feat is not None
        if not 0.0 <= edge_dropout < 1.0:
            raise ValueError(f"edge_dropout={edge_dropout} must be in [0, 1)")
        R = self.n_members
        self.n_users, self.n_items = ctx.n_users, ctx.n_items
        self.n_layers, self.n_mm_layers = n_layers, n_mm_layers
        self.edge_dropout, self.degree_sensitive = edge_dropout, degree_sensitive
        self.user_pref_image = MemberEmbedding(R, ctx.n_users, emb_dim)  # layer-0 user rows of H_v
        self.user_pref_text = MemberEmbedding(R, ctx.n_users, emb_dim)  # ... and of H_t
        self.fusion = MemberEmbedding(R, ctx.n_users, 2)  # w_u
        self.init_modalities(
            ctx,
            MemberMLP(R, [ctx.image_feat.shape[1], emb_dim, emb_dim]),
            MemberMLP(R, [ctx.text_feat.shape[1], emb_dim, emb_dim]),
        )
        self.full_graph = ui_adjacency(ctx)
        self.mm_graph, self.mm_graph_t = modality_knn_graph(ctx, knn_k=knn_k, image_weight=mm_image_weight)
        self.edge_users, self.edge_items, self.edge_weights = ctx.train_users, ctx.train_items, ui_edge_norm(ctx)
        self.generator = torch.Generator().manual_seed(seed)  # on the CPU: one seed, one draw on any device
        self.train_graph = self.full_graph

    def start_epoch(self, epoch: int) -> None:
        self.refresh_projection(epoch)
        if self.edge_dropout > 0.0:
            keep_ratio = 1.0 - self.edge_dropout
            if self.degree_sensitive:
                kept = degree_sensitive_edges(self.edge_weights, keep_ratio=keep_ratio, generator=self.generator)
            else:
                kept = uniform_edge_dropout(
                    self.edge_users.numel(),
                    keep_ratio=keep_ratio,
                    device=self.edge_users.device,
                    generator=self.generator,
                )
            self.train_graph = bipartite_adjacency(
                self.edge_users[kept], self.edge_items[kept], n_users=self.n_users, n_items=self.n_items
            )

    def propagate(self, graph: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Modality GCNs and item graph: ``(H_v users (R, M, d), H_t users (R, M, d), E_item (R, N, d))``."""
        V, T = self.modal_features()  # (R, N, d) each, projected (Eq. 10)
        H_v = propagate(graph, torch.cat([self.user_pref_image.weight, V], dim=1), self.n_layers)  # (R, M + N, d)
        H_t = propagate(graph, torch.cat([self.user_pref_text.weight, T], dim=1), self.n_layers)
        S = H_v[:, self.n_users :] + H_t[:, self.n_users :]  # (R, N, d): H_v[i] + H_t[i]
        aggregated = S
        for _ in range(self.n_mm_layers):
            aggregated = spmm(self.mm_graph, aggregated, matrix_t=self.mm_graph_t)
        return H_v[:, : self.n_users], H_t[:, : self.n_users], S + aggregated

    @staticmethod
    def fuse(H_v_user: torch.Tensor, H_t_user: torch.Tensor, fusion_logits: torch.Tensor) -> torch.Tensor:
        """E_u = α_v H_v[u] + α_t H_t[u] with α = softmax(w_u); ``(R, n, d), (R, n, d), (R, n, 2) -> (R, n, d)``."""
        alpha = torch.softmax(fusion_logits, dim=-1)
        return alpha[..., :1] * H_v_user + alpha[..., 1:] * H_t_user

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        H_v_user, H_t_user, E_item = self.propagate(self.train_graph)
        H_v_u, H_t_u, w_u = H_v_user.index_select(1, users), H_t_user.index_select(1, users), self.fusion(users)
        E_u = self.fuse(H_v_u, H_t_u, w_u)  # (R, B, d)
        reg = L.batch_mean(H_v_u.pow(2).sum(-1) + H_t_u.pow(2).sum(-1) + w_u.pow(2).sum(-1))  # Eq. 15
        main = L.bpr(L.scores(E_u, E_item.index_select(1, pos)), L.scores(E_u, E_item.index_select(1, neg)))
        return main + self.reg_weight * reg

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        H_v_user, H_t_user, E_item = self.propagate(self.full_graph)
        return self.fuse(H_v_user, H_t_user, self.fusion.weight), E_item
