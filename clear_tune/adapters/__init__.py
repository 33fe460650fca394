"""Models from outside the package as model arrays: plain single-model recommenders and MMRec-API models.

* :class:`SingleModelArray`: a plain ``nn.Module`` recommender (``loss``, ``embeddings`` or ``scores``) trained as
  R copies of itself in one fused group (:mod:`clear_tune.adapters._single`);
* :class:`MMRecTree` / :func:`register_mmrec_tree`: any model of an MMRec-API source tree, run as it is, named
  ``mmrec:NAME`` (:mod:`clear_tune.adapters._mmrec`);
* CLEAR on either where ``clear_at`` names the two encoders (:mod:`clear_tune.adapters._hooks`).

Example:
    >>> from clear_tune.adapters import SingleModelArray
    >>> SingleModelArray.external, SingleModelArray.ranks_by
    (True, 'embeddings')
"""

from __future__ import annotations

from clear_tune.adapters._copies import CopiesArray
from clear_tune.adapters._hooks import ClearHooks
from clear_tune.adapters._mmrec import MMRecConfig, MMRecModelArray, MMRecTree, mmrec_data_folder
from clear_tune.adapters._single import SingleModelArray

__all__ = [
    "ClearHooks",
    "CopiesArray",
    "MMRecConfig",
    "MMRecModelArray",
    "MMRecTree",
    "SingleModelArray",
    "mmrec_data_folder",
    "register_mmrec_tree",
]


def register_mmrec_tree(root: str, *, prefix: str = "mmrec") -> MMRecTree:
    """Make the models of the MMRec-API source tree at ``root`` the backbones ``PREFIX:NAME``."""
    from clear_tune.models._registry import register_family

    tree = MMRecTree(root, prefix=prefix)
    register_family(prefix, tree.backbone)
    return tree
