"""One library module per book page, found by auto-discovery.

Every module ``ddbook/figures/<module>.py`` (named like its notebook; names starting with ``_``
are helpers, not pages) defines

- ``NAME``: the command-line name (``python -m ddbook reproduce NAME --profile quick``);
- ``NOTEBOOK``: the page, ``notebooks/<NOTEBOOK>.py``; ``TITLE``: one line;
- ``plan(profile) -> list``: the pieces at a resolved :class:`~ddbook.profiles.Profile`, each with
  a unique ``.name``;
- ``run(profile, device=None, only=None) -> list[Path]``: runs every missing or stale piece
  (resumable; current results are kept); ``only`` selects the pieces whose name contains it (or,
  a callable, those whose name it accepts) and raises ValueError naming the valid pieces when none
  matches;
- ``load(profile) -> Loaded``: ``Loaded(found, missing, stale)``;
- ``verdicts(loaded) -> list[Verdict]`` (:mod:`ddbook.verdicts`);
- optionally ``ALIASES``: {other command-line name: the prefix of the piece names it runs}.

A new page is one new module here plus one notebook: nothing else is registered by hand.
"""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from types import ModuleType

from ._common import Loaded, as_profile, committed_or_live, drawn_or_live

__all__ = ["Loaded", "committed_or_live", "drawn_or_live", "modules", "find", "reproduce", "names", "REQUIRED"]

REQUIRED = ("NAME", "NOTEBOOK", "TITLE", "plan", "run", "load", "verdicts")


@lru_cache(maxsize=1)
def _discover() -> dict[str, ModuleType]:
    found: dict[str, ModuleType] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        lacking = [a for a in REQUIRED if not hasattr(module, a)]
        if lacking:
            raise TypeError(f"ddbook.figures.{info.name} is not a figure module: it lacks "
                            f"{', '.join(lacking)} (see ddbook.figures' docstring)")
        if module.NAME in found:
            raise TypeError(f"two figure modules share the name {module.NAME!r}: "
                            f"{found[module.NAME].__name__} and {module.__name__}")
        found[module.NAME] = module
    return found


def modules() -> dict[str, ModuleType]:
    """{NAME: module} of every figure module, in module-name order."""
    return dict(_discover())


def names() -> dict[str, str]:
    """{command-line name: what it runs}: every module's NAME and its aliases."""
    out = {}
    for name, m in _discover().items():
        out[name] = m.TITLE
        for alias, prefix in getattr(m, "ALIASES", {}).items():
            out[alias] = f"the same as {name}" if not prefix else \
                f"the pieces {prefix}* of {name}"
    return out


def find(name: str) -> tuple[ModuleType, str]:
    """(module, piece-name prefix) for a command-line name (a NAME: prefix ""; an alias: its
    prefix); a ValueError listing the valid names otherwise."""
    mods = _discover()
    if name in mods:
        return mods[name], ""
    for m in mods.values():
        if name in getattr(m, "ALIASES", {}):
            return m, m.ALIASES[name]
    raise ValueError(f"unknown figure {name!r}; choose one of {', '.join(names())}")


def reproduce(name: str, profile, device=None, only: str | None = None,
              shard: tuple[int, int] | None = None) -> list:
    """Run the missing or stale pieces of figure ``name`` (or of an alias's part of it) at
    ``profile``; ``only`` narrows further (a substring of the piece names); ``shard=(k, n)``
    keeps every n-th of the selected pieces, from the k-th in plan order, so that n processes
    share a page (experts they all need are split between them by a file lock per expert)."""
    module, prefix = find(name)
    profile = as_profile(profile)
    if shard is None and not prefix:
        return module.run(profile, device=device, only=only)
    part = [p.name for p in module.plan(profile) if p.name.startswith(prefix)]
    if only is not None and not any(only in n for n in part):
        raise ValueError(f"no piece of {name!r} matches --only {only!r}; its pieces are: "
                         f"{', '.join(part)}")
    part = [n for n in part if only is None or only in n]
    if shard is not None:
        k, n = shard
        if not 0 <= k < n:
            raise ValueError(f"shard must be k/n with 0 <= k < n, got {k}/{n}")
        mine = set(part[k::n])
        if not mine:
            print(f"shard {k}/{n} of {name!r} holds no piece ({len(part)} in all): nothing to do")
            return []
        return module.run(profile, device=device, only=lambda p: p in mine)
    return module.run(profile, device=device,
                      only=lambda n: n.startswith(prefix) and (only is None or only in n))
