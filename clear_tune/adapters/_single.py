"""The single-model API: a plain PyTorch recommender, one model, no member axis, searched like any backbone.

Write an ``nn.Module`` whose constructor takes the :class:`~clear_tune.models.ModelContext` (train graph and
features on the device) and keyword options with defaults (``emb_dim`` and ``reg_weight`` are passed when the
signature names them), with

* ``loss(users, pos, neg) -> scalar`` for a mini-batch of ``(B,)`` ids (one negative per positive);
* ``embeddings() -> (users (n_users, D), items (n_items, D))`` (score = inner product), or
  ``scores(users) -> (B, n_items)`` for any other score function;
* optionally ``start_epoch(epoch)`` / ``end_epoch(epoch)``, and class attributes ``uses_features``,
  ``clear_at = {"image": ..., "text": ...}`` (its encoders, where CLEAR acts), ``default_reg_weight``.

Register it (``@clear_tune.register_backbone``) and it trains as R copies in one fused group
(:class:`~clear_tune.adapters._copies.CopiesArray`): records, pruning, resume and fusion work unchanged, and
each member ends where the same trial trained alone ends.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from clear_tune.adapters import SingleModelArray
    >>> class MF(nn.Module):
    ...     def __init__(self, ctx, *, emb_dim: int = 8, reg_weight: float = 0.0):
    ...         super().__init__()
    ...         self.users, self.items = nn.Embedding(ctx.n_users, emb_dim), nn.Embedding(ctx.n_items, emb_dim)
    ...     def loss(self, users, pos, neg):
    ...         u = self.users(users)
    ...         return -torch.nn.functional.logsigmoid((u * (self.items(pos) - self.items(neg))).sum(1)).mean()
    ...     def embeddings(self):
    ...         return self.users.weight, self.items.weight
    >>> SingleModelArray.wrap(MF, "mf").ranks_by
    'embeddings'
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch import nn

from clear_tune.adapters._copies import CopiesArray
from clear_tune.errors import TrainingError
from clear_tune.models._base import Member, ModelContext
from clear_tune.models._options import Option, backbone_options


class SingleModelArray(CopiesArray):
    """R copies of one single-model recommender class (``model_class``) as a model array; see the module docstring."""

    model_class: ClassVar[type[nn.Module]]

    @classmethod
    def wrap(cls, model_class: type[nn.Module], name: str) -> type[SingleModelArray]:
        """The model-array class for ``model_class``, registered as ``name``."""
        scores_only = not callable(getattr(model_class, "embeddings", None))
        attributes = {
            "name": name,
            "model_class": model_class,
            "__module__": model_class.__module__,
            "__qualname__": f"SingleModelArray[{model_class.__qualname__}]",
            "__doc__": model_class.__doc__,
            "uses_features": bool(getattr(model_class, "uses_features", False)),
            "default_reg_weight": float(getattr(model_class, "default_reg_weight", 1e-4)),
            "default_clear_at": getattr(model_class, "clear_at", None),
            "mmrec_grid": dict(getattr(model_class, "mmrec_grid", {})),
            "ranks_by": "scores" if scores_only else "embeddings",
        }
        return type(f"{model_class.__name__}Array", (cls,), attributes)

    @classmethod
    def model_options(cls) -> dict[str, Option]:
        return backbone_options(cls.model_class)

    def build_copy(
        self, ctx: ModelContext, member: Member, *, emb_dim: int, seed: int, options: dict[str, Any]
    ) -> nn.Module:
        accepted = inspect.signature(self.model_class).parameters
        given = {"emb_dim": emb_dim, "reg_weight": member.reg_weight, "seed": seed}
        kwargs = {**{k: v for k, v in given.items() if k in accepted}, **options}
        return self.model_class(ctx, **kwargs).to(ctx.device)

    def probe_calls(self) -> list[tuple[str, tuple[Any, ...]]]:
        if self.ranks_by == "embeddings":
            return [("embeddings", ())]
        return [("scores", (torch.zeros(1, dtype=torch.long, device=self.reg_weight.device),))]

    # ------------------------------------------------------------------------------------ the interface
    def start_epoch(self, epoch: int) -> None:
        if self.has_method("start_epoch"):
            self.call_members("start_epoch", epoch)
        self.refresh_projection(epoch)

    def end_epoch(self, epoch: int) -> None:
        if self.has_method("end_epoch"):
            self.call_members("end_epoch", epoch)

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        losses = self.call_members("loss", users, pos, neg)
        for value in losses:
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                raise TrainingError(
                    f"backbone {self.name!r}: loss() must return one scalar tensor, got "
                    f"{type(value).__name__} {tuple(getattr(value, 'shape', ()))}"
                )
        return torch.stack([value.reshape(()) for value in losses])  # (R,)

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = self.call_members("embeddings")
        return torch.stack([u for u, _ in pairs]), torch.stack([i for _, i in pairs])  # (R, n, D) each

    def member_scores(self, member: int, users: torch.Tensor) -> torch.Tensor:
        return self.call_member(member, "scores", users)  # (B, n_items)
