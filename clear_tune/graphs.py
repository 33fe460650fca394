"""Sparse graph builders shared by the backbones: vectorised torch code that runs on the data's device.

* :func:`bipartite_adjacency` - the symmetric-normalised user-item graph D^-1/2 A D^-1/2 of LightGCN.
* :func:`knn_item_graph` - FREEDOM's frozen item-item graph: cosine top-k of raw features, normalised.
* :func:`degree_sensitive_edges` - FREEDOM's degree-sensitive edge pruning (keep ∝ 1/sqrt(d_u d_i)).
* :func:`uniform_edge_dropout` - keep each edge with the same probability (CLEAR's A^drop).
* :func:`cached` - memoise any of these in ``ModelContext.cache`` so one dataset builds them once.

Node ids in the bipartite graph are ``[users | items]``: user ``u`` is node ``u``, item ``i`` is node
``n_users + i``.

Example:
    >>> import torch
    >>> from clear_tune.graphs import bipartite_adjacency
    >>> users, items = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1])
    >>> A = bipartite_adjacency(users, items, n_users=2, n_items=2)
    >>> A.shape, A.values().numel()
    (torch.Size([4, 4]), 6)
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, TypeVar

import torch
import torch.nn.functional as F

T = TypeVar("T")


def cached(cache: dict[str, Any], key: str, build: Callable[[], T]) -> T:
    """``cache[key]``, building it with ``build()`` the first time (graphs are per dataset, not per trial)."""
    if key not in cache:
        cache[key] = build()
    return cache[key]


def to_csr(matrix: torch.Tensor) -> torch.Tensor:
    """CSR copy of a sparse matrix: about 3x faster than COO in ``torch.sparse.mm`` on CPU."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta": we only use its stable spmm path
        warnings.simplefilter("ignore", UserWarning)
        return matrix.coalesce().to_sparse_csr() if matrix.layout == torch.sparse_coo else matrix.to_sparse_csr()


def sparse_matrix(indices: torch.Tensor, values: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """CSR matrix from ``(2, nnz)`` COO ``indices`` and ``values`` (duplicates summed)."""
    shape = tuple(int(n) for n in size) if isinstance(size, tuple) else (int(size), int(size))
    return to_csr(torch.sparse_coo_tensor(indices, values, shape, check_invariants=False))


def transpose(matrix: torch.Tensor) -> torch.Tensor:
    """CSR transpose, computed once so the backward of :func:`spmm` never re-sorts indices per step."""
    return to_csr(matrix.to_sparse_coo().t())


class _SparseTimesDense(torch.autograd.Function):
    # torch's own backward for sparse @ dense transposes and re-coalesces the sparse matrix on every call;
    # the transpose is a constant here, so we hand it in once.
    # Under bf16 autocast the dense side may arrive in bf16; sparse kernels want one dtype, and propagation
    # is memory-bound anyway, so it runs in the graph's float32 and the gradient goes back in dense's dtype.
    @staticmethod
    def forward(ctx, matrix: torch.Tensor, matrix_t: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        ctx.matrix_t, ctx.dense_dtype = matrix_t, dense.dtype
        with torch.autocast(dense.device.type, enabled=False):
            return torch.sparse.mm(matrix, dense.to(matrix.dtype))

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[None, None, torch.Tensor]:
        with torch.autocast(grad_out.device.type, enabled=False):
            grad = torch.sparse.mm(ctx.matrix_t, grad_out.to(ctx.matrix_t.dtype))
        return None, None, grad.to(ctx.dense_dtype)


def spmm(matrix: torch.Tensor, dense: torch.Tensor, *, matrix_t: torch.Tensor | None = None) -> torch.Tensor:
    """``matrix @ dense`` with gradient to ``dense`` only; ``matrix_t`` is its transpose (``None``: symmetric)."""
    return _SparseTimesDense.apply(matrix, matrix if matrix_t is None else matrix_t, dense)


def edge_norm(users: torch.Tensor, items: torch.Tensor, n_users: int, n_items: int) -> torch.Tensor:
    """``1 / sqrt(d_u d_i)`` for every edge ``(users[e], items[e])``, degrees counted over these edges."""
    deg_u = torch.bincount(users, minlength=n_users).float()
    deg_i = torch.bincount(items, minlength=n_items).float()
    # degrees are >= 1 for every endpoint of an edge, so no division by zero on the gathered values
    return (deg_u[users] * deg_i[items]).rsqrt()


def bipartite_adjacency(
    users: torch.Tensor,
    items: torch.Tensor,
    *,
    n_users: int,
    n_items: int,
    edge_values: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric ``(n_users + n_items)²`` CSR adjacency with both directions of every edge.

    ``edge_values`` ``(E,)`` defaults to the LightGCN normalisation :func:`edge_norm`; pass your own to
    build a re-weighted graph.
    """
    if edge_values is None:
        edge_values = edge_norm(users, items, n_users, n_items)
    item_nodes = items + n_users
    rows = torch.cat([users, item_nodes])  # (2E,)
    cols = torch.cat([item_nodes, users])
    return sparse_matrix(torch.stack([rows, cols]), torch.cat([edge_values, edge_values]), n_users + n_items)


def knn_item_graph(features: torch.Tensor, *, k: int, chunk_size: int = 2048) -> torch.Tensor:
    """FREEDOM's frozen item-item graph from raw ``features (N, d)``: ``(N, N)`` CSR, ``N·k`` entries.

    Each item links to its ``k`` most cosine-similar items (itself included, as in MMRec), with weight
    ``1 / sqrt(r_i r_j)`` where ``r`` are the row degrees (= ``k``). Similarities are computed ``chunk_size``
    rows at a time so no dense ``N × N`` matrix is ever held.
    """
    n_items = features.shape[0]
    k = min(k, n_items)
    unit = F.normalize(features.float(), dim=1)  # (N, d)
    neighbours = torch.empty(n_items, k, dtype=torch.long, device=features.device)
    for start in range(0, n_items, chunk_size):
        sim = unit[start : start + chunk_size] @ unit.T  # (chunk, N)
        neighbours[start : start + chunk_size] = sim.topk(k, dim=1).indices
    rows = torch.arange(n_items, device=features.device).repeat_interleave(k)  # (N·k,)
    cols = neighbours.reshape(-1)
    row_degree = torch.full((n_items,), float(k), device=features.device)
    values = (row_degree[rows] * row_degree[cols]).rsqrt()
    return sparse_matrix(torch.stack([rows, cols]), values, n_items)


def mix_graphs(first: torch.Tensor, second: torch.Tensor, *, weight: float) -> torch.Tensor:
    """``weight · first + (1 - weight) · second`` for two sparse matrices of one shape (FREEDOM's A_mm)."""
    return to_csr(weight * first.to_sparse_coo() + (1.0 - weight) * second.to_sparse_coo())


def degree_sensitive_edges(
    edge_weights: torch.Tensor, *, keep_ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Indices of ``int(E · keep_ratio)`` edges drawn without replacement with probability ∝ ``edge_weights``.

    FREEDOM passes ``edge_norm`` (1/sqrt(d_u d_i)), so edges between high-degree nodes are pruned first.
    """
    n_keep = max(1, int(edge_weights.numel() * keep_ratio))
    weights = edge_weights if generator is None else edge_weights.to(generator.device)  # draw where the RNG lives
    return torch.multinomial(weights, n_keep, replacement=False, generator=generator).to(edge_weights.device)


def uniform_edge_dropout(
    n_edges: int, *, keep_ratio: float, device: torch.device | str = "cpu", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Indices of the edges kept when each is dropped independently with probability ``1 - keep_ratio``."""
    draw_on = device if generator is None else generator.device  # draw where the RNG lives
    keep = torch.rand(n_edges, device=draw_on, generator=generator) < keep_ratio
    return keep.nonzero().squeeze(1).to(device)


def propagate(adjacency: torch.Tensor, embeddings: torch.Tensor, n_layers: int) -> torch.Tensor:
    """LightGCN propagation: mean of ``[E, A E, A² E, ...]`` over ``n_layers`` hops; same shape as ``embeddings``.

    ``adjacency`` must be symmetric (as every bipartite graph built here is).
    """
    layer, total = embeddings, embeddings
    for _ in range(n_layers):
        layer = spmm(adjacency, layer)  # (n_nodes, d); the bipartite graph is symmetric
        total = total + layer
    return total / (n_layers + 1)
