"""Graph builders and sparse products every backbone shares: vectorised torch code on the data's device.

* :func:`bipartite_adjacency` - the symmetric-normalised user-item graph D^-1/2 A D^-1/2 of LightGCN.
* :func:`knn_item_graph` - FREEDOM's frozen item-item graph: cosine top-k of raw features, normalised.
* :func:`degree_sensitive_edges` - FREEDOM's degree-sensitive edge pruning (keep ∝ 1/sqrt(d_u d_i)).
* :func:`uniform_edge_dropout` - keep each edge with the same probability (CLEAR's A^drop).
* :func:`spmm` / :func:`propagate` - sparse products over ``(n, d)`` or member stacks ``(R, n, d)``.
* :func:`cached` - memoise any of these in ``ModelContext.cache`` so one dataset builds them once.

No backbone builds a graph of its own kind here or elsewhere: a new structure becomes a function in one
of these modules, so two backbones that use it build the same thing.

Example:
    >>> import torch
    >>> from clear_tune.graphs import bipartite_adjacency, propagate
    >>> A = bipartite_adjacency(torch.tensor([0, 1]), torch.tensor([0, 0]), n_users=2, n_items=1)
    >>> propagate(A, torch.ones(1, 3, 4), 2).shape   # one member, three nodes, width four
    torch.Size([1, 3, 4])
"""

from clear_tune.graphs._interaction import (
    bipartite_adjacency,
    degree_sensitive_edges,
    edge_norm,
    uniform_edge_dropout,
)
from clear_tune.graphs._item import knn_item_graph, mix_graphs
from clear_tune.graphs._sparse import cached, propagate, sparse_matrix, spmm, to_csr, transpose

__all__ = [
    "bipartite_adjacency",
    "cached",
    "degree_sensitive_edges",
    "edge_norm",
    "knn_item_graph",
    "mix_graphs",
    "propagate",
    "sparse_matrix",
    "spmm",
    "to_csr",
    "transpose",
    "uniform_edge_dropout",
]
