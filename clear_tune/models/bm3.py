"""BM3 (Zhou et al., WWW 2023) as MMRec's ``BM3``: self-supervised bootstrap of user, item and modality
views, no negative sampling.

MMRec's form, point by point:

* online graph view: LightGCN over the symmetric-normalised train graph (mean of ``n_layers + 1`` layers,
  :func:`~clear_tune.models._graph_cache.ui_adjacency`), items ``i_g + E_I`` (the ID table added back):
  ``u_o, i_o`` ``(M, d), (N, d)``; modality views ``T = text_trs(t)``, ``V = image_trs(v)``;
* target views: ``F.dropout(·, dropout)`` of DETACHED copies of ``u_o, i_o, T, V``, a fresh mask every
  batch. Masks come from this model's CPU generator, shared by all members; only the rows a batch reads
  get a mask, one per distinct user or item (a row read twice gets the same mask, as when MMRec drops
  the whole matrix);
* ``predictor`` = one ``Linear(d, d)`` shared by all views; with ``B`` = the batch's (user, positive) pairs
  and ``c(a, b) = 1 − mean_B cos(a, b)``: loss = ``c(p(u_o), ī) + c(p(i_o), ū) + reg_weight · EmbLoss(u_o,
  i_o) + cl_weight · (c(p(T), ī) + c(p(V), ī) + c(p(T), T̄) + c(p(V), V̄))`` with bars the target rows;
  MMRec's ``EmbLoss`` here is over the FULL matrices, ``(‖u_o‖_F + ‖i_o‖_F) / N``. The trainer's negatives
  are ignored (MMRec sets ``use_neg_sampling: False``);
* initialisation as MMRec: ID tables ``xavier_uniform_``; ``predictor``, ``image_trs``, ``text_trs``
  weights ``xavier_normal_``, biases ``nn.Linear``'s own uniform(±1/√d_in); the raw features are trained
  (``train_raw_features``, default true: MMRec wraps them in ``nn.Embedding.from_pretrained(...,
  freeze=False)``);
* evaluation: MMRec scores ``predictor(u_o) · predictor(i_o)``, so the embeddings are ``p(u_o), p(i_o)``.

Where CLEAR enters: the outputs of ``image_trs`` and ``text_trs`` (the encoders, ``Linear(d_raw → d)``)
are projected, ``Ṽ = V P_v``, ``T̃ = T P_t``, before the predictor and before their target copies are
taken. The features enter only the loss, so the projection shapes evaluation through training alone.

Speed, same values: MMRec applies the predictor and the encoders to all rows every batch, then reads
the batch's rows; here only the distinct rows of the batch are encoded and predicted (row-wise maps).

Options: ``n_layers`` (1), ``dropout`` (0.5), ``cl_weight`` (2.0), ``train_raw_features`` (true).
MMRec's grid: ``n_layers`` ∈ {1, 2}, ``dropout`` ∈ {0.3, 0.5}, ``reg_weight`` ∈ {0.1, 0.01}.

Example:
    >>> import torch
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.models import ModelContext, build_model
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 3, 0]), torch.randn(4, 10),
    ...                    torch.randn(4, 6), torch.device("cpu"))
    >>> model = build_model(TrainConfig(backbone="bm3", emb_dim=8, projection={"k": 2}), ctx)
    >>> model.start_epoch(1)
    >>> model.loss(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([3, 3])).shape
    torch.Size([1])
    >>> [e.shape for e in model.embeddings()]
    [torch.Size([1, 3, 8]), torch.Size([1, 4, 8])]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from clear_tune.graphs import propagate
from clear_tune.models import _losses as L
from clear_tune.models._base import Member, ModelContext
from clear_tune.models._features import FeatureBackbone
from clear_tune.models._graph_cache import ui_adjacency
from clear_tune.models._layers import MemberEmbedding, MemberLinear
from clear_tune.models._registry import register_backbone


def cosine_gap(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 − mean_B cos(online, target)`` per member: ``(R, B, d), (R, B, d) -> (R,)``."""
    return 1 - L.batch_mean(F.cosine_similarity(online, target, dim=-1))


@register_backbone
class BM3(FeatureBackbone):
    name = "bm3"
    default_reg_weight = 0.1
    mmrec_grid: ClassVar[dict[str, list[Any]]] = {"n_layers": [1, 2], "dropout": [0.3, 0.5], "reg_weight": [0.1, 0.01]}

    def __init__(
        self,
        ctx: ModelContext,
        *,
        members: Sequence[Member],
        emb_dim: int = 64,
        seed: int = 0,
        n_layers: int = 1,
        dropout: float = 0.5,
        cl_weight: float = 2.0,
        train_raw_features: bool = True,
    ) -> None:
        super().__init__(ctx, members=members)
        assert ctx.image_feat is not None and ctx.text_feat is not None
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")
        R, d = self.n_members, emb_dim
        self.n_users, self.n_layers, self.dropout, self.cl_weight = ctx.n_users, n_layers, dropout, cl_weight
        self.user_emb = MemberEmbedding(R, ctx.n_users, d)
        self.item_emb = MemberEmbedding(R, ctx.n_items, d)
        self.predictor = MemberLinear(R, d, d, init="xavier_normal", bias_init="torch")
        self.init_modalities(
            ctx,
            MemberLinear(R, ctx.image_feat.shape[1], d, init="xavier_normal", bias_init="torch"),  # image_trs
            MemberLinear(R, ctx.text_feat.shape[1], d, init="xavier_normal", bias_init="torch"),  # text_trs
            train_raw_features=train_raw_features,
        )
        self.adjacency = ui_adjacency(ctx)
        self.generator = torch.Generator().manual_seed(seed)  # dropout masks, on the CPU: one draw on any device

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The online graph view ``(u_o (R, M, d), i_o (R, N, d))``: LightGCN mean, items plus their ID rows."""
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight], dim=1)  # (R, M + N, d)
        final = propagate(self.adjacency, ego, self.n_layers)
        return final[:, : self.n_users], final[:, self.n_users :] + self.item_emb.weight

    def dropout_noise(self, ids: torch.Tensor, width: int) -> torch.Tensor:
        """``F.dropout``'s multiplier for the rows ``ids`` of a view: ``(len(ids), width)`` of 0 or ``1/(1 − p)``.

        The keep mask is drawn from the model's CPU generator, so every member gets the same mask.
        """
        keep = torch.rand(ids.numel(), width, generator=self.generator) >= self.dropout  # P(keep) = 1 − p
        return keep.to(ids.device).float().div_(1.0 - self.dropout)

    def targets(self, views: list[torch.Tensor], ids: torch.Tensor, where: torch.Tensor) -> list[torch.Tensor]:
        """Dropped detached copies of ``(R, B, d)`` views whose batch row ``b`` is distinct id ``ids[where[b]]``.

        One mask row per distinct id and view, so a row read twice is dropped the same way both times.
        """
        if self.dropout <= 0.0:
            return [v.detach() for v in views]
        return [v.detach() * self.dropout_noise(ids, v.shape[-1]).index_select(0, where) for v in views]

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        del neg  # BM3 samples no negatives
        u_all, i_all = self.propagate()  # (R, M, d), (R, N, d)
        u_o, i_o = u_all.index_select(1, users), i_all.index_select(1, pos)  # (R, B, d)
        items, item_where = torch.unique(pos, return_inverse=True)
        V, T = (x.index_select(1, item_where) for x in self.modal_features(items))  # (R, B, d): encoded, projected
        with torch.no_grad():  # MMRec's order of draws: users, items, text, image
            (u_t,) = self.targets([u_o], *torch.unique(users, return_inverse=True))
            i_t, t_t, v_t = self.targets([i_o, T, V], items, item_where)
        p_u, p_i, p_t, p_v = (self.predictor(x) for x in (u_o, i_o, T, V))
        main = cosine_gap(p_u, i_t) + cosine_gap(p_i, u_t)
        modal = cosine_gap(p_t, i_t) + cosine_gap(p_v, i_t) + cosine_gap(p_t, t_t) + cosine_gap(p_v, v_t)
        return main + self.reg_weight * L.emb_norm(u_all, i_all) + self.cl_weight * modal

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        u_all, i_all = self.propagate()
        return self.predictor(u_all), self.predictor(i_all)
