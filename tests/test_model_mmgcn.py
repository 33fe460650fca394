"""MMGCN against a dense re-computation of MMRec's formulas on tiny data: graph, layers, loss, what is
trained, evaluation embeddings, CLEAR's entry point, fused members."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fixtures.tiny_models import tiny_graph_context, train_batch

from clear_tune.config import TrainConfig
from clear_tune.models import build_model
from clear_tune.models._graph_cache import ui_aggregation

torch.set_num_threads(1)
M, N, D_V, D_T = 30, 25, 12, 10  # items 20..24 have no train edge


@pytest.fixture(scope="module")
def ctx():
    return tiny_graph_context(M, N, D_V, D_T)


def config(projection=None, reg_weight=1e-2, **options):
    return TrainConfig(
        backbone="mmgcn",
        emb_dim=8,
        projection=projection or {"mode": "off"},
        reg_weight=reg_weight,
        model_options={"dim_latent": 6, **options},
    )


def batch(ctx, size=40, seed=1):
    return train_batch(ctx, size, seed)


def dense_mean_graph(ctx):
    A = torch.zeros(M + N, M + N)
    A[ctx.train_users, ctx.train_items + M] = 1.0
    A[ctx.train_items + M, ctx.train_users] = 1.0
    return A / A.sum(1, keepdim=True).clamp_min(1)  # PyG mean at the target row; no edges -> 0


def dense_forward(model, ctx, m=0):
    """MMRec's GCN.forward, written out densely with member m's weights."""
    A = dense_mean_graph(ctx)

    def lin(layer, x):
        return x @ layer.weight[m] + (layer.bias[m] if layer.bias is not None else 0)

    def branch(gcn, pref, feat):
        x = F.normalize(torch.cat([pref, feat]))
        for conv, linear, g in zip(gcn.conv, gcn.linear, gcn.g):
            h = F.leaky_relu(A @ (x @ conv.weight[m]))
            x_hat = F.leaky_relu(lin(linear, x)) + model.id_embedding
            x = F.leaky_relu(lin(g, torch.cat([h, x_hat], 1)))
        return x

    image = lin(model.image_encoder, ctx.image_feat)
    return (
        branch(model.image_gcn, model.image_preference, image)
        + branch(model.text_gcn, model.text_preference, ctx.text_feat)
    ) / 2


def test_mean_aggregation_is_row_normalised_both_directions_without_self_loops(ctx):
    A, A_t = ui_aggregation(ctx, "mean")
    dense = dense_mean_graph(ctx)
    torch.testing.assert_close(A.to_dense(), dense)
    torch.testing.assert_close(A_t.to_dense(), dense.T)
    assert dense.diagonal().abs().sum() == 0 and A.to_dense()[M + 20 :].abs().sum() == 0


def test_forward_and_loss_are_mmrecs_formulas(ctx):
    model = build_model(config(), ctx)
    assert [g.d_in for g in model.image_gcn.g] == [6 + 8, 16, 16]  # concate: MMRec's 'False' is truthy
    with torch.no_grad():
        rep = dense_forward(model, ctx)
        torch.testing.assert_close(model.forward()[0], rep, rtol=1e-5, atol=1e-6)
        users, pos, neg = batch(ctx)
        u, p, n = rep[users], rep[pos + M], rep[neg + M]
        main = -torch.log(torch.sigmoid((u * p).sum(1) - (u * n).sum(1))).mean()
        user_tensor = users.repeat_interleave(2)
        item_tensor = torch.stack([pos + M, neg + M]).t().reshape(-1)
        E = model.id_embedding
        reg = (E[user_tensor] ** 2 + E[item_tensor] ** 2).mean() + (model.image_preference**2).mean()
        torch.testing.assert_close(model.loss(users, pos, neg)[0], main + 1e-2 * reg, rtol=1e-5, atol=0)


def test_id_embeddings_and_preferences_stay_fixed_as_in_mmrec_unless_trained(ctx):
    model = build_model(config(), ctx)
    names = {name for name, _ in model.named_parameters()}
    assert not any("embedding" in n or "preference" in n for n in names)
    before = model.id_embedding.clone()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model.loss(*batch(ctx)).sum().backward()
    opt.step()
    assert torch.equal(model.id_embedding, before)
    trained = build_model(config(train_id_embeddings=True), ctx)
    assert trained.id_embedding.shape == (1, M + N, 8) and trained.id_embedding.requires_grad
    torch.testing.assert_close(trained.id_embedding[0], model.id_embedding)  # same draw
    trained.loss(*batch(ctx)).sum().backward()
    assert trained.id_embedding.grad.abs().sum() > 0 and trained.text_preference.grad.abs().sum() > 0


def test_evaluation_reads_the_last_batch_representation_like_mmrec(ctx):
    model = build_model(config(), ctx)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    loss = model.loss(*batch(ctx))
    with torch.no_grad():
        before_step = model.forward()
    loss.sum().backward()
    opt.step()
    with torch.no_grad():
        users, items = model.embeddings()
        torch.testing.assert_close(torch.cat([users, items], 1), before_step)
        fresh = build_model(config(fresh_eval=True), ctx)
        fresh.load_state_dict(model.state_dict())
        assert not torch.allclose(torch.cat(fresh.embeddings(), 1), before_step)


def test_clear_enters_at_the_mlp_output_and_the_raw_text(ctx):
    on = build_model(config({"k": 3, "strength": 1.0}), ctx)
    off = build_model(config(), ctx)
    zero = build_model([config({"k": 3, "strength": 1.0}), config({"k": 3, "strength": 0.0})], ctx)
    with torch.no_grad():
        for model in (on, off, zero):
            model.start_epoch(1)
        P = on.projection.members[0]
        assert P.P_v.shape == (6, 6) and P.P_t.shape == (D_T, D_T)
        assert not torch.allclose(on.forward(), off.forward(), rtol=1e-3, atol=1e-4)  # λ > 0 changes the forward
        torch.testing.assert_close(zero.forward()[1], off.forward()[0], rtol=1e-6, atol=1e-7)  # λ = 0: identity
        V, T = on.encode()
        torch.testing.assert_close(T[0], on.text_feat)  # the text "encoder" is the identity


def test_fused_members_get_their_own_loss_and_keep_members_works(ctx):
    settings = [
        config({"k": 3, "strength": 0.9}, 1e-2),
        config(
            None,
            1e-1,
        ),
        config({"k": 2, "strength": 0.5}, 0.0),
    ]
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
        assert fused.result.shape[0] == 2
        torch.testing.assert_close(
            fused.loss(*fixed), torch.cat([alone[2].loss(*fixed), alone[0].loss(*fixed)]), rtol=1e-6, atol=0
        )
