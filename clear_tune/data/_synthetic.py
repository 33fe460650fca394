"""The embedded default dataset: synthetic interactions with planted cross-modal redundancy.

Interactions come from a latent-factor model with long-tailed activity and popularity: user ``u``
picks ``deg_u`` distinct items with probability ∝ ``pop_i · exp(β ⟨p_u, z_i⟩)`` (sampled without
replacement by the Gumbel-top-k trick, in chunks of users). ``deg_u`` is log-normal (at least 3) and
``pop_i`` log-normal, so both user and item degrees are long-tailed like Amazon review data. Each
user's items are split at random about 8:1:1 into train/valid/test with at least one valid and one
test item. Item features follow :func:`~clear_tune.data._features.plant_features`: a high-energy
shared component that carries no preference signal, and complementary halves of ``z_i`` per modality.

Example:
    >>> from clear_tune.data import make_synthetic
    >>> ds, truth = make_synthetic(n_users=300, n_items=200, d_v=32, d_t=16, seed=0, return_truth=True)
    >>> ds.kind, ds.image_feat.shape, truth.shared_image_basis.shape
    ('synthetic', (200, 32), (32, 4))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clear_tune.data._dataset import RecDataset
from clear_tune.data._features import plant_features
from clear_tune.errors import DataError

MIN_DEGREE = 3  # one train, one valid, one test item at least


@dataclass(frozen=True)
class SyntheticTruth:
    """What was planted: the shared bases in raw feature space and the preference latent."""

    shared_image_basis: np.ndarray  # (d_v, r) orthonormal
    shared_text_basis: np.ndarray  # (d_t, r) orthonormal
    shared_component: np.ndarray  # (n_items, r)
    item_pref: np.ndarray  # (n_items, pref_dim): the latent that generated the interactions
    user_pref: np.ndarray | None  # (n_users, pref_dim); None for semi-synthetic data
    image_pref_dims: np.ndarray  # principal components of item_pref given to the image features
    text_pref_dims: np.ndarray  # ... and to the text features (the complementary half)
    planted_rank: int


def split_per_user(users: np.ndarray, items: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Random per-user ~8:1:1 split with >= 1 valid and >= 1 test item (needs >= 3 items per user).

    Returns ``(train, valid, test)`` as ``(E, 2)`` int64 arrays.
    """
    order = np.lexsort((rng.random(len(users)), users))  # users grouped, random order inside each
    users, items = users[order], items[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    counts = np.diff(np.r_[starts, len(users)])
    position = np.arange(len(users)) - np.repeat(starts, counts)  # 0.. deg_u-1 within each user
    n_held = np.maximum(1, np.rint(0.1 * counts)).astype(np.int64)  # per split
    held = np.repeat(n_held, counts)
    pairs = np.column_stack([users, items]).astype(np.int64)
    is_test = position < held
    is_valid = (position >= held) & (position < 2 * held)
    is_train = ~(is_test | is_valid)
    return pairs[is_train], pairs[is_valid], pairs[is_test]


def _sample_interactions(
    user_pref: np.ndarray,
    item_pref: np.ndarray,
    log_pop: np.ndarray,
    degrees: np.ndarray,
    *,
    pref_strength: float,
    seed: int,
    chunk_users: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """Each user draws ``degrees[u]`` distinct items ∝ pop · exp(β⟨p_u, z_i⟩) (Gumbel-top-k, in chunks)."""
    import torch  # imported here so `python -m clear_tune.data` starts fast for loading and downloading

    gen = torch.Generator().manual_seed(seed)
    P = torch.from_numpy(user_pref.astype(np.float32))  # (M, p)
    Z = torch.from_numpy(item_pref.astype(np.float32))  # (N, p)
    bias = torch.from_numpy(log_pop.astype(np.float32))  # (N,)
    deg = torch.from_numpy(degrees)
    users_out, items_out = [], []
    for start in range(0, len(P), chunk_users):
        stop = min(start + chunk_users, len(P))
        keys = torch.addmm(bias, P[start:stop], Z.T, alpha=pref_strength)  # (B, N) logits
        # Gumbel-top-k in place: -log(E) with E ~ Exp(1) is a standard Gumbel draw.
        keys.sub_(torch.empty_like(keys).exponential_(generator=gen).log_())
        chunk_deg = deg[start:stop]
        top = torch.topk(keys, int(chunk_deg.max()), dim=1).indices  # (B, max_deg), best first
        keep = torch.arange(top.shape[1]) < chunk_deg[:, None]  # first deg_u of each row
        rows = torch.arange(start, stop)[:, None].expand_as(top)
        users_out.append(rows[keep])
        items_out.append(top[keep])
    return torch.cat(users_out).numpy(), torch.cat(items_out).numpy()


def make_synthetic(
    *,
    n_users: int = 2000,
    n_items: int = 1000,
    d_v: int = 256,
    d_t: int = 64,
    planted_rank: int = 4,
    pref_dim: int = 16,
    mean_degree: float = 12.0,
    shared_energy: float = 8.0,
    noise: float = 0.5,
    pref_strength: float = 2.5,
    degree_sigma: float = 0.9,
    popularity_sigma: float = 1.0,
    feature_offset: float = 3.0,
    seed: int = 0,
    return_truth: bool = False,
) -> RecDataset | tuple[RecDataset, SyntheticTruth]:
    """Generate the built-in synthetic dataset (deterministic for ``seed``).

    ``shared_energy`` and ``noise`` are total variances relative to each modality's preference part;
    ``pref_strength`` (β) sets how strongly the latent drives choices versus popularity;
    ``degree_sigma`` and ``popularity_sigma`` are the log-normal spreads of user activity and item
    popularity (the long tails). ``feature_offset`` adds a positive mean per feature coordinate (like
    post-ReLU CNN features; no effect on any covariance). With ``return_truth`` also returns a
    :class:`SyntheticTruth`.

    Defaults were tuned with ``benchmarks/bench_quality.py`` so that CLEAR with k = ``planted_rank``,
    λ = 0.9 beats λ = 0 on the ``clear`` backbone (BENCHMARKS.md, "Quality sanity"): the shared
    component holds 8x the preference energy, and the offset keeps the MLP encoders' hidden units in a
    stable regime so the shared part stays in a rank-r subspace after encoding, where the projection
    can remove it. A whole early-stopped trial of ``clear`` takes seconds to a minute on one CPU core.
    """
    if n_users < 1 or n_items < 2 * MIN_DEGREE:
        raise DataError(f"n_users={n_users}, n_items={n_items}: need >= 1 user and >= {2 * MIN_DEGREE} items")
    if mean_degree < MIN_DEGREE:
        raise DataError(f"mean_degree={mean_degree} must be >= {MIN_DEGREE} (one train, valid and test item per user)")
    rng = np.random.default_rng([seed, 0x5EED])

    # Latents with unit-variance inner products: ⟨p_u, z_i⟩ ~ N(0, 1).
    user_pref = rng.standard_normal((n_users, pref_dim)) / pref_dim**0.25
    item_pref = rng.standard_normal((n_items, pref_dim)) / pref_dim**0.25

    # Long tails: log-normal activity (mean = mean_degree, min 3) and log-normal popularity.
    extra = rng.lognormal(-(degree_sigma**2) / 2, degree_sigma, n_users) * (mean_degree - MIN_DEGREE)
    degrees = np.minimum(MIN_DEGREE + np.rint(extra), n_items // 2).astype(np.int64)
    log_pop = rng.normal(0.0, popularity_sigma, n_items)

    users, items = _sample_interactions(
        user_pref, item_pref, log_pop, degrees, pref_strength=pref_strength, seed=int(rng.integers(2**31))
    )
    train, valid, test = split_per_user(users, items, rng)

    planted = plant_features(
        item_pref,
        d_v=d_v,
        d_t=d_t,
        planted_rank=planted_rank,
        shared_energy=shared_energy,
        noise=noise,
        seed=seed,
        offset=feature_offset,
    )
    knobs = dict(
        n_users=n_users, n_items=n_items, d_v=d_v, d_t=d_t, planted_rank=planted_rank, pref_dim=pref_dim,
        mean_degree=mean_degree, shared_energy=shared_energy, noise=noise, pref_strength=pref_strength,
        degree_sigma=degree_sigma, popularity_sigma=popularity_sigma, feature_offset=feature_offset,
    )  # fmt: skip
    dataset = RecDataset(
        name="synthetic",
        kind="synthetic",
        n_users=n_users,
        n_items=n_items,
        train=train,
        valid=valid,
        test=test,
        image_feat=planted.image,
        text_feat=planted.text,
        provenance={"kind": "synthetic", "source": "generated", "seed": seed, **knobs},
    )
    if not return_truth:
        return dataset
    truth = SyntheticTruth(
        shared_image_basis=planted.shared_image_basis,
        shared_text_basis=planted.shared_text_basis,
        shared_component=planted.shared_component,
        item_pref=item_pref,
        user_pref=user_pref,
        image_pref_dims=planted.image_pref_dims,
        text_pref_dims=planted.text_pref_dims,
        planted_rank=planted_rank,
    )
    return dataset, truth
