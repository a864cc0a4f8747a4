"""Checks for a notebook's parameters, so that a bad papermill ``-p`` fails with a readable message."""
from __future__ import annotations

from collections.abc import Iterable

__all__ = ["check", "check_names", "page_profiles"]

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


_PLAIN = (str, int, float, bool, list, dict, tuple, type(None))
_IPYTHON = {"In", "Out", "exit", "quit", "get_ipython", "open"}


def check_names(namespace: dict, known: Iterable[str]) -> None:
    """Refuse a parameter the notebook does not take (papermill only warns about one).

    papermill's ``-p NAME VALUE`` becomes a plain global (str, number, bool, list, dict, None) in
    the cell after the ``parameters`` cell; call ``params.check_names(globals(), [...])`` there,
    listing the notebook's parameters. Any other plain global that is not private (``_x``) nor
    IPython's is reported. Used in: every notebook's parameters check.
    """
    known = list(known)
    unknown = sorted(k for k, v in namespace.items()
                     if not k.startswith("_") and k not in _IPYTHON and k not in known
                     and isinstance(v, _PLAIN))
    if unknown:
        raise ValueError(f"unknown parameter{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(repr(u) for u in unknown)}: this notebook takes "
                         f"{', '.join(known)} (papermill -p NAME VALUE; list them with "
                         f"papermill --help-notebook)")


def page_profiles(namespace: dict, known: Iterable[str], announce: bool = True):
    """The start of every page: refuse a papermill parameter the page does not take
    (:func:`check_names`), resolve ``profile`` (the live run) and, when the page takes it,
    ``draw`` (the committed profile its figures show) to Profile objects, set the plotting style,
    and (``announce``) print the live profile and its purpose. Returns ``(P, D)``; ``D`` is None
    for a page without ``draw``."""
    from . import plotting
    from .profiles import PROFILES, get_profile

    known = list(known)
    check_names(namespace, known)
    live = get_profile(check("profile", namespace["profile"], str))
    drawn = (get_profile(check("draw", namespace["draw"], str, choices=list(PROFILES)))
             if "draw" in known else None)
    plotting.style()
    if announce:
        print(f"profile {live.name!r}: {live.purpose}")
    return live, drawn
