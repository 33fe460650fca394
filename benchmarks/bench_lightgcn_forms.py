"""LightGCN: MMRec's form or the paper's? What the regulariser's form and the negatives' pool change on Baby.

MMRec's LightGCN (clear-tune's default) regularises with its ``EmbLoss`` (unsquared Frobenius norms of the
batch's layer-0 rows, / B) and draws negatives among the items seen in train; the LightGCN paper's code uses
``Σ ½‖·‖² / B`` and draws over all items. This trains the four combinations on the real Baby graph
(interaction-only: LightGCN reads no features) at MMRec's default point (n_layers 2, reg_weight 1e-4,
lr 1e-3, emb 64, batch 2048), ``--seeds`` seeds each, and prints best valid R@20 (mean ± std), test R@20 at
the best-valid epoch, and each variant's paired difference to MMRec's form over seeds. Not a test.

    .venv/bin/python benchmarks/bench_lightgcn_forms.py                 # Baby, 3 seeds, 30 epochs
    .venv/bin/python benchmarks/bench_lightgcn_forms.py --epochs 4 --seeds 1   # a quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BABY = REPO.parent / "shared" / "data" / "amazon" / "baby"

VARIANTS = {  # name -> (model_options.regulariser, trainer negatives)
    "mmrec (emb_loss, train items)": ("emb_loss", "train_items"),
    "half_square, train items": ("half_square", "train_items"),
    "emb_loss, all items": ("emb_loss", "all_items"),
    "paper (half_square, all items)": ("half_square", "all_items"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reg-weight", type=float, default=1e-4)
    args = parser.parse_args(argv)
    if not (BABY / "baby.inter").exists():
        print(f"skipped: {BABY} is absent", file=sys.stderr)
        return 0
    import torch

    from clear_tune.config import TrainConfig
    from clear_tune.data import load_mmrec
    from clear_tune.train import Trainer

    torch.set_num_threads(args.threads)
    dataset = load_mmrec(BABY.parent, "baby")
    rows: dict[str, list[tuple[float, float, int]]] = {}
    for name, (regulariser, negatives) in VARIANTS.items():
        for s in range(args.seeds):
            cfg = TrainConfig(
                data=f"mmrec:{BABY}",
                backbone="lightgcn",
                projection={"mode": "off"},
                model_options={"n_layers": 2, "regulariser": regulariser},
                negatives=negatives,
                emb_dim=64,
                lr=1e-3,
                reg_weight=args.reg_weight,
                batch_size=2048,
                epochs=args.epochs,
                patience=args.epochs,
                eval_every=args.eval_every,
                seed=999 + s,
                threads=args.threads,
            )
            start = time.perf_counter()
            [result] = Trainer(cfg, dataset).fit()
            rows.setdefault(name, []).append(
                (result["valid"]["recall@20"], result["test"]["recall@20"], result["best_epoch"])
            )
            print(
                f"  {name:32s} seed {999 + s}: best valid R@20 {result['valid']['recall@20']:.4f} "
                f"(epoch {result['best_epoch']}), test {result['test']['recall@20']:.4f}, "
                f"{time.perf_counter() - start:.0f} s",
                file=sys.stderr,
            )
    base = [v for v, _, _ in rows[next(iter(VARIANTS))]]
    print(
        f"\nLightGCN on Baby ({dataset.n_users} users, {dataset.n_items} items), {args.seeds} seeds, "
        f"{args.epochs} epochs, load average {os.getloadavg()[0]:.2f}\n"
    )
    print("| variant | best valid R@20 | test R@20 at best | best epoch | paired Δ valid vs MMRec's form |")
    print("|---|---|---|---|---|")
    for name, values in rows.items():
        valid = [v for v, _, _ in values]
        test = [t for _, t, _ in values]
        diff = [a - b for a, b in zip(valid, base)]

        def spread(xs: list[float]) -> str:
            return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs):.4f}" if len(xs) > 1 else f"{xs[0]:.4f}"

        delta = (
            "—"
            if values is rows[next(iter(VARIANTS))]
            else (f"{statistics.mean(diff):+.4f}" + (f" ± {statistics.stdev(diff):.4f}" if len(diff) > 1 else ""))
        )
        print(
            f"| {name} | {spread(valid)} | {spread(test)} | {statistics.median(e for _, _, e in values):g} | {delta} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
