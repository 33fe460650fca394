"""LGMRec against a dense re-computation of MMRec's formulas on tiny data: forward, loss, randomness, CLEAR, options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fixtures.tiny_models import context_of, train_batch

from clear_tune.config import TrainConfig
from clear_tune.data import make_synthetic
from clear_tune.errors import SpecError
from clear_tune.graphs import interaction_matrix, inverse_degrees
from clear_tune.models import build_model
from clear_tune.models.lgmrec import LGMRec
from clear_tune.train import model_generators

torch.set_num_threads(1)
OFF = {"mode": "off"}
ON = {"k": 3, "strength": 0.8}


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic(n_users=50, n_items=30, d_v=12, d_t=8, pref_dim=4, seed=4)


@pytest.fixture(scope="module")
def ctx(dataset):
    return context_of(dataset)


def model(ctx, projection=OFF, reg_weight=1e-6, **options):
    settings = projection if isinstance(projection, list) else [(projection, reg_weight)]
    cfgs = [
        TrainConfig(backbone="lgmrec", emb_dim=16, projection=p, reg_weight=r, model_options=options)
        for p, r in settings
    ]
    m = build_model(cfgs if len(cfgs) > 1 else cfgs[0], ctx)
    m.start_epoch(1)
    return m


def draws(m, seed, *, train=True, generator=None):
    """MMRec's draws for one forward: Gumbel noise iv, uv, it, ut, then (training) dropout multipliers, same order."""
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    M, N, H = m.n_users, m.n_items, m.hyper_num
    gumbel = [-torch.empty(n, H).exponential_(generator=g).log() for n in (N, M, N, M)]
    keep = 1.0 - m.drop_p
    masks = [torch.empty(n, H).bernoulli_(keep, generator=g) / keep for n in (N, M, N, M)] if train else [1.0] * 4
    return gumbel, masks


def dense_forward(m, ctx, member, gumbel, masks):
    """MMRec's LGMRec.forward with dense matrices: (users, items, [uv, iv, ut, it]) of one member, CLEAR off."""
    M, N, tau = ctx.n_users, ctx.n_items, m.tau
    R_ui = torch.zeros(M, N)
    R_ui[ctx.train_users, ctx.train_items] = 1.0
    A = torch.zeros(M + N, M + N)
    A[:M, M:], A[M:, :M] = R_ui, R_ui.T
    degree = A.sum(1)
    G = torch.diag((degree + 1e-7).pow(-0.5)) @ A @ torch.diag((degree + 1e-7).pow(-0.5))
    ego = torch.cat([m.user_emb.weight[member], m.item_emb.weight[member]])
    if m.cf_model == "lightgcn":
        layers = [ego]
        for _ in range(m.n_ui_layers):
            layers.append(G @ layers[-1])
        cge = torch.stack(layers, 1).mean(1)
    else:
        cge = ego

    def mge(raw, W):
        items = raw @ W[member]
        x = torch.cat([(R_ui @ items) * (1.0 / (degree[:M] + 1e-7))[:, None], items])
        for _ in range(m.n_mm_layers):
            x = G @ x
        return x

    def hgnn(i_hyper, u_hyper):
        i_ret = cge[M:]
        for _ in range(m.n_hyper_layer):
            lat = i_hyper.T @ i_ret
            i_ret, u_ret = i_hyper @ lat, u_hyper @ lat
        return u_ret, i_ret

    iv, it = ctx.image_feat @ m.image_hyper.weight[member], ctx.text_feat @ m.text_hyper.weight[member]
    hyper = [F.softmax((x + g) / tau, dim=1) for x, g in zip((iv, R_ui @ iv, it, R_ui @ it), gumbel)]
    hyper = [h * mask for h, mask in zip(hyper, masks)]
    uv, iv_e = hgnn(hyper[0], hyper[1])
    ut, it_e = hgnn(hyper[2], hyper[3])
    local = (
        cge
        + F.normalize(mge(ctx.image_feat, m.image_encoder.weight))
        + F.normalize(mge(ctx.text_feat, m.text_encoder.weight))
    )
    final = local + m.alpha * F.normalize(torch.cat([uv, iv_e]) + torch.cat([ut, it_e]))
    return final[:M], final[M:], [uv, iv_e, ut, it_e]


def dense_loss(m, ctx, member, batch, gumbel, masks, reg_weight):
    users, pos, neg = batch
    u_all, i_all, (uv, iv, ut, it) = dense_forward(m, ctx, member, gumbel, masks)
    u, p, n = u_all[users], i_all[pos], i_all[neg]
    bpr = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()

    def ssl(a, b, every):
        a, b, every = F.normalize(a), F.normalize(b), F.normalize(every)
        return -torch.log(torch.exp((a * b).sum(1) / m.tau) / torch.exp(a @ every.T / m.tau).sum(1)).sum()

    hcl = ssl(uv[users], ut[users], ut) + ssl(iv[pos], it[pos], it)
    reg = (u.norm() + p.norm() + n.norm()) / users.numel()
    return bpr + m.cl_weight * hcl + reg_weight * reg


def test_interaction_matrix_and_inverse_degrees_are_mmrecs_adj_and_num_inters(ctx):
    M, N = ctx.n_users, ctx.n_items
    dense = torch.zeros(M, N)
    dense[ctx.train_users, ctx.train_items] = 1.0
    torch.testing.assert_close(
        interaction_matrix(ctx.train_users, ctx.train_items, n_users=M, n_items=N).to_dense(), dense
    )
    lonely = torch.tensor([0, 0, 2])  # user 1 has no edge: 1 / 1e-7, times an empty sum, is 0 in R @ X
    torch.testing.assert_close(inverse_degrees(lonely, 3), torch.tensor([[1 / (2 + 1e-7)], [1e7], [1 / (1 + 1e-7)]]))


def test_draws_are_torchs_gumbel_softmax_and_dropout():
    logits = torch.randn(7, 4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        expected = F.gumbel_softmax(logits, tau=0.2, dim=1, hard=False)
        dropped = torch.nn.Dropout(p=0.5).train()(expected)
    g = torch.Generator().manual_seed(5)
    noise = -torch.empty(7, 4).exponential_(generator=g).log()
    soft = F.softmax((logits + noise) / 0.2, dim=1)
    torch.testing.assert_close(soft, expected, rtol=0, atol=0)
    torch.testing.assert_close(soft * (torch.empty(7, 4).bernoulli_(0.5, generator=g) / 0.5), dropped, rtol=0, atol=0)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"n_hyper_layer": 2, "keep_rate": 0.4, "n_ui_layers": 3, "n_mm_layers": 1, "hyper_num": 6, "cl_weight": 0.5},
        {"cf_model": "mf", "cl_weight": 0.3},
    ],
)
def test_loss_and_forward_are_mmrecs_with_its_random_draws(ctx, options):
    batch = train_batch(ctx, 24, seed=1)
    for members, k in (([(OFF, 0.1)], 0), ([(ON, 1e-6), (OFF, 0.1), (OFF, 0.0)], 1)):
        m = model(ctx, members, **options)
        gumbel, masks = draws(m, 11)
        m.generator.manual_seed(11)
        final, x_u, x_i = m.forward_all(train=True)
        users, items, (uv, iv, ut, it) = dense_forward(m, ctx, k, gumbel, masks)
        torch.testing.assert_close(final[k, : ctx.n_users], users, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(final[k, ctx.n_users :], items, rtol=1e-5, atol=1e-5)
        for ours, theirs in ((x_u[0], uv), (x_i[0], iv), (x_u[1], ut), (x_i[1], it)):
            torch.testing.assert_close(ours[k], theirs, rtol=1e-5, atol=1e-5)
        m.generator.manual_seed(11)
        loss = m.loss(*batch)
        torch.testing.assert_close(loss[k], dense_loss(m, ctx, k, batch, gumbel, masks, 0.1), rtol=1e-5, atol=1e-6)


def test_evaluation_draws_gumbel_noise_without_dropout_and_never_moves_training(ctx):
    m = model(ctx)
    state = m.generator.get_state()
    with torch.no_grad():
        users, items = m.embeddings()
        again = m.embeddings()
    assert torch.equal(m.generator.get_state(), state)  # evaluation leaves the training stream alone
    assert torch.equal(users, again[0])  # one evaluation's draw is a function of (seed, epoch)
    gumbel, masks = draws(m, 0, train=False, generator=m.eval_generator())
    expected = dense_forward(m, ctx, 0, gumbel, masks)
    torch.testing.assert_close(users[0], expected[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(items[0], expected[1], rtol=1e-5, atol=1e-5)
    m.start_epoch(2)
    with torch.no_grad():
        assert not torch.equal(m.embeddings()[0], users)  # a fresh draw per epoch
    plain = model(ctx, gumbel="train")
    with torch.no_grad():
        users, _ = plain.embeddings()
    zeros = [torch.zeros(n, plain.hyper_num) for n in (ctx.n_items, ctx.n_users) * 2]
    torch.testing.assert_close(users[0], dense_forward(plain, ctx, 0, zeros, [1.0] * 4)[0], rtol=1e-5, atol=1e-5)


def test_what_trains_and_how_it_starts(ctx, dataset):
    m = model(ctx, [(OFF, 1e-6), (ON, 1e-6)])
    shapes = {name: tuple(p.shape) for name, p in m.named_parameters()}
    assert shapes == {
        "user_emb.weight": (2, 50, 16),
        "item_emb.weight": (2, 30, 16),
        "image_encoder.weight": (2, 12, 16),
        "text_encoder.weight": (2, 8, 16),
        "image_hyper.weight": (2, 12, 4),
        "text_hyper.weight": (2, 8, 4),
    }  # features frozen, no bias
    for p in m.parameters():
        assert torch.equal(p[0], p[1])  # every member starts where it starts alone
    m.loss(*train_batch(ctx, 16)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    # xavier_uniform_ on MMRec's (d_in, d_out) shapes: bound sqrt(6 / (d_in + d_out))
    assert m.image_hyper.weight.abs().max() <= (6 / (12 + 4)) ** 0.5
    assert "generator" in model_generators(m)  # the trainer checkpoints the training stream


def test_fused_members_compute_what_they_compute_alone(ctx):
    settings = [(ON, 0.1), (OFF, 1e-3), ({"k": 2, "strength": 0.5}, 0.0)]
    fused, alone = model(ctx, settings), [model(ctx, p, r) for p, r in settings]
    batch = train_batch(ctx, 20, seed=3)
    for _ in range(2):  # fresh masks each step, the same for every member
        losses = fused.loss(*batch)
        for i, m in enumerate(alone):
            torch.testing.assert_close(losses[i], m.loss(*batch)[0], rtol=1e-6, atol=0)
    with torch.no_grad():
        _, items = fused.embeddings()
        for i, m in enumerate(alone):
            torch.testing.assert_close(items[i], m.embeddings()[1][0], rtol=1e-6, atol=1e-7)
    fused.keep_members([2, 0])
    torch.testing.assert_close(fused.loss(*batch)[1], alone[0].loss(*batch)[0], rtol=1e-6, atol=0)


def test_clear_changes_the_forward_pass_and_strength_zero_is_the_identity(ctx):
    batch = train_batch(ctx, 20)
    with torch.no_grad():
        on, off = model(ctx, ON), model(ctx, OFF)
        zero = model(ctx, [(ON, 1e-6), ({"k": 3, "strength": 0.0}, 1e-6)])
        on_loss, off_loss, both = on.loss(*batch), off.loss(*batch), zero.loss(*batch)  # one draw each
        assert not torch.allclose(on_loss, off_loss)
        torch.testing.assert_close(both[1], off_loss[0], rtol=1e-6, atol=0)
        torch.testing.assert_close(both[0], on_loss[0], rtol=1e-6, atol=0)
        # the projection acts on the encoded features only: the hyperedge logits read the raw ones
        V, _ = on.modal_features()
        raw_v, _ = on.encode()
        assert not torch.allclose(V, raw_v)


def test_options_grid_and_defaults():
    options = {name: option.default for name, option in LGMRec.model_options().items()}
    assert options == {
        "cf_model": "lightgcn",
        "n_ui_layers": 2,
        "n_mm_layers": 2,
        "n_hyper_layer": 1,
        "hyper_num": 4,
        "keep_rate": 0.5,
        "alpha": 0.3,
        "cl_weight": 1e-4,
        "tau": 0.2,
        "gumbel": "always",
    }
    assert LGMRec.default_reg_weight == 1e-6 and LGMRec.lr_decay == (1.0, 50)
    assert LGMRec.mmrec_grid == {
        "n_ui_layers": [2],
        "n_mm_layers": [2],
        "n_hyper_layer": [1],
        "hyper_num": [4],
        "keep_rate": [0.5],
        "alpha": [0.3],
        "cl_weight": [1e-4],
        "reg_weight": [1e-6],
    }
    assert all(name in options or name == "reg_weight" for name in LGMRec.mmrec_grid)


@pytest.mark.parametrize(
    "bad",
    [
        {"cf_model": "gcn"},
        {"n_hyper_layer": 0},
        {"keep_rate": 0.0},
        {"tau": 0.0},
        {"hyper_num": 1.5},
        {"gumbel": "sometimes"},
    ],
)
def test_bad_options_are_one_line(ctx, bad):
    with pytest.raises(SpecError, match="lgmrec"):
        model(ctx, **bad)


def test_without_noise_a_loss_is_a_function_of_weights_and_batch(ctx):
    batch = train_batch(ctx, 16)
    m = model(ctx, keep_rate=1.0, gumbel="never")
    first = m.loss(*batch)
    assert torch.equal(first, m.loss(*batch))
    zeros = [torch.zeros(n, m.hyper_num) for n in (ctx.n_items, ctx.n_users) * 2]
    torch.testing.assert_close(first[0], dense_loss(m, ctx, 0, batch, zeros, [1.0] * 4, 1e-6), rtol=1e-5, atol=1e-6)


def test_keep_rate_one_draws_no_masks(ctx):
    batch = train_batch(ctx, 16)
    m = model(ctx, keep_rate=1.0)
    m.generator.manual_seed(3)
    loss = m.loss(*batch)
    gumbel, _ = draws(m, 3, train=False)
    expected = dense_loss(m, ctx, 0, batch, gumbel, [1.0] * 4, 1e-6)
    torch.testing.assert_close(loss[0], expected, rtol=1e-5, atol=1e-6)
