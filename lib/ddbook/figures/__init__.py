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
- optionally ``ALIASES``: {other command-line name: the prefix of the piece names it runs};
- optionally ``SOURCES``: the NAMEs of the pages whose results or sets it reads (what
  :func:`reproduce_claimed` waits for before it starts the page).

A new page is one new module here plus one notebook: nothing else is registered by hand.
"""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from types import ModuleType

from ._common import Loaded, as_profile, committed_or_live, drawn_or_live

__all__ = ["Loaded", "committed_or_live", "drawn_or_live", "modules", "find", "reproduce",
           "reproduce_claimed", "claim_path", "names", "REQUIRED"]

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


def claim_path(profile, module: ModuleType, piece: str):
    """The lock file a process holds while it runs ``piece`` of ``module`` in claim mode."""
    from .. import paths
    return paths.cache_dir() / "claims" / as_profile(profile).name / module.NAME / f"{piece}.lock"


def reproduce_claimed(names: list, profile, device=None, only: str | None = None,
                      log=print) -> list:
    """Run the missing or stale pieces of the pages ``names``, in that order, shared with any
    other process doing the same: no fixed shards, each process takes the next piece in plan
    order that no one else holds (an exclusive ``flock`` per piece, :func:`claim_path`, held while
    it runs and released by the process's death), skips the ones held, and moves on to the next
    page. So n processes on n cores stay busy until every page is done, however unequal the
    pieces. A page that declares ``SOURCES`` (pages whose sets it reads) first waits for every
    piece of those pages that another process is running in claim mode; a source still missing
    then is made by the page's own ``run``, as without claims. ``only``: a substring of the piece
    names (on every page). Returns the results paths this process wrote (a piece found current
    when its lock was taken is not run again, nor returned)."""
    import time
    from pathlib import Path

    from ..paths import FileLock
    profile = as_profile(profile)
    pages = [find(n) for n in names]                       # unknown names fail before any work
    out = []
    for name, (module, prefix) in zip(names, pages):
        for source in getattr(module, "SOURCES", ()):
            smod, _ = find(source)
            for p in smod.plan(profile):
                with FileLock(claim_path(profile, smod, p.name), wait=True):
                    pass                                   # returns when nobody runs it
        part = [p.name for p in module.plan(profile)
                if p.name.startswith(prefix) and (only is None or only in p.name)]
        if not part:
            log(f"{name}: no piece matches --only {only!r} at {profile.name}; nothing to do")
            continue
        for piece in part:
            with FileLock(claim_path(profile, module, piece), wait=False) as lock:
                if not lock.held:
                    log(f"{name}: {piece} is running in another process; next")
                    continue
                t0 = time.time()
                paths = module.run(profile, device=device, only=lambda n, p=piece: n == p)
                out += [p for p in paths if Path(p).exists() and Path(p).stat().st_mtime >= t0]
    return out
