"""Backbone options, read once from the constructor's signature: names, defaults and types written in one place.

A backbone's ``model_options`` are the keyword-only parameters of its ``__init__`` after the ones every
backbone takes (``ctx``, ``members``, ``emb_dim``, ``seed``, and ``reg_weight`` for single models). Each needs
a default; its annotation (or, without one, its default's type) types it. :func:`check_options` validates
what a spec gives against that, strictly (``1`` is not a ``bool``, ``1.5`` not an ``int``), so a typo or a
wrong type is one line listing the valid options.

Example:
    >>> class Toy:
    ...     def __init__(self, ctx, *, members, emb_dim: int = 64, seed: int = 0, n_layers: int = 2,
    ...                  dropout: float = 0.1):
    ...         pass
    >>> {name: option.default for name, option in backbone_options(Toy).items()}
    {'n_layers': 2, 'dropout': 0.1}
    >>> check_options("toy", backbone_options(Toy), {"dropout": 0})
    {'dropout': 0.0}
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from clear_tune.errors import SpecError

# Constructor parameters that are the harness's to pass, never model options.
HARNESS_PARAMETERS = frozenset({"self", "ctx", "members", "emb_dim", "seed", "reg_weight"})


@dataclass(frozen=True)
class Option:
    """One model option: its default and the type a given value must have (``None``: any)."""

    name: str
    default: Any
    annotation: Any = None

    def check(self, value: Any) -> Any:
        """``value`` validated (and normalised: ints for floats, lists for tuples); ``TypeError`` when it does not
        fit."""
        from pydantic import TypeAdapter, ValidationError

        kind = self.annotation if self.annotation is not None else _type_of(self.default)
        if kind is None:
            return value
        origin = typing.get_origin(kind)
        candidate = tuple(value) if origin is tuple and isinstance(value, list) else value
        try:
            checked = TypeAdapter(kind).validate_python(candidate, strict=True)
        except ValidationError:
            raise TypeError(_describe(kind)) from None
        return list(checked) if isinstance(checked, tuple) and isinstance(value, list) else checked


def backbone_options(cls: type | Callable[..., Any], *, skip: frozenset[str] = HARNESS_PARAMETERS) -> dict[str, Option]:
    """The options of ``cls`` (a class, its ``__init__`` read) by name, in signature order.

    Raises ``TypeError`` for an option without a default: the harness could not build the model without it.
    """
    init = typing.cast(Any, cls).__init__ if isinstance(cls, type) else cls  # a class: read its constructor
    try:
        signature = inspect.signature(init)
    except (TypeError, ValueError):
        return {}
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # an annotation that does not resolve here: fall back to the defaults' types
        hints = {}
    options: dict[str, Option] = {}
    for parameter in signature.parameters.values():
        if parameter.name in skip or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.kind is parameter.POSITIONAL_ONLY or (
            parameter.kind is parameter.POSITIONAL_OR_KEYWORD and parameter.default is parameter.empty
        ):
            continue  # positional inputs (the context a model is built from), not options
        if parameter.default is parameter.empty:
            raise TypeError(
                f"option {parameter.name!r} of {getattr(cls, '__qualname__', cls)} has no default: "
                "give every keyword-only constructor parameter a default"
            )
        options[parameter.name] = Option(parameter.name, parameter.default, hints.get(parameter.name))
    return options


def check_options(backbone: str, options: Mapping[str, Option], given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` checked against ``options`` (unknown name or wrong type: one :class:`SpecError` line)."""
    valid = ", ".join(f"{name} (default {option.default!r})" for name, option in options.items()) or "none"
    checked = {}
    for key, value in given.items():
        if key not in options:
            raise SpecError(f"backbone {backbone!r} has no model option {key!r}: valid options are {valid}")
        try:
            checked[key] = options[key].check(value)
        except TypeError as exc:
            raise SpecError(
                f"backbone {backbone!r} model option {key}={value!r} must be {exc} like its default "
                f"{options[key].default!r}"
            ) from None
    return checked


def _type_of(default: Any) -> Any:
    if default is None:
        return None
    if isinstance(default, (list, tuple)):
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in default)
        return (
            list[float]
            if numbers and any(isinstance(v, float) for v in default)
            else (list[int] if numbers else list[Any])
        )
    return type(default)


def _describe(kind: Any) -> str:
    names = {bool: "a bool", int: "an int", float: "a float", str: "a str"}
    if kind in names:
        return names[kind]
    if typing.get_origin(kind) is typing.Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(kind))
    return f"a {getattr(kind, '__name__', None) or str(kind).replace('typing.', '')}"
