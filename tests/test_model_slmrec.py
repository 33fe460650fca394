"""SLMRec against a dense re-computation of MMRec's formulas on tiny data (graph, losses, evaluation, CLEAR)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fixtures.tiny_models import context_of, train_batch

from clear_tune.config import TrainConfig
from clear_tune.data import make_synthetic
from clear_tune.graphs import bipartite_graph
from clear_tune.models import build_model
from clear_tune.train import Trainer

torch.set_num_threads(1)
OFF = {"mode": "off"}
ON = {"k": 3, "strength": 0.8}


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic(n_users=50, n_items=30, d_v=12, d_t=8, pref_dim=4, seed=4)


@pytest.fixture(scope="module")
def ctx(dataset):
    return context_of(dataset)


def model(ctx, projection=OFF, reg_weight=1e-4, **options):
    settings = projection if isinstance(projection, list) else [(projection, reg_weight)]
    cfgs = [
        TrainConfig(backbone="slmrec", emb_dim=8, projection=p, reg_weight=r, model_options=options)
        for p, r in settings
    ]
    return build_model(cfgs if len(cfgs) > 1 else cfgs[0], ctx)


def batch(ctx, size=20, seed=0):
    return train_batch(ctx, size, seed)


def dense_adjacency(ctx):
    M, N = ctx.n_users, ctx.n_items
    A = torch.zeros(M + N, M + N)
    A[ctx.train_users, ctx.train_items + M] = 1.0
    A[ctx.train_items + M, ctx.train_users] = 1.0
    return A


def linear(layer, x, member=0):
    return x @ layer.weight[member] + layer.bias[member]


def dense_compute(m, ctx, member=0):
    """MMRec's SLMRec.compute: three LightGCNs over D^-1/2 A D^-1/2, concatenated, one Linear per side."""
    A = dense_adjacency(ctx)
    d = A.sum(1) + 1e-8
    G = torch.diag(d.pow(-0.5)) @ A @ torch.diag(d.pow(-0.5))
    E_u, E_i = m.user_emb.weight[member], m.item_emb.weight[member]
    V = linear(m.image_encoder, F.normalize(ctx.image_feat, dim=1), member)
    T = linear(m.text_encoder, F.normalize(ctx.text_feat, dim=1), member)

    def gcn(items):
        x = torch.cat([E_u, items])
        layers = [x]
        for _ in range(m.layer_num):
            x = G @ x
            layers.append(x)
        return torch.stack(layers, 1).mean(1)

    parts = [gcn(E_i), gcn(V), gcn(T)]
    M = ctx.n_users
    users = linear(m.user_fuse, torch.cat([p[:M] for p in parts], 1), member)
    items = linear(m.item_fuse, torch.cat([p[M:] for p in parts], 1), member)
    return users, items, [p[M:] for p in parts]


def ce(logits):
    return F.cross_entropy(logits, torch.arange(logits.shape[0]))


def test_adj_types_are_mmrecs_normalisations(ctx):
    A, M, N = dense_adjacency(ctx), ctx.n_users, ctx.n_items
    eye = torch.eye(M + N)
    expected = {
        "plain": A,
        "norm": (A + eye) / (A + eye).sum(1, keepdim=True),
        "gcmc": torch.nan_to_num(A / A.sum(1, keepdim=True)),
        "mean": torch.nan_to_num(A / A.sum(1, keepdim=True)) + eye,
    }
    d = A.sum(1).pow(-0.5)
    expected["pre"] = torch.nan_to_num(torch.diag(d) @ A @ torch.diag(d), posinf=0.0)
    for adj_type, dense in expected.items():
        graph = bipartite_graph(ctx.train_users, ctx.train_items, n_users=M, n_items=N, adj_type=adj_type)
        torch.testing.assert_close(graph.to_dense(), dense, msg=adj_type)


def test_loss_is_infonce_plus_alpha_times_fac(ctx):
    m = model(ctx, ssl_alpha=0.5, ssl_temp=0.3, temp=0.2)
    users, pos, neg = batch(ctx)
    users_all, items_all, (i_rows, v_rows, t_rows) = dense_compute(m, ctx)
    u, p = F.normalize(users_all[users], dim=1), F.normalize(items_all[pos], dim=1)
    main = ce(u @ p.T / 0.2)
    x_i = linear(m.g_i_iv, i_rows[pos])
    v_loss = ce(x_i @ linear(m.g_v_iv, v_rows[pos]).T / 0.3)
    t_loss = ce(linear(m.g_iva_ivat, linear(m.g_iv_iva, x_i)) @ linear(m.g_t_ivat, t_rows[pos]).T / 0.3)
    torch.testing.assert_close(m.loss(users, pos, neg)[0], main + 0.5 * (v_loss + t_loss))


def test_features_are_normalised_and_frozen_and_reg_weight_is_unused(ctx):
    m = model(ctx)
    torch.testing.assert_close(m.image_feat, F.normalize(ctx.image_feat, dim=1))
    assert not any(p.shape[-2:] == ctx.image_feat.shape for p in m.parameters())
    fixed = batch(ctx)
    with torch.no_grad():  # MMRec's SLMRec never reads its `reg`
        assert torch.equal(model(ctx, reg_weight=0.0).loss(*fixed), model(ctx, reg_weight=0.1).loss(*fixed))


def test_evaluation_uses_the_last_training_batchs_forward_as_mmrec(ctx):
    m = model(ctx)
    with torch.no_grad():
        fresh = m.embeddings()
    torch.testing.assert_close(fresh[1][0], dense_compute(m, ctx)[1])  # before any training: current weights
    optimizer = torch.optim.Adam(m.parameters(), lr=0.05)
    m.loss(*batch(ctx)).sum().backward()
    expected = dense_compute(m, ctx)  # the weights the last forward saw
    optimizer.step()
    with torch.no_grad():
        users, items = m.embeddings()
    torch.testing.assert_close(users[0], expected[0].detach())
    torch.testing.assert_close(items[0], expected[1].detach())


def test_trainer_applies_the_yamls_adam_weight_decay(dataset):
    cfg = TrainConfig(backbone="slmrec", emb_dim=8, projection=OFF, epochs=1, batch_size=64, device="cpu")
    assert Trainer(cfg, dataset).optimizer.param_groups[0]["weight_decay"] == 1e-4
    no_decay = cfg.model_copy(update={"model_options": {"weight_decay": 0.0}})
    assert Trainer(no_decay, dataset).optimizer.param_groups[0]["weight_decay"] == 0.0
    lightgcn = TrainConfig(backbone="lightgcn", emb_dim=8, projection=OFF, epochs=1, device="cpu")
    assert Trainer(lightgcn, dataset).optimizer.param_groups[0]["weight_decay"] == 0.0


@pytest.mark.parametrize("task", ["FD", "FM", "FD+FM"])
def test_view_tasks_draw_from_the_models_generator_shared_by_members(ctx, task):
    fixed = batch(ctx)
    fused = model(ctx, [(ON, 1e-4), (OFF, 1e-4)], ssl_task=task)
    alone = model(ctx, OFF, ssl_task=task)
    fused.start_epoch(1), alone.start_epoch(1)
    first = fused.loss(*fixed)
    torch.testing.assert_close(first[1], alone.loss(*fixed)[0], rtol=1e-6, atol=0)  # the same masks
    assert torch.isfinite(first).all()
    a, b = model(ctx, OFF, ssl_task=task), model(ctx, OFF, ssl_task=task)
    first = a.loss(*fixed)
    assert torch.equal(first, b.loss(*fixed))  # one seed, one draw
    if "FD" in task:
        assert not torch.equal(first, a.loss(*fixed))  # fresh masks every batch


def test_clear_projection_changes_the_forward_pass_and_strength_zero_is_the_identity(ctx):
    fixed = batch(ctx)
    with torch.no_grad():
        on, off = model(ctx, ON), model(ctx, OFF)
        zero = model(ctx, [(ON, 1e-4), ({"k": 3, "strength": 0.0}, 1e-4)])
        for m in (on, off, zero):
            m.start_epoch(1)
        assert not torch.allclose(on.loss(*fixed), off.loss(*fixed))
        both = zero.loss(*fixed)
        torch.testing.assert_close(both[1], off.loss(*fixed)[0], rtol=1e-6, atol=0)
        torch.testing.assert_close(both[0], on.loss(*fixed)[0], rtol=1e-6, atol=0)


def test_fused_members_get_their_own_loss_and_keep_members_compacts(ctx):
    settings = [(ON, 0.1), (OFF, 1e-3), ({"k": 2, "strength": 0.5}, 0.0)]
    fused, alone = model(ctx, settings), [model(ctx, p, r) for p, r in settings]
    for m in (fused, *alone):
        m.start_epoch(1)
    fixed = batch(ctx, seed=3)
    losses = fused.loss(*fixed)
    for i, m in enumerate(alone):
        torch.testing.assert_close(losses[i], m.loss(*fixed)[0], rtol=1e-6, atol=0)
    fused.keep_members([2, 0])
    with torch.no_grad():
        users, items = fused.embeddings()  # the saved forward, sliced
        expected = alone[2].embeddings()
    torch.testing.assert_close(items[0], expected[1][0], rtol=1e-6, atol=1e-7)
    losses = fused.loss(*fixed)
    torch.testing.assert_close(losses[1], alone[0].loss(*fixed)[0], rtol=1e-6, atol=0)


def mmrec_forward(P, ctx, G, users, pos, layer_num=3, temp=0.2, ssl_temp=0.2, ssl_alpha=0.1):
    """MMRec's SLMRec.calculate_loss on plain tensors ``P`` (our names, nn.Linear weights as ``x @ W + b``):
    the loss and the fused ``(all_users, all_items)`` that MMRec keeps for its evaluation."""

    def lin(name, x):
        return x @ P[f"{name}.weight"] + P[f"{name}.bias"]

    def gcn(items):
        x = torch.cat([P["user_emb.weight"], items])
        layers = [x]
        for _ in range(layer_num):
            x = G @ x
            layers.append(x)
        return torch.stack(layers, 1).mean(1)

    M = ctx.n_users
    parts = [
        gcn(P["item_emb.weight"]),
        gcn(lin("image_encoder", F.normalize(ctx.image_feat, dim=1))),
        gcn(lin("text_encoder", F.normalize(ctx.text_feat, dim=1))),
    ]
    all_users = lin("user_fuse", torch.cat([p[:M] for p in parts], 1))
    all_items = lin("item_fuse", torch.cat([p[M:] for p in parts], 1))
    u, p = F.normalize(all_users[users], dim=1), F.normalize(all_items[pos], dim=1)
    main = ce(u @ p.T / temp)
    i_rows, v_rows, t_rows = (part[M:][pos] for part in parts)
    x_i = lin("g_i_iv", i_rows)
    v_loss = ce(x_i @ lin("g_v_iv", v_rows).T / ssl_temp)
    t_loss = ce(lin("g_iva_ivat", lin("g_iv_iva", x_i)) @ lin("g_t_ivat", t_rows).T / ssl_temp)
    return main + ssl_alpha * (v_loss + t_loss), (all_users, all_items)


def test_training_epochs_are_mmrecs_loop_step_for_step(dataset, ctx):
    """What happens between steps, as MMRec's TrainDataLoader and Trainer do it (issue 18: the parity gap was
    looked for here): every train interaction once per epoch, duplicates kept, in consecutive slices of ONE
    uniform shuffle (the last slice short), so the in-batch InfoNCE sees MMRec's batch composition; negatives
    drawn but unused; one Adam with L2 ``weight_decay`` 1e-4 over every parameter (dense gradients: rows outside
    the batch's graph neighbourhood still decay); evaluation with the last batch's forward."""
    cfg = TrainConfig(
        backbone="slmrec", emb_dim=8, projection=OFF, epochs=2, batch_size=64, lr=0.01, seed=5, device="cpu"
    )
    trainer = Trainer(cfg, dataset)
    m = trainer.model
    ref = {n: p.detach()[0].clone().requires_grad_() for n, p in m.named_parameters()}
    adam = torch.optim.Adam(list(ref.values()), lr=0.01, weight_decay=1e-4)  # MMRec's _build_optimizer
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    loss_of = m.loss

    def recording_loss(users, pos, neg):
        seen.append((users.clone(), pos.clone()))
        return loss_of(users, pos, neg)

    m.loss = recording_loss
    A = dense_adjacency(ctx)
    d = (A.sum(1) + 1e-8).pow(-0.5)
    G = d[:, None] * A * d[None, :]
    train = sorted(zip(ctx.train_users.tolist(), ctx.train_items.tolist()))
    for epoch in (1, 2):
        start = len(seen)
        losses, _, n_batches = trainer._train_epoch(epoch)
        batches = seen[start:]
        assert [len(u) for u, _ in batches] == [64] * 5 + [len(train) - 5 * 64]  # consecutive slices, last short
        pairs = [(u, i) for users, pos in batches for u, i in zip(users.tolist(), pos.tolist())]
        assert sorted(pairs) == train  # every interaction exactly once
        expected = []
        for users, pos in batches:
            loss, (all_users, all_items) = mmrec_forward(ref, ctx, G, users, pos)
            adam.zero_grad()
            loss.backward()
            adam.step()
            expected.append(float(loss.detach()))
        assert losses[0] == pytest.approx(sum(expected) / n_batches, rel=1e-5)
        for name, p in m.named_parameters():
            # The key-side biases of the FAC InfoNCE shift every logit of a row alike: their exact gradient is 0,
            # so Adam (g / sqrt(v)) steps on weight decay plus float rounding, which differs between two orders
            # of summation (MMRec vs here alike): ~3e-5 after 12 steps at lr 0.01, not 1e-6.
            atol = 1e-4 if name in ("g_v_iv.bias", "g_t_ivat.bias") else 1e-6
            torch.testing.assert_close(p.detach()[0], ref[name].detach(), rtol=1e-4, atol=atol, msg=name)
        with torch.no_grad():
            users_emb, items_emb = m.embeddings()
        torch.testing.assert_close(users_emb[0], all_users.detach(), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(items_emb[0], all_items.detach(), rtol=1e-4, atol=1e-6)
