"""Similarity-weighted kNN item graphs over (possibly learned, per-member) features: LATTICE's item graphs.

LATTICE (MMRec's ``build_sim``, ``build_knn_neighbourhood``, ``compute_normalized_laplacian``) keeps the
cosine VALUES of each row's top-k neighbours (itself included) and normalises with the row sums of the
kept values, ``D^-1/2 S D^-1/2`` with ``D = diag(S 1)`` (an infinite ``d^-1/2`` becomes 0). MMRec does it
on dense ``N × N`` matrices; here a graph is held as per-row neighbour lists ``indices, values`` of shape
``(..., N, K)`` (a leading member axis ``R`` when every member has its own features), computed
``chunk_rows`` rows at a time, so no dense ``N × N`` matrix is ever held, forward or backward: the top-k
values keep their gradient to the features, and their backward scatters into one chunk at a time.

* :func:`cosine_topk` - top-k cosine neighbours of every row (MMRec's ``x / ‖x‖``, no epsilon);
* :func:`sym_normalise_rows` - ``D^-1/2 S D^-1/2`` on neighbour lists;
* :func:`knn_similarity_graph` - the two above as one frozen ``(N, N)`` CSR (LATTICE's original graphs);
* :func:`rows_times_dense` - ``S @ X`` for neighbour lists, differentiable in both;
* :func:`block_diagonal` - per-member COO triplets as one block-diagonal ``(R·N)²`` CSR, for constant
  per-member graphs applied with :func:`~clear_tune.graphs.spmm` to an ``(R·N, d)`` stack.

Example:
    >>> import torch
    >>> from clear_tune.graphs import knn_similarity_graph
    >>> G = knn_similarity_graph(torch.eye(4) + 0.1, k=2)
    >>> G.shape, G.values().numel()
    (torch.Size([4, 4]), 8)
"""

from __future__ import annotations

import torch

from clear_tune.graphs._sparse import sparse_matrix


def cosine_topk(features: torch.Tensor, k: int, *, chunk_rows: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, indices)`` of each row's ``k`` largest cosine similarities, ``(..., N, k)`` each.

    ``features`` is ``(N, d)`` or a member stack ``(R, N, d)``. Rows are scaled by ``1 / ‖x‖`` exactly as
    MMRec's ``build_sim`` (a zero row gives NaN there and here). ``values`` carry the gradient to ``features``.
    """
    unit = features / features.norm(p=2, dim=-1, keepdim=True)  # (..., N, d)
    k = min(k, unit.shape[-2])
    values, indices = [], []
    for start in range(0, unit.shape[-2], chunk_rows):
        sim = unit[..., start : start + chunk_rows, :] @ unit.transpose(-1, -2)  # (..., chunk, N)
        top = sim.topk(k, dim=-1)
        values.append(top.values)
        indices.append(top.indices)
    return torch.cat(values, dim=-2), torch.cat(indices, dim=-2)


def sym_normalise_rows(indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Values of ``D^-1/2 S D^-1/2`` for neighbour lists ``(..., N, K)``; ``D`` = row sums of ``S``.

    Repeated columns in a row are separate entries of one sum, as in a dense matrix that adds them.
    """
    d_inv_sqrt = values.sum(-1).pow(-0.5)  # (..., N)
    d_inv_sqrt = torch.where(torch.isinf(d_inv_sqrt), torch.zeros_like(d_inv_sqrt), d_inv_sqrt)
    flat = d_inv_sqrt.reshape(-1, d_inv_sqrt.shape[-1])  # (R', N)
    cols = flat.gather(1, indices.reshape(flat.shape[0], -1)).view_as(values)  # d_j^-1/2 per entry
    return d_inv_sqrt.unsqueeze(-1) * values * cols


def knn_similarity_graph(features: torch.Tensor, *, k: int) -> torch.Tensor:
    """LATTICE's frozen graph from ``features (N, d)``: cosine top-k with values, ``D^-1/2 S D^-1/2``, CSR."""
    with torch.no_grad():
        values, indices = cosine_topk(features.float(), k)
        values = sym_normalise_rows(indices, values)
    n = features.shape[0]
    rows = torch.arange(n, device=features.device).repeat_interleave(indices.shape[1])
    return sparse_matrix(torch.stack([rows, indices.reshape(-1)]), values.reshape(-1), n)


def rows_times_dense(indices: torch.Tensor, values: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``S @ X`` per member for neighbour lists ``(R, N, K)`` and ``dense (R, N, d)`` -> ``(R, N, d)``.

    A gather of ``R·N·K`` rows: differentiable in ``values`` and ``dense`` (use it where the graph carries
    gradients; a constant graph is faster through :func:`block_diagonal` and ``spmm``).
    """
    members, n, width = dense.shape
    offsets = (torch.arange(members, device=dense.device) * n).view(members, 1, 1)
    rows = dense.reshape(members * n, width).index_select(0, (indices + offsets).reshape(-1))
    return (values.unsqueeze(-1) * rows.view(*indices.shape, width)).sum(-2)


def block_diagonal(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """Block-diagonal ``(R·n)²`` CSR from per-member COO entries: ``values (R, nnz)``, ``rows``/``cols``
    ``(nnz,)`` (shared) or ``(R, nnz)``; duplicates are summed. Member ``m``'s block is rows ``m·n …``."""
    members = values.shape[0]
    offsets = (torch.arange(members, device=values.device) * n).unsqueeze(1)  # (R, 1)
    rows, cols = (rows.expand_as(values) + offsets).reshape(-1), (cols.expand_as(values) + offsets).reshape(-1)
    return sparse_matrix(torch.stack([rows, cols]), values.reshape(-1), members * n)
