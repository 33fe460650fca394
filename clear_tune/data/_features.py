"""Item features with PLANTED cross-modal redundancy, shared by the synthetic and semi-synthetic data.

For ``N`` items with a preference latent ``Z (N, p)`` (the latent that generated, or explains, the
interactions) we write::

    image = S A_vᵀ + Z_v B_vᵀ + noise      (N, d_v)
    text  = S A_tᵀ + Z_t B_tᵀ + noise      (N, d_t)

* ``S (N, r)`` is a shared component of rank ``r`` with HIGH energy, exactly uncorrelated with ``Z``
  (it carries no preference signal at all);
* ``Z_v`` and ``Z_t`` are COMPLEMENTARY halves of ``Z``'s principal components (image gets the even
  ones, text the odd ones), so each modality alone sees only half of what users care about;
* ``A_v (d_v, r)``, ``B_v (d_v, p_v)`` are orthonormal and mutually orthogonal (likewise for text), so
  removing the shared directions removes no preference information.

Because ``S ⊥ Z`` and ``Z_v ⊥ Z_t`` exactly, the centred cross-covariance ``(1/N) V̄ᵀT̄`` is
``A_v diag(σ²) A_tᵀ`` plus noise: its top-``r`` singular directions ARE the planted shared bases, while
the variance that matters for ranking lives elsewhere. That is precisely the situation CLEAR's
null-space projection is designed for. Features are scaled to unit mean per-coordinate variance so
Xavier-initialised encoders see sensible magnitudes, and ``offset`` adds a positive mean per coordinate
(like post-ReLU CNN features), which no covariance sees but which keeps an MLP encoder's hidden units
in a stable regime, so the shared part stays (nearly) rank r after encoding.

Example:
    >>> import numpy as np
    >>> from clear_tune.data._features import plant_features
    >>> Z = np.random.default_rng(0).normal(size=(300, 8))
    >>> planted = plant_features(Z, d_v=32, d_t=16, planted_rank=2, shared_energy=8.0, noise=0.5, seed=0)
    >>> planted.image.shape, planted.text.shape, planted.image.dtype
    ((300, 32), (300, 16), dtype('float32'))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clear_tune.errors import DataError


@dataclass(frozen=True)
class PlantedFeatures:
    """Generated features plus the ground truth that was planted in them."""

    image: np.ndarray  # (N, d_v) float32
    text: np.ndarray  # (N, d_t) float32
    shared_image_basis: np.ndarray  # (d_v, r) orthonormal
    shared_text_basis: np.ndarray  # (d_t, r) orthonormal
    shared_component: np.ndarray  # (N, r): S, column j has variance shared_weights[j]
    shared_weights: np.ndarray  # (r,) variances of S's columns (sum = shared_energy)
    image_pref_dims: np.ndarray  # indices into the principal components of Z given to image
    text_pref_dims: np.ndarray  # ... and to text (complementary)


def _orthonormal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A random ``(rows, cols)`` matrix with orthonormal columns (Haar-distributed via QR)."""
    q, r = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q * np.sign(np.diag(r))  # fix the sign convention so the draw is deterministic and uniform


def _principal_components(Z: np.ndarray) -> np.ndarray:
    """``Z`` centred and rotated onto its principal axes: columns exactly uncorrelated, variance decreasing."""
    Zc = Z - Z.mean(axis=0, keepdims=True)
    U, s, _ = np.linalg.svd(Zc, full_matrices=False)
    return U * s  # (N, p)


def plant_features(
    item_pref: np.ndarray,
    *,
    d_v: int,
    d_t: int,
    planted_rank: int,
    shared_energy: float,
    noise: float,
    seed: int,
    shared_decay: float = 0.5,
    offset: float = 0.0,
) -> PlantedFeatures:
    """Generate ``(image, text)`` for items with preference latent ``item_pref (N, p)``.

    Energies are total variances relative to the preference part of each modality (which has total
    variance 1): ``shared_energy`` for ``S`` (split over its ``r`` columns geometrically from 1 down to
    ``shared_decay`` so the planted singular values are distinct) and ``noise`` for isotropic noise;
    ``offset`` scales the per-coordinate positive mean ``offset · |g_j|``, ``g_j ~ N(0, 1)``.
    """
    n_items, p = item_pref.shape
    r = planted_rank
    p_v, p_t = (p + 1) // 2, p // 2
    if r < 1 or p < 2:
        raise DataError(f"planted_rank={r} and pref_dim={p} must be >= 1 and >= 2; pass larger values")
    if d_v < r + p_v or d_t < r + p_t:
        raise DataError(
            f"feature dims d_v={d_v}, d_t={d_t} are too small for planted_rank={r} + half of pref_dim={p}; "
            f"use d_v >= {r + p_v} and d_t >= {r + p_t}"
        )
    if n_items <= r + p:
        raise DataError(f"{n_items} items are too few for planted_rank={r} + pref_dim={p}; use more items")
    if shared_energy < 0 or noise < 0:
        raise DataError(f"shared_energy={shared_energy} and noise={noise} must be >= 0")
    rng = np.random.default_rng([seed, 0xC1EA7])

    # Preference part: principal components of Z, total variance 1 per modality after the split.
    Z = _principal_components(np.asarray(item_pref, dtype=np.float64))  # (N, p)
    image_dims, text_dims = np.arange(0, p, 2), np.arange(1, p, 2)
    Z_v, Z_t = Z[:, image_dims], Z[:, text_dims]
    Z_v = Z_v / np.sqrt(Z_v.var(axis=0).sum() + 1e-12)
    Z_t = Z_t / np.sqrt(Z_t.var(axis=0).sum() + 1e-12)

    # Shared part: r columns orthogonal to the constant, to Z and to each other (exactly), then scaled.
    basis = np.column_stack([np.ones(n_items), Z, rng.standard_normal((n_items, r))])
    q, _ = np.linalg.qr(basis)
    S_unit = q[:, 1 + p :] * np.sqrt(n_items)  # (N, r), each column mean 0, variance 1, ⊥ Z
    decay = shared_decay ** (np.arange(r) / max(r - 1, 1))
    weights = shared_energy * decay / decay.sum()  # (r,) variances
    S = S_unit * np.sqrt(weights)

    # Orthonormal, mutually orthogonal bases in each raw feature space.
    Q_v, Q_t = _orthonormal(rng, d_v, r + p_v), _orthonormal(rng, d_t, r + p_t)
    A_v, B_v = Q_v[:, :r], Q_v[:, r:]  # (d_v, r), (d_v, p_v)
    A_t, B_t = Q_t[:, :r], Q_t[:, r:]  # (d_t, r), (d_t, p_t)

    def modality(A: np.ndarray, Zm: np.ndarray, B: np.ndarray, d: int) -> np.ndarray:
        # Unit mean per-coordinate variance: scale = sqrt(d / total variance).
        scale = np.sqrt(d / (shared_energy + 1.0 + noise))
        latent = np.column_stack([S, Zm]).astype(np.float32)  # (N, r + p_m)
        loading = (np.column_stack([A, B]) * scale).astype(np.float32)  # (d, r + p_m)
        X = rng.standard_normal((n_items, d), dtype=np.float32)  # noise first, then add in place
        X *= np.float32(scale * np.sqrt(noise / d))
        X += latent @ loading.T  # (N, d)
        if offset:  # a positive mean per coordinate, like post-ReLU CNN features; invisible to covariances
            X += np.abs(rng.standard_normal(d)).astype(np.float32) * np.float32(offset)
        return X

    return PlantedFeatures(
        image=modality(A_v, Z_v, B_v, d_v),
        text=modality(A_t, Z_t, B_t, d_t),
        shared_image_basis=A_v,
        shared_text_basis=A_t,
        shared_component=S,
        shared_weights=weights,
        image_pref_dims=image_dims,
        text_pref_dims=text_dims,
    )
