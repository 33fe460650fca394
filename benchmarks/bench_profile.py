"""Where each backbone's CPU epoch goes, at full Baby: torch.profiler over one epoch after a warm-up epoch.

For every backbone (default: all registered), on the real Baby graph with semi-synthetic 4096/384-d features,
projection off, emb 64, batch 2048, ``--threads`` threads: one warm-up epoch, one timed epoch (the s/epoch
reported), then one profiled epoch (training only, ``Trainer._train_epoch``); the kinds' seconds are the profiled
epoch's, which the profiler slows by its per-op overhead (the "profiled s" column).
The profiler's self CPU time is split by kind:

* products: ``mm``, ``addmm``, ``bmm``, ``baddbmm``, ``matmul``, ``linear``: dense GEMMs AND the CSR graph products,
  which torch dispatches to the same ``addmm``/``mm`` ops (the profiler cannot tell them apart by name);
* sparse: CSR/COO products (``_sparse_*``, ``sparse_mm``, ``spmm``, ``_to_sparse``);
* gather/scatter: ``index_select``, ``index_add_``, ``scatter*``, ``gather``, ``embedding*``, ``index``;
* optimizer: everything under ``Optimizer.step`` (Adam);
* autograd bookkeeping and elementwise: the rest of the recorded ops;
* Python: the epoch's wall time not inside any recorded op.

No FLOP count: with ``with_flops`` the profiler slows the epoch 5x (LightGCN 1.2 -> 6.2 s: it records every op's
shapes) and counts a CSR product as the dense product of its shapes (41,692 GFLOP for one LightGCN epoch), so it is
off. This CPU's GEMM rate (one large ``torch.mm``) is printed for scale.

    .venv/bin/python benchmarks/bench_profile.py --threads 2                     # every backbone
    .venv/bin/python benchmarks/bench_profile.py --backbones freedom vbpr --threads 2
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_INTER = REPO.parent / "shared" / "data" / "amazon" / "baby" / "baby.inter"
GEMM = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear", "aten::addbmm")
SPARSE = ("sparse", "spmm", "_to_sparse", "aten::_sparse", "csr", "coo")
GATHER = ("index_select", "index_add", "scatter", "gather", "embedding", "aten::index", "index_put", "take")


def peak_gflops(threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(3):
        torch.mm(a, b)
    return 3 * 2 * 4096**3 / (time.perf_counter() - start) / 1e9


def profile_backbone(backbone: str, dataset, threads: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from clear_tune.config import TrainConfig
    from clear_tune.train import Trainer

    cfg = TrainConfig(
        backbone=backbone,
        projection={"mode": "off"},
        emb_dim=64,
        batch_size=2048,
        epochs=4,
        eval_every=10,
        device="cpu",
        threads=threads,
        seed=0,
    )
    trainer = Trainer(cfg, dataset)
    torch.set_num_threads(threads)
    trainer._train_epoch(1)  # warm-up: graphs built, caches filled, allocator warm
    start = time.perf_counter()
    trainer._train_epoch(2)  # the epoch's time without the profiler's per-op overhead
    wall = time.perf_counter() - start
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        trainer._train_epoch(3)
        profiled_wall = time.perf_counter() - start
    kinds = {"products": 0.0, "sparse": 0.0, "gather/scatter": 0.0, "optimizer": 0.0, "other ops": 0.0}
    events = prof.key_averages()
    optimizer = sum(e.cpu_time_total for e in events if "Optimizer.step" in e.key) / 1e6
    for e in events:
        self_s = e.self_cpu_time_total / 1e6
        name = e.key
        if name.startswith("Optimizer.") or name.startswith("ProfilerStep"):
            continue
        if name in GEMM:
            kinds["products"] += self_s
        elif any(tag in name for tag in SPARSE):
            kinds["sparse"] += self_s
        elif any(tag in name for tag in GATHER):
            kinds["gather/scatter"] += self_s
        else:
            kinds["other ops"] += self_s
    # ops under Optimizer.step were counted above by kind too (Adam's elementwise): move them to "optimizer"
    kinds["other ops"] = max(0.0, kinds["other ops"] - optimizer)
    kinds["optimizer"] = optimizer
    # an op's self time is wall time on the calling thread (its intra-op threads run inside it): the rest is Python
    kinds["python"] = max(0.0, profiled_wall - sum(kinds.values()))
    return {
        "backbone": backbone,
        "wall_s": wall,
        "profiled_wall_s": profiled_wall,
        "kinds": kinds,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--inter", type=Path, default=DEFAULT_INTER)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    from clear_tune.data import make_semi_synthetic
    from clear_tune.models import BACKBONES

    dataset = make_semi_synthetic(str(args.inter))
    print(dataset.describe(), flush=True)
    peak = peak_gflops(args.threads)
    print(f"load average {os.getloadavg()}; this CPU's GEMM rate: {peak:.0f} GFLOP/s at {args.threads} thread(s)")
    rows = []
    for backbone in args.backbones or sorted(BACKBONES):
        row = profile_backbone(backbone, dataset, args.threads)
        rows.append(row)
        k = row["kinds"]
        print(
            f"{backbone}: {row['wall_s']:.2f} s/epoch ({row['profiled_wall_s']:.2f} profiled); "
            + ", ".join(f"{name} {value:.2f}" for name, value in k.items()),
            flush=True,
        )
    print(f"\nload average after {os.getloadavg()}\n")
    print(
        "| backbone | s/epoch | profiled s | products s | sparse s | gather/scatter s | optimizer s | other ops s "
        "| Python s "
        "|"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        k = row["kinds"]
        print(
            f"| {row['backbone']} | {row['wall_s']:.2f} | {row['profiled_wall_s']:.2f} | {k['products']:.2f} "
            f"| {k['sparse']:.2f} "
            f"| {k['gather/scatter']:.2f} "
            f"| {k['optimizer']:.2f} | {k['other ops']:.2f} | {k['python']:.2f} |"
        )


if __name__ == "__main__":
    main()
