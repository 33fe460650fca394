"""The backbone registry: one place that turns trial configs into a ready :class:`Recommender` array."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clear_tune.config import TrainConfig
from clear_tune.errors import SpecError
from clear_tune.models._base import Member, ModelContext, Recommender
from clear_tune.models.bm3 import BM3
from clear_tune.models.bpr import BPR
from clear_tune.models.clear import CLEAR
from clear_tune.models.dualgnn import DualGNN
from clear_tune.models.freedom import FREEDOM
from clear_tune.models.grcn import GRCN
from clear_tune.models.lattice import LATTICE
from clear_tune.models.layergcn import LayerGCN
from clear_tune.models.lightgcn import LightGCN
from clear_tune.models.mmgcn import MMGCN
from clear_tune.models.slmrec import SLMRec
from clear_tune.models.vbpr import VBPR

BACKBONES: dict[str, type[Recommender]] = {cls.name: cls for cls in (BPR, LightGCN, VBPR, FREEDOM, CLEAR, LayerGCN, BM3, LATTICE, SLMRec, DualGNN, MMGCN, GRCN)}


def backbone_class(name: str) -> type[Recommender]:
    """The class registered as ``name``; an unknown name is a one-line :class:`SpecError`."""
    if name not in BACKBONES:
        raise SpecError(f"unknown backbone {name!r}: choose one of {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


def backbone_uses_features(name: str) -> bool:
    """Whether backbone ``name`` needs image and text features (and so can take CLEAR's projection)."""
    return backbone_class(name).uses_features


def checked_options(cls: type[Recommender], given: dict[str, Any]) -> dict[str, Any]:
    """``cls.options`` updated with ``given``; an unknown key or a value of the wrong type is one line."""
    defaults = cls.options
    valid = ", ".join(f"{k} (default {v!r})" for k, v in defaults.items()) or "none"
    options = dict(defaults)
    for key, value in given.items():
        if key not in defaults:
            raise SpecError(f"backbone {cls.name!r} has no model option {key!r}: valid options are {valid}")
        default = defaults[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(default, list):
            ok = isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise SpecError(
                f"backbone {cls.name!r} model option {key}={value!r} must be a {type(default).__name__} "
                f"like its default {default!r}"
            )
        options[key] = value
    return options


def build_model(configs: TrainConfig | Sequence[TrainConfig], ctx: ModelContext) -> Recommender:
    """Build one model array, a member per config, on ``ctx`` (already on its device) and move it there.

    The configs must share everything but their projection and ``reg_weight``
    (:meth:`TrainConfig.fusion_key`). Raises :class:`SpecError` for an unknown backbone or model option,
    a projection asked of a backbone without modalities, or a feature backbone on a dataset without
    features. Parameter initialisation is seeded with the configs' seed (the global torch RNG is left as
    it was), so every member starts where the same config trained alone starts.

    Example:
        >>> import torch
        >>> from clear_tune.config import TrainConfig
        >>> from clear_tune.models import ModelContext, build_model
        >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), None, None, torch.device("cpu"))
        >>> cfg = TrainConfig(backbone="lightgcn", projection={"mode": "off"}, emb_dim=8)
        >>> model = build_model([cfg, cfg.model_copy(update={"reg_weight": 1e-3})], ctx)
        >>> type(model).__name__, model.n_members
        ('LightGCN', 2)
    """
    import torch

    configs = [configs] if isinstance(configs, TrainConfig) else list(configs)
    first = configs[0]
    if any(c.fusion_key() != first.fusion_key() for c in configs[1:]):
        raise ValueError("the members of one model array must differ only in projection and reg_weight")
    cls = backbone_class(first.backbone)
    if not cls.uses_features and any(c.projection.active for c in configs):
        feature_backbones = ", ".join(n for n, c in sorted(BACKBONES.items()) if c.uses_features)
        raise SpecError(
            f"backbone {cls.name!r} has no modality features to project: set projection mode: off "
            f"(or strength: 0) for it, or use a feature backbone ({feature_backbones})"
        )
    if cls.uses_features and (ctx.image_feat is None or ctx.text_feat is None):
        raise SpecError(
            f"backbone {cls.name!r} needs image and text features but the dataset has none: use a dataset "
            f"with features (synthetic, semi:..., or mmrec with image_feat.npy/text_feat.npy) or an "
            f"interaction-only backbone ({', '.join(n for n, c in sorted(BACKBONES.items()) if not c.uses_features)})"
        )
    options = checked_options(cls, first.model_options)
    members = [Member(projection=c.projection,
                      reg_weight=c.reg_weight if c.reg_weight is not None else cls.default_reg_weight)
               for c in configs]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(first.seed)
        try:
            model = cls(ctx, members=members, emb_dim=first.emb_dim, seed=first.seed, **options)
        except ValueError as exc:  # an option value out of range, say dropout=1.5
            raise SpecError(f"backbone {cls.name!r}: {exc}: fix model_options") from None
    return model.to(ctx.device)
