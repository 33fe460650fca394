"""Per-backbone CPU cost at Baby scale: seconds per training epoch, per full evaluation, peak RSS, graph build.

Baby scale = the real Baby interaction graph + semi-synthetic 4096-d image / 384-d text features
(``clear_tune.data.make_semi_synthetic``). Every backbone runs in its own child process (so peak RSS is
its own), through the real trainer (``clear_tune.train.Trainer``), with CLEAR's projection on (k=8,
λ=0.9, refreshed every epoch) for the feature backbones. Not a test: numbers go to BENCHMARKS.md.

    .venv/bin/python benchmarks/bench_backbones.py                      # all five, 3 epochs, 1 thread
    .venv/bin/python benchmarks/bench_backbones.py --backbones lightgcn clear --epochs 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_INTER = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon" / "baby" / "baby.inter"
BACKBONES = ["bpr", "lightgcn", "vbpr", "freedom", "clear"]
TARGETS = "freedom <= 11 s/epoch; clear <= 2x lightgcn (same run); peak RSS <= 3 GB"


def save_dataset(ds, path: Path) -> None:
    np.savez(path, train=ds.train, valid=ds.valid, test=ds.test, image=ds.image_feat, text=ds.text_feat,
             shape=np.array([ds.n_users, ds.n_items]))


def load_dataset(path: Path):
    from clear_tune.data import RecDataset

    z = np.load(path)
    return RecDataset(name="baby", kind="semi-synthetic", n_users=int(z["shape"][0]), n_items=int(z["shape"][1]),
                      train=z["train"], valid=z["valid"], test=z["test"], image_feat=z["image"], text_feat=z["text"])


def run_one(backbone: str, data_path: Path, epochs: int) -> dict:
    """Measure one backbone in this process (the child)."""
    import torch

    from clear_tune.config import TrainConfig
    from clear_tune.models import backbone_uses_features, build_model
    from clear_tune.train import Trainer, model_context

    ds = load_dataset(data_path)
    projection = {"k": 8, "strength": 0.9} if backbone_uses_features(backbone) else {"mode": "off"}
    cfg = TrainConfig(backbone=backbone, projection=projection, epochs=epochs, eval_every=epochs, device="cpu")

    start = time.perf_counter()
    ctx = model_context(ds, torch.device("cpu"))
    build_model(cfg, ctx)  # cold: builds and caches the graphs in ctx.cache
    build_s = time.perf_counter() - start

    trainer = Trainer(cfg, ds)  # same ctx (memoised per dataset), warm graphs
    trainer.fit()
    eval_s = []
    for _ in range(3):
        start = time.perf_counter()
        trainer.evaluate()  # embeddings + full ranking of all items for the valid and test users
        eval_s.append(time.perf_counter() - start)
    return {
        "backbone": backbone,
        "epoch_s": trainer.sec_train,
        "median_epoch_s": statistics.median(trainer.sec_train),
        "median_eval_s": statistics.median(eval_s),
        "build_s": build_s,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inter", type=Path, default=DEFAULT_INTER, help="MMRec .inter file (default: Baby)")
    parser.add_argument("--backbones", nargs="+", default=BACKBONES, choices=BACKBONES)
    parser.add_argument("--epochs", type=int, default=3, help="training epochs per backbone (median reported)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: two threads on a shared 2-core machine thrash)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:  # child process
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(run_one(args.one, args.data, args.epochs)))
        return

    from clear_tune.data import make_semi_synthetic

    ds = make_semi_synthetic(args.inter)
    print(ds.describe(), flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "baby.npz"
        save_dataset(ds, data)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        for backbone in args.backbones:
            out = subprocess.run(
                [sys.executable, __file__, "--one", backbone, "--data", str(data), "--epochs", str(args.epochs),
                 "--threads", str(args.threads)],
                capture_output=True, text=True, env=env,
            )
            if out.returncode != 0:
                sys.exit(f"error: {backbone} failed:\n{out.stderr[-3000:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(result)
            print(f"{backbone:9s} epoch {result['median_epoch_s']:6.2f} s  eval {result['median_eval_s']:5.2f} s  "
                  f"build {result['build_s']:5.2f} s  peak RSS {result['peak_rss_gb']:.2f} GB  "
                  f"epochs {[round(s, 2) for s in result['epoch_s']]}", flush=True)

    print(f"\nload average after the run: {os.getloadavg()}")
    print("\n| backbone | s / epoch (median) | s / full eval (valid+test users) | graph + model build s | peak RSS GB |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['backbone']} | {r['median_epoch_s']:.2f} | {r['median_eval_s']:.2f} | {r['build_s']:.2f} | "
              f"{r['peak_rss_gb']:.2f} |")
    by_name = {r["backbone"]: r for r in results}
    print(f"\ntargets: {TARGETS}")
    if "freedom" in by_name:
        print(f"freedom: {by_name['freedom']['median_epoch_s']:.2f} s/epoch (target <= 11)")
    if "clear" in by_name and "lightgcn" in by_name:
        ratio = by_name["clear"]["median_epoch_s"] / by_name["lightgcn"]["median_epoch_s"]
        print(f"clear / lightgcn epoch time: {ratio:.2f}x (target <= 2)")
    print(f"max peak RSS: {max(r['peak_rss_gb'] for r in results):.2f} GB (target <= 3)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
