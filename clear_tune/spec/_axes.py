"""The projection space's axes (k, λ, rank mode, ρ, τ): parsing with per-field bounds, and grid expansion.

An axis is written as one value (``k: 8``), a list (``k: [2, 4, 8]``) or a range
(``k: {low: 2, high: 20}``; float ranges need ``step`` in grid search, Optuna samples them). Every value is
checked against its field's bounds here so the error names the exact key path.

Example:
    >>> from clear_tune.spec._axes import parse_axis, grid_values
    >>> axis = parse_axis({"low": 2, "high": 8, "step": 2}, "k", "arms.full.k", emb_dim=64)
    >>> grid_values(axis, "arms.full.k")
    [2, 4, 6, 8]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from clear_tune.config import ProjectionConfig
from clear_tune.errors import SpecError
from clear_tune.spec._schema import RANK_MODES, Range, did_you_mean

AXIS_FIELDS = ProjectionConfig.FIELDS  # the projection's own: its fields, defaults and bounds are ProjectionConfig's
DEFAULTS: dict[str, Any] = ProjectionConfig.defaults()


@dataclass(frozen=True)
class Axis:
    """Either explicit ``values`` or a numeric ``range`` (kept as a range for Optuna)."""

    field: str
    values: tuple[Any, ...] | None = None
    range: Range | None = None

    @property
    def is_int(self) -> bool:
        return self.field in ProjectionConfig.INTEGER_FIELDS


def axis_is_int(field: str) -> bool:
    return field in ProjectionConfig.INTEGER_FIELDS


def parse_axis(raw: Any, field: str, where: str, *, emb_dim: int) -> Axis:
    """Parse and bound-check one axis; ``where`` is its key path for error messages."""
    if isinstance(raw, dict):
        try:
            rng = Range.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            sub = ".".join(str(p) for p in err["loc"])
            path = f"{where}.{sub}" if sub else where
            raise SpecError(f"{path}: {_clean(err['msg'])}") from None
        if field == "mode":
            raise SpecError(f"{where}: a rank mode cannot be a range; list the modes, e.g. [fixed, dynamic]")
        for bound in (rng.low, rng.high):
            _check_value(bound, field, where, emb_dim)
        if axis_is_int(field) and not (float(rng.low).is_integer() and float(rng.high).is_integer()):
            raise SpecError(f"{where}: {field} range bounds must be integers")
        return Axis(field, range=rng)
    values = raw if isinstance(raw, list) else [raw]
    if not values:
        raise SpecError(f"{where}: empty list; give at least one value")
    return Axis(field, values=tuple(_check_value(v, field, where, emb_dim) for v in values))


def grid_values(axis: Axis, where: str) -> list[Any]:
    """The explicit values of an axis for grid search (a range is walked with its step)."""
    if axis.values is not None:
        return list(axis.values)
    rng = axis.range
    assert rng is not None
    if axis.is_int:
        step = int(rng.step or 1)
        return list(range(int(rng.low), int(rng.high) + 1, step))
    if rng.step is None:
        raise SpecError(f"{where}: a float range needs 'step' in grid search (or list the values)")
    n = int(math.floor((rng.high - rng.low) / rng.step + 1e-9)) + 1
    return [round(rng.low + i * rng.step, 10) for i in range(n)]


def _check_value(value: Any, field: str, where: str, emb_dim: int) -> Any:
    try:
        return ProjectionConfig.check_value(field, value, emb_dim=emb_dim)
    except ValueError as exc:
        message = str(exc)
        if field == "mode":
            message += f"; {did_you_mean(str(value), RANK_MODES)}"
        raise SpecError(f"{where}: {message}") from None


def _clean(msg: str) -> str:
    return msg.removeprefix("Value error, ")
