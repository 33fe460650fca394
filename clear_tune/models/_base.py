"""The interface every backbone implements: a model ARRAY of ``R`` members trained together.

A backbone is an ``nn.Module`` built from a :class:`ModelContext` (the train graph and features already
on a device) and a list of :class:`Member` settings. Members share the data, the backbone, its options
and the seed, so they share every batch, negative and dropout mask; they differ only in CLEAR's
projection settings and the L2 weight. One trial is an array of one member; a fused group of trials is
an array of several (:mod:`clear_tune.spec._groups`). Every parameter and buffer carries the member axis
first, so :meth:`Recommender.keep_members` can drop members without knowing the backbone.

Per epoch the trainer calls ``start_epoch(epoch)`` once (edge dropout, the CLEAR projection refresh),
then ``loss(users, pos, neg)`` per mini-batch, which returns one loss per member ``(R,)``, and
``embeddings()`` under ``torch.no_grad()`` for full-ranking evaluation: member ``m`` scores
``user_emb[m] @ item_emb[m].T``.

Example:
    >>> import torch
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.models import ModelContext, build_model
    >>> ctx = ModelContext(3, 4, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), None, None, torch.device("cpu"))
    >>> model = build_model(TrainConfig(backbone="bpr", projection={"mode": "off"}, emb_dim=8), ctx)
    >>> model.loss(torch.tensor([0]), torch.tensor([1]), torch.tensor([0])).shape   # one loss per member
    torch.Size([1])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import torch
from torch import nn

from clear_tune.config import ProjectionConfig
from clear_tune.models._options import Option, backbone_options, check_options
from clear_tune.projection import CrossModalProjection, ProjectionArray


@dataclass
class ModelContext:
    """What a backbone is built from: the train graph and features as tensors on ``device``.

    ``train_users``/``train_items`` are ``(E,)`` int64 tensors of the train interactions.
    ``image_feat``/``text_feat`` are ``(n_items, d_v)``/``(n_items, d_t)`` float32 or ``None``.
    ``cache`` is a per-dataset dict where backbones memoise graphs built once (normalised adjacency,
    kNN item graphs) so trials on the same dataset in one process do not rebuild them.
    """

    n_users: int
    n_items: int
    train_users: torch.Tensor
    train_items: torch.Tensor
    image_feat: torch.Tensor | None
    text_feat: torch.Tensor | None
    device: torch.device
    cache: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Member:
    """What may differ between the members of one array: CLEAR's projection and the L2 weight."""

    projection: ProjectionConfig
    reg_weight: float


class Recommender(nn.Module):
    """Base class. Subclasses set the class attributes below and implement ``loss`` and ``embeddings``.

    The backbone's ``model_options`` are the keyword-only parameters of its constructor after ``members``,
    ``emb_dim`` and ``seed``, with their defaults (MMRec's names and values): :meth:`model_options` reads
    them from the signature, so each is written once. ``mmrec_grid`` is MMRec's published search grid for the
    backbone (its yaml's ``hyper_parameters`` with their value lists, keyed by clear-tune's names: ``reg_weight``,
    ``lr`` or a model option);
    ``lr_decay`` is the backbone's MMRec ``learning_rate_scheduler`` ``(factor, step)``.
    """

    name: ClassVar[str]
    uses_features: ClassVar[bool] = False
    default_reg_weight: ClassVar[float] = 1e-4
    mmrec_grid: ClassVar[dict[str, list[Any]]] = {}
    # MMRec's learning_rate_scheduler default: constant (a class default; an MMRec-API array sets its own per instance)
    lr_decay: tuple[float, int] = (1.0, 50)
    # the trainer's Adam applies a model's ``weight_decay`` attribute (if any) as L2 in the gradient, or, when this
    # is True, decoupled as AdamW does (a backbone whose reference trains with AdamW: MMSSL)
    decoupled_weight_decay: ClassVar[bool] = False
    # models from outside (single-model, MMRec-API): built with the trial's TrainConfig, CLEAR where ``clear_at``
    # names their encoders
    external: ClassVar[bool] = False
    # how evaluation ranks: from ``embeddings()`` (inner products) or from ``member_scores`` (a score function)
    ranks_by: ClassVar[str] = "embeddings"
    reg_weight: torch.Tensor  # (R,) buffer: each member's L2 weight

    @classmethod
    def model_options(cls) -> dict[str, Option]:
        """The backbone's options by name (default and type), read from the constructor's signature."""
        return backbone_options(cls)

    @classmethod
    def check_options(cls, given: dict[str, Any]) -> dict[str, Any]:
        """``given`` model options, checked: an unknown name or a wrong type is one :class:`SpecError` line."""
        return check_options(cls.name, cls.model_options(), given)

    @classmethod
    def no_projection_hint(cls) -> str:
        """How to fix a spec that asks this backbone (without modalities) for a projection."""
        return "set projection mode: off (or strength: 0) for it, or use a feature backbone"

    def __init__(self, ctx: ModelContext, *, members: Sequence[Member]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a model array needs at least one member")
        self.members = list(members)
        self.register_buffer("reg_weight", torch.tensor([m.reg_weight for m in self.members]))  # (R,)
        self.projection: ProjectionArray | None = None

    @property
    def n_members(self) -> int:
        return len(self.members)

    def start_epoch(self, epoch: int) -> None:
        """Called once before each training epoch (epochs count from 1)."""

    def end_epoch(self, epoch: int) -> None:
        """Called once after each training epoch (a learning-rate schedule, say)."""

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """``(R,)`` training losses for a mini-batch of ``(B,)`` user, positive item and negative item ids."""
        raise NotImplementedError

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final ``(R, n_users, D)`` and ``(R, n_items, D)`` embeddings for evaluation; score = inner product."""
        raise NotImplementedError

    def member_scores(self, member: int, users: torch.Tensor) -> torch.Tensor:
        """``(B, n_items)`` scores of member ``member`` for ``(B,)`` users (models with ``ranks_by = "scores"``)."""
        raise NotImplementedError

    def spectrum_history(self, member: int = 0) -> list[dict[str, Any]]:
        """Singular values of the cross-covariance before/after projection at every refresh of ``member``."""
        if self.projection is None:
            return []
        return list(cast(CrossModalProjection, self.projection.members[member]).history)

    def keep_members(self, index: Sequence[int]) -> None:
        """Compact the array to the members at ``index`` (in that order), in place.

        Every parameter and buffer is sliced along its leading member axis; the projection array keeps
        its own members. The optimizer must be rebuilt afterwards (the trainer does, keeping each kept
        member's Adam state).
        """
        index = list(index)
        arrays = [m for m in self.modules() if isinstance(m, ProjectionArray)]
        own_members = {id(m) for array in arrays for m in array.modules()}
        for array in arrays:
            array.keep(index)
        for module in self.modules():
            if id(module) in own_members:
                continue
            for name, param in list(module._parameters.items()):
                if param is not None:
                    module._parameters[name] = nn.Parameter(
                        param.detach()[index].clone(), requires_grad=param.requires_grad
                    )
            for name, buffer in list(module._buffers.items()):
                if buffer is not None:
                    module._buffers[name] = buffer[index].clone()
        self.members = [self.members[i] for i in index]
