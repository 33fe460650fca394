"""Item-item graphs from item features: FREEDOM's frozen cosine kNN graph and the mix of two modalities.

Example:
    >>> import torch
    >>> from clear_tune.graphs import knn_item_graph
    >>> G = knn_item_graph(torch.eye(4), k=2)
    >>> G.shape, G.values().numel()
    (torch.Size([4, 4]), 8)
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
