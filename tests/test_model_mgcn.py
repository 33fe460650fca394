"""MGCN against a dense re-computation of MMRec's formulas on tiny data (graphs, forward, loss, what trains, CLEAR)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fixtures.tiny_models import context_of, train_batch

from clear_tune.config import TrainConfig
from clear_tune.data import make_synthetic
from clear_tune.errors import SpecError
from clear_tune.models import MGCN, build_model

torch.set_num_threads(1)
OFF = {"mode": "off"}
ON = {"k": 3, "strength": 0.8}


@pytest.fixture(scope="module")
def ctx():
    return context_of(make_synthetic(n_users=50, n_items=30, d_v=12, d_t=8, pref_dim=4, seed=2))


def model(ctx, projection=OFF, reg_weight=0.1, **options):
    options = {"knn_k": 4, "cl_loss": 0.3, **options}
    cfgs = [
        TrainConfig(backbone="mgcn", emb_dim=8, projection=p, reg_weight=r, model_options=options)
        for p, r in (projection if isinstance(projection, list) else [(projection, reg_weight)])
    ]
    return build_model(cfgs if len(cfgs) > 1 else cfgs[0], ctx)


# ---- MMRec's build_sim + build_knn_normalized_graph(norm_type='sym') and get_adj_mat, densely
def knn_laplacian(x, k):
    unit = x / x.norm(dim=-1, keepdim=True)
    sim = unit @ unit.T
    values, indices = sim.topk(k, dim=-1)
    S = torch.zeros_like(sim).scatter_(-1, indices, values)
    d = S.sum(-1).pow(-0.5)
    d[torch.isinf(d)] = 0.0
    return d[:, None] * S * d[None, :]


def norm_adj(ctx):
    M, N = ctx.n_users, ctx.n_items
    A = torch.zeros(M + N, M + N)
    A[ctx.train_users, ctx.train_items + M] = 1.0
    A[ctx.train_items + M, ctx.train_users] = 1.0
    d = A.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0.0
    return d[:, None] * A * d[None, :]


def dense_forward(m, ctx, member=0):
    """MMRec's MGCN.forward(norm_adj, train=True) for one member, dense: (users, items, side, content)."""

    def lin(x, layer):
        out = x @ layer.weight[member]
        return out if layer.bias is None else out + layer.bias[member]

    image_raw = m.image_raw[member] if m.train_raw_features else ctx.image_feat
    text_raw = m.text_raw[member] if m.train_raw_features else ctx.text_feat
    V, T = lin(image_raw, m.image_encoder), lin(text_raw, m.text_encoder)
    if m.projection is not None:  # CLEAR's projection (tested elsewhere) on this member's encoder outputs

        def stack(x):
            return x.unsqueeze(0).expand(m.n_members, -1, -1)

        V, T = (x[member] for x in m.project(stack(V), stack(T)))
    item, user = m.item_emb.weight[member], m.user_emb.weight[member]
    image_items = item * torch.sigmoid(lin(V, m.gate_v))
    text_items = item * torch.sigmoid(lin(T, m.gate_t))
    A, M = norm_adj(ctx), ctx.n_users
    layers = [torch.cat([user, item])]
    for _ in range(m.n_ui_layers):
        layers.append(A @ layers[-1])
    content = torch.stack(layers, 1).mean(1)
    S_img, S_txt = knn_laplacian(ctx.image_feat, 4), knn_laplacian(ctx.text_feat, 4)
    for _ in range(m.n_layers):
        image_items, text_items = S_img @ image_items, S_txt @ text_items
    image = torch.cat([A[:M, M:] @ image_items, image_items])
    text = torch.cat([A[:M, M:] @ text_items, text_items])

    def query(x):
        return lin(torch.tanh(lin(x, m.query_hidden)), m.query_out)

    weight = torch.softmax(torch.cat([query(image), query(text)], -1), -1)
    common = weight[:, 0].unsqueeze(1) * image + weight[:, 1].unsqueeze(1) * text
    sep_image = torch.sigmoid(lin(content, m.gate_image_prefer)) * (image - common)
    sep_text = torch.sigmoid(lin(content, m.gate_text_prefer)) * (text - common)
    side = (sep_image + sep_text + common) / 3
    final = content + side
    return final[:M], final[M:], side, content


def info_nce(view1, view2, temperature=0.2):
    view1, view2 = F.normalize(view1, dim=1), F.normalize(view2, dim=1)
    pos = torch.exp((view1 * view2).sum(-1) / temperature)
    total = torch.exp(view1 @ view2.T / temperature).sum(1)
    return torch.mean(-torch.log(pos / total))


def dense_loss(m, ctx, users, pos, neg, reg_weight, batch_size, member=0):
    """MMRec's MGCN.calculate_loss with ``train_batch_size = batch_size``."""
    users_all, items_all, side, content = dense_forward(m, ctx, member)
    u, p, n = users_all[users], items_all[pos], items_all[neg]
    mf = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
    reg = (0.5 * (u**2).sum() + 0.5 * (p**2).sum() + 0.5 * (n**2).sum()) / batch_size
    M = ctx.n_users
    cl = info_nce(side[M:][pos], content[M:][pos]) + info_nce(side[:M][users], content[:M][users])
    return mf + reg_weight * reg + m.cl_loss * cl


def test_graphs_are_mmrecs(ctx):
    m = model(ctx)
    A = norm_adj(ctx)
    torch.testing.assert_close(m.ui_adjacency.to_dense(), A)
    torch.testing.assert_close(m.ui_block.to_dense(), A[: ctx.n_users, ctx.n_users :])
    torch.testing.assert_close(m.ui_block_t.to_dense(), A[: ctx.n_users, ctx.n_users :].T)
    for (graph, graph_t), raw in zip((m.image_graph, m.text_graph), (ctx.image_feat, ctx.text_feat)):
        torch.testing.assert_close(graph.to_dense(), knn_laplacian(raw, 4))
        torch.testing.assert_close(graph_t.to_dense(), knn_laplacian(raw, 4).T)


def test_loss_and_embeddings_match_mmrecs_dense_forward(ctx):
    m = model(ctx, reg_weight=0.3, n_layers=2, n_ui_layers=3)
    with torch.no_grad():  # a trained-looking raw-feature copy
        m.image_raw.add_(0.1 * torch.randn_like(m.image_raw))
    m.start_epoch(1)
    first = train_batch(ctx, 24, seed=1)
    torch.testing.assert_close(m.loss(*first)[0], dense_loss(m, ctx, *first, 0.3, 24))
    later = train_batch(ctx, 10, seed=2)  # a shorter batch: MMRec divides by the configured batch size
    torch.testing.assert_close(m.loss(*later)[0], dense_loss(m, ctx, *later, 0.3, 24))
    with torch.no_grad():
        users, items = m.embeddings()
        expected_users, expected_items, _, _ = dense_forward(m, ctx)
    torch.testing.assert_close(users[0], expected_users)
    torch.testing.assert_close(items[0], expected_items)


def test_fused_members_compute_what_they_compute_alone_and_mmrecs_formulas(ctx):
    settings = [(ON, 0.1), (OFF, 1e-3), ({"k": 2, "strength": 0.5}, 0.0)]
    fused = model(ctx, settings)
    alone = [model(ctx, p, r) for p, r in settings]
    for m in (fused, *alone):
        m.start_epoch(1)
    fixed = train_batch(ctx, 24, seed=3)
    losses = fused.loss(*fixed)
    with torch.no_grad():
        fused_users, fused_items = fused.embeddings()
    for i, (m, (_, reg)) in enumerate(zip(alone, settings)):
        torch.testing.assert_close(losses[i], m.loss(*fixed)[0], rtol=1e-6, atol=0)
        torch.testing.assert_close(losses[i], dense_loss(fused, ctx, *fixed, reg, 24, member=i))
        with torch.no_grad():
            users, items = m.embeddings()
        torch.testing.assert_close(fused_users[i], users[0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(fused_items[i], items[0], rtol=1e-6, atol=1e-7)


def test_what_trains_is_what_mmrec_trains(ctx):
    m = model(ctx)
    names = {name: tuple(p.shape) for name, p in m.named_parameters()}
    d, M, N = 8, ctx.n_users, ctx.n_items
    linears = {
        "image_encoder": (12, d),
        "text_encoder": (8, d),
        "query_hidden": (d, d),
        "gate_v": (d, d),
        "gate_t": (d, d),
        "gate_image_prefer": (d, d),
        "gate_text_prefer": (d, d),
    }
    expected = {
        "user_emb.weight": (1, M, d),
        "item_emb.weight": (1, N, d),
        "image_raw": (1, N, 12),
        "text_raw": (1, N, 8),
        "query_out.weight": (1, d, 1),
    }
    for layer, shape in linears.items():
        expected |= {f"{layer}.weight": (1, *shape), f"{layer}.bias": (1, shape[1])}
    assert names == expected
    grads = torch.autograd.grad(m.loss(*train_batch(ctx, 24)).sum(), list(m.parameters()))
    assert all(g.abs().sum() > 0 for g in grads)
    frozen = model(ctx, train_raw_features=False)
    assert not {"image_raw", "text_raw"} & {name for name, _ in frozen.named_parameters()}
    fixed = train_batch(ctx, 24)
    torch.testing.assert_close(frozen.loss(*fixed)[0], dense_loss(frozen, ctx, *fixed, 0.1, 24))


def test_initialisation_is_mmrecs(ctx):
    m = model(ctx)
    bound = (6 / (ctx.n_users + 8)) ** 0.5  # xavier_uniform_ on the ID tables
    assert m.user_emb.weight.abs().max() <= bound
    assert m.image_encoder.weight.abs().max() <= 1 / 12**0.5  # nn.Linear's kaiming_uniform(a=√5): 1/√fan_in
    assert m.image_encoder.bias.abs().max() <= 1 / 12**0.5 and m.image_encoder.bias.abs().min() > 0


def test_clear_changes_the_forward_pass_and_strength_zero_is_the_identity(ctx):
    fixed = train_batch(ctx, 24)
    with torch.no_grad():
        on, off = model(ctx, ON), model(ctx, OFF)
        zero = model(ctx, [(ON, 0.1), ({"k": 3, "strength": 0.0}, 0.1)])
        for m in (on, off, zero):
            m.start_epoch(1)
        assert not torch.allclose(on.loss(*fixed), off.loss(*fixed))
        assert not torch.allclose(on.embeddings()[1], off.embeddings()[1])
        both = zero.loss(*fixed)
        torch.testing.assert_close(both[1], off.loss(*fixed)[0], rtol=1e-6, atol=0)
        torch.testing.assert_close(both[0], on.loss(*fixed)[0], rtol=1e-6, atol=0)


def test_options_are_typed_and_the_grid_is_mmrecs():
    options = MGCN.model_options()
    assert {name: o.default for name, o in options.items()} == {
        "cl_loss": 0.01,
        "n_ui_layers": 2,
        "n_layers": 1,
        "knn_k": 10,
        "temperature": 0.2,
        "train_raw_features": True,
    }
    assert MGCN.mmrec_grid == {"cl_loss": [0.001, 0.01, 0.1]}
    assert MGCN.lr_decay == (0.96, 50) and MGCN.default_reg_weight == 1e-4
    assert MGCN.check_options({"cl_loss": 0, "n_ui_layers": 3}) == {"cl_loss": 0.0, "n_ui_layers": 3}
    for bad in ({"knn_k": 2.5}, {"train_raw_features": 1}, {"cl_los": 0.1}):
        with pytest.raises(SpecError):
            MGCN.check_options(bad)
