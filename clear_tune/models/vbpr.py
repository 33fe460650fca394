"""VBPR (He & McAuley, AAAI 2016) with CLEAR's projection between its feature encoders and the scorer.

    score(u, i) = β_i + β'ᵀ f_i + γ_uᵀ γ_i + θ_uᵀ c_i,     c_i = [φ_v(v_i) P_v ; φ_t(t_i) P_t]

Choices (and how they differ from MMRec's VBPR, which uses one ``Linear`` over ``concat(v, t)`` and
drops both biases):

* one encoder per modality, ``φ_v = Linear(d_v → d)`` and ``φ_t = Linear(d_t → d)``, so CLEAR can project
  (φ_v(V), φ_t(T)); the content embedding c_i is their concatenation (2d), θ_u has 2d entries;
* the item bias β_i and the feature bias β'ᵀ f_i = β'_vᵀ v_i + β'_tᵀ t_i (on the raw features, as in the
  paper) are kept; they are folded into the embeddings so scoring stays an inner product: the user gets a
  constant-1 column and the item the column ``β_i + β'ᵀ f_i``. The global offset and β_u cancel in BPR
  and ranking and are left out;
* Xavier init for γ, θ and the encoders; biases start at zero;
* L2 term ``reg · ½(‖γ_u‖² + ‖θ_u‖² + ‖γ_i±‖² + β_i±²) / B`` on the batch rows (encoder weights are not
  decayed);
* speed, same values: BPR reads only score differences and every item term is affine in the raw
  features, so the loss encodes ``V_raw[i+] − V_raw[i−]`` once (B rows) instead of both items; all items
  are encoded for evaluation and, under ``no_grad``, for a projection refresh.

Example:
    >>> import torch
    >>> from clear_tune.models import VBPR
    >>> from clear_tune.models._base import ModelContext
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), torch.randn(4, 10),
    ...                    torch.randn(4, 6), torch.device("cpu"))
    >>> users, items = VBPR(ctx, emb_dim=8).embeddings()
    >>> users.shape, items.shape  # d (γ) + 2d (θ / content) + 1 (bias)
    (torch.Size([3, 25]), torch.Size([4, 25]))
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from clear_tune.config import ProjectionConfig
from clear_tune.models._base import ModelContext
from clear_tune.models._common import FeatureBackbone, l2_per_row, xavier_embedding, xavier_linear


class VBPR(FeatureBackbone):
    name = "vbpr"
    default_reg_weight = 1e-4
    options: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        ctx: ModelContext,
        *,
        emb_dim: int = 64,
        reg_weight: float = 1e-4,
        projection: ProjectionConfig | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        assert ctx.image_feat is not None and ctx.text_feat is not None
        d, d_v, d_t = emb_dim, ctx.image_feat.shape[1], ctx.text_feat.shape[1]
        self.reg_weight = reg_weight
        self.user_gamma = xavier_embedding(ctx.n_users, d)
        self.user_theta = xavier_embedding(ctx.n_users, 2 * d)
        self.item_gamma = xavier_embedding(ctx.n_items, d)
        self.item_bias = nn.Embedding(ctx.n_items, 1)
        nn.init.zeros_(self.item_bias.weight)
        self.image_bias = nn.Linear(d_v, 1, bias=False)  # β'_v
        self.text_bias = nn.Linear(d_t, 1, bias=False)  # β'_t
        nn.init.zeros_(self.image_bias.weight)
        nn.init.zeros_(self.text_bias.weight)
        self.init_modalities(
            ctx, xavier_linear(d_v, d), xavier_linear(d_t, d), projection=projection or ProjectionConfig(mode="off")
        )

    def item_vectors(self, items: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(γ_i (n, d), c_i (n, 2d), bias_i (n, 1))`` for ``items`` (all when ``None``)."""
        ids = slice(None) if items is None else items
        V, T = self.modal_features(items)  # (n, d) each, projected
        bias = self.item_bias.weight[ids] + self.image_bias(self.image_feat[ids]) + self.text_bias(self.text_feat[ids])
        return self.item_gamma.weight[ids], torch.cat([V, T], dim=1), bias

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        # BPR reads only score(u, i+) − score(u, i−), and every item term is affine in the raw features,
        # so we work with differences of item rows: one B × d_raw product per modality (same values).
        gamma_u, theta_u = self.user_gamma(users), self.user_theta(users)  # (B, d), (B, 2d)
        gamma_pos, gamma_neg = self.item_gamma(pos), self.item_gamma(neg)  # (B, d) each
        bias_pos, bias_neg = self.item_bias(pos), self.item_bias(neg)  # (B, 1) each
        image_raw_gap, text_raw_gap = self.raw_gaps(pos, neg)  # (B, d_v), (B, d_t)
        image_gap, text_gap = self.encode_gaps(image_raw_gap, text_raw_gap)  # (B, d) each, projected
        score_gap = (
            (gamma_u * (gamma_pos - gamma_neg)).sum(1)
            + (theta_u * torch.cat([image_gap, text_gap], dim=1)).sum(1)
            + (bias_pos - bias_neg + self.image_bias(image_raw_gap) + self.text_bias(text_raw_gap)).squeeze(1)
        )  # (B,)
        reg = l2_per_row(gamma_u, theta_u, gamma_pos, gamma_neg, bias_pos, bias_neg)
        return -F.logsigmoid(score_gap).mean() + self.reg_weight * reg

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        ones = torch.ones(self.user_gamma.num_embeddings, 1, device=self.user_gamma.weight.device)
        users = torch.cat([self.user_gamma.weight, self.user_theta.weight, ones], dim=1)  # (M, 3d + 1)
        items = torch.cat(self.item_vectors(), dim=1)  # (N, 3d + 1)
        return users, items
