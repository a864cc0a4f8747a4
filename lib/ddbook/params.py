"""Checks for a notebook's parameters, so that a bad papermill ``-p`` fails with a readable message."""
from __future__ import annotations

from collections.abc import Iterable

__all__ = ["check"]

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def check(name: str, value, kind: type, *, choices: Iterable | None = None,
          low: float | None = None, high: float | None = None):
    """Return ``value`` if it is a ``kind`` (within ``choices`` / [low, high]); raise otherwise.

    An int is accepted where a float is asked for. Used in: every notebook's parameters.
    """
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise TypeError(f"parameter {name!r} must be {_TYPE_NAMES.get(kind, kind.__name__)}, "
                        f"got {type(value).__name__} {value!r} (papermill: -p {name} <value>)")
    if choices is not None:
        choices = list(choices)
        if value not in choices:
            raise ValueError(f"parameter {name!r} must be one of {choices}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"parameter {name!r} must lie in [{low}, {high}], got {value!r}")
    return value
