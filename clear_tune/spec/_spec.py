"""A validated spec and what it expands to: one :class:`TrialPlan` (arm + TrainConfig + stable key) per trial.

Grid search takes the UNION of the arms' cartesian products, deduplicated by EFFECTIVE config: k, λ, ρ
and τ are irrelevant without an active projection, ρ only matters in dynamic mode. Optuna search samples
the same arms through :class:`OptunaSpace` (a picklable define-by-run function).

Example:
    >>> from clear_tune.spec import load_spec
    >>> spec = load_spec("search_spaces/smoke.yaml")  # doctest: +SKIP
    >>> print(spec.table())                             # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clear_tune.config import ProjectionConfig, TrainConfig
from clear_tune.spec._axes import Axis
from clear_tune.spec._schema import SearchSpec


@dataclass(frozen=True)
class TrialPlan:
    """One trial: the arm it came from, its full config and a key stable across ``--resume``."""

    arm: str
    key: str
    config: TrainConfig

    def to_param(self) -> dict[str, Any]:
        """The JSON-able form handed to Ray Tune as one grid point."""
        return {"arm": self.arm, "key": self.key, "config": self.config.model_dump(mode="json")}

    @staticmethod
    def from_param(param: dict[str, Any]) -> TrialPlan:
        return TrialPlan(param["arm"], param["key"], TrainConfig.model_validate(param["config"]))


def effective_projection(p: dict[str, Any]) -> dict[str, Any]:
    """Reset the fields a projection setting ignores, so identical behaviour gets identical configs
    (:meth:`ProjectionConfig.effective`)."""
    return ProjectionConfig(**p).effective().model_dump()


def key_part(text: str) -> str:
    """``text`` safe in a file name and a storage key: ``mmrec:FREEDOM`` -> ``mmrec_FREEDOM``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "_"


def trial_key(arm: str, config: TrainConfig, *, suffix: str = "") -> str:
    """``arm-backbone-mode-k..-l..[-r..]-s<seed>-<hash>``: readable, file-name safe, stable."""
    digest = hashlib.sha1(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:8]
    parts = [arm, key_part(config.backbone), *config.projection.key_parts(), f"s{config.seed}", digest]
    return "-".join(parts) + (f"-{suffix}" if suffix else "")


@dataclass
class Spec:
    """A fully validated search spec (see :func:`clear_tune.spec.load_spec`)."""

    path: Path
    settings: SearchSpec  # the validated YAML: search, scheduler, resources, ...
    trainer: TrainConfig  # trainer overrides applied to TrainConfig's defaults
    arms: dict[str, dict[str, Axis]]
    arm_backbones: dict[str, list[str]]
    arm_presets: dict[str, str | None] = field(default_factory=dict)
    plugins: list[Any] = field(default_factory=list)  # clear_tune._plugins.Plugin: imported on every worker
    warnings: list[str] = field(default_factory=list)  # what a dry run found missing (datasets not there yet)
    _grid: list[TrialPlan] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.settings.experiment

    @property
    def experiment_location(self) -> str:
        """``<results>/<experiment>`` as written (a folder or a storage URI):
        :class:`clear_tune.experiment.Experiment`."""
        from clear_tune.experiment import Experiment

        return str(Experiment.of(self.settings.results, self.settings.experiment).root)

    @property
    def metric(self) -> str:
        return self.trainer.select_metric

    def base_config(self) -> dict[str, Any]:
        """The trainer part every trial shares (JSON-able)."""
        return self.trainer.model_dump(
            mode="json", exclude={"data", "data_options", "backbone", "projection", "seed", "clear_at"}
        )

    def make_config(
        self,
        *,
        data_index: int,
        backbone: str,
        projection: dict[str, Any],
        seed: int,
        preset_point: dict[str, Any] | None = None,
    ) -> TrainConfig:
        """One trial's config; ``preset_point`` is one point of a backbone's preset grid (``reg_weight``,
        ``lr``, model options), applied over the spec's ``trainer`` settings."""
        data = self.settings.data[data_index]
        base = self.base_config()
        for name, value in (preset_point or {}).items():
            if name in ("reg_weight", "lr"):
                base[name] = value
            else:
                base["model_options"] = {**base.get("model_options", {}), name: value}
        return TrainConfig(
            **base,
            data=data.source,
            data_options=data.options,
            backbone=backbone,
            clear_at=self.settings.clear_at.get(backbone),
            projection=ProjectionConfig(**effective_projection(projection)),
            seed=seed,
        )

    def preset_points(self, arm: str, backbone: str) -> list[dict[str, Any]]:
        """The arm's preset grid for ``backbone`` (MMRec's, for ``preset: mmrec``), or one empty point."""
        if self.arm_presets.get(arm) is None:
            return [{}]
        from clear_tune.models import backbone_class
        from clear_tune.spec._grid import product

        return product({name: list(values) for name, values in backbone_class(backbone).mmrec_grid.items()})

    def arm_label(self, arm: str, config: TrainConfig) -> str:
        """The arm named in the spec; without ``arms:`` the ablation arm the config belongs to."""
        if self.settings.arms is not None:
            return arm
        return config.projection.variant

    # -- the grid (spec._grid), fused groups (spec._groups) and the dry run (spec._dryrun), each its own module --
    def grid_trials(self) -> list[TrialPlan]:
        """The deduplicated union of all arms' grids, in spec order (arm, dataset, backbone, axes, seed)."""
        from clear_tune.spec._grid import expand_grid

        if self._grid is None:
            self._grid = expand_grid(self)
        return self._grid

    @property
    def shuffles_grid(self) -> bool:
        from clear_tune.spec._grid import shuffles_grid

        return shuffles_grid(self.settings)

    def run_order(self) -> list[TrialPlan]:
        from clear_tune.spec._grid import run_order

        return run_order(self)

    def fusion_blocker(self) -> str | None:
        from clear_tune.spec._groups import fusion_blocker

        return fusion_blocker(self.settings)

    def max_members(self, datasets: dict[str, Any] | None = None) -> int:
        from clear_tune.spec._groups import members_per_group

        return members_per_group(self, datasets)

    def groups(self, datasets: dict[str, Any] | None = None) -> list[Any]:
        """The grid's trials in launch order, grouped into fused model arrays ([] for an Optuna search)."""
        from clear_tune.spec._groups import group_plans

        if self.settings.search.kind != "grid":
            return []
        return group_plans(self.run_order(), max_members=self.max_members(datasets))

    def table(self) -> str:
        from clear_tune.spec._dryrun import trial_table

        return trial_table(self)

    def fusion_table(self, datasets: dict[str, Any] | None = None) -> str:
        from clear_tune.spec._dryrun import fusion_table

        return fusion_table(self, datasets)

    def expected_trials(self) -> int:
        search = self.settings.search
        if search.kind == "optuna":
            assert search.n_trials is not None  # load_spec requires n_trials for an optuna search
            return search.n_trials
        return len(self.grid_trials())
