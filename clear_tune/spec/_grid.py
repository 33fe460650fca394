"""Grid expansion: a validated spec's arms -> the deduplicated trials, and the order they are launched in.

The union of the arms' cartesian products (dataset x backbone x preset point x axes x seed), deduplicated by
EFFECTIVE config (:meth:`~clear_tune.config.ProjectionConfig.effective`: k, λ, ρ and τ are irrelevant without an
active projection, ρ only matters in dynamic mode).

Example:
    >>> from clear_tune.spec import load_spec
    >>> spec = load_spec("search_spaces/smoke.yaml")              # doctest: +SKIP
    >>> len(expand_grid(spec)), raw_count(spec)                    # doctest: +SKIP
    (5, 7)
"""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING, Any

from clear_tune.spec._axes import grid_values
from clear_tune.spec._schema import SearchSpec

if TYPE_CHECKING:
    from clear_tune.spec._spec import Spec, TrialPlan


def product(values: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of ``{name: [values]}`` as dicts, the first name varying slowest."""
    points: list[dict[str, Any]] = [{}]
    for name, vals in values.items():
        points = [{**p, name: v} for p in points for v in vals]
    return points


def expand_grid(spec: Spec) -> list[TrialPlan]:
    """The deduplicated union of all arms' grids, in spec order (arm, dataset, backbone, preset, axes, seed)."""
    from clear_tune.spec._spec import TrialPlan, trial_key

    seen: set[str] = set()
    plans: list[TrialPlan] = []
    for arm, axes in spec.arms.items():
        where = f"arms.{arm}" if spec.settings.arms else "projection"
        values = {f: grid_values(a, f"{where}.{f}") for f, a in axes.items()}
        for data_index in range(len(spec.settings.data)):
            for backbone in spec.arm_backbones[arm]:
                for preset_point in spec.preset_points(arm, backbone):
                    for point in product(values):
                        for seed in spec.settings.seeds:
                            cfg = spec.make_config(
                                data_index=data_index,
                                backbone=backbone,
                                projection=point,
                                seed=seed,
                                preset_point=preset_point,
                            )
                            identity = json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
                            if identity not in seen:
                                seen.add(identity)
                                label = spec.arm_label(arm, cfg)
                                plans.append(TrialPlan(label, trial_key(label, cfg), cfg))
    return plans


def raw_count(spec: Spec) -> int:
    """How many trials the arms name before deduplication."""
    total = 0
    for arm, axes in spec.arms.items():
        n = (
            len(spec.settings.data)
            * len(spec.settings.seeds)
            * sum(len(spec.preset_points(arm, b)) for b in spec.arm_backbones[arm])
        )
        for f, a in axes.items():
            n *= len(grid_values(a, f))
        total += n
    return total


def shuffles_grid(settings: SearchSpec) -> bool:
    """Whether the grid runs shuffled: ``search.order``, where ``auto`` shuffles when a scheduler prunes."""
    order = settings.search.order
    return order == "shuffled" or (order == "auto" and settings.scheduler.kind != "fifo")


def run_order(spec: Spec) -> list[TrialPlan]:
    """The grid trials in launch order: as listed, or shuffled with ``search.seed`` (:func:`shuffles_grid`).

    ASHA and the Optuna pruners judge a trial against the trials that reached the same epoch before it.
    In listed order those are one corner of the space (the smallest k, the first arm), so the early
    cut-offs are unrepresentative and too many trials go on: on the paper's grid x 3 seeds ASHA trained
    about 50% of the full grid's epochs in listed order and about 30% shuffled (BENCHMARKS.md).
    """
    plans = list(spec.grid_trials())
    if shuffles_grid(spec.settings):
        random.Random(spec.settings.search.seed or 0).shuffle(plans)
    return plans
