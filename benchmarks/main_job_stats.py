"""What the main job's records say about early stopping and noise (issue 20's before/after).

    .venv/bin/python benchmarks/main_job_stats.py results/grid [results/grid-before ...]

Per experiment folder: how many CLEAR trials (backbone ``clear``, projection active) stopped within 20 epochs
(``epochs_run <= 20``) and how many of those were still at their early level (best epoch <= 6); how many trials of
any backbone stopped early without ever leaving their epoch-2 level (best valid R@20 < 1.1 x the first evaluation's);
the spread of the
λ × k cells over seeds (per backbone: the mean over cells of the sample std over seeds of test R@20, and of valid
R@20); the search's wall time (first trial start to last trial end).
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict

from clear_tune.records import read_records


def summarise(folder: str) -> None:
    records = read_records(f"{folder}/records")
    clear = [
        r
        for r in records
        if r["config"]["backbone"] == "clear"
        and r["config"]["projection"]["mode"] != "off"
        and r["config"]["projection"]["strength"] > 0
    ]
    short = [r for r in clear if r["epochs_run"] <= 20]
    early = [r for r in short if (r["best_epoch"] or 0) <= 6]
    stuck = [
        r
        for r in records
        if r.get("reason") == "early_stop"
        and r["curve"]
        and r["valid"]["recall@20"] < 1.1 * r["curve"][0]["valid"]["recall@20"]
    ]
    starts = [r["wall_start"] for r in records if r.get("wall_start")]
    ends = [r["wall_end"] for r in records if r.get("wall_end")]
    print(
        f"{folder}: {len(records)} trials; CLEAR trials {len(clear)}, stopped within 20 epochs {len(short)} "
        f"(best epoch <= 6: {len(early)}); stopped at their epoch-2 level (any backbone) {len(stuck)}; "
        f"search wall {(max(ends) - min(starts)) / 60:.1f} min"
    )
    for backbone in sorted({r["config"]["backbone"] for r in records}):
        cells: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: {"test": [], "valid": []})
        for r in records:
            pj = r["config"]["projection"]
            if r["config"]["backbone"] != backbone or pj["mode"] != "fixed" or r["status"] != "completed":
                continue
            cells[(pj["k"], pj["strength"])]["test"].append(r["test"]["recall@20"])
            cells[(pj["k"], pj["strength"])]["valid"].append(r["valid"]["recall@20"])
        spread = (
            {
                split: statistics.fmean(statistics.stdev(c[split]) for c in cells.values() if len(c[split]) > 1)
                for split in ("test", "valid")
            }
            if cells
            else {}
        )
        epochs = [r["epochs_run"] for r in records if r["config"]["backbone"] == backbone]
        best = [r["best_epoch"] for r in records if r["config"]["backbone"] == backbone and r["best_epoch"]]
        print(
            f"  {backbone}: {len(cells)} λ×k cells, "
            f"mean std over seeds test R@20 {spread.get('test', float('nan')):.4f}, "
            f"valid R@20 {spread.get('valid', float('nan')):.4f}; median epochs run {statistics.median(epochs):.0f}, "
            f"median best epoch {statistics.median(best):.0f}"
        )


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        summarise(folder)
