"""Search-harness benchmark: overhead vs a plain loop, compute saved by pruning, parallel efficiency.

    .venv/bin/python benchmarks/bench_harness.py [--repeats 3] [--only overhead,pruning,parallel]
    .venv/bin/python benchmarks/bench_harness.py --only pruning --repeats 1 --pruners asha_g5,asha_rf4
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

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

DATA = "data: {source: synthetic, options: {n_users: 1000, n_items: 500, d_v: 64, d_t: 32, seed: 0}}"
TRAINER = "trainer: {emb_dim: 32, epochs: %d, patience: %d, batch_size: 1024}"


def write_spec(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"experiment: {name}\n{DATA}\n{body}\n")
    return path


def harness_run(spec: Path, results: Path) -> tuple[float, float, list[dict]]:
    """(ray start-up seconds, search seconds, records) for one run on a fresh local Ray."""
    import ray

    from clear_tune.run import run_search

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="error", log_to_driver=False)
    startup = time.perf_counter() - start
    try:
        start = time.perf_counter()
        outcome = run_search(spec, results=str(results), verbose=0, build_report=False)
        search = time.perf_counter() - start
    finally:
        ray.shutdown()
    return startup, search, outcome.records


def direct_loop(spec_path: Path) -> float:
    import torch

    from clear_tune.data import load_dataset
    from clear_tune.spec import load_spec
    from clear_tune.train import Trainer

    torch.set_num_threads(1)
    spec = load_spec(spec_path)
    data = spec.model.data[0]
    start = time.perf_counter()
    dataset = load_dataset(data.source, **data.options)
    for plan in spec.grid_trials():
        Trainer(plan.config, dataset).fit()
    return time.perf_counter() - start


OVERHEAD_DATA = "data: {source: synthetic, options: {n_users: 3000, n_items: 1500, d_v: 64, d_t: 32, seed: 0}}"


OVERHEAD_EPOCHS = [20]  # --overhead-epochs: longer trials show the per-trial share of the fixed costs


def bench_overhead(tmp: Path, repeats: int) -> list[str]:
    """Paired runs (direct, then harness, back to back) so a noisy shared machine hits both alike."""
    body = TRAINER % (OVERHEAD_EPOCHS[0], OVERHEAD_EPOCHS[0]) + """
backbones: [clear]
arms:
  full: {k: [2, 4, 8], strength: 0.9}
  no_projection: {mode: "off"}
  dynamic: {mode: dynamic, k: 16, energy: 0.9}
max_concurrent: 1
"""
    specs = {}
    for every in (1, 5):
        path = write_spec(tmp, f"overhead{every}", body + f"checkpoint_every: {every}\n")
        path.write_text(path.read_text().replace(DATA, OVERHEAD_DATA))
        specs[every] = path
    direct, startup, search = [], [], {1: [], 5: []}
    for i in range(repeats):
        for every, spec in specs.items():
            direct.append(direct_loop(spec))
            s, t, records = harness_run(spec, tmp / f"overhead-{i}")
            assert len(records) == 5
            startup.append(s)
            search[every].append(t)
    pairs = {1: direct[0::2], 5: direct[1::2]}
    ratio = {e: statistics.median(t / d - 1 for t, d in zip(search[e], pairs[e])) for e in (1, 5)}
    s_ratio = statistics.median(s / d for s, d in zip(startup, direct))
    d = statistics.median(direct)
    return [
        f"| measure (5 trials x {OVERHEAD_EPOCHS[0]} epochs, 1 at a time, 1 CPU) | median s | overhead vs direct (median of paired runs) |",
        "|---|---|---|",
        f"| trainer called directly in a loop (data generation included) | {d:.1f} | - |",
        f"| `run_search`, checkpoint every evaluation (default) | {statistics.median(search[1]):.1f} | {100 * ratio[1]:+.0f}% |",
        f"| `run_search`, `checkpoint_every: 5` | {statistics.median(search[5]):.1f} | {100 * ratio[5]:+.0f}% |",
        f"| Ray start-up (`ray.init`, local), on top | {statistics.median(startup):.1f} | {100 * s_ratio:+.0f}% |",
        "",
        f"runs (s): direct {', '.join(f'{x:.1f}' for x in direct)}; harness every-eval "
        f"{', '.join(f'{x:.1f}' for x in search[1])}; harness every-5 {', '.join(f'{x:.1f}' for x in search[5])}; "
        f"start-up {', '.join(f'{x:.1f}' for x in startup)}",
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
    "median": ("Optuna median pruner (grace 10, 5 startup trials)",
               "scheduler: {kind: median, grace_period: 10, n_startup_trials: 5}"),
    "asha": ("ASHA (grace 10, reduction 3)", "scheduler: {kind: asha, grace_period: 10, reduction_factor: 3}"),
    "percentile": ("Optuna percentile pruner (keep top 25%, grace 10, 5 startup)",
                   "scheduler: {kind: percentile, percentile: 25, grace_period: 10, n_startup_trials: 5}"),
    "median_g5": ("Optuna median pruner (grace 5, 5 startup trials)",
                  "scheduler: {kind: median, grace_period: 5, n_startup_trials: 5}"),
    "asha_g5": ("ASHA (grace 5, reduction 3)", "scheduler: {kind: asha, grace_period: 5, reduction_factor: 3}"),
    "asha_rf4": ("ASHA (grace 10, reduction 4)", "scheduler: {kind: asha, grace_period: 10, reduction_factor: 4}"),
    "percentile_g5": ("Optuna percentile pruner (keep top 25%, grace 5, 5 startup)",
                      "scheduler: {kind: percentile, percentile: 25, grace_period: 5, n_startup_trials: 5}"),
}
PRUNERS = ["fifo", "median", "asha", "percentile"]  # the default set; --pruners picks others


def bench_pruning(tmp: Path, repeats: int) -> list[str]:
    chosen = {PRUNING_SCHEDULERS[key][0]: PRUNING_SCHEDULERS[key][1] for key in ["fifo", *PRUNERS] if key}
    rows = {name: {"epochs": [], "best": [], "wall": []} for name in chosen}
    for i in range(repeats):
        for j, (name, sched) in enumerate(chosen.items()):
            body = TRAINER % (PRUNING_EPOCHS, PRUNING_PATIENCE) + PRUNING_GRID + sched
            spec = write_spec(tmp, f"pruning{j}", body)
            _, wall, records = harness_run(spec, tmp / f"pruning-{i}")
            rows[name]["epochs"].append(sum(r["epochs_run"] for r in records))
            rows[name]["best"].append(max(r["valid"].get("recall@20", 0.0) for r in records))
            rows[name]["wall"].append(wall)
            print(f"  [{name}] run {i + 1}: {rows[name]['epochs'][-1]} epochs, best {rows[name]['best'][-1]:.4f}, "
                  f"{wall:.0f} s", file=sys.stderr, flush=True)
    full = rows["full grid (FIFO)"]
    out = [f"| 72 trials, {PRUNING_EPOCHS} epochs max, patience {PRUNING_PATIENCE} | epochs trained | vs full "
           "| best valid R@20 | vs full | search s |",
           "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        ep, best, wall = (statistics.median(r[k]) for k in ("epochs", "best", "wall"))
        ratios_ep = [a / b for a, b in zip(r["epochs"], full["epochs"])]
        ratios_best = [a / b for a, b in zip(r["best"], full["best"])]
        out.append(f"| {name} | {ep:.0f} | {100 * statistics.median(ratios_ep):.0f}% | {best:.4f} | "
                   f"{100 * (statistics.median(ratios_best) - 1):+.1f}% | {wall:.0f} |")
    return out


def bench_parallel(tmp: Path, repeats: int) -> list[str]:
    times = {1: [], 2: []}
    for i in range(repeats):
        for conc in (1, 2):
            spec = write_spec(tmp, f"parallel{conc}", TRAINER % (20, 20) + f"""
backbones: [clear]
arms:
  full: {{k: [2, 4, 8, 16], strength: [0.5, 0.9]}}
max_concurrent: {conc}
""")
            spec.write_text(spec.read_text().replace(DATA, OVERHEAD_DATA))  # trials of seconds, not 0.6 s
            _, wall, records = harness_run(spec, tmp / f"parallel-{i}")
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
    parser.add_argument("--pruners", default=",".join(PRUNERS[1:]),
                        help=f"pruning part: schedulers besides the full grid, from {', '.join(PRUNING_SCHEDULERS)}")
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
            lines = {"overhead": bench_overhead, "pruning": bench_pruning, "parallel": bench_parallel}[part](tmp, args.repeats)
            print(f"\n### {part}\n")
            print("\n".join(lines), flush=True)
    load = os.getloadavg()
    print(f"\nload average after: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
