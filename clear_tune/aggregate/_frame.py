"""Trial records -> one tidy :class:`pandas.DataFrame`, one row per trial.

Columns (always present, ``NaN``/``None`` where a record has no value):

* identity: ``trial_id, experiment, arm, status, reason``
* data: ``dataset`` (name), ``dataset_kind`` (synthetic / semi-synthetic / mmrec)
* the search dimensions: ``backbone, mode, k, strength`` (λ), ``energy`` (ρ), ``refresh_every, seed,
  max_epochs``; ``projection_active`` (mode != off and λ > 0) and ``variant`` — the ablation role derived
  from the config, not from the arm's name: ``"full"`` (fixed k, λ > 0), ``"no_projection"``, ``"dynamic"``
* ``config_key``: the config without its seed (trials that differ only in seed are replicates of one
  config) and ``config_label``: a short readable name of that config
* every other config value flattened as ``config.<path>`` (``config.lr``, ``config.projection.k`` ...)
* metrics: ``valid.<metric>`` and ``test.<metric>`` (``valid.recall@20`` ...) at the best-valid epoch
* cost: ``best_epoch, epochs_run, sec_per_epoch, sec_per_eval, peak_mem_mb, device, node_id, node_ip,
  n_gpus, wall_start, wall_end, hours`` (wall-clock trial hours; for a member of a fused model array its
  share of the array's seconds, so members of one array are not counted once each), ``resource_hours``
  (GPU-hours, or CPU trial-hours when the trial had no GPU), ``fused_members`` (1 for a trial trained alone)

Example:
    >>> frame = trials_frame([{"trial_id": "a", "status": "completed", "config": {"projection": {"k": 4}},
    ...                        "valid": {"recall@20": 0.1}, "test": {"recall@20": 0.09}}])
    >>> row = frame.iloc[0]
    >>> int(row["k"]), row["variant"], float(row["valid.recall@20"])
    (4, 'full', 0.1)
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from clear_tune.config import ProjectionConfig
from clear_tune.data._source import parse_source
from clear_tune.errors import DataError
from clear_tune.records import TrialRecord

VARIANTS = ("full", "no_projection", "dynamic")  # ProjectionConfig.variant's values, in table order
STANDARD_METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
VARIANT_NAMES = {"full": "full (fixed k)", "no_projection": "w/o null-space (λ = 0)", "dynamic": "dynamic ratio"}

# Config keys that do not define *which* config a trial is: replicates differ only in these.
_NOT_CONFIG_IDENTITY = ("seed", "device", "eval_batch_users", "threads")
_NUMERIC = (
    "best_epoch",
    "sec_per_epoch",
    "sec_per_eval",
    "peak_mem_mb",
    "wall_start",
    "wall_end",
    "hours",
    "resource_hours",
)
_PROJECTION_DEFAULTS = ProjectionConfig().model_dump()
# Columns named explicitly in the label; anything else that varies across trials is appended to it.
_LABELLED = {"backbone", "data", "projection.mode", "projection.k", "projection.strength", "projection.energy"}


def trials_frame(records: list[TrialRecord]) -> pd.DataFrame:
    """The tidy per-trial table described in the module docstring (sorted by ``wall_start``, then id)."""
    rows = [_row(record) for record in records]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    for split in ("valid", "test"):  # the standard metrics always exist (NaN when no trial has them yet)
        for metric in STANDARD_METRICS:
            if f"{split}.{metric}" not in frame.columns:
                frame[f"{split}.{metric}"] = math.nan
    numeric = [c for c in frame.columns if c.startswith(("valid.", "test.")) or c in _NUMERIC]
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce")
    frame["config_label"] = _labels(frame)
    order = frame["wall_start"].fillna(math.inf)
    return frame.assign(_order=order).sort_values(["_order", "trial_id"]).drop(columns="_order").reset_index(drop=True)


def metric_columns(frame: pd.DataFrame, split: str) -> list[str]:
    """``["valid.ndcg@10", ...]`` present in ``frame`` for ``split`` in {"valid", "test"}."""
    return sorted(c for c in frame.columns if c.startswith(f"{split}."))


def _row(record: TrialRecord) -> dict[str, Any]:
    config = dict(record.get("config") or {})
    projection = {**_PROJECTION_DEFAULTS, **(config.get("projection") or {})}
    dataset = record.get("dataset") or {}
    settings = ProjectionConfig.model_construct(**projection)  # as recorded (an old record may hold any values)
    active, variant = settings.active, settings.variant
    gpu_ids = list(record.get("gpu_ids") or [])
    wall_start, wall_end = _float(record.get("wall_start")), _float(record.get("wall_end"))
    hours = (wall_end - wall_start) / 3600.0 if wall_start is not None and wall_end is not None else math.nan
    fused = record.get("fused") or {}
    if fused.get("share_s") is not None:
        hours = float(fused["share_s"]) / 3600.0
    row: dict[str, Any] = {
        "trial_id": str(record.get("trial_id")),
        "experiment": record.get("experiment"),
        "arm": record.get("arm") or variant,
        "status": record.get("status") or "failed",
        "reason": record.get("reason"),
        "dataset": dataset.get("name") or _dataset_name(config.get("data")),
        "dataset_kind": dataset.get("kind") or _dataset_kind(config.get("data")),
        "backbone": config.get("backbone", "clear"),
        "mode": projection["mode"],
        "k": int(projection["k"]),
        "strength": float(projection["strength"]),
        "energy": float(projection["energy"]),
        "refresh_every": int(projection["refresh_every"]),
        "seed": config.get("seed", 0),
        "max_epochs": config.get("epochs"),
        "projection_active": active,
        "variant": variant,
        "config_key": _config_key(config),
        "best_epoch": record.get("best_epoch"),
        "epochs_run": record.get("epochs_run") or 0,
        "sec_per_epoch": _float(record.get("sec_per_epoch")),
        "sec_per_eval": _float(record.get("sec_per_eval")),
        "peak_mem_mb": _float(record.get("peak_mem_mb")),
        "device": record.get("device"),
        "node_id": record.get("node_id"),
        "node_ip": record.get("node_ip"),
        "n_gpus": len(gpu_ids),
        "gpu_ids": ",".join(str(g) for g in gpu_ids),
        "wall_start": wall_start,
        "wall_end": wall_end,
        "hours": hours,
        "resource_hours": hours * max(len(gpu_ids), 1),
        "fused_members": int(fused.get("members") or 1),
    }
    for split in ("valid", "test"):
        for metric, value in (record.get(split) or {}).items():
            row[f"{split}.{metric}"] = _float(value)
    for path, value in _flatten(config).items():
        row[f"config.{path}"] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return row


def _config_key(config: dict[str, Any]) -> str:
    identity = {k: v for k, v in config.items() if k not in _NOT_CONFIG_IDENTITY}
    if isinstance(identity.get("data_options"), dict):  # a per-seed data seed is still the same config
        identity["data_options"] = {k: v for k, v in identity["data_options"].items() if k != "seed"}
    return json.dumps(identity, sort_keys=True, default=str)


def _labels(frame: pd.DataFrame) -> pd.Series:
    """``"clear fixed k=8 λ=0.9"`` plus ``name=value`` for any other config value that varies across trials."""
    extra = [
        c
        for c in frame.columns
        if c.startswith("config.")
        and c.removeprefix("config.") not in _LABELLED
        and not c.removeprefix("config.").startswith(_NOT_CONFIG_IDENTITY)
        and not c.startswith(("config.data_options", "config.clear_at"))  # clear_at: one pair per backbone
        and frame[c].astype(str).nunique() > 1
    ]

    def label(row: pd.Series) -> str:
        if row["variant"] == "no_projection":
            core = f"{row['backbone']} no projection"
        elif row["variant"] == "dynamic":
            core = f"{row['backbone']} dynamic ρ={row['energy']:g} k≤{row['k']} λ={row['strength']:g}"
        else:
            core = f"{row['backbone']} fixed k={row['k']} λ={row['strength']:g}"
        parts = [
            f"{c.removeprefix('config.').removeprefix('projection.').removeprefix('model_options.')}={row[c]}"
            for c in extra
            if not (isinstance(row[c], float) and math.isnan(row[c]))
        ]
        return " ".join([core, *parts])

    return frame.apply(label, axis=1)


def _flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, dict) and item:
            flat.update(_flatten(item, f"{path}."))
        else:
            flat[path] = item
    return flat


def _dataset_name(data: Any) -> str:
    try:
        return parse_source(data or "synthetic").name
    except DataError:  # a record with a source string of its own making
        return str(data)


def _dataset_kind(data: Any) -> str:
    try:
        return parse_source(data or "synthetic").dataset_kind
    except DataError:
        return "synthetic"


def _float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
