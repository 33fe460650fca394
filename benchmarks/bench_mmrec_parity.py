"""Parity with MMRec: accuracy and cost of every clear-tune backbone against its MMRec counterpart.

ONE MMRec-format folder (the real graph of ``--inter``, default Amazon Baby, with clear-tune's semi-synthetic
4096-d image / 384-d text features, ``make_semi_synthetic`` + ``write_mmrec``) is read by both systems. Each
backbone in :data:`POINTS` that is registered in ``clear_tune.models.BACKBONES`` runs at ONE hyper-parameter
point, the same on both sides (MMRec names pinned with ``--set`` on the peer, TrainConfig terms on ours), for
``--seeds`` seeds (999, 1000, ...), ``--epochs`` epochs, evaluating every epoch, no early stop before the last
epoch (ours: patience = epochs; MMRec: ``stopping_step`` pinned high). Ours: the real trainer, projection
off, batch 2048, emb_dim 64, CPU. The peer: MMRec's ``run_peer.py`` (shared/peers/mmrec/README.md) through
``_mmrec_peer_shim.py``, which sets its torch threads and also times MMRec's ``pre_epoch_processing``
(counted in its train s/epoch, as our ``start_epoch`` is in ours). Every run is its own child process
(peak RSS is its own) with OMP_NUM_THREADS = MKL_NUM_THREADS = torch threads = ``--threads``; seeds run
ours, peer, ours, peer ... so both sides see the same machine load. Not a test: figures go to BENCHMARKS.md.

    .venv/bin/python benchmarks/bench_mmrec_parity.py                       # every backbone, Baby, 3 seeds, 30 epochs
    .venv/bin/python benchmarks/bench_mmrec_parity.py --backbones lightgcn freedom --threads 2
    .venv/bin/python benchmarks/bench_mmrec_parity.py --users 1500 --epochs 3 --seeds 1 --backbones lightgcn vbpr

Targets (reported as PASS/FAIL, not enforced): best valid R@20 ours/MMRec within 0.95-1.05, or the mean
difference within the larger seed std; train s/epoch <= 0.5x MMRec's; evaluation (valid+test) <= 0.5x MMRec's.
"""

from __future__ import annotations

import argparse
import inspect
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

REPO = Path(__file__).resolve().parents[1]
DEFAULT_INTER = REPO.parent / "shared" / "data" / "amazon" / "baby" / "baby.inter"
DEFAULT_PEER = REPO / ".peers" / "mmrec" / "src" / "src"
SHIM = Path(__file__).resolve().parent / "_mmrec_peer_shim.py"
SEED0 = 999  # MMRec's default seed; seed s of a run is SEED0 + s

# backbone -> (MMRec model, the point in MMRec's names (--set), the same point in TrainConfig terms).
# Lists in MMRec's yaml are searched; each is pinned to one sensible member: reg_weight 1e-4 and
# learning_rate 1e-3 (MMRec's global default) wherever the list holds them, our class defaults otherwise.
POINTS: dict[str, tuple[str, dict, dict]] = {
    "bpr": ("BPR", {"reg_weight": 1e-4}, {"reg_weight": 1e-4}),
    "lightgcn": (
        "LightGCN",
        {"n_layers": 2, "reg_weight": 1e-4},
        {"reg_weight": 1e-4, "model_options": {"n_layers": 2}},
    ),
    "vbpr": ("VBPR", {"reg_weight": 1e-4}, {"reg_weight": 1e-4}),
    "freedom": (
        "FREEDOM",
        {"dropout": 0.8, "reg_weight": 1e-4},
        {"reg_weight": 1e-4, "model_options": {"dropout": 0.8}},
    ),
    "layergcn": (
        "LayerGCN",
        {"n_layers": 4, "dropout": 0.1, "reg_weight": 1e-4},
        {"reg_weight": 1e-4, "model_options": {"n_layers": 4, "dropout": 0.1}},
    ),
    "mmgcn": ("MMGCN", {"reg_weight": 1e-4, "learning_rate": 1e-3}, {"reg_weight": 1e-4, "lr": 1e-3}),
    "grcn": ("GRCN", {"reg_weight": 1e-4, "learning_rate": 1e-3}, {"reg_weight": 1e-4, "lr": 1e-3}),
    "dualgnn": (
        "DualGNN",
        {"aggr_mode": "add", "reg_weight": 1e-4, "learning_rate": 1e-3},
        {"reg_weight": 1e-4, "lr": 1e-3, "model_options": {"aggr_mode": "add"}},
    ),
    "lattice": ("LATTICE", {"reg_weight": 1e-4, "learning_rate": 1e-3}, {"reg_weight": 1e-4, "lr": 1e-3}),
    "slmrec": (
        "SLMRec",
        {"reg": 1e-4, "learning_rate": 1e-3, "ssl_temp": 0.2, "ssl_alpha": 0.1},
        {"reg_weight": 1e-4, "lr": 1e-3, "model_options": {"ssl_temp": 0.2, "ssl_alpha": 0.1}},
    ),
    "bm3": (
        "BM3",
        {"n_layers": 1, "dropout": 0.5, "reg_weight": 0.1},
        {"reg_weight": 0.1, "model_options": {"n_layers": 1, "dropout": 0.5}},
    ),
    "mgcn": (
        "MGCN",
        {"cl_loss": 0.01, "reg_weight": 1e-4, "learning_rate": 1e-3},
        {"reg_weight": 1e-4, "lr": 1e-3, "model_options": {"cl_loss": 0.01}},
    ),
    "smore": (
        "SMORE",
        {
            "n_ui_layers": 3,
            "image_knn_k": 10,
            "text_knn_k": 10,
            "dropout_rate": 0.0,
            "reg_weight": 1e-5,
            "learning_rate": 1e-3,
        },
        {
            "reg_weight": 1e-5,
            "lr": 1e-3,
            "model_options": {"n_ui_layers": 3, "image_knn_k": 10, "text_knn_k": 10, "dropout_rate": 0.0},
        },
    ),
    "lgmrec": (
        "LGMRec",
        {
            "n_ui_layers": 2,
            "n_mm_layers": 2,
            "n_hyper_layer": 1,
            "hyper_num": 4,
            "keep_rate": 0.5,
            "alpha": 0.3,
            "cl_weight": 1e-4,
            "reg_weight": 1e-6,
        },
        {
            "reg_weight": 1e-6,
            "model_options": {
                "n_ui_layers": 2,
                "n_mm_layers": 2,
                "n_hyper_layer": 1,
                "hyper_num": 4,
                "keep_rate": 0.5,
                "alpha": 0.3,
                "cl_weight": 1e-4,
            },
        },
    ),
    "dragon": (
        "DRAGON",
        {"aggr_mode": "add", "reg_weight": 1e-4, "learning_rate": 1e-3},
        {"reg_weight": 1e-4, "lr": 1e-3, "model_options": {"aggr_mode": "add"}},
    ),
    # MENTOR's reference is its authors' MMRec-based tree (benchmarks/setup_mentor_peer.sh):
    # --peer .peers/mentor/src/src
    "mentor": (
        "MENTOR",
        {
            "reg_weight": 1e-3,
            "learning_rate": 1e-4,
            "dropout": 0.5,
            "mask_weight_f": 1.5,
            "mask_weight_g": 1e-4,
            "align_weight": 0.1,
            "temp": 0.2,
        },
        {
            "reg_weight": 1e-3,
            "lr": 1e-4,
            "model_options": {
                "dropout": 0.5,
                "mask_weight_f": 1.5,
                "mask_weight_g": 1e-4,
                "align_weight": 0.1,
                "temp": 0.2,
            },
        },
    ),
}
# The keys of MMRec's configs/dataset/<name>.yaml, given with --set so our folder needs no yaml in MMRec's tree.
PEER_DATASET_KEYS = {
    "USER_ID_FIELD": "userID",
    "ITEM_ID_FIELD": "itemID",
    "TIME_FIELD": "timestamp",
    "filter_out_cod_start_users": "true",
    "vision_feature_file": "image_feat.npy",
    "text_feature_file": "text_feat.npy",
    "user_graph_dict_file": "user_graph_dict.npy",
}
RECALL = "recall@20"


# ------------------------------------------------------------------------------------------- the data
def subset_inter(src: Path, n_users: int, dst: Path) -> None:
    """The first ``n_users`` users of ``src`` (file order) and the items they touch, both re-indexed from 0."""
    import pandas as pd

    from clear_tune.data import read_inter

    users, items, labels = read_inter(src)
    keep = np.isin(users, pd.unique(users)[:n_users])
    u = np.unique(users[keep], return_inverse=True)[1]
    i = np.unique(items[keep], return_inverse=True)[1]
    pd.DataFrame({"userID": u, "itemID": i, "x_label": labels[keep]}).to_csv(dst, sep="\t", index=False)


def write_folder(inter: Path, users: int | None, root: Path, name: str, need_user_graph: bool) -> str:
    """Write the shared MMRec-format folder; returns the dataset's one-line description."""
    from clear_tune import data

    with tempfile.TemporaryDirectory() as tmp:
        source = inter
        if users:
            source = Path(tmp) / f"{name}.inter"
            subset_inter(inter, users, source)
        ds = data.make_semi_synthetic(source)
    folder = data.write_mmrec(ds, root, name)
    if need_user_graph:  # DualGNN's user_graph_dict.npy (only the peer reads it)
        write = data.write_user_graph
        write(ds, root, name) if "name" in inspect.signature(write).parameters else write(ds, folder)
    return ds.describe()


# ------------------------------------------------------------------------------- one run (a child process)
def ours_child(
    backbone: str, folder: str, seed: int, epochs: int, point: dict, threads: int = 1, members: int = 1
) -> dict:
    """Train ours through the real trainer in this process; returns the raw run (of the first member). With
    ``members`` > 1 the trial is a fused array of that many members (reg_weight 1, 1.01, 1.02, ... × the point's)."""
    import torch

    from clear_tune.config import TrainConfig
    from clear_tune.train import Trainer

    cfg = TrainConfig(
        data=f"mmrec:{folder}",
        backbone=backbone,
        projection={"mode": "off"},
        emb_dim=64,
        batch_size=2048,
        epochs=epochs,
        patience=epochs,
        eval_every=1,
        seed=seed,
        device="cpu",
        threads=threads,
        **{"lr": 1e-3, **point},
    )  # fixed threads, as the peer's: no auto governor
    weight = cfg.reg_weight if cfg.reg_weight is not None else 1e-4
    configs = [cfg.model_copy(update={"reg_weight": weight * (1 + 0.01 * m)}) for m in range(members)]
    trainer = Trainer(configs if members > 1 else cfg)
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
        "config": result["config"],
    }


def run_child(cmd: list[str], cwd: Path | None, threads: int, prefixes: tuple[str, ...]) -> dict:
    """Run one child; returns the JSON of its lines starting with ``prefixes`` plus wall time and CPU/wall."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    found = {}
    for line in out.stdout.splitlines():
        for prefix in prefixes:
            if line.startswith(prefix + " "):
                found.update(json.loads(line[len(prefix) + 1 :]))
    if out.returncode != 0 or not found:
        tail = (out.stderr or out.stdout)[-2500:]
        return {"error": f"exit {out.returncode}: {' '.join(cmd[:4])} ...\n{tail}"}
    return {**found, "child_wall_s": wall, "cpu_per_wall": cpu / wall}


def summarise(run: dict, side: str) -> dict:
    """Best valid R@20 (first best epoch), test there, train s/epoch and evaluation s (medians) of one run."""
    valid = [v[RECALL] for v in run["valid_curve"]]
    best = int(np.argmax(valid))
    if side == "ours":
        train, evals = run["sec_train"], run["sec_eval"]
    else:  # MMRec: _train_epoch + pre_epoch_processing; valid and test are two passes
        pre = run.get("sec_pre_epoch") or [0.0] * len(run["sec_train"])
        train = [t + p for t, p in zip(run["sec_train"], pre)]
        passes = run["sec_eval_passes"]
        evals = [a + b for a, b in zip(passes[0::2], passes[1::2])]
    return {
        "valid": valid[best],
        "test": run["test_curve"][best][RECALL],
        "best_epoch": best + 1,
        "train_s": statistics.median(train),
        "eval_s": statistics.median(evals),
        "rss": run["peak_rss_mb"],
        "epochs": len(valid),
    }


# --------------------------------------------------------------------------------------------- report
def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(rows: list[dict], n_seeds: int) -> str:
    head = (
        "| backbone | MMRec model · pinned point | best valid R@20 ours | MMRec | ours/MMRec | acc "
        "| test R@20 @best valid ours | MMRec | train s/epoch ours | MMRec | ratio | train ≤0.5 "
        "| eval s ours | MMRec | ratio | eval ≤0.5 | peak RSS MB ours | MMRec | ratio |"
    )
    n_cols = head.count(" | ") + 1
    lines = [head, "|" + "---|" * n_cols]
    for r in rows:
        if "skip" in r:
            lines.append(f"| {r['backbone']} | {r['skip']} |" + " |" * (n_cols - 2))
            continue
        o, m = r["ours"], r["mmrec"]

        def f(side: list[dict], key: str, fmt: str) -> str:  # "mean ± std" over seeds
            mu, sd = mean_std([s[key] for s in side])
            return f"{mu:{fmt}} ± {sd:{fmt}}" if n_seeds > 1 else f"{mu:{fmt}}"

        def mean(side: list[dict], key: str) -> float:
            return statistics.fmean(s[key] for s in side)

        lines.append(
            f"| {r['backbone']} | {r['model']} {r['point']} | {f(o, 'valid', '.4f')} | {f(m, 'valid', '.4f')} "
            f"| {r['acc_ratio']:.3f} | {r['acc']} | {f(o, 'test', '.4f')} | {f(m, 'test', '.4f')} "
            f"| {mean(o, 'train_s'):.2f} | {mean(m, 'train_s'):.2f} | {r['train_ratio']:.2f} | {r['train']} "
            f"| {mean(o, 'eval_s'):.2f} | {mean(m, 'eval_s'):.2f} | {r['eval_ratio']:.2f} | {r['eval']} "
            f"| {mean(o, 'rss'):.0f} | {mean(m, 'rss'):.0f} | {mean(o, 'rss') / mean(m, 'rss'):.2f} |"
        )
    return "\n".join(lines)


def _epoch_s(runs: dict, side: str) -> float:
    """Train s/epoch of ``side``'s first run: the median over the epochs after the first (MMRec's pre-epoch work
    counted in)."""
    run = (runs.get(side) or [{}])[0]
    if "summary" not in run:
        return float("nan")
    train = (
        run["sec_train"]
        if side != "mmrec"
        else [t + p for t, p in zip(run["sec_train"], run.get("sec_pre_epoch") or [0.0] * len(run["sec_train"]))]
    )
    return statistics.median(train[1:] or train)


def speed_table(raw: dict) -> str:
    """``--speed-only``: train s/epoch (median over the epochs after the first) ours, MMRec, ratio, fused x4 / 4."""
    lines = [
        "| backbone | ours s/epoch | MMRec s/epoch | ours ÷ MMRec | ≤ 0.5 | ours fused ×4, s/epoch ÷ 4 | ÷ MMRec |",
        "|---|---|---|---|---|---|---|",
    ]
    for b, entry in raw.items():
        runs = entry["runs"]
        o, m = _epoch_s(runs, "ours"), _epoch_s(runs, "mmrec")
        fused = (
            f"{_epoch_s(runs, 'fused4') / 4:.2f} | {_epoch_s(runs, 'fused4') / 4 / m:.2f}"
            if runs.get("fused4")
            else "- | -"
        )
        lines.append(f"| {b} | {o:.2f} | {m:.2f} | {o / m:.2f} | {'PASS' if o / m <= 0.5 else 'FAIL'} | {fused} |")
    return "\n".join(lines)


def compare(backbone: str, model: str, point: dict, ours: list[dict], mmrec: list[dict]) -> dict:
    (vo, so), (vm, sm) = mean_std([s["valid"] for s in ours]), mean_std([s["valid"] for s in mmrec])
    ratio = vo / vm if vm > 0 else float("nan")
    train = statistics.fmean(s["train_s"] for s in ours) / statistics.fmean(s["train_s"] for s in mmrec)
    evals = statistics.fmean(s["eval_s"] for s in ours) / statistics.fmean(s["eval_s"] for s in mmrec)
    ok = bool(0.95 <= ratio <= 1.05 or abs(vo - vm) <= max(so, sm))  # or inside the larger seed std
    verdict = {True: "PASS", False: "FAIL"}
    return {
        "backbone": backbone,
        "model": model,
        "point": " ".join(f"{k}={v}" for k, v in point.items()),
        "ours": ours,
        "mmrec": mmrec,
        "acc_ratio": ratio,
        "acc": verdict[ok],
        "train_ratio": train,
        "train": verdict[train <= 0.5],
        "eval_ratio": evals,
        "eval": verdict[evals <= 0.5],
    }


def check_point(backbone: str, cls, mmrec_point: dict, ours_point: dict) -> str | None:
    """A one-line problem with the table entry against the registered class, or None."""
    given = ours_point.get("model_options", {})
    options = cls.model_options()
    unknown = sorted(set(given) - set(options))
    if unknown:
        return (
            f"POINTS[{backbone!r}] sets model option(s) {', '.join(unknown)} that {cls.__name__} lacks "
            f"(it has: {', '.join(options) or 'none'}): fix POINTS"
        )
    unset = sorted(k for k in mmrec_point if k in options and k not in given)
    if unset:
        return f"POINTS[{backbone!r}] pins {', '.join(unset)} on MMRec's side only: add it to the model_options"
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", help="default: every registered backbone with an MMRec counterpart")
    parser.add_argument("--seeds", type=int, default=3, help=f"seeds per side: {SEED0}, {SEED0 + 1}, ...")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per run, evaluating after every one")
    parser.add_argument("--threads", type=int, default=1, help="torch / OpenMP / MKL threads of every run")
    parser.add_argument("--users", type=int, help="only the first N users of the .inter and the items they touch")
    parser.add_argument("--inter", type=Path, default=DEFAULT_INTER, help="MMRec .inter file (default: Baby)")
    parser.add_argument(
        "--dataset-root",
        type=Path,
        default=REPO / ".peers" / "datasets",
        help="where the shared MMRec-format folder is written",
    )
    parser.add_argument("--peer", type=Path, default=DEFAULT_PEER, help="MMRec's src/src folder (holds run_peer.py)")
    parser.add_argument("--peer-python", type=Path, help="MMRec's python (default: PEER/../../venv/bin/python)")
    parser.add_argument(
        "--results",
        type=Path,
        default=REPO / ".peers" / "results" / "mmrec_parity.json",
        help="JSON of every raw run (curves included)",
    )
    parser.add_argument(
        "--speed-only",
        action="store_true",
        help="training speed only: 3 epochs, one seed, each backbone ours / MMRec / ours fused x4, one table",
    )
    parser.add_argument("--no-fused", action="store_true", help="--speed-only without the fused x4 run (4x its time)")
    parser.add_argument("--members", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument(
        "--ours-child", nargs=4, metavar=("BACKBONE", "FOLDER", "SEED", "POINT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.speed_only and not args.ours_child:
        args.seeds, args.epochs = 1, min(args.epochs, 3)
    args.dataset_root = args.dataset_root.resolve()  # the peer runs in its own folder

    if args.ours_child:  # child process: one run of ours
        import torch

        torch.set_num_threads(args.threads)
        backbone, folder, seed, point = args.ours_child
        print(
            "OURS "
            + json.dumps(
                ours_child(backbone, folder, int(seed), args.epochs, json.loads(point), args.threads, args.members)
            )
        )
        return

    # absolute, not resolved: the peer runs in its own folder, and a venv python must stay its symlink
    peer_python = (args.peer_python or args.peer.parents[1] / "venv" / "bin" / "python").absolute()
    if not (args.peer / "run_peer.py").is_file() or not peer_python.is_file():
        sys.exit(
            f"error: no MMRec peer at {args.peer} (run_peer.py) with {peer_python}: set it up as "
            f"/work/shared/peers/mmrec/README.md says, or pass --peer / --peer-python"
        )
    from clear_tune.models import BACKBONES

    registered = [b for b in POINTS if b in BACKBONES]
    backbones = args.backbones or registered
    for b in backbones:
        if b not in POINTS:
            sys.exit(f"error: {b!r} has no MMRec counterpart in POINTS (known: {', '.join(POINTS)})")
    print(f"registered without an MMRec counterpart (not compared): {', '.join(sorted(set(BACKBONES) - set(POINTS)))}")
    missing = [b for b in POINTS if b not in BACKBONES]
    if missing and not args.backbones:
        print(f"not registered yet (skipped): {', '.join(missing)}")

    from clear_tune import data

    rows, skipped = [], {}
    for b in backbones:
        problem = None if b in BACKBONES else "not registered in clear_tune.models.BACKBONES yet"
        if problem is None:
            problem = check_point(b, BACKBONES[b], POINTS[b][1], POINTS[b][2])
        if problem is None and b == "dualgnn" and not hasattr(data, "write_user_graph"):
            problem = (
                "skipped: clear_tune.data.write_user_graph does not exist yet (the peer needs user_graph_dict.npy)"
            )
        if problem:
            skipped[b] = problem
            print(f"{b}: {problem}")
    todo = [b for b in backbones if b not in skipped]

    name = f"parity_{args.inter.stem}" + (f"_u{args.users}" if args.users else "")
    folder = args.dataset_root / name
    print(f"writing {folder} ...", flush=True)
    print(
        write_folder(args.inter, args.users, args.dataset_root, name, bool({"dualgnn", "dragon", "mentor"} & set(todo)))
    )
    if args.users:
        print(f"subset: the first {args.users} users of {args.inter} and the items they touch, re-indexed")
    load_before = os.getloadavg()
    print(
        f"load average before: {load_before}; {args.seeds} seed(s), {args.epochs} epochs, {args.threads} thread(s)",
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
    raw = {}
    for b in todo:
        model, mmrec_point, ours_point = POINTS[b]
        sets = [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in mmrec_point.items()] + peer_fixed
        runs = {"ours": [], "mmrec": []}
        for s in range(args.seeds):
            seed = SEED0 + s
            ours = run_child(
                [
                    sys.executable,
                    __file__,
                    "--ours-child",
                    b,
                    str(folder),
                    str(seed),
                    json.dumps(ours_point),
                    "--epochs",
                    str(args.epochs),
                    "--threads",
                    str(args.threads),
                ],
                None,
                args.threads,
                ("OURS",),
            )
            peer = run_child(
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
            sides = [("ours", ours), ("mmrec", peer)]
            if args.speed_only and not args.no_fused:  # ours again, as a fused array of 4 members: one member's cost
                fused = run_child(
                    [
                        sys.executable,
                        __file__,
                        "--ours-child",
                        b,
                        str(folder),
                        str(seed),
                        json.dumps(ours_point),
                        "--epochs",
                        str(args.epochs),
                        "--threads",
                        str(args.threads),
                        "--members",
                        "4",
                    ],
                    None,
                    args.threads,
                    ("OURS",),
                )
                sides.append(("fused4", fused))
                runs.setdefault("fused4", [])
            for side, run in sides:
                run["seed"] = seed
                runs[side].append(run)
                if "error" in run:
                    print(f"{b} {side} seed {seed} FAILED: {run['error']}", flush=True)
                    continue
                run["summary"] = summarise(run, "mmrec" if side == "mmrec" else "ours")
                x = run["summary"]
                print(
                    f"{b:9s} {side:5s} seed {seed}: best valid R@20 {x['valid']:.4f} (epoch {x['best_epoch']}/"
                    f"{x['epochs']}) test {x['test']:.4f}  train {x['train_s']:.2f} s/epoch  eval {x['eval_s']:.2f} s"
                    f"  RSS {x['rss']:.0f} MB  threads {run['threads']} CPU/wall {run['cpu_per_wall']:.2f}",
                    flush=True,
                )
        raw[b] = {"mmrec_model": model, "mmrec_point": mmrec_point, "ours_point": ours_point, "runs": runs}
        if all("summary" in r for side in runs.values() for r in side):
            rows.append(
                compare(
                    b, model, mmrec_point, [r["summary"] for r in runs["ours"]], [r["summary"] for r in runs["mmrec"]]
                )
            )
        else:
            rows.append({"backbone": b, "skip": "a run failed (see above)"})
    rows += [{"backbone": b, "skip": why} for b, why in skipped.items()]
    load_after = os.getloadavg()

    print(f"\nload average before {load_before}, after {load_after}")
    print(
        f"data: {folder} ({'first ' + str(args.users) + ' users' if args.users else 'full graph'}), {args.seeds} "
        f"seed(s) from {SEED0}, {args.epochs} epochs, {args.threads} thread(s); mean ± std over seeds; train s/epoch "
        f"= median over epochs (MMRec: _train_epoch + pre_epoch_processing); eval = valid + test (MMRec: 2 passes)\n"
    )
    print(speed_table(raw) if args.speed_only else table(rows, args.seeds))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(
        json.dumps(
            {
                "dataset": str(folder),
                "users": args.users,
                "inter": str(args.inter),
                "seeds": args.seeds,
                "epochs": args.epochs,
                "threads": args.threads,
                "load_before": load_before,
                "load_after": load_after,
                "backbones": raw,
                "skipped": skipped,
                "comparison": [{k: v for k, v in r.items() if k not in ("ours", "mmrec")} for r in rows],
            },
            indent=1,
        )
    )
    print(f"\nraw runs: {args.results}")


if __name__ == "__main__":
    main()
