"""Backbones: one file each, all behind the :class:`Recommender` interface, built by :func:`build_model`.

Example:
    >>> from clear_tune.models import BACKBONES, backbone_uses_features
    >>> sorted(BACKBONES)[:2], backbone_uses_features("lightgcn")
    (['bpr', 'clear'], False)
"""

from clear_tune.models._base import ModelContext, Recommender
from clear_tune.models._registry import BACKBONES, backbone_uses_features, build_model, register
from clear_tune.models.bpr import BPR
from clear_tune.models.clear import CLEAR
from clear_tune.models.freedom import FREEDOM
from clear_tune.models.lightgcn import LightGCN
from clear_tune.models.vbpr import VBPR

__all__ = [
    "BACKBONES",
    "BPR",
    "CLEAR",
    "FREEDOM",
    "LightGCN",
    "VBPR",
    "ModelContext",
    "Recommender",
    "backbone_uses_features",
    "build_model",
    "register",
]
