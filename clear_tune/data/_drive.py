"""MMRec's Google Drive folder, through gdown: list the folder, pick the dataset's entries, download them.

Part of :mod:`clear_tune.data._download` (which documents the whole flow). A thin layer over gdown, an
optional dependency (``clear-tune[download]``): every gdown failure becomes one line.

Example:
    >>> from clear_tune.data._drive import drive_source
    >>> drive_source("https://drive.google.com/drive/folders/13cBy1EA_saTUuXxVllKgtfci2A09jyaG").kind
    'drive-folder'
"""

from __future__ import annotations

import glob
import inspect
import os
import re
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clear_tune.errors import DataError

MMREC_DRIVE_FOLDER_ID = "13cBy1EA_saTUuXxVllKgtfci2A09jyaG"
MMREC_DRIVE_FOLDER = f"https://drive.google.com/drive/folders/{MMREC_DRIVE_FOLDER_ID}"
GDOWN_INSTALL_HINT = (
    "pip install 'clear-tune[download]' (from a checkout: pip install -c constraints.txt -e '.[download]')"
)
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")


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


def drive_source(url: str) -> _Source:
    """What kind of source ``url`` is: a Drive folder, a Drive file, or anything else (``"http"``)."""
    folder_id, file_id = _drive_ids(url)
    if folder_id:
        return _Source("drive-folder", url, folder_id)
    if file_id:
        return _Source("drive-file", url, file_id)
    return _Source("http", url)


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
                f"{source.url} holds nothing named {name!r} (it holds: {held}); pass --url with the dataset's archive"
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
