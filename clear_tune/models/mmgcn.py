"""MMGCN (Wei et al., ACM MM 2019) as MMRec's ``MMGCN``: one GCN per modality over the user-item graph,
with user preference vectors in the place of user features and the ID embedding added at every layer.

MMRec's form, point by point (``src/models/mmgcn.py``):

* graph: both directions of every train edge, no self loops; each layer's ``BaseModel`` is PyG's
  ``aggr='mean'`` over ``message = x_j W``, i.e. ``D⁻¹ A (x W)`` with the row of the target
  (:func:`~clear_tune.models._graph_cache.ui_aggregation`; a node without edges aggregates to zero);
* per modality m, over all ``M + N`` nodes: ``x = normalize([P_m ; F_m])`` (row-wise L2), where
  ``F_v = MLP(v)`` (``Linear(d_v → 256)``, MMRec's ``dim_latent``) and ``F_t = t``: MMRec builds the
  text GCN without ``dim_latent``, so the raw text features enter the graph layers directly and the text
  preference ``P_t`` is ``d_t``-wide. Then per layer ``l``:
  ``h = lrelu(D⁻¹A (x W_l))``, ``x̂ = lrelu(linear_l(x)) + E_id``, ``x = lrelu(g_l([h ; x̂]))``;
* MMRec sets ``concate = 'False'``, a non-empty string, so its ``if self.concate`` takes the
  concatenation branch (``g_l`` reads ``[h ; x̂]``): that is the default here (``concate: true``);
* MMRec's GCN always runs three layers and ignores ``n_layers`` (its yaml says 2): ``n_layers`` is 3 here;
* representation ``(x_v + x_t) / 2``, score = inner product; loss
  ``-mean(log σ(s⁺ − s⁻))`` (``torch.log(torch.sigmoid)``, no epsilon) plus ``reg_weight ·
  (mean(E_id[u]² + E_id[i]²) over the 2B (u, i) pairs + mean(P_v²))``;
* what is trained: MMRec creates ``E_id`` ((M + N) × d), ``P_v`` and ``P_t`` as plain tensors
  (``xavier_normal_(torch.rand(..., requires_grad=True)).to(device)``), not ``nn.Parameter``, so its Adam
  never updates them: they stay at their ``xavier_normal_`` draw and the regulariser has no gradient
  (reg_weight changes the loss value, not the training). Here they are frozen shared tensors;
  ``train_id_embeddings: true`` makes them per-member parameters as the MMGCN paper intends;
* initialisation as MMRec: ``MLP`` is ``nn.Linear``'s default; ``W_l``, ``linear_l`` and ``g_1`` weights
  ``xavier_normal_`` (biases ``nn.Linear``'s); ``g_2``, ``g_3`` wholly ``nn.Linear``'s default;
* evaluation: MMRec's ``full_sort_predict`` reads ``self.result``, the representation computed by the
  LAST training batch's forward (before that batch's Adam step); :meth:`embeddings` returns the same
  (``fresh_eval: true`` recomputes it with the current weights instead).

Where CLEAR enters: where the item features enter the GCNs, before ``normalize``. Image: the output of
``MLP`` (its only learned transform of the raw features), 256-d. Text: MMRec has no text encoder, the raw
``d_t``-dim features go straight into ``W_1`` and ``linear_1`` (together with the user rows), so the text
"encoder" is the identity and CLEAR projects the raw text features: ``P_v`` is 256 × 256, ``P_t``
``d_t × d_t``, and the cross-covariance ``256 × d_t``. Neither is ``emb_dim``-wide.

Speed, same algorithm: the mean aggregation is one CSR product per layer; without projection and with
frozen preferences the text branch's input is shared by all members, so each of its products reads it once.

Options: ``n_layers`` (3), ``dim_latent`` (256), ``aggr_mode`` (``"mean"``; ``"add"``), ``concate`` (true),
``train_id_embeddings`` (false), ``fresh_eval`` (false). MMRec's grid: ``reg_weight`` ∈ {0, 1e-5, 1e-4,
1e-3, 1e-2, 0.1}, ``learning_rate`` ∈ {1e-4, 5e-4, 1e-3, 5e-3, 1e-2}.

Example:
    >>> import torch
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.models import ModelContext, build_model
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 3, 0]), torch.randn(4, 10),
    ...                    torch.randn(4, 6), torch.device("cpu"))
    >>> model = build_model(TrainConfig(backbone="mmgcn", emb_dim=8, projection={"k": 2},
    ...                                 model_options={"dim_latent": 5}), ctx)
    >>> model.start_epoch(1)
    >>> [P.shape for P in (model.projection.members[0].P_v, model.projection.members[0].P_t)]
    [torch.Size([5, 5]), torch.Size([6, 6])]
    >>> bool(model.loss(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([3, 3])) > 0)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from clear_tune.graphs import spmm
from clear_tune.models import _losses as L
from clear_tune.models._base import Member, ModelContext
from clear_tune.models._features import FeatureBackbone
from clear_tune.models._graph_cache import ui_aggregation
from clear_tune.models._layers import MemberLinear, init_matrix, stack_members
from clear_tune.models._registry import register_backbone


class _RawFeatures(nn.Module):
    """The identity "encoder" of MMGCN's text branch (MMRec feeds the raw text features to the GCN)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.d_in = self.d_out = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _ModalGCN(nn.Module):
    """MMRec's ``GCN`` for one modality: ``n_layers`` of (mean-aggregated conv, linear + ID, gate ``g``)."""

    def __init__(self, members: int, d_in: int, d: int, *, n_layers: int, concate: bool) -> None:
        super().__init__()
        widths = [d_in] + [d] * (n_layers - 1)  # input width of each layer
        self.concate = concate
        self.conv = nn.ModuleList(MemberLinear(members, w, w, bias=False, init="xavier_normal") for w in widths)
        self.linear = nn.ModuleList(
            MemberLinear(members, w, d, init="xavier_normal", bias_init="torch") for w in widths
        )
        self.g = nn.ModuleList(
            MemberLinear(
                members, w + d if concate else w, d, init="xavier_normal" if layer == 0 else "torch", bias_init="torch"
            )
            for layer, w in enumerate(widths)
        )

    def forward(self, x: torch.Tensor, id_emb: torch.Tensor, graph: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """``x`` ``(M + N, d_in)`` shared or ``(R, M + N, d_in)``, ``id_emb`` likewise -> ``(R, M + N, d)``."""
        A, A_t = graph
        for conv, linear, g in zip(self.conv, self.linear, self.g):
            h = F.leaky_relu(spmm(A, conv(x), matrix_t=A_t))  # (R, M + N, w): equation 1
            x_hat = F.leaky_relu(linear(x)) + id_emb  # (R, M + N, d): equation 5
            x = F.leaky_relu(g(torch.cat([h, x_hat], dim=-1)) if self.concate else g(h) + x_hat)
        return x


@register_backbone
class MMGCN(FeatureBackbone):
    name = "mmgcn"
    default_reg_weight = 1e-4
    mmrec_grid: ClassVar[dict[str, list[Any]]] = {
        "reg_weight": [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 0.1],
        "lr": [1e-4, 5e-4, 1e-3, 5e-3, 1e-2],
    }
    # set with setattr in __init__: per-member parameters or one shared tensor (train_id_embeddings)
    id_embedding: torch.Tensor
    image_preference: torch.Tensor
    text_preference: torch.Tensor

    def __init__(
        self,
        ctx: ModelContext,
        *,
        members: Sequence[Member],
        emb_dim: int = 64,
        seed: int = 0,
        n_layers: int = 3,
        dim_latent: int = 256,
        aggr_mode: str = "mean",
        concate: bool = True,
        train_id_embeddings: bool = False,
        fresh_eval: bool = False,
    ) -> None:
        super().__init__(ctx, members=members)
        assert ctx.image_feat is not None and ctx.text_feat is not None
        if n_layers < 1 or dim_latent < 1:
            raise ValueError(f"n_layers={n_layers} and dim_latent={dim_latent} must be >= 1")
        R, d, d_t = self.n_members, emb_dim, ctx.text_feat.shape[1]
        self.n_users, self.fresh_eval = ctx.n_users, fresh_eval
        self.graph = ui_aggregation(ctx, aggr_mode)  # (D⁻¹A, (D⁻¹A)ᵀ) over [users | items]
        self.init_modalities(
            ctx,
            MemberLinear(R, ctx.image_feat.shape[1], dim_latent, init="torch", bias_init="torch"),
            _RawFeatures(d_t),
        )
        self.image_gcn = _ModalGCN(R, dim_latent, d, n_layers=n_layers, concate=concate)
        self.text_gcn = _ModalGCN(R, d_t, d, n_layers=n_layers, concate=concate)
        tables = {
            "id_embedding": (ctx.n_users + ctx.n_items, d),
            "image_preference": (ctx.n_users, dim_latent),
            "text_preference": (ctx.n_users, d_t),
        }
        for name, shape in tables.items():  # xavier_normal_ as MMRec; frozen and shared unless trained
            table = init_matrix(*shape, "xavier_normal")
            if train_id_embeddings:
                setattr(self, name, nn.Parameter(stack_members(R, table)))  # (R, rows, cols)
            else:  # attributes, not buffers: a fixed function of the seed, like the dataset's features
                setattr(self, name, table.to(ctx.device))  # (rows, cols)
        self.register_buffer("result", None, persistent=False)  # (R, M + N, d): the last batch's representation

    def encode(self, items: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``MLP(v)`` ``(R, n, dim_latent)`` and the raw text rows as a member stack ``(R, n, d_t)``."""
        image, text = self.raw_features()
        if items is not None:
            image, text = image.index_select(0, items), text.index_select(0, items)
        V = self.image_encoder(image)
        return V, text.expand(V.shape[0], -1, -1)

    def _rows(self, preference: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """``normalize([P ; F])``: shared ``(M + N, w)`` when both are shared, else ``(R, M + N, w)``."""
        if features.dim() == 3 and preference.dim() == 2:
            preference = preference.expand(features.shape[0], -1, -1)
        elif preference.dim() == 3 and features.dim() == 2:
            features = features.expand(preference.shape[0], -1, -1)
        return F.normalize(torch.cat([preference, features], dim=-2), dim=-1)

    def forward(self) -> torch.Tensor:
        """The representation ``(x_v + x_t) / 2`` of all ``M + N`` nodes: ``(R, M + N, d)``."""
        image, text = self.raw_features()
        V = self.image_encoder(image)  # (R, N, dim_latent)
        if self.projection is None:
            T = text  # (N, d_t) shared by every member
        else:
            V, T = self.projection(V, text.expand(V.shape[0], -1, -1))
        x_v = self.image_gcn(self._rows(self.image_preference, V), self.id_embedding, self.graph)
        x_t = self.text_gcn(self._rows(self.text_preference, T), self.id_embedding, self.graph)
        return (x_v + x_t) / 2

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        rep = self.forward()  # (R, M + N, d)
        self.result = rep.detach().float()
        u, i_pos, i_neg = (rep.index_select(1, ids) for ids in (users, pos + self.n_users, neg + self.n_users))
        main = L.log_sigmoid_bpr(L.scores(u, i_pos), L.scores(u, i_neg))
        table = self.id_embedding
        rows = (table.index_select(-2, ids) for ids in (users, pos + self.n_users, neg + self.n_users))
        preference = self.image_preference if self.image_preference.dim() == 3 else self.image_preference.unsqueeze(0)
        reg = L.pair_mean_square(*rows) + L.squared_norm(preference) / preference[0].numel()  # mean(P_v²)
        return main + self.reg_weight * reg

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        rep = self.forward() if self.fresh_eval or self.result is None else self.result
        return rep[:, : self.n_users], rep[:, self.n_users :]
