"""MMSSL against a dense re-computation of its authors' formulas on tiny data (graphs, forward, the discriminator
step, the generator loss, the modality-graph update), what trains, CLEAR, fusion and checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from fixtures.tiny_models import context_of, train_batch
from torch import nn

from clear_tune.config import TrainConfig
from clear_tune.data import make_synthetic
from clear_tune.graphs import dense_rows
from clear_tune.models import build_model
from clear_tune.train import Trainer

torch.set_num_threads(1)
OFF = {"mode": "off"}
ON = {"k": 3, "strength": 0.8}
QUIET = {"drop_rate": 0.0, "G_drop1": 0.0, "G_drop2": 0.0}  # no dropout: the only draws are U and α
LOUD = {"G_rate": 0.1, "cl_rate": 0.5, "feat_reg_decay": 0.01}  # every term visible in the total


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic(n_users=50, n_items=30, d_v=12, d_t=8, pref_dim=4, seed=6)


@pytest.fixture(scope="module")
def ctx(dataset):
    return context_of(dataset)


def model(ctx, projection=OFF, reg_weight=1e-5, **options):
    settings = projection if isinstance(projection, list) else [(projection, reg_weight)]
    cfgs = [
        TrainConfig(backbone="mmssl", emb_dim=8, projection=p, reg_weight=r, model_options=options) for p, r in settings
    ]
    return build_model(cfgs if len(cfgs) > 1 else cfgs[0], ctx)


def batch(ctx, size=20, seed=0):
    return train_batch(ctx, size, seed)


# ---- the authors' formulas, densely (Models.MMSSL.forward, main.Trainer's batch body, Discriminator)
def interactions(ctx):
    R = torch.zeros(ctx.n_users, ctx.n_items)
    R[ctx.train_users, ctx.train_items] = 1.0
    return R


def dense_graphs(R):
    """csr_norm(·, mean_flag=True): rows scaled by (row sum + 1e-8)^-1/2, columns untouched."""
    return R / (R.sum(1, keepdim=True) + 1e-8).sqrt(), R.T / (R.T.sum(1, keepdim=True) + 1e-8).sqrt()


def literal_attention(x_image, x_text, w_cat, heads, generator):
    """multi_head_self_attention as written, with random w_q, w_k (they do not matter: see the module docstring)."""
    d = x_image.shape[1]
    w_q, w_k = (torch.randn(d, d, generator=generator) for _ in range(2))
    q = k = v = torch.stack([x_image, x_text])
    beh, n, d_h = 2, q.shape[1], d // heads
    Q = (q @ w_q).reshape(beh, n, heads, d_h).permute(2, 0, 1, 3)
    K = k @ w_k
    K = Q.reshape(beh, n, heads, d_h).permute(2, 0, 1, 3)  # the code builds K from Q
    att = ((Q.unsqueeze(2) * K.unsqueeze(1)) / math.sqrt(d_h)).sum(-1).unsqueeze(-1).softmax(dim=2)
    Z = (att * v.unsqueeze(1)).sum(2)
    return (torch.cat(list(Z), -1) @ w_cat).mean(0)


def dense_forward(m, ctx, member=0, modal=None):
    """The authors' forward for one member (no dropout); ``modal``: dense (ui, iu) per modality, default ui / iu."""
    R = interactions(ctx)
    ui, iu = dense_graphs(R)
    modal = modal or [(ui, iu), (ui, iu)]
    E_u, E_i = m.user_emb.weight[member], m.item_emb.weight[member]
    V = ctx.image_feat @ m.image_encoder.weight[member] + m.image_encoder.bias[member]
    T = ctx.text_feat @ m.text_encoder.weight[member] + m.text_encoder.bias[member]
    image_u, text_u = ui @ V, ui @ T
    image_i, text_i = iu @ image_u, iu @ text_u
    x_u = [g_ui @ E_i for g_ui, _ in modal]
    x_i = [g_iu @ E_u for _, g_iu in modal]
    g = torch.Generator().manual_seed(member)
    z_u = literal_attention(*x_u, m.w_cat[member], m.head_num, g)
    z_i = literal_attention(*x_i, m.w_cat[member], m.head_num, g)
    u, i = E_u + 0.36 * F.normalize(z_u, dim=1), E_i + 0.36 * F.normalize(z_i, dim=1)
    us, is_ = [u], [i]
    u = ui @ i
    i = iu @ u
    us.append(u), is_.append(i)
    u = torch.softmax(ui @ i, dim=-1)
    i = torch.softmax(iu @ u, dim=-1)
    us.append(u), is_.append(i)
    u, i = torch.stack(us).mean(0), torch.stack(is_).mean(0)
    u = u + 0.55 * F.normalize(image_u, dim=1) + 0.55 * F.normalize(text_u, dim=1)
    i = i + 0.55 * F.normalize(image_i, dim=1) + 0.55 * F.normalize(text_i, dim=1)
    return {
        "u": u,
        "i": i,
        "image_u": image_u,
        "image_i": image_i,
        "text_u": text_u,
        "text_i": text_i,
        "x_image": x_u[0],
        "x_text": x_u[1],
        "R": R,
    }


def reference_discriminator(m, member):
    n = m.n_items
    net = nn.Sequential(
        nn.Linear(n, int(n / 4)),
        nn.LeakyReLU(True),
        nn.BatchNorm1d(int(n / 4)),
        nn.Dropout(0.0),
        nn.Linear(int(n / 4), int(n / 8)),
        nn.LeakyReLU(True),
        nn.BatchNorm1d(int(n / 8)),
        nn.Dropout(0.0),
        nn.Linear(int(n / 8), 1),
        nn.Sigmoid(),
    )
    d = m.disc
    with torch.no_grad():
        for layer, (w, b) in zip((net[0], net[4], net[8]), ((d.w1, d.b1), (d.w2, d.b2), (d.w3, d.b3))):
            layer.weight.copy_(w[member].T)
            layer.bias.copy_(b[member])
        for bn, (gamma, beta) in zip((net[2], net[6]), ((d.gamma1, d.beta1), (d.gamma2, d.beta2))):
            bn.weight.copy_(gamma[member])
            bn.bias.copy_(beta[member])
    return net


def u_sim(users, U, Ei, R):
    return F.normalize((U[users] @ Ei.T) * (1 - R[users]), dim=1)


def dense_contrastive(z1, z2, tau=0.5):
    def sim(a, b):
        return F.normalize(a) @ F.normalize(b).T

    refl, between = torch.exp(sim(z1, z1) / tau), torch.exp(sim(z1, z2) / tau)
    return (-torch.log(between.diag() / (refl.sum(1) + between.sum(1) - refl.diag()) + 1e-8)).mean()


def dense_batch(m, ctx, users, pos, neg, member, state, reg_weight, *, G_rate=1e-4, cl_rate=0.03, feat=1e-5):
    """One batch of the authors' loop: the D step (Adam, betas (0.5, 0.9)), then the generator loss with the new D.
    ``state``: the model generator's state before the batch (U, then α). Returns (loss, the stepped D)."""
    f = dense_forward(m, ctx, member)
    f = {k: v.detach() for k, v in f.items()}
    R, B = f["R"], users.numel()
    net = reference_discriminator(m, member)
    D = lambda x: 100 * net(x).view(-1)  # noqa: E731
    g = torch.Generator()
    g.set_state(state)
    inputf = torch.cat([u_sim(users, f["image_u"], f["image_i"], R), u_sim(users, f["text_u"], f["text_i"], R)])
    lossf = D(inputf).mean()
    noise = torch.rand(B, ctx.n_items, generator=g)
    real = F.softmax(R[users] - 1e-5 * torch.log(-torch.log(noise + 1e-8) + 1e-8) / 0.005, dim=1)
    real = F.normalize(real + u_sim(users, f["u"], f["i"], R) * 100, dim=1)
    inputr = torch.cat([real, real])
    lossr = -D(inputr).mean()
    alpha = torch.rand(2 * B, 1, generator=g).expand_as(inputr)
    mixed = (alpha * inputr + (1 - alpha) * inputf).requires_grad_()
    out = D(mixed)
    grads = torch.autograd.grad(out, mixed, grad_outputs=torch.ones_like(out), create_graph=True)[0]
    gp = ((grads.norm(2, dim=1) - 1) ** 2).mean() * 0.3
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-4, betas=(0.5, 0.9))
    optimizer.zero_grad()
    (lossr + lossf + gp).backward()
    optimizer.step()
    u, p, n = f["u"][users], f["i"][pos], f["i"][neg]
    mf = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
    emb = reg_weight * (0.5 * (u**2).sum() + 0.5 * (p**2).sum() + 0.5 * (n**2).sum()) / B
    feat_loss = (
        feat
        * (
            0.5 * (f["image_i"] ** 2).sum()
            + 0.5 * (f["text_i"] ** 2).sum()
            + 0.5 * (f["image_u"] ** 2).sum()
            + 0.5 * (f["text_u"] ** 2).sum()
        )
        / ctx.n_items
    )
    cl = dense_contrastive(f["x_image"][users], u) + dense_contrastive(f["x_text"][users], u)
    with torch.no_grad():
        G = -D(
            torch.cat([u_sim(users, f["image_u"], f["image_i"], R), u_sim(users, f["text_u"], f["text_i"], R)])
        ).mean()
    return (mf + emb + feat_loss + cl_rate * cl + G_rate * G).detach(), net


# ---- tests
def test_graphs_are_the_authors_row_normalised_graphs(ctx):
    m = model(ctx)
    R = interactions(ctx)
    ui, iu = dense_graphs(R)
    torch.testing.assert_close(m.ui.to_dense(), ui)
    torch.testing.assert_close(m.iu.to_dense(), iu)  # not ui's transpose: each side its own row sums
    torch.testing.assert_close(m.ui_t.to_dense(), ui.T)
    users = torch.tensor([3, 0, 3])
    assert torch.equal(dense_rows(m.interactions, users), R[users])


def test_forward_matches_the_authors_forward_for_each_member(ctx):
    m = model(ctx, [(OFF, 1e-5), (OFF, 1e-3)])
    with torch.no_grad():
        m.user_emb.weight[1].mul_(1.5)  # members that differ
        m.w_cat.add_(0.05 * torch.randn_like(m.w_cat))
    m.eval()
    with torch.no_grad():
        users, items = m.embeddings()
    for member in (0, 1):
        expected = dense_forward(m, ctx, member)
        torch.testing.assert_close(users[member], expected["u"].detach())
        torch.testing.assert_close(items[member], expected["i"].detach())


def test_one_batch_is_the_authors_d_step_then_generator_loss_fused_and_alone(ctx):
    settings = [(OFF, 1e-2), (OFF, 1e-5)]
    fused = model(ctx, settings, **QUIET, **LOUD)
    alone = model(ctx, OFF, 1e-5, **QUIET, **LOUD)
    users, pos, neg = batch(ctx)
    state = fused.generator.get_state()
    expected = [
        dense_batch(fused, ctx, users, pos, neg, m, state, r, G_rate=0.1, cl_rate=0.5, feat=0.01)
        for m, (_, r) in enumerate(settings)
    ]
    for m_ in (fused, alone):
        m_.start_epoch(1)
    losses = fused.loss(users, pos, neg)
    for member, (loss, net) in enumerate(expected):
        torch.testing.assert_close(losses[member], loss)
        torch.testing.assert_close(fused.disc.w1[member], net[0].weight.T.detach())
        torch.testing.assert_close(fused.disc.gamma2[member], net[6].weight.detach())
        torch.testing.assert_close(fused.disc.b3[member], net[8].bias.detach())
    torch.testing.assert_close(losses[1], alone.loss(users, pos, neg)[0], rtol=1e-6, atol=0)
    for name in fused.disc.NAMES:  # bit for bit: the discriminator runs one member at a time
        assert torch.equal(getattr(fused.disc, name)[1], getattr(alone.disc, name)[0]), name


def test_modality_graphs_follow_the_authors_update_and_default_to_empty(ctx):
    m = model(ctx, **QUIET, m_topk_rate=0.1)  # k = int(30 · 0.1) = 3, T = 1
    assert m.top_k == 3 and m.modality_graphs() is None
    m.start_epoch(1)
    first, second, third = batch(ctx, seed=1), batch(ctx, seed=2), batch(ctx, seed=3)
    f = dense_forward(m, ctx)
    R = f["R"]
    users = first[0]
    expected = []
    for U, Ei in ((f["image_u"], f["image_i"]), (f["text_u"], f["text_i"])):
        top = u_sim(users, U, Ei, R).topk(3, dim=-1).indices.reshape(-1)  # row-major: 3 items per user
        C = torch.zeros(ctx.n_users, ctx.n_items)
        C.index_put_((users.repeat(3), top), torch.ones(top.numel()), accumulate=True)  # users tiled, as the code
        expected.append(dense_graphs(C))
    m.loss(*first)  # batch 0: collects
    assert m.modality_graphs() is None
    m.loss(*second)  # batch 1: rebuilds from batch 0's pairs (used from batch 2 on)
    for (ui, iu), (g_ui, _, g_iu, _) in zip(expected, m.modality_graphs()):
        torch.testing.assert_close(g_ui.to_dense(), ui)
        torch.testing.assert_close(g_iu.to_dense(), iu)
    modal = [(ui, iu) for ui, iu in expected]
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m.embeddings()[0][0], dense_forward(m, ctx, modal=modal)["u"].detach())
    m.train()
    m.loss(*third)  # batch 2: rebuilt from nothing (batch 1 collected nothing)
    assert all(g[0].values().numel() == 0 for g in m.modality_graphs())
    default = model(ctx, **QUIET)  # k = int(30 · 1e-4) = 0: empty after the second batch, whatever the data
    default.start_epoch(1)
    for b in (first, second):
        default.loss(*b)
    _, _, x_image, x_text = default.id_part()
    assert default.top_k == 0 and not x_image.any() and not x_text.any()
    frozen = model(ctx, **QUIET, modal_graphs="frozen")
    frozen.start_epoch(1)
    for b in (first, second, third):
        frozen.loss(*b)
    assert frozen.modality_graphs() is None


def test_what_trains_and_how(ctx, dataset):
    m = model(ctx)
    names = {name for name, _ in m.named_parameters()}
    assert names == {
        "user_emb.weight",
        "item_emb.weight",
        "image_encoder.weight",
        "image_encoder.bias",
        "text_encoder.weight",
        "text_encoder.bias",
        "w_cat",
    }  # features frozen, D is not the trainer's
    assert all(name.startswith(("disc.", "reg_weight")) for name, _ in m.named_buffers())
    fixed = batch(ctx)
    m.start_epoch(1)
    d_before = {k: v.clone() for k, v in m.disc.state_dict().items()}
    with torch.no_grad():  # a pure evaluation: no D step, no graph step
        m.loss(*fixed)
    assert all(torch.equal(v, m.disc.state_dict()[k]) for k, v in d_before.items()) and m._batch == 0
    m.loss(*fixed).sum().backward()
    assert m._batch == 1 and int(m.disc.adam_steps[0]) == 1
    assert not torch.equal(d_before["w1"], m.disc.w1)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    cfg = TrainConfig(backbone="mmssl", emb_dim=8, projection=OFF, epochs=1, batch_size=128, device="cpu")
    group = Trainer(cfg, dataset).optimizer.param_groups[0]
    assert group["decoupled_weight_decay"] and group["weight_decay"] == 0.01  # the authors' AdamW
    other = Trainer(cfg.model_copy(update={"backbone": "lightgcn"}), dataset).optimizer.param_groups[0]
    assert not other["decoupled_weight_decay"]


def test_clear_projection_changes_the_forward_pass_and_strength_zero_is_the_identity(ctx):
    fixed = batch(ctx)
    with torch.no_grad():
        on, off = model(ctx, ON, **QUIET), model(ctx, OFF, **QUIET)
        zero = model(ctx, [(ON, 1e-5), ({"k": 3, "strength": 0.0}, 1e-5)], **QUIET)
        assert torch.equal(on.loss(*fixed), off.loss(*fixed))  # identity projectors before the refresh
        for m in (on, off, zero):
            m.start_epoch(1)
        assert not torch.allclose(on.loss(*fixed), off.loss(*fixed))
        both = zero.loss(*fixed)
        torch.testing.assert_close(both[1], off.loss(*fixed)[0], rtol=1e-6, atol=0)
        torch.testing.assert_close(both[0], on.loss(*fixed)[0], rtol=1e-6, atol=0)


def test_fused_members_step_their_discriminators_as_alone_with_shared_random_draws(ctx):
    settings = [(ON, 1e-2), (OFF, 1e-5), ({"k": 2, "strength": 0.5}, 0.0)]
    options = {"m_topk_rate": 0.1, "T": 2}  # default dropouts; graphs that differ per member
    fused, alone = model(ctx, settings, **options), [model(ctx, p, r, **options) for p, r in settings]
    for step, seed in enumerate((1, 2, 3, 4)):
        fixed = batch(ctx, seed=seed)
        if step == 0:
            for m in (fused, *alone):
                m.start_epoch(1)
        losses = fused.loss(*fixed)
        for i, m in enumerate(alone):
            torch.testing.assert_close(losses[i], m.loss(*fixed)[0], rtol=1e-6, atol=0)
    for i, m in enumerate(alone):
        for name in fused.disc.NAMES:
            assert torch.equal(getattr(fused.disc, name)[i], getattr(m.disc, name)[0]), name
        graph = fused.modality_graphs()[0][0].to_dense()
        n_u, n_i = ctx.n_users, ctx.n_items
        torch.testing.assert_close(
            graph[i * n_u : (i + 1) * n_u, i * n_i : (i + 1) * n_i], m.modality_graphs()[0][0].to_dense()
        )
    fused.keep_members([2, 0])  # D state, graphs and pending pairs follow the members
    fixed = batch(ctx, seed=9)
    state = fused.generator.get_state()
    losses = fused.loss(*fixed)
    for i, m in ((0, alone[2]), (1, alone[0])):
        m.generator.set_state(state)
        torch.testing.assert_close(losses[i], m.loss(*fixed)[0], rtol=1e-6, atol=0)
        assert torch.equal(fused.disc.w2[i], m.disc.w2[0]) and torch.equal(fused.disc.b1[i], m.disc.b1[0])


def test_a_restored_run_finishes_exactly_like_an_uninterrupted_one(dataset, tmp_path):
    cfg = TrainConfig(
        backbone="mmssl",
        emb_dim=16,
        projection={"k": 2, "strength": 0.9},
        epochs=3,
        batch_size=64,
        lr=0.01,
        device="cpu",
        topk=[5, 10],
        select_metric="recall@10",
        model_options={"m_topk_rate": 0.1, "T": 3},
    )  # pairs still pending at an epoch's end
    straight = Trainer(cfg, dataset)
    straight.fit()
    first = Trainer(cfg, dataset)
    first.config = first.config.model_copy(update={"epochs": 2})
    first.fit()
    assert first.model._pending[1].numel() > 0 and first.model._edges is not None
    path = tmp_path / "mmssl.ckpt"
    first.save_checkpoint(path)
    torch.manual_seed(123)
    second = Trainer(cfg, dataset)
    second.load_checkpoint(path)
    second.fit()
    timing = {"sec_per_epoch", "sec_per_eval", "peak_mem_mb"}
    assert {k: v for k, v in second.result().items() if k not in timing} == {
        k: v for k, v in straight.result().items() if k not in timing
    }
    for name, value in straight.model.disc.state_dict().items():
        assert torch.equal(value, second.model.disc.state_dict()[name]), name
    assert all(torch.equal(a, b) for a, b in zip(straight.model._pending[1:], second.model._pending[1:]))
