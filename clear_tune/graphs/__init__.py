"""Graph builders and sparse products every backbone shares: vectorised torch code on the data's device.

* :func:`bipartite_adjacency` - the symmetric-normalised user-item graph D^-1/2 A D^-1/2 of LightGCN;
  :func:`interaction_block` - its user-item block ``(n_users, n_items)`` (MGCN's and SMORE's ``R``).
* :func:`knn_item_graph` - FREEDOM's frozen item-item graph: cosine top-k of raw features, normalised.
* :func:`max_pool_graphs` - SMORE's fusion graph: the union of two graphs, the larger value per entry.
* :func:`degree_sensitive_edges` - FREEDOM's degree-sensitive edge pruning (keep ∝ 1/sqrt(d_u d_i)).
* :func:`uniform_edge_dropout` - keep each edge with the same probability (CLEAR's A^drop).
* :func:`uniform_edge_subset` - keep a uniformly random fixed-size edge subset (LayerGCN's random pruning).
* :func:`user_cooccurrence` - DualGNN's user-user co-occurrence top-k lists (MMRec's ``user_graph_dict``);
  :func:`first_k_neighbours` / :func:`sample_user_graph` - its per-epoch padded, softmax-weighted sample.
* :func:`interaction_matrix` / :func:`inverse_degrees` - the rectangular 0/1 user-item matrix and
  ``1/(d + 1e-7)`` per user (LGMRec's ``adj`` and ``num_inters``: hyperedge logits, users' mean item features).
* :func:`bipartite_graph` - the user-item graph under MMRec's other ``adj_type`` normalisations (SLMRec, LATTICE).
* :func:`knn_similarity_graph` / :func:`cosine_topk` / :func:`sym_normalise_rows` / :func:`rows_times_dense` /
  :func:`block_diagonal` - LATTICE's similarity-weighted kNN graphs, frozen or over learned per-member features.
* :class:`EdgeList` / :func:`bipartite_edges` / :func:`edge_sum` / :func:`segment_softmax` / :func:`edge_dot` -
  PyG-style message passing with learned edge weights (MMGCN's mean aggregation, GRCN's attention and pruning).
* :func:`sqrt_row_normalised` / :func:`dense_rows` - MMSSL's row-normalised ``D_r^-1/2 C`` graphs (also per member,
  block-diagonal, from generated pairs) and dense rows of the interaction matrix.
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

from clear_tune.graphs._bipartite import ADJ_TYPES, bipartite_graph
from clear_tune.graphs._edge_subsets import uniform_edge_subset
from clear_tune.graphs._interaction import (
    bipartite_adjacency,
    degree_sensitive_edges,
    edge_norm,
    interaction_block,
    interaction_matrix,
    inverse_degrees,
    uniform_edge_dropout,
)
from clear_tune.graphs._item import knn_item_graph, max_pool_graphs, mix_graphs
from clear_tune.graphs._learned import (
    block_diagonal,
    cosine_topk,
    knn_similarity_graph,
    rows_times_dense,
    sym_normalise_rows,
)
from clear_tune.graphs._message import EdgeList, bipartite_edges, edge_dot, edge_sum, segment_softmax
from clear_tune.graphs._rownorm import dense_rows, sqrt_row_normalised
from clear_tune.graphs._sparse import cached, propagate, sparse_matrix, spmm, to_csr, transpose
from clear_tune.graphs._user import UserNeighbours, first_k_neighbours, sample_user_graph, user_cooccurrence

__all__ = [
    "ADJ_TYPES",
    "bipartite_adjacency",
    "bipartite_edges",
    "bipartite_graph",
    "block_diagonal",
    "cached",
    "cosine_topk",
    "degree_sensitive_edges",
    "dense_rows",
    "edge_dot",
    "edge_norm",
    "edge_sum",
    "EdgeList",
    "first_k_neighbours",
    "interaction_block",
    "interaction_matrix",
    "inverse_degrees",
    "knn_item_graph",
    "knn_similarity_graph",
    "max_pool_graphs",
    "mix_graphs",
    "propagate",
    "rows_times_dense",
    "sample_user_graph",
    "segment_softmax",
    "sparse_matrix",
    "spmm",
    "sqrt_row_normalised",
    "sym_normalise_rows",
    "to_csr",
    "transpose",
    "uniform_edge_dropout",
    "uniform_edge_subset",
    "user_cooccurrence",
    "UserNeighbours",
]
