"""CUDA figures: per-backbone cost at Baby scale, and fractional-GPU search throughput.

Part ``backbones``: the real Baby graph + semi-synthetic 4096-d / 384-d features on one CUDA GPU, each
backbone through the real trainer (CLEAR's projection on, k=8, λ=0.9, refreshed every epoch): median
seconds per training epoch, seconds per full evaluation of all valid+test users, peak GPU memory
(``torch.cuda.max_memory_allocated`` and the allocator's reserved peak) and graph build time.
Targets (issue 2): clear ≤ 0.25 s / epoch and ≤ 3.1 GB of GPU memory.

Part ``share``: the same grid run through ``python -m clear_tune.run`` twice, with ``gpus: 1`` per trial
(one trial at a time on the GPU) and with ``gpus: FRACTION`` (several trials share it); trials per hour
of wall clock, Ray start-up included. Not a test: numbers go to BENCHMARKS.md.

    python benchmarks/bench_gpu.py                          # both parts
    python benchmarks/bench_gpu.py --only backbones --epochs 5
    python benchmarks/bench_gpu.py --only share --fraction 0.25 --trials 16
    python benchmarks/bench_gpu.py --only share --spec search_spaces/smoke.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_INTER = REPO.parent / "shared" / "data" / "amazon" / "baby" / "baby.inter"
BACKBONES = [  # every built-in backbone (clear_tune.models.BACKBONES), cheapest first
    "bpr", "lightgcn", "vbpr", "freedom", "clear", "layergcn", "slmrec", "bm3", "dualgnn", "grcn", "mmgcn",
    "lattice", "mgcn", "smore", "lgmrec", "dragon", "mentor", "mmssl",
]  # fmt: skip


def bench_backbones(inter: Path, backbones: list[str], epochs: int, amp: bool, device: str = "cuda") -> list[dict]:
    import torch

    if device == "cpu":  # a quick check of this script on a machine without a GPU; the figures mean nothing
        for name in ("synchronize", "empty_cache", "reset_peak_memory_stats"):
            setattr(torch.cuda, name, lambda *a, **k: None)
        for name in ("max_memory_allocated", "max_memory_reserved"):
            setattr(torch.cuda, name, lambda *a, **k: 0)

    from clear_tune.config import TrainConfig
    from clear_tune.data import make_semi_synthetic
    from clear_tune.models import backbone_uses_features, build_model
    from clear_tune.train import Trainer, model_context

    start = time.perf_counter()
    ds = make_semi_synthetic(inter)
    print(ds.describe(), f"\n(generated in {time.perf_counter() - start:.1f} s)", flush=True)
    rows = []
    runs = [(b, False) for b in backbones] + ([("clear", True)] if amp and "clear" in backbones else [])
    for backbone, use_amp in runs:
        projection = {"k": 8, "strength": 0.9} if backbone_uses_features(backbone) else {"mode": "off"}
        cfg = TrainConfig(
            backbone=backbone,
            projection=projection,
            epochs=epochs + 1,
            eval_every=epochs + 1,
            device=device,
            amp=use_amp,
        )
        torch.cuda.synchronize()
        start = time.perf_counter()
        build_model(cfg, model_context(ds, torch.device(device)))  # cold: builds and caches this dataset's graphs
        torch.cuda.synchronize()
        build_s = time.perf_counter() - start
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        trainer = Trainer(cfg, ds)
        for _ in range(epochs + 1):  # the first epoch warms up kernels and the allocator
            trainer.fit(on_epoch=lambda *_: True)
        eval_s = []
        for _ in range(3):
            torch.cuda.synchronize()
            start = time.perf_counter()
            trainer.evaluate()
            torch.cuda.synchronize()
            eval_s.append(time.perf_counter() - start)
        row = {
            "backbone": backbone + (" (amp bf16)" if use_amp else ""),
            "epoch_s": trainer.sec_train,
            "median_epoch_s": statistics.median(trainer.sec_train[1:]),
            "median_eval_s": statistics.median(eval_s),
            "build_s": build_s,
            "peak_alloc_gb": torch.cuda.max_memory_allocated() / 2**30,
            "peak_reserved_gb": torch.cuda.max_memory_reserved() / 2**30,
        }
        rows.append(row)
        print(
            f"{row['backbone']:18s} epoch {row['median_epoch_s']:.3f} s  eval {row['median_eval_s']:.3f} s  "
            f"build {build_s:.2f} s  peak {row['peak_alloc_gb']:.2f} GB (reserved {row['peak_reserved_gb']:.2f})",
            flush=True,
        )
        del trainer
    print(
        "\n| backbone | s / epoch (median) | s / full eval | graph + model build s | peak GPU GB (allocated) "
        "| peak GPU GB (reserved) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['backbone']} | {r['median_epoch_s']:.3f} | {r['median_eval_s']:.3f} | {r['build_s']:.2f} "
            f"| {r['peak_alloc_gb']:.2f} | {r['peak_reserved_gb']:.2f} |"
        )
    return rows


SHARE_SPEC = """\
experiment: {name}
results: {results}
data: {{source: synthetic, options: {{n_users: 4000, n_items: 3000, d_v: 512, d_t: 128, seed: 0}}}}
backbones: [clear]
seeds: [{seeds}]
trainer: {{epochs: {epochs}, patience: {epochs}, emb_dim: 64, batch_size: 2048}}
arms:
  full: {{mode: fixed, k: [4, 8], strength: [0.5, 0.9]}}
search: {{kind: grid}}
resources: {{cpus: 1, gpus: {gpus}}}
max_concurrent: {concurrent}
"""


def share_spec(base: Path | None, *, name: str, results: Path, gpus: float, trials: int, epochs: int) -> str:
    """The benchmark grid, or ``base`` (e.g. the smoke spec) with only name, results and resources changed."""
    if base is None:
        seeds = ", ".join(str(s) for s in range(max(1, trials // 4)))  # 4 configs per seed
        return SHARE_SPEC.format(
            name=name, results=results, seeds=seeds, epochs=epochs, gpus=gpus, concurrent=int(round(1 / gpus))
        )
    import yaml

    spec = yaml.safe_load(base.read_text())
    spec.update(experiment=name, results=str(results), max_concurrent=int(round(1 / gpus)))
    spec["resources"] = {**spec.get("resources", {}), "gpus": gpus}
    return yaml.safe_dump(spec)


def bench_share(fraction: float, trials: int, epochs: int, logs: Path | None = None, base: Path | None = None) -> dict:
    """Wall-clock trials/hour of one grid at ``gpus: 1`` vs ``gpus: fraction`` per trial."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for gpus in (1.0, fraction):
            name = f"share_{str(gpus).replace('.', '_')}"
            spec = Path(tmp) / f"{name}.yaml"
            spec.write_text(
                share_spec(base, name=name, results=Path(tmp) / "results", gpus=gpus, trials=trials, epochs=epochs)
            )
            start = time.perf_counter()
            log = Path(logs or tmp) / f"{name}.log"
            with log.open("w") as fh:  # kept where --logs says, to read after a run that hangs or fails
                proc = subprocess.run(
                    [sys.executable, "-m", "clear_tune.run", str(spec), "--verbose", "1", "--no-report"],
                    cwd=REPO,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "RAY_AUTH_MODE": "disabled"},
                )
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                sys.exit(f"error: gpus={gpus} run failed:\n{log.read_text()[-4000:]}")
            from clear_tune.records import read_records

            records = read_records(Path(tmp) / "results" / name / "records")
            done = [r for r in records if r["status"] == "completed"]
            out[gpus] = {
                "wall_s": wall,
                "trials": len(done),
                "trials_per_hour": len(done) / wall * 3600,
                "median_sec_per_epoch": statistics.median(r["sec_per_epoch"] for r in done),
                "devices": sorted({r["device"] for r in done}),
            }
            print(
                f"gpus={gpus:<5g} {len(done)} trials in {wall:6.1f} s -> {out[gpus]['trials_per_hour']:7.0f} "
                f"trials/hour (median {out[gpus]['median_sec_per_epoch']:.3f} s/epoch per trial, "
                f"devices {out[gpus]['devices']})",
                flush=True,
            )
    ratio = out[fraction]["trials_per_hour"] / out[1.0]["trials_per_hour"]
    print(f"\nfractional ({fraction:g} GPU per trial) vs one trial per GPU: {ratio:.2f}x trials/hour")
    return {str(k): v for k, v in out.items()} | {"ratio": ratio}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("backbones", "share"))
    parser.add_argument("--inter", type=Path, default=DEFAULT_INTER, help="MMRec .inter file (default: Baby)")
    parser.add_argument("--backbones", nargs="+", default=BACKBONES, choices=BACKBONES)
    parser.add_argument("--epochs", type=int, default=5, help="timed training epochs per backbone")
    parser.add_argument("--no-amp", action="store_true", help="skip the extra clear run with bf16 autocast")
    parser.add_argument("--fraction", type=float, default=0.25, help="GPU fraction per trial in the shared run")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument(
        "--spec",
        type=Path,
        help="share part: run this spec (e.g. search_spaces/smoke.yaml) "
        "instead of the built-in grid, changing only its GPUs per trial and concurrency",
    )
    parser.add_argument("--share-epochs", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--logs", type=Path, help="keep the search runs' output here")
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    if args.device == "cpu":
        bench_backbones(args.inter, args.backbones, args.epochs, amp=False, device="cpu")
        return
    if not torch.cuda.is_available():
        sys.exit("error: no CUDA GPU is visible: this benchmark measures the GPU")
    print(f"device: {torch.cuda.get_device_name()} (torch {torch.__version__})", flush=True)
    results: dict = {"device": torch.cuda.get_device_name()}
    if args.only in (None, "backbones"):
        results["backbones"] = bench_backbones(args.inter, args.backbones, args.epochs, amp=not args.no_amp)
    if args.only in (None, "share"):
        results["share"] = bench_share(args.fraction, args.trials, args.share_epochs, args.logs, args.spec)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
