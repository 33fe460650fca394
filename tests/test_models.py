"""The model-array interface on tiny synthetic data: shapes, members, CLEAR wiring, MMRec forms, errors.

Per-backbone training behaviour (learning, checkpoints, determinism) is in ``test_backbones.py``, for
every registered backbone.
"""

from __future__ import annotations

import pytest
import torch
from fixtures.tiny_models import context_of, train_batch

from clear_tune.config import TrainConfig
from clear_tune.data import make_synthetic
from clear_tune.errors import SpecError
from clear_tune.models import BACKBONES, backbone_uses_features, build_model
from clear_tune.models import _losses as L

torch.set_num_threads(1)

FEATURE_BACKBONES = sorted(name for name, cls in BACKBONES.items() if cls.uses_features)
ID_BACKBONES = sorted(name for name, cls in BACKBONES.items() if not cls.uses_features)
OFF = {"mode": "off"}
# small kNN graphs for 80 items; bm3, lgmrec and mentor without fresh dropout masks (and noise) per call;
# encoders as wide as emb_dim
SMALL_OPTIONS = {
    "freedom": {"knn_k": 5},
    "clear": {"knn_k": 5},
    "bm3": {"dropout": 0.0},
    "mmgcn": {"dim_latent": 16},
    "grcn": {"latent_embedding": 16},
    "lgmrec": {"keep_rate": 1.0, "gumbel": "never"},
    "mentor": {"dropout": 0.0, "noise_eps": 0.0},
}


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic(n_users=120, n_items=80, d_v=24, d_t=16, planted_rank=3, pref_dim=6, seed=3)


context = context_of


def config(backbone: str, **overrides) -> TrainConfig:
    projection = overrides.pop("projection", OFF if backbone in ID_BACKBONES else {"k": 3, "strength": 0.7})
    options = overrides.pop("model_options", SMALL_OPTIONS.get(backbone, {}))
    return TrainConfig(backbone=backbone, emb_dim=16, projection=projection, model_options=options, **overrides)


def batch(ds, size: int = 64, seed: int = 0):
    return train_batch(context_of(ds, features=False), size, seed)


def test_registry_lists_the_backbones():
    assert {"bpr", "lightgcn", "vbpr", "freedom", "clear"} <= set(BACKBONES)
    assert not backbone_uses_features("lightgcn") and backbone_uses_features("clear")
    assert all(BACKBONES[b].uses_features for b in FEATURE_BACKBONES)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_parameter_and_buffer_carries_the_member_axis(dataset, backbone):
    model = build_model(
        [config(backbone), config(backbone, reg_weight=1e-2), config(backbone, reg_weight=0.0)], context(dataset)
    )
    assert model.n_members == 3
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if ".members." not in name:  # the projection array keeps one module per member
            assert tensor.shape[0] == 3, name
    model.start_epoch(1)
    loss = model.loss(*batch(dataset))
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    loss.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    with torch.no_grad():
        users, items = model.embeddings()
    assert users.shape[:2] == (3, dataset.n_users) and items.shape[:2] == (3, dataset.n_items)
    assert users.shape[2] == items.shape[2]


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_members_start_identical_and_keep_members_compacts(dataset, backbone):
    ctx = context(dataset)
    alone = build_model(config(backbone, reg_weight=1e-3), ctx)
    model = build_model([config(backbone), config(backbone, reg_weight=1e-3), config(backbone, reg_weight=0.0)], ctx)
    for (name, p_group), p_alone in zip(model.named_parameters(), alone.parameters()):
        assert all(torch.equal(p_group[m], p_alone[0]) for m in range(3)), name  # the seed decides, not R
    model.keep_members([2, 1])
    assert model.n_members == 2 and model.reg_weight.tolist() == pytest.approx([0.0, 1e-3])
    with torch.no_grad():
        model.start_epoch(1)
        alone.start_epoch(1)
        fixed = batch(dataset)
        torch.testing.assert_close(model.loss(*fixed)[1], alone.loss(*fixed)[0], rtol=1e-6, atol=0)


@pytest.mark.parametrize("backbone", FEATURE_BACKBONES)
def test_projection_per_member_iff_active(dataset, backbone):
    ctx = context(dataset)
    model = build_model(
        [
            config(backbone, projection={"k": 3, "strength": 0.7}),
            config(backbone, projection=OFF),
            config(backbone, projection={"k": 2, "strength": 0.0}),
        ],
        ctx,
    )
    model.start_epoch(1)
    assert [len(model.spectrum_history(m)) for m in range(3)] == [1, 0, 0]
    assert model.spectrum_history(0)[0]["k"] == 3
    assert not torch.allclose(model.projection.members[0].P_v, torch.eye(16))
    assert torch.equal(model.projection.members[1].P_v, torch.eye(16))  # identity: rows pass unchanged
    assert not any(p is model.projection.members[0].P_v for p in model.parameters())
    assert build_model(config(backbone, projection=OFF), ctx).projection is None


@pytest.mark.parametrize("backbone", FEATURE_BACKBONES)
def test_projection_changes_the_forward_pass_and_lambda_zero_is_the_identity(dataset, backbone):
    ctx = context(dataset)
    # reg_weight 1: FREEDOM's modality terms are scaled by it, and must be visible in the loss
    on = build_model(config(backbone, projection={"k": 4, "strength": 1.0}, reg_weight=1.0), ctx)
    off = build_model(config(backbone, projection=OFF, reg_weight=1.0), ctx)
    zero = build_model(
        [
            config(backbone, projection={"k": 4, "strength": 1.0}, reg_weight=1.0),
            config(backbone, projection={"k": 4, "strength": 0.0}, reg_weight=1.0),
        ],
        ctx,
    )
    fixed = batch(dataset)
    with torch.no_grad():
        assert torch.equal(on.loss(*fixed), off.loss(*fixed))  # identity projectors before the refresh
        for model in (on, off, zero):
            model.start_epoch(1)
        assert not torch.allclose(on.loss(*fixed), off.loss(*fixed), rtol=1e-7, atol=0)
        torch.testing.assert_close(zero.loss(*fixed)[1], off.loss(*fixed)[0], rtol=1e-6, atol=0)  # λ = 0: identity
        torch.testing.assert_close(zero.loss(*fixed)[0], on.loss(*fixed)[0], rtol=1e-6, atol=0)


def test_projection_refreshes_on_each_members_schedule(dataset):
    model = build_model(
        [
            config("clear", projection={"k": 2, "refresh_every": 3}),
            config("clear", projection={"k": 2, "refresh_every": 2}),
        ],
        context(dataset),
    )
    for epoch in range(1, 8):
        model.start_epoch(epoch)
    assert [h["epoch"] for h in model.spectrum_history(0)] == [1, 3, 6]
    assert [h["epoch"] for h in model.spectrum_history(1)] == [1, 2, 4, 6]


def test_members_must_differ_only_in_projection_and_reg_weight(dataset):
    with pytest.raises(ValueError, match="differ only in projection and reg_weight"):
        build_model([config("clear"), config("clear", lr=0.5)], context(dataset))


@pytest.mark.parametrize("backbone", ID_BACKBONES)
def test_id_backbone_with_projection_is_a_spec_error(dataset, backbone):
    with pytest.raises(SpecError, match=f"{backbone}.*projection mode: off"):
        build_model(config(backbone, projection={"k": 4}), context(dataset))
    build_model(config(backbone, projection={"k": 4, "strength": 0.0}), context(dataset))  # strength 0 is fine


@pytest.mark.parametrize("backbone", FEATURE_BACKBONES)
def test_feature_backbone_without_features_is_a_spec_error(dataset, backbone):
    with pytest.raises(SpecError, match=f"{backbone}.*needs image and text features"):
        build_model(config(backbone), context(dataset, features=False))


def test_unknown_backbone_and_options_are_spec_errors(dataset):
    ctx = context(dataset)
    with pytest.raises(SpecError, match="unknown backbone 'ngcf'.*bpr"):
        build_model(config("lightgcn").model_copy(update={"backbone": "ngcf"}), ctx)
    with pytest.raises(SpecError, match="no model option 'layers'.*n_layers"):
        build_model(config("lightgcn", model_options={"layers": 3}), ctx)
    with pytest.raises(SpecError, match="dropout='high' must be a float"):
        build_model(config("freedom", model_options={"dropout": "high"}), ctx)
    with pytest.raises(SpecError, match="'clear': edge_dropout=1.5 must be in"):
        build_model(config("clear", model_options={"edge_dropout": 1.5}), ctx)
    model = build_model(config("freedom", model_options={"dropout": 0, "knn_k": 5}), ctx)
    assert model.dropout == 0.0


def test_reg_weight_default_and_override(dataset):
    ctx = context(dataset)
    assert build_model(config("vbpr"), ctx).reg_weight.tolist() == [pytest.approx(BACKBONES["vbpr"].default_reg_weight)]
    assert build_model(config("vbpr", reg_weight=0.5), ctx).reg_weight.tolist() == [0.5]


def test_graphs_are_built_once_per_dataset(dataset):
    ctx = context(dataset)
    a = build_model(config("clear"), ctx)
    keys = set(ctx.cache)
    b = build_model(config("freedom"), ctx)
    assert {"ui_adjacency", "ui_edge_norm"} <= keys
    assert a.full_graph is b.full_graph and a.mm_graph is b.mm_graph


def test_freedom_prunes_train_graph_and_evaluates_on_full_graph(dataset):
    model = build_model(config("freedom"), context(dataset))
    model.start_epoch(1)
    n_train = len(dataset.train)
    assert model.train_graph.values().numel() == 2 * int(n_train * 0.2)
    assert model.full_graph.values().numel() == 2 * n_train
    first = model.train_graph.col_indices().clone()
    model.start_epoch(2)
    assert not torch.equal(first, model.train_graph.col_indices())  # resampled every epoch


@pytest.mark.parametrize("train_raw", [True, False])
def test_freedom_modal_gaps_match_mmrecs_full_encoding(dataset, train_raw):
    # The speed-up (encode only the raw gap of the batch's items) must give MMRec's values and gradients.
    model = build_model(
        config("freedom", model_options={"knn_k": 5, "train_raw_features": train_raw}), context(dataset)
    )
    model.start_epoch(1)
    users, pos, neg = batch(dataset, size=32)
    u = torch.randn(1, 32, 16)
    image_gap, text_gap = model.encode_gaps(*model.raw_gaps(pos, neg))
    zero = torch.zeros(())
    fast = L.bpr(L.scores(u, image_gap), zero) + L.bpr(L.scores(u, text_gap), zero)
    watched = [model.image_encoder.weight] + ([model.image_raw] if train_raw else [])
    fast_grads = torch.autograd.grad(fast.sum(), watched)
    V, T = model.modal_features()  # MMRec: all N items encoded, then indexed
    slow = L.bpr(L.scores(u, V[:, pos]), L.scores(u, V[:, neg])) + L.bpr(L.scores(u, T[:, pos]), L.scores(u, T[:, neg]))
    slow_grads = torch.autograd.grad(slow.sum(), watched)
    torch.testing.assert_close(fast, slow)
    for fast_grad, slow_grad in zip(fast_grads, slow_grads):
        torch.testing.assert_close(fast_grad, slow_grad)
    torch.testing.assert_close(image_gap, V[:, pos] - V[:, neg])


def test_freedom_trains_the_raw_features_as_mmrec_does(dataset):
    model = build_model(config("freedom"), context(dataset))
    assert model.image_raw.requires_grad and model.image_raw.shape == (1, *dataset.image_feat.shape)
    frozen = build_model(config("freedom", model_options={"knn_k": 5, "train_raw_features": False}), context(dataset))
    assert not any(
        p.shape[-1] == dataset.image_feat.shape[1] and p.shape[-2] == dataset.n_items for p in frozen.parameters()
    )


def test_vbpr_is_mmrecs_vbpr_when_the_projection_is_off(dataset):
    # MMRec: item = [γ_i ; W [t; v] + b], user θ_u (2d), EmbLoss over the batch rows, BPRLoss with γ = 1e-10.
    model = build_model(config("vbpr", projection=OFF, reg_weight=0.1), context(dataset))
    with torch.no_grad():
        model.content_bias.normal_()
    W = torch.cat([model.text_encoder.weight[0], model.image_encoder.weight[0]], dim=0)  # (d_t + d_v, d)
    raw = torch.cat([torch.as_tensor(dataset.text_feat), torch.as_tensor(dataset.image_feat)], dim=1)
    items = torch.cat([model.item_gamma.weight[0], raw @ W + model.content_bias[0]], dim=1)
    users_all = model.user_theta.weight[0]
    users, pos, neg = batch(dataset, size=48)
    u, p, n = users_all[users], items[pos], items[neg]
    mf = -torch.log(1e-10 + torch.sigmoid((u * p).sum(1) - (u * n).sum(1))).mean()
    reg = (torch.norm(u) + torch.norm(p) + torch.norm(n)) / 48
    torch.testing.assert_close(model.loss(users, pos, neg)[0], mf + 0.1 * reg)
    with torch.no_grad():
        user_emb, item_emb = model.embeddings()
    torch.testing.assert_close(item_emb[0], items)
    torch.testing.assert_close(user_emb[0], users_all)


def test_lightgcn_and_bpr_use_mmrecs_loss_forms(dataset):
    for backbone in ("bpr", "lightgcn"):
        model = build_model(config(backbone, reg_weight=0.5), context(dataset))
        users, pos, neg = batch(dataset, size=40)
        with torch.no_grad():
            user_all, item_all = model.embeddings()
            u, p, n = user_all[0, users], item_all[0, pos], item_all[0, neg]
            mf = -torch.log(1e-10 + torch.sigmoid((u * p).sum(1) - (u * n).sum(1))).mean()
            ego_u, ego_p, ego_n = (
                model.user_emb.weight[0, users],
                model.item_emb.weight[0, pos],
                model.item_emb.weight[0, neg],
            )
            reg = (torch.norm(ego_u) + torch.norm(ego_p) + torch.norm(ego_n)) / 40  # unsquared norms
            torch.testing.assert_close(model.loss(users, pos, neg)[0], mf + 0.5 * reg)


def test_lightgcn_paper_regulariser_is_an_option(dataset):
    users, pos, neg = batch(dataset, size=40)
    model = build_model(
        config("lightgcn", reg_weight=0.5, model_options={"regulariser": "half_square"}), context(dataset)
    )
    with torch.no_grad():
        user_all, item_all = model.embeddings()
        u, p, n = user_all[0, users], item_all[0, pos], item_all[0, neg]
        mf = -torch.log(1e-10 + torch.sigmoid((u * p).sum(1) - (u * n).sum(1))).mean()
        ego = (model.user_emb.weight[0, users], model.item_emb.weight[0, pos], model.item_emb.weight[0, neg])
        reg = sum(t.pow(2).sum() for t in ego) / (2 * 40)  # the paper's code: ½ Σ‖·‖² / B
        torch.testing.assert_close(model.loss(users, pos, neg)[0], mf + 0.5 * reg)
    with pytest.raises(SpecError, match="regulariser='l2' is not one of"):
        build_model(config("lightgcn", model_options={"regulariser": "l2"}), context(dataset))


@pytest.mark.parametrize("backbone", ["freedom"])
def test_reused_gap_buffers_never_give_silently_wrong_gradients(dataset, backbone):
    model = build_model(config(backbone, model_options={"knn_k": 5, "train_raw_features": False}), context(dataset))
    first = model.loss(*batch(dataset, seed=1)).sum()
    second = model.loss(*batch(dataset, seed=2)).sum()  # overwrites the scratch rows the first graph saved
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        first.backward()
    second.backward()  # the latest loss is fine
    small = model.loss(*batch(dataset, size=7, seed=3)).sum()  # a short last batch reuses a slice
    small.backward()
