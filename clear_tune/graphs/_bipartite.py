"""The user-item graph under the normalisations MMRec's models name with ``adj_type`` (SLMRec, LATTICE).

Node ids are ``[users | items]`` as in :func:`~clear_tune.graphs.bipartite_adjacency`; ``A`` is the
symmetric 0/1 bipartite adjacency, ``D`` its row sums (of ``A + I`` for ``"norm"``), and an infinite
``d^-1`` or ``d^-1/2`` (a node without edges) becomes 0, as MMRec's ``d_inv[np.isinf(d_inv)] = 0``:

* ``"pre"``   - ``D^-1/2 A D^-1/2`` (LightGCN's graph; MMRec's ``+1e-8`` on the degrees vanishes in float32);
* ``"norm"``  - ``D^-1 (A + I)`` (LATTICE's graph, row-normalised with self loops);
* ``"gcmc"``  - ``D^-1 A``;
* ``"mean"``  - ``D^-1 A + I``;
* ``"plain"`` - ``A``.

Only ``"pre"`` and ``"plain"`` are symmetric: propagate the others with ``spmm(G, x, matrix_t=G_t)``.

Example:
    >>> import torch
    >>> from clear_tune.graphs import bipartite_graph
    >>> G = bipartite_graph(torch.tensor([0, 1]), torch.tensor([0, 0]), n_users=2, n_items=1, adj_type="norm")
    >>> G.to_dense()[2].tolist()   # the item: its two users and itself, each 1/3
    [0.3333333432674408, 0.3333333432674408, 0.3333333432674408]
"""

from __future__ import annotations

import torch

from clear_tune.graphs._interaction import bipartite_adjacency
from clear_tune.graphs._sparse import sparse_matrix

ADJ_TYPES = ("pre", "norm", "gcmc", "mean", "plain")


def bipartite_graph(
    users: torch.Tensor, items: torch.Tensor, *, n_users: int, n_items: int, adj_type: str
) -> torch.Tensor:
    """The ``(n_users + n_items)²`` CSR user-item graph normalised as ``adj_type`` (one of :data:`ADJ_TYPES`)."""
    if adj_type not in ADJ_TYPES:
        raise ValueError(f"adj_type={adj_type!r} must be one of {', '.join(ADJ_TYPES)}")
    if adj_type == "pre":
        return bipartite_adjacency(users, items, n_users=n_users, n_items=n_items)
    n = n_users + n_items
    rows = torch.cat([users, items + n_users])  # (2E,): both directions of every edge
    cols = torch.cat([items + n_users, users])
    values = torch.ones(rows.numel(), device=users.device)
    nodes, ones = torch.arange(n, device=users.device), torch.ones(n, device=users.device)
    if adj_type == "norm":  # D^-1 (A + I): the self loop counts in the degree
        rows, cols, values = torch.cat([rows, nodes]), torch.cat([cols, nodes]), torch.cat([values, ones])
    if adj_type != "plain":
        d_inv = torch.zeros(n, device=users.device).index_add_(0, rows, values).reciprocal()
        d_inv = torch.where(torch.isinf(d_inv), torch.zeros_like(d_inv), d_inv)
        values = d_inv[rows] * values
    if adj_type == "mean":  # D^-1 A + I
        rows, cols, values = torch.cat([rows, nodes]), torch.cat([cols, nodes]), torch.cat([values, ones])
    return sparse_matrix(torch.stack([rows, cols]), values, n)
