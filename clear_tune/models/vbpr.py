"""VBPR (He & McAuley, AAAI 2016) as MMRec's ``VBPR``, with CLEAR's projection on each modality's share.

MMRec's VBPR has no biases: item i is ``e_i = [γ_i ; W [t_i ; v_i] + b]`` (ID part ``d``, content part
``d`` from ONE linear layer over the concatenated text and image features), user u is ``θ_u`` of width
``2d``, and ``score(u, i) = <θ_u, e_i>``. The loss is MMRec's ``BPRLoss`` plus ``reg_weight`` times its
``EmbLoss`` over the batch rows ``(‖θ_U‖_F + ‖e_I+‖_F + ‖e_I−‖_F) / B`` (the content part included, so
the regulariser also reaches the linear layer).

Where CLEAR enters: a linear layer over ``[t; v]`` is the sum of one linear map per modality,
``W [t; v] = W_t t + W_v v``, so the encoders are ``φ_t(t) = W_t t`` and ``φ_v(v) = W_v v`` and the content
part is ``φ_v(v) P_v + φ_t(t) P_t + b``. With the projection off (or λ = 0) that is MMRec's layer exactly,
drawn the same way: one ``xavier_normal_`` matrix over ``d × (d_t + d_v)`` split by columns, bias 0; the
tables ``θ`` and ``γ`` are ``xavier_uniform_`` as in MMRec.

Speed, same values: MMRec encodes all N items in every batch; the loss here encodes only the distinct
items of the batch (positives and negatives), and evaluation encodes all items once.
MMRec's grid: ``reg_weight`` ∈ {2, 1, 0.1, 0.01, 1e-3, 1e-4, 1e-5}.

Example:
    >>> import torch
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.models import ModelContext, build_model
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), torch.randn(4, 10),
    ...                    torch.randn(4, 6), torch.device("cpu"))
    >>> users, items = build_model(TrainConfig(backbone="vbpr", projection={"k": 2}, emb_dim=8), ctx).embeddings()
    >>> users.shape, items.shape  # 2d: ID part + content part
    (torch.Size([1, 3, 16]), torch.Size([1, 4, 16]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from clear_tune.models import _losses as L
from clear_tune.models._base import Member, ModelContext
from clear_tune.models._features import FeatureBackbone
from clear_tune.models._layers import MemberEmbedding, MemberLinear, init_matrix, stack_members
from clear_tune.models._registry import register_backbone


@register_backbone
class VBPR(FeatureBackbone):
    name = "vbpr"
    default_reg_weight = 1e-4
    mmrec_grid: ClassVar[dict[str, list[Any]]] = {"reg_weight": [2.0, 1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5]}

    def __init__(self, ctx: ModelContext, *, members: Sequence[Member], emb_dim: int = 64, seed: int = 0) -> None:
        super().__init__(ctx, members=members)
        assert ctx.image_feat is not None and ctx.text_feat is not None
        R, d, d_v, d_t = self.n_members, emb_dim, ctx.image_feat.shape[1], ctx.text_feat.shape[1]
        self.user_theta = MemberEmbedding(R, ctx.n_users, 2 * d)
        self.item_gamma = MemberEmbedding(R, ctx.n_items, d)
        W = init_matrix(d, d_t + d_v, "xavier_normal")  # MMRec's item_linear over [text; image]
        text_encoder, image_encoder = MemberLinear(R, d_t, d, bias=False), MemberLinear(R, d_v, d, bias=False)
        with torch.no_grad():
            text_encoder.weight.copy_(stack_members(R, W[:, :d_t].T))
            image_encoder.weight.copy_(stack_members(R, W[:, d_t:].T))
        self.content_bias = nn.Parameter(torch.zeros(R, d))  # b
        self.init_modalities(ctx, image_encoder, text_encoder)

    def content(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """``φ_v(v_i) P_v + φ_t(t_i) P_t + b`` for ``items`` (all when ``None``): ``(R, n, d)``."""
        V, T = self.modal_features(items)
        return V + T + self.content_bias.unsqueeze(1)

    def item_rows(self, items: torch.Tensor) -> torch.Tensor:
        """``e_i = [γ_i ; content_i]`` for ``items``: ``(R, n, 2d)``, encoding each distinct item once."""
        distinct, where = torch.unique(items, return_inverse=True)
        content = self.content(distinct).index_select(1, where)
        return torch.cat([self.item_gamma(items), content], dim=2)

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        theta_u = self.user_theta(users)  # (R, B, 2d)
        e_pos, e_neg = self.item_rows(torch.cat([pos, neg])).split(pos.numel(), dim=1)  # (R, B, 2d) each
        main = L.mmrec_bpr(L.scores(theta_u, e_pos), L.scores(theta_u, e_neg))
        return main + self.reg_weight * L.emb_norm(theta_u, e_pos, e_neg)

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        items = torch.cat([self.item_gamma.weight, self.content()], dim=2)  # (R, N, 2d)
        return self.user_theta.weight, items
