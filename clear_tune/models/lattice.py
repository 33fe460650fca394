"""LATTICE (Zhang et al., ACM MM 2021) as MMRec's ``LATTICE``: a learned item-item graph mixed with frozen kNN
graphs of the raw features, on top of a LightGCN over the user-item graph.

MMRec's form, point by point (every tensor carries the member axis R first; the graphs are per member
where the weights are):

* frozen graphs S_img, S_txt (``build_sim`` → ``build_knn_neighbourhood`` → ``compute_normalized_laplacian``):
  cosine top-``knn_k`` of the RAW features (itself included) with the similarity VALUES kept, then
  ``D^-1/2 S D^-1/2`` with D the row sums of the kept values; built once per dataset (MMRec caches them
  in ``image_adj_{k}.pt``);
* learned graph, rebuilt at the FIRST batch of every epoch (``pre_epoch_processing`` sets
  ``build_item_graph``) from the encoded features ``Ṽ = image_trs(v)``, ``T̃ = text_trs(t)``
  (``nn.Linear(d_raw → feat_embed_dim)``, torch's default initialisation):
  ``L = norm(w_0 kNN(Ṽ) + w_1 kNN(T̃))`` (top-k with values, normalised after mixing), ``w = softmax(modal_weight)``
  (a trainable pair initialised ``[0.5, 0.5]``), and ``G = (1 − λ_c) L + λ_c (w_0 S_img + w_1 S_txt)`` with
  ``λ_c = lambda_coeff``.
  In that batch G carries gradients to the encoders, the raw features and ``modal_weight``; the other
  batches of the epoch use it detached (so those parameters move once per epoch);
* ``h = G^{n_layers} E_item``; ``cf_model``: ``lightgcn`` (default) propagates ``[E_user; E_item]`` over the
  row-normalised ``D^-1 (A + I)`` user-item graph for ``len(weight_size)`` layers and takes the mean of all
  layers; ``mf`` uses the ID tables as they are; ``ngcf`` is MMRec's NGCF branch (``GC``/``Bi`` linears,
  LeakyReLU, ``mess_dropout`` in training, row-normalised layer outputs, mean); items get ``+ F.normalize(h)``;
* loss: ``-mean(logsigmoid(s⁺ − s⁻))`` plus ``reg_weight · ½(‖u‖² + ‖i⁺‖² + ‖i⁻‖²) / batch_size`` over the
  propagated rows (LATTICE's inline ``bpr_loss``). MMRec divides by the configured ``train_batch_size``
  (also in a shorter last batch); here by the size of the epoch's first batch, which is that number
  whenever an epoch has at least one full batch;
* trainable, as MMRec: the ID tables (``xavier_uniform_``), the encoders, ``modal_weight`` and (with
  ``train_raw_features``, default true: MMRec's ``from_pretrained(freeze=False)``) the raw features;
* evaluation: MMRec's ``full_sort_predict`` rebuilds the learned graph from the current weights, and so
  does :meth:`LATTICE.embeddings`.

Where CLEAR enters: the encoder outputs ``image_trs(v)``, ``text_trs(t)`` are projected before anything
reads them, i.e. before the learned kNN graph is built from them (the only place LATTICE reads them).

Memory and speed, same values: no dense ``N × N`` matrix. Each member's learned graph is its top-k
neighbour lists (``(R, N, 2k)``, :mod:`clear_tune.graphs._learned`), computed a chunk of rows at a time;
the graph-building batch applies it by a gather (differentiable in the graph), the other batches and
evaluation through one block-diagonal CSR of all members' ``G``. MMRec also encodes all items in every
batch although only the graph-building batch reads them; here only that batch does.

Options: ``knn_k`` (10), ``lambda_coeff`` (0.9), ``n_layers`` (1), ``cf_model`` (``"lightgcn"``),
``weight_size`` ([64, 64]; its length is the number of user-item layers), ``mess_dropout`` ([0.1, 0.1],
``ngcf`` only), ``feat_embed_dim`` (0: ``emb_dim``; MMRec's yaml sets both to 64), ``train_raw_features``
(true). MMRec's grid:
``reg_weight`` ∈ {0, 1e-5, 1e-4, 1e-3}, ``lr`` ∈ {1e-4, 5e-4, 1e-3, 5e-3}; learning-rate decay 0.96 per 50 epochs.

Example:
    >>> import torch
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.models import ModelContext, build_model
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 3, 0]), torch.randn(4, 10),
    ...                    torch.randn(4, 6), torch.device("cpu"))
    >>> model = build_model(TrainConfig(backbone="lattice", emb_dim=8, projection={"k": 2},
    ...                                 model_options={"knn_k": 2}), ctx)
    >>> model.start_epoch(1)
    >>> bool(model.loss(torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([3, 3])) > 0)
    True
    >>> [e.shape for e in model.embeddings()]
    [torch.Size([1, 3, 8]), torch.Size([1, 4, 8])]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from clear_tune.graphs import block_diagonal, cosine_topk, rows_times_dense, spmm, sym_normalise_rows, transpose
from clear_tune.models import _losses as L
from clear_tune.models._base import Member, ModelContext
from clear_tune.models._features import FeatureBackbone
from clear_tune.models._graph_cache import similarity_knn_graphs, ui_graph
from clear_tune.models._layers import MemberEmbedding, MemberLinear
from clear_tune.models._registry import register_backbone

CF_MODELS = ("lightgcn", "mf", "ngcf")
Graph = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # neighbour indices, normalised values (R, N, 2k), w (R, 2)


@register_backbone
class LATTICE(FeatureBackbone):
    name = "lattice"
    default_reg_weight = 1e-4
    mmrec_grid: ClassVar[dict[str, list[Any]]] = {"reg_weight": [0.0, 1e-5, 1e-4, 1e-3], "lr": [1e-4, 5e-4, 1e-3, 5e-3]}
    lr_decay = (0.96, 50)

    def __init__(
        self,
        ctx: ModelContext,
        *,
        members: Sequence[Member],
        emb_dim: int = 64,
        seed: int = 0,
        knn_k: int = 10,
        lambda_coeff: float = 0.9,
        n_layers: int = 1,
        cf_model: str = "lightgcn",
        weight_size: Sequence[int] = (64, 64),
        mess_dropout: Sequence[float] = (0.1, 0.1),
        feat_embed_dim: int = 0,
        train_raw_features: bool = True,
    ) -> None:
        super().__init__(ctx, members=members)
        assert ctx.image_feat is not None and ctx.text_feat is not None
        if cf_model not in CF_MODELS:
            raise ValueError(f"cf_model={cf_model!r} must be one of {', '.join(CF_MODELS)}")
        if cf_model == "ngcf" and (any(w != emb_dim for w in weight_size) or len(mess_dropout) < len(weight_size)):
            raise ValueError(
                f"ngcf needs every weight_size equal to emb_dim={emb_dim} (MMRec stacks the layers) "
                f"and one mess_dropout per layer"
            )
        if not 0.0 <= lambda_coeff <= 1.0:
            raise ValueError(f"lambda_coeff={lambda_coeff} must be in [0, 1]")
        R, feat_embed_dim = self.n_members, feat_embed_dim or emb_dim
        self.n_users, self.n_items = ctx.n_users, ctx.n_items
        self.knn_k, self.lambda_coeff, self.n_layers, self.cf_model = knn_k, lambda_coeff, n_layers, cf_model
        self.n_ui_layers, self.mess_dropout = len(weight_size), [float(p) for p in mess_dropout]
        self.user_emb = MemberEmbedding(R, ctx.n_users, emb_dim)
        self.item_emb = MemberEmbedding(R, ctx.n_items, emb_dim)
        if cf_model == "ngcf":  # MMRec's GC_Linear_list / Bi_Linear_list: nn.Linear's own initialisation
            self.gc_layers = nn.ModuleList(
                MemberLinear(R, emb_dim, emb_dim, init="torch", bias_init="torch") for _ in weight_size
            )
            self.bi_layers = nn.ModuleList(
                MemberLinear(R, emb_dim, emb_dim, init="torch", bias_init="torch") for _ in weight_size
            )
        self.init_modalities(
            ctx,
            MemberLinear(R, ctx.image_feat.shape[1], feat_embed_dim, init="torch", bias_init="torch"),
            MemberLinear(R, ctx.text_feat.shape[1], feat_embed_dim, init="torch", bias_init="torch"),
            train_raw_features=train_raw_features,
        )
        self.modal_weight = nn.Parameter(torch.full((R, 2), 0.5))
        self.ui_graph, self.ui_graph_t = ui_graph(ctx, "norm")  # D^-1 (A + I)
        self.frozen = similarity_knn_graphs(ctx, knn_k=knn_k)  # ((S_img, S_img^T), (S_txt, S_txt^T))
        self.frozen_coo = [graph.to_sparse_coo().coalesce() for graph, _ in self.frozen]
        self.generator = torch.Generator().manual_seed(seed)  # ngcf's message dropout
        self.build_item_graph = True
        self._graph: Graph | None = None  # this epoch's G, detached, for the batches after the first
        self._block: tuple[torch.Tensor, torch.Tensor] | None = None  # ... as block-diagonal CSR and transpose
        self._reg_batch = 1

    def start_epoch(self, epoch: int) -> None:
        self.refresh_projection(epoch)
        self.build_item_graph = True

    def keep_members(self, index: Sequence[int]) -> None:
        super().keep_members(index)
        if self._graph is not None:
            self._graph = cast(Graph, tuple(t[list(index)] for t in self._graph))
        self._block = None

    # ------------------------------------------------------------------------------------- item graph
    def learned_graph(self) -> Graph:
        """``(indices, values, w)``: ``L = norm(w_0 kNN(Ṽ) + w_1 kNN(T̃))`` as ``(R, N, 2k)`` lists, ``w (R, 2)``."""
        V, T = self.modal_features()  # (R, N, d_f) each, CLEAR's projection applied (encoders under autocast)
        weight = self.modal_weight.softmax(-1)  # (R, 2)
        with torch.autocast(V.device.type, enabled=False):  # the graph is float32, like every propagation
            image_values, image_indices = cosine_topk(V.float(), self.knn_k)  # (R, N, k) each
            text_values, text_indices = cosine_topk(T.float(), self.knn_k)
        indices = torch.cat([image_indices, text_indices], dim=-1)  # (R, N, 2k)
        values = torch.cat([weight[:, 0, None, None] * image_values, weight[:, 1, None, None] * text_values], dim=-1)
        return indices, sym_normalise_rows(indices, values), weight

    def _hops_through(self, graph: Graph, h: torch.Tensor) -> torch.Tensor:
        """``G^{n_layers} h`` for ``h (R, N, d)``, differentiable in the graph (the graph-building batch)."""
        indices, values, weight = graph
        lam = self.lambda_coeff
        (image, image_t), (text, text_t) = self.frozen
        for _ in range(self.n_layers):
            frozen = weight[:, 0, None, None] * spmm(image, h, matrix_t=image_t) + weight[:, 1, None, None] * spmm(
                text, h, matrix_t=text_t
            )
            h = (1 - lam) * rows_times_dense(indices, values, h) + lam * frozen
        return h

    def _block_graph(self, graph: Graph) -> tuple[torch.Tensor, torch.Tensor]:
        """All members' ``G`` as one block-diagonal ``(R·N)²`` CSR and its transpose (a constant graph)."""
        indices, values, weight = (t.detach() for t in graph)
        members, n, k = indices.shape
        lam = self.lambda_coeff
        rows = [torch.arange(n, device=indices.device).repeat_interleave(k).expand(members, -1)]
        cols, vals = [indices.reshape(members, -1)], [(1 - lam) * values.reshape(members, -1)]
        for m, coo in enumerate(self.frozen_coo):
            rows.append(coo.indices()[0].expand(members, -1))
            cols.append(coo.indices()[1].expand(members, -1))
            vals.append(lam * weight[:, m, None] * coo.values())
        block = block_diagonal(torch.cat(rows, 1), torch.cat(cols, 1), torch.cat(vals, 1), n)
        return block, transpose(block)

    def _hops_block(self, block: tuple[torch.Tensor, torch.Tensor], h: torch.Tensor) -> torch.Tensor:
        members, n, d = h.shape
        flat = h.reshape(members * n, d)
        for _ in range(self.n_layers):
            flat = spmm(block[0], flat, matrix_t=block[1])
        return flat.view(members, n, d)

    # ---------------------------------------------------------------------------------------- forward
    def forward_all(
        self, item_hops: Callable[[torch.Tensor], torch.Tensor], *, train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """MMRec's ``forward``: ``(users (R, M, d), items (R, N, d))`` with ``item_hops(h) = G^{n_layers} h``."""
        h = item_hops(self.item_emb.weight)  # (R, N, d)
        if self.cf_model == "mf":
            return self.user_emb.weight, self.item_emb.weight + F.normalize(h, p=2, dim=-1)
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight], dim=1)  # (R, M + N, d)
        total = ego
        for layer in range(self.n_ui_layers):
            side = spmm(self.ui_graph, ego, matrix_t=self.ui_graph_t)
            if self.cf_model == "lightgcn":
                ego = side
                total = total + ego
                continue
            ego = F.leaky_relu(self.gc_layers[layer](side)) + F.leaky_relu(self.bi_layers[layer](ego * side))
            p = self.mess_dropout[layer]
            if train and p > 0.0:
                keep = torch.rand(ego.shape[1:], generator=self.generator) >= p  # (M + N, d), shared by members
                ego = ego * keep.to(ego.device) / (1.0 - p)
            total = total + F.normalize(ego, p=2, dim=-1)
        final = total / (self.n_ui_layers + 1)
        return final[:, : self.n_users], final[:, self.n_users :] + F.normalize(h, p=2, dim=-1)

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        if self.build_item_graph:  # the epoch's first batch: G is rebuilt and carries gradients
            graph = self.learned_graph()
            self._graph, self._block = cast(Graph, tuple(t.detach() for t in graph)), None
            self.build_item_graph, self._reg_batch = False, users.numel()
            hops = partial(self._hops_through, graph)
        else:
            if self._block is None:
                assert self._graph is not None  # built by the epoch's first batch
                self._block = self._block_graph(self._graph)
            hops = partial(self._hops_block, self._block)
        user_all, item_all = self.forward_all(hops, train=True)
        u = user_all.index_select(1, users)  # (R, B, d)
        p, n = item_all.index_select(1, pos), item_all.index_select(1, neg)
        reg = sum(L.squared_norm(t) for t in (u, p, n)) / (2 * self._reg_batch)
        return L.bpr(L.scores(u, p), L.scores(u, n)) + self.reg_weight * reg

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        block = self._block_graph(self.learned_graph())  # rebuilt from the current weights, as full_sort_predict
        return self.forward_all(partial(self._hops_block, block), train=False)
