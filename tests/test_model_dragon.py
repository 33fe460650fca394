"""DRAGON against a dense re-computation of MMRec's formulas on tiny data: modality GCNs, concatenation, user
graph, item kNN graph, loss, evaluation, CLEAR, members, options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fixtures.tiny_models import context_of, train_batch

from clear_tune.config import TrainConfig
from clear_tune.data import make_synthetic
from clear_tune.models import BACKBONES, build_model

torch.set_num_threads(1)

OFF = {"mode": "off"}
CLEAR_ON = {"k": 3, "strength": 0.8}
SMALL = {"k": 6, "knn_k": 4}


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic(n_users=50, n_items=30, d_v=12, d_t=10, pref_dim=4, seed=4)


@pytest.fixture()
def ctx(dataset):
    return context_of(dataset)


def config(projection=OFF, **overrides) -> TrainConfig:
    options = {**SMALL, **overrides.pop("model_options", {})}
    return TrainConfig(backbone="dragon", projection=projection, emb_dim=8, model_options=options, **overrides)


def batch(dataset, size=40, seed=0):
    return train_batch(context_of(dataset, features=False), size, seed)


def dense_ui(ctx):
    """PyG's ``Base_gcn`` (``aggr='add'``) as a dense matrix: ``deg(row)^-1/2 deg(col)^-1/2`` per edge, no self loops."""
    U, n = ctx.n_users, ctx.n_users + ctx.n_items
    A = torch.zeros(n, n)
    A[ctx.train_users, ctx.train_items + U] = 1.0
    A[ctx.train_items + U, ctx.train_users] = 1.0
    deg = A.sum(1)
    inv = torch.where(deg > 0, deg.pow(-0.5), torch.zeros(()))
    return inv[:, None] * A * inv[None, :]


def dense_mm_adj(ctx, knn_k, image_weight=0.1):
    """MMRec's ``get_knn_adj_mat``: cosine top-k of the raw rows (self included), ``(1e-7 + r)^-1/2`` both sides."""
    graphs = []
    for feat in (ctx.image_feat, ctx.text_feat):
        unit = feat / feat.norm(dim=-1, keepdim=True)
        top = (unit @ unit.T).topk(knn_k, dim=-1).indices
        adj = torch.zeros(ctx.n_items, ctx.n_items)
        adj.scatter_(1, top, 1.0)
        r = (1e-7 + adj.sum(1)).pow(-0.5)
        graphs.append(r[:, None] * adj * r[None, :])
    return image_weight * graphs[0] + (1 - image_weight) * graphs[1]


def dense_gcn(raw, pref, encoder, m, A, hops=2, feats=None):
    """MMRec's ``GCN.forward``; ``feats`` replaces the MLP's output (CLEAR's projected features)."""
    if feats is None:
        hidden = F.leaky_relu(raw @ encoder[0].weight[m] + encoder[0].bias[m])  # MLP, slope 0.01
        feats = hidden @ encoder[2].weight[m] + encoder[2].bias[m]  # MLP_1
    x = F.normalize(torch.cat([pref[m], feats]))
    out, h = x, x
    for _ in range(hops):
        h = A @ h
        out = out + h
    return out


def dense_forward(model, ctx, m=0, *, knn_k=4, hops=2, mm_layers=1, feats=(None, None)):
    """MMRec's DRAGON.forward (construction 'cat') for member ``m``: result_embed's users, items. ``feats``: the
    encoders' outputs to use instead of MMRec's (CLEAR's projected ones)."""
    U, A = ctx.n_users, dense_ui(ctx)
    v = dense_gcn(ctx.image_feat, model.image_pref, model.image_encoder, m, A, hops, feats[0])
    t = dense_gcn(ctx.text_feat, model.text_pref, model.text_encoder, m, A, hops, feats[1])
    w = model.weight_u[m].unsqueeze(2)  # MMRec's (U, 2, 1)
    user = w.transpose(1, 2) * torch.stack([v[:U], t[:U]], 2)  # weight_u.transpose(1, 2) * cat(v, t, dim=2)
    user = torch.cat([user[:, :, 0], user[:, :, 1]], 1)  # (U, 2d)
    item = torch.cat([v, t], 1)[U:]
    h = item
    for _ in range(mm_layers):
        h = dense_mm_adj(ctx, knn_k) @ h
    user = user + model.user_graph[0].to_dense() @ user  # User_Graph_sample: softmax-weighted sampled neighbours
    return user, item + h


def dense_loss(model, user, item, users, pos, neg, reg_weight, m=0):
    diff = (user[users] * item[pos]).sum(1) - (user[users] * item[neg]).sum(1)
    reg = reg_weight * ((model.image_pref[m, users] ** 2).mean() + (model.text_pref[m, users] ** 2).mean())
    return -torch.mean(torch.log2(torch.sigmoid(diff))) + reg + reg_weight * (model.weight_u[m] ** 2).mean()


@pytest.mark.parametrize("options", [{}, {"n_mm_layers": 2, "n_layers": 1}, {"user_aggr_mode": "mean"}])
def test_forward_and_loss_are_mmrecs(dataset, ctx, options):
    model = build_model(config(reg_weight=0.3, model_options=options), ctx)
    model.start_epoch(1)
    users, pos, neg = batch(dataset)
    with torch.no_grad():
        loss = model.loss(users, pos, neg)
        U, Ei = dense_forward(model, ctx, hops=options.get("n_layers", 2), mm_layers=options.get("n_mm_layers", 1))
        torch.testing.assert_close(model.embeddings()[0][0], U, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model.embeddings()[1][0], Ei, rtol=1e-5, atol=1e-6)
        expected = dense_loss(model, U, Ei, users, pos, neg, 0.3)
    torch.testing.assert_close(loss[0], expected, rtol=1e-5, atol=0)
    if options.get("user_aggr_mode") == "mean":  # every user with a neighbour averages k (padded) neighbours
        W = model.user_graph[0].to_dense()
        has = model.neighbours[2] > 0
        torch.testing.assert_close(W[has].sum(1), torch.ones(int(has.sum())))


def test_item_graph_is_mmrecs_mm_adj_and_shared_with_freedom(ctx):
    model = build_model(config(), ctx)
    torch.testing.assert_close(model.mm_graph.to_dense(), dense_mm_adj(ctx, 4), rtol=1e-6, atol=1e-7)
    freedom = build_model(TrainConfig(backbone="freedom", emb_dim=8, projection=OFF, model_options={"knn_k": 4}), ctx)
    assert freedom.mm_graph is model.mm_graph  # one graph per dataset


def test_what_is_trained_and_how_it_starts(dataset, ctx):
    model = build_model(config(), ctx)
    names = {name for name, _ in model.named_parameters()}
    encoders = {
        f"{enc}.{layer}.{p}"
        for enc in ("image_encoder", "text_encoder")
        for layer in (0, 2)
        for p in ("weight", "bias")
    }  # MLP and MLP_1 of each modality's GCN
    assert (
        names == {"image_pref", "text_pref", "weight_u"} | encoders
    )  # no weight_i, image_trs, ... (never in the loss)
    assert model.image_encoder[0].weight.shape == (1, 12, 32) and model.image_encoder[2].weight.shape == (1, 32, 8)
    assert torch.allclose(model.weight_u.sum(-1), torch.ones(1, ctx.n_users)) and (model.weight_u > 0).all()
    # nn.Linear's own initialisation: |W| <= 1/sqrt(fan_in), |b| <= 1/sqrt(fan_in); preferences xavier_normal_
    assert model.image_encoder[0].weight.abs().max() <= 12**-0.5 and model.image_encoder[0].bias.abs().max() <= 12**-0.5
    assert model.image_encoder[0].bias.abs().min() > 0
    assert abs(model.image_pref.std().item() - (2 / (ctx.n_users + 8)) ** 0.5) < 0.03
    model.start_epoch(1)
    model.loss(*batch(dataset)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert [e.shape[-1] for e in model.embeddings()] == [16, 16]  # [v ‖ t]


def test_user_graph_is_resampled_each_epoch_from_the_models_generator(dataset, ctx):
    padded = {"model_options": {"k": 45}}  # more than most users have: they are padded
    a, b = build_model(config(**padded), ctx), build_model(config(**padded), ctx)
    a.start_epoch(1)
    b.start_epoch(1)
    first = a.user_graph[0].to_dense()
    assert torch.equal(first, b.user_graph[0].to_dense())  # one seed, one sample
    torch.testing.assert_close(first.sum(1), (a.neighbours[2] > 0).float())  # softmax rows; empty rows nothing
    a.start_epoch(2)
    assert not torch.equal(first, a.user_graph[0].to_dense())
    other = build_model(config(seed=7, **padded), ctx)
    other.start_epoch(1)
    assert not torch.equal(first, other.user_graph[0].to_dense())


def test_evaluation_uses_the_last_batchs_representations_as_mmrec(dataset, ctx):
    model = build_model(config(), ctx)
    fresh = build_model(config(model_options={"eval_from_last_batch": False}), ctx)
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
        assert not torch.allclose(model.representations()[0], before[0])
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
        # the projection acts on the GCN MLP's outputs (V P_v, T P_t), before they join the preferences
        V, T = on.encode()
        projected = on.modal_features()
        assert not torch.allclose(projected[0], V) and not torch.allclose(projected[1], T)
        U, Ei = dense_forward(on, ctx, feats=(projected[0][0], projected[1][0]))
        torch.testing.assert_close(on.representations()[0][0], U, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(on.representations()[1][0], Ei, rtol=1e-5, atol=1e-6)


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
            torch.testing.assert_close(fused.embeddings()[0][m], model.embeddings()[0][0], rtol=1e-6, atol=1e-7)
        U, Ei = dense_forward(fused, ctx, m=0)  # member 0 of the array is MMRec's model too
        torch.testing.assert_close(fused.embeddings()[0][0], U, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fused.embeddings()[1][0], Ei, rtol=1e-5, atol=1e-6)
        fused.keep_members([2, 0])
        assert fused.last_users.shape[0] == 2 and fused.embeddings()[0].shape[0] == 2
        torch.testing.assert_close(fused.loss(*fixed), torch.stack([losses[2], losses[0]]), rtol=1e-6, atol=0)


def test_options_grid_and_defaults(ctx):
    from clear_tune.errors import SpecError

    cls = BACKBONES["dragon"]
    defaults = {name: option.default for name, option in cls.model_options().items()}
    assert defaults == {
        "aggr_mode": "add",
        "n_mm_layers": 1,
        "knn_k": 10,
        "mm_image_weight": 0.1,
        "n_layers": 2,
        "k": 40,
        "user_aggr_mode": "softmax",
        "eval_from_last_batch": True,
    }
    assert cls.default_reg_weight == 1e-4 and cls.lr_decay == (1.0, 50)
    assert cls.mmrec_grid == {
        "aggr_mode": ["add"],
        "reg_weight": [0.1, 0.01, 1e-3, 1e-4, 1e-5],
        "lr": [0.1, 0.01, 1e-3, 1e-4, 1e-5],
    }
    for options in (
        {"aggr_mode": "mean"},
        {"user_aggr_mode": "max"},
        {"k": 0},
        {"knn_k": 0},
        {"mm_image_weight": 2.0},
        {"n_layers": "two"},
    ):
        with pytest.raises(SpecError):
            build_model(config(model_options=options), ctx)
