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
import torch.nn.functional as F

from clear_tune.graphs import (
    bipartite_adjacency,
    bipartite_graph,
    cached,
    edge_norm,
    knn_item_graph,
    knn_similarity_graph,
    mix_graphs,
    sparse_matrix,
    sqrt_row_normalised,
    transpose,
)
from clear_tune.models._base import ModelContext


def ui_adjacency(ctx: ModelContext) -> torch.Tensor:
    """The symmetric-normalised train graph ``D^-1/2 A D^-1/2``, ``(M + N)²`` CSR."""
    return cached(
        ctx.cache,
        "ui_adjacency",
        lambda: bipartite_adjacency(ctx.train_users, ctx.train_items, n_users=ctx.n_users, n_items=ctx.n_items),
    )


def ui_edge_norm(ctx: ModelContext) -> torch.Tensor:
    """``1/sqrt(d_u d_i)`` per train edge ``(E,)``: FREEDOM's degree-sensitive pruning weights."""
    return cached(
        ctx.cache, "ui_edge_norm", lambda: edge_norm(ctx.train_users, ctx.train_items, ctx.n_users, ctx.n_items)
    )


def modality_knn_graph(ctx: ModelContext, *, knn_k: int, image_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """FREEDOM's frozen ``A_mm = w·kNN(image) + (1 − w)·kNN(text)`` over the RAW features, and its transpose."""

    def build() -> tuple[torch.Tensor, torch.Tensor]:
        image_feat, text_feat = ctx.image_feat, ctx.text_feat
        assert image_feat is not None and text_feat is not None
        image = cached(ctx.cache, f"knn_image_{knn_k}", lambda: knn_item_graph(image_feat, k=knn_k))
        text = cached(ctx.cache, f"knn_text_{knn_k}", lambda: knn_item_graph(text_feat, k=knn_k))
        mixed = mix_graphs(image, text, weight=image_weight)
        return mixed, transpose(mixed)

    return cached(ctx.cache, f"mm_graph_{knn_k}_{image_weight}", build)


def ui_graph(ctx: ModelContext, adj_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The train graph normalised as MMRec's ``adj_type`` (:func:`~clear_tune.graphs.bipartite_graph`) and its
    transpose; ``"pre"`` is :func:`ui_adjacency` itself (symmetric)."""
    if adj_type == "pre":
        adjacency = ui_adjacency(ctx)
        return adjacency, adjacency

    def build() -> tuple[torch.Tensor, torch.Tensor]:
        graph = bipartite_graph(
            ctx.train_users, ctx.train_items, n_users=ctx.n_users, n_items=ctx.n_items, adj_type=adj_type
        )
        return graph, transpose(graph)

    return cached(ctx.cache, f"ui_graph_{adj_type}", build)


def similarity_knn_graphs(
    ctx: ModelContext, *, knn_k: int, text_knn_k: int | None = None
) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """LATTICE's frozen ``((S_img, S_img^T), (S_txt, S_txt^T))``: cosine top-``knn_k`` of the RAW features with
    the similarity values kept, each ``D^-1/2 S D^-1/2`` (:func:`~clear_tune.graphs.knn_similarity_graph`); MGCN's
    and SMORE's item graphs too (MMRec's sparse ``build_knn_normalized_graph(..., norm_type='sym')``, the same
    graph). ``text_knn_k`` (default ``knn_k``): another k for the text graph (SMORE's ``text_knn_k``)."""

    def build(features: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        graph = knn_similarity_graph(features, k=k)
        return graph, transpose(graph)

    image_feat, text_feat = ctx.image_feat, ctx.text_feat
    assert image_feat is not None and text_feat is not None
    text_k = knn_k if text_knn_k is None else text_knn_k
    return (
        cached(ctx.cache, f"sim_knn_image_{knn_k}", lambda: build(image_feat, knn_k)),
        cached(ctx.cache, f"sim_knn_text_{text_k}", lambda: build(text_feat, text_k)),
    )


def unit_features(ctx: ModelContext) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw features with rows scaled to unit norm (``F.normalize``, as SLMRec loads them), built once."""
    image_feat, text_feat = ctx.image_feat, ctx.text_feat
    assert image_feat is not None and text_feat is not None
    return cached(ctx.cache, "unit_features", lambda: (F.normalize(image_feat, dim=1), F.normalize(text_feat, dim=1)))


def user_cooccurrence_graph(ctx: ModelContext, *, cap: int = 200):
    """DualGNN's user-user co-occurrence lists (MMRec's ``user_graph_dict``, top-``cap`` per user), CPU tensors
    (:func:`~clear_tune.graphs.user_cooccurrence`); built once per dataset."""
    from clear_tune.graphs import user_cooccurrence

    return cached(
        ctx.cache,
        f"user_cooccurrence_{cap}",
        lambda: user_cooccurrence(ctx.train_users, ctx.train_items, ctx.n_users, cap=cap),
    )


def ui_edge_list(ctx: ModelContext):
    """Both directions of every train edge over ``[users | items]`` as an :class:`~clear_tune.graphs.EdgeList`
    (MMRec's PyG ``edge_index`` of MMGCN and GRCN), for message passing with learned weights."""
    from clear_tune.graphs import bipartite_edges

    return cached(
        ctx.cache,
        "ui_edge_list",
        lambda: bipartite_edges(ctx.train_users, ctx.train_items, n_users=ctx.n_users, n_items=ctx.n_items),
    )


def ui_aggregation(ctx: ModelContext, aggr: str) -> tuple[torch.Tensor, torch.Tensor]:
    """PyG's ``aggr`` (``"mean"``: ``D^-1 A``, row = target; ``"add"``: ``A``) over :func:`ui_edge_list`, no self
    loops, as ``(A, Aᵀ)`` CSR (MMGCN's ``BaseModel``). A node without edges aggregates to zero."""

    def build() -> tuple[torch.Tensor, torch.Tensor]:
        edges = ui_edge_list(ctx)
        if aggr == "mean":
            values = edges.counts.float().reciprocal()[edges.dst]
        elif aggr == "add":
            values = torch.ones(edges.n_edges, device=edges.dst.device)
        else:
            raise ValueError(f"aggr {aggr!r} must be 'mean' or 'add'")
        return edges.csr(values), edges.csr(values, transpose=True)

    return cached(ctx.cache, f"ui_aggregation_{aggr}", build)


def ui_block(ctx: ModelContext) -> tuple[torch.Tensor, torch.Tensor]:
    """The user-item block ``R`` of :func:`ui_adjacency` (``(M, N)``, ``1/sqrt(d_u d_i)`` per edge) and ``Rᵀ``
    (:func:`~clear_tune.graphs.interaction_block`): how MGCN and SMORE carry item views to the users."""
    from clear_tune.graphs import interaction_block

    def build() -> tuple[torch.Tensor, torch.Tensor]:
        block = interaction_block(ctx.train_users, ctx.train_items, n_users=ctx.n_users, n_items=ctx.n_items)
        return block, transpose(block)

    return cached(ctx.cache, "ui_block", build)


def max_pooled_knn_graph(ctx: ModelContext, *, image_knn_k: int, text_knn_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SMORE's frozen fusion graph: :func:`~clear_tune.graphs.max_pool_graphs` of the two
    :func:`similarity_knn_graphs` (image top-``image_knn_k``, text top-``text_knn_k``), and its transpose."""
    from clear_tune.graphs import max_pool_graphs

    def build() -> tuple[torch.Tensor, torch.Tensor]:
        (image, _), (text, _) = similarity_knn_graphs(ctx, knn_k=image_knn_k, text_knn_k=text_knn_k)
        fused = max_pool_graphs(image, text)
        return fused, transpose(fused)

    return cached(ctx.cache, f"max_pooled_knn_{image_knn_k}_{text_knn_k}", build)


def ui_interaction_matrix(ctx: ModelContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LGMRec's rectangular 0/1 train matrix ``R (M, N)``, its transpose, and ``1/(d_u + 1e-7)`` per user
    ``(M, 1)`` (:func:`~clear_tune.graphs.interaction_matrix`, :func:`~clear_tune.graphs.inverse_degrees`)."""
    from clear_tune.graphs import interaction_matrix, inverse_degrees

    def build() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        matrix = interaction_matrix(ctx.train_users, ctx.train_items, n_users=ctx.n_users, n_items=ctx.n_items)
        return matrix, transpose(matrix), inverse_degrees(ctx.train_users, ctx.n_users)

    return cached(ctx.cache, "ui_interaction_matrix", build)


def row_normalised_graphs(ctx: ModelContext) -> dict[str, torch.Tensor]:
    """MMSSL's user-item graphs, built once per dataset: ``ui = D_u^-1/2 R`` ``(M, N)``, ``iu = D_i^-1/2 Rᵀ`` ``(N, M)``
    with their transposes ``ui_t``, ``iu_t`` (CSR, :func:`~clear_tune.graphs.sqrt_row_normalised`), and the binary
    interaction matrix ``R`` itself (``interactions``, CSR). Repeated train pairs count once, as in a 0/1 matrix."""

    def build() -> dict[str, torch.Tensor]:
        pairs = torch.unique(ctx.train_users * ctx.n_items + ctx.train_items)
        users, items = pairs // ctx.n_items, pairs % ctx.n_items
        ui = sqrt_row_normalised(users, items, n_rows=ctx.n_users, n_cols=ctx.n_items)
        iu = sqrt_row_normalised(items, users, n_rows=ctx.n_items, n_cols=ctx.n_users)
        ones = torch.ones(users.numel(), device=users.device)
        interactions = sparse_matrix(torch.stack([users, items]), ones, (ctx.n_users, ctx.n_items))
        return {"ui": ui, "ui_t": transpose(ui), "iu": iu, "iu_t": transpose(iu), "interactions": interactions}

    return cached(ctx.cache, "row_normalised_graphs", build)
