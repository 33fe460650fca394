"""The user-user co-occurrence graph of DualGNN (and DRAGON), and its per-epoch sampled aggregation matrix.

MMRec builds it with ``preprocessing/dualgnn-gen-u-u-matrix.py`` (an O(users²) Python loop) and stores it
as ``user_graph_dict.npy``: for every user ``u``, ``[neighbours, counts]`` where ``count(u, v) = |I_u ∩ I_v|``
over the distinct TRAIN items of ``u`` and ``v`` (``v ≠ u``), the list being ``torch.topk`` of ``u``'s dense
float32 row of counts with ``k = min(#neighbours, 200)``: counts descending, at most 200.

:func:`user_cooccurrence` computes the same lists vectorised: the counts are the sparse product
``R Rᵀ`` of the binary train matrix (diagonal removed), and the top-k is ``torch.topk`` on each user's
dense row with that user's own ``k``, grouped by ``k`` and densified a chunk of rows at a time. Equal
counts are ordered as ``torch.topk`` orders them (``std::partial_sort``/``std::nth_element`` on the CPU,
which depend on the row length and ``k``), so every row, ties included, is exactly the script's when the
torch build is the same; the rows are always computed on the CPU for that reason.

:func:`first_k_neighbours` and :func:`sample_user_graph` are MMRec's ``DualGNN.topk_sample``: each user
keeps its first ``k`` (40) neighbours; a user with fewer (but at least one) is padded to ``k`` by repeated
draws, each copying a uniformly drawn entry of the list SO FAR (padding included, as MMRec's
``np.random.randint(0, len(list))`` in a loop that appends); the weights are the softmax of the (padded)
counts (``user_aggr_mode="softmax"``) or ``1/k`` (``"mean"``); a user without neighbours aggregates
nothing. The result is the ``(n_users, n_users)`` matrix ``W`` with ``h_u = Σ_v W[u, v] x_v`` (repeated
neighbours summed).

Example:
    >>> import torch
    >>> from clear_tune.graphs import first_k_neighbours, sample_user_graph, user_cooccurrence
    >>> users, items = torch.tensor([0, 0, 1, 1, 2]), torch.tensor([0, 1, 0, 1, 1])
    >>> g = user_cooccurrence(users, items, 4)
    >>> g.neighbours(0), g.neighbours(3)          # user 1 shares two items with user 0, user 2 one
    (([1, 2], [2.0, 1.0]), ([], []))
    >>> W = sample_user_graph(*first_k_neighbours(g, 3), generator=torch.Generator().manual_seed(0))
    >>> W.shape, round(float(W.to_dense()[3].sum()), 6), round(float(W.to_dense()[0].sum()), 6)
    (torch.Size([4, 4]), 0.0, 1.0)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from clear_tune.graphs._sparse import sparse_matrix


class UserNeighbours(NamedTuple):
    """Each user's ranked co-occurrence neighbours in CSR form (CPU tensors).

    ``index[indptr[u]:indptr[u+1]]`` are ``u``'s neighbours in MMRec's order (counts descending, torch.topk's
    tie order), ``weight`` the matching co-occurrence counts (float32, as the script stores them).
    """

    indptr: torch.Tensor  # (n_users + 1,) int64
    index: torch.Tensor  # type: ignore[assignment]  # (nnz,) int64; the CSR name, shadowing tuple.index on purpose
    weight: torch.Tensor  # (nnz,) float32

    def neighbours(self, user: int) -> tuple[list[int], list[float]]:
        """``[neighbours, counts]`` of one user as Python lists: one entry of MMRec's ``user_graph_dict``."""
        lo, hi = int(self.indptr[user]), int(self.indptr[user + 1])
        return self.index[lo:hi].tolist(), self.weight[lo:hi].tolist()


def cooccurrence_counts(users: torch.Tensor, items: torch.Tensor, n_users: int) -> sp.csr_matrix:
    """``|I_u ∩ I_v|`` for ``u ≠ v`` over distinct ``(user, item)`` pairs: ``(n_users, n_users)`` float32 CSR."""
    u, i = users.cpu().numpy(), items.cpu().numpy()
    n_items = int(i.max()) + 1 if i.size else 0
    binary = sp.csr_matrix((np.ones(u.size, np.float32), (u, i)), shape=(n_users, n_items))
    binary.sum_duplicates()
    binary.data[:] = 1.0  # the script intersects item SETS: a repeated interaction counts once
    counts = (binary @ binary.T).tocoo()
    off_diagonal = counts.row != counts.col
    return sp.csr_matrix(
        (counts.data[off_diagonal], (counts.row[off_diagonal], counts.col[off_diagonal])), shape=(n_users, n_users)
    )


def user_cooccurrence(
    users: torch.Tensor, items: torch.Tensor, n_users: int, *, cap: int = 200, chunk_elements: int = 1 << 24
) -> UserNeighbours:
    """MMRec's ``user_graph_dict`` from ``(E,)`` train ``users``/``items``: each user's top-``cap`` neighbours.

    Rows are densified ``chunk_elements`` floats at a time (64 MiB by default).
    """
    counts = cooccurrence_counts(users, items, n_users)
    k_of = np.minimum(np.diff(counts.indptr), cap)  # (n_users,) the script's int(user_num[i]) capped at 200
    indptr = np.zeros(n_users + 1, np.int64)
    np.cumsum(k_of, out=indptr[1:])
    index = torch.empty(int(indptr[-1]), dtype=torch.int64)
    weight = torch.empty(int(indptr[-1]), dtype=torch.float32)
    rows_per_chunk = max(1, chunk_elements // max(n_users, 1))
    for k in np.unique(k_of[k_of > 0]):  # one torch.topk per (k, chunk): the tie order depends on k
        rows_k = np.flatnonzero(k_of == k)
        for start in range(0, rows_k.size, rows_per_chunk):
            rows = rows_k[start : start + rows_per_chunk]
            dense = torch.from_numpy(counts[rows].toarray())  # (chunk, n_users) float32, like the script's rows
            top = torch.topk(dense, int(k), dim=1)
            slots = torch.from_numpy(indptr[rows]).unsqueeze(1) + torch.arange(int(k))  # (chunk, k)
            index[slots.reshape(-1)] = top.indices.reshape(-1)
            weight[slots.reshape(-1)] = top.values.reshape(-1)
    return UserNeighbours(torch.from_numpy(indptr), index, weight)


def first_k_neighbours(graph: UserNeighbours, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each user's first ``k`` neighbours and counts, ``(n_users, k)`` each (zero past the end), and their
    number ``(n_users,)`` = ``min(#neighbours, k)``."""
    starts, lengths = graph.indptr[:-1], (graph.indptr[1:] - graph.indptr[:-1]).clamp(max=k)
    present = torch.arange(k) < lengths.unsqueeze(1)  # (n_users, k)
    if graph.index.numel() == 0:
        return torch.zeros(present.shape, dtype=torch.int64), torch.zeros(present.shape), lengths
    slots = (starts.unsqueeze(1) + torch.arange(k)).clamp(max=graph.index.numel() - 1)  # (n_users, k)
    index = torch.where(present, graph.index[slots], 0)
    weight = torch.where(present, graph.weight[slots], 0.0)
    return index, weight, lengths


def sample_user_graph(
    index: torch.Tensor,
    weight: torch.Tensor,
    lengths: torch.Tensor,
    *,
    mode: str = "softmax",
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """One epoch's ``(n_users, n_users)`` CSR aggregation matrix from :func:`first_k_neighbours` (module docstring).

    The padding draws come from ``generator`` (CPU); at list length ``j`` every short user draws one
    position in ``[0, j)`` at once, the same distribution as MMRec's per-user loop.
    """
    if mode not in ("softmax", "mean"):
        raise ValueError(f"user_aggr_mode={mode!r} must be 'softmax' or 'mean'")
    n_users, k = index.shape
    index, weight = index.clone(), weight.clone()
    has_any = lengths > 0
    for j in range(max(int(lengths[has_any].min()) if has_any.any() else k, 1), k):
        rows = (has_any & (lengths <= j)).nonzero().squeeze(1)  # users whose list has exactly j entries now
        if rows.numel():
            drawn = torch.randint(0, j, (rows.numel(),), generator=generator)
            index[rows, j], weight[rows, j] = index[rows, drawn], weight[rows, drawn]
    users = has_any.nonzero().squeeze(1)
    values = torch.softmax(weight[users], dim=1) if mode == "softmax" else torch.full((users.numel(), k), 1.0 / k)
    coo = torch.stack([users.repeat_interleave(k), index[users].reshape(-1)])  # (2, |users|·k)
    return sparse_matrix(coo.to(device), values.reshape(-1).to(device), n_users)
