"""MGCN (Yu et al., ACM MM 2023) as MMRec's ``MGCN``: a user-item view, per-modality item-item views purified by
the item IDs, and a behaviour-aware fuser, trained with BPR plus an InfoNCE between the fused and the ID view.

MMRec's form, point by point (every tensor carries the member axis R first):

* graphs, built once per dataset and frozen: the user-item graph ``D^-1/2 A D^-1/2`` (``norm_adj``) and its
  user-item block ``R`` (``1/sqrt(d_u d_i)`` per edge, not re-normalised); per modality the cosine top-``knn_k``
  of the RAW features (itself included) with the similarity values kept, ``D^-1/2 S D^-1/2`` with D the row sums
  of the kept values (``build_knn_normalized_graph(..., norm_type='sym')``);
* encoders ``Ṽ = image_trs(v)``, ``T̃ = text_trs(t)`` (``nn.Linear(d_raw → d)``, torch's initialisation) over
  all items; behaviour-guided purifier ``e_v = E_item ⊙ σ(gate_v(Ṽ))``, ``e_t = E_item ⊙ σ(gate_t(T̃))``;
* user-item view (``content``): LightGCN over ``norm_adj`` for ``n_ui_layers`` layers, mean of all layers;
* item-item views: ``e_m ← S_m^{n_layers} e_m`` for items, ``R e_m`` for users, stacked ``[users; items]``;
* behaviour-aware fuser, row by row: ``α = softmax([q(image), q(text)])`` with ``q = Linear → tanh → Linear(d → 1,
  no bias)`` (``query_common``), ``common = α_0 image + α_1 text``, ``side = (σ(g_v(content)) ⊙ (image − common)
  + σ(g_t(content)) ⊙ (text − common) + common) / 3``; final ``content + side``;
* loss: ``-mean(logsigmoid(s⁺ − s⁻))`` + ``reg_weight · ½(‖u‖² + ‖i⁺‖² + ‖i⁻‖²) / batch_size`` over the final
  rows + ``cl_loss · (InfoNCE(side[i⁺], content[i⁺]) + InfoNCE(side[u], content[u]))`` at temperature 0.2
  (hard-coded in MMRec; its ``self.tau = 0.5`` is unused), cosine similarities, ``-log(exp/Σexp)`` as written.
  MMRec divides the regulariser by the configured ``train_batch_size`` (also in a shorter last batch); here by
  the largest batch seen so far, which is that number from the first full batch on;
* trainable, as MMRec: the ID tables (``xavier_uniform_``), the encoders, ``query_common`` and the four gates
  (``nn.Linear``'s own initialisation) and, with ``train_raw_features`` (default true: MMRec's
  ``nn.Embedding.from_pretrained(..., freeze=False)``), the raw features themselves;
* evaluation: the same forward (MMRec has no dropout here), scored by inner products.

Where CLEAR enters: the encoder outputs ``image_trs(v)``, ``text_trs(t)`` are projected (``FeatureBackbone``)
before the purifier gates read them, the only place MGCN reads them.

Faster, same values: the fuser and the final sum are row-wise, so in training they run on the ``3B`` rows the
loss reads (batch users, positives, negatives) instead of all ``M + N`` rows MMRec computes every batch; and
evaluation runs the forward once, not once per batch of users as MMRec's ``full_sort_predict``.

Defaults: MMRec's ``MGCN.yaml`` (``n_ui_layers`` 2, ``n_layers`` 1, ``knn_k`` 10, ``reg_weight`` 1e-4, lr 1e-3,
decay 0.96 per 50 epochs) except ``cl_loss``: MMRec searches {0.001, 0.01, 0.1}; the default is 0.01, the value
the MGCN authors' own config (github.com/demonph10/MGCN, ``configs/model/MGCN.yaml``) fixes.

Options: ``cl_loss`` (0.01), ``n_ui_layers`` (2), ``n_layers`` (1), ``knn_k`` (10), ``temperature`` (0.2,
MMRec's hard-coded value), ``train_raw_features`` (true; false keeps the features fixed, not MMRec's form).
MMRec's grid: ``cl_loss`` ∈ {0.001, 0.01, 0.1}.

Example:
    >>> import torch
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.models import ModelContext, build_model
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 3, 0]), torch.randn(4, 10),
    ...                    torch.randn(4, 6), torch.device("cpu"))
    >>> model = build_model(TrainConfig(backbone="mgcn", emb_dim=8, projection={"k": 2},
    ...                                 model_options={"knn_k": 2}), ctx)
    >>> model.start_epoch(1)
    >>> bool(model.loss(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([3, 3])) > 0)
    True
    >>> [e.shape for e in model.embeddings()]
    [torch.Size([1, 3, 8]), torch.Size([1, 4, 8])]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from clear_tune.graphs import propagate, spmm
from clear_tune.models import _losses as L
from clear_tune.models._base import Member, ModelContext
from clear_tune.models._features import FeatureBackbone
from clear_tune.models._graph_cache import similarity_knn_graphs, ui_adjacency, ui_block
from clear_tune.models._layers import MemberEmbedding, MemberLinear
from clear_tune.models._registry import register_backbone


def _linear(members: int, d_in: int, d_out: int, *, bias: bool = True) -> MemberLinear:
    """``nn.Linear(d_in, d_out)`` with torch's own initialisation, per member."""
    return MemberLinear(members, d_in, d_out, bias=bias, init="torch", bias_init="torch")


@register_backbone
class MGCN(FeatureBackbone):
    name = "mgcn"
    default_reg_weight = 1e-4
    mmrec_grid: ClassVar[dict[str, list[Any]]] = {"cl_loss": [0.001, 0.01, 0.1]}
    lr_decay = (0.96, 50)

    def __init__(
        self,
        ctx: ModelContext,
        *,
        members: Sequence[Member],
        emb_dim: int = 64,
        seed: int = 0,
        cl_loss: float = 0.01,
        n_ui_layers: int = 2,
        n_layers: int = 1,
        knn_k: int = 10,
        temperature: float = 0.2,
        train_raw_features: bool = True,
    ) -> None:
        super().__init__(ctx, members=members)
        assert ctx.image_feat is not None and ctx.text_feat is not None
        if n_ui_layers < 0 or n_layers < 0 or knn_k < 1:
            raise ValueError(f"n_ui_layers={n_ui_layers}, n_layers={n_layers} must be >= 0 and knn_k={knn_k} >= 1")
        if temperature <= 0.0:
            raise ValueError(f"temperature={temperature} must be > 0")
        R = self.n_members
        self.n_users, self.n_items = ctx.n_users, ctx.n_items
        self.cl_loss, self.n_ui_layers, self.n_layers, self.temperature = cl_loss, n_ui_layers, n_layers, temperature
        # created in MMRec's order (ID tables, encoders, query_common, gates)
        self.user_emb = MemberEmbedding(R, ctx.n_users, emb_dim)
        self.item_emb = MemberEmbedding(R, ctx.n_items, emb_dim)
        self.init_modalities(
            ctx,
            _linear(R, ctx.image_feat.shape[1], emb_dim),
            _linear(R, ctx.text_feat.shape[1], emb_dim),
            train_raw_features=train_raw_features,
        )
        self.query_hidden = _linear(R, emb_dim, emb_dim)  # query_common: Linear -> tanh -> Linear(d -> 1, no bias)
        self.query_out = _linear(R, emb_dim, 1, bias=False)
        self.gate_v, self.gate_t = _linear(R, emb_dim, emb_dim), _linear(R, emb_dim, emb_dim)
        self.gate_image_prefer, self.gate_text_prefer = _linear(R, emb_dim, emb_dim), _linear(R, emb_dim, emb_dim)
        self.ui_adjacency = ui_adjacency(ctx)  # D^-1/2 A D^-1/2, symmetric
        self.ui_block, self.ui_block_t = ui_block(ctx)  # its (M, N) user-item block R
        self.image_graph, self.text_graph = similarity_knn_graphs(ctx, knn_k=knn_k)  # (S, S^T) each
        self._reg_batch = 1

    # ---------------------------------------------------------------------------------------- forward
    def views(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(content, image, text)``: the user-item view and the two item-item views, ``(R, M + N, d)`` each."""
        V, T = self.modal_features()  # (R, N, d) each, CLEAR's projection applied
        items = self.item_emb.weight
        image_items = items * torch.sigmoid(self.gate_v(V))  # behaviour-guided purifier
        text_items = items * torch.sigmoid(self.gate_t(T))
        content = propagate(self.ui_adjacency, torch.cat([self.user_emb.weight, items], dim=1), self.n_ui_layers)
        return content, self._item_view(self.image_graph, image_items), self._item_view(self.text_graph, text_items)

    def _item_view(self, graph: tuple[torch.Tensor, torch.Tensor], items: torch.Tensor) -> torch.Tensor:
        """``[R h; h]`` with ``h = S^{n_layers} items``: ``(R, N, d) -> (R, M + N, d)``."""
        for _ in range(self.n_layers):
            items = spmm(graph[0], items, matrix_t=graph[1])
        return torch.cat([spmm(self.ui_block, items, matrix_t=self.ui_block_t), items], dim=1)

    def _query(self, x: torch.Tensor) -> torch.Tensor:
        return self.query_out(torch.tanh(self.query_hidden(x)))  # (R, n, 1)

    def fuse(self, content: torch.Tensor, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """The behaviour-aware fuser on matching rows ``(R, n, d)`` of the three views: ``side (R, n, d)``."""
        weight = torch.cat([self._query(image), self._query(text)], dim=-1).softmax(-1)  # (R, n, 2)
        common = weight[..., 0:1] * image + weight[..., 1:2] * text
        sep_image = torch.sigmoid(self.gate_image_prefer(content)) * (image - common)
        sep_text = torch.sigmoid(self.gate_text_prefer(content)) * (text - common)
        return (sep_image + sep_text + common) / 3

    # ------------------------------------------------------------------------------------------- loss
    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        B = users.numel()
        self._reg_batch = max(self._reg_batch, B)
        content, image, text = self.views()
        rows = torch.cat([users, pos + self.n_users, neg + self.n_users])  # the 3B rows the loss reads
        content, image, text = (x.index_select(1, rows) for x in (content, image, text))
        side = self.fuse(content, image, text)
        final = content + side
        u, p, n = final[:, :B], final[:, B : 2 * B], final[:, 2 * B :]
        reg = sum(L.squared_norm(t) for t in (u, p, n)) / (2 * self._reg_batch)
        cl = L.cosine_info_nce(side[:, B : 2 * B], content[:, B : 2 * B], self.temperature) + L.cosine_info_nce(
            side[:, :B], content[:, :B], self.temperature
        )
        return L.bpr(L.scores(u, p), L.scores(u, n)) + self.reg_weight * reg + self.cl_loss * cl

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        content, image, text = self.views()
        final = content + self.fuse(content, image, text)
        return final[:, : self.n_users], final[:, self.n_users :]
