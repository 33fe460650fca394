"""Ctrl-C a real search in a subprocess after some trials finished, then --resume it to completion."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clear_tune.records import read_records
from clear_tune.spec import load_spec

REPO = Path(__file__).resolve().parents[1]

SPEC = """
experiment: resumable
data: {source: synthetic, options: {n_users: 150, n_items: 100, d_v: 16, d_t: 16, seed: 0}}
backbones: [lightgcn]
seeds: [0, 1, 2, 3, 4, 5]
trainer: {epochs: 25, patience: 25, emb_dim: 8, batch_size: 256}
projection: {mode: "off"}
max_concurrent: 1
"""


@pytest.mark.slow
def test_interrupt_then_resume_keeps_finished_trials(tmp_path):
    spec_path = tmp_path / "resumable.yaml"
    spec_path.write_text(SPEC)
    expected = {plan.key for plan in load_spec(spec_path).grid_trials()}
    results = tmp_path / "results"
    records_dir = results / "resumable" / "records"
    cmd = [
        sys.executable,
        "-m",
        "clear_tune.run",
        str(spec_path),
        "--results",
        str(results),
        "--verbose",
        "0",
        "--no-report",
    ]

    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while len(list(records_dir.glob("*.json"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # Ctrl-C: Ray stops the trials and saves the experiment state
    out, _ = proc.communicate(timeout=180)
    first = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in records_dir.glob("*.json")}
    assert 2 <= len(first) < len(expected), out
    assert proc.returncode == 130, out
    assert f"resume with: python -m clear_tune.run {spec_path} --results {results} --resume" in out

    resumed = subprocess.run(cmd + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    records = read_records(records_dir)
    assert {r["trial_id"] for r in records} == expected  # complete, no duplicates, same ids
    assert len(records) == len(expected)
    assert all(r["status"] == "completed" and r["epochs_run"] == 25 for r in records)
    # the records written before the interruption are untouched (same mtime, same bytes)
    assert {name: (p.stat().st_mtime_ns, p.read_bytes()) for name, p in ((n, records_dir / n) for n in first)} == first
    assert "6 of 6 trials recorded" in resumed.stdout
