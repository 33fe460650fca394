"""Per-backbone CPU cost at Baby scale: seconds per training epoch, per full evaluation, peak RSS, graph build.

Baby scale = the real Baby interaction graph + semi-synthetic 4096-d image / 384-d text features
(``clear_tune.data.make_semi_synthetic``). Every backbone runs in its own child process (so peak RSS is
its own), through the real trainer (``clear_tune.train.Trainer``), with CLEAR's projection on (k=8,
λ=0.9, refreshed every epoch) for the feature backbones. Not a test: numbers go to BENCHMARKS.md.

    .venv/bin/python benchmarks/bench_backbones.py                      # all five, 3 epochs, 1 thread
    .venv/bin/python benchmarks/bench_backbones.py --backbones lightgcn clear --epochs 5
    .venv/bin/python benchmarks/bench_backbones.py --breakdown    # ms per batch: clear's parts vs lightgcn
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
    np.savez(
        path,
        train=ds.train,
        valid=ds.valid,
        test=ds.test,
        image=ds.image_feat,
        text=ds.text_feat,
        shape=np.array([ds.n_users, ds.n_items]),
    )


def load_dataset(path: Path):
    from clear_tune.data import RecDataset

    z = np.load(path)
    return RecDataset(
        name="baby",
        kind="semi-synthetic",
        n_users=int(z["shape"][0]),
        n_items=int(z["shape"][1]),
        train=z["train"],
        valid=z["valid"],
        test=z["test"],
        image_feat=z["image"],
        text_feat=z["text"],
    )


AMP = os.environ.get("BENCH_AMP") == "1"  # --amp: bf16 autocast for the feature backbones (set for children)


def make_trainer(backbone: str, ds, epochs: int):
    """A trainer that will not evaluate during the ``epochs`` timed epochs (evaluation is timed apart)."""
    from clear_tune.config import TrainConfig
    from clear_tune.models import backbone_uses_features
    from clear_tune.train import Trainer

    projection = {"k": 8, "strength": 0.9} if backbone_uses_features(backbone) else {"mode": "off"}
    cfg = TrainConfig(
        backbone=backbone,
        projection=projection,
        epochs=epochs + 1,
        eval_every=epochs + 1,
        device="cpu",
        amp=AMP and backbone_uses_features(backbone),
    )
    return Trainer(cfg, ds)


def train_one_epoch(trainer) -> float:
    """One training epoch through the real trainer; returns this process's CPU seconds for it."""
    start = time.process_time()
    trainer.fit(on_epoch=lambda *_: True)  # stop after one epoch; the next fit() resumes
    return time.process_time() - start


def run_one(backbone: str, data_path: Path, epochs: int) -> dict:
    """Measure one backbone in this process (the child)."""
    import torch

    from clear_tune.config import TrainConfig
    from clear_tune.models import backbone_uses_features, build_model
    from clear_tune.train import model_context

    ds = load_dataset(data_path)
    projection = {"k": 8, "strength": 0.9} if backbone_uses_features(backbone) else {"mode": "off"}
    start = time.perf_counter()
    ctx = model_context(ds, torch.device("cpu"))
    build_model(TrainConfig(backbone=backbone, projection=projection), ctx)  # cold: builds, caches the graphs
    build_s = time.perf_counter() - start

    trainer = make_trainer(backbone, ds, epochs)  # same ctx (memoised per dataset), warm graphs
    cpu_s = [train_one_epoch(trainer) for _ in range(epochs)]
    eval_s = []
    for _ in range(3):
        start = time.perf_counter()
        trainer.evaluate()  # embeddings + full ranking of all items for the valid and test users
        eval_s.append(time.perf_counter() - start)
    return {
        "backbone": backbone,
        "epoch_s": trainer.sec_train,
        "median_epoch_s": statistics.median(trainer.sec_train),
        "median_epoch_cpu_s": statistics.median(cpu_s),
        "median_eval_s": statistics.median(eval_s),
        "build_s": build_s,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "threads": torch.get_num_threads(),
    }


def run_pair(first: str, second: str, data_path: Path, epochs: int) -> dict:
    """Train two backbones in one process, alternating epochs, so both see the same machine load."""
    import torch

    ds = load_dataset(data_path)
    trainers = {name: make_trainer(name, ds, epochs) for name in (first, second)}
    cpu_s: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(epochs):
        for name, trainer in trainers.items():
            cpu_s[name].append(train_one_epoch(trainer))
    wall = {name: statistics.median(t.sec_train) for name, t in trainers.items()}
    cpu = {name: statistics.median(v) for name, v in cpu_s.items()}
    return {
        "pair": [first, second],
        "epoch_s": {n: t.sec_train for n, t in trainers.items()},
        "epoch_cpu_s": cpu_s,
        "median_epoch_s": wall,
        "median_epoch_cpu_s": cpu,
        "ratio": wall[second] / wall[first],
        "cpu_ratio": cpu[second] / cpu[first],
        "threads": torch.get_num_threads(),
    }


def run_breakdown(data_path: Path, repeats: int = 10) -> dict:
    """Milliseconds per mini-batch step of clear and lightgcn, and of clear's parts (one thread)."""
    import torch

    from clear_tune.graphs import propagate

    ds = load_dataset(data_path)
    trainers = {name: make_trainer(name, ds, 1) for name in ("lightgcn", "clear")}
    clear = trainers["clear"].model
    clear.start_epoch(1)
    gen = torch.Generator().manual_seed(0)
    users_all, items_all = trainers["clear"].train_users, trainers["clear"].train_items

    def step(trainer):
        def run() -> None:
            idx = torch.randint(0, users_all.numel(), (2048,), generator=gen)
            neg = torch.randint(0, ds.n_items, (2048,), generator=gen)
            loss = trainer.model.loss(users_all[idx], items_all[idx], neg)
            trainer.optimizer.zero_grad()
            loss.backward()
            trainer.optimizer.step()

        return run

    def encoders() -> None:
        V, T = clear.encode()  # all items, as every clear batch does
        (V.sum() + T.sum()).backward()

    def one_gcn() -> None:
        ego = torch.randn(ds.n_users + ds.n_items, clear.dim, requires_grad=True)
        propagate(clear.train_graph, ego, clear.n_layers).sum().backward()

    def ms(fn) -> float:
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - start) / repeats * 1e3

    return {
        "lightgcn step": ms(step(trainers["lightgcn"])),
        "clear step": ms(step(trainers["clear"])),
        "clear encoders fwd+bwd": ms(encoders),
        "one 64-wide GCN fwd+bwd": ms(one_gcn),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inter", type=Path, default=DEFAULT_INTER, help="MMRec .inter file (default: Baby)")
    parser.add_argument("--backbones", nargs="+", default=BACKBONES, choices=BACKBONES)
    parser.add_argument("--epochs", type=int, default=3, help="training epochs per backbone (median reported)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1: two threads on a shared 2-core machine thrash)",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--pair",
        nargs=2,
        metavar=("BASE", "OTHER"),
        default=["lightgcn", "clear"],
        help="also time these two alternating epochs in one process (default: lightgcn clear)",
    )
    parser.add_argument(
        "--amp",
        action="store_true",
        help="bf16 autocast for the feature backbones (worth it on CPUs with AVX512-BF16 or AMX)",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="only time one mini-batch step of lightgcn and clear, and clear's parts",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--pair-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one or args.pair_child or (args.breakdown and args.data):  # child process
        import torch

        torch.set_num_threads(args.threads)
        if args.breakdown:
            print(json.dumps(run_breakdown(args.data)))
        elif args.pair_child:
            print(json.dumps(run_pair(*args.pair, args.data, args.epochs)))
        else:
            print(json.dumps(run_one(args.one, args.data, args.epochs)))
        return

    from clear_tune.data import make_semi_synthetic

    ds = make_semi_synthetic(args.inter)
    print(ds.describe(), flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "baby.npz"
        save_dataset(ds, data)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "BENCH_AMP": "1" if args.amp else "0"}
        common = ["--data", str(data), "--epochs", str(args.epochs), "--threads", str(args.threads)]

        def child(*extra: str) -> dict:
            out = subprocess.run([sys.executable, __file__, *extra, *common], capture_output=True, text=True, env=env)
            if out.returncode != 0:
                sys.exit(f"error: {' '.join(extra)} failed:\n{out.stderr[-3000:]}")
            return json.loads(out.stdout.strip().splitlines()[-1])

        if args.breakdown:
            for part, value in child("--breakdown").items():
                print(f"{part:26s} {value:7.1f} ms")
            return
        pair = child("--pair-child", "--pair", *args.pair) if args.pair else None
        if pair:
            print(f"paired {pair['pair']}: wall {pair['epoch_s']} CPU {pair['epoch_cpu_s']}", flush=True)
        for backbone in args.backbones:
            result = child("--one", backbone)
            results.append(result)
            print(
                f"{backbone:9s} epoch {result['median_epoch_s']:6.2f} s (CPU {result['median_epoch_cpu_s']:6.2f} s)  "
                f"eval {result['median_eval_s']:5.2f} s  "
                f"build {result['build_s']:5.2f} s  peak RSS {result['peak_rss_gb']:.2f} GB  "
                f"epochs {[round(s, 2) for s in result['epoch_s']]}",
                flush=True,
            )

    print(f"\nload average after the run: {os.getloadavg()}")
    print(
        "\n| backbone | s / epoch (wall, median) | CPU s / epoch (median) | s / full eval (valid+test users) "
        "| graph + model build s | peak RSS GB |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['backbone']} | {r['median_epoch_s']:.2f} | {r['median_epoch_cpu_s']:.2f} | {r['median_eval_s']:.2f} "
            f"| {r['build_s']:.2f} | {r['peak_rss_gb']:.2f} |"
        )
    by_name = {r["backbone"]: r for r in results}
    print(f"\ntargets: {TARGETS}")
    if "freedom" in by_name:
        print(f"freedom: {by_name['freedom']['median_epoch_s']:.2f} s/epoch (target <= 11)")
    if "clear" in by_name and "lightgcn" in by_name:
        ratio = by_name["clear"]["median_epoch_s"] / by_name["lightgcn"]["median_epoch_s"]
        print(f"clear / lightgcn epoch time, separate processes: {ratio:.2f}x (target <= 2)")
    if pair:
        base, other = pair["pair"]
        print(
            f"{other} / {base} epoch time, alternating epochs in one process: {pair['ratio']:.2f}x wall "
            f"({pair['median_epoch_s'][other]:.2f} s vs {pair['median_epoch_s'][base]:.2f} s), "
            f"{pair['cpu_ratio']:.2f}x CPU ({pair['median_epoch_cpu_s'][other]:.2f} s vs "
            f"{pair['median_epoch_cpu_s'][base]:.2f} s)"
        )
    print(f"max peak RSS: {max(r['peak_rss_gb'] for r in results):.2f} GB (target <= 3)")
    if args.json:
        args.json.write_text(json.dumps({"backbones": results, "pair": pair}, indent=2))


if __name__ == "__main__":
    main()
