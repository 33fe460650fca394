"""The backbone registry: one place that turns a :class:`TrainConfig` into a ready :class:`Recommender`."""

from __future__ import annotations

from typing import Any

from clear_tune.config import TrainConfig
from clear_tune.errors import SpecError
from clear_tune.models._base import ModelContext, Recommender
from clear_tune.models.bpr import BPR
from clear_tune.models.clear import CLEAR
from clear_tune.models.freedom import FREEDOM
from clear_tune.models.lightgcn import LightGCN
from clear_tune.models.vbpr import VBPR

BACKBONES: dict[str, type[Recommender]] = {cls.name: cls for cls in (BPR, LightGCN, VBPR, FREEDOM, CLEAR)}


def register(cls: type[Recommender]) -> type[Recommender]:
    """Add a backbone class to :data:`BACKBONES` under ``cls.name`` (usable as a decorator)."""
    BACKBONES[cls.name] = cls
    return cls


def _backbone_class(name: str) -> type[Recommender]:
    if name not in BACKBONES:
        raise SpecError(f"unknown backbone {name!r}: choose one of {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name]


def backbone_uses_features(name: str) -> bool:
    """Whether backbone ``name`` needs image and text features (and so can take CLEAR's projection)."""
    return _backbone_class(name).uses_features


def _checked_options(cls: type[Recommender], given: dict[str, Any]) -> dict[str, Any]:
    defaults: dict[str, Any] = getattr(cls, "options", {})
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
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise SpecError(
                f"backbone {cls.name!r} model option {key}={value!r} must be a {type(default).__name__} "
                f"like its default {default!r}"
            )
        options[key] = value
    return options


def build_model(config: TrainConfig, ctx: ModelContext) -> Recommender:
    """Build ``config.backbone`` on ``ctx`` (already on its device) and move it there.

    Raises :class:`SpecError` for an unknown backbone or model option, a projection asked of a backbone
    without modalities, or a feature backbone on a dataset without features. Parameter initialisation
    is seeded with ``config.seed`` (the global torch RNG is left as it was).

    Example:
        >>> import torch
        >>> from clear_tune.config import TrainConfig
        >>> from clear_tune.models import build_model
        >>> from clear_tune.models._base import ModelContext
        >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), None, None, torch.device("cpu"))
        >>> cfg = TrainConfig(backbone="lightgcn", projection={"mode": "off"}, emb_dim=8)
        >>> type(build_model(cfg, ctx)).__name__
        'LightGCN'
    """
    import torch

    cls = _backbone_class(config.backbone)
    if not cls.uses_features and config.projection.active:
        feature_backbones = ", ".join(n for n, c in sorted(BACKBONES.items()) if c.uses_features)
        raise SpecError(
            f"backbone {cls.name!r} has no modality features to project: set projection mode: off "
            f"(or strength: 0) for it, or use a feature backbone ({feature_backbones})"
        )
    if cls.uses_features and (ctx.image_feat is None or ctx.text_feat is None):
        raise SpecError(
            f"backbone {cls.name!r} needs image and text features but the dataset has none: use a dataset "
            f"with features (synthetic, semi:..., or mmrec with image_feat.npy/text_feat.npy) or backbone bpr/lightgcn"
        )
    options = _checked_options(cls, config.model_options)
    reg_weight = config.reg_weight if config.reg_weight is not None else cls.default_reg_weight
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        try:
            model = cls(
                ctx, emb_dim=config.emb_dim, reg_weight=reg_weight, projection=config.projection, seed=config.seed,
                **options,
            )
        except ValueError as exc:  # an option value out of range, say dropout=1.5
            raise SpecError(f"backbone {cls.name!r}: {exc}: fix model_options") from None
    return model.to(ctx.device)
