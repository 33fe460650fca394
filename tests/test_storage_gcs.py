"""``results`` as a ``gs://`` URI against a real GCS emulator on 127.0.0.1 (gcp-storage-emulator, from the
separate ``.venv-gcs`` that ``make test`` creates with ``make gcs-server``), reached the way a user reaches
a GCS-compatible endpoint: ``GOOGLE_APPLICATION_CREDENTIALS`` in the environment and the endpoint in the URI's
query (``?endpoint_override=HOST:PORT&scheme=http``).

Why these two pieces: pyarrow's GCS filesystem reads no endpoint variable (neither ``STORAGE_EMULATOR_HOST``
nor ``CLOUD_STORAGE_EMULATOR_ENDPOINT``) and ``FileSystem.from_uri`` rejects ``anonymous=`` in the query, so a
URI-only path needs credentials. A service-account key file (made here with a fresh RSA key) is signed into a
JWT locally by the GCS client, with no token exchange, so nothing leaves 127.0.0.1 and the emulator, which does
not check tokens, accepts it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from fixtures.loopback import free_port
from fixtures.storage_servers import STORED_SPEC as SPEC
from fixtures.storage_servers import check_records_and_tables_round_trip, files_under, running_server

from clear_tune import _storage
from clear_tune.errors import DataError
from clear_tune.records import read_records

REPO = Path(__file__).resolve().parents[1]
GCS_SERVER = REPO / ".venv-gcs" / "bin" / "gcp-storage-emulator"


@pytest.fixture(scope="module")
def gcs_endpoint(tmp_path_factory):
    """``127.0.0.1:PORT`` of a GCS emulator started (in memory) for this module (skipped without .venv-gcs)."""
    if not GCS_SERVER.is_file():
        pytest.skip(".venv-gcs (the GCS emulator's venv) is absent: `make gcs-server` creates it (`make test` does)")
    port = free_port()
    log = tmp_path_factory.mktemp("gcs") / "emulator.log"
    endpoint = f"127.0.0.1:{port}"
    with running_server(
        [str(GCS_SERVER), "start", "-H", "127.0.0.1", "--port", str(port), "--in-memory"],
        ready_url=f"http://{endpoint}/storage/v1/b",
        log=log,
        name="gcp-storage-emulator",
    ):
        yield endpoint


@pytest.fixture
def gcs(gcs_endpoint, tmp_path, monkeypatch):
    """A fresh bucket on the emulator and a service-account key in ``GOOGLE_APPLICATION_CREDENTIALS`` (also put
    in this process's environment); returns (``gs://BUCKET/results?endpoint...`` URI, env for subprocesses)."""
    rsa = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.rsa")
    from cryptography.hazmat.primitives import serialization

    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    credentials = tmp_path / "service-account.json"
    credentials.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "clear-tune-test",
                "private_key_id": uuid.uuid4().hex,
                "private_key": key,
                "client_email": "tests@clear-tune-test.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": "https://oauth2.googleapis.com/token",  # never contacted: the key signs its own JWT
            }
        )
    )
    for name in ("CLOUD_STORAGE_EMULATOR_ENDPOINT", "STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(credentials))
    bucket = f"ct-{uuid.uuid4().hex[:10]}"
    _server_view(gcs_endpoint).create_dir(bucket)
    # a short retry budget: a dead emulator fails the test in seconds instead of the client's 15-minute default
    uri = f"gs://{bucket}/results?endpoint_override={gcs_endpoint}&scheme=http&retry_limit_seconds=15"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return uri, env


def _server_view(endpoint: str):
    """A client configured explicitly and anonymously (not from the environment): what the emulator really holds."""
    import pyarrow.fs

    return pyarrow.fs.GcsFileSystem(
        anonymous=True, scheme="http", endpoint_override=endpoint, project_id="clear-tune-test"
    )


def _bucket(uri: str) -> str:
    return uri.split("://", 1)[1].split("/", 1)[0]


def test_gcs_records_and_files_round_trip_through_an_emulator(gcs, gcs_endpoint, tmp_path):
    uri, _ = gcs
    root = _storage.join(uri, "exp")
    assert _storage.join(root, "records").startswith(f"gs://{_bucket(uri)}/results/exp/records?endpoint_override=")
    check_records_and_tables_round_trip(root, tmp_path)

    # what the emulator holds, seen through a client that does not read the environment
    prefix = f"{_bucket(uri)}/results/exp"
    assert set(files_under(_server_view(gcs_endpoint), prefix)) == {
        "records/a.json.failed-1",
        "records/b.json",
        "tables/overall.csv",
    }
    assert json.loads(_server_view(gcs_endpoint).open_input_stream(f"{prefix}/records/b.json").read())["valid"] == {
        "recall@20": 0.5
    }


def test_search_with_results_on_gcs(gcs, gcs_endpoint, tmp_path):
    """A tiny grid run with ``--results gs://...``: Ray Tune's storage layer (its state, trial folders,
    checkpoints) and our driver (records, spec.yaml, experiment.json) both write into the emulator's bucket."""
    uri, env = gcs
    env["CLEAR_TUNE_LOCAL_DIR"] = str(tmp_path / "local")
    spec_path = tmp_path / "stored.yaml"
    spec_path.write_text(SPEC)
    run = subprocess.run(
        [sys.executable, "-m", "clear_tune.run", str(spec_path), "--results", uri, "--no-report", "--verbose", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"2 of 2 trials recorded in {_storage.join(uri, 'stored', 'records')} (2 completed" in run.stdout

    prefix = f"{_bucket(uri)}/results/stored"
    stored = files_under(_server_view(gcs_endpoint), prefix)
    records = read_records(_storage.join(uri, "stored", "records"))
    assert [r["status"] for r in records] == ["completed"] * 2 and {r["config"]["seed"] for r in records} == {0, 1}
    assert {f"records/{r['trial_id']}.json" for r in records} <= set(stored)
    assert {"tuner.pkl", "spec.yaml", "experiment.json"} <= set(stored)
    assert any(k.startswith(f"{records[0]['trial_id']}/checkpoint_") for k in stored)  # Ray's trial folder
    server = _server_view(gcs_endpoint)
    assert server.open_input_stream(f"{prefix}/spec.yaml").read().decode() == SPEC
    assert json.loads(server.open_input_stream(f"{prefix}/experiment.json").read())["expected_trials"] == 2


def test_gcs_missing_bucket_is_one_line(gcs, gcs_endpoint):
    uri, _ = gcs
    missing = uri.replace(_bucket(uri), "no-such-bucket", 1)
    with pytest.raises(DataError, match="no-such-bucket"):
        _storage.list_files(_storage.join(missing, "exp", "records"))
    with pytest.raises(DataError, match="no-such-bucket"):
        _storage.write_text(_storage.join(missing, "exp", "x.json"), "{}")
