"""Properties of CLEAR's projection (clear_tune/projection.py): Theorem 5, limits, rank, schedule, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clear_tune.data import make_synthetic
from clear_tune.projection import CrossModalProjection, cross_covariance, energy_rank, soft_projectors

torch.set_num_threads(1)
SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def features(draw, max_dim: int = 12):
    """Random ``V (N, d_v)``, ``T (N, d_t)`` with correlated columns (float64), and a valid ``k``."""
    d_v, d_t = draw(st.integers(2, max_dim)), draw(st.integers(2, max_dim))
    n = draw(st.integers(max(d_v, d_t) + 2, 80))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)  # noqa: E731
    shared = randn(n, 3)
    V = randn(n, d_v) + shared @ randn(3, d_v)
    T = randn(n, d_t) + shared @ randn(3, d_t)
    k = draw(st.integers(1, min(d_v, d_t)))
    return V, T, k


strengths = st.floats(0.0, 1.0, allow_nan=False)


@SETTINGS
@given(features(), strengths)
def test_theorem5_top_k_singular_values_scale_by_one_minus_lambda_squared(data, strength):
    V, T, k = data
    C = cross_covariance(V, T)
    P_v, P_t, sigma = soft_projectors(C, k, strength)
    C_tilde = cross_covariance(V @ P_v, T @ P_t)  # the cross-covariance of the projected features
    torch.testing.assert_close(C_tilde, P_v.T @ C @ P_t)  # centring commutes with the projection
    expected = torch.cat([sigma[:k] * (1 - strength) ** 2, sigma[k:]])
    after = torch.linalg.svdvals(C_tilde)
    torch.testing.assert_close(after.sort().values, expected.sort().values, atol=1e-9, rtol=1e-7)


@SETTINGS
@given(features(), strengths)
def test_module_history_records_theorem5_spectrum(data, strength):
    V, T, k = data
    proj = CrossModalProjection(V.shape[1], T.shape[1], mode="fixed", k=k, strength=max(strength, 1e-3))
    proj.refresh(V, T, epoch=4)
    [entry] = proj.history
    assert entry["epoch"] == 4 and entry["k"] == k == proj.current_rank
    before = torch.tensor(entry["before"], dtype=torch.float64)
    torch.testing.assert_close(before, torch.linalg.svdvals(cross_covariance(V, T)), atol=1e-5, rtol=1e-4)
    lam = proj.strength
    expected = torch.cat([before[:k] * (1 - lam) ** 2, before[k:]]).sort().values
    scale = float(before.max()) + 1e-12
    after = torch.tensor(entry["after"], dtype=torch.float64).sort().values
    assert torch.allclose(after / scale, expected / scale, atol=1e-4)


@SETTINGS
@given(features())
def test_lambda_zero_is_the_identity(data):
    V, T, k = data
    P_v, P_t, _ = soft_projectors(cross_covariance(V, T), k, 0.0)
    torch.testing.assert_close(P_v, torch.eye(V.shape[1], dtype=V.dtype))
    torch.testing.assert_close(P_t, torch.eye(T.shape[1], dtype=T.dtype))
    proj = CrossModalProjection(V.shape[1], T.shape[1], k=k, strength=0.0)
    assert not proj.active and not proj.maybe_refresh(V, T, epoch=1)
    Vp, Tp = proj(V, T)
    assert Vp is V and Tp is T
    assert proj.history == []


@SETTINGS
@given(features())
def test_lambda_one_removes_the_top_k_directions(data):
    V, T, k = data
    C = cross_covariance(V, T)
    U, _, Wh = torch.linalg.svd(C, full_matrices=False)
    P_v, P_t, _ = soft_projectors(C, k, 1.0)
    scale_v, scale_t = V.abs().max(), T.abs().max()
    assert torch.allclose(V @ P_v @ U[:, :k] / scale_v, torch.zeros(len(V), k, dtype=V.dtype), atol=1e-10)
    assert torch.allclose(T @ P_t @ Wh[:k].T / scale_t, torch.zeros(len(T), k, dtype=T.dtype), atol=1e-10)
    # ... and leaves the orthogonal complement untouched
    torch.testing.assert_close(V @ P_v @ U[:, k:], V @ U[:, k:])


@SETTINGS
@given(
    st.lists(st.floats(0.0, 100.0, allow_nan=False), min_size=1, max_size=20),
    st.floats(0.05, 1.0),
    st.integers(1, 25),
)
def test_dynamic_rank_is_smallest_k_reaching_the_energy_capped(values, energy, cap):
    sigma = torch.tensor(sorted(values, reverse=True), dtype=torch.float64)
    k = energy_rank(sigma, energy, cap)
    sq = sigma**2
    if sq.sum() == 0:
        assert k == 1
        return
    ratios = torch.cumsum(sq, 0) / sq.sum()
    smallest = next(i + 1 for i, r in enumerate(ratios.tolist()) if r >= energy - 1e-12)
    assert k == max(1, min(smallest, cap, len(values)))


def test_dynamic_mode_uses_energy_rank():
    gen = torch.Generator().manual_seed(0)
    shared = torch.randn(500, 2, generator=gen)
    V = 5 * shared @ torch.randn(2, 10, generator=gen) + 0.1 * torch.randn(500, 10, generator=gen)
    T = 5 * shared @ torch.randn(2, 8, generator=gen) + 0.1 * torch.randn(500, 8, generator=gen)
    proj = CrossModalProjection(10, 8, mode="dynamic", k=6, energy=0.95, strength=0.5)
    proj.refresh(V, T, epoch=1)
    assert proj.current_rank == 2  # two planted shared directions carry > 95% of the energy
    capped = CrossModalProjection(10, 8, mode="dynamic", k=1, energy=0.95, strength=0.5)
    capped.refresh(V, T, epoch=1)
    assert capped.current_rank == 1


@pytest.mark.parametrize("tau", [1, 2, 5])
def test_refresh_schedule_epoch_one_and_every_tau(tau):
    proj = CrossModalProjection(6, 5, k=2, strength=0.5, refresh_every=tau)
    gen = torch.Generator().manual_seed(tau)
    refreshed = [
        e
        for e in range(1, 13)
        if proj.maybe_refresh(torch.randn(40, 6, generator=gen), torch.randn(40, 5, generator=gen), epoch=e)
    ]
    assert refreshed == sorted({1} | {e for e in range(1, 13) if e % tau == 0})
    assert [h["epoch"] for h in proj.history] == refreshed


def test_projectors_are_cached_between_refreshes():
    proj = CrossModalProjection(6, 5, k=2, strength=0.7, refresh_every=3)
    gen = torch.Generator().manual_seed(1)
    proj.maybe_refresh(torch.randn(40, 6, generator=gen), torch.randn(40, 5, generator=gen), epoch=1)
    P_v = proj.P_v.clone()
    assert not proj.maybe_refresh(torch.randn(40, 6, generator=gen), torch.randn(40, 5, generator=gen), epoch=2)
    torch.testing.assert_close(proj.P_v, P_v)


def test_gradients_flow_through_the_projection_but_not_into_the_projector():
    gen = torch.Generator().manual_seed(2)
    V = torch.randn(50, 6, generator=gen, requires_grad=True)
    T = torch.randn(50, 5, generator=gen, requires_grad=True)
    proj = CrossModalProjection(6, 5, k=2, strength=0.8)
    proj.maybe_refresh(V, T, epoch=1)  # from features that require grad: must be detached
    assert list(proj.parameters()) == []
    assert not proj.P_v.requires_grad and not proj.P_t.requires_grad
    Vp, Tp = proj(V, T)
    weights = torch.randn(50, 6, generator=gen)
    (Vp * weights).sum().backward()
    torch.testing.assert_close(V.grad, weights @ proj.P_v.T)  # d(V P)/dV, P held constant
    assert proj.P_v.grad is None and T.grad is None


def test_extra_state_round_trips_rank_and_history():
    gen = torch.Generator().manual_seed(3)
    proj = CrossModalProjection(6, 5, k=3, strength=0.6)
    proj.refresh(torch.randn(30, 6, generator=gen), torch.randn(30, 5, generator=gen), epoch=1)
    clone = CrossModalProjection(6, 5, k=3, strength=0.6)
    clone.load_state_dict(proj.state_dict())
    assert clone.current_rank == 3 and clone.history == proj.history
    torch.testing.assert_close(clone.P_v, proj.P_v)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="k=7"):
        CrossModalProjection(6, 5, k=7)
    with pytest.raises(ValueError, match="strength"):
        CrossModalProjection(6, 5, k=2, strength=1.5)


def test_top_directions_of_raw_cross_covariance_span_the_planted_subspace():
    ds, truth = make_synthetic(n_users=200, n_items=1500, d_v=48, d_t=24, planted_rank=4, seed=11, return_truth=True)
    V = torch.as_tensor(ds.image_feat, dtype=torch.float64)
    T = torch.as_tensor(ds.text_feat, dtype=torch.float64)
    U, S, Wh = torch.linalg.svd(cross_covariance(V, T), full_matrices=False)
    r = truth.planted_rank
    image_angles = scipy.linalg.subspace_angles(U[:, :r].numpy(), truth.shared_image_basis)
    text_angles = scipy.linalg.subspace_angles(Wh[:r].T.numpy(), truth.shared_text_basis)
    assert np.max(image_angles) < np.deg2rad(15), np.rad2deg(image_angles)
    assert np.max(text_angles) < np.deg2rad(15), np.rad2deg(text_angles)
    # a random r-dimensional subspace would be far away: the test can fail
    random_basis = np.linalg.qr(np.random.default_rng(0).standard_normal((48, r)))[0]
    assert np.max(scipy.linalg.subspace_angles(random_basis, truth.shared_image_basis)) > np.deg2rad(45)
