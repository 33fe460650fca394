"""A plain single-model PyTorch recommender (no member axis) searched by clear-tune, with CLEAR at its encoders.

FeatureMF is what a researcher would write anyway: an ``nn.Module`` with ``loss(users, pos, neg)`` and
``embeddings()``. clear-tune trains R trials of it as one group of R copies (weights stacked, batches, negatives
and evaluation shared), and ``clear_at`` names the two submodules whose outputs are the encoded item features, so
CLEAR's projection reaches it by forward hooks; the class attribute below is its default, a spec's ``clear_at``
overrides it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import clear_tune


@clear_tune.register_backbone(name="feature_mf")
class FeatureMF(nn.Module):
    uses_features = True
    clear_at = {"image": "image_encoder", "text": "text_encoder"}

    def __init__(self, ctx, *, emb_dim: int = 64, reg_weight: float = 1e-4, dropout: float = 0.0) -> None:
        super().__init__()
        self.reg_weight = reg_weight
        self.user = nn.Embedding(ctx.n_users, emb_dim)
        self.item = nn.Embedding(ctx.n_items, emb_dim)
        nn.init.xavier_uniform_(self.user.weight)
        nn.init.xavier_uniform_(self.item.weight)
        self.image_encoder = nn.Linear(ctx.image_feat.shape[1], emb_dim)
        self.text_encoder = nn.Linear(ctx.text_feat.shape[1], emb_dim)
        self.dropout = nn.Dropout(dropout)
        self.image_feat, self.text_feat = ctx.image_feat, ctx.text_feat  # (N, d_v), (N, d_t): data, not weights

    def item_table(self) -> torch.Tensor:
        content = self.image_encoder(self.image_feat) + self.text_encoder(self.text_feat)  # (N, d)
        return self.item.weight + self.dropout(content)

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        items = self.item_table()
        u, i_pos, i_neg = self.user(users), items[pos], items[neg]  # (B, d) each
        bpr = -F.logsigmoid((u * (i_pos - i_neg)).sum(1)).mean()
        return bpr + self.reg_weight * (u.pow(2).sum() + i_pos.pow(2).sum() + i_neg.pow(2).sum()) / users.numel()

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user.weight, self.item_table()
