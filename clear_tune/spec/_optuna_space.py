"""Optuna's define-by-run view of a spec: the same arms and axes, sampled instead of enumerated.

A list becomes a categorical, a range ``suggest_int``/``suggest_float`` (``log`` honoured), a single value
stays fixed. Conditional parameters follow the config's logic: k, λ and τ only when the rank mode is not
``off``, ρ only in dynamic mode. With several arms the arm is itself a categorical and its parameters are
named ``<arm>.k`` etc. (Optuna needs one distribution per name). Each suggested config runs with the
spec's FIRST seed: one trial is one TrainConfig; rerun the best ones over all seeds with a grid spec.

Example:
    >>> import optuna
    >>> from clear_tune.spec import load_spec, OptunaSpace
    >>> space = OptunaSpace(load_spec("search_spaces/optuna.yaml"))         # doctest: +SKIP
    >>> optuna.create_study().ask().number                                   # doctest: +SKIP
    0
"""

from __future__ import annotations

from typing import Any

from clear_tune.config import ProjectionConfig
from clear_tune.spec._axes import Axis
from clear_tune.spec._spec import Spec


class OptunaSpace:
    """Callable ``(optuna.Trial) -> {"trial": {"arm", "key": None, "config"}}`` (picklable for Ray)."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec

    def __call__(self, trial: Any) -> dict[str, Any]:
        arms = list(self.spec.arms)
        arm = trial.suggest_categorical("arm", arms) if len(arms) > 1 else arms[0]
        prefix = f"{arm}." if len(arms) > 1 else ""
        axes = self.spec.arms[arm]

        def pick(name: str, axis_or_values: Axis | list[Any]) -> Any:
            if isinstance(axis_or_values, list):
                vals = axis_or_values
                return vals[0] if len(vals) == 1 else trial.suggest_categorical(prefix + name, vals)
            return _suggest(trial, prefix + name, axis_or_values)

        n_data = len(self.spec.settings.data)
        data_index = trial.suggest_categorical("data", list(range(n_data))) if n_data > 1 else 0
        backbone = pick("backbone", self.spec.arm_backbones[arm])
        mode = pick("mode", axes["mode"])
        projection: dict[str, Any] = {**ProjectionConfig.defaults(), "mode": mode, "strength": 0.0}
        for name in ProjectionConfig.effective_fields(mode):  # k, λ, τ unless off; ρ only in dynamic mode
            projection[name] = pick(name, axes[name])
        config = self.spec.make_config(
            data_index=data_index, backbone=backbone, projection=projection, seed=self.spec.settings.seeds[0]
        )
        label = self.spec.arm_label(arm, config)
        return {"trial": {"arm": label, "key": None, "config": config.model_dump(mode="json")}}


def _suggest(trial: Any, name: str, axis: Axis) -> Any:
    if axis.values is not None:
        vals = list(axis.values)
        return vals[0] if len(vals) == 1 else trial.suggest_categorical(name, vals)
    rng = axis.range
    assert rng is not None
    if axis.is_int:
        return trial.suggest_int(name, int(rng.low), int(rng.high), step=int(rng.step or 1), log=rng.log)
    return trial.suggest_float(name, rng.low, rng.high, step=rng.step, log=rng.log)
