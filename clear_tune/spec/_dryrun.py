"""The dry run's text: the trial table, the fused groups, an Optuna search's space (``run --dry-run``).

Example:
    >>> from clear_tune.spec import load_spec
    >>> print(trial_table(load_spec("search_spaces/smoke.yaml")).splitlines()[-1])   # doctest: +SKIP
    5 trials after deduplication (7 before) in 3 arm(s)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clear_tune.spec._axes import Axis
from clear_tune.spec._grid import raw_count, run_order, shuffles_grid

if TYPE_CHECKING:
    from clear_tune.spec._spec import Spec


def data_label(source: str) -> str:
    from clear_tune.data import parse_source

    return parse_source(source).name


def trial_table(spec: Spec) -> str:
    """One row per trial in launch order, plus the count after deduplication (an Optuna search: its space)."""
    if spec.settings.search.kind == "optuna":
        return optuna_summary(spec)
    header = ("#", "arm", "backbone", "dataset", "k", "λ", "mode", "ρ", "τ", "seed")
    rows = [header]
    for i, plan in enumerate(run_order(spec), 1):
        cfg, pj = plan.config, plan.config.projection
        on = pj.active
        rows.append(
            (
                str(i),
                plan.arm,
                cfg.backbone,
                data_label(cfg.data),
                str(pj.k) if on else "-",
                f"{pj.strength:g}" if on else "0",
                pj.mode,
                f"{pj.energy:g}" if on and pj.mode == "dynamic" else "-",
                str(pj.refresh_every) if on else "-",
                str(cfg.seed),
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.append(f"{len(rows) - 1} trials after deduplication ({raw_count(spec)} before) in {len(spec.arms)} arm(s)")
    if shuffles_grid(spec.settings):
        lines.append(
            f"run in shuffled order (search.seed {spec.settings.search.seed or 0}) so that the "
            f"{spec.settings.scheduler.kind} scheduler compares each trial with a fair sample of the grid; "
            "'search: {order: listed}' keeps the listed order"
        )
    return "\n".join(lines)


def fusion_table(spec: Spec, datasets: dict[str, Any] | None = None) -> str:
    """The dry run's account of fused trials: the groups, and what runs alone and why."""
    blocker = spec.fusion_blocker()
    if spec.settings.search.kind != "grid":
        if blocker is not None:
            return f"fused trials: none - {blocker}"
        return (
            f"fused trials: Optuna's suggestions are asked {spec.max_members(datasets)} at a time and those "
            "that share backbone, seed, data and trainer settings train as one model array"
        )
    groups = spec.groups(datasets)
    if blocker is not None:
        return f"fused trials: none - {blocker}; {len(groups)} Ray trials"
    fused = [g for g in groups if len(g.plans) > 1]
    alone = [g for g in groups if len(g.plans) == 1]
    lines = [
        f"fused trials: {sum(len(g.plans) for g in fused)} trials in {len(fused)} model arrays of up to "
        f"{spec.max_members(datasets)} members (fusion.max_members {spec.settings.fusion.max_members!r}); "
        f"{len(groups)} Ray trials in all"
    ]
    classes: dict[tuple[str, int, str], list[int]] = {}
    for group in fused:  # one line per backbone, seed and dataset: the sizes of its arrays
        cfg = group.plans[0].config
        classes.setdefault((cfg.backbone, cfg.seed, data_label(cfg.data)), []).append(len(group.plans))
    for (backbone, seed, data), sizes in classes.items():
        counts = ", ".join(f"{sizes.count(n)}×{n}" for n in sorted(set(sizes), reverse=True))
        lines.append(
            f"  {backbone}, seed {seed}, {data}: {sum(sizes)} trials in {len(sizes)} array(s) ({counts} members)"
        )
    if alone:
        lines.append(
            f"  {len(alone)} trial(s) alone: no other trial shares their data, backbone, seed and "
            "trainer settings (only the projection and reg_weight may differ)"
        )
    return "\n".join(lines)


def optuna_summary(spec: Spec) -> str:
    s = spec.settings.search
    lines = [
        f"optuna search: {s.n_trials} trials, sampler {s.sampler} (seed {s.seed}), seed(s) per config: "
        f"{spec.settings.seeds[0]} (the first listed seed)"
    ]
    for arm, axes in spec.arms.items():
        desc = ", ".join(f"{f}={_axis_text(a)}" for f, a in axes.items())
        lines.append(f"  arm {arm}: backbones {spec.arm_backbones[arm]}; {desc}")
    lines.append(f"{s.n_trials} trials")
    return "\n".join(lines)


def _axis_text(axis: Axis) -> str:
    if axis.range is not None:
        r = axis.range
        return f"[{r.low:g}, {r.high:g}]" + (" log" if r.log else "")
    vals = axis.values or ()
    return str(vals[0]) if len(vals) == 1 else "{" + ", ".join(map(str, vals)) + "}"
