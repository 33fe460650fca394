"""Sparse-times-dense products that backbones build on, with the member axis folded into the columns.

A model array trains ``R`` members at once (:mod:`clear_tune.models`), so node embeddings arrive as
``(R, n, d)``. One graph serves every member: :func:`spmm` views the stack as one ``n × R·d`` operand,
runs ONE sparse product and hands back ``(R, n, d)``. A CSR product computes every output column from
the same row entries in the same order, so each member's columns are exactly what it would get alone.
The result is a transposed view whose memory is ``(n, R, d)``, which is what the next product wants:
a chain of products (:func:`propagate`) never copies.

Example:
    >>> import torch
    >>> from clear_tune.graphs import sparse_matrix, spmm
    >>> A = sparse_matrix(torch.tensor([[0, 1], [1, 0]]), torch.tensor([1.0, 2.0]), 2)
    >>> X = torch.arange(8.0).reshape(2, 2, 2)   # two members, two nodes, width two
    >>> spmm(A, X)[1].tolist()                   # member 1 alone: A @ X[1]
    [[6.0, 7.0], [8.0, 10.0]]
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch

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
    """``matrix @ dense`` with gradient to ``dense`` only; ``matrix_t`` is its transpose (``None``: symmetric).

    ``dense`` is ``(n, d)`` or a member stack ``(R, n, d)``; the result has the same layout with
    ``matrix.shape[0]`` rows.
    """
    matrix_t = matrix if matrix_t is None else matrix_t
    if dense.dim() == 2:
        return _SparseTimesDense.apply(matrix, matrix_t, dense)
    members, n, d = dense.shape
    folded = dense.transpose(0, 1).reshape(n, members * d)  # a view when dense came from spmm
    out = _SparseTimesDense.apply(matrix, matrix_t, folded)  # (m, R·d)
    return out.view(matrix.shape[0], members, d).transpose(0, 1)  # (R, m, d)


def propagate(adjacency: torch.Tensor, embeddings: torch.Tensor, n_layers: int) -> torch.Tensor:
    """LightGCN propagation: mean of ``[E, A E, A² E, ...]`` over ``n_layers`` hops; same shape as ``embeddings``.

    ``embeddings`` is ``(n, d)`` or ``(R, n, d)``; ``adjacency`` must be symmetric (as every bipartite graph
    built here is).
    """
    layer, total = embeddings, embeddings
    for _ in range(n_layers):
        layer = spmm(adjacency, layer)
        total = total + layer
    return total / (n_layers + 1)
