"""Where things live: the repository, the data, the caches and the results.

Every location can be overridden by an environment variable, so the same code runs in a fresh
clone (with ``../shared`` beside it), on a user's laptop and on a bare GPU machine.

| variable          | meaning                                                             |
| ----------------- | ------------------------------------------------------------------- |
| ``DDBOOK_DATA``   | a dataset file or a folder holding datasets (zip, torchvision dirs) |
| ``DDBOOK_SCORES`` | the folder holding the published difficulty-score files             |
| ``DDBOOK_CACHE``  | where decoded datasets and fitted transforms are cached             |
| ``DDBOOK_RESULTS``| the results root (default ``<repo>/results``)                       |
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["repo_root", "data_dirs", "scores_dirs", "cache_dir", "results_root"]


def repo_root() -> Path:
    """The repository root: ``lib/ddbook/paths.py`` sits two folders below it."""
    return Path(__file__).resolve().parents[2]


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def data_dirs() -> list[Path]:
    """Folders searched for datasets, in order: ``$DDBOOK_DATA``, ``<repo>/data``, ``../shared/data``."""
    dirs = []
    env = _env_path("DDBOOK_DATA")
    if env is not None:
        dirs.append(env)
    root = repo_root()
    dirs += [root / "data", root.parent / "shared" / "data"]
    return dirs


def scores_dirs() -> list[Path]:
    """Folders searched for published score files: ``$DDBOOK_SCORES``, then ``scores/`` in each data dir."""
    dirs = []
    env = _env_path("DDBOOK_SCORES")
    if env is not None:
        dirs.append(env)
    dirs += [d / "scores" for d in data_dirs() if d.suffix != ".zip"]
    return dirs


def cache_dir() -> Path:
    """The cache folder (``$DDBOOK_CACHE``, else ``$XDG_CACHE_HOME/ddbook``, else ``~/.cache/ddbook``)."""
    env = _env_path("DDBOOK_CACHE")
    if env is None:
        xdg = _env_path("XDG_CACHE_HOME") or Path.home() / ".cache"
        env = xdg / "ddbook"
    env.mkdir(parents=True, exist_ok=True)
    return env


def results_root() -> Path:
    """The root of the committed results tree (``$DDBOOK_RESULTS``, else ``<repo>/results``)."""
    return _env_path("DDBOOK_RESULTS") or repo_root() / "results"
