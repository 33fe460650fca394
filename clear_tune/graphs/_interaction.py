"""The user-item graph: normalised bipartite adjacency, the rectangular interaction matrix, and the two ways
backbones drop its edges.

Node ids are ``[users | items]``: user ``u`` is node ``u``, item ``i`` is node ``n_users + i``.

Example:
    >>> import torch
    >>> from clear_tune.graphs import bipartite_adjacency, interaction_block
    >>> users, items = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1])
    >>> A = bipartite_adjacency(users, items, n_users=2, n_items=2)
    >>> A.shape, A.values().numel()
    (torch.Size([4, 4]), 6)
    >>> interaction_block(users, items, n_users=2, n_items=2).to_dense().tolist() == A.to_dense()[:2, 2:].tolist()
    True
"""

from __future__ import annotations

import torch

from clear_tune.graphs._sparse import sparse_matrix


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


def interaction_block(users: torch.Tensor, items: torch.Tensor, *, n_users: int, n_items: int) -> torch.Tensor:
    """The user-item block of :func:`bipartite_adjacency`: ``(n_users, n_items)`` CSR with ``1 / sqrt(d_u d_i)``
    per edge.

    MGCN and SMORE (MMRec's ``norm_adj_mat[:n_users, n_users:]``) gather their item-item views to the users
    through it: not row-normalised, the same weights the symmetric graph gives each edge.
    """
    values = edge_norm(users, items, n_users, n_items)
    return sparse_matrix(torch.stack([users, items]), values, (n_users, n_items))


def interaction_matrix(users: torch.Tensor, items: torch.Tensor, *, n_users: int, n_items: int) -> torch.Tensor:
    """The rectangular ``(n_users, n_items)`` CSR matrix ``R`` with a 1 at every train edge (LGMRec's ``adj``).

    Unnormalised: ``R @ X`` sums the rows of the items each user interacted with (a repeated pair counts
    twice, as in MMRec's COO matrix; clear-tune's train pairs are unique). Not symmetric: propagate with
    ``spmm(R, x, matrix_t=transpose(R))``.
    """
    values = torch.ones(users.numel(), device=users.device)
    return sparse_matrix(torch.stack([users, items]), values, (n_users, n_items))


def inverse_degrees(nodes: torch.Tensor, n_nodes: int, *, eps: float = 1e-7) -> torch.Tensor:
    """``1 / (d + eps)`` per node, ``(n_nodes, 1)`` float32, ``d`` counted over ``nodes`` (one entry per edge).

    LGMRec's ``num_inters``: computed in float64 and rounded once, as MMRec does in numpy; ``R @ X`` times this
    column is the mean of each user's items (a node without edges gets ``0 · 1e7 = 0``).
    """
    degrees = torch.bincount(nodes, minlength=n_nodes).to(torch.float64)
    return (1.0 / (degrees + eps)).to(torch.float32).unsqueeze(1)


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
