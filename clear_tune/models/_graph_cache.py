"""The graphs of one dataset that several backbones read, built once per :class:`ModelContext` and memoised.

Backbones never build these themselves and never import each other for them: LightGCN, FREEDOM, CLEAR and
the GCN baselines all take the normalised train graph from :func:`ui_adjacency`, FREEDOM and CLEAR the
frozen modality kNN graph from :func:`modality_knn_graph`, and so on. Builders are in
:mod:`clear_tune.graphs`; this module only decides what is cached under which key.

Example:
    >>> import torch
    >>> from clear_tune.models import ModelContext
    >>> from clear_tune.models._graph_cache import ui_adjacency
    >>> ctx = ModelContext(2, 2, torch.tensor([0, 1]), torch.tensor([1, 0]), None, None, torch.device("cpu"))
    >>> ui_adjacency(ctx) is ui_adjacency(ctx)
    True
"""

from __future__ import annotations

import torch

from clear_tune.graphs import bipartite_adjacency, cached, edge_norm, knn_item_graph, mix_graphs, transpose
from clear_tune.models._base import ModelContext


def ui_adjacency(ctx: ModelContext) -> torch.Tensor:
    """The symmetric-normalised train graph ``D^-1/2 A D^-1/2``, ``(M + N)²`` CSR."""
    return cached(ctx.cache, "ui_adjacency",
                  lambda: bipartite_adjacency(ctx.train_users, ctx.train_items, n_users=ctx.n_users, n_items=ctx.n_items))


def ui_edge_norm(ctx: ModelContext) -> torch.Tensor:
    """``1/sqrt(d_u d_i)`` per train edge ``(E,)``: FREEDOM's degree-sensitive pruning weights."""
    return cached(ctx.cache, "ui_edge_norm", lambda: edge_norm(ctx.train_users, ctx.train_items, ctx.n_users, ctx.n_items))


def modality_knn_graph(ctx: ModelContext, *, knn_k: int, image_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """FREEDOM's frozen ``A_mm = w·kNN(image) + (1 − w)·kNN(text)`` over the RAW features, and its transpose."""

    def build() -> tuple[torch.Tensor, torch.Tensor]:
        assert ctx.image_feat is not None and ctx.text_feat is not None
        image = cached(ctx.cache, f"knn_image_{knn_k}", lambda: knn_item_graph(ctx.image_feat, k=knn_k))
        text = cached(ctx.cache, f"knn_text_{knn_k}", lambda: knn_item_graph(ctx.text_feat, k=knn_k))
        mixed = mix_graphs(image, text, weight=image_weight)
        return mixed, transpose(mixed)

    return cached(ctx.cache, f"mm_graph_{knn_k}_{image_weight}", build)
