"""Two-node loopback Ray cluster vs one node on the same 8-trial grid; time from ``submit`` to first trial.

Each node is a real ``ray start`` with ONE CPU (``tests/fixtures/loopback.py``), so one node runs
one trial at a time and two nodes run two. The driver runs as a subprocess with ``--address``. Figures:

- wall: the driver's whole run (connect, load data, 8 trials, records);
- trial span: first trial start to last trial end, from the trial records (what the cluster parallelises);
- speed-up = one-node / two-node, parallel efficiency = speed-up / 2;
- submit -> first trial: ``python -m clear_tune.submit ray-job`` against the two-node cluster's job
  server, from launching the command to the first trial's ``wall_start``.

Usage:  .venv/bin/python benchmarks/bench_cluster.py [--epochs 30] [--users 1500] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the loopback cluster is test infrastructure, not part of the package

from fixtures.loopback import LoopbackCluster  # noqa: E402

from clear_tune.records import read_records  # noqa: E402

SPEC = """\
experiment: {name}
data:
  source: synthetic
  options: {{n_users: {users}, n_items: {items}, d_v: 32, d_t: 16, pref_dim: 8}}
trainer: {{epochs: {epochs}, patience: {epochs}, emb_dim: 32, batch_size: 1024, eval_every: 5}}
projection: {{k: [2, 4], strength: [0.3, 0.5, 0.7, 0.9]}}
max_concurrent: 8
"""


def write_spec(folder: Path, name: str, args: argparse.Namespace) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, users=args.users, items=args.users // 2, epochs=args.epochs))
    return path


def run_driver(cluster: LoopbackCluster, spec: Path, results: Path) -> dict:
    started = time.time()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "clear_tune.run",
            str(spec),
            "--address",
            cluster.address,
            "--results",
            str(results),
            "--no-report",
            "--verbose",
            "0",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=cluster.client_env(),
    )
    wall = time.time() - started
    if done.returncode != 0:
        raise SystemExit(f"driver failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    records = read_records(results / spec.stem / "records")
    assert len(records) == 8, len(records)
    span = max(r["wall_end"] for r in records) - min(r["wall_start"] for r in records)
    return {
        "wall_s": wall,
        "trial_span_s": span,
        "nodes_used": len({r["node_id"] for r in records}),
        "trial_s_median": statistics.median(r["wall_end"] - r["wall_start"] for r in records),
    }


def submit_to_first_trial(cluster: LoopbackCluster, results: Path) -> dict:
    started = time.time()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "clear_tune.submit",
            "ray-job",
            "search_spaces/smoke.yaml",
            "--address",
            cluster.dashboard_url,
            "--no-pip",
            "--python",
            sys.executable,
            "--results",
            str(results),
            "--wait",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=cluster.client_env(),
    )
    if done.returncode != 0:
        raise SystemExit(f"ray-job failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    records = read_records(results / "smoke" / "records")
    first = min(r["wall_start"] for r in records)
    last = max(r["wall_end"] for r in records)
    return {"submit_to_first_trial_s": first - started, "submit_to_done_s": last - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--users", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out: dict = {"one_node": [], "two_nodes": [], "submit": []}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        root = Path(tmp)
        for repeat in range(args.repeats):
            for label, workers in (("one_node", []), ("two_nodes", [{"node_b": 1}])):
                started = time.time()
                with LoopbackCluster(workers=workers, cpus_per_node=1, env=env) as cluster:
                    start_s = time.time() - started
                    spec = write_spec(root, f"{label}_{repeat}", args)
                    figures = run_driver(cluster, spec, root / "results")
                    figures["cluster_start_s"] = start_s
                    out[label].append(figures)
                    print(label, json.dumps({k: round(v, 2) for k, v in figures.items()}), flush=True)
                    if label == "two_nodes":
                        submit = submit_to_first_trial(cluster, root / f"submit_{repeat}")
                        out["submit"].append(submit)
                        print("submit", json.dumps({k: round(v, 2) for k, v in submit.items()}), flush=True)
    one = statistics.median(f["trial_span_s"] for f in out["one_node"])
    two = statistics.median(f["trial_span_s"] for f in out["two_nodes"])
    one_wall = statistics.median(f["wall_s"] for f in out["one_node"])
    two_wall = statistics.median(f["wall_s"] for f in out["two_nodes"])
    summary = {
        "speedup_trial_span": one / two,
        "efficiency_trial_span": one / two / 2,
        "speedup_wall": one_wall / two_wall,
        "efficiency_wall": one_wall / two_wall / 2,
        "submit_to_first_trial_s": statistics.median(s["submit_to_first_trial_s"] for s in out["submit"]),
    }
    out["summary"] = summary
    print("summary", json.dumps({k: round(v, 3) for k, v in summary.items()}))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
