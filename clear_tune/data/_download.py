"""Fetch an MMRec dataset: from MMRec's Google Drive folder (default) or a mirror URL; verify, unpack, validate.

``download("baby", root="data")`` leaves ``data/baby/baby.inter``, ``image_feat.npy`` and
``text_feat.npy`` and returns that folder. Two sources:

* **Default: MMRec's Google Drive folder** (:data:`MMREC_DRIVE_FOLDER`, the link in MMRec's
  ``data/README.md``), fetched with `gdown <https://pypi.org/project/gdown/>`_, an optional
  dependency (``pip install 'clear-tune[download]'``; without it this path is one error line). The
  folder is *listed* first (``gdown.download_folder(id=..., output=..., skip_download=True)``), then
  only the entries that belong to the dataset are downloaded (``gdown.download(id=..., output=...,
  resume=True)``) into ``<root>/.downloads/drive-<folder id>/``: at any depth, everything in a
  sub-folder named like the dataset (``baby/...``), else files named like it plus an archive suffix
  (``baby.zip``, ``Baby.tar.gz``), else files with its name as a word (``amazon-baby.zip``); see
  :func:`_select_drive_entries`. MMRec does not document the folder's file names (third-party READMEs
  say ``baby.zip``, ``sports.zip``, ``clothing.zip``), so nothing here relies on them. A dropped
  transfer is retried by gdown (``--retries``); running the command again skips finished files and
  resumes partial ones. This path could not be run against the real Drive from the development
  machines (no internet): the tests run the real gdown against a fake Drive on 127.0.0.1.
* **``url=`` (``--url``, or ``CLEAR_TUNE_DATA_URL_<NAME>``): a mirror.** ``http(s)://`` or
  ``file://``, streamed into ``<root>/.downloads/<name>.<suffix>.part``; after a dropped connection the
  transfer asks for the rest with an HTTP ``Range`` header. A Google Drive folder or file link given as
  ``url`` goes through gdown as above.

Then, for either source: the SHA-256 is checked when one is configured (``sha256=``/``--sha256``, or
:data:`DEFAULT_SHA256` for the default source; it needs the download to be one file); a mismatching
file is deleted. Zip and tar(.gz) archives are unpacked safely (no path outside the target), other
files are taken as they are. The unpack step does not assume a layout: it takes the shallowest folder
holding ``<name>.inter`` (at the archive's top or nested at any depth), brings in ``image_feat.npy``
and ``text_feat.npy`` from elsewhere in the download when they are not beside it and there is exactly
one of each, validates the result with :func:`~clear_tune.data.load_mmrec`, and only then replaces
``<root>/<name>`` (a previous dataset there is restored if the new one is invalid). Downloads that
turn out not to hold a valid dataset are deleted, so the next attempt fetches afresh.

Example:
    >>> from clear_tune.data import DEFAULT_URLS
    >>> sorted(DEFAULT_URLS)
    ['baby', 'clothing', 'sports']
"""

from __future__ import annotations

import glob
import hashlib
import inspect
import os
import re
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any

from tqdm import tqdm

from clear_tune.data._dataset import RecDataset
from clear_tune.data._mmrec import FEATURE_FILES, load_mmrec
from clear_tune.errors import DataError

MMREC_DRIVE_FOLDER_ID = "13cBy1EA_saTUuXxVllKgtfci2A09jyaG"
MMREC_DRIVE_FOLDER = f"https://drive.google.com/drive/folders/{MMREC_DRIVE_FOLDER_ID}"
# Where MMRec publishes each dataset: all three live in one Google Drive folder (MMRec's data/README.md).
DEFAULT_URLS: dict[str, str] = {name: MMREC_DRIVE_FOLDER for name in ("baby", "sports", "clothing")}
# SHA-256 of the default source's archive per dataset, checked when present. MMRec publishes none and
# the folder could not be reached from the development machines, so it is empty: add "name": "hex".
DEFAULT_SHA256: dict[str, str] = {}
GDOWN_INSTALL_HINT = (
    "pip install 'clear-tune[download]' (from a checkout: pip install -c constraints.txt -e '.[download]')"
)
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
_CHUNK = 1 << 16


@dataclass(frozen=True)
class _Source:
    kind: str  # "http" (urllib, also file://), "drive-folder" or "drive-file" (gdown)
    url: str  # what the user sees in messages
    drive_id: str | None = None


def _drive_ids(url: str) -> tuple[str | None, str | None]:
    """(folder id, file id) of a Google Drive link; (None, None) for any other URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in ("drive.google.com", "docs.google.com"):
        return None, None
    folder = re.match(r"^/drive/(?:u/\d+/)?folders/([-\w]+)", parts.path)
    if folder:
        return folder.group(1), None
    file = re.match(r"^/file/(?:u/\d+/)?d/([-\w]+)", parts.path)
    if file:
        return None, file.group(1)
    ids = urllib.parse.parse_qs(parts.query).get("id")
    return (None, ids[0]) if ids else (None, None)


def _resolve_source(name: str, url: str | None) -> _Source:
    url = url or os.environ.get(f"CLEAR_TUNE_DATA_URL_{name.upper()}") or DEFAULT_URLS.get(name)
    if not url:
        known = ", ".join(sorted(DEFAULT_URLS))
        raise DataError(f"no default download URL for dataset {name!r} (known: {known}); pass --url URL")
    folder_id, file_id = _drive_ids(url)
    if folder_id:
        return _Source("drive-folder", url, folder_id)
    if file_id:
        return _Source("drive-file", url, file_id)
    return _Source("http", url)


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


# --- mirror URLs: urllib, resumable ------------------------------------------------------------------


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
                if not (part.exists() and part.stat().st_size):  # nothing arrived: no resume to offer
                    part.unlink(missing_ok=True)
                    raise DataError(
                        f"download of {url} failed ({exc}) after {retries + 1} attempt(s); "
                        "check the URL (--url) and the network"
                    ) from None
                raise DataError(
                    f"download of {url} stopped ({exc}) after {retries + 1} attempt(s); {part} is kept, "
                    "run the same command again to resume"
                ) from None
            print(f"download interrupted ({exc}); resuming from {part.stat().st_size if part.exists() else 0} bytes",
                  file=sys.stderr)  # fmt: skip
            time.sleep(min(2.0**attempt * 0.1, 5.0))
    part.replace(archive)
    return archive


# --- Google Drive: a thin layer over gdown -----------------------------------------------------------


def _import_gdown(name: str, source: _Source) -> Any:
    try:
        import gdown
    except ImportError:
        where = "MMRec's Google Drive folder" if source.url == MMREC_DRIVE_FOLDER else source.url
        raise DataError(
            f"downloading {name!r} from {where} needs gdown, which is not installed: {GDOWN_INSTALL_HINT}; "
            "or pass --url with a mirror's archive"
        ) from None
    return gdown


def _gdown_call(func: Any, **kwargs: Any) -> Any:
    """Call a gdown function with the keyword arguments its installed version accepts (5.x lacks some)."""
    params = inspect.signature(func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return func(**kwargs)
    return func(**{k: v for k, v in kwargs.items() if k in params})


def _drive_failure(name: str, source: _Source, exc: BaseException | None, *, listing: bool) -> DataError:
    """One line for any gdown failure (its messages can span several lines: they are joined)."""
    reason = "gdown returned nothing" if exc is None else " ".join(f"{type(exc).__name__}: {exc}".split())
    if len(reason) > 300:
        reason = reason[:297] + "..."
    where = f"MMRec's Google Drive folder {source.url}" if source.url == MMREC_DRIVE_FOLDER else source.url
    what = f"cannot list {where} for {name!r}" if listing else f"cannot download {name!r} from {where}"
    return DataError(
        f"{what} ({reason}); check the network and run the same command again (finished files are kept, "
        "partial ones resumed), or download the archive in a browser and pass --url file:///PATH/TO/ARCHIVE"
    )


def _strip_archive_suffix(filename: str) -> str:
    lower = filename.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return lower[: -len(suffix)]
    return lower


def _select_drive_entries(name: str, listing: list[Any]) -> list[Any]:
    """The entries of a Drive folder listing that make up dataset ``name``, at any depth, first found of:
    everything inside a sub-folder called ``name``; files called ``name`` plus an archive suffix
    (``baby.zip``); files with ``name`` as a word of their name (``amazon-baby.tar.gz``). Case-insensitive."""
    key = name.lower()

    def parts(entry: Any) -> list[str]:
        return [p for p in re.split(r"[\\/]", entry.path) if p]

    def stem(entry: Any) -> str:
        return _strip_archive_suffix(parts(entry)[-1])

    for matches in (
        lambda e: key in (p.lower() for p in parts(e)[:-1]),
        lambda e: stem(e) == key,
        lambda e: key in re.split(r"[^a-z0-9]+", stem(e)),
    ):
        chosen = [e for e in listing if matches(e)]
        if chosen:
            return chosen
    return []


def _fetch_drive(name: str, source: _Source, downloads: Path, *, force: bool, retries: int, timeout: float,
                 progress: bool) -> list[Path]:  # fmt: skip
    """Download the dataset's files from a Drive folder (or one Drive file) into ``downloads``; their paths."""
    gdown = _import_gdown(name, source)
    target = downloads / f"drive-{source.drive_id}"
    if source.kind == "drive-file":
        wanted = [(source.drive_id, None)]
    else:
        try:
            listing = _gdown_call(gdown.download_folder, id=source.drive_id, output=str(target), quiet=not progress,
                                  skip_download=True, timeout=timeout)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 -- the boundary to gdown/requests: any failure is one line
            raise _drive_failure(name, source, exc, listing=True) from None
        if not listing:  # gdown 5 returns None when it cannot read the folder
            raise _drive_failure(name, source, None, listing=True)
        chosen = _select_drive_entries(name, listing)
        if not chosen:
            held = ", ".join(sorted(e.path for e in listing)[:12])
            raise DataError(
                f"{source.url} holds nothing named {name!r} (it holds: {held}); "
                "pass --url with the dataset's archive"
            )
        wanted = [(e.id, target / e.path) for e in chosen]
    files = []
    for file_id, path in wanted:
        output = str(target) + os.sep if path is None else str(path)
        target.mkdir(parents=True, exist_ok=True)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if force:
                path.unlink(missing_ok=True)
                for stale in path.parent.glob(glob.escape(path.name) + "*.part"):  # gdown's partial files
                    stale.unlink()
        elif force:
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
        try:
            got = _gdown_call(gdown.download, id=file_id, output=output, quiet=not progress, resume=True,
                              retries=retries, timeout=timeout)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 -- the boundary to gdown/requests: any failure is one line
            raise _drive_failure(name, source, exc, listing=False) from None
        if not got:
            raise _drive_failure(name, source, None, listing=False)
        files.append(Path(got))
    return files


# --- verify, unpack, install -------------------------------------------------------------------------


def _verify(files: list[Path], expected: str, label: str) -> None:
    expected = expected.strip().lower()
    if len(files) != 1:
        raise DataError(
            f"--sha256 checks one archive, but {label} came as {len(files)} files "
            f"({', '.join(f.name for f in files)}); drop --sha256"
        )
    actual = _sha256(files[0])
    if actual != expected:
        files[0].unlink()
        raise DataError(
            f"checksum mismatch for {label}: expected sha256 {expected}, got {actual}; "
            "the file was deleted, check --sha256 and --url"
        )


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
        raise DataError(f"{archive}: cannot unpack ({exc}); it was deleted, download it again") from None


def _is_archive(path: Path) -> bool:
    lower = path.name.lower()
    if lower.endswith(ARCHIVE_SUFFIXES):
        return True
    if lower.endswith((".inter", ".npy", ".csv", ".txt", ".json")):  # the dataset's own files, taken as they are
        return False
    return zipfile.is_zipfile(path) or tarfile.is_tarfile(path)  # an archive without a suffix


def _unpack(files: list[Path], base: Path, staging: Path) -> None:
    """Archives are extracted into ``staging``; other files are copied there at their path below ``base``."""
    for path in files:
        if _is_archive(path):
            _safe_extract(path, staging)
        else:
            relative = path.relative_to(base) if path.is_relative_to(base) else Path(path.name)
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, staging / relative)


def _find_dataset_folder(unpacked: Path, name: str, label: str) -> Path:
    """The shallowest folder holding ``<name>.inter``, with the feature files moved next to it if elsewhere."""
    hits = sorted(unpacked.rglob(f"{name}.inter"), key=lambda p: len(p.parts))
    if not hits:
        if label == "archive":
            raise DataError(f"the archive has no {name}.inter; check that --url points at the {name!r} dataset")
        raise DataError(f"{label} holds no {name}.inter; pass --url with the dataset's archive")
    home = hits[0].parent
    for fname in FEATURE_FILES:
        if not (home / fname).exists():
            elsewhere = list(unpacked.rglob(fname))
            if len(elsewhere) == 1:
                shutil.move(str(elsewhere[0]), str(home / fname))
    return home


def _install(found: Path, root: Path, name: str) -> RecDataset:
    """Move ``found`` to ``root/name`` and validate it; a dataset that was there is restored on failure."""
    folder = root / name
    old = root / f".old-{name}"
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.replace(old)
    shutil.move(str(found), str(folder))
    try:
        dataset = load_mmrec(root, name)  # raises a one-line DataError if the download was wrong
    except DataError:
        shutil.rmtree(folder, ignore_errors=True)
        if old.exists():
            old.replace(folder)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return dataset


def _remove(files: list[Path], downloads: Path) -> None:
    """Delete ``files`` and the folders below ``downloads`` that this leaves empty."""
    for path in files:
        path.unlink(missing_ok=True)
        parent = path.parent
        while parent != downloads and parent.is_relative_to(downloads):
            if not parent.is_dir() or any(parent.iterdir()):
                break
            parent.rmdir()
            parent = parent.parent


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

    Without ``url`` the dataset comes from MMRec's Google Drive folder through gdown (``pip install
    'clear-tune[download]'``); ``url`` (or ``CLEAR_TUNE_DATA_URL_<NAME>``) names a mirror's archive
    instead. ``sha256`` (hex), or :data:`DEFAULT_SHA256` for the default source, is checked when set. An
    existing valid dataset is left alone unless ``force`` (which also discards earlier partial or kept
    downloads). What was downloaded is deleted after unpacking unless ``keep_archive``.
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
    source = _resolve_source(name, url)
    expected = sha256 or (DEFAULT_SHA256.get(name) if source.url == DEFAULT_URLS.get(name) else None)
    downloads = root / ".downloads"
    if source.kind == "http":
        archive = downloads / _archive_name(name, source.url)
        if force:
            archive.unlink(missing_ok=True)
            archive.with_name(archive.name + ".part").unlink(missing_ok=True)
        if not archive.exists():
            fetch(source.url, archive, retries=retries, timeout=timeout, progress=progress)
        files, base, label = [archive], archive.parent, source.url
    else:
        files = _fetch_drive(name, source, downloads, force=force, retries=retries, timeout=timeout, progress=progress)
        base = downloads / f"drive-{source.drive_id}"
        label = f"{name!r} from {source.url}"
    if expected:
        _verify(files, expected, label)
    staging = root / f".unpack-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _unpack(files, base, staging)
        found = _find_dataset_folder(staging, name, "archive" if source.kind == "http" else label)
        dataset = _install(found, root, name)
    except DataError:
        _remove(files, downloads)  # they do not hold a valid dataset: the next attempt must fetch afresh
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not keep_archive:
        _remove(files, downloads)
    print(dataset.describe(), file=sys.stderr)
    return folder
