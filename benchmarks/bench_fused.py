"""Fused trials: member exactness, trials per hour fused vs unfused, and throughput by array size.

    .venv/bin/python benchmarks/bench_fused.py exactness                 # every backbone, fused vs alone
    .venv/bin/python benchmarks/bench_fused.py grid --scale baby         # the paper's CLEAR grid, 1 seed, 10 epochs
    .venv/bin/python benchmarks/bench_fused.py grid --scale baby --grid-epochs 5   # the same, 5 epochs per trial
    .venv/bin/python benchmarks/bench_fused.py grid --spec search_spaces/grid.yaml   # the default main job
    .venv/bin/python benchmarks/bench_fused.py members --scale baby      # s/epoch per member for R = 1, 2, 4, 8 ...
    .venv/bin/python benchmarks/bench_fused.py grid --scale baby --device cuda --gpu-fractions 1 0.25   # on a GPU

* ``exactness``: per backbone, three configs trained as one array and each alone (same seed) on the default
  synthetic set, plus CLEAR at Baby scale (where the raw-feature product is a wide GEMM): best epochs, the
  largest relative difference of the valid/test metrics, and the largest loss difference.
* ``grid``: the same search through the harness (real local Ray, ``max_concurrent`` trials at a time, the
  same resources) with fusion on and off; wall time of ``tuner.fit`` and trials per hour. With
  ``--device cuda`` each ``--gpu-fractions`` value is one unfused run (1: one trial per GPU; 0.25: four
  trials share it) beside the fused run, GPU utilisation sampled with ``nvidia-smi`` and peak memory per
  trial from the records.
* ``members``: one array of R CLEAR members (λ × k grid points) for a few epochs through the trainer:
  seconds per epoch for the array and per member (how throughput grows with R; the CPU sweet spot sets
  ``fusion.max_members: auto``).

Not a test: figures go to BENCHMARKS.md. Run it alone, and set ``--threads`` (default 1 per trial).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BABY = REPO.parent / "shared" / "data" / "amazon" / "baby" / "baby.inter"
DATA = {
    "synthetic": "{source: synthetic, options: {n_users: 500, n_items: 300, d_v: 64, d_t: 32, seed: 0}}",
    "baby": f"{{source: 'semi:{BABY}', options: {{d_v: 4096, d_t: 384, seed: 0}}}}",
}
PAPER_GRID = """
experiment: {name}
data: {data}
backbones: [clear]
seeds: [0]
trainer: {{epochs: {epochs}, patience: {epochs}, eval_every: 5, emb_dim: 64, device: {device}, threads: {threads}}}
projection: {{mode: fixed, k: [2, 4, 8, 16, 20], strength: [0.3, 0.5, 0.7, 0.9]}}
resources: {{cpus: {cpus}, gpus: {gpus}}}
max_concurrent: {concurrent}
checkpoint_interval_s: 60
fusion: {fusion}
"""


def exactness(args: argparse.Namespace) -> None:
    import torch

    from clear_tune.config import TrainConfig
    from clear_tune.data import load_dataset
    from clear_tune.models import BACKBONES
    from clear_tune.train import Trainer

    torch.set_num_threads(args.threads)
    cases = [(b, "synthetic") for b in sorted(BACKBONES)] + [("clear", "baby")]
    print("| backbone | data | members | best epochs fused / alone | max rel. metric diff | max loss diff |")
    print("|---|---|---|---|---|---|")
    for backbone, scale in cases:
        if scale == "baby":
            ds = load_dataset(f"semi:{BABY}", d_v=4096, d_t=384, seed=0)
        else:
            ds = load_dataset("synthetic", n_users=500, n_items=300, d_v=64, d_t=32, seed=0)
        base = dict(
            backbone=backbone,
            emb_dim=64,
            epochs=args.epochs,
            patience=args.epochs,
            device="cpu",
            threads=args.threads,
            batch_size=2048 if scale == "baby" else 1024,
        )
        if BACKBONES[backbone].uses_features:
            configs = [
                TrainConfig(projection=p, **base)
                for p in ({"k": 4, "strength": 0.9}, {"k": 16, "strength": 0.5}, {"mode": "off"})
            ]
        else:
            configs = [TrainConfig(projection={"mode": "off"}, reg_weight=w, **base) for w in (1e-4, 1e-3, 1e-2)]
        fused = Trainer(configs, ds).fit()
        alone = [Trainer(c, ds).fit()[0] for c in configs]
        rel, loss = 0.0, 0.0
        for f, a in zip(fused, alone):
            for split in ("valid", "test"):
                for k, v in a[split].items():
                    rel = max(rel, abs(f[split][k] - v) / max(abs(v), 1e-12))
            loss = max([loss, *(abs(x["loss"] - y["loss"]) for x, y in zip(f["curve"], a["curve"]))])
        epochs = f"{[f['best_epoch'] for f in fused]} / {[a['best_epoch'] for a in alone]}"
        print(f"| {backbone} | {scale} | {len(configs)} | {epochs} | {rel:.1e} | {loss:.1e} |", flush=True)


def _gpu_sampler(stop: threading.Event, samples: list[float]) -> None:
    while not stop.is_set():
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.split()
            samples.append(float(out[0]))
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return
        stop.wait(0.5)


def run_grid(spec_text: str, name: str, *, device: str) -> dict:
    """One search in a child process (its own Ray); wall seconds of the whole run and what the records say."""
    folder = Path(tempfile.mkdtemp(prefix="bench_fused_"))
    spec = folder / f"{name}.yaml"
    spec.write_text(spec_text)
    code = (
        f"import json, time; from clear_tune.run import run_search; t = time.perf_counter(); "
        f"o = run_search({str(spec)!r}, results={str(folder)!r}, verbose=0, build_report=False); "
        f"print('RESULT ' + json.dumps({{'wall_s': time.perf_counter() - t, 'n': len(o.records)}}))"
    )
    samples: list[float] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_gpu_sampler, args=(stop, samples), daemon=True)
    if device == "cuda":
        sampler.start()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=6 * 3600)
    stop.set()
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(out.stdout[-3000:] + out.stderr[-3000:])
    result = json.loads(line[7:])
    records = [json.loads(p.read_text()) for p in (folder / name / "records").glob("*.json")]
    result.update(
        peak_mem_mb=max((r.get("peak_mem_mb") or 0) for r in records),
        gpu_util=statistics.mean(samples) if samples else None,
        trials_per_hour=3600 * len(records) / result["wall_s"],
        valid=statistics.mean(r["valid"].get("recall@20", math.nan) for r in records),
    )
    return result


def grid(args: argparse.Namespace) -> None:
    print(f"load average before: {os.getloadavg()}", flush=True)
    rows = []
    if args.spec is not None:
        text = args.spec.read_text()
        variants = [("fused", text), ("unfused", text + "\nfusion: {enabled: false}\n")]
    else:
        fill = dict(
            data=DATA[args.scale],
            device=args.device,
            threads=args.threads,
            cpus=args.threads,
            concurrent=args.concurrent,
            epochs=args.grid_epochs,
        )
        fused = {"enabled": "true", "max_members": args.max_members}
        variants = [
            (
                "fused",
                PAPER_GRID.format(
                    name="fused",
                    gpus=args.gpu_fractions[0] if args.device == "cuda" else 0,
                    fusion=json.dumps(fused).replace('"', ""),
                    **fill,
                ),
            )
        ]
        fractions = args.gpu_fractions if args.device == "cuda" else [0]
        for gpus in fractions:
            concurrent = max(args.concurrent, int(round(1 / gpus))) if gpus else args.concurrent
            variants.append(
                (
                    f"unfused-gpu{gpus:g}" if gpus else "unfused",
                    PAPER_GRID.format(
                        name="unfused", gpus=gpus, fusion="{enabled: false}", **{**fill, "concurrent": concurrent}
                    ),
                )
            )
    for label, text in variants:
        result = run_grid(text, "fused" if label == "fused" else "unfused", device=args.device)
        rows.append((label, result))
        print(
            f"{label:16s} {result['n']} trials in {result['wall_s']:.1f} s: {result['trials_per_hour']:.0f} trials/h, "
            f"peak {result['peak_mem_mb']:.0f} MB" + (f", GPU {result['gpu_util']:.0f}%" if result["gpu_util"] else ""),
            flush=True,
        )
    base = next(r for label, r in rows if label.startswith("unfused"))
    for label, result in rows:
        print(
            f"{label}: {result['trials_per_hour'] / base['trials_per_hour']:.2f}x the trials per hour of {rows[1][0]}"
        )
    print(f"load average after: {os.getloadavg()}")


def members(args: argparse.Namespace) -> None:
    import torch

    from clear_tune.config import TrainConfig
    from clear_tune.data import load_dataset
    from clear_tune.train import Trainer

    torch.set_num_threads(args.threads)
    ds = (
        load_dataset(f"semi:{BABY}", d_v=4096, d_t=384, seed=0)
        if args.scale == "baby"
        else load_dataset("synthetic", n_users=500, n_items=300, d_v=64, d_t=32, seed=0)
    )
    points = [(k, lam) for k in (2, 4, 8, 16, 20) for lam in (0.3, 0.5, 0.7, 0.9)]
    points = (points * 2)[: max(args.sizes)]
    print(f"load average before: {os.getloadavg()}", flush=True)
    print("| members | s/epoch (array) | s/epoch per member | speed-up per member vs 1 | peak memory (MB) |")
    print("|---|---|---|---|---|")
    single = None
    for size in args.sizes:
        configs = [
            TrainConfig(
                backbone="clear",
                projection={"k": k, "strength": lam},
                emb_dim=64,
                epochs=args.epochs,
                eval_every=args.epochs + 1,
                device=args.device,
                threads=args.threads,
            )
            for k, lam in points[:size]
        ]
        trainer = Trainer(configs, ds)
        trainer.fit()
        per_epoch = statistics.median(trainer.sec_train[1:] or trainer.sec_train)
        single = single or per_epoch
        memory = trainer.result(0)["peak_mem_mb"]
        print(
            f"| {size} | {per_epoch:.2f} | {per_epoch / size:.3f} | {single / (per_epoch / size):.2f}x "
            f"| {memory:.0f} |",
            flush=True,
        )
    print(f"load average after: {os.getloadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["exactness", "grid", "members"])
    parser.add_argument("--scale", choices=sorted(DATA), default="baby")
    parser.add_argument("--inter", type=Path, help="the Baby graph's .inter file (default: ../shared/data/amazon/baby)")
    parser.add_argument("--spec", type=Path, help="grid: run this spec fused and unfused instead of the paper's grid")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--concurrent", type=int, default=2, help="grid: trials at a time (the same for both runs)")
    parser.add_argument("--max-members", default="10", help="grid: fusion.max_members of the fused run")
    parser.add_argument("--gpu-fractions", type=float, nargs="+", default=[1.0, 0.25])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 10, 16, 20])
    parser.add_argument("--epochs", type=int, default=3, help="exactness, members: epochs per run")
    parser.add_argument("--grid-epochs", type=int, default=10, help="grid: epochs per trial of the paper's grid")
    args = parser.parse_args()
    if args.inter is not None:  # e.g. a copy carried to a GPU machine
        global BABY
        DATA["baby"] = DATA["baby"].replace(str(BABY), str(args.inter.resolve()))
        BABY = args.inter.resolve()
    {"exactness": exactness, "grid": grid, "members": members}[args.what](args)


if __name__ == "__main__":
    main()
