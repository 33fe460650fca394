"""Sparse graph builders against dense reference computations on small random graphs."""

from __future__ import annotations

import torch

from clear_tune.graphs import (
    bipartite_adjacency,
    cached,
    degree_sensitive_edges,
    edge_norm,
    knn_item_graph,
    mix_graphs,
    propagate,
    spmm,
    transpose,
    uniform_edge_dropout,
)

torch.set_num_threads(1)


def random_edges(n_users=30, n_items=20, n_edges=120, seed=0):
    gen = torch.Generator().manual_seed(seed)
    pairs = torch.unique(
        torch.stack(
            [
                torch.randint(0, n_users, (n_edges,), generator=gen),
                torch.randint(0, n_items, (n_edges,), generator=gen),
            ],
            1,
        ),
        dim=0,
    )
    return pairs[:, 0], pairs[:, 1], n_users, n_items


def dense_normalised(users, items, n_users, n_items):
    A = torch.zeros(n_users + n_items, n_users + n_items)
    A[users, items + n_users] = 1
    A[items + n_users, users] = 1
    deg = A.sum(1)
    inv = torch.where(deg > 0, deg.rsqrt(), torch.zeros_like(deg))
    return inv[:, None] * A * inv[None, :]


def test_bipartite_adjacency_is_symmetric_normalised():
    users, items, M, N = random_edges()
    A = bipartite_adjacency(users, items, n_users=M, n_items=N)
    assert A.layout == torch.sparse_csr
    torch.testing.assert_close(A.to_dense(), dense_normalised(users, items, M, N))
    torch.testing.assert_close(A.to_dense(), A.to_dense().T)


def test_edge_norm_is_inverse_sqrt_degree_product():
    users, items, M, N = random_edges(seed=1)
    deg_u = torch.bincount(users, minlength=M).float()
    deg_i = torch.bincount(items, minlength=N).float()
    torch.testing.assert_close(edge_norm(users, items, M, N), 1 / torch.sqrt(deg_u[users] * deg_i[items]))


def test_knn_graph_matches_dense_topk_and_chunking_is_invisible():
    X = torch.randn(57, 9, generator=torch.Generator().manual_seed(2))
    k = 4
    unit = X / X.norm(dim=1, keepdim=True)
    expected = torch.zeros(57, 57)
    expected.scatter_(1, (unit @ unit.T).topk(k, dim=1).indices, 1.0 / k)  # rows of k neighbours, 1/sqrt(k·k)
    for chunk in (5, 16, 1000):
        G = knn_item_graph(X, k=k, chunk_size=chunk)
        torch.testing.assert_close(G.to_dense(), expected)
    assert torch.all(G.to_dense().diagonal() > 0)  # every item is its own nearest neighbour, as in MMRec


def test_mix_graphs_is_weighted_sum():
    gen = torch.Generator().manual_seed(3)
    a, b = (
        knn_item_graph(torch.randn(20, 5, generator=gen), k=3),
        knn_item_graph(torch.randn(20, 7, generator=gen), k=3),
    )
    torch.testing.assert_close(mix_graphs(a, b, weight=0.1).to_dense(), 0.1 * a.to_dense() + 0.9 * b.to_dense())


def test_spmm_gradients_match_dense_for_general_and_symmetric_matrices():
    gen = torch.Generator().manual_seed(4)
    G = knn_item_graph(torch.randn(25, 6, generator=gen), k=3)  # not symmetric
    users, items, M, N = random_edges(seed=4)
    S = bipartite_adjacency(users, items, n_users=M, n_items=N)
    for matrix, matrix_t in [(G, transpose(G)), (S, None)]:
        X = torch.randn(matrix.shape[1], 5, generator=gen, requires_grad=True)
        weights = torch.randn(matrix.shape[0], 5, generator=gen)
        (spmm(matrix, X, matrix_t=matrix_t) * weights).sum().backward()
        sparse_grad = X.grad.clone()
        X.grad = None
        (matrix.to_dense() @ X * weights).sum().backward()
        torch.testing.assert_close(sparse_grad, X.grad)


def test_propagate_is_mean_of_layer_outputs():
    users, items, M, N = random_edges(seed=5)
    A = bipartite_adjacency(users, items, n_users=M, n_items=N)
    E = torch.randn(M + N, 4, generator=torch.Generator().manual_seed(5))
    D = A.to_dense()
    torch.testing.assert_close(propagate(A, E, 2), (E + D @ E + D @ D @ E) / 3)
    torch.testing.assert_close(propagate(A, E, 0), E)


def test_degree_sensitive_sampling_draws_without_replacement_proportionally():
    weights = torch.cat([torch.full((50,), 1.0), torch.full((50,), 0.1)])  # 10:1 odds per draw
    gen = torch.Generator().manual_seed(6)
    kept_count = torch.zeros(100)
    for _ in range(200):
        kept = degree_sensitive_edges(weights, keep_ratio=0.1, generator=gen)
        assert kept.numel() == 10
        assert kept.unique().numel() == kept.numel()  # without replacement
        kept_count[kept] += 1
    assert kept_count[:50].sum() > 6 * kept_count[50:].sum()
    assert kept_count[50:].sum() > 0
    # with real FREEDOM weights 1/sqrt(d_u d_i), edges between low-degree nodes survive more often
    users, items, M, N = random_edges(n_users=40, n_items=30, n_edges=400, seed=6)
    norm = edge_norm(users, items, M, N)
    counts = torch.zeros(len(norm))
    for _ in range(300):
        counts[degree_sensitive_edges(norm, keep_ratio=0.2, generator=gen)] += 1
    assert torch.corrcoef(torch.stack([counts, norm]))[0, 1] > 0.3


def test_uniform_edge_dropout_keeps_the_expected_share():
    gen = torch.Generator().manual_seed(7)
    kept = uniform_edge_dropout(20000, keep_ratio=0.9, generator=gen)
    assert abs(kept.numel() / 20000 - 0.9) < 0.01
    assert torch.all(kept[1:] > kept[:-1])  # sorted, unique indices
    again = uniform_edge_dropout(20000, keep_ratio=0.9, generator=torch.Generator().manual_seed(7))
    assert torch.equal(kept, again)


def test_cached_builds_once():
    calls = []
    cache: dict = {}
    for _ in range(3):
        value = cached(cache, "graph", lambda: calls.append(1) or "built")
    assert value == "built" and len(calls) == 1
