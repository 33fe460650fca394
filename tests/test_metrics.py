"""Full-ranking metrics against hand-computed examples and a plain reference implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clear_tune.metrics import HELDOUT, RankingEvaluator, evaluate_ranking, metric_names, ranking_metric_sums

LOG2_3, LOG2_5 = math.log2(3), math.log2(5)


def one(evaluator, U, Ei):
    """The metrics of one member on the evaluator's single held-out array."""
    [evaluation] = evaluator(U, Ei)
    assert evaluation.per_user is None
    return evaluation.metrics[HELDOUT]


def hand_example(**kwargs):
    """5 items scored 5,4,3,2,1 by user 0 and 2 (u=+1) and 1,2,3,4,5 by user 1 (u=-1).

    user 0: train {0}  held-out {2, 4}  -> ranking 1, 2, 3, 4 (0 masked)
    user 1: train {4}  held-out {3}     -> ranking 3, 2, 1, 0 (4 masked)
    user 2: train {1}  held-out {}      -> not evaluated
    """
    U = torch.tensor([[1.0], [-1.0], [1.0]])
    Ei = torch.tensor([[5.0], [4.0], [3.0], [2.0], [1.0]])
    train = np.array([[0, 0], [1, 4], [2, 1]])
    heldout = np.array([[0, 2], [0, 4], [1, 3]])
    ev = RankingEvaluator(n_users=3, n_items=5, train=train, heldout=heldout, topk=[1, 2, 10], **kwargs)
    return ev, U, Ei


def test_hand_computed_example():
    ev, U, Ei = hand_example()
    got = one(ev, U, Ei)
    assert ev.n_eval_users == 2
    # K=1: user 0 top = [1] miss; user 1 top = [3] hit (1 of 1 held-out)
    assert got["recall@1"] == pytest.approx((0 + 1) / 2)
    assert got["precision@1"] == pytest.approx((0 + 1) / 2)
    assert got["ndcg@1"] == pytest.approx((0 + 1) / 2)
    # K=2: user 0 top = [1, 2] hit at rank 2 of 2 held-out; user 1 top = [3, 2] hit at rank 1
    ndcg0 = (1 / LOG2_3) / (1 + 1 / LOG2_3)  # IDCG over min(2, 2) = 2 hits
    assert got["recall@2"] == pytest.approx((1 / 2 + 1) / 2)
    assert got["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert got["ndcg@2"] == pytest.approx((ndcg0 + 1.0) / 2)
    # K=10 > n_items and > |held-out|: user 0 hits at ranks 2 and 4, user 1 at rank 1
    ndcg0 = (1 / LOG2_3 + 1 / LOG2_5) / (1 + 1 / LOG2_3)  # IDCG over min(2, 10) = 2 hits
    assert got["recall@10"] == pytest.approx(1.0)
    assert got["precision@10"] == pytest.approx((2 / 10 + 1 / 10) / 2)
    assert got["ndcg@10"] == pytest.approx((ndcg0 + 1.0) / 2)
    assert list(got) == metric_names([1, 2, 10])


def test_users_without_heldout_items_are_excluded():
    ev, U, Ei = hand_example()
    base = one(ev, U, Ei)
    # user 2 is evaluated only once it has a held-out item; it then changes every average
    with_u2 = one(
        RankingEvaluator(
            n_users=3,
            n_items=5,
            train=np.array([[0, 0], [1, 4], [2, 1]]),
            heldout=np.array([[0, 2], [0, 4], [1, 3], [2, 0]]),
            topk=[1],
        ),
        U,
        Ei,
    )
    assert with_u2["recall@1"] == pytest.approx((0 + 1 + 1) / 3) != base["recall@1"]


def test_chunking_does_not_change_results():
    ev, U, Ei = hand_example(batch_users=1)
    assert one(ev, U, Ei) == pytest.approx(one(hand_example()[0], U, Ei))


def test_masked_item_never_counts_even_when_also_held_out():
    # item 0 is both train and held-out for user 0: masked, so never a hit, even with K = all items
    got = evaluate_ranking(
        torch.ones(1, 1),
        torch.tensor([[3.0], [2.0], [1.0]]),
        train=np.array([[0, 0]]),
        heldout=np.array([[0, 0], [0, 2]]),
        topk=[3],
    )
    assert got["recall@3"] == pytest.approx(1 / 2)
    assert got["ndcg@3"] == pytest.approx((1 / LOG2_3) / (1 + 1 / LOG2_3))  # ranking 1, 2, (0): hit at rank 2


def test_ranking_metric_sums_from_a_hit_matrix():
    hits = torch.tensor([[True, False, True], [False, False, False]])
    sums = ranking_metric_sums(hits, torch.tensor([3, 1]), topk=[2, 3])
    assert float(sums["recall@2"]) == pytest.approx(1 / 3)
    assert float(sums["recall@3"]) == pytest.approx(2 / 3)
    assert float(sums["precision@3"]) == pytest.approx(2 / 3)
    assert float(sums["ndcg@2"]) == pytest.approx(1 / (1 + 1 / LOG2_3))
    assert float(sums["ndcg@3"]) == pytest.approx((1 + 0.5) / (1 + 1 / LOG2_3 + 0.5))


def reference(U, Ei, train, heldout, topk):
    """Plain per-user loop, the definition written out."""
    scores = (U @ Ei.T).numpy().astype(np.float64)
    out = {name: [] for name in metric_names(topk)}
    for u in np.unique(heldout[:, 0]):
        s = scores[u].copy()
        s[train[train[:, 0] == u, 1]] = -np.inf
        ranked = np.argsort(-s, kind="stable")
        held = set(heldout[heldout[:, 0] == u, 1].tolist())
        for k in topk:
            hit = [item in held for item in ranked[:k]]
            dcg = sum(1 / math.log2(r + 2) for r, h in enumerate(hit) if h)
            idcg = sum(1 / math.log2(r + 2) for r in range(min(len(held), k)))
            out[f"recall@{k}"].append(sum(hit) / len(held))
            out[f"ndcg@{k}"].append(dcg / idcg)
            out[f"precision@{k}"].append(sum(hit) / k)
    return {name: float(np.mean(v)) for name, v in out.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n_users, n_items = 40, 30
    pairs = np.unique(np.column_stack([rng.integers(0, n_users, 400), rng.integers(0, n_items, 400)]), axis=0)
    split = rng.random(len(pairs))
    train, heldout = pairs[split < 0.7], pairs[split >= 0.7]
    gen = torch.Generator().manual_seed(seed)
    U, Ei = torch.randn(n_users, 8, generator=gen), torch.randn(n_items, 8, generator=gen)  # ties: measure zero
    got = one(
        RankingEvaluator(
            n_users=n_users, n_items=n_items, train=train, heldout=heldout, topk=[1, 5, 20], batch_users=7
        ),
        U,
        Ei,
    )
    assert got == pytest.approx(reference(U, Ei, train, heldout, [1, 5, 20]), abs=1e-9)


def test_several_splits_in_one_pass_equal_separate_evaluations():
    rng = np.random.default_rng(5)
    pairs = np.unique(np.column_stack([rng.integers(0, 50, 500), rng.integers(0, 40, 500)]), axis=0)
    split = rng.integers(0, 3, len(pairs))
    train, valid, test = pairs[split == 0], pairs[split == 1], pairs[split == 2][:20]  # test: fewer users
    U, Ei = torch.randn(50, 4), torch.randn(40, 4)
    common = dict(n_users=50, n_items=40, train=train, topk=[3, 10], batch_users=16)
    both = RankingEvaluator(heldout={"valid": valid, "test": test}, **common)
    assert both.split_sizes == {"valid": len(np.unique(valid[:, 0])), "test": len(np.unique(test[:, 0]))}
    [evaluation] = both(U, Ei)
    got = evaluation.metrics
    ranking = metric_names([3, 10])  # the splits also carry beyond-accuracy metrics (test_beyond_accuracy_...)
    assert {k: got["valid"][k] for k in ranking} == pytest.approx(
        one(RankingEvaluator(heldout=valid, **common), U, Ei), abs=1e-12
    )
    assert {k: got["test"][k] for k in ranking} == pytest.approx(
        one(RankingEvaluator(heldout=test, **common), U, Ei), abs=1e-12
    )
    assert {k: got["test"][k] for k in ranking} == pytest.approx(reference(U, Ei, train, test, [3, 10]), abs=1e-9)


def test_beyond_accuracy_metrics_match_a_dense_recomputation_and_per_user_values_average_to_the_means():
    rng = np.random.default_rng(7)
    pairs = np.unique(np.column_stack([rng.integers(0, 60, 700), rng.integers(0, 45, 700)]), axis=0)
    split = rng.integers(0, 3, len(pairs))
    train, valid, test = pairs[split == 0], pairs[split == 1], pairs[split == 2]
    U, Ei = torch.randn(2, 60, 4), torch.randn(2, 45, 4)  # two members
    evaluator = RankingEvaluator(
        n_users=60,
        n_items=45,
        train=train,
        heldout={"valid": valid, "test": test},
        topk=[5],
        batch_users=17,
        per_user=True,
    )
    got = evaluator(U, Ei)
    popularity = np.bincount(train[:, 1], minlength=45).astype(float)
    head = np.argsort(-popularity, kind="stable")[: int(np.ceil(0.2 * 45))]
    info = -np.log2(np.maximum(popularity, 1) / len(np.unique(train[:, 0])))
    for m in range(2):
        scores = (U[m] @ Ei[m].T).numpy().astype(np.float64)
        scores[train[:, 0], train[:, 1]] = -np.inf
        users = np.unique(test[:, 0])
        lists = [np.argsort(-scores[u], kind="stable")[:5] for u in users]
        lists = [[i for i in top if np.isfinite(scores[u, i])] for u, top in zip(users, lists)]
        counts = np.bincount(np.concatenate(lists).astype(int), minlength=45)
        ordered = np.sort(counts)
        gini = ((2 * np.arange(1, 46) - 46) * ordered).sum() / (45 * counts.sum())
        expected = {
            "coverage@5": (counts > 0).mean(),
            "gini@5": gini,
            "arp@5": np.mean([popularity[t].mean() for t in lists]),
            "aplt@5": np.mean([np.isin(t, head, invert=True).mean() for t in lists]),
            "novelty@5": np.mean([info[t].mean() for t in lists]),
        }
        assert {k: got[m].metrics["test"][k] for k in expected} == pytest.approx(expected, rel=1e-9)
        per_user = got[m].per_user["test"]
        assert per_user["users"].tolist() == users.tolist()
        for name in ("recall@5", "ndcg@5"):
            assert per_user[name].dtype == np.float32
            assert per_user[name].mean() == pytest.approx(got[m].metrics["test"][name], rel=1e-6)


@given(
    n_users=st.integers(1, 12),
    n_items=st.integers(1, 15),
    seed=st.integers(0, 2**16),
    topk=st.lists(st.integers(1, 20), min_size=1, max_size=3),
    batch_users=st.integers(1, 5),
)
@settings(max_examples=40, deadline=None)
def test_property_matches_reference(n_users, n_items, seed, topk, batch_users):
    rng = np.random.default_rng(seed)
    cells = rng.random((n_users, n_items))
    train = np.argwhere(cells < 0.3)
    heldout = np.argwhere(cells > 0.8)
    U, Ei = torch.from_numpy(rng.standard_normal((n_users, 3))), torch.from_numpy(rng.standard_normal((n_items, 3)))
    ev = RankingEvaluator(
        n_users=n_users, n_items=n_items, train=train, heldout=heldout, topk=topk, batch_users=batch_users
    )
    got = one(ev, U, Ei)
    if len(heldout) == 0:
        assert ev.n_eval_users == 0 and set(got.values()) == {0.0}
    else:
        assert got == pytest.approx(reference(U.float(), Ei.float(), train, heldout, sorted(set(topk))), abs=1e-6)
