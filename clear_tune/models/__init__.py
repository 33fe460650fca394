"""Backbones: one file each, side by side, behind the :class:`Recommender` interface, built by :func:`build_model`.

The registry is open (:mod:`clear_tune.models._registry`): ``@register_backbone`` in a plugin file or package,
the ``clear_tune.backbones`` entry-point group, or a ``pkg.module:Class`` name; the built-ins register the
same way. A plugin author writes a native model array with the pieces exported here (``Recommender``,
``FeatureBackbone`` for CLEAR, the member layers and the loss terms in ``losses``), or a plain single-model
``nn.Module`` (:mod:`clear_tune.adapters`), and checks it with :func:`clear_tune.testing.check_backbone`.

Every backbone is a model array (a leading member axis on every parameter, one member per trial), so
one code path trains a single trial and a fused group of trials (:mod:`clear_tune.models._base`). Shared
pieces live in shared modules, never in another backbone: member layers (``_layers``), loss terms
(``_losses``), CLEAR's insertion point (``_features``) and the per-dataset graphs (``_graph_cache``).

Example:
    >>> from clear_tune.models import BACKBONES, backbone_uses_features
    >>> "clear" in BACKBONES, backbone_uses_features("lightgcn")
    (True, False)
"""

from clear_tune.models import _losses as losses
from clear_tune.models._base import Member, ModelContext, Recommender
from clear_tune.models._features import FeatureBackbone
from clear_tune.models._layers import MemberEmbedding, MemberLinear, MemberMLP, init_matrix, stack_members
from clear_tune.models._options import Option, backbone_options
from clear_tune.models._registry import (
    BACKBONES,
    ENTRY_POINT_GROUP,
    backbone_class,
    backbone_uses_features,
    build_model,
    register_backbone,
    register_family,
    registered_backbones,
)
from clear_tune.models.bm3 import BM3
from clear_tune.models.bpr import BPR
from clear_tune.models.clear import CLEAR
from clear_tune.models.dragon import DRAGON
from clear_tune.models.dualgnn import DualGNN
from clear_tune.models.freedom import FREEDOM
from clear_tune.models.grcn import GRCN
from clear_tune.models.lattice import LATTICE
from clear_tune.models.layergcn import LayerGCN
from clear_tune.models.lgmrec import LGMRec
from clear_tune.models.lightgcn import LightGCN
from clear_tune.models.mentor import MENTOR
from clear_tune.models.mgcn import MGCN
from clear_tune.models.mmgcn import MMGCN
from clear_tune.models.mmssl import MMSSL
from clear_tune.models.slmrec import SLMRec
from clear_tune.models.smore import SMORE
from clear_tune.models.vbpr import VBPR

__all__ = [
    "BACKBONES",
    "ENTRY_POINT_GROUP",
    "BM3",
    "BPR",
    "CLEAR",
    "DRAGON",
    "DualGNN",
    "FREEDOM",
    "FeatureBackbone",
    "GRCN",
    "LayerGCN",
    "LGMRec",
    "LATTICE",
    "LightGCN",
    "Member",
    "MemberEmbedding",
    "MemberLinear",
    "MemberMLP",
    "MENTOR",
    "MGCN",
    "MMGCN",
    "MMSSL",
    "ModelContext",
    "Option",
    "Recommender",
    "SLMRec",
    "SMORE",
    "VBPR",
    "backbone_class",
    "backbone_options",
    "backbone_uses_features",
    "build_model",
    "init_matrix",
    "losses",
    "register_backbone",
    "register_family",
    "registered_backbones",
    "stack_members",
]
