"""DualGNN against a dense re-computation of MMRec's formulas on tiny data: GCN, fusion, user graph, loss, CLEAR."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fixtures.tiny_models import context_of, train_batch

from clear_tune.config import TrainConfig
from clear_tune.data import make_synthetic
from clear_tune.models import build_model

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
    options = overrides.pop("model_options", {"k": 6})
    return TrainConfig(backbone="dualgnn", projection=projection, emb_dim=8, model_options=options, **overrides)


def batch(dataset, size=40, seed=0):
    return train_batch(context_of(dataset, features=False), size, seed)


def dense_forward(model, ctx, m=0):
    """MMRec's DualGNN.forward for member ``m``, densely, projection off: users (U, d), items (I, d)."""
    U, n = ctx.n_users, ctx.n_users + ctx.n_items
    A = torch.zeros(n, n)
    A[ctx.train_users, ctx.train_items + U] = 1.0
    A[ctx.train_items + U, ctx.train_users] = 1.0
    deg = A.sum(1)
    inv = torch.where(deg > 0, deg.pow(-0.5), torch.zeros(()))
    A = inv[:, None] * A * inv[None, :]  # PyG: deg(row)^-1/2 deg(col)^-1/2 per edge, no self loops
    reps = []
    for encoder, raw, pref in (
        (model.image_encoder, ctx.image_feat, model.image_pref),
        (model.text_encoder, ctx.text_feat, model.text_pref),
    ):
        hidden = F.leaky_relu(raw @ encoder[0].weight[m] + encoder[0].bias[m])  # MLP, slope 0.01
        feats = hidden @ encoder[2].weight[m] + encoder[2].bias[m]  # MLP_1
        x = F.normalize(torch.cat([pref[m], feats]))
        h = A @ x
        reps.append(h + x + A @ h)
    v, t = reps
    v = v + t  # MMRec's in-place `representation += t_rep`
    w = model.weight_u[m]
    user = torch.stack([v[:U], t[:U]], 2) @ w.unsqueeze(2)  # cat(v_rep, t_rep, dim=2) @ weight_u
    user = user.squeeze(2)
    user = user + model.user_graph[0].to_dense() @ user
    return user, v[U:]


def test_forward_and_loss_are_mmrecs(dataset, ctx):
    model = build_model(config(reg_weight=0.3), ctx)
    model.start_epoch(1)
    users, pos, neg = batch(dataset)
    with torch.no_grad():
        loss = model.loss(users, pos, neg)
        U, Ei = dense_forward(model, ctx)
        torch.testing.assert_close(model.embeddings()[0][0], U, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model.embeddings()[1][0], Ei, rtol=1e-5, atol=1e-6)
        diff = (U[users] * Ei[pos]).sum(1) - (U[users] * Ei[neg]).sum(1)
        reg = (
            (model.image_pref[0, users] ** 2).mean()
            + (model.text_pref[0, users] ** 2).mean()
            + (model.weight_u[0] ** 2).mean()
            + (model.weight_i[0] ** 2).mean()
        )
        expected = -torch.mean(torch.log2(torch.sigmoid(diff))) + 0.3 * reg
    torch.testing.assert_close(loss[0], expected, rtol=1e-5, atol=0)


def test_what_is_trained_and_how_it_starts(dataset, ctx):
    model = build_model(config(), ctx)
    names = {name for name, _ in model.named_parameters()}
    encoders = {
        f"{enc}.{layer}.{p}"
        for enc in ("image_encoder", "text_encoder")
        for layer in (0, 2)
        for p in ("weight", "bias")
    }  # MLP and MLP_1 of each modality's GCN
    assert names == {"image_pref", "text_pref", "weight_u", "weight_i"} | encoders
    assert model.image_encoder[0].weight.shape == (1, 12, 32) and model.image_encoder[2].weight.shape == (1, 32, 8)
    # weight_u / weight_i: softmax over the two modalities at init, then free
    assert torch.allclose(model.weight_u.sum(-1), torch.ones(1, ctx.n_users)) and (model.weight_u > 0).all()
    assert model.weight_i.shape == (1, ctx.n_items, 2)
    model.start_epoch(1)
    model.loss(*batch(dataset)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_user_graph_is_resampled_each_epoch_from_the_models_generator(dataset, ctx):
    padded = {"model_options": {"k": 45}}  # more than most users have: they are padded
    a, b = build_model(config(**padded), ctx), build_model(config(**padded), ctx)
    a.start_epoch(1)
    b.start_epoch(1)
    first = a.user_graph[0].to_dense()
    assert torch.equal(first, b.user_graph[0].to_dense())  # one seed, one sample
    torch.testing.assert_close(first.sum(1), (a.neighbours[2] > 0).float())  # softmax rows; empty rows nothing
    a.start_epoch(2)
    assert not torch.equal(first, a.user_graph[0].to_dense())  # padded users draw again
    other = build_model(config(seed=7, **padded), ctx)
    other.start_epoch(1)
    assert not torch.equal(first, other.user_graph[0].to_dense())


def test_evaluation_uses_the_last_batchs_representations_as_mmrec(dataset, ctx):
    model = build_model(config(), ctx)
    fresh = build_model(config(model_options={"k": 6, "eval_from_last_batch": False}), ctx)
    model.start_epoch(1)
    fresh.start_epoch(1)
    loss = model.loss(*batch(dataset))
    with torch.no_grad():
        before = model.representations()
    loss.sum().backward()
    with torch.no_grad():
        for p in model.parameters():  # one plain gradient step
            p -= 0.05 * p.grad
        assert torch.equal(model.embeddings()[0], before[0])  # MMRec's result_embed: before the last step
        after = model.representations()
        assert not torch.allclose(after[0], before[0])
        torch.testing.assert_close(fresh.embeddings()[0], fresh.representations()[0], rtol=0, atol=0)


def test_projection_changes_the_forward_pass_and_lambda_zero_is_the_identity(dataset, ctx):
    on, off = build_model(config(CLEAR_ON), ctx), build_model(config(OFF), ctx)
    zero = build_model(config({"k": 3, "strength": 0.0}), ctx)
    fixed = batch(dataset)
    with torch.no_grad():
        for model in (on, off, zero):
            model.start_epoch(1)
        assert not torch.allclose(on.loss(*fixed), off.loss(*fixed))
        assert torch.equal(zero.loss(*fixed), off.loss(*fixed))


def test_fused_members_get_their_own_losses_and_keep_members(dataset, ctx):
    settings = [
        dict(projection=OFF, reg_weight=1e-3),
        dict(projection=CLEAR_ON, reg_weight=0.5),
        dict(projection={"k": 2, "strength": 0.5}, reg_weight=0.0),
    ]
    fused = build_model([config(**s) for s in settings], ctx)
    alone = [build_model(config(**s), ctx) for s in settings]
    fixed = batch(dataset)
    with torch.no_grad():
        for model in (fused, *alone):
            model.start_epoch(1)
        losses = fused.loss(*fixed)
        for m, model in enumerate(alone):
            torch.testing.assert_close(losses[m], model.loss(*fixed)[0], rtol=1e-6, atol=0)
        fused.keep_members([2, 0])
        assert fused.last_users.shape[0] == 2 and fused.embeddings()[0].shape[0] == 2
        kept = fused.loss(*fixed)
        torch.testing.assert_close(kept, torch.stack([losses[2], losses[0]]), rtol=1e-6, atol=0)


def test_bad_options_are_rejected(ctx):
    from clear_tune.errors import SpecError

    for options in ({"aggr_mode": "mean"}, {"user_aggr_mode": "max"}, {"k": 0}):
        with pytest.raises(SpecError):
            build_model(config(model_options=options), ctx)
