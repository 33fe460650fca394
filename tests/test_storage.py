"""``results`` as a storage URI: records, spec/experiment files, Ray's state, --resume and the report all go
through ``pyarrow.fs`` (``file://`` here: the URI code path on the local filesystem, no network)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clear_tune import _storage
from clear_tune.aggregate import load_experiment
from clear_tune.errors import SpecError
from clear_tune.records import read_records, write_record
from clear_tune.spec import load_spec

REPO = Path(__file__).resolve().parents[1]

SPEC = """
experiment: stored
data: {source: synthetic, options: {n_users: 120, n_items: 80, d_v: 16, d_t: 16, seed: 0}}
backbones: [lightgcn]
seeds: [0, 1]
trainer: {epochs: 2, patience: 2, emb_dim: 8, batch_size: 512}
projection: {mode: "off"}
max_concurrent: 1
"""


def test_uri_join_keeps_scheme_and_query():
    assert _storage.join("s3://bucket/results/", "exp", "records") == "s3://bucket/results/exp/records"
    assert (_storage.join("s3://b/r?endpoint_override=127.0.0.1:9000", "exp")
            == "s3://b/r/exp?endpoint_override=127.0.0.1:9000")
    assert _storage.join("file:///tmp/r", "e") == "file:///tmp/r/e"
    assert _storage.join("results", "e") == "results/e"
    assert _storage.name("gs://b/results/grid/") == "grid"


def test_records_through_a_file_uri_are_atomic_and_write_once(tmp_path):
    uri = f"file://{tmp_path}/records"
    assert read_records(uri) == []
    assert write_record(uri, {"trial_id": "b", "status": "completed", "valid": {"recall@20": 0.5}})
    assert write_record(uri, {"trial_id": "a", "status": "pruned"})
    assert not write_record(uri, {"trial_id": "a", "status": "failed"})  # never rewritten
    (tmp_path / "records" / ".a.json.1234.tmp").write_text("{half")  # a crashed writer's leftover
    assert [(r["trial_id"], r["status"]) for r in read_records(uri)] == [("a", "pruned"), ("b", "completed")]
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == [".a.json.1234.tmp", "a.json", "b.json"]


def test_spec_accepts_storage_uris_and_rejects_unknown_schemes(tmp_path):
    spec_path = tmp_path / "s.yaml"
    spec_path.write_text(SPEC)
    spec = load_spec(spec_path, results="s3://bucket/results/")
    assert spec.experiment_location == "s3://bucket/results/stored"
    with pytest.raises(SpecError, match=r"results: 'ftp://host/x' has no storage scheme Ray supports"):
        load_spec(spec_path, results="ftp://host/x")
    with pytest.raises(SpecError, match="names no bucket"):
        load_spec(spec_path, results="s3:///x")


def test_search_resume_and_report_with_a_file_uri(tmp_path):
    """End to end through the CLIs: search -> records at the URI; --resume of the finished experiment re-runs
    nothing; the report reads the URI and copies tables/report.html back to it."""
    spec_path = tmp_path / "stored.yaml"
    spec_path.write_text(SPEC)
    uri = f"file://{tmp_path}/remote"
    exp = tmp_path / "remote" / "stored"
    env = {**_env(), "CLEAR_TUNE_LOCAL_DIR": str(tmp_path / "local")}
    cmd = [sys.executable, "-m", "clear_tune.run", str(spec_path), "--results", uri, "--no-report"]

    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"2 of 2 trials recorded in {uri}/stored/records" in first.stdout
    assert f"local files (Optuna study, report) in {tmp_path / 'local'}" in first.stdout
    records = read_records(f"{uri}/stored/records")
    assert [r["status"] for r in records] == ["completed"] * 2
    assert {r["config"]["seed"] for r in records} == {0, 1}
    assert (exp / "tuner.pkl").is_file() and (exp / "spec.yaml").read_text() == SPEC
    assert json.loads((exp / "experiment.json").read_text())["expected_trials"] == 2
    assert {r["trial_id"] for r in records} <= {p.name for p in exp.iterdir() if p.is_dir()}  # Ray's trial dirs
    before = {p.name: p.stat().st_mtime_ns for p in (exp / "records").iterdir()}

    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and again.stderr.startswith("error: ") and "add --resume" in again.stderr

    resumed = subprocess.run(cmd + ["--resume", "--verbose", "0"], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "2 of 2 trials recorded" in resumed.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (exp / "records").iterdir()} == before  # nothing re-run
    assert len(json.loads((exp / "experiment.json").read_text())["resumed_at"]) == 1

    assert len(load_experiment(f"{uri}/stored").records) == 2
    report = subprocess.run([sys.executable, "-m", "clear_tune.report", f"{uri}/stored"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert f"copied to: {uri}/stored/tables/" in report.stdout
    assert (exp / "report.html").is_file() and (exp / "tables" / "overall.csv").is_file()
    assert list((tmp_path / "local").glob("stored-*/report.html"))  # the local copy the user can open


def test_report_on_a_missing_uri_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "clear_tune.report", f"file://{tmp_path}/nothing/exp"],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
