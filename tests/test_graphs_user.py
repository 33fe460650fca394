"""The user-user co-occurrence graph against MMRec's ``dualgnn-gen-u-u-matrix.py`` procedure, written out
directly (item sets, pairwise intersections, ``torch.topk`` of each dense row), and its per-epoch sample
against ``DualGNN.topk_sample``."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch

from clear_tune.data import load_mmrec, make_synthetic, write_mmrec, write_user_graph
from clear_tune.graphs import first_k_neighbours, sample_user_graph, user_cooccurrence

torch.set_num_threads(1)


def mmrec_user_graph(pairs: np.ndarray, n_users: int, cap: int) -> dict[int, list[list]]:
    """The script's procedure, unvectorised (its O(users²) loop over item-set intersections)."""
    items_of = defaultdict(set)
    for user, item in pairs.tolist():
        items_of[user].add(item)
    counts = torch.zeros(n_users, n_users)
    keys = sorted(items_of)
    for a, head in enumerate(keys):
        for rear in keys[a + 1 :]:
            shared = len(items_of[head] & items_of[rear])
            if shared:
                counts[head, rear] = counts[rear, head] = shared
    table = {}
    for user in range(n_users):
        top = torch.topk(counts[user], min(int((counts[user] != 0).sum()), cap))
        table[user] = [top.indices.numpy().tolist(), top.values.numpy().tolist()]
    return table


@pytest.fixture(scope="module")
def pairs():
    gen = np.random.default_rng(0)
    users = np.concatenate([gen.integers(0, 70, 900), np.arange(70)])  # every user but 70..74 has items
    items = np.concatenate([gen.integers(0, 25, 900), gen.integers(0, 25, 70)])  # few items: many ties
    return np.column_stack([users, items])  # repeated pairs included


@pytest.mark.parametrize("cap", [200, 7])
def test_lists_equal_the_scripts_including_tie_order_and_the_cap(pairs, cap):
    graph = user_cooccurrence(
        torch.as_tensor(pairs[:, 0]), torch.as_tensor(pairs[:, 1]), 75, cap=cap, chunk_elements=300
    )  # several chunks per k
    reference = mmrec_user_graph(pairs, 75, cap)
    assert {u: list(graph.neighbours(u)) for u in range(75)} == reference
    lengths = graph.indptr.diff()
    assert (lengths[70:] == 0).all() and lengths.max() == min(cap, 69)


def test_repeated_interactions_count_once():
    users, items = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([3, 3, 4, 3, 4])
    assert user_cooccurrence(users, items, 2).neighbours(0) == ([1], [2.0])


def test_sample_keeps_the_first_k_and_softmaxes_their_counts(pairs):
    graph = user_cooccurrence(torch.as_tensor(pairs[:, 0]), torch.as_tensor(pairs[:, 1]), 75)
    index, weight, lengths = first_k_neighbours(graph, 10)
    W = sample_user_graph(index, weight, lengths, generator=torch.Generator().manual_seed(1)).to_dense()
    for user in range(75):
        nbrs, counts = graph.neighbours(user)
        if len(nbrs) >= 10:  # deterministic: MMRec's user_weight_matrix row
            softmax = torch.softmax(torch.tensor(counts[:10]), 0)
            expected = torch.zeros(75).index_add_(0, torch.tensor(nbrs[:10]), softmax)
            assert torch.equal(W[user], expected)
        elif nbrs:  # padded: only its neighbours, weights summing to 1
            assert set(W[user].nonzero().squeeze(1).tolist()) == set(nbrs)
            assert W[user].sum().item() == pytest.approx(1.0)
        else:
            assert (W[user] == 0).all()
    mean = sample_user_graph(index, weight, lengths, mode="mean", generator=torch.Generator().manual_seed(1)).to_dense()
    assert torch.allclose(mean.sum(1), (lengths > 0).float())
    assert torch.allclose(mean * 10, (mean * 10).round())  # 1/k per (repeated) neighbour


def test_padding_copies_from_the_growing_list_as_mmrec_does():
    # two neighbours padded to four: MMRec's loop draws from the list as it grows (a Pólya urn), so the
    # number of copies of the first neighbour is uniform on {1, 2, 3} (drawing from the original two
    # would give 1/4, 1/2, 1/4)
    n = 6000
    index = torch.tensor([[1, 2, 0, 0]]).repeat(n, 1)
    weight = torch.tensor([[1.0, 1.0, 0.0, 0.0]]).repeat(n, 1)
    W = sample_user_graph(index, weight, torch.full((n,), 2), generator=torch.Generator().manual_seed(0)).to_dense()
    copies = torch.round(W[:, 1] * 4).long()
    shares = torch.bincount(copies, minlength=4)[1:].float() / n
    assert torch.allclose(shares, torch.full((3,), 1 / 3), atol=0.02), shares


def test_write_user_graph_is_mmrecs_file_format(tmp_path):
    ds = make_synthetic(n_users=60, n_items=40, d_v=8, d_t=8, pref_dim=4, seed=2)
    folder = write_mmrec(ds, tmp_path, "toy")
    path = write_user_graph(load_mmrec(tmp_path, "toy"), folder)
    assert path == folder / "user_graph_dict.npy"
    table = np.load(path, allow_pickle=True).item()
    assert table == mmrec_user_graph(ds.train, ds.n_users, 200)
    sample = table[0][0][:40]  # what DualGNN.topk_sample does with an entry: slice, then append
    sample.append(sample[0])
    assert isinstance(table[0][1][0], float)
