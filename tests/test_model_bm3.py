"""BM3 against a dense re-computation of MMRec's formulas on tiny data: views, dropout targets, loss, CLEAR."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fixtures.tiny_models import context_of, train_batch

from clear_tune.config import TrainConfig
from clear_tune.data import make_synthetic
from clear_tune.models import build_model
from clear_tune.models.bm3 import BM3

torch.set_num_threads(1)

OFF = {"mode": "off"}
CLEAR_ON = {"k": 3, "strength": 0.8}


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic(n_users=50, n_items=30, d_v=12, d_t=10, pref_dim=4, seed=4)


@pytest.fixture()
def ctx(dataset):
    return context_of(dataset)


def config(projection=OFF, **overrides) -> TrainConfig:
    options = overrides.pop("model_options", {})
    return TrainConfig(backbone="bm3", projection=projection, emb_dim=8, model_options=options, **overrides)


def batch(dataset, size=40, seed=0):
    return train_batch(context_of(dataset, features=False), size, seed)


def dense_views(model, ctx):
    """MMRec's BM3.forward and encoders, densely: (u_o (M, d), i_o (N, d), T (N, d), V (N, d)) of member 0."""
    n = ctx.n_users + ctx.n_items
    A = torch.zeros(n, n)
    A[ctx.train_users, ctx.train_items + ctx.n_users] = 1.0
    A[ctx.train_items + ctx.n_users, ctx.train_users] = 1.0
    d = (A.sum(1) + 1e-7).pow(-0.5)
    A = d[:, None] * A * d[None, :]
    ego = torch.cat([model.user_emb.weight[0], model.item_emb.weight[0]])
    layers = [ego]
    for _ in range(model.n_layers):
        layers.append(A @ layers[-1])
    mean = torch.stack(layers, 1).mean(1)
    u_o, i_o = mean[: ctx.n_users], mean[ctx.n_users :] + model.item_emb.weight[0]
    T = model.text_raw[0] @ model.text_encoder.weight[0] + model.text_encoder.bias[0]
    V = model.image_raw[0] @ model.image_encoder.weight[0] + model.image_encoder.bias[0]
    return u_o, i_o, T, V


def test_loss_is_mmrecs_bootstrap_loss_without_dropout(dataset, ctx):
    model = build_model(config(reg_weight=0.1, model_options={"dropout": 0.0, "n_layers": 2}), ctx)
    users, pos, neg = batch(dataset)
    u_o, i_o, T, V = dense_views(model, ctx)

    def pred(x):
        return x @ model.predictor.weight[0] + model.predictor.bias[0]

    def c(a, b):
        return 1 - F.cosine_similarity(a, b.detach(), dim=-1).mean()

    p_u, p_i, p_t, p_v = pred(u_o)[users], pred(i_o)[pos], pred(T)[pos], pred(V)[pos]
    u_t, i_t, t_t, v_t = u_o[users], i_o[pos], T[pos], V[pos]
    reg = (torch.norm(u_o) + torch.norm(i_o)) / ctx.n_items  # MMRec's EmbLoss over the full matrices
    expected = c(p_u, i_t) + c(p_i, u_t) + 0.1 * reg + 2.0 * (c(p_t, i_t) + c(p_v, i_t) + c(p_t, t_t) + c(p_v, v_t))
    loss = model.loss(users, pos, neg)
    torch.testing.assert_close(loss[0], expected)
    other_negatives = torch.roll(neg, 1)
    assert torch.equal(model.loss(users, pos, other_negatives), loss)  # negatives are ignored
    with torch.no_grad():
        users_e, items_e = model.embeddings()  # MMRec scores predictor(u) · predictor(i)
    torch.testing.assert_close(users_e[0], pred(u_o))
    torch.testing.assert_close(items_e[0], pred(i_o))


def test_what_is_trainable_matches_mmrec(ctx):
    model = build_model(config(), ctx)
    d, d_v, d_t, M, N = 8, ctx.image_feat.shape[1], ctx.text_feat.shape[1], ctx.n_users, ctx.n_items
    # MMRec: user/item tables, predictor, image_trs, text_trs, and the raw features (from_pretrained, freeze=False)
    mmrec_count = M * d + N * d + (d * d + d) + (d_v * d + d) + (d_t * d + d) + N * d_v + N * d_t
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == mmrec_count
    loss = model.loss(*batch_of(ctx))
    loss.sum().backward()
    assert model.image_raw.grad.abs().sum() > 0 and model.text_raw.grad.abs().sum() > 0
    frozen = build_model(config(model_options={"train_raw_features": False}), ctx)
    assert sum(p.numel() for p in frozen.parameters()) == mmrec_count - N * (d_v + d_t)


def batch_of(ctx, size=32):
    rows = torch.arange(size) % ctx.train_users.numel()
    return ctx.train_users[rows], ctx.train_items[rows], torch.zeros(size, dtype=torch.long)


def test_dropout_targets_are_fdropout_masks_shared_per_distinct_row(ctx):
    model = build_model(config(model_options={"dropout": 0.3}), ctx)
    ids = torch.tensor([3, 7, 3, 3, 11])
    distinct, where = torch.unique(ids, return_inverse=True)
    view = torch.ones(2, 5, 4000, requires_grad=True)  # (R, B, d)
    (target,) = model.targets([view], distinct, where)
    assert not target.requires_grad
    assert target.unique().tolist() == [0.0, (torch.ones(()) / 0.7).item()]  # F.dropout: 0 or 1/(1-p)
    assert abs((target == 0).float().mean().item() - 0.3) < 0.02
    assert torch.equal(target[:, 0], target[:, 2]) and torch.equal(target[:, 0], target[:, 3])  # same row, same mask
    assert not torch.equal(target[:, 0], target[:, 1])
    assert torch.equal(target[0], target[1])  # every member gets the same mask
    a, b = model.targets([view, view], distinct, where)
    assert not torch.equal(a, b)  # one mask per view, fresh per call


def test_clear_enters_at_the_encoder_outputs_and_lambda_zero_is_the_identity(dataset, ctx):
    fixed = batch(dataset)
    on = build_model(config(CLEAR_ON), ctx)
    off = build_model(config(OFF), ctx)
    zero = build_model([config(CLEAR_ON), config({"k": 3, "strength": 0.0})], ctx)

    def loss(model):
        model.generator.manual_seed(7)  # the same dropout masks for every model
        return model.loss(*fixed)

    with torch.no_grad():
        for model in (on, off, zero):
            model.start_epoch(1)
        assert on.projection is not None and off.projection is None
        assert not torch.allclose(loss(on), loss(off))
        torch.testing.assert_close(loss(zero)[1], loss(off)[0], rtol=1e-6, atol=0)  # λ = 0: MMRec's BM3
        torch.testing.assert_close(loss(zero)[0], loss(on)[0], rtol=1e-6, atol=0)
        V, T = on.encode()
        V_p, T_p = on.modal_features()
        assert not torch.allclose(V, V_p) and not torch.allclose(T, T_p)


def test_fused_members_each_get_their_own_loss_and_keep_members_works(dataset, ctx):
    settings = [(CLEAR_ON, 0.1), (OFF, 0.01), ({"k": 2, "strength": 0.5}, 0.0)]
    model = build_model([config(p, reg_weight=w) for p, w in settings], ctx)
    alone = [build_model(config(p, reg_weight=w), ctx) for p, w in settings]
    fixed = batch(dataset)

    def loss(m):
        m.generator.manual_seed(11)
        return m.loss(*fixed)

    with torch.no_grad():
        for m in (model, *alone):
            m.start_epoch(1)
        fused = loss(model)
        for i, single in enumerate(alone):
            torch.testing.assert_close(fused[i], loss(single)[0], rtol=1e-6, atol=0)
        model.keep_members([2, 0])
        torch.testing.assert_close(loss(model), torch.stack([loss(alone[2])[0], loss(alone[0])[0]]), rtol=1e-6, atol=0)
        users, items = model.embeddings()
        assert users.shape == (2, ctx.n_users, 8) and items.shape == (2, ctx.n_items, 8)


def test_options_defaults_and_grid():
    assert BM3.uses_features and BM3.default_reg_weight == 0.1
    assert {k: o.default for k, o in BM3.model_options().items()} == {
        "n_layers": 1,
        "dropout": 0.5,
        "cl_weight": 2.0,
        "train_raw_features": True,
    }
    assert BM3.mmrec_grid == {"n_layers": [1, 2], "dropout": [0.3, 0.5], "reg_weight": [0.1, 0.01]}
