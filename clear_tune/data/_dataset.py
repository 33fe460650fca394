"""The in-memory dataset every other stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

DataKind = Literal["synthetic", "semi-synthetic", "mmrec"]


@dataclass(frozen=True)
class RecDataset:
    """Implicit-feedback interactions split into train/valid/test, plus optional item features.

    Each split is an ``(E, 2)`` int64 array of ``(user, item)`` rows with ids in ``[0, n_users)`` and
    ``[0, n_items)``. ``image_feat`` is ``(n_items, d_v)`` and ``text_feat`` ``(n_items, d_t)``, both
    float32, or ``None`` for interaction-only data. ``provenance`` says where the data came from (kind,
    source path, generator seed and knobs) and is copied into every trial record.

    Example:
        >>> from clear_tune.data import make_synthetic
        >>> ds = make_synthetic(n_users=200, n_items=100, seed=0)
        >>> ds.train.shape[1], ds.image_feat.dtype
        (2, dtype('float32'))
    """

    name: str
    kind: DataKind
    n_users: int
    n_items: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    image_feat: np.ndarray | None = None
    text_feat: np.ndarray | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def has_features(self) -> bool:
        return self.image_feat is not None and self.text_feat is not None

    def stats(self) -> dict[str, Any]:
        """Users, items, interactions per split, sparsity and feature dims, for printing and records."""
        n_inter = len(self.train) + len(self.valid) + len(self.test)
        return {
            "name": self.name,
            "kind": self.kind,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": n_inter,
            "train": len(self.train),
            "valid": len(self.valid),
            "test": len(self.test),
            "sparsity": 1.0 - n_inter / float(self.n_users * self.n_items),
            "d_v": None if self.image_feat is None else int(self.image_feat.shape[1]),
            "d_t": None if self.text_feat is None else int(self.text_feat.shape[1]),
        }

    def describe(self) -> str:
        """One human-readable paragraph, saying plainly when features are generated."""
        s = self.stats()
        note = {
            "synthetic": "synthetic interactions and generated features (not the paper's data)",
            "semi-synthetic": "real interaction graph with generated features (not the paper's real features)",
            "mmrec": "MMRec-format dataset from disk",
        }[self.kind]
        feats = "no features" if s["d_v"] is None else f"d_v={s['d_v']} d_t={s['d_t']}"
        return (
            f"{self.name} [{note}]: {s['users']:,} users, {s['items']:,} items, "
            f"{s['interactions']:,} interactions (train {s['train']:,} / valid {s['valid']:,} / "
            f"test {s['test']:,}), sparsity {s['sparsity']:.4%}, {feats}"
        )
