"""GRCN (Wei et al., ACM MM 2020) as MMRec's ``GRCN``: the user-item graph refined per step by attention over
each modality's content, then an ID GCN over the refined (pruned, re-weighted) edges.

MMRec's form, point by point (``src/models/grcn.py``; ``aggr_mode='add'``, ``weight_mode='confid'``,
``fusion_mode='concat'``, ``has_norm=True``, ``has_act=False``, edge dropout 0, ``pruning=True``):

* graph: MMRec's ``edge_index`` holds each train edge once, ``user → item + M``; the GCN layers use both
  directions (``cat(edge_index, edge_index[[1, 0]])``), no self loops
  (:func:`~clear_tune.models._graph_cache.ui_edge_list`, kept sorted by target);
* content branch per modality m (``CGCN``): ``f = normalize(lrelu(MLP_m(raw_m)))`` over the N items,
  ``p = normalize(P_m)`` over the M users; ``n_layers`` "routing" rounds
  ``p = normalize(p + GAT(x = [p ; f])[:M])`` over the ONE-directional ``edge_index``, then
  ``c_m = x + GAT(x)`` over both directions with ``x = [p ; f]``. ``GAT`` is MMRec's ``GATConv``:
  ``α_e = softmax_{e → i}(<x_i, x_j>)`` (PyG's ``softmax``: max-shifted, ``+ 1e-16``), ``Σ_e α_e x_j``
  (:func:`~clear_tune.graphs.segment_softmax`, :func:`~clear_tune.graphs.edge_sum`);
* MMRec's routing changes nothing but a re-normalisation: PyG aggregates at ``edge_index[1]``, the items,
  so the user rows of its output are zero. Here the zero messages are skipped (same values);
  ``route_to_users: true`` sends them item → user instead, the routing the GRCN paper describes;
* refined weights (``confid``): per directed edge ``j → i``, ``w = relu(max_m α_m · conf[j, m])`` with
  ``conf`` a learned ``(M + N) × 2`` table (``mean``: ``(α_v + α_t) / 2``; ``max``: ``max_m α_m``);
* ID branch (``EGCN``): ``x = normalize(E_id)``, ``h₁ = Σ w x_j``, ``h₂ = Σ w h₁_j`` (``aggr='add'``),
  ``e = x + h₁ + h₂``; representation ``[e ; c_v ; c_t]`` (``fusion_mode='concat'``; ``'id'``: ``e``);
* loss ``-mean(log σ(s⁺ − s⁻))`` (``torch.log(torch.sigmoid)``, no epsilon) plus ``reg_weight ·
  (mean(E_id[u]² + E_id[i]²) over the 2B (u, i) pairs + mean(P_v²) + mean(P_v[u]²) + mean(P_t[u]²))``
  (the un-normalised tables; ``conf``'s own term is computed by MMRec but never added);
* trained, as MMRec: ``E_id``, ``P_v``, ``P_t``, ``conf`` (all ``xavier_normal_``) and both ``MLP`` layers
  (weights ``xavier_normal_``, biases ``nn.Linear``'s);
* evaluation: MMRec's ``full_sort_predict`` reads ``self.result``, the representation of the LAST
  training batch's forward (before that batch's Adam step); :meth:`embeddings` returns the same
  (``fresh_eval: true`` recomputes it with the current weights).

Where CLEAR enters: at the content features the graph layers read, ``φ_m(raw) = lrelu(MLP_m(raw))``
(``latent_embedding``-wide for both modalities, 64 by default), before ``normalize``: ``f = normalize(φ_m P_m)``.

Options: ``n_layers`` (3, the routing rounds), ``latent_embedding`` (64), ``weight_mode`` (``"confid"``,
``"mean"``, ``"max"``), ``fusion_mode`` (``"concat"``, ``"id"``), ``pruning`` (true), ``route_to_users``
(false), ``fresh_eval`` (false). MMRec's grid: ``reg_weight`` ∈ {0.1, 0.01, 1e-3, 1e-4, 1e-5},
``learning_rate`` ∈ {1, 0.1, 0.01, 1e-3, 1e-4}.

Example:
    >>> import torch
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.models import ModelContext, build_model
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 3, 0]), torch.randn(4, 10),
    ...                    torch.randn(4, 6), torch.device("cpu"))
    >>> model = build_model(TrainConfig(backbone="grcn", emb_dim=8, projection={"k": 2},
    ...                                 model_options={"latent_embedding": 4}), ctx)
    >>> model.start_epoch(1)
    >>> bool(model.loss(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([3, 3])) > 0)
    True
    >>> [e.shape for e in model.embeddings()]      # [ID part 8 ; image 4 ; text 4]
    [torch.Size([1, 3, 16]), torch.Size([1, 4, 16])]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from clear_tune.graphs import edge_sum, segment_softmax
from clear_tune.models import _losses as L
from clear_tune.models._base import Member, ModelContext
from clear_tune.models._features import FeatureBackbone
from clear_tune.models._graph_cache import ui_edge_list
from clear_tune.models._layers import MemberEmbedding, MemberLinear
from clear_tune.models._registry import register_backbone


class _Content(nn.Module):
    """``lrelu(MLP(raw))``: GRCN's content encoder (``CGCN.MLP`` followed by its ``leaky_relu``)."""

    def __init__(self, members: int, d_in: int, d_out: int) -> None:
        super().__init__()
        self.d_in, self.d_out = d_in, d_out
        self.linear = MemberLinear(members, d_in, d_out, init="xavier_normal", bias_init="torch")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.linear(x))


@register_backbone
class GRCN(FeatureBackbone):
    name = "grcn"
    default_reg_weight = 1e-4
    mmrec_grid: ClassVar[dict[str, list[Any]]] = {
        "reg_weight": [0.1, 0.01, 1e-3, 1e-4, 1e-5],
        "lr": [1.0, 0.1, 0.01, 1e-3, 1e-4],
    }

    def __init__(
        self,
        ctx: ModelContext,
        *,
        members: Sequence[Member],
        emb_dim: int = 64,
        seed: int = 0,
        n_layers: int = 3,
        latent_embedding: int = 64,
        weight_mode: str = "confid",
        fusion_mode: str = "concat",
        pruning: bool = True,
        route_to_users: bool = False,
        fresh_eval: bool = False,
    ) -> None:
        super().__init__(ctx, members=members)
        assert ctx.image_feat is not None and ctx.text_feat is not None
        if weight_mode not in ("confid", "mean", "max") or fusion_mode not in ("concat", "id"):
            raise ValueError(
                f"weight_mode={weight_mode!r} must be confid/mean/max and fusion_mode={fusion_mode!r} concat/id"
            )
        if n_layers < 0:
            raise ValueError(f"n_layers={n_layers} must be >= 0")
        R, d_c = self.n_members, latent_embedding
        self.n_users, self.n_routing, self.route_to_users = ctx.n_users, n_layers, route_to_users
        self.weight_mode, self.fusion_mode, self.pruning, self.fresh_eval = (
            weight_mode,
            fusion_mode,
            pruning,
            fresh_eval,
        )
        self.edges = ui_edge_list(ctx)  # 2E directed edges over [users | items], sorted by target
        n_train = ctx.train_users.numel()
        self.undirected = self.edges.order % n_train  # (2E,): the train edge of each directed one
        self.edge_users, self.edge_items = ctx.train_users, ctx.train_items + ctx.n_users  # (E,) node ids
        self.init_modalities(ctx, _Content(R, ctx.image_feat.shape[1], d_c), _Content(R, ctx.text_feat.shape[1], d_c))
        self.id_embedding = MemberEmbedding(R, ctx.n_users + ctx.n_items, emb_dim, init="xavier_normal")
        self.image_preference = MemberEmbedding(R, ctx.n_users, d_c, init="xavier_normal")
        self.text_preference = MemberEmbedding(R, ctx.n_users, d_c, init="xavier_normal")
        self.confidence = MemberEmbedding(R, ctx.n_users + ctx.n_items, 2, init="xavier_normal")  # model_specific_conf
        self.register_buffer("result", None, persistent=False)  # (R, M + N, D): the last batch's representation

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        """``α (R, 2E)``: per-target softmax of ``<x_i, x_j>`` over the directed edges, for ``x (R, M + N, d)``."""
        # the score of an edge and of its reverse are the same dot product: compute it once per train edge
        scores = (x.index_select(1, self.edge_users) * x.index_select(1, self.edge_items)).sum(-1)  # (R, E)
        return segment_softmax(self.edges, scores.index_select(1, self.undirected))

    def _content(self, preference: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MMRec's ``CGCN`` on ``P (R, M, d_c)`` and ``φ(raw) P_m (R, N, d_c)``: ``(c (R, M + N, d_c), α (R, 2E))``."""
        features, preference = F.normalize(features, dim=-1), F.normalize(preference, dim=-1)
        for _ in range(self.n_routing):
            if self.route_to_users:  # items → users: the routing of the GRCN paper
                x = torch.cat([preference, features], dim=1)
                preference = preference + edge_sum(self.edges, self._attention(x), x)[:, : self.n_users]
            preference = F.normalize(preference, dim=-1)  # MMRec: users receive no message, only this
        x = torch.cat([preference, features], dim=1)  # (R, M + N, d_c)
        alpha = self._attention(x)
        return x + edge_sum(self.edges, alpha, x), alpha

    def forward(self) -> torch.Tensor:
        """The representation of all ``M + N`` nodes: ``(R, M + N, D)``."""
        V, T = self.modal_features()  # (R, N, d_c) each: φ_v(v) P_v, φ_t(t) P_t
        c_v, alpha_v = self._content(self.image_preference.weight, V)
        c_t, alpha_t = self._content(self.text_preference.weight, T)
        if self.weight_mode == "confid":
            conf = self.confidence.weight.index_select(1, self.edges.src)  # (R, 2E, 2): of each edge's source
            weight = torch.stack([alpha_v * conf[..., 0], alpha_t * conf[..., 1]], dim=-1).max(dim=-1).values
        elif self.weight_mode == "max":
            weight = torch.stack([alpha_v, alpha_t], dim=-1).max(dim=-1).values
        else:
            weight = (alpha_v + alpha_t) / 2
        if self.pruning:
            weight = torch.relu(weight)  # (R, 2E)
        x = F.normalize(self.id_embedding.weight, dim=-1)  # (R, M + N, d)
        h1 = edge_sum(self.edges, weight, x)
        e = x + h1 + edge_sum(self.edges, weight, h1)
        return torch.cat([e, c_v, c_t], dim=-1) if self.fusion_mode == "concat" else e

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        rep = self.forward()  # (R, M + N, D)
        self.result = rep.detach().float()
        pos, neg = pos + self.n_users, neg + self.n_users
        u = rep.index_select(1, users)
        main = L.log_sigmoid_bpr(L.scores(u, rep.index_select(1, pos)), L.scores(u, rep.index_select(1, neg)))
        reg = L.pair_mean_square(self.id_embedding(users), self.id_embedding(pos), self.id_embedding(neg))
        P_v = self.image_preference.weight
        reg = reg + L.squared_norm(P_v) / P_v[0].numel()  # mean(P_v²) over all users
        for table in (self.image_preference, self.text_preference):  # mean(P[u]²) over the batch's users
            rows = table(users)
            reg = reg + L.squared_norm(rows) / rows[0].numel()
        return main + self.reg_weight * reg

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        rep = self.forward() if self.fresh_eval or self.result is None else self.result
        return rep[:, : self.n_users], rep[:, self.n_users :]
