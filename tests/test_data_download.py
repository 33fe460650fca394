"""Download against a REAL http.server on 127.0.0.1 (with Range support written here): full, resumed,
checksum mismatch, 404, unreachable mirror, and the CLI's exit codes.

The default source (MMRec's Google Drive folder, through gdown) cannot be reached from the test
machines. It is tested with the REAL gdown against a fake Drive on 127.0.0.1: only gdown's session
factory is replaced, by one whose requests to https://drive.google.com go to the local server (and
any other host is refused). Those tests skip, saying so, when gdown (the ``download`` extra) is not
installed; the missing-gdown message is tested either way.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import socket
import subprocess
import sys
import tarfile
import threading
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from clear_tune.data import download, load_mmrec
from clear_tune.data._download import MMREC_DRIVE_FOLDER, MMREC_DRIVE_FOLDER_ID
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
    """Serves ``files`` (path -> bytes) with Range support; can drop the connection mid-way N times.

    ``headers`` (path -> {name: value}) adds response headers per path (the fake Drive needs them).
    """

    def __init__(self, files: dict[str, bytes], headers: dict[str, dict[str, str]] | None = None) -> None:
        self.files = files
        self.headers = headers if headers is not None else {}
        self.drops_left = 0
        self.drop_path: str | None = None  # when set, only requests for this path are dropped
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
                for key, value in server.headers.get(self.path, {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if server.drops_left > 0 and server.drop_path in (None, self.path):  # send half, then cut
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
    # The wrong archive is deleted, so a corrected --url fetches afresh instead of reusing it.
    assert not list((tmp_path / ".downloads").iterdir()) and not (tmp_path / "toy").exists()


def test_unknown_dataset_without_url_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("CLEAR_TUNE_DATA_URL_MOVIELENS", raising=False)
    with pytest.raises(DataError) as err:
        download("movielens", root=tmp_path, progress=False)
    assert (
        str(err.value)
        == "no default download URL for dataset 'movielens' (known: baby, clothing, sports); pass --url URL"
    )


def test_unreachable_mirror_is_one_line_and_exit_2(tmp_path, capsys):
    from clear_tune._cli_errors import run_cli as wrap
    from clear_tune.data.__main__ import main

    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/toy.zip"
    assert wrap(main, ["download", "toy", "--root", str(tmp_path), "--url", url, "--retries", "0", "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.strip().splitlines()
    assert line.startswith(f"error: download of {url} failed (cannot connect: ")
    assert line.endswith("after 1 attempt(s); check the URL (--url) and the network")
    assert not (tmp_path / ".downloads" / "toy.zip.part").exists(), "no empty .part is left to 'resume'"


def test_features_elsewhere_in_the_archive_are_moved_next_to_the_inter_file(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for fname, data in dataset_files("toy").items():
            where = "pack/toy" if fname.endswith(".inter") else "pack/features"
            info = tarfile.TarInfo(f"{where}/{fname}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    source = tmp_path / "toy.tar.gz"
    source.write_bytes(buffer.getvalue())
    folder = download("toy", root=tmp_path / "data", url=source.as_uri(), progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["image_feat.npy", "text_feat.npy", "toy.inter"]
    assert load_mmrec(folder.parent, "toy").image_feat.shape == (N_ITEMS, 400)


def test_an_invalid_new_download_keeps_the_previous_dataset(tmp_path):
    good = tmp_path / "good.zip"
    good.write_bytes(zip_archive("toy"))
    download("toy", root=tmp_path / "data", url=good.as_uri(), progress=False)
    files = dataset_files("toy")
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((N_ITEMS - 1, 64)))  # one row short
    files["text_feat.npy"] = buffer.getvalue()
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        for fname, data in files.items():
            zf.writestr(f"toy/{fname}", data)
    with pytest.raises(DataError) as err:
        download("toy", root=tmp_path / "data", url=bad.as_uri(), force=True, progress=False)
    assert "text_feat.npy" in str(err.value) and "\n" not in str(err.value)
    assert load_mmrec(tmp_path / "data", "toy").text_feat.shape == (N_ITEMS, 64), "the old dataset is restored"
    assert not list((tmp_path / "data" / ".downloads").iterdir())


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "clear_tune.data", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_cli_download_and_stats(server, tmp_path):
    archive = server.files["/toy.zip"]
    done = run_cli(
        "download", "toy", "--root", str(tmp_path), "--url", f"{server.url}/toy.zip", "--sha256", sha(archive)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "toy")
    stats = run_cli("stats", f"mmrec:{tmp_path}/toy")
    assert stats.returncode == 0, stats.stderr
    assert (
        f"users         {N_USERS}" in stats.stdout
        and "features      from files: image 400-d, text 64-d" in stats.stdout
    )

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
        'error: data source \'nonsense\' is not understood; use "synthetic", "semi:PATH/TO/name.inter" or "mmrec:ROOT/NAME"'
    ]


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (
            ["stats", "synthetic", "--option", "seed"],
            "error: --option 'seed' must look like KEY=VALUE, e.g. --option seed=1",
        ),
        (
            ["stats", "mmrec:/nonexistent/baby"],
            "error: /nonexistent/baby: dataset folder not found; check ROOT/NAME "
            "or run `python -m clear_tune.data download baby`",
        ),
        (
            ["frobnicate"],
            "error: argument command: invalid choice: 'frobnicate' (choose from 'download', 'stats') (see --help)",
        ),
        (["download"], "error: the following arguments are required: name (see --help)"),
        (
            ["download", "movielens", "--root", "/nonexistent-root"],
            "error: no default download URL for dataset 'movielens' (known: baby, clothing, sports); pass --url URL",
        ),
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
    folder = download(
        "toy", root=tmp_path / "data", url=source.as_uri(), sha256=sha(source.read_bytes()), progress=False
    )
    assert load_mmrec(folder.parent, "toy").n_items == N_ITEMS


# --- the default source: MMRec's Google Drive folder through gdown ----------------------------------

GDOWN_SKIP_REASON = (
    "gdown is not installed (the 'download' extra: pip install -c constraints.txt -e '.[download]'); "
    "the Google Drive path is only tested with the real gdown"
)


def drive_id(tag: str) -> str:
    """A Drive-shaped id (gdown's parser wants 25+ word characters)."""
    return (tag + "_" * 28)[:28]


class FakeDrive:
    """Google Drive's two endpoints that gdown uses, served by an :class:`ArchiveServer` on 127.0.0.1."""

    def __init__(self, server: ArchiveServer) -> None:
        self.server = server

    def folder(self, folder_id: str, title: str, entries: list[tuple[str, str, str]]) -> None:
        """entries: (kind "file" or "folder", id, name), as the embedded folder view lists them."""
        links = "".join(
            f'<a href="https://drive.google.com/file/d/{eid}/view?usp=drive_web">{name}</a>' if kind == "file"
            else f'<a href="https://drive.google.com/drive/folders/{eid}">{name}</a>'
            for kind, eid, name in entries
        )  # fmt: skip
        path = f"/embeddedfolderview?id={folder_id}"
        self.server.files[path] = f"<html><head><title>{title}</title></head><body>{links}</body></html>".encode()
        self.server.headers[path] = {"Content-Type": "text/html; charset=utf-8"}

    def file(self, file_id: str, filename: str, body: bytes) -> None:
        path = f"/uc?id={file_id}"
        self.server.files[path] = body
        self.server.headers[path] = {"Content-Type": "application/octet-stream",
                                     "Content-Disposition": f'attachment; filename="{filename}"'}  # fmt: skip

    def fetched(self) -> list[str]:
        return [path for path, _ in self.server.requests]


@pytest.fixture
def fake_drive(monkeypatch, tmp_path):
    pytest.importorskip("gdown", reason=GDOWN_SKIP_REASON)
    import requests

    gd_download = importlib.import_module("gdown.download")
    gd_folder = importlib.import_module("gdown.download_folder")

    with ArchiveServer({}) as server:
        loopback = urllib.parse.urlsplit(server.url).netloc

        class ToLoopback(requests.adapters.HTTPAdapter):
            def send(self, request, **kwargs):
                parts = urllib.parse.urlsplit(request.url)
                request.url = urllib.parse.urlunsplit(("http", loopback, parts.path, parts.query, ""))
                kwargs["proxies"] = {}
                return super().send(request, **kwargs)

        class Refuse(requests.adapters.BaseAdapter):
            def send(self, request, **kwargs):
                raise requests.exceptions.ConnectionError(f"test: no network for {request.url}")

            def close(self) -> None:
                pass

        real_session = gd_download._get_session

        def session(**kwargs):  # gdown's only way to the network: the same session, pointed at 127.0.0.1
            sess, cookies_file = real_session(**kwargs)
            sess.mount("http://", Refuse())
            sess.mount("https://", Refuse())
            sess.mount("https://drive.google.com/", ToLoopback())
            return sess, cookies_file

        monkeypatch.setattr(gd_download, "_get_session", session)
        monkeypatch.setattr(gd_folder, "_get_session", session)
        monkeypatch.setattr(gd_download, "DEFAULT_COOKIES_FILE", str(tmp_path / "gdown-cookies.txt"))
        for name in ("BABY", "SPORTS", "CLOTHING"):
            monkeypatch.delenv(f"CLEAR_TUNE_DATA_URL_{name}", raising=False)
        yield FakeDrive(server)


def flat_zip(name: str) -> bytes:
    """An archive with the files at its top (``unzip baby.zip -d data/baby/`` layout)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for fname, data in dataset_files(name).items():
            zf.writestr(fname, data)
    return buffer.getvalue()


def mmrec_folder(drive: FakeDrive) -> None:
    """MMRec's folder as far as we know it: one archive per dataset, plus something else."""
    drive.folder(MMREC_DRIVE_FOLDER_ID, "MMRec data", [
        ("file", drive_id("baby"), "baby.zip"),
        ("file", drive_id("sports"), "sports.zip"),
        ("folder", drive_id("elec"), "elec"),
    ])  # fmt: skip
    drive.folder(drive_id("elec"), "elec", [("file", drive_id("elecinter"), "elec.inter")])
    drive.file(drive_id("baby"), "baby.zip", flat_zip("baby"))
    drive.file(drive_id("sports"), "sports.zip", zip_archive("sports"))


def test_default_source_lists_mmrecs_folder_and_fetches_only_the_dataset(fake_drive, tmp_path, monkeypatch):
    import gdown

    calls = []
    real = gdown.download_folder

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(gdown, "download_folder", spy)
    mmrec_folder(fake_drive)
    folder = download("baby", root=tmp_path, progress=False)
    assert folder == tmp_path / "baby"
    assert sorted(p.name for p in folder.iterdir()) == ["baby.inter", "image_feat.npy", "text_feat.npy"]
    assert load_mmrec(tmp_path, "baby").n_items == N_ITEMS
    [call] = calls
    assert call["id"] == MMREC_DRIVE_FOLDER_ID == "13cBy1EA_saTUuXxVllKgtfci2A09jyaG"
    assert call["output"] == str(tmp_path / ".downloads" / f"drive-{MMREC_DRIVE_FOLDER_ID}")
    assert call["skip_download"] is True and call["quiet"] is True
    # Listed the folder (and its sub-folder), downloaded baby.zip only: not sports, not elec.
    assert fake_drive.fetched() == [
        f"/embeddedfolderview?id={MMREC_DRIVE_FOLDER_ID}",
        f"/embeddedfolderview?id={drive_id('elec')}",
        f"/uc?id={drive_id('baby')}",
    ]
    assert not list((tmp_path / ".downloads").iterdir()), "the download is cleaned up"


def test_default_source_nested_archive_and_keep_archive(fake_drive, tmp_path):
    mmrec_folder(fake_drive)
    download("sports", root=tmp_path, keep_archive=True, progress=False)
    assert load_mmrec(tmp_path, "sports").n_users == N_USERS
    kept = tmp_path / ".downloads" / f"drive-{MMREC_DRIVE_FOLDER_ID}" / "sports.zip"
    assert kept.read_bytes() == zip_archive("sports")


def test_default_source_sub_folder_of_loose_files(fake_drive, tmp_path):
    files = dataset_files("clothing")
    entries = [("file", drive_id(f"c{i}"), fname) for i, fname in enumerate([*files, "u_id_mapping.csv"])]
    fake_drive.folder(MMREC_DRIVE_FOLDER_ID, "MMRec data", [("folder", drive_id("clothing"), "clothing")])
    fake_drive.folder(drive_id("clothing"), "clothing", entries)
    for (_, eid, fname), body in zip(entries, [*files.values(), b"user_id,userID\n"], strict=True):
        fake_drive.file(eid, fname, body)
    folder = download("clothing", root=tmp_path, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == [
        "clothing.inter", "image_feat.npy", "text_feat.npy", "u_id_mapping.csv"]  # fmt: skip
    assert load_mmrec(tmp_path, "clothing").text_feat.shape == (N_ITEMS, 64)


def test_default_source_dropped_connection_is_retried(fake_drive, tmp_path):
    """--retries reaches gdown, which reconnects (with a Range request once it has written a 512 KB chunk;
    this archive is smaller, so it starts over)."""
    mmrec_folder(fake_drive)
    fake_drive.server.drops_left = 1
    fake_drive.server.drop_path = f"/uc?id={drive_id('baby')}"
    archive = flat_zip("baby")
    download("baby", root=tmp_path, sha256=sha(archive), retries=2, progress=False)
    assert load_mmrec(tmp_path, "baby").n_items == N_ITEMS
    assert fake_drive.fetched().count(f"/uc?id={drive_id('baby')}") == 2


def test_default_source_failed_transfer_is_one_line_and_the_next_run_completes(fake_drive, tmp_path):
    mmrec_folder(fake_drive)
    fake_drive.server.drops_left = 1
    fake_drive.server.drop_path = f"/uc?id={drive_id('baby')}"
    with pytest.raises(DataError) as err:
        download("baby", root=tmp_path, retries=0, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"cannot download 'baby' from MMRec's Google Drive folder {MMREC_DRIVE_FOLDER} (")
    assert "run the same command again" in message and not (tmp_path / "baby").exists()
    download("baby", root=tmp_path, retries=0, progress=False)
    assert load_mmrec(tmp_path, "baby").n_users == N_USERS


def test_default_source_checksum_mismatch_is_one_line_exit_2(fake_drive, tmp_path, capsys):
    from clear_tune._cli_errors import run_cli as wrap
    from clear_tune.data.__main__ import main

    mmrec_folder(fake_drive)
    wrong = "f" * 64
    assert wrap(main, ["download", "baby", "--root", str(tmp_path), "--sha256", wrong, "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [
        f"error: checksum mismatch for 'baby' from {MMREC_DRIVE_FOLDER}: expected sha256 {wrong}, "
        f"got {sha(flat_zip('baby'))}; the file was deleted, check --sha256 and --url"
    ]
    assert not (tmp_path / ".downloads" / f"drive-{MMREC_DRIVE_FOLDER_ID}" / "baby.zip").exists()
    assert not (tmp_path / "baby").exists()


def test_default_source_unreachable_is_one_line(fake_drive, tmp_path):
    # No folder view on the fake Drive: Drive answers 404, gdown raises a multi-line error.
    with pytest.raises(DataError) as err:
        download("baby", root=tmp_path, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        f"cannot list MMRec's Google Drive folder {MMREC_DRIVE_FOLDER} for 'baby' (DownloadError: "
    )
    assert message.endswith("or download the archive in a browser and pass --url file:///PATH/TO/ARCHIVE")


def test_default_source_without_the_dataset_is_one_line(fake_drive, tmp_path):
    fake_drive.folder(MMREC_DRIVE_FOLDER_ID, "MMRec data", [("file", drive_id("elec"), "elec.zip")])
    with pytest.raises(DataError) as err:
        download("baby", root=tmp_path, progress=False)
    assert str(err.value) == (
        f"{MMREC_DRIVE_FOLDER} holds nothing named 'baby' (it holds: elec.zip); pass --url with the dataset's archive"
    )


def test_url_may_be_a_drive_file_link(fake_drive, tmp_path):
    fake_drive.file(drive_id("mirror"), "toy.zip", zip_archive("toy"))
    url = f"https://drive.google.com/file/d/{drive_id('mirror')}/view?usp=sharing"
    download("toy", root=tmp_path, url=url, progress=False)
    assert load_mmrec(tmp_path, "toy").n_items == N_ITEMS
    assert fake_drive.fetched() == [f"/uc?id={drive_id('mirror')}"]


def test_missing_gdown_is_one_line_naming_the_pip_command(tmp_path, monkeypatch, capsys):
    """Runs whether or not gdown is installed: the import is made to fail."""
    from clear_tune._cli_errors import run_cli as wrap
    from clear_tune.data.__main__ import main

    monkeypatch.setitem(sys.modules, "gdown", None)  # `import gdown` raises ImportError
    monkeypatch.delenv("CLEAR_TUNE_DATA_URL_BABY", raising=False)
    assert wrap(main, ["download", "baby", "--root", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines() == [
        "error: downloading 'baby' from MMRec's Google Drive folder needs gdown, which is not installed: "
        "pip install 'clear-tune[download]' (from a checkout: pip install -c constraints.txt -e '.[download]'); "
        "or pass --url with a mirror's archive"
    ]
    assert not (tmp_path / "baby").exists()


def test_help_names_the_default_source(capsys):
    from clear_tune.data.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["download", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"MMRec's Google Drive folder\n  {MMREC_DRIVE_FOLDER}\n" in out
    assert "pip install 'clear-tune[download]'" in out and "--url" in out


def test_drive_entries_are_chosen_by_folder_then_archive_name_then_word():
    from collections import namedtuple

    from clear_tune.data._download import _select_drive_entries

    Entry = namedtuple("Entry", "id path local_path")  # the shape of gdown's GoogleDriveFileToDownload
    listing = [Entry("1", "README.txt", ""), Entry("2", "data/Baby.zip", ""), Entry("3", "data/sports.tar.gz", ""),
               Entry("4", "amazon-clothing.zip", ""), Entry("5", "babyish.zip", ""),
               Entry("6", "elec/elec.inter", ""), Entry("7", "elec/image_feat.npy", "")]  # fmt: skip
    assert [e.id for e in _select_drive_entries("baby", listing)] == ["2"]
    assert [e.id for e in _select_drive_entries("sports", listing)] == ["3"]
    assert [e.id for e in _select_drive_entries("clothing", listing)] == ["4"]
    assert [e.id for e in _select_drive_entries("elec", listing)] == ["6", "7"]
    assert _select_drive_entries("movielens", listing) == []
