"""The YAML search spec as pydantic models: what a user may write, with types, ranges and defaults.

Every model forbids unknown keys with a did-you-mean, so a typo such as ``epoch:`` for ``epochs:`` is a
one-line error instead of a silently ignored setting. Semantic checks that need the whole spec (k < emb
dim, backbones that take a projection, dataset paths) live in :mod:`clear_tune.spec._load`.

Example:
    >>> from clear_tune.spec._schema import SearchSpec
    >>> spec = SearchSpec.model_validate({"experiment": "demo", "arms": {"full": {"k": [2, 4]}}})
    >>> spec.search.kind, spec.arms["full"].k
    ('grid', [2, 4])
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SEARCH_KINDS = ("grid", "optuna")
GRID_ORDERS = ("auto", "listed", "shuffled")  # auto: shuffled when a scheduler prunes, else listed
# spec name -> optuna.samplers class (clear_tune.tune.make_sampler builds it): the one list of samplers
SAMPLERS = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "cmaes": "CmaEsSampler",
    "qmc": "QMCSampler",
    "gp": "GPSampler",
}
RAY_SCHEDULERS = (
    "fifo",  # no pruning: every trial runs until early stopping / max epochs
    "asha",  # Ray Tune's AsyncHyperBandScheduler
    "hyperband",  # Ray Tune's HyperBandScheduler
)
OPTUNA_PRUNERS = (  # Optuna's pruners, run through clear_tune.tune.OptunaPrunerScheduler
    "median",  # MedianPruner
    "percentile",  # PercentilePruner
    "successive_halving",  # SuccessiveHalvingPruner
    "optuna_hyperband",  # HyperbandPruner
    "wilcoxon",  # WilcoxonPruner
)
SCHEDULERS = RAY_SCHEDULERS + OPTUNA_PRUNERS
RANK_MODES = ("fixed", "dynamic", "off")


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """``"; did you mean 'x'?"`` for the closest choice, or the list of valid choices."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return "valid: " + ", ".join(map(str, choices))


class _Strict(BaseModel):
    """Base: unknown keys are an error with a did-you-mean (pydantic's own message has none)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            fields = list(cls.model_fields)
            for key in data:
                if key not in fields:
                    raise ValueError(f"unknown key {key!r}; {did_you_mean(key, fields)}")
        return data


class Range(_Strict):
    """A numeric range: inclusive ``[low, high]``; grid search walks it with ``step``, Optuna samples it."""

    low: float
    high: float
    step: float | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low={self.low:g} is above high={self.high:g}; swap them")
        return self


# What a user writes for an axis of the projection space: one value, a list of values, or a
# ``{low, high, step}`` range. Parsed into a typed ``_axes.Axis`` (per-field types and bounds) by
# ``_axes.parse_axis`` so errors name the exact key.
AxisValue = Any


PRESETS = ("mmrec",)  # mmrec: each backbone's published MMRec grid (its yaml's hyper_parameters)


class ArmSpec(_Strict):
    """One named sub-space. Unset fields inherit from the spec's top-level ``projection`` block.

    ``preset: mmrec`` crosses the arm with each of its backbones' MMRec grid (``Recommender.mmrec_grid``:
    ``reg_weight``, ``lr`` and model options over the values MMRec searches), so baselines are tuned the way
    MMRec tunes them and chosen by validation."""

    mode: AxisValue | None = None
    k: AxisValue | None = None
    strength: AxisValue | None = None
    energy: AxisValue | None = None
    refresh_every: AxisValue | None = None
    backbones: list[str] | None = None
    preset: str | None = None

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str | None) -> str | None:
        return None if v is None else _choice(v, PRESETS)


class DataSpec(_Strict):
    """A dataset: ``synthetic`` | ``semi:PATH/TO/name.inter`` | ``mmrec:ROOT/NAME`` plus loader options."""

    source: str = "synthetic"
    options: dict[str, Any] = Field(default_factory=dict)


class SearchAlgSpec(_Strict):
    """How configurations are chosen: the full grid, or Optuna (TPE by default) for ``n_trials``."""

    kind: str = "grid"
    n_trials: int | None = Field(None, ge=1)
    sampler: str = "tpe"
    seed: int | None = 0
    order: str = "auto"  # grid launch order; see Spec.run_order

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        return _choice(v, SEARCH_KINDS)

    @field_validator("order")
    @classmethod
    def _order(cls, v: str) -> str:
        return _choice(v, GRID_ORDERS)

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, v: str) -> str:
        return _choice(v, tuple(SAMPLERS))


class SchedulerSpec(_Strict):
    """Early stopping of bad trials. Time is measured in epochs (the trainer's evaluation epochs)."""

    kind: str = "fifo"
    grace_period: int = Field(5, ge=1)  # epochs before a trial may be stopped (ASHA/HyperBand/warm-up)
    reduction_factor: float = Field(3.0, gt=1.0)  # ASHA, HyperBand, successive halving
    max_t: int | None = Field(None, ge=1)  # default: trainer.epochs
    n_startup_trials: int = Field(5, ge=0)  # median/percentile: trials finished before pruning starts
    interval_steps: int = Field(1, ge=1)
    percentile: float = Field(25.0, gt=0.0, lt=100.0)  # percentile pruner: keep trials above this
    p_threshold: float = Field(0.1, gt=0.0, lt=1.0)  # wilcoxon

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        return _choice(v, SCHEDULERS)


class FusionSpec(_Strict):
    """Fused trials: compatible trials train together as one model array in one Ray trial
    (``clear_tune.spec._groups``)."""

    enabled: bool = True
    max_members: int | str = "auto"  # an integer >= 1, or "auto": sized from the device

    @field_validator("max_members")
    @classmethod
    def _members(cls, v: int | str) -> int | str:
        if isinstance(v, bool) or (isinstance(v, str) and v != "auto") or (isinstance(v, int) and v < 1):
            raise ValueError(f"{v!r} is neither an integer >= 1 nor 'auto'")
        return v


class ResourcesSpec(_Strict):
    """Per trial: CPUs and a FRACTION of a GPU (0.25 lets four small trials share one GPU)."""

    cpus: float = Field(1.0, gt=0.0)
    gpus: float = Field(0.0, ge=0.0)


WANDB_MODES = ("online", "offline", "disabled")


class WandbSpec(_Strict):
    """Weights & Biases: one run per trial in ``project`` (``mode`` unset: W&B's own, ``$WANDB_MODE``)."""

    project: str = Field(min_length=1)
    entity: str | None = None
    group: str | None = None  # W&B's run group; default: the experiment name
    mode: str | None = None

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str | None) -> str | None:
        return None if v is None else _choice(v, WANDB_MODES)


class TrackingSpec(_Strict):
    """Experiment tracking through Ray Tune's logger callbacks (:mod:`clear_tune.tune._tracking`): one MLflow
    and/or W&B run per trial; ``tensorboard: false`` drops Ray's TensorBoard event files (CSV/JSON stay)."""

    mlflow: str | None = Field(None, min_length=1)  # tracking URI: sqlite:///PATH/mlflow.db, http://HOST:5000, ...
    wandb: WandbSpec | None = None
    tensorboard: bool = True


class SearchSpec(_Strict):
    """The whole YAML file."""

    experiment: str
    description: str | None = None
    results: str = "results"
    data: list[DataSpec] = Field(default_factory=lambda: [DataSpec()], min_length=1)
    # files, modules and MMRec-API source trees to import first (clear_tune._plugins): FILE.py | pkg.module |
    # {mmrec: PATH, prefix: NAME}
    plugins: list[str | dict[str, str]] = Field(default_factory=list)
    backbones: list[str] = Field(default_factory=lambda: ["clear"], min_length=1)
    # per backbone from outside the package: the two submodules (or weight parameters) where CLEAR acts
    clear_at: dict[str, dict[str, str]] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    trainer: dict[str, Any] = Field(default_factory=dict)
    projection: ArmSpec = Field(default_factory=ArmSpec)
    arms: dict[str, ArmSpec] | None = None
    search: SearchAlgSpec = Field(default_factory=SearchAlgSpec)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    fusion: FusionSpec = Field(default_factory=FusionSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    max_concurrent: int = Field(1, ge=1)
    max_failures: int = Field(1, ge=-1)  # infrastructure retries per trial (-1: unlimited)
    checkpoints_to_keep: int = Field(2, ge=1)
    checkpoint_every: int = Field(1, ge=1)  # evaluations between trial checkpoints (1: exact resume point)
    # ... and at least this many seconds since the last one (0: every `checkpoint_every` evaluations). Bounds
    # the checkpoint overhead of fast trials; a preempted trial loses at most this much work.
    checkpoint_interval_s: float = Field(10.0, ge=0.0)

    @field_validator("experiment")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v):
            raise ValueError(f"{v!r} is not a folder-safe name; use letters, digits, '_', '-', '.'")
        return v

    @field_validator("arms")
    @classmethod
    def _arm_names(cls, v: dict[str, ArmSpec] | None) -> dict[str, ArmSpec] | None:
        if v is not None:
            if not v:
                raise ValueError("no arms listed; list at least one or remove 'arms'")
            for name in v:
                if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_]*", name):
                    raise ValueError(f"arm name {name!r} must be letters, digits and '_'")
        return v

    @field_validator("data", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, dict) else v


def _choice(value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"unknown value {value!r}; {did_you_mean(value, choices)}")
    return value
