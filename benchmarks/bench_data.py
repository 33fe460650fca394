"""Data generation time and peak memory (not a test): make_synthetic at Baby scale, make_semi_synthetic
on the real Baby and Sports graphs. Each measurement runs in a fresh subprocess so the peak RSS is its own.

    .venv/bin/python benchmarks/bench_data.py [--repeats 3] [--amazon ../shared/data/amazon]

Prints one line per case: median seconds over the repeats and the peak RSS (MiB) of one run.
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

CHILD = """
import json, resource, sys, time
from clear_tune.data import make_semi_synthetic, make_synthetic
case, arg = sys.argv[1], sys.argv[2]
start = time.perf_counter()
if case == "synthetic":
    ds = make_synthetic(n_users=19445, n_items=7050, d_v=4096, d_t=384)
else:
    ds = make_semi_synthetic(arg)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "stats": ds.stats()}))
"""


def run_case(case: str, arg: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, case, arg], cwd=REPO, env=env, capture_output=True,
                         text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--amazon", default=str(REPO.parent / "shared" / "data" / "amazon"))
    args = parser.parse_args()
    cases = [("synthetic (Baby scale: 19,445 x 7,050, 4096/384)", "synthetic", "")]
    for name in ("baby", "sports"):
        path = Path(args.amazon) / name / f"{name}.inter"
        if path.is_file():
            cases.append((f"semi-synthetic {name} (real graph, 4096/384)", "semi", str(path)))
        else:
            print(f"skipping {name}: {path} not found")
    for label, case, arg in cases:
        runs = [run_case(case, arg) for _ in range(args.repeats)]
        seconds = statistics.median(r["seconds"] for r in runs)
        peak = max(r["peak_mb"] for r in runs)
        s = runs[0]["stats"]
        each = ", ".join(f"{r['seconds']:.2f}" for r in runs)
        print(f"{label}: median {seconds:.2f} s over {args.repeats} (runs: {each}), peak RSS {peak:.0f} MiB, "
              f"{s['users']:,} users, {s['items']:,} items, {s['interactions']:,} interactions")  # fmt: skip


if __name__ == "__main__":
    main()
