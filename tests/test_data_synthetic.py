"""Synthetic and semi-synthetic generators: determinism, long tails, splits, planted structure."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.linalg import subspace_angles

from clear_tune.data import cached_dataset, clear_dataset_cache, load_dataset, make_semi_synthetic, make_synthetic
from clear_tune.errors import DataError

SMALL = dict(n_users=400, n_items=300, d_v=48, d_t=24, pref_dim=8, planted_rank=3)


def _all_pairs(ds):
    return np.concatenate([ds.train, ds.valid, ds.test])


def centred_cross_cov(image: np.ndarray, text: np.ndarray) -> np.ndarray:
    V = image - image.mean(0)
    T = text - text.mean(0)
    return V.T.astype(np.float64) @ T.astype(np.float64) / len(V)


def test_deterministic_for_a_seed_and_different_for_another():
    a, b, c = make_synthetic(**SMALL, seed=3), make_synthetic(**SMALL, seed=3), make_synthetic(**SMALL, seed=4)
    for split in ("train", "valid", "test", "image_feat", "text_feat"):
        np.testing.assert_array_equal(getattr(a, split), getattr(b, split))
    assert not np.array_equal(a.image_feat, c.image_feat)
    assert len(a.train) != len(c.train) or not np.array_equal(a.train, c.train)


def test_shapes_dtypes_and_provenance():
    ds = make_synthetic(**SMALL, seed=0)
    assert ds.kind == "synthetic" and ds.has_features
    assert ds.image_feat.shape == (300, 48) and ds.text_feat.shape == (300, 24)
    assert ds.image_feat.dtype == np.float32 and ds.train.dtype == np.int64
    pairs = _all_pairs(ds)
    assert pairs[:, 0].min() >= 0 and pairs[:, 0].max() < ds.n_users
    assert pairs[:, 1].min() >= 0 and pairs[:, 1].max() < ds.n_items
    assert ds.provenance["seed"] == 0 and ds.provenance["planted_rank"] == 3
    # Features are standardised: mean per-coordinate variance about 1.
    assert 0.8 < ds.image_feat.var(0).mean() < 1.2 and 0.8 < ds.text_feat.var(0).mean() < 1.2
    # A positive mean per coordinate (feature_offset, like post-ReLU features) that covariances never see.
    assert (ds.image_feat.mean(0) > 0).mean() > 0.9 and ds.image_feat.mean() > 1.5
    flat = make_synthetic(**SMALL, seed=0, feature_offset=0.0)
    assert abs(flat.image_feat.mean()) < 0.1
    np.testing.assert_allclose(
        flat.image_feat - flat.image_feat.mean(0), ds.image_feat - ds.image_feat.mean(0), atol=1e-4
    )


def test_every_user_has_train_valid_test_about_8_1_1_and_no_duplicates():
    ds = make_synthetic(n_users=1000, n_items=500, d_v=32, d_t=16, pref_dim=8, seed=1)
    for split in (ds.train, ds.valid, ds.test):
        assert set(np.unique(split[:, 0])) == set(range(ds.n_users))
    pairs = _all_pairs(ds)
    keys = pairs[:, 0] * ds.n_items + pairs[:, 1]
    assert len(np.unique(keys)) == len(keys), "a user-item pair appears twice"
    share = len(ds.train) / len(pairs)
    assert 0.7 < share < 0.85, share
    assert np.bincount(pairs[:, 0]).min() >= 3


def test_long_tailed_degrees():
    ds = make_synthetic(n_users=2000, n_items=1000, d_v=32, d_t=16, seed=0)
    pairs = _all_pairs(ds)
    user_deg = np.bincount(pairs[:, 0])
    item_deg = np.bincount(pairs[:, 1], minlength=ds.n_items)
    assert user_deg.max() >= 8 * np.median(user_deg)
    assert item_deg.max() >= 8 * np.median(item_deg)
    assert abs(user_deg.mean() - 12) < 1.5  # mean_degree default


def test_planted_shared_subspace_is_the_top_cross_covariance_directions():
    r = 4
    ds, truth = make_synthetic(n_users=500, n_items=1500, d_v=128, d_t=48, planted_rank=r, seed=2, return_truth=True)
    assert truth.shared_image_basis.shape == (128, r) and truth.shared_text_basis.shape == (48, r)
    np.testing.assert_allclose(truth.shared_image_basis.T @ truth.shared_image_basis, np.eye(r), atol=1e-10)
    U, s, Wh = np.linalg.svd(centred_cross_cov(ds.image_feat, ds.text_feat))
    assert np.rad2deg(subspace_angles(U[:, :r], truth.shared_image_basis)).max() < 5
    assert np.rad2deg(subspace_angles(Wh[:r].T, truth.shared_text_basis)).max() < 5
    assert s[r - 1] > 5 * s[r], "the shared directions must dominate the cross-covariance"
    # ...and carry no preference signal: the shared component is uncorrelated with the item latent.
    S, Z = truth.shared_component, truth.item_pref
    corr = (S - S.mean(0)).T @ (Z - Z.mean(0)) / len(S)
    assert np.abs(corr).max() < 1e-8
    # Complementary halves: image and text get disjoint principal components of the latent.
    assert not set(truth.image_pref_dims) & set(truth.text_pref_dims)
    assert len(truth.image_pref_dims) + len(truth.text_pref_dims) == Z.shape[1]


def test_preference_signal_lives_in_the_complement_of_the_shared_directions():
    """Projecting out the planted shared basis keeps all of the item latent that the image features carry."""
    ds, truth = make_synthetic(n_users=300, n_items=800, d_v=64, d_t=32, pref_dim=8, seed=5, noise=0.05,
                               return_truth=True)  # fmt: skip
    A = truth.shared_image_basis
    V = ds.image_feat - ds.image_feat.mean(0)
    V_null = V - (V @ A) @ A.T  # remove the shared directions exactly
    Z = truth.item_pref - truth.item_pref.mean(0)
    # Image features explain the latent's even principal components; that survives the projection.
    coef, *_ = np.linalg.lstsq(V_null, Z, rcond=None)
    explained = 1 - ((Z - V_null @ coef) ** 2).sum() / (Z**2).sum()
    assert 0.35 < explained < 0.65  # about half the latent (one of two complementary halves)
    coef_both, *_ = np.linalg.lstsq(np.hstack([V_null, ds.text_feat - ds.text_feat.mean(0)]), Z, rcond=None)
    both = 1 - ((Z - np.hstack([V_null, ds.text_feat - ds.text_feat.mean(0)]) @ coef_both) ** 2).sum() / (Z**2).sum()
    assert both > 0.95  # image + text together carry the whole latent


def test_bad_generator_options():
    with pytest.raises(DataError, match=r"^feature dims d_v=4, d_t=64 are too small for planted_rank=4"):
        make_synthetic(n_users=50, n_items=50, d_v=4)
    with pytest.raises(DataError, match=r"^mean_degree=2 must be >= 3"):
        make_synthetic(mean_degree=2)


def test_load_dataset_parses_sources_and_options():
    ds = load_dataset("synthetic", n_users="150", n_items=80, d_v=16, d_t=12, pref_dim="8", shared_energy="4")
    assert ds.n_users == 150 and ds.provenance["shared_energy"] == 4.0
    with pytest.raises(DataError) as err:
        load_dataset("synthetic", bogus=1)
    assert str(err.value).startswith("unknown data option(s) bogus for 'synthetic'; valid options: d_t, d_v,")
    with pytest.raises(DataError) as err:
        load_dataset("synthetic", n_users="many")
    assert str(err.value) == "data option n_users='many' for 'synthetic' must be an integer"
    with pytest.raises(DataError) as err:
        load_dataset("csv:foo")
    assert str(err.value) == (
        'data source \'csv:foo\' is not understood; use "synthetic", "semi:PATH/TO/name.inter" or "mmrec:ROOT/NAME"'
    )
    with pytest.raises(DataError, match=r"^unknown data option\(s\) seed for 'mmrec:x/y'; valid options: none$"):
        load_dataset("mmrec:x/y", seed=1)
    with pytest.raises(DataError, match=r"interaction file not found"):
        load_dataset("semi:/nonexistent/baby.inter")


def test_cached_dataset_builds_once_per_key():
    clear_dataset_cache()
    opts = {"n_users": 120, "n_items": 70, "d_v": 16, "d_t": 12, "pref_dim": 8}
    first = cached_dataset("synthetic", opts)
    assert cached_dataset("synthetic", dict(reversed(list(opts.items())))) is first
    assert cached_dataset("synthetic", {**opts, "seed": 1}) is not first
    clear_dataset_cache()
    assert cached_dataset("synthetic", opts) is not first


def test_semi_synthetic_keeps_a_graph_and_plants_features(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["userID\titemID\tx_label"]
    for u in range(200):
        items = rng.choice(120, size=6, replace=False)
        rows += [f"{u}\t{i}\t{[0, 0, 0, 0, 1, 2][j]}" for j, i in enumerate(items)]
    rows.append("200\t5\t1")  # a user with no train interactions: dropped
    rows.append("200\t6\t2")
    path = tmp_path / "toy.inter"
    path.write_text("\n".join(rows) + "\n")
    ds, truth = make_semi_synthetic(path, d_v=40, d_t=20, pref_dim=8, planted_rank=2, return_truth=True)
    again = make_semi_synthetic(path, d_v=40, d_t=20, pref_dim=8, planted_rank=2)
    np.testing.assert_array_equal(ds.image_feat, again.image_feat)
    assert ds.kind == "semi-synthetic" and ds.name == "toy"
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (800, 200, 200)
    assert ds.image_feat.shape == (120, 40) and truth.item_pref.shape == (120, 8)
    U, _, Wh = np.linalg.svd(centred_cross_cov(ds.image_feat, ds.text_feat))
    assert np.rad2deg(subspace_angles(U[:, :2], truth.shared_image_basis)).max() < 10
    assert ds.provenance["features"] == "generated"


@pytest.mark.real_data
def test_semi_synthetic_on_real_baby(amazon_dir):
    start = time.perf_counter()
    ds, truth = make_semi_synthetic(amazon_dir / "baby" / "baby.inter", return_truth=True)
    seconds = time.perf_counter() - start
    print(f"make_semi_synthetic(baby) took {seconds:.2f} s")
    assert (ds.n_users, ds.n_items) == (19_445, 7_050)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (118_551, 20_559, 21_682)
    assert ds.image_feat.shape == (7_050, 4096) and ds.text_feat.shape == (7_050, 384)
    assert ds.image_feat.dtype == np.float32 and np.isfinite(ds.image_feat).all()
    U, _, Wh = np.linalg.svd(centred_cross_cov(ds.image_feat, ds.text_feat), full_matrices=False)
    assert np.rad2deg(subspace_angles(U[:, :4], truth.shared_image_basis)).max() < 5
    assert np.rad2deg(subspace_angles(Wh[:4].T, truth.shared_text_basis)).max() < 5
    assert seconds < 30
