"""DRAGON (Zhou et al., ECAI 2023) as MMRec's ``DRAGON``: DualGNN-style modality GCNs over the user-item graph,
concatenated, plus a sampled user-user co-occurrence graph and FREEDOM's frozen item-item kNN graph.

MMRec's form, point by point (its ``construction = 'cat'``, the only one its ``forward`` reaches):

* per modality m ∈ {v, t}: item features ``φ_m(x) = MLP_1(leaky_relu(MLP(x)))`` (``nn.Linear(d_raw, 4d)`` then
  ``nn.Linear(4d, d)``, ``nn.Linear``'s own initialisation and bias, slope 0.01) over the FROZEN raw features
  (MMRec's ``GCN`` reads ``self.v_feat``); a user preference table ``P_m`` (``U × d``, ``xavier_normal_``);
  ``x_m = normalize([P_m; φ_m])`` (rows to unit L2 norm); ``x̂_m = x_m + Â x_m + Â² x_m`` with Â = D^-1/2 A D^-1/2
  the train graph without self loops (PyG's ``Base_gcn``, ``aggr='add'``);
* users ``u = [w_u0 v̂_u ‖ w_u1 t̂_u]`` (``2d`` wide) with ``weight_u`` ``U × 2`` (``xavier_normal_`` over
  ``(U, 2, 1)``, softmax over the two modalities at init, trained freely afterwards); items ``i = [v̂_i ‖ t̂_i]``;
* user graph: every epoch (``start_epoch``, MMRec's ``pre_epoch_processing``/``topk_sample``) each user takes its
  first ``k`` = 40 co-occurrence neighbours (:func:`~clear_tune.graphs.user_cooccurrence`, exactly MMRec's
  ``user_graph_dict.npy``), a user with fewer is padded by random repeats (this model's CPU generator), weights
  = softmax of the counts; ``u ← u + Σ_v W[u, v] u_v`` (on the concatenated ``2d`` rows);
* item graph: ``i ← i + A_mm^{n_mm_layers} i`` with A_mm MMRec's ``mm_adj``: cosine top-``knn_k`` of the RAW
  features per modality (self included), ``1/sqrt(k·k)``, ``mm_image_weight · A_v + (1 − w) · A_t``, frozen
  (:func:`~clear_tune.models._graph_cache.modality_knn_graph`, FREEDOM's graph: the same construction);
* loss: ``−mean(log2 σ(s⁺ − s⁻))`` (log base 2, no epsilon, as written) + ``reg_weight · (mean(P_v[U_B]²) +
  mean(P_t[U_B]²)) + reg_weight · mean(weight_u²)`` (means over all entries of the batch's preference rows and of
  the whole ``weight_u``);
* evaluation: MMRec's ``full_sort_predict`` scores with ``result_embed``, the representations its LAST training
  batch computed (before that batch's optimizer step). ``eval_from_last_batch`` (default) keeps those, so the
  numbers are MMRec's; false recomputes them from the final weights (the same forward, one step fresher);
* not computed, as in MMRec where they never reach the loss (no gradient, Adam leaves them as they start):
  ``image_embedding``/``text_embedding`` (trainable copies of the features that only build A_mm),
  ``image_trs``/``text_trs``, ``weight_i``, ``MLP_v``, ``MLP_t``, ``MLP_user``, the edge-dropout lists
  (``edge_index_dropv``/``dropt``: passed to the GCN, never read) and the GCN's ``dropout``. The yaml's
  ``n_layers`` (2) and ``feat_embed_dim`` are unread (the GCN hard-codes two hops: our ``n_layers`` default);
  MMRec hard-codes the GCN width ``dim_latent = 64`` (our ``emb_dim``, default 64): the final embeddings are
  ``2 · emb_dim`` wide.

Where CLEAR enters: the encoder is the GCN's MLP, ``φ_m`` above (MMRec's ``v_gcn.MLP_1(leaky_relu(v_gcn.MLP(v)))``);
its ``(R, I, d)`` outputs are projected before they are concatenated with the preferences and normalised.

Speed: both modalities' GCNs propagate as one ``2R``-member stack (one sparse product per hop); the item graph
acts on the concatenated items once. Like MMRec, every batch encodes all items and propagates the full graph.

Options: ``aggr_mode`` ("add", MMRec's searched value and the only one here), ``n_mm_layers`` (1), ``knn_k`` (10),
``mm_image_weight`` (0.1), ``n_layers`` (2: the GCN hops), ``k`` (40: user-graph neighbours, hard-coded in MMRec),
``user_aggr_mode`` ("softmax", hard-coded in MMRec; or "mean"), ``eval_from_last_batch`` (true).
``reg_weight`` defaults to 1e-4: MMRec's yaml lists only a grid (0.1 … 1e-5) and 1e-4 is the point the parity
benchmark pins (as for DualGNN, whose yaml lists the same grid). MMRec's grid: ``aggr_mode`` ∈ {add},
``reg_weight`` and ``lr`` ∈ {0.1, 0.01, 1e-3, 1e-4, 1e-5}.

Example:
    >>> import torch
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.models import ModelContext, build_model
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 3, 2]), torch.randn(4, 10),
    ...                    torch.randn(4, 6), torch.device("cpu"))
    >>> model = build_model(TrainConfig(backbone="dragon", emb_dim=8, projection={"k": 2},
    ...                                 model_options={"knn_k": 2}), ctx)
    >>> model.start_epoch(1)
    >>> bool(model.loss(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([3, 0])) > 0)
    True
    >>> [e.shape for e in model.embeddings()]          # [v ‖ t]: twice emb_dim
    [torch.Size([1, 3, 16]), torch.Size([1, 4, 16])]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from clear_tune.graphs import first_k_neighbours, sample_user_graph, spmm, transpose
from clear_tune.models._base import Member, ModelContext
from clear_tune.models._features import FeatureBackbone
from clear_tune.models._graph_cache import modality_knn_graph, ui_adjacency, user_cooccurrence_graph
from clear_tune.models._layers import MemberMLP, init_matrix, modality_weights, stack_members
from clear_tune.models._losses import batch_mean, scores
from clear_tune.models._registry import register_backbone


@register_backbone
class DRAGON(FeatureBackbone):
    name = "dragon"
    default_reg_weight = 1e-4
    mmrec_grid: ClassVar[dict[str, list[Any]]] = {
        "aggr_mode": ["add"],
        "reg_weight": [0.1, 0.01, 1e-3, 1e-4, 1e-5],
        "lr": [0.1, 0.01, 1e-3, 1e-4, 1e-5],
    }

    def __init__(
        self,
        ctx: ModelContext,
        *,
        members: Sequence[Member],
        emb_dim: int = 64,
        seed: int = 0,
        aggr_mode: str = "add",
        n_mm_layers: int = 1,
        knn_k: int = 10,
        mm_image_weight: float = 0.1,
        n_layers: int = 2,
        k: int = 40,
        user_aggr_mode: str = "softmax",
        eval_from_last_batch: bool = True,
    ) -> None:
        super().__init__(ctx, members=members)
        assert ctx.image_feat is not None and ctx.text_feat is not None
        if aggr_mode != "add":
            raise ValueError(f"aggr_mode={aggr_mode!r}: only 'add' (MMRec's searched value) is implemented")
        if user_aggr_mode not in ("softmax", "mean"):
            raise ValueError(f"user_aggr_mode={user_aggr_mode!r} must be 'softmax' or 'mean'")
        if n_layers < 1 or k < 1 or knn_k < 1 or n_mm_layers < 0:
            raise ValueError(
                f"n_layers={n_layers}, k={k} and knn_k={knn_k} must be >= 1, n_mm_layers={n_mm_layers} >= 0"
            )
        if not 0.0 <= mm_image_weight <= 1.0:
            raise ValueError(f"mm_image_weight={mm_image_weight} must be in [0, 1]")
        R, d, U = self.n_members, emb_dim, ctx.n_users
        self.n_users, self.n_layers, self.n_mm_layers = U, n_layers, n_mm_layers
        self.user_aggr_mode, self.eval_from_last_batch = user_aggr_mode, eval_from_last_batch
        # MMRec's creation order: weight_u, then v_gcn (preference, MLP, MLP_1), then t_gcn
        self.weight_u = nn.Parameter(modality_weights(R, U))  # (R, U, 2)
        self.image_pref = nn.Parameter(stack_members(R, init_matrix(U, d, "xavier_normal")))  # (R, U, d)
        image_encoder = MemberMLP(R, [ctx.image_feat.shape[1], 4 * d, d], init="torch", bias_init="torch")
        self.text_pref = nn.Parameter(stack_members(R, init_matrix(U, d, "xavier_normal")))  # (R, U, d)
        text_encoder = MemberMLP(R, [ctx.text_feat.shape[1], 4 * d, d], init="torch", bias_init="torch")
        self.init_modalities(ctx, image_encoder, text_encoder)
        self.adjacency = ui_adjacency(ctx)  # (U + I)² D^-1/2 A D^-1/2, symmetric
        self.mm_graph, self.mm_graph_t = modality_knn_graph(ctx, knn_k=knn_k, image_weight=mm_image_weight)
        self.neighbours = first_k_neighbours(user_cooccurrence_graph(ctx), k)  # (U, k), (U, k), (U,) on the CPU
        self.generator = torch.Generator().manual_seed(seed)  # the padding draws, on the CPU
        # this epoch's W and Wᵀ; before the first start_epoch a sample from a generator of its own, so calling
        # loss() early does not shift the epochs' draws
        self.user_graph = self.draw_user_graph(torch.Generator().manual_seed(seed))
        # MMRec's result_embed: the last training batch's representations (not checkpointed: every epoch trains
        # before it evaluates; buffers so keep_members slices them)
        self.register_buffer("last_users", None, persistent=False)
        self.register_buffer("last_items", None, persistent=False)

    def start_epoch(self, epoch: int) -> None:
        self.refresh_projection(epoch)
        self.user_graph = self.draw_user_graph(self.generator)

    def draw_user_graph(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """MMRec's ``topk_sample``: a padded, weighted user-user matrix W ``(U, U)`` and its transpose."""
        W = sample_user_graph(
            *self.neighbours, mode=self.user_aggr_mode, generator=generator, device=self.adjacency.device
        )
        return W, transpose(W)

    def modality_gcns(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(v̂, t̂)``: MMRec's ``v_gcn``/``t_gcn`` outputs ``x + Âx + Â²x``, ``(R, U + I, d)`` each."""
        R = self.n_members
        V, T = self.modal_features()  # (R, I, d) each: φ_m, then CLEAR
        x = torch.cat([torch.cat([self.image_pref, V], 1), torch.cat([self.text_pref, T], 1)], 0)  # (2R, U + I, d)
        x = F.normalize(x, dim=-1)
        hop, total = x, x
        for _ in range(self.n_layers):
            hop = spmm(self.adjacency, hop)
            total = total + hop  # MMRec's h + x + h_1 (a + b is b + a in floating point)
        return total[:R], total[R:]

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(R, U, 2d)`` users and ``(R, I, 2d)`` items as MMRec's ``forward`` builds ``result_embed``."""
        U = self.n_users
        v_rep, t_rep = self.modality_gcns()
        user = torch.cat([v_rep[:, :U] * self.weight_u[..., :1], t_rep[:, :U] * self.weight_u[..., 1:]], -1)
        items = torch.cat([v_rep[:, U:], t_rep[:, U:]], -1)  # (R, I, 2d)
        h = items
        for _ in range(self.n_mm_layers):
            h = spmm(self.mm_graph, h, matrix_t=self.mm_graph_t)
        W, W_t = self.user_graph
        return user + spmm(W, user, matrix_t=W_t), items + h

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        user_all, item_all = self.representations()
        self.last_users, self.last_items = user_all.detach(), item_all.detach()
        u = user_all.index_select(1, users)  # (R, B, 2d)
        gap = scores(u, item_all.index_select(1, pos)) - scores(u, item_all.index_select(1, neg))  # (R, B)
        bpr = -batch_mean(torch.log2(torch.sigmoid(gap)))
        R = self.n_members
        prefs = batch_mean(self.image_pref.index_select(1, users).pow(2).reshape(R, -1)) + batch_mean(
            self.text_pref.index_select(1, users).pow(2).reshape(R, -1)
        )
        return bpr + self.reg_weight * prefs + self.reg_weight * batch_mean(self.weight_u.pow(2).reshape(R, -1))

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.eval_from_last_batch and self.last_users is not None:
            return self.last_users.float(), self.last_items.float()
        return self.representations()
