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
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clear_tune.config import ProjectionConfig, TrainConfig
from clear_tune.spec._axes import DEFAULTS, Axis, grid_values
from clear_tune.spec._schema import SearchSpec

def known_backbones() -> dict[str, bool]:
    """``{name: uses_features}`` for every backbone the spec may name (the model registry's)."""
    from clear_tune.models import BACKBONES

    return {name: bool(cls.uses_features) for name, cls in BACKBONES.items()}


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
    def from_param(param: dict[str, Any]) -> "TrialPlan":
        return TrialPlan(param["arm"], param["key"], TrainConfig.model_validate(param["config"]))


def effective_projection(p: dict[str, Any]) -> dict[str, Any]:
    """Reset the fields a projection setting ignores, so identical behaviour gets identical configs."""
    p = dict(p)
    if p["mode"] == "off" or p["strength"] == 0:
        return {**{f: DEFAULTS[f] for f in ("k", "energy", "refresh_every")}, "mode": "off", "strength": 0.0}
    if p["mode"] == "fixed":
        p["energy"] = DEFAULTS["energy"]
    return p


def trial_key(arm: str, config: TrainConfig, *, suffix: str = "") -> str:
    """``arm-backbone-mode-k..-l..[-r..]-s<seed>-<hash>``: readable, file-name safe, stable."""
    pj = config.projection
    digest = hashlib.sha1(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:8]
    parts = [arm, config.backbone, pj.mode]
    if pj.active:
        parts += [f"k{pj.k}", f"l{pj.strength:g}"]
        if pj.mode == "dynamic":
            parts.append(f"r{pj.energy:g}")
        if pj.refresh_every != 1:
            parts.append(f"t{pj.refresh_every}")
    parts += [f"s{config.seed}", digest]
    return "-".join(parts) + (f"-{suffix}" if suffix else "")


@dataclass
class Spec:
    """A fully validated search spec (see :func:`clear_tune.spec.load_spec`)."""

    path: Path
    settings: SearchSpec  # the validated YAML: search, scheduler, resources, ...
    trainer: TrainConfig  # trainer overrides applied to TrainConfig's defaults
    arms: dict[str, dict[str, Axis]]
    arm_backbones: dict[str, list[str]]
    _grid: list[TrialPlan] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.settings.experiment

    @property
    def experiment_location(self) -> str:
        """``<results>/<experiment>`` as written (a folder or a storage URI): :class:`clear_tune.experiment.Experiment`."""
        from clear_tune.experiment import Experiment

        return str(Experiment.of(self.settings.results, self.settings.experiment).root)

    @property
    def metric(self) -> str:
        return self.trainer.select_metric

    def base_config(self) -> dict[str, Any]:
        """The trainer part every trial shares (JSON-able)."""
        return self.trainer.model_dump(mode="json", exclude={"data", "data_options", "backbone", "projection", "seed"})

    def make_config(self, *, data_index: int, backbone: str, projection: dict[str, Any], seed: int) -> TrainConfig:
        data = self.settings.data[data_index]
        return TrainConfig(
            **self.base_config(),
            data=data.source,
            data_options=data.options,
            backbone=backbone,
            projection=ProjectionConfig(**effective_projection(projection)),
            seed=seed,
        )

    def arm_label(self, arm: str, config: TrainConfig) -> str:
        """The arm named in the spec; without ``arms:`` the ablation arm the config belongs to."""
        if self.settings.arms is not None:
            return arm
        pj = config.projection
        return "no_projection" if not pj.active else ("dynamic" if pj.mode == "dynamic" else "full")

    def grid_trials(self) -> list[TrialPlan]:
        """The deduplicated union of all arms' grids, in spec order (arm, dataset, backbone, axes, seed)."""
        if self._grid is not None:
            return self._grid
        seen: set[str] = set()
        plans: list[TrialPlan] = []
        for arm, axes in self.arms.items():
            where = f"arms.{arm}" if self.settings.arms else "projection"
            values = {f: grid_values(a, f"{where}.{f}") for f, a in axes.items()}
            for data_index in range(len(self.settings.data)):
                for backbone in self.arm_backbones[arm]:
                    for point in _product(values):
                        for seed in self.settings.seeds:
                            cfg = self.make_config(data_index=data_index, backbone=backbone, projection=point, seed=seed)
                            identity = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
                            if identity not in seen:
                                seen.add(identity)
                                label = self.arm_label(arm, cfg)
                                plans.append(TrialPlan(label, trial_key(label, cfg), cfg))
        self._grid = plans
        return plans

    @property
    def shuffles_grid(self) -> bool:
        """Whether the grid runs shuffled: ``search.order``, where ``auto`` shuffles when a scheduler prunes."""
        order = self.settings.search.order
        return order == "shuffled" or (order == "auto" and self.settings.scheduler.kind != "fifo")

    def run_order(self) -> list[TrialPlan]:
        """The grid trials in launch order: as listed, or shuffled with ``search.seed`` (:attr:`shuffles_grid`).

        ASHA and the Optuna pruners judge a trial against the trials that reached the same epoch before it.
        In listed order those are one corner of the space (the smallest k, the first arm), so the early
        cut-offs are unrepresentative and too many trials go on: on the paper's grid x 3 seeds ASHA trained
        about 50% of the full grid's epochs in listed order and about 30% shuffled (BENCHMARKS.md).
        """
        plans = list(self.grid_trials())
        if self.shuffles_grid:
            random.Random(self.settings.search.seed or 0).shuffle(plans)
        return plans

    def expected_trials(self) -> int:
        return self.settings.search.n_trials if self.settings.search.kind == "optuna" else len(self.grid_trials())

    def table(self) -> str:
        """The dry-run table: one row per trial plus the count after deduplication."""
        if self.settings.search.kind == "optuna":
            return self._optuna_summary()
        header = ("#", "arm", "backbone", "dataset", "k", "λ", "mode", "ρ", "τ", "seed")
        rows = [header]
        for i, plan in enumerate(self.run_order(), 1):
            cfg, pj = plan.config, plan.config.projection
            on = pj.active
            rows.append((
                str(i), plan.arm, cfg.backbone, _data_label(cfg.data),
                str(pj.k) if on else "-", f"{pj.strength:g}" if on else "0",
                pj.mode, f"{pj.energy:g}" if on and pj.mode == "dynamic" else "-",
                str(pj.refresh_every) if on else "-", str(cfg.seed),
            ))
        widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        n_raw = self._raw_count()
        lines.append(f"{len(rows) - 1} trials after deduplication ({n_raw} before) in {len(self.arms)} arm(s)")
        if self.shuffles_grid:
            lines.append(f"run in shuffled order (search.seed {self.settings.search.seed or 0}) so that the "
                         f"{self.settings.scheduler.kind} scheduler compares each trial with a fair sample of the grid; "
                         "'search: {order: listed}' keeps the listed order")
        return "\n".join(lines)

    def _raw_count(self) -> int:
        total = 0
        for arm, axes in self.arms.items():
            n = len(self.settings.data) * len(self.arm_backbones[arm]) * len(self.settings.seeds)
            for f, a in axes.items():
                n *= len(grid_values(a, f))
            total += n
        return total

    def _optuna_summary(self) -> str:
        s = self.settings.search
        lines = [f"optuna search: {s.n_trials} trials, sampler {s.sampler} (seed {s.seed}), seed(s) per config: "
                 f"{self.settings.seeds[0]} (the first listed seed)"]
        for arm, axes in self.arms.items():
            desc = ", ".join(f"{f}={_axis_text(a)}" for f, a in axes.items())
            lines.append(f"  arm {arm}: backbones {self.arm_backbones[arm]}; {desc}")
        lines.append(f"{s.n_trials} trials")
        return "\n".join(lines)


def _product(values: dict[str, list[Any]]) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = [{}]
    for f, vals in values.items():
        points = [{**p, f: v} for p in points for v in vals]
    return points


def _data_label(source: str) -> str:
    return source if source == "synthetic" else Path(source.partition(":")[2]).stem


def _axis_text(axis: Axis) -> str:
    if axis.range is not None:
        r = axis.range
        return f"[{r.low:g}, {r.high:g}]" + (" log" if r.log else "")
    vals = axis.values or ()
    return str(vals[0]) if len(vals) == 1 else "{" + ", ".join(map(str, vals)) + "}"
