"""SMORE (Ong & Khong, WSDM 2025) as MMRec's ``SMORE``: spectrum-domain denoising and fusion of the modality
features, image/text/fusion item-item views gated by the item IDs, and a modality-aware preference module,
trained with BPR plus an InfoNCE between the fused and the ID view.

MMRec's form, point by point (every tensor carries the member axis R first):

* graphs, built once per dataset and frozen: the user-item graph ``D^-1/2 A D^-1/2`` (``norm_adj``) and its
  user-item block ``R``; the image graph (cosine top-``image_knn_k`` of the RAW image features, values kept,
  ``D^-1/2 S D^-1/2`` with the row sums of the kept values), the text graph likewise with ``text_knn_k``, and the
  fusion graph: the union of their entries with the larger of the two values (``max_pool_fusion``, not
  re-normalised);
* encoders ``Ṽ = image_trs(v)``, ``T̃ = text_trs(t)`` (``nn.Linear(d_raw → d)``, torch's initialisation) over all
  items; spectrum convolution over the embedding axis (``rfft``/``irfft``, ``norm='ortho'``) with three trainable
  complex filters ``w_v, w_t, w_f`` (``(d//2 + 1)`` each, ``torch.randn``): ``c_v = irfft(F(Ṽ) w_v)``,
  ``c_t = irfft(F(T̃) w_t)``, ``c_f = irfft(F(T̃) F(Ṽ) w_f)``; purifier ``e_m = E_item ⊙ σ(gate_m(c_m))``;
* user-item view (``content``): LightGCN over ``norm_adj`` for ``n_ui_layers`` layers, mean of all layers;
* item-item views: ``e_m ← G_m^{n_layers} e_m`` for items, ``R e_m`` for users, stacked ``[users; items]``;
* modality-aware preference, row by row: ``a_v = softmax(query_v(fusion)) ⊙ image``, ``a_t = softmax(query_t(fusion))
  ⊙ text`` (softmax over the d dimensions; ``query = Linear → tanh → Linear(no bias)``), preferences
  ``p_m = dropout(σ(gate_m_prefer(content)))`` (``nn.Dropout(dropout_rate)``: one mask per preference, shared by
  the members, drawn from the model's generator), ``side = mean(p_v ⊙ a_v, p_t ⊙ a_t, p_f ⊙ fusion)``; final
  ``content + side``;
* loss: ``-mean(logsigmoid(s⁺ − s⁻))`` + ``reg_weight · ½(‖u‖² + ‖i⁺‖² + ‖i⁻‖²) / batch_size`` over the final
  rows + ``cl_loss · (InfoNCE(side[i⁺], content[i⁺]) + InfoNCE(side[u], content[u]))`` at temperature 0.2
  (hard-coded in MMRec, also its yaml's ``temperature``), cosine similarities, ``-log(exp/Σexp)`` as written.
  MMRec divides the regulariser by the configured ``train_batch_size``; here by the largest batch seen so far,
  which is that number from the first full batch on;
* trainable, as MMRec: the ID tables (``xavier_uniform_``), the encoders, the complex filters, the two queries
  and six gates (``nn.Linear``'s own initialisation) and, with ``train_raw_features`` (default true: MMRec's
  ``nn.Embedding.from_pretrained(..., freeze=False)``), the raw features themselves;
* evaluation: the same forward without dropout (MMRec's ``model.eval()``), scored by inner products.

Where CLEAR enters: the encoder outputs ``image_trs(v)``, ``text_trs(t)`` are projected (``FeatureBackbone``)
before the spectrum convolution reads them, the only place SMORE reads them.

Faster, same values: the preference module and the final sum are row-wise, so in training they run on the
``3B`` rows the loss reads instead of all ``M + N`` rows (the dropout masks are still drawn for all rows, as
``nn.Dropout`` does, and the read rows gathered, so a row read twice has one mask); evaluation runs the
forward once, not once per batch of users as MMRec's ``full_sort_predict``; the spectrum convolution runs in
float32 outside autocast (``torch.fft`` has no bf16 kernel; autocast would run it in float32 too).

Defaults: MMRec's ``SMORE.yaml``; of its searched values the first listed (``n_ui_layers`` 3, ``image_knn_k`` 10,
``text_knn_k`` 10, ``reg_weight`` 1e-5, ``dropout_rate`` 0). The SMORE authors publish per-dataset best values
instead of one default (README of github.com/kennethorq/SMORE: Baby 4/40/15/1e-4/0.1, Sports 3/10/10/1e-4/0,
Clothing 3/40/10/1e-5/0, with ``cl_loss`` 0.01, 0.03, 0.01). Fixed in the yaml: ``n_layers`` 1, ``cl_loss`` 0.01,
lr 1e-3, decay 0.96 per 50 epochs.

Options: ``n_ui_layers`` (3), ``n_layers`` (1), ``image_knn_k`` (10), ``text_knn_k`` (10), ``dropout_rate`` (0.0),
``cl_loss`` (0.01), ``temperature`` (0.2), ``train_raw_features`` (true; false keeps the features fixed, not
MMRec's form). MMRec's grid: ``n_ui_layers`` ∈ {3, 4}, ``image_knn_k``, ``text_knn_k`` ∈ {10, 15, 20, 40},
``reg_weight`` ∈ {1e-5, 1e-4}, ``dropout_rate`` ∈ {0, 0.1}.

Example:
    >>> import torch
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.models import ModelContext, build_model
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 3, 0]), torch.randn(4, 10),
    ...                    torch.randn(4, 6), torch.device("cpu"))
    >>> model = build_model(TrainConfig(backbone="smore", emb_dim=8, projection={"k": 2},
    ...                                 model_options={"image_knn_k": 2, "text_knn_k": 3}), ctx)
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
from torch import nn

from clear_tune.graphs import propagate, spmm
from clear_tune.models import _losses as L
from clear_tune.models._base import Member, ModelContext
from clear_tune.models._features import FeatureBackbone
from clear_tune.models._graph_cache import (
    max_pooled_knn_graph,
    similarity_knn_graphs,
    ui_adjacency,
    ui_block,
)
from clear_tune.models._layers import MemberEmbedding, MemberLinear, stack_members
from clear_tune.models._registry import register_backbone

Views = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _linear(members: int, d_in: int, d_out: int, *, bias: bool = True) -> MemberLinear:
    """``nn.Linear(d_in, d_out)`` with torch's own initialisation, per member."""
    return MemberLinear(members, d_in, d_out, bias=bias, init="torch", bias_init="torch")


@register_backbone
class SMORE(FeatureBackbone):
    name = "smore"
    default_reg_weight = 1e-5
    mmrec_grid: ClassVar[dict[str, list[Any]]] = {
        "n_ui_layers": [3, 4],
        "image_knn_k": [10, 15, 20, 40],
        "text_knn_k": [10, 15, 20, 40],
        "reg_weight": [1e-5, 1e-4],
        "dropout_rate": [0.0, 0.1],
    }
    lr_decay = (0.96, 50)

    def __init__(
        self,
        ctx: ModelContext,
        *,
        members: Sequence[Member],
        emb_dim: int = 64,
        seed: int = 0,
        n_ui_layers: int = 3,
        n_layers: int = 1,
        image_knn_k: int = 10,
        text_knn_k: int = 10,
        dropout_rate: float = 0.0,
        cl_loss: float = 0.01,
        temperature: float = 0.2,
        train_raw_features: bool = True,
    ) -> None:
        super().__init__(ctx, members=members)
        assert ctx.image_feat is not None and ctx.text_feat is not None
        if n_ui_layers < 0 or n_layers < 0 or image_knn_k < 1 or text_knn_k < 1:
            raise ValueError(
                f"n_ui_layers={n_ui_layers}, n_layers={n_layers} must be >= 0 and image_knn_k="
                f"{image_knn_k}, text_knn_k={text_knn_k} >= 1"
            )
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"dropout_rate={dropout_rate} must be in [0, 1)")
        if temperature <= 0.0:
            raise ValueError(f"temperature={temperature} must be > 0")
        R = self.n_members
        self.n_users, self.n_items, self.emb_dim = ctx.n_users, ctx.n_items, emb_dim
        self.n_ui_layers, self.n_layers, self.dropout_rate = n_ui_layers, n_layers, dropout_rate
        self.cl_loss, self.temperature = cl_loss, temperature
        # created in MMRec's order (ID tables, encoders, queries, gates, complex filters)
        self.user_emb = MemberEmbedding(R, ctx.n_users, emb_dim)
        self.item_emb = MemberEmbedding(R, ctx.n_items, emb_dim)
        self.init_modalities(
            ctx,
            _linear(R, ctx.image_feat.shape[1], emb_dim),
            _linear(R, ctx.text_feat.shape[1], emb_dim),
            train_raw_features=train_raw_features,
        )
        self.query_v_hidden, self.query_v_out = _linear(R, emb_dim, emb_dim), _linear(R, emb_dim, emb_dim, bias=False)
        self.query_t_hidden, self.query_t_out = _linear(R, emb_dim, emb_dim), _linear(R, emb_dim, emb_dim, bias=False)
        self.gate_v, self.gate_t, self.gate_f = (_linear(R, emb_dim, emb_dim) for _ in range(3))
        self.gate_image_prefer, self.gate_text_prefer, self.gate_fusion_prefer = (
            _linear(R, emb_dim, emb_dim) for _ in range(3)
        )
        # (R, 1, d//2 + 1, 2): real and imaginary parts, torch.randn as MMRec
        self.image_complex_weight, self.text_complex_weight, self.fusion_complex_weight = (
            nn.Parameter(stack_members(R, torch.randn(1, emb_dim // 2 + 1, 2))) for _ in range(3)
        )
        self.ui_adjacency = ui_adjacency(ctx)  # D^-1/2 A D^-1/2, symmetric
        self.ui_block, self.ui_block_t = ui_block(ctx)  # its (M, N) user-item block R
        self.image_graph, self.text_graph = similarity_knn_graphs(ctx, knn_k=image_knn_k, text_knn_k=text_knn_k)
        self.fusion_graph = max_pooled_knn_graph(ctx, image_knn_k=image_knn_k, text_knn_k=text_knn_k)
        self.generator = torch.Generator().manual_seed(seed)  # the preference dropout masks
        self._reg_batch = 1

    # ---------------------------------------------------------------------------------------- forward
    def spectrum_convolution(self, V: torch.Tensor, T: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(c_v, c_t, c_f)`` from the encoded ``(R, N, d)`` features: denoising and cross-modal fusion."""
        d = V.shape[-1]
        with torch.autocast(V.device.type, enabled=False):
            image_fft = torch.fft.rfft(V.float(), dim=-1, norm="ortho")  # (R, N, d//2 + 1)
            text_fft = torch.fft.rfft(T.float(), dim=-1, norm="ortho")
            image_w, text_w, fusion_w = (
                torch.view_as_complex(w)
                for w in (self.image_complex_weight, self.text_complex_weight, self.fusion_complex_weight)
            )  # (R, 1, d//2 + 1)
            return (
                torch.fft.irfft(image_fft * image_w, n=d, dim=-1, norm="ortho"),
                torch.fft.irfft(text_fft * text_w, n=d, dim=-1, norm="ortho"),
                torch.fft.irfft(text_fft * image_fft * fusion_w, n=d, dim=-1, norm="ortho"),
            )

    def views(self) -> Views:
        """``(content, image, text, fusion)``: the user-item view and three item-item views, ``(R, M + N, d)`` each."""
        V, T = self.modal_features()  # (R, N, d) each, CLEAR's projection applied
        image_conv, text_conv, fusion_conv = self.spectrum_convolution(V, T)
        items = self.item_emb.weight
        image_items = items * torch.sigmoid(self.gate_v(image_conv))
        text_items = items * torch.sigmoid(self.gate_t(text_conv))
        fusion_items = items * torch.sigmoid(self.gate_f(fusion_conv))
        content = propagate(self.ui_adjacency, torch.cat([self.user_emb.weight, items], dim=1), self.n_ui_layers)
        return (
            content,
            self._item_view(self.image_graph, image_items),
            self._item_view(self.text_graph, text_items),
            self._item_view(self.fusion_graph, fusion_items),
        )

    def _item_view(self, graph: tuple[torch.Tensor, torch.Tensor], items: torch.Tensor) -> torch.Tensor:
        """``[R h; h]`` with ``h = G^{n_layers} items``: ``(R, N, d) -> (R, M + N, d)``."""
        for _ in range(self.n_layers):
            items = spmm(graph[0], items, matrix_t=graph[1])
        return torch.cat([spmm(self.ui_block, items, matrix_t=self.ui_block_t), items], dim=1)

    def _dropout_scales(self, rows: torch.Tensor) -> list[torch.Tensor] | None:
        """Three ``nn.Dropout`` masks over all ``M + N`` rows, scaled by ``1/(1 − p)``, at ``rows``: ``(n, d)`` each."""
        p = self.dropout_rate
        if p == 0.0:
            return None
        shape = (self.n_users + self.n_items, self.emb_dim)
        masks = [(torch.rand(shape, generator=self.generator) >= p).to(rows.device) for _ in range(3)]
        return [mask.index_select(0, rows).float() / (1.0 - p) for mask in masks]

    def fuse(
        self,
        content: torch.Tensor,
        image: torch.Tensor,
        text: torch.Tensor,
        fusion: torch.Tensor,
        scales: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The modality-aware preference module on matching rows ``(R, n, d)``: ``side (R, n, d)``."""
        agg_image = self.query_v_out(torch.tanh(self.query_v_hidden(fusion))).softmax(-1) * image
        agg_text = self.query_t_out(torch.tanh(self.query_t_hidden(fusion))).softmax(-1) * text
        prefers = [
            torch.sigmoid(gate(content))
            for gate in (self.gate_image_prefer, self.gate_text_prefer, self.gate_fusion_prefer)
        ]
        if scales is not None:
            prefers = [prefer * scale for prefer, scale in zip(prefers, scales)]
        return torch.stack([prefers[0] * agg_image, prefers[1] * agg_text, prefers[2] * fusion]).mean(0)

    # ------------------------------------------------------------------------------------------- loss
    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        B = users.numel()
        self._reg_batch = max(self._reg_batch, B)
        rows = torch.cat([users, pos + self.n_users, neg + self.n_users])  # the 3B rows the loss reads
        content, image, text, fusion = (x.index_select(1, rows) for x in self.views())
        side = self.fuse(content, image, text, fusion, self._dropout_scales(rows))
        final = content + side
        u, p, n = final[:, :B], final[:, B : 2 * B], final[:, 2 * B :]
        reg = sum(L.squared_norm(t) for t in (u, p, n)) / (2 * self._reg_batch)
        cl = L.cosine_info_nce(side[:, B : 2 * B], content[:, B : 2 * B], self.temperature) + L.cosine_info_nce(
            side[:, :B], content[:, :B], self.temperature
        )
        return L.bpr(L.scores(u, p), L.scores(u, n)) + self.reg_weight * reg + self.cl_loss * cl

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        content, image, text, fusion = self.views()
        final = content + self.fuse(content, image, text, fusion)
        return final[:, : self.n_users], final[:, self.n_users :]
