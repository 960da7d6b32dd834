"""Typed setting values: the checks and coercions behind :mod:`rnnlab.config`.

Every value that reaches a configuration, from a preset, a ``--set`` override or a saved
config.json, goes through :func:`strict_dataclass` (types and unknown keys, with errors naming
what was expected and what came) and each section's :func:`check_numbers` (finite floats, ints
that fit in 64 bits).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, Literal, get_args, get_origin

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "INT_RANGE",
    "MAX_PARAMETERS",
    "ConfigError",
    "check_numbers",
    "parse_override",
    "positive",
    "strict_dataclass",
]


class ConfigError(ValueError):
    """An unknown preset or key, or a value of the wrong type or out of range."""


# Every int setting is a count, a size or a seed that torch and numpy take as a 64-bit integer.
INT_RANGE = (-(2**63), 2**63 - 1)
MAX_PARAMETERS = 2**31  # 8 GiB of float32 weights: beyond it, a size is a typo, not a model


def check_numbers(section: object) -> None:
    """The one finiteness and range check of every section: each float setting is finite (inf
    and nan, e.g. ``train.lr=inf`` or ``1e400``, mean no setting), each int fits in 64 bits."""
    label = type(section).__name__.removesuffix("Config").lower()
    for f in fields(section):  # type: ignore[arg-type]
        value = getattr(section, f.name)
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{label}.{f.name}: expected a finite number, got {v}")
            if isinstance(v, int) and not INT_RANGE[0] <= v <= INT_RANGE[1]:
                raise ConfigError(
                    f"{label}.{f.name}: expected an int that fits in 64 bits, got {v}"
                )


def positive(section: object, *names: str) -> None:
    """Each named int setting of ``section`` is at least 1."""
    label = type(section).__name__.removesuffix("Config").lower()
    for name in names:
        value = getattr(section, name)
        if isinstance(value, int) and value < 1:
            raise ConfigError(f"{label}.{name}: expected a positive int, got {value}")


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if get_origin(tp) is tuple:
        return f"a list of {_type_name(get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """``value`` checked against the annotation ``tp`` (int, float, bool, str, Literal, tuple)."""
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key}: expected one of {_type_name(tp)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return tuple(_coerce(get_args(tp)[0], v, key) for v in value)
    if origin in (typing.Union, types.UnionType):
        raise AssertionError(f"{key}: unions are not used in configs")
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and isinstance(value, int) and abs(value) >= 1e308:
            raise ConfigError(f"{key}: expected a finite number, got {value}")
        value = float(value) if ok else value
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


def strict_dataclass(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from a (possibly partial) mapping, strictly."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a table, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = prefix.rstrip(".") or "the top level"
        raise ConfigError(
            f"unknown key {prefix + unknown[0]!r} in {where}: expected one of {sorted(known)}, "
            f"got {prefix + unknown[0]!r}"
        )
    kwargs = {}
    for name, value in values.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = strict_dataclass(tp, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(tp, value, prefix + name)
    return cls(**kwargs)


def parse_override(assignment: str) -> tuple[str, Any]:
    """``"train.lr=3e-4"`` -> ``("train.lr", 0.0003)``. Values are TOML literals (numbers,
    ``true``/``false``, ``[1, 2]``, quoted strings); anything else is taken as a bare string."""
    key, sep, raw = assignment.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise ConfigError(f"override: expected section.key=value, got {assignment!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value
