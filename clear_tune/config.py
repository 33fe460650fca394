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
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

RankMode = Literal["fixed", "dynamic", "off"]
# The valid metric that early-stops a trial and chooses configs, unless a spec says otherwise.
DEFAULT_SELECT_METRIC = "recall@20"
# What may differ between the members of one fused model array (clear_tune.models.Member).
MEMBER_FIELDS = ("projection", "reg_weight")


class ProjectionConfig(BaseModel):
    """CLEAR's null-space projection (paper Eq. 3-10): the one owner of its defaults, bounds, which fields matter in
    which mode, its ablation variant and its part of a trial key (the spec's axes, the Optuna space and the tables
    derive theirs from here).

    ``mode="fixed"`` removes the top ``k`` shared directions; ``"dynamic"`` picks at every refresh the
    smallest rank whose cumulative singular-value energy reaches ``energy`` (ρ), capped at ``k``;
    ``"off"`` (or ``strength == 0``) is the "w/o null-space" ablation. ``refresh_every`` is τ.

    Example:
        >>> ProjectionConfig(mode="off", k=4).effective() == ProjectionConfig(strength=0.0).effective()
        True
        >>> ProjectionConfig(k=4).variant, ProjectionConfig(k=4).key_parts()
        ('full', ['fixed', 'k4', 'l0.9'])
    """

    model_config = ConfigDict(extra="forbid")

    mode: RankMode = "fixed"
    k: int = Field(8, ge=1)
    strength: float = Field(0.9, ge=0.0, le=1.0)
    energy: float = Field(0.9, gt=0.0, le=1.0)
    refresh_every: int = Field(1, ge=1)

    FIELDS: ClassVar[tuple[str, ...]] = ("mode", "k", "strength", "energy", "refresh_every")
    INTEGER_FIELDS: ClassVar[tuple[str, ...]] = ("k", "refresh_every")

    @property
    def active(self) -> bool:
        return self.mode != "off" and self.strength > 0.0

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field's default, by name."""
        return {name: cls.model_fields[name].default for name in cls.FIELDS}

    @classmethod
    def check_value(cls, field: str, value: Any, *, emb_dim: int) -> Any:
        """``value`` for ``field`` checked against its bounds (and ``k < emb_dim``), normalised (ints for k and τ,
        floats for λ and ρ); ``ValueError`` with what is wrong."""
        if field == "mode":
            if value is False:  # YAML reads a bare `off` as the boolean false
                value = "off"
            if value not in ("fixed", "dynamic", "off"):
                raise ValueError(f"unknown rank mode {value!r}")
            return value
        integer = field in cls.INTEGER_FIELDS
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{value!r} is not {'an integer' if integer else 'a number'}")
        if integer:
            if not float(value).is_integer():
                raise ValueError(f"{value!r} is not an integer")
            value = int(value)
        if field == "k" and not 1 <= value < emb_dim:
            raise ValueError(f"k={value} is outside [1, emb_dim={emb_dim}); use k < {emb_dim} or raise trainer.emb_dim")
        if field == "strength" and not 0.0 <= value <= 1.0:
            raise ValueError(f"strength λ={value:g} is outside [0, 1]")
        if field == "energy" and not 0.0 < value <= 1.0:
            raise ValueError(f"energy ρ={value:g} is outside (0, 1]")
        if field == "refresh_every" and value < 1:
            raise ValueError(f"refresh_every τ={value} must be >= 1")
        return value if integer else float(value)

    @classmethod
    def effective_fields(cls, mode: str) -> tuple[str, ...]:
        """The fields that change what ``mode`` does, besides the mode itself."""
        return () if mode == "off" else ("k", "strength", "refresh_every", *(("energy",) if mode == "dynamic" else ()))

    def effective(self) -> ProjectionConfig:
        """The same behaviour with the fields it ignores at their defaults (so equal behaviour = equal config): without
        an active projection only ``mode: off, strength: 0`` matter; ρ only matters in dynamic mode."""
        if not self.active:
            return ProjectionConfig(**{**self.defaults(), "mode": "off", "strength": 0.0})
        kept = ("mode", *self.effective_fields(self.mode))
        return ProjectionConfig(**{**self.defaults(), **{f: getattr(self, f) for f in kept}})

    @property
    def variant(self) -> str:
        """The ablation role: ``no_projection`` (λ = 0 or off), ``dynamic`` (dynamic ratio) or ``full`` (fixed k)."""
        return "no_projection" if not self.active else ("dynamic" if self.mode == "dynamic" else "full")

    def key_parts(self) -> list[str]:
        """Its part of a trial key: ``mode`` then ``k<k>``, ``l<λ>`` (``r<ρ>`` in dynamic mode, ``t<τ>`` when τ > 1)."""
        parts: list[str] = [self.mode]
        if self.active:
            parts += [f"k{self.k}", f"l{self.strength:g}"]
            if self.mode == "dynamic":
                parts.append(f"r{self.energy:g}")
            if self.refresh_every != 1:
                parts.append(f"t{self.refresh_every}")
        return parts


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
    def _check(self) -> TrainConfig:
        if not self.topk or any(k < 1 for k in self.topk):
            raise ValueError("topk must be a non-empty list of positive integers")
        metric, _, k = self.select_metric.partition("@")
        if metric not in {"recall", "ndcg", "precision"} or not k.isdigit() or int(k) not in self.topk:
            raise ValueError(f"select_metric {self.select_metric!r} must be recall|ndcg|precision@K with K in topk")
        if self.clear_at is not None and (
            set(self.clear_at) != {"image", "text"} or not all(isinstance(v, str) and v for v in self.clear_at.values())
        ):
            raise ValueError(
                f"clear_at {self.clear_at!r} must name exactly image and text, e.g. "
                "{image: image_trs, text: text_trs}"
            )
        if isinstance(self.threads, int) and self.threads < 1:
            raise ValueError(f"threads={self.threads} must be >= 1 or 'auto'")
        if self.projection.mode != "off" and self.projection.k >= self.emb_dim:
            raise ValueError(f"projection.k={self.projection.k} must be < emb_dim={self.emb_dim}")
        return self
