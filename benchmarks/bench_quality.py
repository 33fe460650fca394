"""Quality sanity check on the synthetic data (not a test): does CLEAR's projection help where redundancy
was planted? Trains the `clear` backbone (``--backbone`` for another) with fixed k = planted rank and λ = 0.9
versus the projection off (λ = 0), one dataset + model seed per run, under the paper's protocol (early stopping
on valid Recall@20, test at the best-valid epoch), and prints test Recall@20 per seed and the paired gap.

    .venv/bin/python benchmarks/bench_quality.py [--seeds 0 1 2] [--data-option KEY=VALUE ...]
        [--epochs 400] [--patience 20] [--strength 0.9]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from clear_tune.config import TrainConfig
from clear_tune.data import make_synthetic
from clear_tune.train import Trainer


def parse_options(pairs: list[str]) -> dict[str, float]:
    return {key: float(value) for key, _, value in (pair.partition("=") for pair in pairs)}


def run_arm(dataset, *, backbone: str, seed: int, projection: dict, epochs: int, patience: int) -> dict:
    cfg = TrainConfig(backbone=backbone, projection=projection, epochs=epochs, patience=patience, seed=seed,
                      device="cpu")  # fmt: skip
    start = time.perf_counter()
    [result] = Trainer(cfg, dataset).fit()
    result["wall_s"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--patience", type=int, default=20)
    parser.add_argument("--strength", type=float, default=0.9)
    parser.add_argument("--backbone", default="clear", help="clear (the check) or another feature backbone")
    args = parser.parse_args()
    torch.set_num_threads(1)
    options = parse_options(args.data_option)
    options = {k: int(v) if v.is_integer() and k in {"n_users", "n_items", "d_v", "d_t", "planted_rank", "pref_dim"}
               else v for k, v in options.items()}  # fmt: skip

    rows = []
    for seed in args.seeds:
        dataset = make_synthetic(seed=seed, **options)
        rank = dataset.provenance["planted_rank"]
        arm = dict(backbone=args.backbone, seed=seed, epochs=args.epochs, patience=args.patience)
        on = run_arm(dataset, projection={"mode": "fixed", "k": rank, "strength": args.strength}, **arm)
        off = run_arm(dataset, projection={"mode": "off"}, **arm)
        rows.append((seed, on, off))
        print(
            f"seed {seed}: {args.backbone} + CLEAR k={rank} λ={args.strength}: test R@20 {on['test']['recall@20']:.4f} "
            f"(best epoch {on['best_epoch']}, {on['wall_s']:.0f} s) | λ=0: {off['test']['recall@20']:.4f} "
            f"(best epoch {off['best_epoch']}, {off['wall_s']:.0f} s) "
            f"| gap {on['test']['recall@20'] - off['test']['recall@20']:+.4f}",
            flush=True,
        )
    on_r = [r[1]["test"]["recall@20"] for r in rows]
    off_r = [r[2]["test"]["recall@20"] for r in rows]
    gaps = [a - b for a, b in zip(on_r, off_r)]

    def spread(xs: list[float]) -> float:
        return statistics.stdev(xs) if len(xs) > 1 else 0.0

    print(f"data options: {options or 'defaults'}; dataset: {rows[0][1]['dataset'].get('users')} users")
    print(f"CLEAR λ={args.strength}: mean test R@20 {statistics.mean(on_r):.4f} ± {spread(on_r):.4f}")
    print(f"λ=0 (off):     mean test R@20 {statistics.mean(off_r):.4f} ± {spread(off_r):.4f}")
    print(f"paired gap:    {statistics.mean(gaps):+.4f} ± {spread(gaps):.4f}; CLEAR better in "
          f"{sum(g > 0 for g in gaps)}/{len(gaps)} seeds")  # fmt: skip


if __name__ == "__main__":
    main()
