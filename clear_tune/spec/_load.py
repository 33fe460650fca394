"""Read a YAML spec, validate all of it before anything starts, and resolve it into a :class:`Spec`.

Every problem becomes ONE :class:`SpecError` line ``FILE: KEY.PATH: what is wrong; how to fix it``.
Nothing is written while validating.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.yaml"
    >>> _ = p.write_text("experiment: demo\\narms: {full: {k: [2, 4], strength: 0.9}}\\n")
    >>> spec = load_spec(p)
    >>> len(spec.grid_trials())
    2
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from clear_tune.config import TrainConfig
from clear_tune.errors import SpecError
from clear_tune.experiment import check_results_location
from clear_tune.spec._axes import AXIS_FIELDS, DEFAULTS, Axis, parse_axis
from clear_tune.spec._schema import SearchSpec, did_you_mean
from clear_tune.spec._spec import Spec

# TrainConfig fields the spec sets through its own keys, never through `trainer:`.
_SET_ELSEWHERE = {
    "data": "data.source",
    "data_options": "data.options",
    "backbone": "backbones",
    "clear_at": "clear_at",
    "projection": "projection / arms",
    "seed": "seeds",
}


def load_spec(path: str | os.PathLike[str], *, results: str | None = None, dry_run: bool = False) -> Spec:
    """Validate the YAML file at ``path`` completely; raise :class:`SpecError` (one line) on any problem. With
    ``dry_run`` a dataset that is not there yet is a line in ``spec.warnings`` instead (a dry run reads no data)."""
    path = Path(path)
    try:
        return _load(path, results, dry_run)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None


def _load(path: Path, results: str | None, dry_run: bool = False) -> Spec:
    if not path.is_file():
        raise SpecError("file not found; give the path of a search-space YAML such as search_spaces/grid.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"YAML syntax error at {where}: {problem}; fix the indentation/quoting there") from None
    if not isinstance(raw, dict):
        raise SpecError("the file must be a YAML mapping with at least 'experiment: NAME'")
    try:
        settings = SearchSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_one_line(exc)) from None
    if results is not None:
        settings = settings.model_copy(update={"results": results})
    check_results_location(settings.results)
    _check_tracking(settings.tracking)

    trainer = _check_trainer(settings.trainer)
    emb_dim = trainer.emb_dim
    warnings: list[str] = []
    for i, data in enumerate(settings.data):
        try:
            _check_data(data.source, f"data[{i}].source" if len(settings.data) > 1 else "data.source")
        except SpecError as exc:
            if not (dry_run and "does not exist" in str(exc)):
                raise
            warnings.append(f"{exc} (not found: the dry run goes on, a run would stop here)")
    plugins = _load_plugins(settings)
    catalogue: dict[str, Any] = {}  # name -> model-array class (the open registry's)
    for i, name in enumerate(settings.backbones):
        catalogue[name] = _backbone(name, f"backbones[{i}]", plugins)
    if len(set(settings.seeds)) != len(settings.seeds):
        raise SpecError("seeds: a seed is listed twice; list each seed once")

    base_axes = _axes(settings.projection.model_dump(), "projection", emb_dim, inherited={})
    arm_specs = settings.arms or {"full": settings.projection}
    arms: dict[str, dict[str, Axis]] = {}
    arm_backbones: dict[str, list[str]] = {}
    arm_presets: dict[str, str | None] = {}
    for name, arm in arm_specs.items():
        where = f"arms.{name}" if settings.arms else "projection"
        arms[name] = _axes(arm.model_dump(), where, emb_dim, inherited=base_axes)
        backbones = arm.backbones if arm.backbones is not None else settings.backbones
        for i, b in enumerate(backbones):
            if b not in catalogue:
                catalogue[b] = _backbone(b, f"{where}.backbones[{i}]", plugins)
            cls = catalogue[b]
            if _may_project(arms[name]) and not cls.uses_features:
                raise SpecError(
                    f"{where}: backbone {b!r} has no modalities, so it cannot take a projection; "
                    f"give this arm 'backbones:' without {b!r} or set 'mode: off'"
                )
            if _may_project(arms[name]) and cls.external and b not in settings.clear_at and not cls.default_clear_at:
                raise SpecError(
                    f"{where}: backbone {b!r} takes CLEAR only where you name its two encoders: "
                    f"{cls.clear_at_hint()}; or set 'mode: off' for it"
                )
        arm_backbones[name] = list(backbones)
        arm_presets[name] = arm.preset
        if arm.preset is not None and settings.search.kind != "grid":
            raise SpecError(
                f"{where}.preset: presets expand into a grid; use 'search: {{kind: grid}}' or list the "
                "values as arm axes"
            )

    if settings.search.kind == "optuna" and settings.search.n_trials is None:
        raise SpecError("search.n_trials: required for optuna search; add e.g. 'n_trials: 20'")
    if settings.search.kind == "grid" and settings.search.n_trials is not None:
        raise SpecError("search.n_trials: only used by optuna search; remove it or set 'kind: optuna'")
    if settings.search.kind == "optuna" and settings.search.order != "auto":
        raise SpecError("search.order: only used by grid search (Optuna picks its own order); remove it")
    for backbone in settings.clear_at:
        if backbone not in catalogue:
            raise SpecError(f"clear_at.{backbone}: not a backbone of this spec; list it under 'backbones' or remove it")
        if not catalogue[backbone].external:
            raise SpecError(
                f"clear_at.{backbone}: {backbone!r} is a native backbone that applies CLEAR at its own "
                "documented point; clear_at is for single-model and MMRec-API models: remove it"
            )
        pair = settings.clear_at[backbone]
        if set(pair) != {"image", "text"} or not all(pair.values()):
            raise SpecError(
                f"clear_at.{backbone}: {pair!r} must name exactly image and text, e.g. "
                "{image: image_trs, text: text_trs}"
            )
    spec = Spec(
        path=path,
        settings=settings,
        trainer=trainer,
        arms=arms,
        arm_backbones=arm_backbones,
        arm_presets=arm_presets,
        plugins=plugins,
        warnings=warnings,
    )
    if settings.search.kind == "grid":
        spec.grid_trials()  # float ranges without a step and similar problems surface now
    return spec


def _load_plugins(settings: SearchSpec) -> list[Any]:
    """Import the spec's plugins now (before Ray starts): their registrations, or one line on what fails."""
    from clear_tune._plugins import load_plugins, resolve_plugins

    plugins = resolve_plugins(list(settings.plugins))
    load_plugins(plugins)
    return plugins


def _backbone(name: str, where: str, plugins: list[Any]) -> Any:
    """The registry's class for ``name``; a ``pkg.module:Class`` name's module joins ``plugins`` (the workers need
    it)."""
    from clear_tune._plugins import plugin_for_backbone
    from clear_tune.models import backbone_class

    try:
        extra = plugin_for_backbone(name, where=where)
        cls = backbone_class(name)
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None
    if extra is not None and all(p.target != extra.target for p in plugins):
        plugins.append(extra)
    return cls


def _check_trainer(overrides: dict[str, Any]) -> TrainConfig:
    fields = [f for f in TrainConfig.model_fields if f not in _SET_ELSEWHERE]
    for key in overrides:
        if key in _SET_ELSEWHERE:
            raise SpecError(f"trainer.{key}: set through '{_SET_ELSEWHERE[key]}', not under 'trainer'; move it")
        if key not in TrainConfig.model_fields:
            raise SpecError(f"trainer.{key}: unknown key {key!r}; {did_you_mean(key, fields)}")
    try:
        # the projection is checked per arm (k < emb_dim there); here only the trainer fields
        return TrainConfig(**overrides, projection={"mode": "off"})
    except ValidationError as exc:
        raise SpecError(_one_line(exc, prefix="trainer")) from None


def _check_tracking(tracking: Any) -> None:
    """Each tracker the spec names must be installed (its optional extra), and MLflow's store usable, before
    Ray starts."""
    import importlib.util

    for key, module, name in (("mlflow", "mlflow", "MLflow"), ("wandb", "wandb", "Weights & Biases (wandb)")):
        if getattr(tracking, key) is not None and importlib.util.find_spec(module) is None:
            raise SpecError(f"tracking.{key}: {name} is not installed; pip install 'clear-tune[{key}]'")
    uri = tracking.mlflow
    file_store = uri is not None and (uri.startswith("file:") or ":" not in uri) and uri != "databricks"
    if file_store and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("1", "true"):
        raise SpecError(
            f"tracking.mlflow: MLflow 3 refuses a file store ({uri}); use 'sqlite:///PATH/mlflow.db' or a "
            "tracking server's http:// URI, or set MLFLOW_ALLOW_FILE_STORE=true"
        )


def _check_data(source: str, where: str) -> None:
    from clear_tune.data import parse_source
    from clear_tune.errors import DataError

    try:
        parsed = parse_source(source)
    except DataError:
        raise SpecError(
            f"{where}: {source!r} is not a dataset; use 'synthetic', 'semi:PATH.inter' or 'mmrec:ROOT/NAME'"
        ) from None
    missing = parsed.missing()
    if missing is not None and parsed.kind == "semi":
        raise SpecError(f"{where}: {missing} does not exist (paths are relative to {os.getcwd()}); fix the path")
    if missing is not None:
        raise SpecError(
            f"{where}: {missing} does not exist (paths are relative to {os.getcwd()}); "
            "download it with 'python -m clear_tune.data download NAME'"
        )


def _axes(raw: dict[str, Any], where: str, emb_dim: int, *, inherited: dict[str, Axis]) -> dict[str, Axis]:
    axes = dict(inherited)
    for field in AXIS_FIELDS:
        if raw.get(field) is not None:
            axes[field] = parse_axis(raw[field], field, f"{where}.{field}", emb_dim=emb_dim)
        elif field not in axes:
            axes[field] = Axis(field, values=(DEFAULTS[field],))
    return axes


def _may_project(axes: dict[str, Axis]) -> bool:
    modes = axes["mode"].values or ()
    strength = axes["strength"]
    if all(m == "off" for m in modes):
        return False
    if strength.values is not None and all(s == 0 for s in strength.values):
        return False
    return True


def _one_line(exc: ValidationError, *, prefix: str = "") -> str:
    """The first pydantic error as ``key.path: message`` (with the key itself for unknown keys)."""
    err = exc.errors()[0]
    parts = [prefix] if prefix else []
    for p in err["loc"]:
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]"] if parts else [f"[{p}]"]
        else:
            parts.append(str(p))
    msg = err["msg"].removeprefix("Value error, ")
    if msg.startswith("unknown key "):
        parts.append(msg.split("'")[1])
    if err["type"] == "missing":
        msg = f"required key is missing; add '{parts[-1]}: ...'"
    elif err["type"] not in ("value_error",) and "input" in err and not isinstance(err["input"], (dict, list)):
        msg = f"{msg} (got {err['input']!r})"
    return f"{'.'.join(parts) or 'spec'}: {msg}"
