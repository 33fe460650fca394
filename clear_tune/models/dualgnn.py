"""DualGNN (Wang et al., IEEE TMM 2021) as MMRec's ``DualGNN``: per-modality GCNs over the user-item graph,
fused per user, plus a sampled user-user co-occurrence graph.

MMRec's form, point by point:

* per modality m ∈ {v, t}: item features ``φ_m(x) = MLP_1(leaky_relu(MLP(x)))`` (``nn.Linear(d_raw, 4d)``
  then ``nn.Linear(4d, d)``, both with ``nn.Linear``'s own initialisation and bias, slope 0.01) over the
  FROZEN raw features (MMRec reads ``self.v_feat`` directly); a user preference table ``P_m`` (``U × d``,
  ``xavier_normal_``); ``x_m = normalize([P_m; φ_m])`` (rows to unit L2 norm, eps 1e-12);
  ``x̂_m = x_m + Â x_m + Â² x_m`` with Â = D^-1/2 A D^-1/2 the train graph without self loops (PyG's
  ``Base_gcn`` with ``aggr='add'``: ``deg(row)^-1/2 · deg(col)^-1/2`` per edge);
* MMRec adds the text output into the image output IN PLACE (``representation += t_rep``), so its
  "image" user part is ``v + t``: users ``u = w_u0 (v̂_u + t̂_u) + w_u1 t̂_u`` with ``weight_u`` ``U × 2``
  (``xavier_normal_`` over ``(U, 2, 1)`` then a softmax over the two modalities at init, trained freely
  afterwards); items ``i = v̂_i + t̂_i``;
* user graph: every epoch (``start_epoch``, MMRec's ``pre_epoch_processing``/``topk_sample``) each user
  takes its first ``k`` = 40 co-occurrence neighbours (:func:`~clear_tune.graphs.user_cooccurrence`, exactly
  MMRec's ``user_graph_dict.npy``), a user with fewer is padded by random repeats (this model's CPU
  generator), weights = softmax of the counts (``user_aggr_mode``); ``u ← u + Σ_v W[u, v] u_v``;
* loss: ``−mean(log2 σ(s⁺ − s⁻))`` (log base 2, no epsilon, as written) + ``reg_weight · (mean(P_v[U]²) +
  mean(P_t[U]²) + mean(weight_u²) + mean(weight_i²))`` (means over all entries; ``weight_i`` ``I × 2``
  exists only in this term, kept so the loss is MMRec's number);
* evaluation: MMRec's ``full_sort_predict`` scores with ``result_embed``, the representations its LAST
  training batch computed (before that batch's optimizer step). ``eval_from_last_batch`` (default) keeps
  those; false recomputes them from the final weights;
* not in the math, as in MMRec: the edge dropout (``edge_index_dropv``/``dropt``, drop_rate 0.1) is built
  once in ``__init__`` and passed to the GCN, which never reads it (it propagates over the full graph); the
  GCN's ``dropout``, ``MLP_v``, ``MLP_t``, ``MLP_user`` are unused; the yaml's ``n_layers`` is unread (the
  GCN hard-codes two hops, our ``n_layers`` default).

Where CLEAR enters: the encoder is the GCN's MLP, ``φ_m`` above; its ``(R, I, d)`` outputs are projected
before they are concatenated with the preferences and normalised.

Options: ``aggr_mode`` ("add", the only value MMRec searches and the only one here), ``n_layers`` (2: the
GCN hops), ``k`` (40), ``user_aggr_mode`` ("softmax" or "mean"), ``eval_from_last_batch`` (true).
MMRec's grid: ``aggr_mode`` ∈ {add}, ``lr`` and ``reg_weight`` ∈ {0.1, 0.01, 1e-3, 1e-4, 1e-5}.

Example:
    >>> import torch
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.models import ModelContext, build_model
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 3, 2]), torch.randn(4, 10),
    ...                    torch.randn(4, 6), torch.device("cpu"))
    >>> model = build_model(TrainConfig(backbone="dualgnn", emb_dim=8, projection={"k": 2}), ctx)
    >>> model.start_epoch(1)
    >>> bool(model.loss(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([3, 0])) > 0)
    True
    >>> [e.shape for e in model.embeddings()]
    [torch.Size([1, 3, 8]), torch.Size([1, 4, 8])]
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
from clear_tune.models._graph_cache import ui_adjacency, user_cooccurrence_graph
from clear_tune.models._layers import MemberLinear, init_matrix, stack_members
from clear_tune.models._losses import batch_mean, scores
from clear_tune.models._registry import register_backbone


class _GCNEncoder(nn.Sequential):
    """MMRec's ``MLP_1(leaky_relu(MLP(x)))``, ``d_raw → 4d → d``, ``nn.Linear``'s initialisation: ``(R, n, d)``."""

    def __init__(self, members: int, d_raw: int, d: int) -> None:
        super().__init__(
            MemberLinear(members, d_raw, 4 * d, init="torch", bias_init="torch"),
            nn.LeakyReLU(),
            MemberLinear(members, 4 * d, d, init="torch", bias_init="torch"),
        )
        self.d_in, self.d_out = d_raw, d


def _modality_weights(members: int, rows: int) -> torch.Tensor:
    """``(R, rows, 2)``: ``xavier_normal_`` on a ``(rows, 2, 1)`` tensor (fan_in 2, fan_out rows), softmax over 2."""
    weight = torch.empty(rows, 2, 1)
    nn.init.xavier_normal_(weight)
    return stack_members(members, torch.softmax(weight, dim=1).squeeze(2))


@register_backbone
class DualGNN(FeatureBackbone):
    name = "dualgnn"
    default_reg_weight = 1e-4
    mmrec_grid: ClassVar[dict[str, list[Any]]] = {
        "aggr_mode": ["add"],
        "lr": [0.1, 0.01, 1e-3, 1e-4, 1e-5],
        "reg_weight": [0.1, 0.01, 1e-3, 1e-4, 1e-5],
    }

    def __init__(
        self,
        ctx: ModelContext,
        *,
        members: Sequence[Member],
        emb_dim: int = 64,
        seed: int = 0,
        aggr_mode: str = "add",
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
        if n_layers < 1 or k < 1:
            raise ValueError(f"n_layers={n_layers} and k={k} must be >= 1")
        R, d = self.n_members, emb_dim
        self.n_users, self.n_layers, self.user_aggr_mode = ctx.n_users, n_layers, user_aggr_mode
        self.eval_from_last_batch = eval_from_last_batch
        self.init_modalities(ctx, _GCNEncoder(R, ctx.image_feat.shape[1], d), _GCNEncoder(R, ctx.text_feat.shape[1], d))
        self.image_pref = nn.Parameter(stack_members(R, init_matrix(ctx.n_users, d, "xavier_normal")))  # (R, U, d)
        self.text_pref = nn.Parameter(stack_members(R, init_matrix(ctx.n_users, d, "xavier_normal")))  # (R, U, d)
        self.weight_u = nn.Parameter(_modality_weights(R, ctx.n_users))  # (R, U, 2)
        self.weight_i = nn.Parameter(_modality_weights(R, ctx.n_items))  # (R, I, 2): only in the regulariser
        self.adjacency = ui_adjacency(ctx)  # (U + I)² D^-1/2 A D^-1/2, symmetric
        self.neighbours = first_k_neighbours(user_cooccurrence_graph(ctx), k)  # (U, k), (U, k), (U,) on the CPU
        self.generator = torch.Generator().manual_seed(seed)  # the padding draws, on the CPU
        # this epoch's W and Wᵀ; before the first start_epoch a sample from a generator of its own, so
        # calling loss() early does not shift the epochs' draws
        self.user_graph = self.draw_user_graph(torch.Generator().manual_seed(seed))
        # MMRec's result_embed: the last training batch's representations (not checkpointed: every epoch
        # trains before it evaluates; buffers so keep_members slices them)
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

    def representations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(R, U, d)`` users and ``(R, I, d)`` items as MMRec's ``forward`` builds ``result_embed``."""
        R, U = self.n_members, self.n_users
        V, T = self.modal_features()  # (R, I, d) each: φ_m, then CLEAR
        x = torch.cat([torch.cat([self.image_pref, V], 1), torch.cat([self.text_pref, T], 1)], 0)  # (2R, U + I, d)
        x = F.normalize(x, dim=-1)
        hops = [x]
        for _ in range(self.n_layers):
            hops.append(spmm(self.adjacency, hops[-1]))
        total = hops[1] + x  # MMRec's h + x + h_1
        for hop in hops[2:]:
            total = total + hop
        v_rep, t_rep = total[:R], total[R:]  # (R, U + I, d) each
        vt_rep = v_rep + t_rep  # MMRec's in-place `representation += t_rep`: its v_rep is v + t from here on
        user = vt_rep[:, :U] * self.weight_u[..., :1] + t_rep[:, :U] * self.weight_u[..., 1:]  # (R, U, d)
        W, W_t = self.user_graph
        user = user + spmm(W, user, matrix_t=W_t)
        return user, vt_rep[:, U:]

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        user_all, item_all = self.representations()
        self.last_users, self.last_items = user_all.detach(), item_all.detach()
        u = user_all.index_select(1, users)  # (R, B, d)
        gap = scores(u, item_all.index_select(1, pos)) - scores(u, item_all.index_select(1, neg))  # (R, B)
        bpr = -batch_mean(torch.log2(torch.sigmoid(gap)))
        R = self.n_members
        reg = (
            batch_mean(self.image_pref.index_select(1, users).pow(2).reshape(R, -1))
            + batch_mean(self.text_pref.index_select(1, users).pow(2).reshape(R, -1))
            + batch_mean(self.weight_u.pow(2).reshape(R, -1))
            + batch_mean(self.weight_i.pow(2).reshape(R, -1))
        )
        return bpr + self.reg_weight * reg

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.eval_from_last_batch and self.last_users is not None:
            return self.last_users.float(), self.last_items.float()
        return self.representations()
