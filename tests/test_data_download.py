"""Download against a REAL http.server on 127.0.0.1 (with Range support written here): full, resumed,
checksum mismatch, 404, and the CLI's exit codes."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from clear_tune.data import download, load_mmrec
from clear_tune.errors import DataError

REPO = Path(__file__).resolve().parents[1]
N_USERS, N_ITEMS = 30, 40


def dataset_files(name: str) -> dict[str, bytes]:
    """A small valid MMRec dataset: ~80 KB of incompressible features so the transfer takes many chunks."""
    rng = np.random.default_rng(0)
    rows = ["userID\titemID\tx_label"]
    for u in range(N_USERS):
        for j, i in enumerate(rng.choice(N_ITEMS, size=5, replace=False)):
            rows.append(f"{u}\t{i}\t{[0, 0, 0, 1, 2][j]}")
    rows.append(f"0\t{N_ITEMS - 1}\t0")  # make sure the last item id occurs
    files = {f"{name}.inter": ("\n".join(rows) + "\n").encode()}
    for fname, dim in (("image_feat.npy", 400), ("text_feat.npy", 64)):
        buffer = io.BytesIO()
        np.save(buffer, rng.standard_normal((N_ITEMS, dim)))  # float64 on purpose: the loader converts
        files[fname] = buffer.getvalue()
    return files


def zip_archive(name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:  # stored, not deflated: the size stays predictable
        for fname, data in dataset_files(name).items():
            zf.writestr(f"{name}/{fname}", data)
    return buffer.getvalue()


def tar_gz_archive(name: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for fname, data in dataset_files(name).items():
            info = tarfile.TarInfo(f"mmrec_data/{name}/{fname}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class ArchiveServer:
    """Serves ``files`` (path -> bytes) with Range support; can drop the connection mid-way N times."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.drops_left = 0
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                range_header = self.headers.get("Range")
                server.requests.append((self.path, range_header))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                if range_header and range_header.startswith("bytes="):
                    start = int(range_header[len("bytes=") :].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if server.drops_left > 0:  # send about half, then cut the connection
                    server.drops_left -= 1
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> ArchiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    files = {"/toy.zip": zip_archive("toy"), "/toy.tar.gz": tar_gz_archive("toy")}
    with ArchiveServer(files) as srv:
        yield srv


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_full_download_zip_with_checksum(server, tmp_path):
    archive = server.files["/toy.zip"]
    folder = download("toy", root=tmp_path, url=f"{server.url}/toy.zip", sha256=sha(archive), progress=False)
    assert folder == tmp_path / "toy"
    assert sorted(p.name for p in folder.iterdir()) == ["image_feat.npy", "text_feat.npy", "toy.inter"]
    ds = load_mmrec(tmp_path, "toy")
    assert (ds.n_users, ds.n_items) == (N_USERS, N_ITEMS)
    assert ds.image_feat.dtype == np.float32 and ds.image_feat.shape == (N_ITEMS, 400)
    assert server.requests == [("/toy.zip", None)]
    assert not list((tmp_path / ".downloads").iterdir()), "the archive and .part are cleaned up"
    # A second call finds the valid dataset and does not fetch again.
    download("toy", root=tmp_path, url=f"{server.url}/toy.zip", progress=False)
    assert len(server.requests) == 1


def test_tar_gz_with_nested_layout(server, tmp_path):
    download("toy", root=tmp_path, url=f"{server.url}/toy.tar.gz", progress=False, keep_archive=True)
    assert load_mmrec(tmp_path, "toy").n_items == N_ITEMS
    assert (tmp_path / ".downloads" / "toy.tar.gz").read_bytes() == server.files["/toy.tar.gz"]


def test_dropped_connection_is_resumed_with_a_range_request(server, tmp_path):
    archive = server.files["/toy.zip"]
    server.drops_left = 1
    download("toy", root=tmp_path, url=f"{server.url}/toy.zip", sha256=sha(archive), progress=False)
    assert load_mmrec(tmp_path, "toy").n_users == N_USERS
    assert [r for _, r in server.requests] == [None, f"bytes={len(archive) // 2}-"]


def test_interrupted_download_keeps_the_part_and_the_next_run_resumes(server, tmp_path):
    archive = server.files["/toy.zip"]
    server.drops_left = 1
    url = f"{server.url}/toy.zip"
    with pytest.raises(DataError) as err:
        download("toy", root=tmp_path, url=url, retries=0, progress=False)
    part = tmp_path / ".downloads" / "toy.zip.part"
    assert str(err.value) == (
        f"download of {url} stopped (received {len(archive) // 2} of {len(archive)} bytes) after 1 attempt(s); "
        f"{part} is kept, "
        "run the same command again to resume"
    )
    assert part.read_bytes() == archive[: len(archive) // 2]
    download("toy", root=tmp_path, url=url, sha256=sha(archive), retries=0, progress=False)
    assert server.requests[-1] == ("/toy.zip", f"bytes={len(archive) // 2}-")
    assert not part.exists() and load_mmrec(tmp_path, "toy").n_items == N_ITEMS


def test_checksum_mismatch_deletes_the_archive_and_leaves_no_dataset(server, tmp_path):
    url = f"{server.url}/toy.zip"
    wrong = "0" * 64
    with pytest.raises(DataError) as err:
        download("toy", root=tmp_path, url=url, sha256=wrong, progress=False)
    assert str(err.value) == (
        f"checksum mismatch for {url}: expected sha256 {wrong}, got {sha(server.files['/toy.zip'])}; "
        "the file was deleted, check --sha256 and --url"
    )
    assert not (tmp_path / "toy").exists()
    assert not list((tmp_path / ".downloads").iterdir())


def test_404_is_one_line(server, tmp_path):
    url = f"{server.url}/missing.zip"
    with pytest.raises(DataError) as err:
        download("toy", root=tmp_path, url=url, progress=False)
    assert str(err.value) == f"download of {url} failed: HTTP 404 Not Found; check the URL (--url)"


def test_archive_without_the_dataset(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("other/other.inter", "userID\titemID\tx_label\n")
    with ArchiveServer({"/other.zip": buffer.getvalue()}) as srv:
        with pytest.raises(DataError) as err:
            download("toy", root=tmp_path, url=f"{srv.url}/other.zip", progress=False)
    assert str(err.value) == "the archive has no toy.inter; check that --url points at the 'toy' dataset"


def test_default_table_points_at_mmrecs_drive_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("CLEAR_TUNE_DATA_URL_BABY", raising=False)
    with pytest.raises(DataError, match=r"^MMRec publishes 'baby' in a Google Drive folder \(https://drive"):
        download("baby", root=tmp_path, progress=False)
    with pytest.raises(DataError) as err:
        download("movielens", root=tmp_path, progress=False)
    assert str(err.value) == "no default download URL for dataset 'movielens' (known: baby, clothing, sports); pass --url URL"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "clear_tune.data", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_cli_download_and_stats(server, tmp_path):
    archive = server.files["/toy.zip"]
    done = run_cli("download", "toy", "--root", str(tmp_path), "--url", f"{server.url}/toy.zip", "--sha256", sha(archive))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "toy")
    stats = run_cli("stats", f"mmrec:{tmp_path}/toy")
    assert stats.returncode == 0, stats.stderr
    assert f"users         {N_USERS}" in stats.stdout and "features      from files: image 400-d, text 64-d" in stats.stdout

    missing = run_cli("download", "toy", "--root", str(tmp_path / "x"), "--url", f"{server.url}/nope.zip", "--quiet")
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.strip().splitlines() == [
        f"error: download of {server.url}/nope.zip failed: HTTP 404 Not Found; check the URL (--url)"
    ]


def test_cli_stats_synthetic_and_bad_source_via_subprocess():
    ok = run_cli("stats", "synthetic", "--option", "n_users=200", "--option", "n_items=100", "--option", "d_v=32")
    assert ok.returncode == 0, ok.stderr
    assert "users         200" in ok.stdout and "GENERATED" in ok.stdout
    bad = run_cli("stats", "nonsense")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        "error: data source 'nonsense' is not understood; use \"synthetic\", \"semi:PATH/TO/name.inter\" or \"mmrec:ROOT/NAME\""
    ]


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["stats", "synthetic", "--option", "seed"], "error: --option 'seed' must look like KEY=VALUE, e.g. --option seed=1"),
        (["stats", "mmrec:/nonexistent/baby"], "error: /nonexistent/baby: dataset folder not found; check ROOT/NAME "
                                               "or run `python -m clear_tune.data download baby`"),
        (["frobnicate"], "error: argument command: invalid choice: 'frobnicate' (choose from 'download', 'stats') (see --help)"),
        (["download"], "error: the following arguments are required: name (see --help)"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(argv, line, capsys):
    """The same main + run_cli wrapper as the subprocess tests above, called in-process to keep the suite fast."""
    from clear_tune._cli_errors import run_cli as wrap
    from clear_tune.data.__main__ import main

    assert wrap(main, argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip().splitlines() == [line]


def test_file_url_works_without_a_server(tmp_path):
    source = tmp_path / "mirror" / "toy.zip"
    source.parent.mkdir()
    source.write_bytes(zip_archive("toy"))
    folder = download("toy", root=tmp_path / "data", url=source.as_uri(), sha256=sha(source.read_bytes()), progress=False)
    assert load_mmrec(folder.parent, "toy").n_items == N_ITEMS
