"""Search-harness benchmark: overhead vs a plain loop, compute saved by pruning, parallel efficiency.

    .venv/bin/python benchmarks/bench_harness.py [--repeats 3] [--only overhead,pruning,parallel]
    .venv/bin/python benchmarks/bench_harness.py --only pruning --repeats 3 --pruners asha_g5_rf4,median
    .venv/bin/python benchmarks/bench_harness.py --only overhead --repeats 2 --overhead-epochs 100

1. overhead: the same 5 trials through ``clear_tune.run.run_search`` (1 trial at a time, 1 CPU each) vs
   ``Trainer(...).fit()`` called in one loop in one process; Ray start-up is timed separately.
2. pruning: a synthetic grid run in full (FIFO) vs with Optuna's median pruner (through
   OptunaPrunerScheduler) vs with Ray's ASHA: total epochs trained and best valid Recall@20 found.
3. parallel: 8 trials with max_concurrent 1 vs 2 (1 CPU per trial) on this machine.

Everything runs on the built-in synthetic data; numbers are medians over ``--repeats`` runs. Output is a
Markdown block to paste into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

DATA = "data: {source: synthetic, options: {n_users: 1000, n_items: 500, d_v: 64, d_t: 32, seed: 0}}"
TRAINER = "trainer: {emb_dim: 32, epochs: %d, patience: %d, batch_size: 1024}"


def write_spec(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"experiment: {name}\n{DATA}\n{body}\n")
    return path


class HarnessRun(NamedTuple):
    startup: float  # ray.init seconds
    search: float  # run_search seconds
    records: list[dict]
    first_trial_after: float  # seconds from run_search's start to the first trial's trainable running


def harness_run(spec: Path, results: Path) -> HarnessRun:
    """One run of ``run_search`` on a fresh local Ray."""
    import ray

    from clear_tune.run import run_search

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="error", log_to_driver=False)
    startup = time.perf_counter() - start
    try:
        start, started_at = time.perf_counter(), time.time()
        outcome = run_search(spec, results=str(results), verbose=0, build_report=False)
        search = time.perf_counter() - start
    finally:
        ray.shutdown()
    first = min(r["wall_start"] for r in outcome.records) - started_at
    return HarnessRun(startup, search, outcome.records, first)


def direct_loop(spec_path: Path) -> tuple[float, float]:
    """(total seconds, of which data generation) for the spec's grid trained in one loop in this process."""
    import torch

    from clear_tune.data import load_dataset
    from clear_tune.spec import load_spec
    from clear_tune.train import Trainer

    torch.set_num_threads(1)
    spec = load_spec(spec_path)
    data = spec.settings.data[0]
    start = time.perf_counter()
    dataset = load_dataset(data.source, **data.options)
    generated = time.perf_counter() - start
    for plan in spec.grid_trials():
        Trainer(plan.config, dataset).fit()
    return time.perf_counter() - start, generated


OVERHEAD_DATA = "data: {source: synthetic, options: {n_users: 3000, n_items: 1500, d_v: 64, d_t: 32, seed: 0}}"


OVERHEAD_EPOCHS = [20]  # --overhead-epochs: longer trials show the per-trial share of the fixed costs


def bench_overhead(tmp: Path, repeats: int) -> list[str]:
    """Paired runs (direct, then harness, back to back) so a noisy shared machine hits both alike.

    Besides the totals, each harness run is split at the moment its first trial's trainable starts (its
    record's ``wall_start``): before it, data generation (timed in the direct loop), Tuner set-up and the
    first trial process starting and importing torch; after it, the trials themselves, which the direct
    loop's time after data generation is compared with. The first trial process's start is a one-time
    cost like ``ray.init``.
    """
    body = (
        TRAINER % (OVERHEAD_EPOCHS[0], OVERHEAD_EPOCHS[0])
        + """
backbones: [clear]
arms:
  full: {k: [2, 4, 8], strength: 0.9}
  no_projection: {mode: "off"}
  dynamic: {mode: dynamic, k: 16, energy: 0.9}
max_concurrent: 1
"""
    )
    specs = {}
    for every in (1, 5):
        path = write_spec(tmp, f"overhead{every}", body + f"checkpoint_every: {every}\n")
        path.write_text(path.read_text().replace(DATA, OVERHEAD_DATA))
        specs[every] = path
    direct, runs = {1: [], 5: []}, {1: [], 5: []}
    for i in range(repeats):
        for every, spec in specs.items():
            direct[every].append(direct_loop(spec))
            run = harness_run(spec, tmp / f"overhead-{i}-{every}")
            assert len(run.records) == 5
            runs[every].append(run)

    def median_pct(values) -> str:
        return f"{100 * statistics.median(values):+.1f}%"

    rows = []
    for every, label in ((1, "default checkpoint policy"), (5, "`checkpoint_every: 5`")):
        pairs = list(zip(runs[every], direct[every]))
        total = [r.search / d - 1 for r, (d, _) in pairs]
        trials = [(r.search - r.first_trial_after) / (d - gen) - 1 for r, (d, gen) in pairs]
        first = [r.first_trial_after - gen for r, (_, gen) in pairs]
        rows.append(
            f"| {label} | {statistics.median(d for d, _ in direct[every]):.1f} | "
            f"{statistics.median(r.search for r in runs[every]):.1f} | {median_pct(total)} | "
            f"{median_pct(trials)} | {statistics.median(first):.1f} | "
            f"{statistics.median(r.startup for r in runs[every]):.1f} |"
        )
    raw = "; ".join(
        f"every {e}: direct "
        + ", ".join(f"{d:.1f} (data {g:.1f})" for d, g in direct[e])
        + "; harness "
        + ", ".join(f"{r.search:.1f} (first trial at {r.first_trial_after:.1f})" for r in runs[e])
        + "; ray.init "
        + ", ".join(f"{r.startup:.1f}" for r in runs[e])
        for e in (1, 5)
    )
    return [
        f"| 5 trials x {OVERHEAD_EPOCHS[0]} epochs, 1 at a time, 1 CPU | direct s | harness s | overhead: total "
        "| overhead: the trials (after the first trial process is up) | first trial process up, s (one-time) "
        "| ray.init s (one-time) |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"medians of {repeats} paired runs; runs (s): {raw}",
    ]


# The paper's CLEAR grid (k x λ, no projection, dynamic ρ) trained the way a real search is: up to 100
# epochs with patience 20, so good configs run long and bad ones (large k removes preference signal) are
# visibly worse early. 24 configs x 3 seeds = 72 trials, 2 at a time.
PRUNING_GRID = """
backbones: [clear]
seeds: [0, 1, 2]
arms:
  full: {k: [2, 4, 8, 16, 20], strength: [0.3, 0.5, 0.7, 0.9]}
  no_projection: {mode: "off"}
  dynamic: {mode: dynamic, k: 20, energy: [0.5, 0.7, 0.9]}
max_concurrent: 2
"""
PRUNING_EPOCHS, PRUNING_PATIENCE = 100, 20
PRUNING_SCHEDULERS = {  # short name -> (label, spec line)
    "fifo": ("full grid (FIFO)", "scheduler: {kind: fifo}"),
    "median": (
        "Optuna median pruner (grace 10, 5 startup trials)",
        "scheduler: {kind: median, grace_period: 10, n_startup_trials: 5}",
    ),
    "asha": ("ASHA (grace 10, reduction 3)", "scheduler: {kind: asha, grace_period: 10, reduction_factor: 3}"),
    "percentile": (
        "Optuna percentile pruner (keep top 25%, grace 10, 5 startup)",
        "scheduler: {kind: percentile, percentile: 25, grace_period: 10, n_startup_trials: 5}",
    ),
    "median_g5": (
        "Optuna median pruner (grace 5, 5 startup trials)",
        "scheduler: {kind: median, grace_period: 5, n_startup_trials: 5}",
    ),
    "asha_g5": ("ASHA (grace 5, reduction 3)", "scheduler: {kind: asha, grace_period: 5, reduction_factor: 3}"),
    "asha_rf4": ("ASHA (grace 10, reduction 4)", "scheduler: {kind: asha, grace_period: 10, reduction_factor: 4}"),
    "asha_g5_rf4": ("ASHA (grace 5, reduction 4)", "scheduler: {kind: asha, grace_period: 5, reduction_factor: 4}"),
    "percentile_g5": (
        "Optuna percentile pruner (keep top 25%, grace 5, 5 startup)",
        "scheduler: {kind: percentile, percentile: 25, grace_period: 5, n_startup_trials: 5}",
    ),
}
PRUNERS = ["median_g5", "asha_g5", "asha_g5_rf4", "percentile_g5"]  # the default set; --pruners picks others


def bench_pruning(tmp: Path, repeats: int) -> list[str]:
    """The full grid once (listed order, seeded trainers: the same epochs every time), then each pruner
    ``repeats`` times; a pruned grid runs shuffled (``Spec.run_order``) and repeat i shuffles with seed i."""
    chosen = {PRUNING_SCHEDULERS[key][0]: PRUNING_SCHEDULERS[key][1] for key in ["fifo", *PRUNERS] if key}
    rows = {name: {"epochs": [], "best": [], "wall": []} for name in chosen}
    for j, (name, sched) in enumerate(chosen.items()):
        for i in range(1 if sched.endswith("fifo}") else repeats):
            body = TRAINER % (PRUNING_EPOCHS, PRUNING_PATIENCE) + PRUNING_GRID + sched + f"\nsearch: {{seed: {i}}}"
            spec = write_spec(tmp, f"pruning{j}", body)
            _, wall, records, _ = harness_run(spec, tmp / f"pruning-{i}")
            rows[name]["epochs"].append(sum(r["epochs_run"] for r in records))
            rows[name]["best"].append(max(r["valid"].get("recall@20", 0.0) for r in records))
            rows[name]["wall"].append(wall)
            print(
                f"  [{name}] run {i + 1}: {rows[name]['epochs'][-1]} epochs, best {rows[name]['best'][-1]:.4f}, "
                f"{wall:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    full_epochs, full_best = rows["full grid (FIFO)"]["epochs"][0], rows["full grid (FIFO)"]["best"][0]
    out = [
        f"| 72 trials, {PRUNING_EPOCHS} epochs max, patience {PRUNING_PATIENCE} | runs | epochs trained (median) "
        "| vs full: median (worst) | best valid R@20: median (worst) | vs full: worst | search s (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        ratios = [e / full_epochs for e in r["epochs"]]
        out.append(
            f"| {name} | {len(r['epochs'])} | {statistics.median(r['epochs']):.0f} | "
            f"{100 * statistics.median(ratios):.0f}% ({100 * max(ratios):.0f}%) | "
            f"{statistics.median(r['best']):.4f} ({min(r['best']):.4f}) | "
            f"{100 * (min(r['best']) / full_best - 1):+.1f}% | {statistics.median(r['wall']):.0f} |"
        )
    out.append("")
    out.append(
        "runs: "
        + "; ".join(
            f"{name}: " + ", ".join(f"{e} ep / {b:.4f}" for e, b in zip(r["epochs"], r["best"]))
            for name, r in rows.items()
        )
    )
    return out


def bench_parallel(tmp: Path, repeats: int) -> list[str]:
    times = {1: [], 2: []}
    for i in range(repeats):
        for conc in (1, 2):
            spec = write_spec(
                tmp,
                f"parallel{conc}",
                TRAINER % (20, 20)
                + f"""
backbones: [clear]
arms:
  full: {{k: [2, 4, 8, 16], strength: [0.5, 0.9]}}
max_concurrent: {conc}
""",
            )
            spec.write_text(spec.read_text().replace(DATA, OVERHEAD_DATA))  # trials of seconds, not 0.6 s
            _, wall, records, _ = harness_run(spec, tmp / f"parallel-{i}")
            assert len(records) == 8
            times[conc].append(wall)
    t1, t2 = statistics.median(times[1]), statistics.median(times[2])
    speedups = [a / b for a, b in zip(times[1], times[2])]
    s = statistics.median(speedups)
    return [
        "| 8 trials x 20 epochs (3000 x 1500 synthetic), 1 CPU each | median search seconds |",
        "|---|---|",
        f"| max_concurrent 1 | {t1:.1f} |",
        f"| max_concurrent 2 | {t2:.1f} |",
        f"| **speed-up / parallel efficiency** | **{s:.2f}x / {100 * s / 2:.0f}%** |",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="overhead,pruning,parallel")
    parser.add_argument(
        "--pruners",
        default=",".join(PRUNERS),
        help=f"pruning part: schedulers besides the full grid, from {', '.join(PRUNING_SCHEDULERS)}",
    )
    parser.add_argument("--overhead-epochs", type=int, default=20, help="overhead part: epochs per trial")
    args = parser.parse_args()
    OVERHEAD_EPOCHS[0] = args.overhead_epochs
    PRUNERS[:] = [p for p in args.pruners.split(",") if p != "fifo"]
    unknown = set(PRUNERS) - set(PRUNING_SCHEDULERS)
    if unknown:
        parser.error(f"--pruners: unknown {sorted(unknown)}; choose from {', '.join(PRUNING_SCHEDULERS)}")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    load = os.getloadavg()
    print(f"load average before: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bench_harness_") as folder:
        tmp = Path(folder)
        for part in args.only.split(","):
            lines = {"overhead": bench_overhead, "pruning": bench_pruning, "parallel": bench_parallel}[part](
                tmp, args.repeats
            )
            print(f"\n### {part}\n")
            print("\n".join(lines), flush=True)
    load = os.getloadavg()
    print(f"\nload average after: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
