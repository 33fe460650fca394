"""Where an experiment lives: a local/shared folder or a storage URI (``s3://``, ``gs://``, ``file://`` ...).

Plain paths keep the ordinary ``os``/``pathlib`` code everywhere; a URI goes through ``pyarrow.fs``
(``FileSystem.from_uri``), the same resolver Ray Tune uses for ``RunConfig(storage_path=...)``, so any
scheme Ray's storage accepts works for our records, ``spec.yaml`` and ``experiment.json`` too.
Credentials and endpoints come from the usual environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``GOOGLE_APPLICATION_CREDENTIALS`` ...) or from the URI's query (``s3://b/p?endpoint_override=host:9000``).
For S3-compatible servers (MinIO, Ceph, moto ...) ``AWS_ENDPOINT_URL=http://host:9000`` (or
``AWS_ENDPOINT_URL_S3``) plus ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` is all pyarrow needs: with an
endpoint it addresses buckets path-style, takes ``http``/``https`` from the URL and skips the region lookup
that would otherwise go to amazonaws.com. The tests run exactly that against a real moto server.

A storage failure (no such bucket, refused credentials, unreachable endpoint) becomes one-line
:class:`DataError`; a missing object stays ``FileNotFoundError`` as for local paths, because callers treat
"absent" as an ordinary answer.

Writes are atomic where the filesystem can rename atomically (local, ``file://``, HDFS): the text goes to a
hidden temporary name beside the target and is moved into place. Object stores (S3, GCS, Azure) have no
rename, but an object only becomes visible once its upload completes, so there we write once under the
final name: a reader never sees half a file, and a crash leaves nothing.

Things that must stay on a local disk for a URI experiment (the Optuna SQLite study, the rendered report
before upload) go to :func:`local_mirror`: ``$CLEAR_TUNE_LOCAL_DIR`` (default ``~/.cache/clear-tune``)
``/<experiment>-<hash of the URI>/``.

Example:
    >>> import tempfile
    >>> root = "file://" + tempfile.mkdtemp()
    >>> write_text(join(root, "exp", "a.json"), "{}")
    True
    >>> list_files(join(root, "exp")), read_text(join(root, "exp", "a.json"))
    (['a.json'], '{}')
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import parse_qs, urlsplit, urlunsplit

from clear_tune.errors import DataError

if TYPE_CHECKING:
    from pyarrow.fs import FileSystem

# pyarrow filesystem type names whose move() is a copy + delete, not a rename.
_NO_ATOMIC_RENAME = {"s3", "gcs", "abfs"}


def is_uri(location: str | os.PathLike[str]) -> bool:
    """True for ``scheme://...`` (storage URIs); False for plain paths."""
    return isinstance(location, str) and "://" in location and bool(urlsplit(location).scheme)


def join(location: str | os.PathLike[str], *parts: str) -> str:
    """``location/part/...``: for a URI the parts go into its path (before any ``?query``)."""
    if not is_uri(location):
        return os.path.join(location, *parts)
    scheme, netloc, path, query, fragment = urlsplit(str(location))
    path = "/".join([path.rstrip("/"), *(p.strip("/") for p in parts)])
    return urlunsplit((scheme, netloc, path, query, fragment))


def name(location: str | os.PathLike[str]) -> str:
    """The last component (``s3://b/results/smoke`` -> ``smoke``)."""
    if not is_uri(location):
        return Path(location).name
    return urlsplit(str(location)).path.rstrip("/").rsplit("/", 1)[-1]


def open_fs(location: str) -> tuple[FileSystem, str]:
    """``(pyarrow FileSystem, path inside it)`` for a URI; one-line :class:`DataError` when it cannot be opened."""
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(location)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError/ValueError with multi-line messages
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(
            f"storage {location!r} cannot be opened ({first}); check the URI scheme, the bucket and "
            "the credentials/endpoint in the environment"
        ) from None


@contextmanager
def _failures_reported(location: str, doing: str) -> Iterator[None]:
    """pyarrow's OSError (multi-line, often an AWS SDK dump) -> one-line DataError naming the URI and the fix."""
    from pyarrow.lib import ArrowException  # e.g. ArrowInvalid: GCS trying to create a missing bucket

    try:
        yield
    except FileNotFoundError:
        raise
    except (OSError, ArrowException) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"storage {location!r}: cannot {doing} ({first}); {_where_to_look(location)}") from None


def _where_to_look(location: str) -> str:
    if urlsplit(location).scheme != "s3":
        return "check the bucket, the credentials and the endpoint in the environment"
    endpoint = (
        parse_qs(urlsplit(location).query).get("endpoint_override", [None])[0]
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or "AWS"
    )
    return f"check the endpoint ({endpoint}; AWS_ENDPOINT_URL), the bucket and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"


def _check_bucket(fs: FileSystem, path: str, location: str) -> None:
    """S3 and GCS list a missing bucket as an empty folder; say so before anything tries to write there."""
    import pyarrow.fs

    if getattr(fs, "type_name", "") not in ("s3", "gcs") or "allow_bucket_creation" in parse_qs(
        urlsplit(location).query
    ):
        return
    bucket = path.split("/", 1)[0]
    if fs.get_file_info(bucket).type == pyarrow.fs.FileType.NotFound:
        make = f"aws s3 mb s3://{bucket}" if fs.type_name == "s3" else f"gcloud storage buckets create gs://{bucket}"
        raise DataError(
            f"storage {location!r}: bucket {bucket!r} does not exist; create it (e.g. "
            f"`{make}`), add ?allow_bucket_creation=true to the URI, or "
            f"{_where_to_look(location)}"
        )


def _info(location: str):
    fs, path = open_fs(location)
    with _failures_reported(location, "look up"):
        return fs.get_file_info(path)


def is_file(location: str | os.PathLike[str]) -> bool:
    if not is_uri(location):
        return Path(location).is_file()
    import pyarrow.fs

    return _info(str(location)).type == pyarrow.fs.FileType.File


def is_dir(location: str | os.PathLike[str]) -> bool:
    if not is_uri(location):
        return Path(location).is_dir()
    import pyarrow.fs

    return _info(str(location)).type == pyarrow.fs.FileType.Directory


def read_bytes(location: str | os.PathLike[str]) -> bytes:
    if not is_uri(location):
        return Path(location).read_bytes()
    fs, path = open_fs(str(location))
    with _failures_reported(str(location), "read"), fs.open_input_stream(path) as stream:
        return stream.read()


def read_text(location: str | os.PathLike[str]) -> str:
    return read_bytes(location).decode("utf-8")


def list_files(location: str | os.PathLike[str]) -> list[str]:
    """Sorted names of the files directly in ``location`` ([] when it does not exist)."""
    if not is_uri(location):
        directory = Path(location)
        return sorted(p.name for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []
    import pyarrow.fs

    fs, path = open_fs(str(location))
    with _failures_reported(str(location), "list"):
        infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
        if not infos:
            _check_bucket(fs, path, str(location))
    return sorted(i.base_name for i in infos if i.type == pyarrow.fs.FileType.File)


def write_bytes(
    location: str | os.PathLike[str], data: bytes, *, overwrite: bool = True, durable: bool = False
) -> bool:
    """Write ``data`` atomically (see the module docstring); with ``overwrite=False`` an existing file is kept
    and False returned. ``durable`` fsyncs a local file before it is moved into place (a crash then leaves
    the whole file or the old one, never a truncated one)."""
    if not is_uri(location):
        target = Path(location)
        if target.exists() and not overwrite:
            return False
        with atomic_file(target, durable=durable) as out:
            out.write(data)
        return True
    import pyarrow.fs

    fs, path = open_fs(str(location))
    with _failures_reported(str(location), "write"):
        if not overwrite and fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
            return False
        parent, _, base = path.rpartition("/")
        fs.create_dir(parent, recursive=True)
        if fs.type_name in _NO_ATOMIC_RENAME:
            with fs.open_output_stream(path) as out:  # the object appears only when the upload completes
                out.write(data)
            return True
        tmp = f"{parent}/.{base}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with fs.open_output_stream(tmp) as out:
                out.write(data)
            fs.move(tmp, path)
        except BaseException:
            try:
                fs.delete_file(tmp)
            except OSError:
                pass
            raise
    return True


@contextmanager
def atomic_file(target: str | os.PathLike[str], *, durable: bool = False) -> Iterator[BinaryIO]:
    """A binary file handle whose content replaces the local file ``target`` only when the block ends without
    an error: it is written to a hidden temporary name beside ``target`` (fsynced when ``durable``), then
    renamed. Every local atomic write of the project goes through here.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.bin"
        >>> with atomic_file(target) as out:
        ...     _ = out.write(b"done")
        >>> target.read_bytes()
        b'done'
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as out:
            yield out
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(location: str | os.PathLike[str], text: str, *, overwrite: bool = True) -> bool:
    return write_bytes(location, text.encode("utf-8"), overwrite=overwrite)


def move(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Rename a file (copy + delete on object stores)."""
    if not is_uri(source):
        os.replace(source, target)
        return
    fs, src = open_fs(str(source))
    _, dst = open_fs(str(target))
    with _failures_reported(str(source), f"move it to {str(target)!r}"):
        fs.move(src, dst)


def upload_file(local: str | os.PathLike[str], location: str) -> None:
    write_bytes(location, Path(local).read_bytes())


def upload_tree(local_dir: str | os.PathLike[str], location: str) -> list[str]:
    """Copy every file under ``local_dir`` to ``location`` (same relative names); returns the targets."""
    root = Path(local_dir)
    targets = []
    for file in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        target = join(location, *file.relative_to(root).parts)
        upload_file(file, target)
        targets.append(target)
    return targets


def download_file(location: str, local: str | os.PathLike[str]) -> bool:
    """Copy ``location`` to the local file ``local`` (atomically); False when ``location`` does not exist."""
    if not is_file(location):
        return False
    write_bytes(local, read_bytes(location))
    return True


def local_mirror(location: str) -> Path:
    """The local folder that holds what cannot live at the URI ``location`` (Optuna's SQLite study, the
    rendered report): ``$CLEAR_TUNE_LOCAL_DIR/<name>-<hash>/`` (default base ``~/.cache/clear-tune``)."""
    base = Path(os.environ.get("CLEAR_TUNE_LOCAL_DIR") or Path.home() / ".cache" / "clear-tune")
    digest = hashlib.sha1(str(location).rstrip("/").encode()).hexdigest()[:10]
    return (base / f"{name(location)}-{digest}").resolve()
