"""Full-ranking evaluation speed on the real Amazon Baby valid split (target: <= 1.5 s on 2 CPU cores).

Scores all Baby valid users against all 7,050 items with random 64-d embeddings (the speed does not
depend on the embedding values), masking train items, top-20, Recall/NDCG/Precision@{10,20}.

    .venv/bin/python benchmarks/bench_eval.py [--data ../shared/data/amazon/baby/baby.inter] [--repeats 7]
    .venv/bin/python benchmarks/bench_eval.py --with-test --extras --threads 2   # what per-user values and the
        # beyond-accuracy metrics cost: ranking only / + beyond accuracy / + per-user values, interleaved
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from clear_tune.metrics import RankingEvaluator

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon" / "baby" / "baby.inter"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT, help="an MMRec .inter file")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch-users", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--with-test", action="store_true", help="rank once, score valid and test (as the trainer does)"
    )
    parser.add_argument(
        "--extras",
        action="store_true",
        help="with --with-test: time ranking only, + beyond-accuracy metrics, + per-user values (interleaved)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    frame = pd.read_csv(args.data, sep="\t")
    pairs = frame[["userID", "itemID"]].to_numpy(np.int64)
    split = frame["x_label"].to_numpy()
    n_users, n_items = int(pairs[:, 0].max()) + 1, int(pairs[:, 1].max()) + 1

    t0 = time.perf_counter()
    evaluator = RankingEvaluator(
        n_users=n_users,
        n_items=n_items,
        train=pairs[split == 0],
        heldout={"valid": pairs[split == 1], "test": pairs[split == 2]} if args.with_test else pairs[split == 1],
        topk=[10, 20],
        batch_users=args.batch_users,
        device=args.device,
    )
    build = time.perf_counter() - t0

    gen = torch.Generator().manual_seed(0)
    U = torch.randn(n_users, 64, generator=gen).to(args.device)
    Ei = torch.randn(n_items, 64, generator=gen).to(args.device)
    if args.extras:
        extras(args, n_users, n_items, pairs, split, U, Ei)
        return
    evaluator(U, Ei)  # warm-up
    times, cpu_times = [], []  # wall seconds, and CPU seconds of this process (robust to a busy machine)
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        evaluator(U, Ei)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    print(
        f"{args.data.name}{' valid+test' if args.with_test else ''}: "
        f"{evaluator.split_sizes} eval users x {n_items:,} items, "
        f"threads={torch.get_num_threads()} batch_users={args.batch_users}: build {build:.3f} s, "
        f"eval median {statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f}, n={len(times)}), "
        f"CPU time median {statistics.median(cpu_times):.3f} s, "
        f"load average {os.getloadavg()[0]:.1f}"
    )


def extras(args: argparse.Namespace, n_users: int, n_items: int, pairs, split, U, Ei) -> None:
    variants = {
        "ranking only": {"beyond_accuracy": False, "per_user": False},
        "+ beyond accuracy": {"beyond_accuracy": True, "per_user": False},
        "+ beyond accuracy + per-user values": {"beyond_accuracy": True, "per_user": True},
    }
    evaluators = {
        name: RankingEvaluator(
            n_users=n_users,
            n_items=n_items,
            train=pairs[split == 0],
            heldout={"valid": pairs[split == 1], "test": pairs[split == 2]},
            topk=[10, 20],
            batch_users=args.batch_users,
            device=args.device,
            **options,
        )
        for name, options in variants.items()
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for evaluator in evaluators.values():
        evaluator(U, Ei)  # warm-up
    for _ in range(args.repeats):  # interleaved, so a busy moment hits every variant alike
        for name, evaluator in evaluators.items():
            t0 = time.perf_counter()
            evaluator(U, Ei)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["ranking only"])
    print(f"{args.data.name} valid+test, threads={torch.get_num_threads()}, {args.repeats} rounds:")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:38s} median {median:.3f} s ({median / base:.2f}x), min {min(values):.3f} s")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
