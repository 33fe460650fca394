"""The configuration of one trial: everything the trainer needs, nothing else.

A search spec (``clear_tune.spec``) expands into many of these; ``python -m clear_tune.train`` builds one
from flags. Unknown keys are rejected so a typo never silently falls back to a default.

Example:
    >>> from clear_tune.config import TrainConfig
    >>> cfg = TrainConfig(backbone="clear", projection={"k": 4, "strength": 0.9}, epochs=5)
    >>> cfg.projection.mode, cfg.batch_size
    ('fixed', 2048)
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

RankMode = Literal["fixed", "dynamic", "off"]
# The valid metric that early-stops a trial and chooses configs, unless a spec says otherwise.
DEFAULT_SELECT_METRIC = "recall@20"
# What may differ between the members of one fused model array (clear_tune.models.Member).
MEMBER_FIELDS = ("projection", "reg_weight")


class ProjectionConfig(BaseModel):
    """CLEAR's null-space projection (paper Eq. 3-10).

    ``mode="fixed"`` removes the top ``k`` shared directions; ``"dynamic"`` picks at every refresh the
    smallest rank whose cumulative singular-value energy reaches ``energy`` (ρ), capped at ``k``;
    ``"off"`` (or ``strength == 0``) is the "w/o null-space" ablation. ``refresh_every`` is τ.
    """

    model_config = ConfigDict(extra="forbid")

    mode: RankMode = "fixed"
    k: int = Field(8, ge=1)
    strength: float = Field(0.9, ge=0.0, le=1.0)
    energy: float = Field(0.9, gt=0.0, le=1.0)
    refresh_every: int = Field(1, ge=1)

    @property
    def active(self) -> bool:
        return self.mode != "off" and self.strength > 0.0


class TrainConfig(BaseModel):
    """One trial. Defaults are the paper's protocol (MMRec defaults, DESIGN.md §3)."""

    model_config = ConfigDict(extra="forbid")

    # data: "synthetic" | "semi:PATH/TO/name.inter" | "mmrec:ROOT/NAME"
    data: str = "synthetic"
    data_options: dict[str, Any] = Field(default_factory=dict)

    backbone: str = "clear"
    projection: ProjectionConfig = Field(default_factory=ProjectionConfig)
    model_options: dict[str, Any] = Field(default_factory=dict)
    # where CLEAR acts in a model from outside the package (single-model or MMRec-API): the submodules (or weight
    # parameters) whose outputs are the encoded item features, {"image": NAME, "text": NAME} (clear_tune.adapters)
    clear_at: dict[str, str] | None = None

    emb_dim: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    # MMRec's learning_rate_scheduler [factor, step]: epoch e trains with lr · factor^((e-1)/step); None: the
    # backbone's MMRec default ([1.0, 50], a constant lr, for all but LATTICE's [0.96, 50])
    lr_decay: tuple[float, int] | None = None
    reg_weight: float | None = Field(None, ge=0.0)  # None: the backbone's own default
    batch_size: int = Field(2048, ge=1)
    epochs: int = Field(1000, ge=1)
    # stop once this many EPOCHS have passed without a better valid select metric (checked at evaluations)
    patience: int = Field(20, ge=1)
    min_epochs: int = Field(0, ge=0)  # never stop early before this epoch (slow starters)
    eval_every: int = Field(1, ge=1)
    topk: list[int] = Field(default_factory=lambda: [10, 20])
    select_metric: str = DEFAULT_SELECT_METRIC
    eval_batch_users: int = Field(4096, ge=1)

    # MMRec's data loader draws negatives among the items seen in train; "all_items" draws over every item
    negatives: Literal["train_items", "all_items"] = "train_items"

    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = False
    # torch intra-op threads: "auto" (chosen before every epoch from the CPUs other processes leave free,
    # one for tiny batches: clear_tune.train.ThreadGovernor) or a fixed number
    threads: int | Literal["auto"] = "auto"

    def fusion_key(self) -> str:
        """Everything but the settings members of one model array may differ in (:data:`MEMBER_FIELDS`):
        configs with equal keys share data, backbone, seed, batches and negatives, and so can train fused."""
        return json.dumps(self.model_dump(mode="json", exclude=set(MEMBER_FIELDS)), sort_keys=True)

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if not self.topk or any(k < 1 for k in self.topk):
            raise ValueError("topk must be a non-empty list of positive integers")
        metric, _, k = self.select_metric.partition("@")
        if metric not in {"recall", "ndcg", "precision"} or not k.isdigit() or int(k) not in self.topk:
            raise ValueError(f"select_metric {self.select_metric!r} must be recall|ndcg|precision@K with K in topk")
        if self.clear_at is not None and (set(self.clear_at) != {"image", "text"}
                                          or not all(isinstance(v, str) and v for v in self.clear_at.values())):
            raise ValueError(f"clear_at {self.clear_at!r} must name exactly image and text, e.g. "
                             "{image: image_trs, text: text_trs}")
        if isinstance(self.threads, int) and self.threads < 1:
            raise ValueError(f"threads={self.threads} must be >= 1 or 'auto'")
        if self.projection.mode != "off" and self.projection.k >= self.emb_dim:
            raise ValueError(f"projection.k={self.projection.k} must be < emb_dim={self.emb_dim}")
        return self
