"""LATTICE against a dense re-computation of MMRec's formulas on tiny data (graphs, loss, what trains, CLEAR)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clear_tune.config import TrainConfig
from clear_tune.data import make_synthetic
from clear_tune.models import ModelContext, build_model

torch.set_num_threads(1)
OFF = {"mode": "off"}
ON = {"k": 3, "strength": 0.8}


@pytest.fixture(scope="module")
def ctx():
    ds = make_synthetic(n_users=50, n_items=30, d_v=12, d_t=8, pref_dim=4, seed=2)
    train = torch.as_tensor(ds.train, dtype=torch.long)
    return ModelContext(
        ds.n_users,
        ds.n_items,
        train[:, 0].contiguous(),
        train[:, 1].contiguous(),
        torch.as_tensor(ds.image_feat, dtype=torch.float32),
        torch.as_tensor(ds.text_feat, dtype=torch.float32),
        torch.device("cpu"),
    )


def model(ctx, projection=OFF, reg_weight=0.1, **options):
    options = {"knn_k": 4, **options}
    cfgs = [
        TrainConfig(backbone="lattice", emb_dim=8, projection=p, reg_weight=r, model_options=options)
        for p, r in (projection if isinstance(projection, list) else [(projection, reg_weight)])
    ]
    return build_model(cfgs if len(cfgs) > 1 else cfgs[0], ctx)


def batch(ctx, size=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, ctx.train_users.numel(), (size,), generator=g)
    return ctx.train_users[rows], ctx.train_items[rows], torch.randint(0, ctx.n_items, (size,), generator=g)


# ---- MMRec's utils: build_sim, build_knn_neighbourhood, compute_normalized_laplacian, densely
def dense_knn(x, k):
    unit = x / x.norm(dim=-1, keepdim=True)
    sim = unit @ unit.T
    values, indices = sim.topk(k, dim=-1)
    return torch.zeros_like(sim).scatter_(-1, indices, values)


def laplacian(adj):
    d = adj.sum(-1).pow(-0.5)
    d[torch.isinf(d)] = 0.0
    return torch.diag(d) @ adj @ torch.diag(d)


def dense_forward(m, ctx, member=0):
    """MMRec's LATTICE.forward(norm_adj, build_item_graph=True) for one member, all dense."""
    image_raw = m.image_raw[member] if m.train_raw_features else ctx.image_feat
    text_raw = m.text_raw[member] if m.train_raw_features else ctx.text_feat
    V = image_raw @ m.image_encoder.weight[member] + m.image_encoder.bias[member]
    T = text_raw @ m.text_encoder.weight[member] + m.text_encoder.bias[member]
    w = m.modal_weight[member].softmax(0)
    learned = laplacian(w[0] * dense_knn(V, m.knn_k) + w[1] * dense_knn(T, m.knn_k))
    S_img, S_txt = (laplacian(dense_knn(raw, m.knn_k)) for raw in (ctx.image_feat, ctx.text_feat))
    original = w[0] * S_img + w[1] * S_txt
    G = (1 - m.lambda_coeff) * learned + m.lambda_coeff * original
    h = G @ m.item_emb.weight[member]
    M, N = ctx.n_users, ctx.n_items
    A = torch.zeros(M + N, M + N)
    A[ctx.train_users, ctx.train_items + M] = 1.0
    A[ctx.train_items + M, ctx.train_users] = 1.0
    A = A + torch.eye(M + N)
    A = A / A.sum(1, keepdim=True)  # D^-1 (A + I)
    ego = torch.cat([m.user_emb.weight[member], m.item_emb.weight[member]])
    layers = [ego, A @ ego, A @ A @ ego]
    final = torch.stack(layers, 1).mean(1)
    return final[:M], final[M:] + F.normalize(h, dim=1), G


def dense_loss(users_all, items_all, users, pos, neg, reg_weight, batch_size):
    u, p, n = users_all[users], items_all[pos], items_all[neg]
    mf = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
    reg = (0.5 * (u**2).sum() + 0.5 * (p**2).sum() + 0.5 * (n**2).sum()) / batch_size
    return mf + reg_weight * reg


def test_frozen_graphs_keep_the_similarity_values_and_normalise_by_their_row_sums(ctx):
    m = model(ctx)
    for (graph, graph_t), raw in zip(m.frozen, (ctx.image_feat, ctx.text_feat)):
        expected = laplacian(dense_knn(raw, 4))
        torch.testing.assert_close(graph.to_dense(), expected)
        torch.testing.assert_close(graph_t.to_dense(), expected.T)


def test_loss_and_embeddings_match_mmrecs_dense_forward(ctx):
    m = model(ctx, reg_weight=0.3)
    with torch.no_grad():  # non-trivial modal weights and a trained-looking raw-feature copy
        m.modal_weight.copy_(torch.tensor([[0.2, 0.9]]))
        m.image_raw.add_(0.1 * torch.randn_like(m.image_raw))
    users_all, items_all, G = dense_forward(m, ctx)
    m.start_epoch(1)
    first = batch(ctx, seed=1)
    torch.testing.assert_close(m.loss(*first)[0], dense_loss(users_all, items_all, *first, 0.3, 24))
    block = m._block_graph(m._graph)[0].to_dense()
    torch.testing.assert_close(block, G)
    # a later, shorter batch of the epoch: the detached graph, and MMRec's division by the batch size
    later = batch(ctx, size=10, seed=2)
    torch.testing.assert_close(m.loss(*later)[0], dense_loss(users_all, items_all, *later, 0.3, 24))
    with torch.no_grad():
        u, i = m.embeddings()
    torch.testing.assert_close(u[0], users_all)
    torch.testing.assert_close(i[0], items_all)


def test_mf_branch_uses_the_id_tables(ctx):
    m = model(ctx, cf_model="mf")
    with torch.no_grad():
        u, i = m.embeddings()
    _, _, G = dense_forward(m, ctx)
    torch.testing.assert_close(u[0], m.user_emb.weight[0])
    torch.testing.assert_close(i[0], m.item_emb.weight[0] + F.normalize(G @ m.item_emb.weight[0], dim=1))


def test_learned_graph_carries_gradients_only_in_the_first_batch_of_an_epoch(ctx):
    m = model(ctx)
    assert m.image_raw.requires_grad and m.image_raw.shape == (1, ctx.n_items, 12)  # from_pretrained(freeze=False)
    watched = [m.image_encoder.weight, m.text_encoder.bias, m.image_raw, m.modal_weight]
    for epoch in (1, 2):
        m.start_epoch(epoch)
        grads = torch.autograd.grad(m.loss(*batch(ctx, seed=epoch)).sum(), watched, allow_unused=True)
        assert all(g is not None and g.abs().sum() > 0 for g in grads)
        grads = torch.autograd.grad(m.loss(*batch(ctx, seed=9)).sum(), watched, allow_unused=True)
        assert all(g is None for g in grads)  # later batches: the graph is detached
    frozen = model(ctx, train_raw_features=False)
    assert not any(p.shape[-2:] == (ctx.n_items, 12) for p in frozen.parameters())


def test_evaluation_rebuilds_the_learned_graph_from_the_current_weights(ctx):
    m = model(ctx, lambda_coeff=0.0)
    m.start_epoch(1)
    m.loss(*batch(ctx))
    with torch.no_grad():
        before = m.embeddings()[1]
        m.text_encoder.weight.mul_(-1.0).add_(0.3)  # a step that changes the text neighbours
        after = m.embeddings()[1]
        torch.testing.assert_close(after[0], dense_forward(m, ctx)[1])
    assert not torch.allclose(before, after)


def test_clear_projection_changes_the_graph_and_strength_zero_is_the_identity(ctx):
    fixed = batch(ctx)
    with torch.no_grad():
        on, off = model(ctx, ON, lambda_coeff=0.0), model(ctx, OFF, lambda_coeff=0.0)
        zero = model(ctx, [(ON, 0.1), ({"k": 3, "strength": 0.0}, 0.1)], lambda_coeff=0.0)
        for m in (on, off, zero):
            m.start_epoch(1)
        assert not torch.allclose(on.loss(*fixed), off.loss(*fixed))
        both = zero.loss(*fixed)
        torch.testing.assert_close(both[1], off.loss(*fixed)[0], rtol=1e-6, atol=0)
        torch.testing.assert_close(both[0], on.loss(*fixed)[0], rtol=1e-6, atol=0)


def test_fused_members_get_their_own_loss_and_keep_members_compacts(ctx):
    settings = [(ON, 0.1), (OFF, 1e-3), ({"k": 2, "strength": 0.5}, 0.0)]
    fused = model(ctx, settings)
    alone = [model(ctx, p, r) for p, r in settings]
    for epoch in (1, 2):
        for m in (fused, *alone):
            m.start_epoch(epoch)
        for seed in (epoch, 5):  # the graph-building batch, then a later one
            fixed = batch(ctx, seed=seed)
            losses = fused.loss(*fixed)
            for i, m in enumerate(alone):
                torch.testing.assert_close(losses[i], m.loss(*fixed)[0], rtol=1e-6, atol=0)
    fused.keep_members([2, 0])
    fixed = batch(ctx, seed=7)
    losses = fused.loss(*fixed)  # mid-epoch: the kept members' detached graphs
    torch.testing.assert_close(losses[0], alone[2].loss(*fixed)[0], rtol=1e-6, atol=0)
    torch.testing.assert_close(losses[1], alone[0].loss(*fixed)[0], rtol=1e-6, atol=0)


def test_class_attributes_follow_mmrecs_yaml():
    from clear_tune.models import LATTICE

    assert LATTICE.lr_decay == (0.96, 50)
    assert LATTICE.mmrec_grid == {"reg_weight": [0.0, 1e-5, 1e-4, 1e-3], "lr": [1e-4, 5e-4, 1e-3, 5e-3]}
    assert LATTICE.model_options()["knn_k"].default == 10 and LATTICE.model_options()["lambda_coeff"].default == 0.9
