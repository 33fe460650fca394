"""SMORE against a dense re-computation of MMRec's formulas on tiny data (graphs, spectrum fusion, dropout, loss,
what trains, CLEAR)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fixtures.tiny_models import context_of, train_batch

from clear_tune.config import TrainConfig
from clear_tune.data import make_synthetic
from clear_tune.errors import SpecError
from clear_tune.models import SMORE, build_model

torch.set_num_threads(1)
OFF = {"mode": "off"}
ON = {"k": 3, "strength": 0.8}
K_IMAGE, K_TEXT = 4, 6


@pytest.fixture(scope="module")
def ctx():
    return context_of(make_synthetic(n_users=50, n_items=30, d_v=12, d_t=8, pref_dim=4, seed=3))


def model(ctx, projection=OFF, reg_weight=0.1, **options):
    options = {"image_knn_k": K_IMAGE, "text_knn_k": K_TEXT, "cl_loss": 0.3, **options}
    cfgs = [
        TrainConfig(backbone="smore", emb_dim=8, projection=p, reg_weight=r, model_options=options)
        for p, r in (projection if isinstance(projection, list) else [(projection, reg_weight)])
    ]
    return build_model(cfgs if len(cfgs) > 1 else cfgs[0], ctx)


# ---- MMRec's build_sim + build_knn_normalized_graph(norm_type='sym'), max_pool_fusion and get_adj_mat, densely
def knn_laplacian(x, k):
    unit = x / x.norm(dim=-1, keepdim=True)
    sim = unit @ unit.T
    values, indices = sim.topk(k, dim=-1)
    S = torch.zeros_like(sim).scatter_(-1, indices, values)
    d = S.sum(-1).pow(-0.5)
    d[torch.isinf(d)] = 0.0
    return d[:, None] * S * d[None, :]


def max_pool(a, b):
    """The union of the entries of a and b, each with the larger value (an entry of one graph keeps its value)."""
    ninf = torch.tensor(float("-inf"))
    pooled = torch.maximum(torch.where(a != 0, a, ninf), torch.where(b != 0, b, ninf))
    return torch.where(torch.isinf(pooled), torch.zeros_like(pooled), pooled)


def norm_adj(ctx):
    M, N = ctx.n_users, ctx.n_items
    A = torch.zeros(M + N, M + N)
    A[ctx.train_users, ctx.train_items + M] = 1.0
    A[ctx.train_items + M, ctx.train_users] = 1.0
    d = A.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0.0
    return d[:, None] * A * d[None, :]


def dense_forward(m, ctx, member=0, masks=None):
    """MMRec's SMORE.forward(norm_adj, train=True) for one member, dense: (users, items, side, content).
    ``masks``: nn.Dropout's three (M + N, d) keep masks (None: eval mode)."""

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
    d = V.shape[1]
    image_fft, text_fft = torch.fft.rfft(V, dim=1, norm="ortho"), torch.fft.rfft(T, dim=1, norm="ortho")
    w_image, w_text, w_fusion = (
        torch.view_as_complex(w[member])
        for w in (m.image_complex_weight, m.text_complex_weight, m.fusion_complex_weight)
    )
    image_conv = torch.fft.irfft(image_fft * w_image, n=d, dim=1, norm="ortho")
    text_conv = torch.fft.irfft(text_fft * w_text, n=d, dim=1, norm="ortho")
    fusion_conv = torch.fft.irfft(text_fft * image_fft * w_fusion, n=d, dim=1, norm="ortho")
    item, user = m.item_emb.weight[member], m.user_emb.weight[member]
    image_items = item * torch.sigmoid(lin(image_conv, m.gate_v))
    text_items = item * torch.sigmoid(lin(text_conv, m.gate_t))
    fusion_items = item * torch.sigmoid(lin(fusion_conv, m.gate_f))
    A, M = norm_adj(ctx), ctx.n_users
    layers = [torch.cat([user, item])]
    for _ in range(m.n_ui_layers):
        layers.append(A @ layers[-1])
    content = torch.stack(layers, 1).mean(1)
    S_img, S_txt = knn_laplacian(ctx.image_feat, K_IMAGE), knn_laplacian(ctx.text_feat, K_TEXT)
    S_fus = max_pool(S_img, S_txt)
    for _ in range(m.n_layers):
        image_items, text_items, fusion_items = S_img @ image_items, S_txt @ text_items, S_fus @ fusion_items
    image, text, fusion = (torch.cat([A[:M, M:] @ x, x]) for x in (image_items, text_items, fusion_items))
    query_v = lin(torch.tanh(lin(fusion, m.query_v_hidden)), m.query_v_out)
    query_t = lin(torch.tanh(lin(fusion, m.query_t_hidden)), m.query_t_out)
    agg_image, agg_text = torch.softmax(query_v, -1) * image, torch.softmax(query_t, -1) * text
    prefers = [torch.sigmoid(lin(content, g)) for g in (m.gate_image_prefer, m.gate_text_prefer, m.gate_fusion_prefer)]
    if masks is not None:
        prefers = [p * (mask.float() / (1 - m.dropout_rate)) for p, mask in zip(prefers, masks)]
    side = torch.mean(torch.stack([prefers[0] * agg_image, prefers[1] * agg_text, prefers[2] * fusion]), dim=0)
    final = content + side
    return final[:M], final[M:], side, content


def info_nce(view1, view2, temperature=0.2):
    view1, view2 = F.normalize(view1, dim=1), F.normalize(view2, dim=1)
    pos = torch.exp((view1 * view2).sum(-1) / temperature)
    total = torch.exp(view1 @ view2.T / temperature).sum(1)
    return torch.mean(-torch.log(pos / total))


def dense_loss(m, ctx, users, pos, neg, reg_weight, batch_size, member=0, masks=None):
    """MMRec's SMORE.calculate_loss with ``train_batch_size = batch_size``."""
    users_all, items_all, side, content = dense_forward(m, ctx, member, masks)
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
    S_img, S_txt = knn_laplacian(ctx.image_feat, K_IMAGE), knn_laplacian(ctx.text_feat, K_TEXT)
    for (graph, graph_t), expected in zip(
        (m.image_graph, m.text_graph, m.fusion_graph), (S_img, S_txt, max_pool(S_img, S_txt))
    ):
        torch.testing.assert_close(graph.to_dense(), expected)
        torch.testing.assert_close(graph_t.to_dense(), expected.T)
    fused = m.fusion_graph[0].to_dense()
    assert ((fused != 0) == ((S_img != 0) | (S_txt != 0))).all()  # the union of both graphs' entries
    both = (S_img != 0) & (S_txt != 0)
    assert ((S_img != 0) & ~both).any() and ((S_txt != 0) & ~both).any()  # the data has entries of one graph only
    assert (both & (S_img != S_txt)).any()  # ... and shared ones with two values


def test_max_pool_graphs_keeps_the_larger_value_of_either_graph():
    from clear_tune.graphs import max_pool_graphs

    g = torch.Generator().manual_seed(0)
    a, b = (torch.rand(7, 7, generator=g) * (torch.rand(7, 7, generator=g) < 0.4) for _ in range(2))
    assert ((a != 0) & (b != 0) & (a > b)).any() and ((a != 0) & (b != 0) & (b > a)).any()
    torch.testing.assert_close(max_pool_graphs(a.to_sparse(), b.to_sparse()).to_dense(), max_pool(a, b))


def test_loss_and_embeddings_match_mmrecs_dense_forward(ctx):
    m = model(ctx, reg_weight=0.3, n_layers=2, n_ui_layers=2)
    with torch.no_grad():  # a trained-looking raw-feature copy
        m.text_raw.add_(0.1 * torch.randn_like(m.text_raw))
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


def test_preference_dropout_is_nn_dropout_on_all_rows_and_off_in_evaluation(ctx):
    m = model(ctx, dropout_rate=0.4)
    fixed = train_batch(ctx, 24, seed=4)
    replay = torch.Generator().manual_seed(0)
    replay.set_state(m.generator.get_state())
    shape = (ctx.n_users + ctx.n_items, 8)
    masks = [torch.rand(shape, generator=replay) >= 0.4 for _ in range(3)]  # image, text, fusion preference
    torch.testing.assert_close(m.loss(*fixed)[0], dense_loss(m, ctx, *fixed, 0.1, 24, masks=masks))
    assert not torch.allclose(m.loss(*fixed), m.loss(*fixed))  # a new mask in every batch
    with torch.no_grad():
        users, items = m.embeddings()
        torch.testing.assert_close(items[0], dense_forward(m, ctx)[1])
        torch.testing.assert_close(m.embeddings()[0], users)


def test_fused_members_compute_what_they_compute_alone_and_mmrecs_formulas(ctx):
    settings = [(ON, 0.1), (OFF, 1e-3), ({"k": 2, "strength": 0.5}, 0.0)]
    fused = model(ctx, settings, dropout_rate=0.1)
    alone = [model(ctx, p, r, dropout_rate=0.1) for p, r in settings]
    for m in (fused, *alone):
        m.start_epoch(1)
    fixed = train_batch(ctx, 24, seed=3)
    replay = torch.Generator().manual_seed(0)
    replay.set_state(fused.generator.get_state())
    masks = [torch.rand(ctx.n_users + ctx.n_items, 8, generator=replay) >= 0.1 for _ in range(3)]
    losses = fused.loss(*fixed)  # one mask per preference, shared by the members
    with torch.no_grad():
        fused_users, fused_items = fused.embeddings()
    for i, (m, (_, reg)) in enumerate(zip(alone, settings)):
        torch.testing.assert_close(losses[i], m.loss(*fixed)[0], rtol=1e-6, atol=0)
        torch.testing.assert_close(losses[i], dense_loss(fused, ctx, *fixed, reg, 24, member=i, masks=masks))
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
        "query_v_hidden": (d, d),
        "query_t_hidden": (d, d),
        **{
            g: (d, d)
            for g in ("gate_v", "gate_t", "gate_f", "gate_image_prefer", "gate_text_prefer", "gate_fusion_prefer")
        },
    }
    expected = {
        "user_emb.weight": (1, M, d),
        "item_emb.weight": (1, N, d),
        "image_raw": (1, N, 12),
        "text_raw": (1, N, 8),
        "query_v_out.weight": (1, d, d),
        "query_t_out.weight": (1, d, d),
        **{f"{c}_complex_weight": (1, 1, d // 2 + 1, 2) for c in ("image", "text", "fusion")},
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
    options = SMORE.model_options()
    assert {name: o.default for name, o in options.items()} == {
        "n_ui_layers": 3,
        "n_layers": 1,
        "image_knn_k": 10,
        "text_knn_k": 10,
        "dropout_rate": 0.0,
        "cl_loss": 0.01,
        "temperature": 0.2,
        "train_raw_features": True,
    }
    assert SMORE.mmrec_grid == {
        "n_ui_layers": [3, 4],
        "image_knn_k": [10, 15, 20, 40],
        "text_knn_k": [10, 15, 20, 40],
        "reg_weight": [1e-5, 1e-4],
        "dropout_rate": [0.0, 0.1],
    }
    assert SMORE.lr_decay == (0.96, 50) and SMORE.default_reg_weight == 1e-5
    for name, values in SMORE.mmrec_grid.items():
        if name != "reg_weight":
            assert all(SMORE.check_options({name: v}) == {name: v} for v in values)
    for bad in ({"image_knn_k": 2.5}, {"dropout_rate": "0.1"}, {"knn_k": 10}):
        with pytest.raises(SpecError):
            SMORE.check_options(bad)
