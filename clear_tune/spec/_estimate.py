"""What a spec will cost before it runs: trials per arm, and CPU-hours and GPU-hours from measured per-epoch costs.

``EPOCH_SECONDS`` holds, per backbone, the training seconds of one epoch at Amazon Baby scale (19,445 users,
7,050 items, 118,551 train interactions, 4096/384-d features, emb 64, batch 2048) on this project's machines:
``cpu`` on the 2-core development CPU at 2 threads (``bench_mmrec_parity.py --speed-only``, ``bench_profile.py``;
BENCHMARKS.md *CPU speed*),
``gpu`` on an NVIDIA H100 (``benchmarks/bench_gpu.py``) or, where that was never run, the paper's Table 4 (RTX 4090).
A dataset's epoch scales with its train interactions (batches per epoch); a trial is assumed to run until early
stopping at ``min(epochs, ASSUMED_BEST_EPOCH + patience)`` epochs, evaluation included (one evaluation ~ one
epoch's ``EVAL_SHARE``). Fused arrays are counted per trial (what an unfused search costs; fusion divides the
GPU figure by up to the array size). The estimate is an order of magnitude, and says which costs it lacks.

Example:
    >>> from clear_tune.spec import load_spec
    >>> print(estimate(load_spec("search_spaces/paper-smoke.yaml")).splitlines()[0])   # doctest: +SKIP
    cost estimate (...)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clear_tune.spec._spec import Spec

BABY_TRAIN_INTERACTIONS = 118_551
# MMRec's published datasets: train interactions (80% of each user's), for sizing without reading them
KNOWN_TRAIN_INTERACTIONS = {"baby": 118_551, "sports": 225_698, "clothing": 197_338}
ASSUMED_BEST_EPOCH = 100
EVAL_SHARE = 0.3

# backbone -> (cpu s/epoch at Baby, 2 threads; gpu s/epoch at Baby): None where never measured
EPOCH_SECONDS: dict[str, tuple[float | None, float | None]] = {
    "bpr": (0.21, 0.056),
    "lightgcn": (1.22, 0.117),
    "layergcn": (5.60, None),
    "vbpr": (2.64, 0.145),
    "freedom": (11.86, 0.152),
    "clear": (4.94, 0.199),  # projection off; CLEAR adds one SVD per refresh
    "bm3": (6.00, None),
    "slmrec": (10.17, None),
    "grcn": (31.57, None),
    "dualgnn": (11.50, None),
    "smore": (16.34, None),
    "mgcn": (11.18, None),
    "lgmrec": (28.80, None),
    "dragon": (12.28, None),
    "lattice": (1.93, 3.42),
    "mmgcn": (32.35, 6.35),
}


def train_interactions(source: str) -> int:
    """Train interactions of a data source, for scaling: MMRec's known datasets by name, a present ``.inter`` file
    by its x_label 0 rows, else Baby's."""
    from clear_tune.data import parse_source

    parsed = parse_source(source)
    if parsed.name in KNOWN_TRAIN_INTERACTIONS:
        return KNOWN_TRAIN_INTERACTIONS[parsed.name]
    inter = parsed.path if parsed.kind == "semi" else (parsed.path / f"{parsed.name}.inter" if parsed.path else None)
    if inter is not None and Path(inter).is_file():
        with open(inter) as fh:
            header = fh.readline().rstrip("\n").split("\t")
            column = header.index("x_label") if "x_label" in header else -1
            return sum(1 for line in fh if line.rstrip("\n").split("\t")[column] == "0")
    return BABY_TRAIN_INTERACTIONS


def estimate(spec: Spec) -> str:
    """The dry run's cost lines: trials per arm, then CPU-hours and GPU-hours (see the module docstring)."""
    plans = spec.grid_trials() if spec.settings.search.kind == "grid" else []
    per_arm: dict[str, int] = {}
    for plan in plans:
        per_arm[plan.arm] = per_arm.get(plan.arm, 0) + 1
    lines = ["trials per arm: " + ", ".join(f"{arm} {n}" for arm, n in per_arm.items())] if per_arm else []
    trainer = spec.trainer
    epochs = min(trainer.epochs, ASSUMED_BEST_EPOCH + trainer.patience)
    evaluations = epochs / trainer.eval_every
    scale = {d.source: train_interactions(d.source) / BABY_TRAIN_INTERACTIONS for d in spec.settings.data}
    hours = {"cpu": 0.0, "gpu": 0.0}
    missing: dict[str, set[str]] = {"cpu": set(), "gpu": set()}
    for plan in plans:
        costs = EPOCH_SECONDS.get(plan.config.backbone, (None, None))
        for device, cost in zip(("cpu", "gpu"), costs):
            if cost is None:
                missing[device].add(plan.config.backbone)
                continue
            seconds = cost * scale[plan.config.data] * (epochs + EVAL_SHARE * evaluations)
            hours[device] += seconds / 3600
    if plans:
        lines.append(
            f"cost estimate (each trial to ~{epochs} epochs, evaluated every {trainer.eval_every}; per-epoch "
            f"costs measured at Baby scale, scaled by train interactions): CPU (2 cores) "
            f"{hours['cpu']:,.0f} h, GPU (H100-class) {hours['gpu']:,.0f} h unfused"
        )
        for device, names in missing.items():
            if names:
                lines.append(f"  no measured {device.upper()} epoch cost for: {', '.join(sorted(names))} (left out)")
    return "\n".join(lines)
