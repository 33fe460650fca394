"""What the trainer reports and checkpoints per member: progress, one epoch's report, the epoch callback.

Example:
    >>> from clear_tune.config import TrainConfig
    >>> from clear_tune.train import MemberProgress
    >>> MemberProgress(TrainConfig()).state()["best_epoch"]
    0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clear_tune.config import TrainConfig
from clear_tune.metrics import Evaluation, metric_names
from clear_tune.records import StopReason

if TYPE_CHECKING:
    from clear_tune.train._trainer import Trainer

# Why a member left the array for good (it is no longer trained); "stopped" and "max_epochs" members stay.
LEFT = tuple(r for r in StopReason if r.left)

OnEpoch = Callable[["Trainer", "EpochReport"], "bool | Collection[int] | None"]


@dataclass
class MemberProgress:
    """How far one member (one trial) has come; all of it is checkpointed."""

    config: TrainConfig
    epochs_run: int = 0
    best_valid: float = -math.inf
    best_epoch: int = 0
    best_metrics: dict[str, dict[str, float]] = field(default_factory=lambda: {"valid": {}, "test": {}})
    # per-user values at the best epoch: {split: {"users": ids, "recall@20": values, ...}} (clear_tune.metrics)
    best_per_user: dict[str, dict[str, Any]] | None = None
    curve: list[dict[str, Any]] = field(default_factory=list)
    spectrum: list[dict[str, Any]] = field(default_factory=list)  # frozen here when the member leaves
    share_s: float = 0.0  # this member's share of the array's train and evaluation seconds
    stop_reason: StopReason | None = None
    failed_reason: str | None = None

    def state(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "config"}

    def record_evaluation(self, epoch: int, loss: float, evaluation: Evaluation) -> dict[str, float]:
        """Add one evaluation to the curve (its ranking metrics); keep it as the best when its valid select metric
        is; early-stop once ``patience`` epochs have passed since the best one (MMRec's ``stopping_step`` counts
        epochs too, whatever ``eval_every`` is), never before ``min_epochs``. Returns the valid metrics."""
        cfg = self.config
        valid, test = evaluation.metrics["valid"], evaluation.metrics["test"]
        self.curve.append({"epoch": epoch, "loss": loss, "valid": {k: valid[k] for k in metric_names(cfg.topk)}})
        if valid[cfg.select_metric] > self.best_valid:
            self.best_valid, self.best_epoch = valid[cfg.select_metric], epoch
            self.best_metrics = {"valid": valid, "test": test}
            self.best_per_user = evaluation.per_user
        if epoch - self.best_epoch >= cfg.patience and epoch >= cfg.min_epochs:
            self.stop_reason = StopReason.EARLY_STOP
        return valid


@dataclass
class MemberEpoch:
    """One member's epoch, as :meth:`Trainer.fit` hands it to ``on_epoch``."""

    member: int  # index into Trainer.members (the order the configs were given)
    loss: float
    valid: dict[str, float] | None  # None when this epoch was not evaluated (or the member failed)
    best_valid: float  # best select_metric so far (-inf before the first evaluation)
    best_epoch: int  # 0 before the first evaluation
    stop_reason: StopReason | None  # set when this epoch ends the member's training


@dataclass
class EpochReport:
    """What :meth:`Trainer.fit` hands its ``on_epoch`` callback after every epoch: one entry per member
    that trained it. The properties give the first such member's numbers (the trial's, for one trial)."""

    epoch: int
    members: list[MemberEpoch]
    sec_train: float
    sec_eval: float | None  # None when this epoch was not evaluated

    @property
    def loss(self) -> float:
        return self.members[0].loss

    @property
    def valid(self) -> dict[str, float] | None:
        return self.members[0].valid

    @property
    def best_valid(self) -> float:
        return self.members[0].best_valid

    @property
    def best_epoch(self) -> int:
        return self.members[0].best_epoch
