"""One-sided (row) normalised interaction graphs and dense interaction rows: MMSSL's user-item graphs.

MMSSL's ``csr_norm(·, mean_flag=True)`` scales each ROW of a count matrix ``C`` by ``(d + 1e-8)^-1/2`` with ``d``
its row sums, and leaves the columns alone: ``D_r^-1/2 C``. The user→item graph is ``D_u^-1/2 R`` and the
item→user graph ``D_i^-1/2 Rᵀ`` (each normalised by its own rows, so one is not the other's transpose). MMSSL
also builds such graphs from generated ``(user, item)`` lists in which a pair may repeat: repeats add up,
as in ``scipy.sparse.csr_matrix((ones, (x, y)))``.

* :func:`sqrt_row_normalised` - ``D_r^-1/2 C`` as CSR from COO lists; with ``(R, E)`` lists, one block per
  member on the diagonal of an ``(R·n_rows) × (R·n_cols)`` CSR (apply it with :func:`~clear_tune.graphs.spmm`
  to a member stack folded as ``(R·n_cols, d)``);
* :func:`dense_rows` - rows of a CSR matrix as a dense ``(B, n_cols)`` tensor (MMSSL's ``R[users].todense()``).

Example:
    >>> import torch
    >>> from clear_tune.graphs import sqrt_row_normalised
    >>> G = sqrt_row_normalised(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1]), n_rows=2, n_cols=2)
    >>> [[round(v, 4) for v in row] for row in G.to_dense().tolist()]   # row 1 holds one pair twice: 2 / sqrt(2)
    [[0.7071, 0.7071], [0.0, 1.4142]]
"""

from __future__ import annotations

import torch

from clear_tune.graphs._sparse import sparse_matrix


def sqrt_row_normalised(rows: torch.Tensor, cols: torch.Tensor, *, n_rows: int, n_cols: int) -> torch.Tensor:
    """``D_r^-1/2 C`` (``d`` = row sums of ``C``, plus 1e-8) as CSR, ``C`` counting the ``(rows, cols)`` pairs.

    ``rows``/``cols`` are ``(E,)`` (an ``n_rows × n_cols`` matrix) or ``(R, E)`` (one of them may be ``(E,)``, shared):
    then member ``m``'s matrix is the block at rows ``m·n_rows …`` and columns ``m·n_cols …``. A row without
    pairs is a zero row.
    """
    if rows.dim() == 2 or cols.dim() == 2:
        members = (rows if rows.dim() == 2 else cols).shape[0]
        offsets = torch.arange(members, device=cols.device).unsqueeze(1)  # (R, 1)
        rows = (rows.expand(members, -1) + offsets * n_rows).reshape(-1)
        cols = (cols.expand(members, -1) + offsets * n_cols).reshape(-1)
        n_rows, n_cols = members * n_rows, members * n_cols
    ones = torch.ones(rows.numel(), device=rows.device)
    degree = torch.zeros(n_rows, device=rows.device).index_add_(0, rows, ones)
    values = (degree[rows] + 1e-8).pow(-0.5)  # repeats are separate entries of one sum: count · d^-1/2
    return sparse_matrix(torch.stack([rows, cols]), values, (n_rows, n_cols))


def dense_rows(matrix: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Rows ``rows`` ``(B,)`` of a CSR ``matrix`` as a dense ``(B, n_cols)`` tensor of its dtype (repeats allowed)."""
    crow, col, values = matrix.crow_indices(), matrix.col_indices(), matrix.values()
    starts, counts = crow[rows], crow[rows + 1] - crow[rows]  # (B,) each
    owner = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), counts)  # (nnz_B,)
    first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    entry = torch.repeat_interleave(starts, counts) + torch.arange(owner.numel(), device=rows.device) - first
    out = torch.zeros(rows.numel(), matrix.shape[1], dtype=values.dtype, device=values.device)
    out[owner, col[entry]] = values[entry]
    return out
