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

import hashlib
import os
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path

from clear_tune.data._dataset import RecDataset
from clear_tune.data._drive import (  # noqa: F401 -- re-exported: the default source
    ARCHIVE_SUFFIXES,
    MMREC_DRIVE_FOLDER,
    MMREC_DRIVE_FOLDER_ID,
    _fetch_drive,
    _select_drive_entries,
    _Source,
    drive_source,
)
from clear_tune.data._fetch import fetch
from clear_tune.data._mmrec import FEATURE_FILES, load_mmrec
from clear_tune.errors import DataError

# Where MMRec publishes each dataset: all three live in one Google Drive folder (MMRec's data/README.md).
DEFAULT_URLS: dict[str, str] = {name: MMREC_DRIVE_FOLDER for name in ("baby", "sports", "clothing")}
# SHA-256 of the default source's archive per dataset, checked when present. MMRec publishes none and
# the folder could not be reached from the development machines, so it is empty: add "name": "hex".
DEFAULT_SHA256: dict[str, str] = {}


def _resolve_source(name: str, url: str | None) -> _Source:
    url = url or os.environ.get(f"CLEAR_TUNE_DATA_URL_{name.upper()}") or DEFAULT_URLS.get(name)
    if not url:
        known = ", ".join(sorted(DEFAULT_URLS))
        raise DataError(f"no default download URL for dataset {name!r} (known: {known}); pass --url URL")
    return drive_source(url)


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
