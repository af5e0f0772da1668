"""Check values read from files (YAML configs, checkpoint metadata) against dataclass field types.

One rule for the training config and the model config alike: a value must already have its
field's type - no ``"8"`` for an int, no ``2.0`` for an int, no ``1`` for a bool - except that
an int is taken (as a float) where a float is wanted, and a list where a tuple is wanted.
Problems raise :class:`~fluxvit.errors.ConfigError` naming the key and showing the value
(bounded, since YAML aliases can nest a few lines into billions of items).
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import types
import typing
from typing import Any

from fluxvit.errors import ConfigError

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 1, 4, 4, 60, 60


def show(value: Any) -> str:
    """A bounded repr of ``value`` for error messages."""
    return _SHORT.repr(value)


def coerce(value: Any, hint: Any, key: str, what: str = "config key") -> Any:
    """Check ``value`` against the type ``hint``; return it converted (int -> float, list -> tuple).

    ``what`` and ``key`` name the value in the message: ``"{what} {key!r} must be ..."``.
    Supported hints: bool, int, float, str, ``X | None``, ``list[X]``, ``tuple[X, ...]`` and
    fixed-length ``tuple[X, Y]``.
    """
    def fail(needs: str) -> ConfigError:
        return ConfigError(f"{what} {key!r} must be {needs}, got {show(value)}")

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key, what)
            except ConfigError as e:
                errors.append(e)
        raise errors[0] if errors else fail("a valid value")
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise fail("a list")
        return [coerce(v, item, key, what) for v in value]
    if origin is tuple:
        args = typing.get_args(hint)
        variable = len(args) == 2 and args[1] is Ellipsis
        items = [args[0]] * len(value) if variable and isinstance(value, (list, tuple)) else list(args)
        plural = {int: "integers", float: "numbers", str: "strings"}.get(args[0], "values")
        needs = f"a list of {plural}" if variable else f"a list of {len(args)} {plural}"
        if not isinstance(value, (list, tuple)) or len(value) != len(items):
            raise fail(needs)
        try:
            return tuple(coerce(v, t, key, what) for v, t in zip(value, items))
        except ConfigError:
            raise fail(needs) from None
    if hint is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        if not math.isfinite(value):
            raise fail("a finite number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    raise ConfigError(f"{what} {key!r}: unsupported type {hint}")


def bounds(lo: float | None = None, hi: float | None = None, above: float | None = None) -> dict:
    """Field metadata giving the field's range: ``lo <= value <= hi``, or ``value > above``;
    ``dataclasses.field(default=..., metadata=bounds(0, 1))``. Lists and tuples are checked item
    by item; None (for an optional field) passes."""
    return {"range": (lo, hi, above)}


def in_range(value: Any, key: str, lo: float | None = None, hi: float | None = None,
             above: float | None = None, what: str = "config key") -> Any:
    """``value`` if it is a finite number within the range, else :class:`ConfigError` naming
    ``key``; lists and tuples item by item, None passes."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        for v in value:
            in_range(v, key, lo, hi, above, what)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value  # not a number: the type check has the say
    if isinstance(value, float) and not math.isfinite(value):  # (an int of 400 digits has no float)
        raise ConfigError(f"{what} {key!r} must be a finite number, got {show(value)}")
    if above is not None and not value > above:
        raise ConfigError(f"{what} {key!r} must be more than {above:g}, got {show(value)}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = (f"between {lo:g} and {hi:g}" if lo is not None and hi is not None
                else f"at least {lo:g}" if lo is not None else f"at most {hi:g}")
        raise ConfigError(f"{what} {key!r} must be {span}, got {show(value)}")
    return value


def check_fields(obj: Any, what: str) -> None:
    """Check (and convert in place) every field of the dataclass instance ``obj``: its type,
    then its range if the field declares one (:func:`bounds`)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = coerce(getattr(obj, f.name), hints[f.name], f.name, what)
        if "range" in f.metadata:
            lo, hi, above = f.metadata["range"]
            in_range(value, f.name, lo, hi, above, what)
        setattr(obj, f.name, value)
