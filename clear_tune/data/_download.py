"""Fetch an MMRec dataset archive: resumable HTTP download, checksum, unpack, validate.

``download("baby", root="data", url=..., sha256=...)`` leaves ``data/baby/baby.inter``,
``image_feat.npy`` and ``text_feat.npy`` and returns that folder. The archive is streamed into
``<root>/.downloads/<file>.part``; if the connection drops, the next attempt (automatic retries, or
simply running the command again) asks the server for the rest with an HTTP ``Range`` header. A
complete archive whose SHA-256 does not match is deleted (resuming cannot repair it); an interrupted
one is kept so it can be resumed. Zip and tar(.gz) archives are unpacked safely (no paths outside
the target) and the result is validated with :func:`~clear_tune.data.load_mmrec`.

MMRec publishes Baby, Sports and Clothing in a Google Drive *folder* (see :data:`DEFAULT_URLS`),
which a script cannot list; fetch the archive's direct link from there (or a mirror) and pass it as
``url`` (``file://`` paths work too), or set ``CLEAR_TUNE_DATA_URL_<NAME>``.

Example:
    >>> from clear_tune.data import DEFAULT_URLS
    >>> sorted(DEFAULT_URLS)
    ['baby', 'clothing', 'sports']
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from http.client import HTTPException
from pathlib import Path

from tqdm import tqdm

from clear_tune.data._mmrec import load_mmrec
from clear_tune.errors import DataError

MMREC_DRIVE_FOLDER = "https://drive.google.com/drive/folders/13cBy1EA_saTUuXxVllKgtfci2A09jyaG"
# Where MMRec publishes each dataset (all three live in one Google Drive folder as of 2024).
DEFAULT_URLS: dict[str, str] = {name: MMREC_DRIVE_FOLDER for name in ("baby", "sports", "clothing")}
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
_CHUNK = 1 << 16


def _resolve_url(name: str, url: str | None) -> str:
    url = url or os.environ.get(f"CLEAR_TUNE_DATA_URL_{name.upper()}") or DEFAULT_URLS.get(name)
    if not url:
        known = ", ".join(sorted(DEFAULT_URLS))
        raise DataError(f"no default download URL for dataset {name!r} (known: {known}); pass --url URL")
    if "drive.google.com/drive/folders/" in url:
        raise DataError(
            f"MMRec publishes {name!r} in a Google Drive folder ({url}) that scripts cannot list; "
            f"copy the direct link of {name}'s archive from there and pass --url LINK (a file:// path works too)"
        )
    return url


def _archive_name(name: str, url: str) -> str:
    tail = url.split("?")[0].rstrip("/").rsplit("/", 1)[-1].lower()
    suffix = next((s for s in ARCHIVE_SUFFIXES if tail.endswith(s)), ".zip")
    return f"{name}{suffix}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Interrupted(Exception):
    """The transfer stopped before the end; the partial file is kept for a resume."""


def _fetch_once(url: str, part: Path, *, timeout: float, progress: bool) -> None:
    """Stream ``url`` into ``part``, resuming from its current size with an HTTP Range request."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "clear-tune"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the partial file is already complete
            return
        raise DataError(f"download of {url} failed: HTTP {exc.code} {exc.reason}; check the URL (--url)") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Interrupted(f"cannot connect: {reason}") from None
    with response:
        status = getattr(response, "status", None) or 200
        if status == 206:
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            expected = int(total) if total.isdigit() else None
        else:  # 200: the server ignored the Range header, start over
            have = 0
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
        mode = "ab" if have else "wb"
        bar = tqdm(total=expected, initial=have, unit="B", unit_scale=True, desc=part.name[: -len(".part")],
                   disable=not progress, file=sys.stderr, leave=True)  # fmt: skip
        try:
            with part.open(mode) as out, bar:
                while True:
                    block = response.read(_CHUNK)
                    if not block:
                        break
                    out.write(block)
                    bar.update(len(block))
        except (HTTPException, OSError) as exc:  # connection reset, incomplete read, timeout
            raise _Interrupted(f"connection lost ({type(exc).__name__})") from None
    size = part.stat().st_size
    if expected is not None and size < expected:
        raise _Interrupted(f"received {size} of {expected} bytes")


def fetch(url: str, archive: Path, *, retries: int = 3, timeout: float = 60.0, progress: bool = True) -> Path:
    """Download ``url`` to ``archive`` via ``archive.part``, resuming after interruptions (``retries`` times)."""
    part = archive.with_name(archive.name + ".part")
    archive.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, timeout=timeout, progress=progress)
            break
        except _Interrupted as exc:
            if attempt == retries:
                raise DataError(
                    f"download of {url} stopped ({exc}) after {retries + 1} attempt(s); {part} is kept, "
                    "run the same command again to resume"
                ) from None
            print(f"download interrupted ({exc}); resuming from {part.stat().st_size if part.exists() else 0} bytes",
                  file=sys.stderr)  # fmt: skip
            time.sleep(min(2.0**attempt * 0.1, 5.0))
    part.replace(archive)
    return archive


def _safe_extract(archive: Path, target: Path) -> None:
    """Unpack a zip or tar(.gz) into ``target``, refusing members that would land outside it."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                base = target.resolve()
                for member in zf.namelist():
                    if not (target / member).resolve().is_relative_to(base):
                        raise DataError(f"{archive}: member {member!r} would unpack outside {target}; refusing")
                zf.extractall(target)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                tf.extractall(target, filter="data")
        else:
            raise DataError(f"{archive}: not a zip or tar archive; check the URL points at the dataset archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise DataError(f"{archive}: cannot unpack ({exc}); delete it and download again") from None


def _find_dataset_folder(unpacked: Path, name: str) -> Path:
    hits = sorted(unpacked.rglob(f"{name}.inter"), key=lambda p: len(p.parts))
    if not hits:
        raise DataError(f"the archive has no {name}.inter; check that --url points at the {name!r} dataset")
    return hits[0].parent


def download(
    name: str,
    *,
    root: str | Path = "data",
    url: str | None = None,
    sha256: str | None = None,
    force: bool = False,
    retries: int = 3,
    timeout: float = 60.0,
    keep_archive: bool = False,
    progress: bool = True,
) -> Path:
    """Download, verify, unpack and validate dataset ``name`` into ``<root>/<name>``; returns that folder.

    ``url`` overrides :data:`DEFAULT_URLS`; ``sha256`` (hex) is checked when given. An existing valid
    dataset is left alone unless ``force``. The archive is deleted after unpacking unless ``keep_archive``.
    """
    root = Path(root)
    folder = root / name
    if folder.is_dir() and not force:
        try:
            load_mmrec(root, name)
            print(f"{folder} already holds a valid dataset; pass --force to download again", file=sys.stderr)
            return folder
        except DataError:
            pass  # incomplete or broken: fetch it again
    resolved = _resolve_url(name, url)
    archive = root / ".downloads" / _archive_name(name, resolved)
    if not archive.exists():
        fetch(resolved, archive, retries=retries, timeout=timeout, progress=progress)
    if sha256:
        actual = _sha256(archive)
        if actual.lower() != sha256.strip().lower():
            archive.unlink()
            raise DataError(
                f"checksum mismatch for {resolved}: expected sha256 {sha256.strip().lower()}, got {actual}; "
                "the file was deleted, check --sha256 and --url"
            )
    staging = root / f".unpack-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _safe_extract(archive, staging)
        found = _find_dataset_folder(staging, name)
        if folder.exists():
            shutil.rmtree(folder)
        shutil.move(str(found), str(folder))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    dataset = load_mmrec(root, name)  # validates: raises a one-line DataError if the archive was wrong
    if not keep_archive:
        archive.unlink()
    print(dataset.describe(), file=sys.stderr)
    return folder
