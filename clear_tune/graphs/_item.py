"""Item-item graphs from item features: FREEDOM's frozen cosine kNN graph, the mix of two modalities and
SMORE's max-pooled union of two graphs.

Example:
    >>> import torch
    >>> from clear_tune.graphs import knn_item_graph, max_pool_graphs
    >>> G = knn_item_graph(torch.eye(4), k=2)
    >>> G.shape, G.values().numel()
    (torch.Size([4, 4]), 8)
    >>> A = torch.tensor([[0.5, 0.0], [0.0, 1.0]]).to_sparse()
    >>> B = torch.tensor([[0.7, 0.2], [0.0, 0.3]]).to_sparse()
    >>> max_pool_graphs(A, B).to_dense().tolist()
    [[0.699999988079071, 0.20000000298023224], [0.0, 1.0]]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clear_tune.graphs._sparse import sparse_matrix, to_csr


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


def max_pool_graphs(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """SMORE's fusion graph (MMRec's ``max_pool_fusion``): the union of two sparse graphs' entries, each with the
    larger of its two values (an entry only one graph has keeps that graph's value). CSR, not re-normalised."""
    first, second = first.to_sparse_coo().coalesce(), second.to_sparse_coo().coalesce()
    n_rows, n_cols = first.shape
    indices = torch.cat([first.indices(), second.indices()], dim=1)  # (2, nnz_1 + nnz_2)
    values = torch.cat([first.values(), second.values()])
    keys, inverse = torch.unique(indices[0] * n_cols + indices[1], return_inverse=True)
    pooled = torch.full((keys.numel(),), float("-inf"), dtype=values.dtype, device=values.device)
    pooled.scatter_reduce_(0, inverse, values, reduce="amax")
    return sparse_matrix(torch.stack([keys // n_cols, keys % n_cols]), pooled, (n_rows, n_cols))
