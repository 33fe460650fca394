"""GRCN against a dense re-computation of MMRec's formulas on tiny data: the edge-list message passing
(weighted sums with learned weights, PyG's segment softmax), the refined graph, the loss, what is
trained, CLEAR's entry point, fused members."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fixtures.tiny_models import tiny_graph_context, train_batch

from clear_tune.config import TrainConfig
from clear_tune.graphs import EdgeList, edge_sum, segment_softmax
from clear_tune.models import build_model

torch.set_num_threads(1)
M, N, D_V, D_T = 30, 25, 12, 10  # items 20..24 have no train edge


@pytest.fixture(scope="module")
def ctx():
    return tiny_graph_context(M, N, D_V, D_T)


def config(projection=None, reg_weight=1e-2, **options):
    return TrainConfig(
        backbone="grcn",
        emb_dim=8,
        projection=projection or {"mode": "off"},
        reg_weight=reg_weight,
        model_options={"latent_embedding": 6, **options},
    )


def batch(ctx, size=40, seed=1):
    return train_batch(ctx, size, seed)


def dense_adjacency(ctx):
    A = torch.zeros(M + N, M + N, dtype=torch.bool)
    A[ctx.train_users, ctx.train_items + M] = True
    A[ctx.train_items + M, ctx.train_users] = True
    return A  # A[target, source], both directions


def dense_attention(x, A):
    """MMRec's GATConv weights as a dense matrix: softmax over each target row's neighbours of <x_i, x_j>."""
    S = (x @ x.T).masked_fill(~A, float("-inf"))
    shifted = (S - S.max(1, keepdim=True).values.nan_to_num(0, neginf=0)).exp()  # rows without edges: all zero
    return shifted / (shifted.sum(1, keepdim=True) + 1e-16)


def dense_forward(model, ctx, m=0):
    A = dense_adjacency(ctx)
    content, alphas = [], []
    for encoder, table, raw in (
        (model.image_encoder, model.image_preference, ctx.image_feat),
        (model.text_encoder, model.text_preference, ctx.text_feat),
    ):
        f = F.normalize(F.leaky_relu(raw @ encoder.linear.weight[m] + encoder.linear.bias[m]))
        p = F.normalize(table.weight[m])
        for _ in range(3):
            p = F.normalize(p)  # MMRec's routing: the one-directional GAT sends nothing to users
        x = torch.cat([p, f])
        alpha = dense_attention(x, A)
        content.append(x + alpha @ x)
        alphas.append(alpha)
    conf = model.confidence.weight[m]  # (M + N, 2): of the source j = the column
    W = torch.relu(torch.maximum(alphas[0] * conf[:, 0], alphas[1] * conf[:, 1]))
    x = F.normalize(model.id_embedding.weight[m])
    h1 = W @ x
    return torch.cat([x + h1 + W @ h1, *content], 1)


def test_edge_sum_and_segment_softmax_match_dense_products_and_their_gradients():
    g = torch.Generator().manual_seed(3)
    src, dst = torch.randint(0, 7, (20,), generator=g), torch.randint(0, 6, (20,), generator=g)  # node 6: no in-edge
    keep = src != dst
    src, dst = src[keep], dst[keep]
    graph = EdgeList(src, dst, 7)
    w = torch.randn(2, graph.n_edges, generator=g, requires_grad=True)
    x = torch.randn(2, 7, 3, generator=g, requires_grad=True)

    def dense(weights):  # (R, 7, 7): A[m, dst, src] = weights[m, e], duplicates summed
        index = (torch.arange(2).repeat_interleave(graph.n_edges), graph.dst.repeat(2), graph.src.repeat(2))
        return torch.zeros(2, 7, 7).index_put(index, weights.reshape(-1), accumulate=True)

    out = edge_sum(graph, w, x)
    torch.testing.assert_close(out, dense(w) @ x)
    cotangent = torch.randn(out.shape, generator=g)
    grads = torch.autograd.grad((out * cotangent).sum(), (w, x))
    ref = torch.autograd.grad(((dense(w) @ x) * cotangent).sum(), (w, x))
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b)
    alpha = segment_softmax(graph, w)
    seg_sum = torch.zeros(2, 7).index_add(1, graph.dst, alpha)
    torch.testing.assert_close(seg_sum[:, torch.bincount(graph.dst, minlength=7) > 0], torch.ones(2, 6))


def test_forward_and_loss_are_mmrecs_formulas(ctx):
    model = build_model(config(), ctx)
    with torch.no_grad():
        rep = dense_forward(model, ctx)
        torch.testing.assert_close(model.forward()[0], rep, rtol=1e-5, atol=1e-6)
        users, pos, neg = batch(ctx)
        u, p, n = rep[users], rep[pos + M], rep[neg + M]
        main = -torch.log(torch.sigmoid((u * p).sum(1) - (u * n).sum(1))).mean()
        user_tensor = users.repeat_interleave(2)
        item_tensor = torch.stack([pos + M, neg + M]).t().reshape(-1)
        E, P_v, P_t = model.id_embedding.weight[0], model.image_preference.weight[0], model.text_preference.weight[0]
        reg = (
            (E[user_tensor] ** 2 + E[item_tensor] ** 2).mean()
            + (P_v**2).mean()
            + (P_v[user_tensor] ** 2).mean()
            + (P_t[user_tensor] ** 2).mean()
        )
        torch.testing.assert_close(model.loss(users, pos, neg)[0], main + 1e-2 * reg, rtol=1e-5, atol=0)


def test_everything_mmrec_trains_is_trained_and_gets_a_gradient(ctx):
    model = build_model(config(), ctx)
    model.loss(*batch(ctx)).sum().backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert set(grads) == {
        "image_encoder.linear.weight",
        "image_encoder.linear.bias",
        "text_encoder.linear.weight",
        "text_encoder.linear.bias",
        "id_embedding.weight",
        "image_preference.weight",
        "text_preference.weight",
        "confidence.weight",
    }
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())


def test_options_route_to_users_and_weight_and_fusion_modes(ctx):
    users, pos, neg = batch(ctx)
    base = build_model(config(), ctx)
    with torch.no_grad():
        routed = build_model(config(route_to_users=True), ctx)
        assert not torch.allclose(routed.forward(), base.forward())
        for mode in ("mean", "max"):
            assert torch.isfinite(build_model(config(weight_mode=mode), ctx).loss(users, pos, neg)).all()
        users_id, items_id = build_model(config(fusion_mode="id"), ctx).embeddings()
        assert users_id.shape == (1, M, 8) and items_id.shape == (1, N, 8)
        assert base.embeddings()[0].shape == (1, M, 8 + 2 * 6)


def test_evaluation_reads_the_last_batch_representation_like_mmrec(ctx):
    model = build_model(config(), ctx)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    loss = model.loss(*batch(ctx))
    with torch.no_grad():
        before_step = model.forward()
    loss.sum().backward()
    opt.step()
    with torch.no_grad():
        torch.testing.assert_close(torch.cat(model.embeddings(), 1), before_step)
        assert not torch.allclose(model.forward(), before_step)


def test_clear_enters_at_the_content_features(ctx):
    on = build_model(config({"k": 3, "strength": 1.0}), ctx)
    off = build_model(config(), ctx)
    zero = build_model([config({"k": 3, "strength": 1.0}), config({"k": 3, "strength": 0.0})], ctx)
    with torch.no_grad():
        for model in (on, off, zero):
            model.start_epoch(1)
        P = on.projection.members[0]
        assert P.P_v.shape == (6, 6) and P.P_t.shape == (6, 6)
        V, _ = on.encode()
        torch.testing.assert_close(V, on.image_encoder(ctx.image_feat))  # φ_v = lrelu(MLP(v)), before normalize
        assert not torch.allclose(on.forward(), off.forward(), rtol=1e-3, atol=1e-4)  # λ > 0 changes the forward
        torch.testing.assert_close(zero.forward()[1], off.forward()[0], rtol=1e-6, atol=1e-7)  # λ = 0: identity


def test_fused_members_get_their_own_loss_and_keep_members_works(ctx):
    settings = [config({"k": 3, "strength": 0.9}, 1e-2), config(None, 1e-1), config({"k": 2, "strength": 0.5}, 0.0)]
    fused = build_model(settings, ctx)
    alone = [build_model(s, ctx) for s in settings]
    fixed = batch(ctx)
    with torch.no_grad():
        for model in (fused, *alone):
            model.start_epoch(1)
        together = fused.loss(*fixed)
        for m, model in enumerate(alone):
            torch.testing.assert_close(together[m], model.loss(*fixed)[0], rtol=1e-6, atol=0)
        fused.keep_members([2, 0])
        torch.testing.assert_close(
            fused.loss(*fixed), torch.cat([alone[2].loss(*fixed), alone[0].loss(*fixed)]), rtol=1e-6, atol=0
        )
