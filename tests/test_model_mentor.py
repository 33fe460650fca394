"""MENTOR against a dense re-computation of its authors' formulas on tiny data: seven GCNs (three views, an ID
GCN, four noise-perturbed ones), item kNN graph, the five loss terms, evaluation, CLEAR, members, options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fixtures.tiny_models import context_of, train_batch

from clear_tune.config import TrainConfig
from clear_tune.data import make_synthetic
from clear_tune.models import BACKBONES, build_model
from clear_tune.models import _losses as L

torch.set_num_threads(1)

OFF = {"mode": "off"}
CLEAR_ON = {"k": 3, "strength": 0.8}
SMALL = {"knn_k": 4, "mask_weight_g": 0.5}  # a visible InfoNCE term
D = 8


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic(n_users=50, n_items=30, d_v=12, d_t=10, pref_dim=4, seed=4)


@pytest.fixture()
def ctx(dataset):
    return context_of(dataset)


def config(projection=OFF, **overrides) -> TrainConfig:
    options = {**SMALL, **overrides.pop("model_options", {})}
    return TrainConfig(backbone="mentor", projection=projection, emb_dim=D, model_options=options, **overrides)


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
    """MENTOR's ``get_knn_adj_mat``: cosine top-k of the raw rows (self included), ``(1e-7 + r)^-1/2`` both sides."""
    graphs = []
    for feat in (ctx.image_feat, ctx.text_feat):
        unit = feat / feat.norm(dim=-1, keepdim=True)
        top = (unit @ unit.T).topk(knn_k, dim=-1).indices
        adj = torch.zeros(ctx.n_items, ctx.n_items).scatter_(1, top, 1.0)
        r = (1e-7 + adj.sum(1)).pow(-0.5)
        graphs.append(r[:, None] * adj * r[None, :])
    return image_weight * graphs[0] + (1 - image_weight) * graphs[1]


def replay_draws(model, ctx, *, hops=2, dropout=0.5):
    """The CPU draws the next ``loss()`` makes, in its order: per hop the four views' uniform noise ``(4, U + I, d)``,
    then ``F.dropout``'s multipliers for the users' and the items' rows of the main view."""
    g = torch.Generator()
    g.set_state(model.generator.get_state())
    n = ctx.n_users + ctx.n_items
    noise = [torch.rand(4, n, D, generator=g) for _ in range(hops)]
    masks = [
        (torch.rand(rows, 2 * D, generator=g) >= dropout).float() / (1 - dropout) for rows in (ctx.n_users, ctx.n_items)
    ]
    return noise, masks


def gcn(ctx, A, feat, pref, encoder, m, noise=None, eps=0.1, hops=2):
    """MENTOR's ``GCN.forward`` (``perturbed`` when ``noise`` holds one uniform draw per hop)."""
    hidden = F.leaky_relu(feat @ encoder[0].weight[m] + encoder[0].bias[m])
    x = F.normalize(torch.cat([pref, hidden @ encoder[2].weight[m] + encoder[2].bias[m]]))
    out, h = x, x
    for hop in range(hops):
        h = A @ h
        if noise is not None:
            h = h + torch.sign(h) * F.normalize(noise[hop], dim=-1) * eps
        out = out + h
    return out


def info_nce(view1, view2, temp):
    view1, view2 = F.normalize(view1, dim=1), F.normalize(view2, dim=1)
    pos_score = torch.exp((view1 * view2).sum(dim=-1) / temp)
    ttl_score = torch.exp(torch.matmul(view1, view2.transpose(0, 1)) / temp).sum(dim=1)
    return torch.mean(-torch.log(pos_score / ttl_score))


def dense_mentor(
    model,
    ctx,
    users,
    pos,
    neg,
    draws,
    m=0,
    *,
    reg_weight,
    knn_k=4,
    hops=2,
    mm_layers=1,
    eps=0.1,
    temp=0.2,
    dropout=0.5,
    mask_weight_f=1.5,
    mask_weight_g=0.5,
    align_weight=0.1,
):
    """MENTOR's ``forward`` + ``calculate_loss`` for member ``m``, densely, as written: (loss, users, items)."""
    U, A, A_mm = ctx.n_users, dense_ui(ctx), dense_mm_adj(ctx, knn_k)
    noise, (drop_u, drop_i) = draws
    per_view = [[noise[h][j] for h in range(hops)] for j in range(4)]
    v = gcn(ctx, A, ctx.image_feat, model.image_pref[m], model.image_encoder, m, hops=hops)
    t = gcn(ctx, A, ctx.text_feat, model.text_pref[m], model.text_encoder, m, hops=hops)
    idr = gcn(ctx, A, model.id_feat[m], model.id_pref[m], model.id_encoder, m, hops=hops)
    noisy = [
        gcn(ctx, A, feat, model.noise_pref[m, j], model.noise_encoders[j], m, per_view[j], eps, hops)
        for j, feat in enumerate((ctx.image_feat, ctx.text_feat, ctx.image_feat, ctx.text_feat))
    ]
    w = model.weight_u[m].unsqueeze(2)

    def weighted(a, b):  # weight_u.transpose(1, 2) * cat(a, b, dim=2), halves concatenated
        rep = w.transpose(1, 2) * torch.stack([a[:U], b[:U]], 2)
        return torch.cat([rep[:, :, 0], rep[:, :, 1]], 1)

    def item_graph(rep):
        h = rep[U:]
        for _ in range(mm_layers):
            h = A_mm @ h
        return rep[U:] + h

    r = torch.cat([weighted(v, t), item_graph(torch.cat([v, t], 1))])  # result_embed
    g = torch.cat([torch.cat([idr[:U], idr[:U]], 1), item_graph(torch.cat([idr, idr], 1))])
    vv = torch.cat([torch.cat([v[:U], v[:U]], 1), item_graph(torch.cat([v, v], 1))])
    tt = torch.cat([torch.cat([t[:U], t[:U]], 1), item_graph(torch.cat([t, t], 1))])
    n1 = torch.cat([weighted(noisy[0], noisy[1]), item_graph(torch.cat([noisy[0], noisy[1]], 1))])
    n2 = torch.cat([weighted(noisy[2], noisy[3]), item_graph(torch.cat([noisy[2], noisy[3]], 1))])

    diff = (r[users] * r[pos + U]).sum(1) - (r[users] * r[neg + U]).sum(1)
    loss = -torch.mean(torch.log2(torch.sigmoid(diff)))
    reg = reg_weight * ((model.image_pref[m, users] ** 2).mean() + (model.text_pref[m, users] ** 2).mean())
    reg = reg + reg_weight * (model.weight_u[m] ** 2).mean()
    with torch.no_grad():

        def mlp(x):
            return x @ model.mlp.weight[m] + model.mlp.bias[m]

        u_temp, i_temp = r[:U] * drop_u if dropout else r[:U], r[U:] * drop_i if dropout else r[U:]
        mask_f = mask_weight_f * (
            (1 - F.cosine_similarity(i_temp, mlp(r[U:])).mean()) + (1 - F.cosine_similarity(u_temp, mlp(r[:U])).mean())
        )
    stats = [(torch.var(x), torch.mean(x)) for x in (r, g, vv, tt)]  # r, g, v, t
    align = 0.0
    for a, b in ((1, 0), (1, 2), (1, 3), (0, 2), (0, 3), (2, 3)):  # g-r, g-v, g-t, r-v, r-t, v-t
        align = align + ((stats[a][0] - stats[b][0]).abs() + (stats[a][1] - stats[b][1]).abs()).mean()
    mask_g = info_nce(n1[:U], n2[:U], temp) + info_nce(n1[U:], n2[U:], temp)
    total = loss + reg + align * align_weight + mask_f + mask_g * mask_weight_g
    return total, r[:U], r[U:]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {
            "n_layers": 1,
            "n_mm_layers": 2,
            "temp": 0.4,
            "noise_eps": 0.3,
            "dropout": 0.2,
            "align_weight": 1.0,
            "mask_weight_f": 2.0,
        },
        {"dropout": 0.0},
    ],
)
def test_forward_loss_and_gradients_are_mentors(dataset, ctx, options):
    model = build_model(config(reg_weight=0.3, model_options=options), ctx)
    model.start_epoch(1)
    users, pos, neg = batch(dataset)
    hops, dropout = options.get("n_layers", 2), options.get("dropout", 0.5)
    draws = replay_draws(model, ctx, hops=hops, dropout=dropout or 0.5)  # with dropout 0 the masks go unused
    settings = {k: options[k] for k in ("temp", "align_weight", "mask_weight_f", "dropout") if k in options}
    loss = model.loss(users, pos, neg)
    loss.sum().backward()
    expected, U, Ei = dense_mentor(
        model,
        ctx,
        users,
        pos,
        neg,
        draws,
        reg_weight=0.3,
        hops=hops,
        mm_layers=options.get("n_mm_layers", 1),
        eps=options.get("noise_eps", 0.1),
        **settings,
    )
    torch.testing.assert_close(loss[0], expected, rtol=2e-6, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(model.embeddings()[0][0], U, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model.embeddings()[1][0], Ei, rtol=1e-5, atol=1e-6)
    trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(expected, [p for _, p in trained])  # the dense loss on the same parameters
    for (name, p), grad in zip(trained, grads):
        torch.testing.assert_close(p.grad, grad, rtol=1e-4, atol=1e-7, msg=lambda m, name=name: f"{name}: {m}")


def test_what_is_trained_and_how_it_starts(dataset, ctx):
    model = build_model(config(), ctx)
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    mlps = {
        f"{enc}.{layer}.{p}"
        for enc in ("image_encoder", "text_encoder", "id_encoder", *(f"noise_encoders.{j}" for j in range(4)))
        for layer in (0, 2)
        for p in ("weight", "bias")
    }  # MLP and MLP_1 of all seven GCNs
    assert names == {"image_pref", "text_pref", "id_pref", "noise_pref", "id_feat", "weight_u"} | mlps
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"mlp.weight", "mlp.bias"}  # MENTOR's mlp only ever runs under no_grad
    assert model.noise_pref.shape == (1, 4, ctx.n_users, D) and model.id_feat.shape == (1, ctx.n_items, D)
    assert model.noise_encoders[0][0].weight.shape == (1, 12, 4 * D) and model.noise_encoders[1][0].weight.shape == (
        1,
        10,
        4 * D,
    )
    assert model.id_encoder[0].weight.shape == (1, D, 4 * D)
    assert torch.allclose(model.weight_u.sum(-1), torch.ones(1, ctx.n_users)) and (model.weight_u > 0).all()
    # every GCN has its own weights
    assert not torch.equal(model.noise_pref[0, 0], model.noise_pref[0, 2])
    assert not torch.equal(model.noise_encoders[0][0].weight, model.image_encoder[0].weight)
    model.start_epoch(1)
    model.loss(*batch(dataset)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)
    assert model.mlp.weight.grad is None
    assert [e.shape[-1] for e in model.embeddings()] == [2 * D, 2 * D]  # [v ‖ t]


def test_feature_masking_term_is_a_constant(dataset, ctx):
    a = build_model(config(), ctx)
    b = build_model(config(model_options={"feature_mask_value": False}), ctx)
    fixed = batch(dataset)
    a.start_epoch(1)
    b.start_epoch(1)
    draws = replay_draws(a, ctx)
    la, lb = a.loss(*fixed), b.loss(*fixed)
    la.sum().backward()
    lb.sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):  # no gradient from the masking term
        assert (pa.grad is None and pb.grad is None) or torch.equal(pa.grad, pb.grad), name
    with torch.no_grad():
        r_u, r_i = a.last_users[0], a.last_items[0]

        def mlp(x):
            return x @ a.mlp.weight[0] + a.mlp.bias[0]

        drop_u, drop_i = draws[1]
        term = 1.5 * (
            (1 - F.cosine_similarity(r_i * drop_i, mlp(r_i)).mean())
            + (1 - F.cosine_similarity(r_u * drop_u, mlp(r_u)).mean())
        )
    torch.testing.assert_close(la - lb, term.reshape(1), rtol=1e-5, atol=1e-6)


def test_noise_comes_from_the_models_generator(dataset, ctx):
    a, b = build_model(config(), ctx), build_model(config(), ctx)
    fixed = batch(dataset)
    a.start_epoch(1)
    b.start_epoch(1)
    first = a.loss(*fixed)
    torch.manual_seed(123)  # the global RNG does not matter
    assert torch.equal(first, b.loss(*fixed))
    assert not torch.equal(first, a.loss(*fixed))  # fresh noise and masks in every batch
    calm = build_model(config(model_options={"noise_eps": 0.0, "dropout": 0.0}), ctx)
    calm.start_epoch(1)
    state = calm.generator.get_state()
    again = calm.loss(*fixed)
    assert torch.equal(calm.generator.get_state(), state) and torch.equal(again, calm.loss(*fixed))  # nothing drawn
    other = build_model(config(seed=7), ctx)
    other.start_epoch(1)
    other.load_state_dict(a.state_dict())
    other_loss = other.loss(*fixed)
    a.generator.manual_seed(0)
    assert not torch.equal(other_loss, a.loss(*fixed))


def test_evaluation_uses_the_last_batchs_main_view_as_mentor(dataset, ctx):
    model = build_model(config(), ctx)
    fresh = build_model(config(model_options={"eval_from_last_batch": False}), ctx)
    model.start_epoch(1)
    fresh.start_epoch(1)
    loss = model.loss(*batch(dataset))
    with torch.no_grad():
        before = model.embeddings()
        main = model.main_view()  # no noise in the main view: what the batch computed (a 2-GCN stack, not 7)
        torch.testing.assert_close(before[0], main[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(before[1], main[1], rtol=1e-5, atol=1e-6)
    loss.sum().backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.05 * p.grad
        assert torch.equal(model.embeddings()[0], before[0])  # result_embed: before the last step
        assert not torch.allclose(model.main_view()[0], before[0], rtol=1e-3, atol=1e-4)
        state = fresh.generator.get_state()
        torch.testing.assert_close(fresh.embeddings()[1], fresh.main_view()[1], rtol=0, atol=0)
        assert torch.equal(fresh.generator.get_state(), state)  # evaluation draws nothing


def test_projection_changes_the_forward_pass_and_lambda_zero_is_the_identity(dataset, ctx):
    on, off = build_model(config(CLEAR_ON), ctx), build_model(config(OFF), ctx)
    zero = build_model(config({"k": 3, "strength": 0.0}), ctx)
    fixed = batch(dataset)
    with torch.no_grad():
        for model in (on, off, zero):
            model.start_epoch(1)
        losses = [model.loss(*fixed) for model in (on, off, zero)]  # each one's first draws: the same noise
        assert not torch.allclose(losses[0], losses[1])
        assert torch.equal(losses[2], losses[1])
        # the projection acts on the main GCNs' MLP outputs only: the ID and noise GCNs read no projected feature
        V, T = on.encode()
        projected = on.modal_features()
        assert not torch.allclose(projected[0], V) and not torch.allclose(projected[1], T)
        reps = on.gcns([on.image_pref, on.text_pref], list(projected), 0)
        users, items = on.main_view()
        torch.testing.assert_close(users, on.fuse_users(reps[0], reps[1]), rtol=0, atol=0)
        torch.testing.assert_close(items, torch.cat(list(on.item_graph(reps)), -1), rtol=0, atol=0)


def test_fused_members_get_their_own_losses_and_keep_members(dataset, ctx):
    settings = [
        dict(projection=OFF, reg_weight=1e-3),
        dict(projection=CLEAR_ON, reg_weight=0.5),
        dict(projection={"k": 2, "strength": 0.5}, reg_weight=0.0),
    ]
    fused = build_model([config(**s) for s in settings], ctx)
    alone = [build_model(config(**s), ctx) for s in settings]
    fixed = batch(dataset)
    for model in (fused, *alone):
        model.start_epoch(1)
    draws = replay_draws(fused, ctx)
    losses = fused.loss(*fixed)  # members share the noise and the dropout masks
    for m, model in enumerate(alone):
        torch.testing.assert_close(losses[m], model.loss(*fixed)[0], rtol=1e-6, atol=0)
        torch.testing.assert_close(fused.embeddings()[0][m], model.embeddings()[0][0], rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        expected, _, _ = dense_mentor(fused, ctx, *fixed, draws, m=0, reg_weight=1e-3)  # member 0 is MENTOR's model
    torch.testing.assert_close(losses[0], expected, rtol=2e-6, atol=0)
    fused.keep_members([2, 0])
    assert fused.last_users.shape[0] == 2 and fused.noise_pref.shape[0] == 2 and fused.mlp.weight.shape[0] == 2
    assert not fused.mlp.weight.requires_grad
    state = fused.generator.get_state()
    kept = fused.loss(*fixed)
    fused.generator.set_state(state)
    for model in alone:
        model.generator.set_state(state)
    torch.testing.assert_close(
        kept, torch.stack([alone[2].loss(*fixed)[0], alone[0].loss(*fixed)[0]]), rtol=1e-6, atol=0
    )


def test_info_nce_in_row_blocks_is_the_whole_matrix():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 37, 5, generator=g).requires_grad_(True)
    b = torch.randn(2, 37, 5, generator=g).requires_grad_(True)
    whole = L.exp_info_nce(a, b, 0.3)
    blocks = L.exp_info_nce(a, b, 0.3, chunk_elements=2 * 37 * 4)  # four rows at a time, checkpointed
    torch.testing.assert_close(blocks, whole, rtol=1e-6, atol=0)
    torch.testing.assert_close(whole[1], info_nce(a[1], b[1], 0.3), rtol=1e-6, atol=0)
    grads_whole = torch.autograd.grad(whole.sum(), [a, b])
    grads_blocks = torch.autograd.grad(blocks.sum(), [a, b])
    for x, y in zip(grads_blocks, grads_whole):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-7)


def test_moments_are_torch_mean_and_var_of_the_concatenation():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 7, 4, generator=g), torch.randn(3, 5, 4, generator=g)
    mean, var = L.moments((x, 2), (y, 2))
    for m in range(3):
        full = torch.cat([torch.cat([x[m], x[m]], 1), torch.cat([y[m], y[m]], 1)])  # [x ‖ x; y ‖ y]
        torch.testing.assert_close(mean[m], full.mean(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(var[m], torch.var(full), rtol=1e-6, atol=0)


def test_options_grid_and_defaults(ctx):
    from clear_tune.errors import SpecError

    cls = BACKBONES["mentor"]
    defaults = {name: option.default for name, option in cls.model_options().items()}
    assert defaults == {
        "n_mm_layers": 1,
        "knn_k": 10,
        "mm_image_weight": 0.1,
        "n_layers": 2,
        "dropout": 0.5,
        "mask_weight_f": 1.5,
        "mask_weight_g": 1e-4,
        "align_weight": 0.1,
        "temp": 0.2,
        "noise_eps": 0.1,
        "eval_from_last_batch": True,
        "feature_mask_value": True,
    }
    assert cls.default_reg_weight == 1e-3 and cls.lr_decay == (1.0, 50)
    assert cls.mmrec_grid == {
        "reg_weight": [1e-3],
        "lr": [1e-4],
        "dropout": [0.5],
        "mask_weight_f": [1.5],
        "mask_weight_g": [1e-4, 1e-3],
        "align_weight": [0.1],
        "temp": [0.2, 0.4, 0.6],
    }
    for options in (
        {"dropout": 1.0},
        {"temp": 0.0},
        {"noise_eps": -1.0},
        {"n_layers": 0},
        {"knn_k": 0},
        {"mm_image_weight": 2.0},
        {"temp": "warm"},
    ):
        with pytest.raises(SpecError):
            build_model(config(model_options=options), ctx)
