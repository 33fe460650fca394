"""A native port against MMRec's own code, step for step: same initial weights, same batches, same trainer.

MMRec's model runs through clear-tune's MMRec-API adapter (``mmrec:NAME``, the peer kit's tree); the native port's
weights are overwritten with the adapter's initial weights (names and layouts mapped: ``MemberLinear`` stores
``W^T``), then both train ``--epochs`` epochs in clear-tune's trainer on one seed, so both see the same batches
and negatives. Printed: the loss of every epoch on both sides and the largest weight difference per parameter
after each epoch. Equal to float rounding means the port computes MMRec's loss and gradients; a gap between the
native port and MMRec's own loop (``bench_mmrec_parity.py``) then lies outside the model (the loop, the seeds).

    .venv/bin/python benchmarks/replay_native_vs_mmrec.py MGCN --users 1000 --epochs 2
    .venv/bin/python benchmarks/replay_native_vs_mmrec.py SMORE --users 1000 --epochs 2
    .venv/bin/python benchmarks/replay_native_vs_mmrec.py MGCN --study 6 --epochs 30   # each from its own draw

``--study N``: instead of one shared start, N seeds (999, 1000, ...) per side, each side from its own initial draw
(the adapter's is MMRec's for that seed), best valid R@20 over the epochs (evaluated every epoch): how far apart
the two are once only the draw differs.

Not a test (it needs the MMRec peer, ``../shared/peers/mmrec/README.md``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from bench_mmrec_parity import DEFAULT_INTER, DEFAULT_PEER, POINTS, REPO, write_folder

FIXED = {
    "image_raw": "image_embedding.weight",
    "text_raw": "text_embedding.weight",
    "user_emb.weight": "user_embedding.weight",
    "item_emb.weight": "item_id_embedding.weight",
}


def mmrec_name(native: str) -> tuple[str, bool]:
    """The MMRec parameter a native one starts from, and whether it is stored transposed (``MemberLinear``)."""
    if native in FIXED:
        return FIXED[native], False
    if native.endswith("complex_weight"):
        return native, False
    if m := re.fullmatch(r"(image|text)_encoder\.(weight|bias)", native):
        return f"{m[1]}_trs.{m[2]}", m[2] == "weight"
    if m := re.fullmatch(r"(query(?:_[vt])?)_(hidden|out)\.(weight|bias)", native):
        base = "query_common" if m[1] == "query" else m[1]
        return f"{base}.{0 if m[2] == 'hidden' else 2}.{m[3]}", m[3] == "weight"
    if m := re.fullmatch(r"(gate_\w+)\.(weight|bias)", native):
        return f"{m[1]}.0.{m[2]}", m[2] == "weight"
    raise KeyError(f"no MMRec counterpart known for the native parameter {native!r}: extend mmrec_name()")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="MMRec's model name (MGCN, SMORE, ...)")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=999)
    parser.add_argument("--inter", type=Path, default=DEFAULT_INTER)
    parser.add_argument("--peer", type=Path, default=DEFAULT_PEER)
    parser.add_argument("--study", type=int, metavar="N", help="N seeds per side, each from its own initial draw")
    args = parser.parse_args(argv)
    import torch

    from clear_tune._plugins import load_plugins, resolve_plugins
    from clear_tune.config import TrainConfig
    from clear_tune.train import Trainer

    torch.set_num_threads(1)
    backbone = args.model.lower()
    if backbone not in POINTS or POINTS[backbone][0] != args.model:
        sys.exit(f"error: {args.model!r} is not an MMRec model with a native port in POINTS")
    site = next((args.peer.parents[1] / "venv" / "lib").glob("python*/site-packages"), None)
    if site is not None:
        sys.path.append(str(site))  # after our own packages: only what the tree needs beyond them
    load_plugins(resolve_plugins([{"mmrec": str(args.peer)}]))
    root = REPO / ".peers" / "datasets"
    name = f"parity_{args.inter.stem}_u{args.users}"
    print(write_folder(args.inter, args.users, root, name, False))
    point = dict(POINTS[backbone][2])
    common: dict = {"data": f"mmrec:{root / name}", "emb_dim": 64, "batch_size": 2048, "epochs": args.epochs}
    common |= {"seed": args.seed, "device": "cpu", "threads": 1, "projection": {"mode": "off"}, "lr": 1e-3, **point}
    if args.study:
        study(args.model, backbone, common, args.study, args.epochs)
        return
    adapter = Trainer(TrainConfig(backbone=f"mmrec:{args.model}", **common))
    native = Trainer(TrainConfig(backbone=backbone, **common))
    start = adapter.model._weights_of(0)

    def counterparts(weights: dict[str, torch.Tensor]):
        """Each native parameter beside MMRec's weight it corresponds to, in the native layout."""
        for key, param in native.model.named_parameters():
            source, transposed = mmrec_name(key)
            w = weights[f"inner.{source}"]
            yield key, param, (w.t() if transposed else w)

    def largest_differences() -> dict[str, float]:
        return {
            key: float((param[0].detach() - w).abs().max())
            for key, param, w in counterparts(adapter.model._weights_of(0))
        }

    with torch.no_grad():
        for _, param, w in counterparts(start):
            param[0].copy_(w)
    for epoch in range(1, args.epochs + 1):
        (loss_a,), *_ = adapter._train_epoch(epoch)
        (loss_n,), *_ = native._train_epoch(epoch)
        diffs = largest_differences()
        worst = max(diffs, key=diffs.__getitem__)
        print(
            f"epoch {epoch}: loss MMRec's code {loss_a:.8f}, native {loss_n:.8f}; largest weight difference "
            f"{diffs[worst]:.2e} ({worst}); median over parameters {sorted(diffs.values())[len(diffs) // 2]:.2e}"
        )


def study(model: str, backbone: str, common: dict, n_seeds: int, epochs: int) -> None:
    """Best valid R@20 per seed, native port vs MMRec's code through the adapter, each from its own draw."""
    import statistics

    from clear_tune.config import TrainConfig
    from clear_tune.train import Trainer

    best: dict[str, list[float]] = {"native": [], "MMRec's code (adapter)": []}
    for seed in range(999, 999 + n_seeds):
        for side, name in (("native", backbone), ("MMRec's code (adapter)", f"mmrec:{model}")):
            trainer = Trainer(TrainConfig(backbone=name, **{**common, "seed": seed}))
            curve = []
            for epoch in range(1, epochs + 1):
                trainer._train_epoch(epoch)
                curve.append(trainer.evaluate_members()[0].metrics["valid"]["recall@20"])
            best[side].append(max(curve))
            print(f"seed {seed} {side}: best valid R@20 {max(curve):.4f} at epoch {curve.index(max(curve)) + 1}")
    (n, nat), (a, ada) = best.items()
    mn, sn, ma, sa = statistics.fmean(nat), statistics.stdev(nat), statistics.fmean(ada), statistics.stdev(ada)
    verdict = "PASS" if 0.95 <= mn / ma <= 1.05 or abs(mn - ma) <= max(sn, sa) else "FAIL"
    print(f"{model}: {n} {mn:.4f} ± {sn:.4f}, {a} {ma:.4f} ± {sa:.4f}, ratio {mn / ma:.3f}: {verdict}")


if __name__ == "__main__":
    try:
        main()
    except KeyError as exc:  # a port whose parameters this map does not know yet
        sys.exit(f"error: {exc.args[0]}")
