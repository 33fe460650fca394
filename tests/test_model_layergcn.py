"""LayerGCN against a dense re-computation of MMRec's formulas on tiny data: graphs, propagation, loss, pruning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fixtures.tiny_models import context_of, train_batch

from clear_tune.config import TrainConfig
from clear_tune.data import make_synthetic
from clear_tune.graphs import uniform_edge_subset
from clear_tune.models import build_model
from clear_tune.models import layergcn as layergcn_module

torch.set_num_threads(1)

OFF = {"mode": "off"}


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic(n_users=50, n_items=30, d_v=8, d_t=8, pref_dim=4, seed=2)


@pytest.fixture()
def ctx(dataset):
    return context_of(dataset, features=False)


def config(**overrides) -> TrainConfig:
    options = overrides.pop("model_options", {})
    return TrainConfig(backbone="layergcn", projection=OFF, emb_dim=8, model_options=options, **overrides)


def batch(dataset, size=40, seed=0):
    return train_batch(context_of(dataset, features=False), size, seed)


def dense_norm_adj(users, items, n_users, n_items):
    """MMRec's D^-1/2 A D^-1/2 over [users | items], degrees + 1e-7, as a dense matrix."""
    n = n_users + n_items
    A = torch.zeros(n, n)
    A[users, items + n_users] = 1.0
    A[items + n_users, users] = 1.0
    d = (A.sum(1) + 1e-7).pow(-0.5)
    return d[:, None] * A * d[None, :]


def dense_forward(A, user_w, item_w, n_layers):
    """MMRec's LayerGCN.forward, written out densely."""
    ego = torch.cat([user_w, item_w])
    x, layers = ego, []
    for _ in range(n_layers):
        x = A @ x
        x = F.cosine_similarity(x, ego, dim=-1)[:, None] * x
        layers.append(x)
    out = torch.stack(layers).sum(0)
    return out[: user_w.shape[0]], out[user_w.shape[0] :]


def test_evaluation_is_mmrecs_layer_refined_sum_over_the_full_graph(dataset, ctx):
    model = build_model(config(), ctx)
    model.start_epoch(1)  # pruning must not reach evaluation
    A = dense_norm_adj(ctx.train_users, ctx.train_items, ctx.n_users, ctx.n_items)
    torch.testing.assert_close(model.full_graph.to_dense(), A)
    with torch.no_grad():
        users, items = model.embeddings()
    expected_u, expected_i = dense_forward(A, model.user_emb.weight[0], model.item_emb.weight[0], 4)
    torch.testing.assert_close(users[0], expected_u)
    torch.testing.assert_close(items[0], expected_i)


def test_loss_is_a_summed_bpr_plus_an_undivided_half_l2_of_the_ego_rows(dataset, ctx):
    model = build_model(config(reg_weight=0.3, model_options={"dropout": 0.0, "n_layers": 2}), ctx)
    model.start_epoch(1)
    assert model.train_graph is model.full_graph  # dropout 0: MMRec trains on the normalised full graph
    users, pos, neg = batch(dataset)
    A = dense_norm_adj(ctx.train_users, ctx.train_items, ctx.n_users, ctx.n_items)
    U, Ei = dense_forward(A, model.user_emb.weight[0], model.item_emb.weight[0], 2)
    u, p, n = U[users], Ei[pos], Ei[neg]
    bpr = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).sum()  # a sum, not a mean
    ego = (model.user_emb.weight[0, users], model.item_emb.weight[0, pos], model.item_emb.weight[0, neg])
    l2 = sum(0.5 * (e**2).sum() for e in ego)  # MMRec's L2Loss: no division by the batch size
    loss = model.loss(users, pos, neg)
    torch.testing.assert_close(loss[0], bpr + 0.3 * l2)
    loss.sum().backward()
    assert model.user_emb.weight.grad.abs().sum() > 0 and model.item_emb.weight.grad.abs().sum() > 0


def test_pruning_keeps_a_fixed_share_renormalised_and_alternates_degree_and_uniform(dataset, ctx, monkeypatch):
    calls = []

    def spy(name):
        real = getattr(layergcn_module, name)

        def recorded(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)

        monkeypatch.setattr(layergcn_module, name, recorded)

    spy("degree_sensitive_edges")
    spy("uniform_edge_subset")
    model = build_model(config(model_options={"dropout": 0.2}), ctx)
    n_keep = int(len(dataset.train) * 0.8)
    graphs = []
    for epoch in (1, 2, 3, 4):
        model.start_epoch(epoch)
        graphs.append(model.train_graph)
        dense = model.train_graph.to_dense()
        upper = dense[: ctx.n_users, ctx.n_users :].nonzero()
        assert upper.shape[0] == n_keep  # exactly int(E (1 - dropout)) distinct edges
        # re-normalised over the kept edges' degrees, both directions
        torch.testing.assert_close(dense, dense_norm_adj(upper[:, 0], upper[:, 1], ctx.n_users, ctx.n_items))
    assert calls == ["degree_sensitive_edges", "uniform_edge_subset"] * 2  # MMRec's first call is degree-based
    assert not torch.equal(graphs[0].to_dense(), graphs[2].to_dense())  # resampled every epoch
    assert model.full_graph.values().numel() == 2 * len(dataset.train)


def test_uniform_edge_subset_is_a_uniform_fixed_size_sample():
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(20)
    for _ in range(2000):
        kept = uniform_edge_subset(20, keep_ratio=0.35, generator=gen)
        assert kept.numel() == 7 and kept.unique().numel() == 7
        counts[kept] += 1
    torch.testing.assert_close(counts / 2000, torch.full((20,), 0.35), atol=0.04, rtol=0)


def test_fused_members_each_get_their_own_loss_and_keep_members_works(dataset, ctx):
    weights = [1e-2, 1e-4, 0.0]
    model = build_model([config(reg_weight=w) for w in weights], ctx)
    alone = [build_model(config(reg_weight=w), ctx) for w in weights]
    fixed = batch(dataset)
    with torch.no_grad():
        for m in (model, *alone):
            m.start_epoch(1)  # same seed: same pruned graph
        fused = model.loss(*fixed)
        for i, single in enumerate(alone):
            torch.testing.assert_close(fused[i], single.loss(*fixed)[0], rtol=1e-6, atol=0)
        model.keep_members([2, 0])
        expected = torch.stack([alone[2].loss(*fixed)[0], alone[0].loss(*fixed)[0]])
        torch.testing.assert_close(model.loss(*fixed), expected, rtol=1e-6, atol=0)
        users, _ = model.embeddings()
        assert users.shape == (2, ctx.n_users, 8)


def test_options_defaults_grid_and_bad_values(ctx):
    cls = layergcn_module.LayerGCN
    assert {k: o.default for k, o in cls.model_options().items()} == {
        "n_layers": 4,
        "dropout": 0.1,
    } and not cls.uses_features
    assert cls.mmrec_grid == {"n_layers": [4], "dropout": [0.0, 0.1, 0.2], "reg_weight": [1e-2, 1e-3, 1e-4, 1e-5]}
    from clear_tune.errors import SpecError

    with pytest.raises(SpecError, match="dropout"):
        build_model(config(model_options={"dropout": 1.0}), ctx)
