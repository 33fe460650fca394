"""MMRec's own models through clear-tune's MMRec-API adapter, against the same models run by MMRec (the peer).

The adapter side is clear-tune's trainer with ``plugins: [{mmrec: PEER}]`` and backbone ``mmrec:NAME``: the very
model code MMRec runs (the peer kit's patched tree), built, trained and ranked by clear-tune. The peer side is
MMRec's own loop (``run_peer.py`` through ``_mmrec_peer_shim.py``). Both read ONE MMRec-format folder (the real
graph of ``--inter``, default Amazon Baby, optionally its first ``--users`` users, with clear-tune's semi-synthetic
4096/384-d features), at ONE hyper-parameter point (:data:`POINTS`, pinned on both sides), for ``--seeds`` seeds,
``--epochs`` epochs, evaluating every epoch; runs alternate adapter, peer, adapter, ... Every run is a child process
with ``--threads`` torch/OpenMP/MKL threads (fixed: clear-tune's ``threads: auto`` governor is off here, as MMRec
has none). The adapter's child borrows the peer venv's site-packages (after its
own) for what the tree imports and clear-tune does not ship (torch_geometric for DRAGON).

Three tables (BENCHMARKS.md, *Your own model*):

1. parity: best valid R@20 adapter vs peer (mean ± std over seeds), train s/epoch, evaluation s (valid + test);
2. CLEAR through the adapter: k 4, λ 0.9 at the encoders ``clear_at`` names vs λ = 0, same seeds;
3. overhead: MMRec's FREEDOM through the adapter vs clear-tune's native ``freedom``, train s/epoch.

    .venv/bin/python benchmarks/bench_own_model.py --users 2000 --epochs 15 --seeds 3
    .venv/bin/python benchmarks/bench_own_model.py --models LGMRec --epochs 2 --seeds 1 --users 500   # quick look
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mmrec_parity import (
    DEFAULT_INTER,
    DEFAULT_PEER,
    PEER_DATASET_KEYS,
    SEED0,
    SHIM,
    compare,
    mean_std,
    run_child,
    summarise,
    table,
    write_folder,
)

# MMRec model -> (the point in MMRec's names, pinned on both sides; clear_at for the adapter)
POINTS: dict[str, tuple[dict, dict]] = {
    "LGMRec": ({"learning_rate": 1e-3}, {"image": "item_image_trs", "text": "item_text_trs"}),
    "MGCN": ({"learning_rate": 1e-3, "cl_loss": 0.01}, {"image": "image_trs", "text": "text_trs"}),
    "DRAGON": (
        {"learning_rate": 1e-3, "reg_weight": 1e-4, "aggr_mode": "add"},
        {"image": "v_gcn.MLP_1", "text": "t_gcn.MLP_1"},
    ),
    "SMORE": (
        {
            "learning_rate": 1e-3,
            "reg_weight": 1e-4,
            "n_ui_layers": 3,
            "image_knn_k": 10,
            "text_knn_k": 10,
            "dropout_rate": 0.1,
        },
        {"image": "image_trs", "text": "text_trs"},
    ),
    "MENTOR": (  # the authors' repository (Jinfeng-Xu/MENTOR): --peer .peers/mentor/src/src
        {
            "learning_rate": 1e-3,
            "reg_weight": 1e-3,
            "dropout": 0.5,
            "mask_weight_f": 1.5,
            "mask_weight_g": 1e-3,
            "align_weight": 0.1,
            "temp": 0.2,
        },
        # MENTOR builds image_trs/text_trs but never calls them: its encoders are the main GCNs' MLPs, as DRAGON's
        {"image": "v_gcn.MLP_1", "text": "t_gcn.MLP_1"},
    ),
    "FREEDOM": (
        {"learning_rate": 1e-3, "reg_weight": 1e-4, "dropout": 0.8},
        {"image": "image_trs", "text": "text_trs"},
    ),
}
CLEAR = {"mode": "fixed", "k": 4, "strength": 0.9}


def adapter_point(point: dict) -> dict:
    """The same point in TrainConfig terms: ``lr``, ``reg_weight`` and the rest as MMRec model options."""
    out: dict = {"lr": point.get("learning_rate", 1e-3), "model_options": {}}
    for key, value in point.items():
        if key == "reg_weight":
            out["reg_weight"] = value
        elif key != "learning_rate":
            out["model_options"][key] = value
    return out


def adapter_child(backbone: str, folder: str, seed: int, epochs: int, point: dict, peer: str, threads: int) -> dict:
    """Train through the adapter (or natively, for a clear-tune backbone name) in this process; the raw run."""
    import torch

    from clear_tune._plugins import load_plugins, resolve_plugins
    from clear_tune.config import TrainConfig
    from clear_tune.train import Trainer

    sys.path.append(os.environ["BENCH_PEER_SITE"])  # after our own packages: only what the tree needs beyond them
    load_plugins(resolve_plugins([{"mmrec": peer}]))
    cfg = TrainConfig(
        data=f"mmrec:{folder}",
        backbone=backbone,
        emb_dim=64,
        batch_size=2048,
        epochs=epochs,
        patience=epochs,
        eval_every=1,
        seed=seed,
        device="cpu",
        threads=threads,
        **point,
    )
    trainer = Trainer(cfg)
    tests: list[dict] = []
    evaluate = trainer.evaluate_members

    def evaluate_and_keep_test():  # the trainer keeps test only at the best epoch; the curve wants every epoch
        metrics = evaluate()
        tests.append(metrics[0].metrics["test"])
        return metrics

    trainer.evaluate_members = evaluate_and_keep_test
    result = trainer.fit()[0]
    return {
        "valid_curve": [p["valid"] for p in result["curve"]],
        "test_curve": tests,
        "sec_train": trainer.sec_train,
        "sec_eval": trainer.sec_eval,
        "threads": torch.get_num_threads(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "spectrum": len(result["spectrum"]),
    }


def peer_site_packages(peer_python: Path) -> str:
    import subprocess

    return subprocess.run(
        [str(peer_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["LGMRec", "MGCN", "DRAGON", "SMORE"], choices=list(POINTS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--users", type=int, help="only the first N users of the .inter and the items they touch")
    parser.add_argument("--inter", type=Path, default=DEFAULT_INTER)
    parser.add_argument(
        "--dataset-root", type=Path, default=Path(__file__).resolve().parents[1] / ".peers" / "datasets"
    )
    parser.add_argument("--peer", type=Path, default=DEFAULT_PEER)
    parser.add_argument("--skip", nargs="*", default=[], choices=["parity", "clear", "overhead"])
    parser.add_argument(
        "--results", type=Path, default=Path(__file__).resolve().parents[1] / ".peers" / "results" / "own_model.json"
    )
    parser.add_argument("--child", nargs=4, metavar=("BACKBONE", "FOLDER", "SEED", "POINT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.dataset_root, args.peer = args.dataset_root.resolve(), args.peer.resolve()

    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        backbone, folder, seed, point = args.child
        print(
            "OURS "
            + json.dumps(
                adapter_child(backbone, folder, int(seed), args.epochs, json.loads(point), str(args.peer), args.threads)
            )
        )
        return

    peer_python = args.peer.parents[1] / "venv" / "bin" / "python"
    if not (args.peer / "run_peer.py").is_file() or not peer_python.is_file():
        sys.exit(f"error: no MMRec peer at {args.peer}: set it up as ../shared/peers/mmrec/README.md says")
    os.environ["BENCH_PEER_SITE"] = peer_site_packages(peer_python)
    name = f"own_{args.inter.stem}" + (f"_u{args.users}" if args.users else "")
    folder = args.dataset_root / name
    user_graph = bool({"DRAGON", "MENTOR"} & set(args.models))  # their MMRec code reads user_graph_dict.npy
    print(write_folder(args.inter, args.users, args.dataset_root, name, user_graph), flush=True)
    print(
        f"load average before: {os.getloadavg()}; {args.seeds} seed(s), {args.epochs} epochs, {args.threads} thread(s)",
        flush=True,
    )
    peer_fixed = [
        f"{k}={v}"
        for k, v in {
            **PEER_DATASET_KEYS,
            "inter_file_name": f"{name}.inter",
            "stopping_step": 10 * args.epochs + 1000,
        }.items()
    ]

    def ours(backbone: str, seed: int, point: dict) -> dict:
        return run_child(
            [
                sys.executable,
                __file__,
                "--child",
                backbone,
                str(folder),
                str(seed),
                json.dumps(point),
                "--epochs",
                str(args.epochs),
                "--threads",
                str(args.threads),
                "--peer",
                str(args.peer),
            ],
            None,
            args.threads,
            ("OURS",),
        )

    def peer(model: str, seed: int, point: dict) -> dict:
        sets = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in point.items()] + peer_fixed
        return run_child(
            [
                str(peer_python),
                str(SHIM),
                str(args.threads),
                "--model",
                model,
                "--dataset",
                name,
                "--data-root",
                str(args.dataset_root),
                "--epochs",
                str(args.epochs),
                "--seed",
                str(seed),
                *[x for kv in sets for x in ("--set", kv)],
            ],
            args.peer,
            args.threads,
            ("PEER", "SHIM"),
        )

    raw: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": {}}
    parity_rows, clear_rows, overhead_rows = [], [], []
    for model in args.models:
        point, clear_at = POINTS[model]
        ours_point = {**adapter_point(point), "clear_at": clear_at}
        runs: dict[str, list[dict]] = {"adapter": [], "mmrec": [], "clear": []}
        for s in range(args.seeds):
            seed = SEED0 + s
            # each thunk binds this iteration's model, seed and point (they run within the iteration anyway)
            plan = [
                (
                    "adapter",
                    functools.partial(ours, f"mmrec:{model}", seed, {**ours_point, "projection": {"mode": "off"}}),
                )
            ]
            if "parity" not in args.skip:
                plan.append(("mmrec", functools.partial(peer, model, seed, point)))
            if "clear" not in args.skip:
                plan.append(
                    ("clear", functools.partial(ours, f"mmrec:{model}", seed, {**ours_point, "projection": CLEAR}))
                )
            for side, go in plan:
                run = go()
                run["seed"] = seed
                runs[side].append(run)
                if "error" in run:
                    print(f"{model} {side} seed {seed} FAILED: {run['error']}", flush=True)
                    continue
                run["summary"] = summarise(run, "ours" if side != "mmrec" else "mmrec")
                x = run["summary"]
                print(
                    f"{model:7s} {side:8s} seed {seed}: best valid R@20 {x['valid']:.4f} (epoch {x['best_epoch']}/"
                    f"{x['epochs']}) test {x['test']:.4f}  train {x['train_s']:.2f} s/epoch  eval {x['eval_s']:.2f} s"
                    f"  RSS {x['rss']:.0f} MB  CPU/wall {run['cpu_per_wall']:.2f}",
                    flush=True,
                )
        raw["runs"][model] = runs
        ok = {side: [r["summary"] for r in rs] for side, rs in runs.items() if rs and all("summary" in r for r in rs)}
        if "adapter" in ok and "mmrec" in ok:
            parity_rows.append(compare(f"mmrec:{model}", model, point, ok["adapter"], ok["mmrec"]))
        if "adapter" in ok and "clear" in ok:
            clear_rows.append((model, clear_at, ok["adapter"], ok["clear"]))
    if "overhead" not in args.skip:
        point, clear_at = POINTS["FREEDOM"]
        sides = {"adapter": [], "native": []}
        for s in range(args.seeds):
            seed = SEED0 + s
            sides["adapter"].append(
                ours("mmrec:FREEDOM", seed, {**adapter_point(point), "projection": {"mode": "off"}})
            )
            native = adapter_point(point)
            sides["native"].append(ours("freedom", seed, {**native, "projection": {"mode": "off"}}))
        raw["runs"]["FREEDOM-overhead"] = sides
        if all("error" not in r for rs in sides.values() for r in rs):
            overhead_rows = [
                {side: statistics.median(statistics.median(r["sec_train"]) for r in rs) for side, rs in sides.items()}
                | {
                    "valid": {
                        side: mean_std([max(v["recall@20"] for v in r["valid_curve"]) for r in rs])
                        for side, rs in sides.items()
                    }
                }
            ]
        else:
            print("overhead run failed:", [r.get("error") for rs in sides.values() for r in rs])
    print(f"\nload average after {os.getloadavg()}")
    print(
        f"data: {folder} ({'first ' + str(args.users) + ' users' if args.users else 'full graph'}), {args.seeds} "
        f"seed(s) from {SEED0}, {args.epochs} epochs, {args.threads} thread(s)\n"
    )
    if parity_rows:
        print("adapter (clear-tune running MMRec's model code) vs MMRec's own loop:\n")
        print(table(parity_rows, args.seeds).replace("| backbone |", "| model |", 1))
    if clear_rows:
        print("\nCLEAR through the adapter (k 4, λ 0.9 at clear_at) vs λ = 0:\n")
        print(
            "| model | clear_at | best valid R@20 λ=0 | CLEAR | Δ | test R@20 λ=0 | CLEAR | train s/epoch λ=0 | CLEAR |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for model, clear_at, off, on in clear_rows:
            (v0, s0), (v1, s1) = mean_std([x["valid"] for x in off]), mean_std([x["valid"] for x in on])
            (t0, _), (t1, _) = mean_std([x["test"] for x in off]), mean_std([x["test"] for x in on])
            print(
                f"| {model} | {clear_at['image']}, {clear_at['text']} | {v0:.4f} ± {s0:.4f} | {v1:.4f} ± {s1:.4f} "
                f"| {(v1 / v0 - 1) * 100:+.1f}% | {t0:.4f} | {t1:.4f} "
                f"| {statistics.fmean(x['train_s'] for x in off):.2f} "
                f"| {statistics.fmean(x['train_s'] for x in on):.2f} |"
            )
    if overhead_rows:
        row = overhead_rows[0]
        print(
            f"\nFREEDOM, train s/epoch (median over seeds): MMRec's FREEDOM through the adapter {row['adapter']:.2f}, "
            f"clear-tune's native freedom {row['native']:.2f} (adapter/native {row['adapter'] / row['native']:.2f}); "
            f"best valid R@20 {row['valid']['adapter'][0]:.4f} vs {row['valid']['native'][0]:.4f}"
        )
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(raw, default=str))
    print(f"\nraw runs: {args.results}")


if __name__ == "__main__":
    main()
