"""A native clear-tune backbone in a file of its own: a model ARRAY that fuses, with CLEAR through FeatureBackbone.

VisualMF scores ``<θ_u, γ_i + Ṽ_i + T̃_i>``: an ID table plus the two projected feature encoders. Every parameter
carries the member axis first (``R`` members: one per trial of a fused group), so a whole λ × k grid trains as one
model. Run it::

    python -m clear_tune.run examples/own_model.yaml                 # with the two other kinds of own model
    python -c "from clear_tune.testing import check_backbone; import sys; sys.path.insert(0, 'examples'); \\
               import native_backbone; print(check_backbone(native_backbone.VisualMF))"

The options (``reg_form``, ``init``) are the constructor's keyword-only parameters after ``emb_dim`` and ``seed``:
their defaults and types are read from this signature (``model_options: {reg_form: half_square}`` in a spec).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

import clear_tune
from clear_tune.models import FeatureBackbone, Member, MemberEmbedding, MemberLinear, ModelContext, losses


@clear_tune.register_backbone
class VisualMF(FeatureBackbone):
    name = "visual_mf"
    default_reg_weight = 1e-4
    mmrec_grid = {"reg_weight": [1e-4, 1e-3]}  # what `preset: mmrec` searches for it

    def __init__(
        self,
        ctx: ModelContext,
        *,
        members: Sequence[Member],
        emb_dim: int = 64,
        seed: int = 0,
        reg_form: Literal["emb_loss", "half_square"] = "emb_loss",
        init: Literal["xavier_uniform", "xavier_normal"] = "xavier_uniform",
    ) -> None:
        super().__init__(ctx, members=members)
        assert ctx.image_feat is not None and ctx.text_feat is not None
        R = self.n_members
        self.reg_form = reg_form
        self.user = MemberEmbedding(R, ctx.n_users, emb_dim, init=init)  # (R, n_users, d)
        self.item = MemberEmbedding(R, ctx.n_items, emb_dim, init=init)  # (R, n_items, d)
        image_encoder = MemberLinear(R, ctx.image_feat.shape[1], emb_dim)  # φ_v: (N, d_v) -> (R, N, d)
        text_encoder = MemberLinear(R, ctx.text_feat.shape[1], emb_dim)  # φ_t: (N, d_t) -> (R, N, d)
        self.init_modalities(ctx, image_encoder, text_encoder)  # CLEAR acts on their outputs

    def item_rows(self, items: torch.Tensor) -> torch.Tensor:
        V, T = self.modal_features(items)  # projected Ṽ, T̃ rows: (R, B, d) each
        return self.item(items) + V + T

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        u, i_pos, i_neg = self.user(users), self.item_rows(pos), self.item_rows(neg)  # (R, B, d) each
        main = losses.mmrec_bpr(losses.scores(u, i_pos), losses.scores(u, i_neg))  # (R,)
        reg = losses.emb_norm(u, i_pos, i_neg) if self.reg_form == "emb_loss" else losses.half_square(u, i_pos, i_neg)
        return main + self.reg_weight * reg

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        V, T = self.modal_features()  # (R, N, d) each
        return self.user.weight, self.item.weight + V + T
