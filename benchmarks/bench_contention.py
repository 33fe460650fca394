"""A CPU trial beside another CPU job: seconds per epoch idle and beside a 2-thread torch job, per thread policy.

Every measurement is a fresh child process (so OpenMP starts with that policy's environment) training one
config for ``--epochs`` epochs through the real trainer; the median epoch time of the epochs after the
first is its figure, and each cell is the median over ``--repeats`` runs. All idle runs come first; then ONE
competitor starts and every "busy" run trains beside it. ``--competitor training`` (the default) is a second
clear-tune training, CLEAR at Baby scale with 2 fixed intra-op threads (the issue's case);
``--competitor matmul`` is a process doing 2-thread torch matrix products in a loop (a notebook). Policies:

* ``1`` and ``2``: that many intra-op threads (what a user gets with ``--threads``); ``2`` with OpenMP's
  default waiting is what a torch process did before ``threads: auto``;
* ``2-passive``: 2 threads whose OpenMP threads sleep between regions (``OMP_WAIT_POLICY=PASSIVE``);
* ``auto``: clear-tune's default (:class:`clear_tune.train.ThreadGovernor`: decided again every epoch from
  the CPUs the other processes leave free).

    .venv/bin/python benchmarks/bench_contention.py                          # synthetic and Baby, 3 backbones
    .venv/bin/python benchmarks/bench_contention.py --scales synthetic --repeats 5 --competitor matmul

Targets (issue): beside the other job at most 1.5x the idle time; idle no slower than the best of one or two
threads. Not a test: figures go to BENCHMARKS.md. Run it alone (it loads the machine itself).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BABY = REPO.parent / "shared" / "data" / "amazon" / "baby" / "baby.inter"
POLICIES = {"1": ("1", None), "2": ("2", None), "2-passive": ("2", "PASSIVE"), "auto": ("auto", None)}
SCALES = {
    "synthetic": {"data": "synthetic", "data_options": {}, "emb_dim": 64},
    "baby": {"data": f"semi:{BABY}", "data_options": {"d_v": 4096, "d_t": 384, "seed": 0}, "emb_dim": 64},
}

CHILD = r"""
import json, sys, time
import torch  # first: OpenMP reads OMP_WAIT_POLICY as the parent set it (or left it unset)
from clear_tune.config import TrainConfig
from clear_tune.train import Trainer
spec = json.loads(sys.argv[1])
projection = {"k": 8, "strength": 0.9} if spec["backbone"] != "lightgcn" else {"mode": "off"}
cfg = TrainConfig(backbone=spec["backbone"], projection=projection, data=spec["data"],
                  data_options=spec["data_options"], emb_dim=spec["emb_dim"], epochs=spec["epochs"],
                  eval_every=spec["epochs"] + 1, device="cpu",
                  threads=spec["threads"] if spec["threads"] == "auto" else int(spec["threads"]))
trainer = Trainer(cfg)
times = []
def on_epoch(t, report):
    times.append(report.sec_train)
trainer.fit(on_epoch)
print("RESULT " + json.dumps({"sec": times, "threads": trainer.governor.threads, "history": trainer.governor.history}))
"""

COMPETITORS = {
    "matmul": r"""
import torch, time
torch.set_num_threads(2)
a = torch.randn(1024, 1024)
print("READY", flush=True)
while True:
    a = (a @ a).tanh_()
""",
    "training": rf"""
from clear_tune.config import TrainConfig
from clear_tune.train import Trainer
cfg = TrainConfig(backbone="clear", projection={{"k": 8, "strength": 0.9}}, data="semi:{BABY}",
                  data_options={{"d_v": 4096, "d_t": 384, "seed": 1}}, emb_dim=64, epochs=100000, eval_every=100000,
                  device="cpu", threads=2)
trainer = Trainer(cfg)
def on_epoch(t, report):
    print("READY", flush=True)
trainer.fit(on_epoch)
""",
}


def run_child(backbone: str, scale: str, policy: str, epochs: int) -> dict:
    threads, wait = POLICIES[policy]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    if wait is not None:
        env["OMP_WAIT_POLICY"] = wait  # else OpenMP's own default (spin for a while, then sleep)
    spec = {"backbone": backbone, "threads": threads, "epochs": epochs, **SCALES[scale]}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True, env=env, cwd=REPO, timeout=3600
    )
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(out.stderr[-2000:])
    result = json.loads(line[7:])
    return {
        "sec_per_epoch": statistics.median(result["sec"][1:] or result["sec"]),
        "threads": result["threads"],
        "history": result.get("history", []),
    }


def start_competitor(kind: str) -> subprocess.Popen:
    """Start the competitor and wait until it computes (the training one: after its first epoch)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", COMPETITORS[kind]],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("READY"):
            break
    else:
        raise RuntimeError(f"the {kind} competitor exited with {proc.wait()}")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=["clear", "vbpr", "freedom"])
    parser.add_argument("--scales", nargs="+", default=["synthetic", "baby"], choices=sorted(SCALES))
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (the first is not timed)")
    parser.add_argument("--competitor", choices=sorted(COMPETITORS), default="training")
    parser.add_argument("--results", type=Path, default=REPO / ".peers" / "results" / "contention.json")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}", flush=True)
    cells = [
        (scale, backbone, policy) for scale in args.scales for backbone in args.backbones for policy in args.policies
    ]
    epochs = {scale: args.epochs if scale == "synthetic" else max(2, args.epochs // 2) for scale in args.scales}
    runs: dict[tuple, dict[str, list[dict]]] = {cell: {} for cell in cells}
    for which in ("idle", "busy"):
        competitor = start_competitor(args.competitor) if which == "busy" else None
        try:
            for scale, backbone, policy in cells:
                runs[scale, backbone, policy][which] = [
                    run_child(backbone, scale, policy, epochs[scale]) for _ in range(args.repeats)
                ]
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()
    rows = []
    for (scale, backbone, policy), measured in runs.items():
        cell = {}
        for which, results in measured.items():
            cell[which] = statistics.median(r["sec_per_epoch"] for r in results)
            cell[f"{which}_runs"] = [round(r["sec_per_epoch"], 4) for r in results]
            cell[f"{which}_threads"] = sorted({t for r in results for t in (r["history"] or [r["threads"]])})
        row = {"scale": scale, "backbone": backbone, "policy": policy, **cell, "slowdown": cell["busy"] / cell["idle"]}
        rows.append(row)
        print(
            f"{scale:9s} {backbone:8s} {policy:9s} idle {row['idle']:.3f} s/epoch {row['idle_runs']} "
            f"threads {row['idle_threads']}, busy {row['busy']:.3f} s/epoch {row['busy_runs']} threads "
            f"{row['busy_threads']} ({row['slowdown']:.2f}x)",
            flush=True,
        )
    print(f"load average after: {os.getloadavg()}")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(rows, indent=1))
    print("\n| scale | backbone | policy | idle s/epoch (threads) | beside a 2-thread job (threads) | slowdown |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        threads = lambda ts: "/".join(map(str, ts))  # noqa: E731
        print(
            f"| {r['scale']} | {r['backbone']} | {r['policy']} | {r['idle']:.3f} ({threads(r['idle_threads'])}) | "
            f"{r['busy']:.3f} ({threads(r['busy_threads'])}) | {r['slowdown']:.2f}x |"
        )


if __name__ == "__main__":
    main()
