"""Backbones on tiny synthetic data: build, finite loss, backward, shapes, learning, CLEAR wiring, errors."""

from __future__ import annotations

import pytest
import torch

from clear_tune.config import TrainConfig
from clear_tune.data import make_synthetic
from clear_tune.errors import SpecError
from clear_tune.models import BACKBONES, ModelContext, backbone_uses_features, build_model

torch.set_num_threads(1)

FEATURE_BACKBONES = ["vbpr", "freedom", "clear"]
ID_BACKBONES = ["bpr", "lightgcn"]
OFF = {"mode": "off"}


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic(n_users=120, n_items=80, d_v=24, d_t=16, planted_rank=3, pref_dim=6, seed=3)


def context(ds, *, features: bool = True) -> ModelContext:
    train = torch.as_tensor(ds.train, dtype=torch.long)
    feat = (lambda a: torch.as_tensor(a, dtype=torch.float32)) if features else (lambda a: None)
    return ModelContext(
        n_users=ds.n_users, n_items=ds.n_items, train_users=train[:, 0].contiguous(),
        train_items=train[:, 1].contiguous(), image_feat=feat(ds.image_feat), text_feat=feat(ds.text_feat),
        device=torch.device("cpu"),
    )


def config(backbone: str, **overrides) -> TrainConfig:
    projection = overrides.pop("projection", OFF if backbone in ID_BACKBONES else {"k": 3, "strength": 0.7})
    return TrainConfig(backbone=backbone, emb_dim=16, projection=projection, **overrides)


def batch(ds, size: int = 64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, len(ds.train), (size,), generator=gen)
    users = torch.as_tensor(ds.train[:, 0])[rows]
    pos = torch.as_tensor(ds.train[:, 1])[rows]
    neg = torch.randint(0, ds.n_items, (size,), generator=gen)
    return users, pos, neg


def test_registry_lists_all_backbones():
    assert set(BACKBONES) == {"bpr", "lightgcn", "vbpr", "freedom", "clear"}
    assert [backbone_uses_features(b) for b in ID_BACKBONES] == [False, False]
    assert all(backbone_uses_features(b) for b in FEATURE_BACKBONES)


@pytest.mark.parametrize("backbone", ID_BACKBONES + FEATURE_BACKBONES)
def test_builds_finite_loss_backward_and_shapes(dataset, backbone):
    model = build_model(config(backbone), context(dataset))
    model.start_epoch(1)
    loss = model.loss(*batch(dataset))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    with torch.no_grad():
        users, items = model.embeddings()
    assert users.shape[0] == dataset.n_users and items.shape[0] == dataset.n_items
    assert users.shape[1] == items.shape[1]
    expected_dim = {"vbpr": 3 * 16 + 1}.get(backbone, 16)
    assert users.shape[1] == expected_dim
    assert torch.isfinite(users).all() and torch.isfinite(items).all()


@pytest.mark.parametrize("backbone", ID_BACKBONES + FEATURE_BACKBONES)
def test_adam_steps_reduce_the_loss(dataset, backbone):
    model = build_model(config(backbone, lr=1e-2), context(dataset))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    fixed = batch(dataset, size=256, seed=1)
    losses = []
    for step in range(200):
        if step % 20 == 0:
            model.start_epoch(step // 20 + 1)
        loss = model.loss(*fixed)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.6 * first, (first, last)


@pytest.mark.parametrize("backbone", FEATURE_BACKBONES)
def test_projection_used_iff_active(dataset, backbone):
    ctx = context(dataset)
    for projection, active in [({"k": 3, "strength": 0.7}, True), (OFF, False), ({"k": 3, "strength": 0.0}, False)]:
        model = build_model(config(backbone, projection=projection), ctx)
        assert (model.projection is not None) is active
        model.start_epoch(1)
        history = model.spectrum_history()
        assert len(history) == (1 if active else 0)
        if active:
            assert history[0]["k"] == 3
            P_v = model.projection.P_v
            assert not torch.allclose(P_v, torch.eye(16))  # the projectors really changed
            assert not any(p is model.projection.P_v for p in model.parameters())


@pytest.mark.parametrize("backbone", FEATURE_BACKBONES)
def test_projection_changes_the_forward_pass(dataset, backbone):
    ctx = context(dataset)
    # reg_weight 1: FREEDOM's modality terms are scaled by it, and must be visible in the loss
    on = build_model(config(backbone, projection={"k": 4, "strength": 1.0}, reg_weight=1.0), ctx)
    off = build_model(config(backbone, projection=OFF, reg_weight=1.0), ctx)
    off.load_state_dict({k: v for k, v in on.state_dict().items() if not k.startswith("projection")}, strict=False)
    fixed = batch(dataset)
    # FREEDOM reads the modality features in its loss only; VBPR and CLEAR in their scores as well
    with torch.no_grad():
        assert torch.allclose(on.loss(*fixed), off.loss(*fixed))  # identity projectors before the refresh
        on.start_epoch(1)
        off.start_epoch(1)
        assert not torch.allclose(on.loss(*fixed), off.loss(*fixed))


def test_projection_refreshes_on_schedule(dataset):
    model = build_model(config("clear", projection={"k": 2, "refresh_every": 3}), context(dataset))
    for epoch in range(1, 8):
        model.start_epoch(epoch)
    assert [h["epoch"] for h in model.spectrum_history()] == [1, 3, 6]


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
    assert build_model(config("vbpr"), ctx).reg_weight == BACKBONES["vbpr"].default_reg_weight
    assert build_model(config("vbpr", reg_weight=0.5), ctx).reg_weight == 0.5


@pytest.mark.parametrize("backbone", ID_BACKBONES + FEATURE_BACKBONES)
def test_deterministic_for_a_seed(dataset, backbone):
    def run(seed: int) -> list[float]:
        ctx = context(dataset)
        model = build_model(config(backbone, seed=seed), ctx)
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
        out = []
        for epoch in range(1, 4):
            model.start_epoch(epoch)
            loss = model.loss(*batch(dataset, seed=epoch))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            out.append(loss.item())
        return out

    torch.manual_seed(123)  # the global RNG must not matter
    first = run(0)
    torch.manual_seed(456)
    assert run(0) == first
    assert run(1) != first


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


def test_freedom_modal_gaps_match_mmrecs_full_encoding(dataset):
    # The speed-up (encode only the raw gap of the batch's items) must give MMRec's values and gradients.
    from clear_tune.models._common import bpr_gap_loss, bpr_loss

    model = build_model(config("freedom"), context(dataset))
    model.start_epoch(1)
    users, pos, neg = batch(dataset, size=32)
    u = torch.randn(32, 16)
    image_gap, text_gap = model.modal_gaps(pos, neg)
    fast = bpr_gap_loss(u, image_gap) + bpr_gap_loss(u, text_gap)
    fast_grad = torch.autograd.grad(fast, model.image_encoder.weight)[0]
    V, T = model.modal_features()  # MMRec: all N items encoded, then indexed
    slow = bpr_loss(u, V[pos], V[neg]) + bpr_loss(u, T[pos], T[neg])
    slow_grad = torch.autograd.grad(slow, model.image_encoder.weight)[0]
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(fast_grad, slow_grad)
    torch.testing.assert_close(image_gap, V[pos] - V[neg])


def test_vbpr_scores_are_inner_products_with_biases(dataset):
    model = build_model(config("vbpr"), context(dataset))
    with torch.no_grad():
        model.item_bias.weight.normal_()
        model.image_bias.weight.normal_()
        users, items = model.embeddings()
        u, i = 3, 7
        V, T = model.modal_features(torch.tensor([i]))
        expected = (
            model.item_bias.weight[i, 0]
            + model.image_bias(model.image_feat[i]).squeeze() + model.text_bias(model.text_feat[i]).squeeze()
            + model.user_gamma.weight[u] @ model.item_gamma.weight[i]
            + model.user_theta.weight[u] @ torch.cat([V[0], T[0]])
        )
    torch.testing.assert_close(users[u] @ items[i], expected)


def test_vbpr_loss_equals_bpr_on_the_evaluation_scores(dataset):
    # The loss works on score differences (one encoded raw gap per pair); it must match the plain formula.
    model = build_model(config("vbpr", reg_weight=0.0), context(dataset))
    model.start_epoch(1)
    with torch.no_grad():
        model.item_bias.weight.normal_()
        model.text_bias.weight.normal_()
    users, pos, neg = batch(dataset, size=48)
    user_emb, item_emb = model.embeddings()
    scores_pos = (user_emb[users] * item_emb[pos]).sum(1)
    scores_neg = (user_emb[users] * item_emb[neg]).sum(1)
    expected = -torch.nn.functional.logsigmoid(scores_pos - scores_neg).mean()
    torch.testing.assert_close(model.loss(users, pos, neg), expected)


@pytest.mark.parametrize("backbone", ["vbpr", "freedom"])
def test_reused_gap_buffers_never_give_silently_wrong_gradients(dataset, backbone):
    model = build_model(config(backbone), context(dataset))
    first = model.loss(*batch(dataset, seed=1))
    second = model.loss(*batch(dataset, seed=2))  # overwrites the scratch rows the first graph saved
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        first.backward()
    second.backward()  # the latest loss is fine
    small = model.loss(*batch(dataset, size=7, seed=3))  # a short last batch reuses a slice
    small.backward()
