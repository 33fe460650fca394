"""``results`` as a storage URI: records, spec/experiment files, Ray's state, --resume and the report all go
through ``pyarrow.fs``: ``file://`` (the URI code path on the local filesystem) and ``s3://`` against a real
S3 server on 127.0.0.1 (moto's, from the separate ``.venv-s3`` that ``make test`` creates), reached the way
users reach MinIO or any S3-compatible store: ``AWS_ENDPOINT_URL`` and keys in the environment."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from fixtures.loopback import free_port
from fixtures.storage_servers import STORED_SPEC as SPEC
from fixtures.storage_servers import check_records_and_tables_round_trip, files_under, running_server

from clear_tune import _storage
from clear_tune.aggregate import load_experiment
from clear_tune.errors import DataError, SpecError
from clear_tune.records import read_records, write_record
from clear_tune.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
S3_SERVER = REPO / ".venv-s3" / "bin" / "moto_server"


def test_uri_join_keeps_scheme_and_query():
    assert _storage.join("s3://bucket/results/", "exp", "records") == "s3://bucket/results/exp/records"
    assert (
        _storage.join("s3://b/r?endpoint_override=127.0.0.1:9000", "exp")
        == "s3://b/r/exp?endpoint_override=127.0.0.1:9000"
    )
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

    resumed = subprocess.run(
        cmd + ["--resume", "--verbose", "0"], cwd=REPO, env=env, capture_output=True, text=True, timeout=240
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "2 of 2 trials recorded" in resumed.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (exp / "records").iterdir()} == before  # nothing re-run
    assert len(json.loads((exp / "experiment.json").read_text())["resumed_at"]) == 1

    assert len(load_experiment(f"{uri}/stored").records) == 2
    report = subprocess.run(
        [sys.executable, "-m", "clear_tune.report", f"{uri}/stored"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    assert f"copied to: {uri}/stored/tables/" in report.stdout
    assert (exp / "report.html").is_file() and (exp / "tables" / "overall.csv").is_file()
    assert list((tmp_path / "local").glob("stored-*/report.html"))  # the local copy the user can open


def test_report_on_a_missing_uri_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "clear_tune.report", f"file://{tmp_path}/nothing/exp"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


# --- S3: a real S3 server (moto) on 127.0.0.1 -------------------------------------------------------------

TINY_OPTUNA = """
experiment: tinyopt
data: {source: synthetic, options: {n_users: 120, n_items: 80, d_v: 16, d_t: 16, seed: 0}}
backbones: [clear]
seeds: [0]
trainer: {epochs: 2, patience: 2, emb_dim: 8, batch_size: 512}
projection: {mode: fixed, k: {low: 2, high: 4}, strength: {low: 0.3, high: 0.9}}
search: {kind: optuna, n_trials: 2, sampler: random, seed: 0}
max_concurrent: 1
"""


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """``http://127.0.0.1:PORT`` of a moto S3 server started for this module (skipped without .venv-s3)."""
    if not S3_SERVER.is_file():
        pytest.skip(".venv-s3 (the S3 server's venv) is absent: `make s3-server` creates it (`make test` does)")
    port = free_port()
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    endpoint = f"http://127.0.0.1:{port}"
    with running_server(
        [str(S3_SERVER), "-H", "127.0.0.1", "-p", str(port)], ready_url=endpoint, log=log, name="moto_server"
    ):
        yield endpoint


@pytest.fixture
def s3(s3_endpoint, tmp_path, monkeypatch):
    """A fresh bucket on the S3 server and the environment a user of an S3-compatible store sets (also put in
    this process's environment); returns (bucket, env for subprocesses)."""
    aws = {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        # the machine's own AWS profile must not leak in
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-creds"),
    }
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    for key, value in aws.items():
        monkeypatch.setenv(key, value)
    bucket = f"ct-{uuid.uuid4().hex[:10]}"
    _server_view(s3_endpoint).create_dir(bucket)
    return bucket, {**_env(), **aws}  # _env() reads os.environ, already without the keys deleted above


def _server_view(endpoint: str):
    """A client configured explicitly (not from the environment): what is really in the server's buckets."""
    import pyarrow.fs

    return pyarrow.fs.S3FileSystem(
        endpoint_override=endpoint,
        scheme="http",
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
        allow_bucket_creation=True,
    )


def test_s3_records_and_files_round_trip_through_a_real_s3_server(s3, s3_endpoint, tmp_path):
    bucket, _ = s3
    root = f"s3://{bucket}/results/exp"
    check_records_and_tables_round_trip(root, tmp_path)
    (tmp_path / "report.html").write_text("<html></html>")
    _storage.upload_file(tmp_path / "report.html", _storage.join(root, "report.html"))

    # what the server holds, seen through a client that does not read the environment
    assert set(files_under(_server_view(s3_endpoint), f"{bucket}/results/exp")) == {
        "records/a.json.failed-1",
        "records/b.json",
        "tables/overall.csv",
        "report.html",
    }
    assert json.loads(_server_view(s3_endpoint).open_input_stream(f"{bucket}/results/exp/records/b.json").read())[
        "valid"
    ] == {"recall@20": 0.5}


def test_s3_missing_bucket_is_one_line_before_anything_starts(s3, tmp_path):
    bucket, env = s3
    with pytest.raises(DataError, match=r"bucket 'no-such-bucket' does not exist; create it .*AWS_ENDPOINT_URL"):
        _storage.list_files("s3://no-such-bucket/results/exp/records")
    assert _storage.list_files("s3://no-such-bucket/r?allow_bucket_creation=true") == []  # the user asked for it

    # The run fails in one line, exit 2, before Ray starts or anything is written.
    spec_path = tmp_path / "stored.yaml"
    spec_path.write_text(SPEC)
    run = subprocess.run(
        [sys.executable, "-m", "clear_tune.run", str(spec_path), "--results", "s3://no-such-bucket/r"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and run.stdout == "", run.stdout + run.stderr
    assert (
        run.stderr.count("\n") == 1 and "results: storage 's3://no-such-bucket/r/stored/records': bucket" in run.stderr
    )

    # pyarrow's own multi-line errors (here: a write into the missing bucket) come out as one line too
    with pytest.raises(
        DataError,
        match=r"^storage 's3://no-such-bucket/r/x.json': cannot write \(Bucket 'no-such-"
        r"bucket' not found\.[^\n]*AWS_ACCESS_KEY_ID[^\n]*$",
    ):
        _storage.write_text("s3://no-such-bucket/r/x.json", "{}")


def test_search_optuna_mirror_resume_and_report_on_s3(s3, s3_endpoint, tmp_path):
    """A tiny Optuna search with results on S3: records, Ray's state and the Optuna study land in the bucket;
    --resume with the local mirror gone fetches the study back and re-runs nothing; the report is uploaded."""
    bucket, env = s3
    env["CLEAR_TUNE_LOCAL_DIR"] = str(tmp_path / "local")
    spec_path = tmp_path / "tinyopt.yaml"
    spec_path.write_text(TINY_OPTUNA)
    uri = f"s3://{bucket}/results"
    cmd = [sys.executable, "-m", "clear_tune.run", str(spec_path), "--results", uri, "--no-report", "--verbose", "1"]

    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"2 of 2 trials recorded in {uri}/tinyopt/records" in first.stdout
    stored = files_under(_server_view(s3_endpoint), f"{bucket}/results/tinyopt")
    records = sorted(k for k in stored if k.startswith("records/") and k.endswith(".json"))
    users = sorted(k for k in stored if k.startswith("records/") and k.endswith(".users.npz"))  # per-user values
    assert len(records) == 2 and {"tuner.pkl", "spec.yaml", "experiment.json", "optuna.db"} <= set(stored)
    assert users == [r.removesuffix(".json") + ".users.npz" for r in records]
    assert stored["optuna.db"] > 0 and all(r["status"] == "completed" for r in read_records(f"{uri}/tinyopt/records"))
    [mirror] = (tmp_path / "local").glob("tinyopt-*")
    assert (mirror / "optuna.db").is_file()

    def mtimes():
        import pyarrow.fs

        infos = _server_view(s3_endpoint).get_file_info(pyarrow.fs.FileSelector(f"{bucket}/results/tinyopt/records"))
        return {i.path: i.mtime for i in infos}

    before = mtimes()
    shutil.rmtree(mirror)  # another machine, or a wiped cache: the study must come back from the bucket
    resumed = subprocess.run(cmd + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "2 of 2 trials recorded" in resumed.stdout and mtimes() == before  # nothing re-run
    assert (mirror / "optuna.db").stat().st_size == stored["optuna.db"]

    report = subprocess.run(
        [sys.executable, "-m", "clear_tune.report", f"{uri}/tinyopt"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stdout + report.stderr
    assert f"copied to: {uri}/tinyopt/tables/ and {uri}/tinyopt/report.html" in report.stdout
    stored = files_under(_server_view(s3_endpoint), f"{bucket}/results/tinyopt")
    assert stored["report.html"] > 1000 and stored["tables/overall.csv"] > 0
