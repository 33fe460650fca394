"""Fetch a mirror's archive over ``http(s)://`` or ``file://``, resuming a dropped transfer with HTTP ``Range``.

Part of :mod:`clear_tune.data._download`: ``fetch(url, archive)`` streams into ``archive.part`` and renames it
when complete; after a dropped connection the next attempt asks for the rest.

Example:
    >>> from pathlib import Path
    >>> from clear_tune.data._fetch import fetch
    >>> fetch("file:///tmp/baby.zip", Path("data/.downloads/baby.zip"))   # doctest: +SKIP
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path

from tqdm import tqdm

from clear_tune.errors import DataError

_CHUNK = 1 << 16


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
