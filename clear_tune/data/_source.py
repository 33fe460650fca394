"""Data source strings (``"synthetic"``, ``"semi:PATH.inter"``, ``"mmrec:ROOT/NAME"``) and a per-process cache.

A trial config names its data by one string plus an options dict, so a search spec stays plain YAML and
every Ray worker process can build the same dataset on its own. :func:`cached_dataset` makes each
worker process load or generate a given ``(source, options)`` once, however many trials it runs.

Example:
    >>> from clear_tune.data import cached_dataset, load_dataset
    >>> ds = load_dataset("synthetic", n_users=100, n_items=60, d_v=16, d_t=12, pref_dim=8)
    >>> ds.n_users
    100
    >>> a = cached_dataset("synthetic", {"n_users": 100, "n_items": 60})
    >>> a is cached_dataset("synthetic", {"n_items": 60, "n_users": 100})
    True
"""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from clear_tune.data._dataset import RecDataset
from clear_tune.data._mmrec import load_mmrec
from clear_tune.data._semi import make_semi_synthetic
from clear_tune.data._synthetic import make_synthetic
from clear_tune.errors import DataError

SOURCE_FORMS = '"synthetic", "semi:PATH/TO/name.inter" or "mmrec:ROOT/NAME"'
_NOT_OPTIONS = {"return_truth", "inter_path"}


def _option_defaults(func: Callable[..., Any]) -> dict[str, Any]:
    params = inspect.signature(func).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY and p.name not in _NOT_OPTIONS}


def _coerce(source: str, name: str, value: Any, default: Any) -> Any:
    """Accept strings from command lines (``--data-option n_users=500``) for numeric options."""
    target = type(default)
    kind = "an integer" if target is int else "a number"
    if isinstance(value, str) and target in (int, float):
        try:
            return target(float(value)) if target is int and float(value).is_integer() else target(value)
        except ValueError:
            raise DataError(f"data option {name}={value!r} for {source!r} must be {kind}") from None
    if target is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if target in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise DataError(f"data option {name}={value!r} for {source!r} must be {kind}")
    if target is int and isinstance(value, float):
        if not value.is_integer():
            raise DataError(f"data option {name}={value!r} for {source!r} must be {kind}")
        return int(value)
    return value


def _checked_options(source: str, func: Callable[..., Any], options: Mapping[str, Any]) -> dict[str, Any]:
    defaults = _option_defaults(func)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        valid = ", ".join(sorted(defaults)) or "none"
        raise DataError(f"unknown data option(s) {', '.join(unknown)} for {source!r}; valid options: {valid}")
    return {k: _coerce(source, k, v, defaults[k]) for k, v in options.items()}


@dataclass(frozen=True)
class DataSource:
    """A parsed source string: ``kind`` (synthetic | semi | mmrec) and its ``path`` (None for synthetic)."""

    kind: str
    path: Path | None = None

    @property
    def name(self) -> str:
        """How tables and dry runs name it: ``synthetic``, or the dataset's name (``baby``)."""
        if self.path is None:
            return self.kind
        return self.path.name if self.kind == "mmrec" else self.path.name.removesuffix(".inter")

    @property
    def dataset_kind(self) -> str:
        """The :class:`RecDataset` kind it loads as."""
        return {"semi": "semi-synthetic", "mmrec": "mmrec"}.get(self.kind, "synthetic")

    def missing(self) -> Path | None:
        """The file this source needs that does not exist (None when all is there): the ``.inter`` file."""
        if self.kind == "semi" and not self.path.is_file():  # type: ignore[union-attr]
            return self.path
        if self.kind == "mmrec":
            inter = self.path / f"{self.path.name}.inter"  # type: ignore[operator,union-attr]
            return None if inter.is_file() else inter
        return None


def parse_source(source: Any) -> DataSource:
    """The one parser of data source strings; a malformed one is a one-line :class:`DataError`."""
    if not isinstance(source, str) or not source.strip():
        raise DataError(f"data source {source!r} is empty; use {SOURCE_FORMS}")
    kind, sep, rest = source.strip().partition(":")
    if kind == "synthetic" and not sep:
        return DataSource("synthetic")
    if kind in ("semi", "mmrec") and sep and rest:
        path = Path(rest.rstrip("/\\"))
        if kind == "mmrec" and not path.name:
            raise DataError(f"data source {source!r} has no dataset name; use mmrec:ROOT/NAME, e.g. mmrec:data/baby")
        return DataSource(kind, path)
    raise DataError(f"data source {source!r} is not understood; use {SOURCE_FORMS}")


def load_dataset(source: str, **options: Any) -> RecDataset:
    """Build the dataset named by ``source``; ``options`` go to the generator or loader."""
    parsed = parse_source(source)
    if parsed.kind == "synthetic":
        # return_truth is not an option (_NOT_OPTIONS): the dataset alone, never the (dataset, truth) pair
        return cast(RecDataset, make_synthetic(**_checked_options(source, make_synthetic, options)))
    assert parsed.path is not None
    if parsed.kind == "semi":
        semi = make_semi_synthetic(str(parsed.path), **_checked_options(source, make_semi_synthetic, options))
        return cast(RecDataset, semi)  # the dataset alone, as above
    _checked_options(source, lambda: None, options)  # the loader takes no options
    return load_mmrec(parsed.path.parent, parsed.path.name)


_CACHE: dict[tuple[str, str], RecDataset] = {}
_LOCK = threading.Lock()


def cache_key(source: str, options: Mapping[str, Any] | None) -> tuple[str, str]:
    """``(source, canonical JSON of the options sorted by name)``: equal for equal requests."""
    return source, json.dumps(dict(options or {}), sort_keys=True, default=str)


def cached_dataset(source: str, options: Mapping[str, Any] | None = None) -> RecDataset:
    """:func:`load_dataset` memoised per process, keyed by ``(source, sorted options)``."""
    key = cache_key(source, options)
    with _LOCK:  # one build per key even when trials share a process through threads
        if key not in _CACHE:
            _CACHE[key] = load_dataset(source, **dict(options or {}))
        return _CACHE[key]


def clear_dataset_cache() -> None:
    """Forget every cached dataset (frees memory; mainly for tests)."""
    with _LOCK:
        _CACHE.clear()
