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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clear_tune.config import ProjectionConfig, TrainConfig
from clear_tune.spec._axes import DEFAULTS, Axis, grid_values
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


def key_part(text: str) -> str:
    """``text`` safe in a file name and a storage key: ``mmrec:FREEDOM`` -> ``mmrec_FREEDOM``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "_"


def trial_key(arm: str, config: TrainConfig, *, suffix: str = "") -> str:
    """``arm-backbone-mode-k..-l..[-r..]-s<seed>-<hash>``: readable, file-name safe, stable."""
    pj = config.projection
    digest = hashlib.sha1(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:8]
    parts = [arm, key_part(config.backbone), pj.mode]
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
    arm_presets: dict[str, str | None] = field(default_factory=dict)
    plugins: list[Any] = field(default_factory=list)  # clear_tune._plugins.Plugin: imported on every worker
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
        return self.trainer.model_dump(mode="json", exclude={"data", "data_options", "backbone", "projection", "seed",
                                                           "clear_at"})

    def make_config(self, *, data_index: int, backbone: str, projection: dict[str, Any], seed: int,
                    preset_point: dict[str, Any] | None = None) -> TrainConfig:
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

        return _product({name: list(values) for name, values in backbone_class(backbone).mmrec_grid.items()})

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
                    for preset_point in self.preset_points(arm, backbone):
                        for point in _product(values):
                            for seed in self.settings.seeds:
                                cfg = self.make_config(data_index=data_index, backbone=backbone, projection=point,
                                                       seed=seed, preset_point=preset_point)
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

    def fusion_blocker(self) -> str | None:
        """Why this spec's trials run unfused, or None when compatible trials fuse."""
        s = self.settings
        if not s.fusion.enabled:
            return "fusion is disabled in the spec (fusion: {enabled: false})"
        if s.scheduler.kind == "hyperband":
            return "Ray's hyperband pauses and resumes whole trials, so members of one array could not stop apart"
        if s.fusion.max_members == 1:
            return "fusion.max_members is 1"
        return None

    def max_members(self, datasets: dict[str, Any] | None = None) -> int:
        """Members per group: ``fusion.max_members``, or for ``auto`` the device's size (:mod:`._groups`).

        ``datasets`` (by :func:`clear_tune.tune.dataset_key`) size ``auto`` on a GPU; without them a GPU spec
        is sized for its largest dataset as described by its options (synthetic), else as on a CPU.
        """
        from clear_tune.spec._groups import CPU_MEMBERS, auto_members, cpu_members, member_bytes

        s = self.settings
        if self.fusion_blocker() is not None:
            return 1
        if s.fusion.max_members != "auto":
            return int(s.fusion.max_members)
        if not datasets:
            return CPU_MEMBERS if s.resources.gpus <= 0 else auto_members(
                gpu_fraction=s.resources.gpus, per_member_bytes=1)
        def raw_width(ds: Any) -> int:
            return sum(f.shape[1] for f in (ds.image_feat, ds.text_feat) if f is not None)

        if s.resources.gpus <= 0:
            work = max(ds.n_items * raw_width(ds) for ds in datasets.values())
            return cpu_members(feature_work=work * self.trainer.emb_dim)
        largest = max(datasets.values(), key=lambda ds: ds.n_users + ds.n_items)
        d_raw = raw_width(largest)
        needed = member_bytes(n_users=largest.n_users, n_items=largest.n_items, emb_dim=self.trainer.emb_dim,
                              d_raw=d_raw, train_raw_features=True, eval_batch_users=self.trainer.eval_batch_users)
        return auto_members(gpu_fraction=s.resources.gpus, per_member_bytes=needed)

    def groups(self, datasets: dict[str, Any] | None = None) -> list[Any]:
        """The grid's trials in launch order (:meth:`run_order`), grouped into fused model arrays
        (:class:`~clear_tune.spec._groups.TrialGroup`; groups of one when the spec cannot fuse). Optuna search
        has no grid: [] (its suggestions run one per Ray trial)."""
        from clear_tune.spec._groups import group_plans

        if self.settings.search.kind != "grid":
            return []
        return group_plans(self.run_order(), max_members=self.max_members(datasets))

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

    def fusion_table(self, datasets: dict[str, Any] | None = None) -> str:
        """The dry run's account of fused trials: the groups, and what runs alone and why."""
        if self.settings.search.kind != "grid":
            blocker = self.fusion_blocker()
            if blocker is not None:
                return f"fused trials: none - {blocker}"
            return (f"fused trials: Optuna's suggestions are asked {self.max_members(datasets)} at a time and those "
                    "that share backbone, seed, data and trainer settings train as one model array")
        return "\n".join(self._fusion_summary(datasets))

    def _fusion_summary(self, datasets: dict[str, Any] | None = None) -> list[str]:
        groups = self.groups(datasets)
        blocker = self.fusion_blocker()
        if blocker is not None:
            return [f"fused trials: none - {blocker}; {len(groups)} Ray trials"]
        fused = [g for g in groups if len(g.plans) > 1]
        alone = [g for g in groups if len(g.plans) == 1]
        lines = [f"fused trials: {sum(len(g.plans) for g in fused)} trials in {len(fused)} model arrays of up to "
                 f"{self.max_members(datasets)} members (fusion.max_members {self.settings.fusion.max_members!r}); "
                 f"{len(groups)} Ray trials in all"]
        classes: dict[tuple[str, int, str], list[int]] = {}
        for group in fused:  # one line per backbone, seed and dataset: the sizes of its arrays
            cfg = group.plans[0].config
            classes.setdefault((cfg.backbone, cfg.seed, _data_label(cfg.data)), []).append(len(group.plans))
        for (backbone, seed, data), sizes in classes.items():
            counts = ", ".join(f"{sizes.count(n)}×{n}" for n in sorted(set(sizes), reverse=True))
            lines.append(f"  {backbone}, seed {seed}, {data}: {sum(sizes)} trials in {len(sizes)} array(s) "
                         f"({counts} members)")
        if alone:
            lines.append(f"  {len(alone)} trial(s) alone: no other trial shares their data, backbone, seed and "
                         "trainer settings (only the projection and reg_weight may differ)")
        return lines

    def _raw_count(self) -> int:
        total = 0
        for arm, axes in self.arms.items():
            n = len(self.settings.data) * len(self.settings.seeds) * sum(
                len(self.preset_points(arm, b)) for b in self.arm_backbones[arm])
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
