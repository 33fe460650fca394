"""Semi-synthetic data: a REAL interaction graph and splits with generated, planted features.

The item preference latent is the graph's own: the top ``pref_dim`` left singular vectors (scaled by
their singular values) of the item x user TRAIN matrix, from a truncated sparse SVD. Valid and test
interactions never enter the features, so they leak nothing. Features of the real dimensions are then
planted exactly as for the synthetic data (:func:`~clear_tune.data._features.plant_features`): a
high-energy shared component with no preference signal, plus complementary halves of the latent.

Example:
    >>> import tempfile, pathlib
    >>> from clear_tune.data import make_semi_synthetic
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "toy.inter"
    >>> rows = ["userID\\titemID\\tx_label"] + [
    ...     f"{u}\\t{(u + j) % 40}\\t{min(j, 2)}" for u in range(60) for j in range(5)
    ... ]
    >>> _ = path.write_text("\\n".join(rows) + "\\n")
    >>> ds = make_semi_synthetic(path, d_v=32, d_t=16, pref_dim=8)
    >>> ds.kind, ds.n_items, ds.image_feat.shape
    ('semi-synthetic', 40, (40, 32))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from clear_tune.data._dataset import RecDataset
from clear_tune.data._features import plant_features
from clear_tune.data._mmrec import drop_users_without_train, read_inter
from clear_tune.data._synthetic import SyntheticTruth
from clear_tune.errors import DataError


def graph_latent(train: np.ndarray, n_users: int, n_items: int, *, dim: int, seed: int) -> np.ndarray:
    """Item latent ``(n_items, dim)`` = top-``dim`` SVD of the item x user train matrix, ``U Σ``."""
    if dim >= min(n_users, n_items):
        raise DataError(
            f"pref_dim={dim} must be smaller than min(users, items)={min(n_users, n_items)}; lower pref_dim"
        )
    matrix = sp.csr_matrix(
        (np.ones(len(train), dtype=np.float64), (train[:, 1], train[:, 0])), shape=(n_items, n_users)
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0  # implicit feedback: repeated pairs count once
    v0 = np.random.default_rng([seed, 0x5E1]).standard_normal(min(matrix.shape))  # deterministic start vector
    U, s, _ = svds(matrix, k=dim, v0=v0, random_state=seed)
    order = np.argsort(-s)
    return U[:, order] * s[order]


def make_semi_synthetic(
    inter_path: str | Path,
    *,
    d_v: int = 4096,
    d_t: int = 384,
    planted_rank: int = 4,
    pref_dim: int = 16,
    shared_energy: float = 8.0,
    noise: float = 0.5,
    feature_offset: float = 3.0,
    seed: int = 0,
    return_truth: bool = False,
) -> RecDataset | tuple[RecDataset, SyntheticTruth]:
    """Keep the real graph of ``inter_path`` (an MMRec ``.inter`` file) and generate planted features.

    ``shared_energy``, ``noise`` and ``feature_offset`` mean the same as in :func:`make_synthetic`. Users without train
    interactions are dropped from valid/test like :func:`load_mmrec`. With ``return_truth`` also returns
    a :class:`SyntheticTruth` (``user_pref`` is ``None``: real users have no planted latent).
    """
    inter_path = Path(inter_path)
    users, items, labels = read_inter(inter_path)
    pairs = np.column_stack([users, items])
    train = pairs[labels == 0]
    valid = drop_users_without_train(train, pairs[labels == 1])
    test = drop_users_without_train(train, pairs[labels == 2])
    if len(train) == 0 or len(valid) == 0 or len(test) == 0:
        raise DataError(f"{inter_path}: needs non-empty train, valid and test splits (x_label 0, 1, 2); fix the file")
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1

    item_pref = graph_latent(train, n_users, n_items, dim=pref_dim, seed=seed)
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
    name = inter_path.stem
    dataset = RecDataset(
        name=name,
        kind="semi-synthetic",
        n_users=n_users,
        n_items=n_items,
        train=train,
        valid=valid,
        test=test,
        image_feat=planted.image,
        text_feat=planted.text,
        provenance={
            "kind": "semi-synthetic",
            "source": str(inter_path.resolve()),
            "features": "generated",
            "seed": seed,
            "d_v": d_v,
            "d_t": d_t,
            "planted_rank": planted_rank,
            "pref_dim": pref_dim,
            "shared_energy": shared_energy,
            "noise": noise,
            "feature_offset": feature_offset,
        },
    )
    if not return_truth:
        return dataset
    return dataset, SyntheticTruth(
        shared_image_basis=planted.shared_image_basis,
        shared_text_basis=planted.shared_text_basis,
        shared_component=planted.shared_component,
        item_pref=item_pref,
        user_pref=None,
        image_pref_dims=planted.image_pref_dims,
        text_pref_dims=planted.text_pref_dims,
        planted_rank=planted_rank,
    )
