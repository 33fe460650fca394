"""Diff two experiment folders of one spec: same trials, statuses, best epochs, curves, metrics and tables?

    .venv/bin/python benchmarks/compare_runs.py results-before/grid results-after/grid
    .venv/bin/python benchmarks/compare_runs.py before/grid after/grid --ignore patience   # a spec edit you meant

Prints one line per difference and exits 1, or prints nothing and exits 0. Trials are matched by name without
their hash suffix (the suffix hashes the whole config, which grows when the trainer gains an option); configs are
compared on the keys both sides have; metrics, on the names both sides have (a newer run may add metrics); loss
curves exactly; each table both sides wrote, on the columns and rows they share (rows added at the end count as
additions), after rounding to 12 digits.
Wall-clock columns (timings, memory, node) are not compared, nor config keys and columns named in ``--ignore``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from clear_tune.records import read_records

TRIAL_FIELDS = ("arm", "status", "reason", "best_epoch", "epochs_run", "dataset")
IDENTITY = ("config_key",)  # the whole config as JSON, like the trial id's hash: grows with the trainer's options
TIMING = ("sec", "wall", "peak", "mem", "node", "gpu", "share", "hours", "per_hour", "epoch_s", "time")


def _by_name(folder: Path) -> dict[str, dict]:
    return {r["trial_id"].rsplit("-", 1)[0]: r for r in read_records(folder / "records")}


def _common(a: dict, b: dict) -> list[str]:
    return [k for k in a if k in b]


def diff_trials(before: Path, after: Path, ignore: tuple[str, ...] = ()) -> list[str]:
    a, b = _by_name(before), _by_name(after)
    out = [f"trial only in {before}: {n}" for n in sorted(set(a) - set(b))]
    out += [f"trial only in {after}: {n}" for n in sorted(set(b) - set(a))]
    for name in sorted(set(a) & set(b)):
        x, y = a[name], b[name]
        out += [f"{name}: {f} {x.get(f)!r} != {y.get(f)!r}" for f in TRIAL_FIELDS if str(x.get(f)) != str(y.get(f))]
        out += [
            f"{name}: config.{k} {x['config'][k]!r} != {y['config'][k]!r}"
            for k in _common(x["config"], y["config"])
            if x["config"][k] != y["config"][k] and k not in ignore
        ]
        for split in ("valid", "test"):
            xs, ys = x.get(split) or {}, y.get(split) or {}
            out += [f"{name}: {split}.{m} {xs[m]!r} != {ys[m]!r}" for m in _common(xs, ys) if xs[m] != ys[m]]
        xc, yc = x.get("curve") or [], y.get("curve") or []
        if [(p["epoch"], p["loss"]) for p in xc] != [(p["epoch"], p["loss"]) for p in yc]:
            out.append(f"{name}: loss curves differ")
        elif any(p["valid"][m] != q["valid"][m] for p, q in zip(xc, yc) for m in _common(p["valid"], q["valid"])):
            out.append(f"{name}: valid curves differ")
    return out


def _same(x: pd.Series, y: pd.Series) -> bool:
    try:  # 3 and 3.0 are the same value (a column gains a NaN row, and so a float dtype, in a newer table)
        pd.testing.assert_series_equal(x, y, check_dtype=False, check_exact=True, check_names=False)
    except AssertionError:
        return False
    return True


def diff_tables(before: Path, after: Path, ignore: tuple[str, ...] = ()) -> list[str]:
    out = []
    for path in sorted((before / "tables").glob("*.csv")):
        other = after / "tables" / path.name
        if not other.exists():
            out.append(f"table only in {before}: {path.name}")
            continue
        x, y = pd.read_csv(path), pd.read_csv(other)
        columns = [
            c
            for c in x.columns
            if c in y.columns
            and c not in IDENTITY
            and not any(t in c.lower() for t in TIMING)
            and not any(i in c for i in ignore)
        ]
        if "trial_id" in columns:  # one row per trial: match rows by trial name, as the records are
            x, y = (t.assign(trial_id=t["trial_id"].str.rsplit("-", n=1).str[0]) for t in (x, y))
            x, y = (t.sort_values("trial_id", ignore_index=True) for t in (x, y))
        if len(x) > len(y):
            out.append(f"{path.name}: {len(x)} rows before, {len(y)} after")
            continue
        # rows a newer version adds after the old ones (the overall table's Improv. row) are additions, not changes
        x, y = x[columns].round(12), y[columns].head(len(x)).round(12)
        for column in columns:
            if not _same(x[column], y[column]):
                out.append(f"{path.name}: column {column!r} differs")
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="experiment folder (results/<experiment>)")
    parser.add_argument("after", type=Path)
    parser.add_argument("--ignore", action="append", default=[], help="a config key / column part not to compare")
    args = parser.parse_args(argv)
    before, after, ignore = args.before, args.after, tuple(args.ignore)
    for folder in (before, after):
        if not (folder / "records").is_dir():
            print(f"error: {folder} has no records/ folder: give an experiment folder (results/<experiment>)")
            return 2
    lines = diff_trials(before, after, ignore) + diff_tables(before, after, ignore)
    print("\n".join(lines), end="\n" if lines else "")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
