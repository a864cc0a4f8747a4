"""Where things live: the repository, the data, the caches and the results.

Every location can be overridden by an environment variable, so the same code runs in a fresh
clone (with ``../shared`` beside it), on a user's laptop and on a bare GPU machine. A variable
that is set is used or refused with a clear error (:class:`PathSettingError`), never ignored:
when ``DDBOOK_DATA`` or ``DDBOOK_SCORES`` is set, only that place is searched.

| variable          | meaning                                                             |
| ----------------- | ------------------------------------------------------------------- |
| ``DDBOOK_DATA``   | a dataset file or a folder holding datasets (zip, torchvision dirs) |
| ``DDBOOK_SCORES`` | the folder holding the published difficulty-score files             |
| ``DDBOOK_CACHE``  | where decoded datasets and fitted transforms are cached             |
| ``DDBOOK_RESULTS``| the results root (default ``<repo>/results``)                       |
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["repo_root", "data_dirs", "scores_dirs", "cache_dir", "results_root",
           "PathSettingError", "env_path", "write_atomic", "save_atomic", "FileLock"]


class PathSettingError(ValueError):
    """An environment variable names a place that does not exist or cannot be used."""


def repo_root() -> Path:
    """The repository root: ``lib/ddbook/paths.py`` sits two folders below it."""
    return Path(__file__).resolve().parents[2]


def env_path(name: str, must_exist: bool = False) -> Path | None:
    """The path in ``$name`` (None when unset or empty); with ``must_exist``, a missing one is
    refused with a :class:`PathSettingError` naming the variable."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if must_exist and not path.exists():
        raise PathSettingError(f"{name}={value} does not exist. Fix: point {name} at an existing "
                               f"file or folder, or unset it to use the default places")
    return path



def default_data_dirs() -> list[Path]:
    """The default places for datasets: ``<repo>/data``, then ``../shared/data``."""
    root = repo_root()
    return [root / "data", root.parent / "shared" / "data"]


def data_dirs() -> list[Path]:
    """Folders searched for datasets: ``[$DDBOOK_DATA]`` alone when it is set (it must exist),
    else ``<repo>/data`` and ``../shared/data``."""
    env = env_path("DDBOOK_DATA", must_exist=True)
    return [env] if env is not None else default_data_dirs()


def scores_dirs() -> list[Path]:
    """Folders searched for published score files: ``[$DDBOOK_SCORES]`` alone when it is set (it
    must be a folder), else ``scores/`` in ``$DDBOOK_DATA`` (when it is a folder) and in the
    default data folders."""
    env = env_path("DDBOOK_SCORES", must_exist=True)
    if env is not None:
        if not env.is_dir():
            raise PathSettingError(f"DDBOOK_SCORES={env} is not a folder. Fix: point it at the "
                                   f"folder that holds the score files (cscores_CIFAR10.npz, ...)")
        return [env]
    data = env_path("DDBOOK_DATA")
    extra = [data] if data is not None and data.is_dir() else []
    return [d / "scores" for d in extra + default_data_dirs()]


_CHECKED: set[Path] = set()


def cache_dir() -> Path:
    """The cache folder (``$DDBOOK_CACHE``, else ``$XDG_CACHE_HOME/ddbook``, else
    ``~/.cache/ddbook``), created if missing; one that is a file, cannot be created or cannot be
    written is refused with a :class:`PathSettingError`."""
    env = env_path("DDBOOK_CACHE")
    what = "DDBOOK_CACHE" if env is not None else "the cache folder"
    if env is None:
        xdg = env_path("XDG_CACHE_HOME") or Path.home() / ".cache"
        env = xdg / "ddbook"
    if env in _CHECKED and env.is_dir():
        return env
    fix = "Fix: set DDBOOK_CACHE to a writable folder (it is created if missing)"
    if env.exists() and not env.is_dir():
        raise PathSettingError(f"{what} {env} is a file, not a folder. {fix}")
    try:
        env.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=env, prefix=".write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PathSettingError(f"{what} {env} cannot be used ({e.strerror or e}). {fix}") from None
    _CHECKED.add(env)
    return env


def results_root() -> Path:
    """The root of the committed results tree (``$DDBOOK_RESULTS``, else ``<repo>/results``)."""
    return env_path("DDBOOK_RESULTS") or repo_root() / "results"


def write_atomic(path: Path, write: Callable) -> Path:
    """Write ``path`` whole or not at all: ``write(f)`` fills a temporary file (binary) beside it,
    which is flushed to disk and renamed over ``path``; on any error the temporary file is
    removed and ``path`` is untouched. The temporary name (``.<name>.<pid>.tmp``) is per process,
    so processes writing the same file never interleave. Returns ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_atomic(path: Path, blob) -> Path:
    """``torch.save(blob, path)`` through :func:`write_atomic` (never half written)."""
    import torch

    return write_atomic(path, lambda f: torch.save(blob, f))


class FileLock:
    """An exclusive ``flock`` on ``path`` for the ``with`` block: ``wait=True`` blocks until it is
    free, ``wait=False`` leaves ``held`` False when another process (or another open of the file)
    holds it. The lock dies with its process, so a killed holder never blocks anyone. Used in:
    experts (one lock per expert), figures.reproduce_claimed (one lock per piece),
    feature_net (the feature network), selmatch_scale.ensure_set (one lock per set), the
    ablations page's distillations (one lock per set)."""

    def __init__(self, path: Path, wait: bool):
        self.path, self.wait, self.held, self._file = Path(path), wait, False, None

    def __enter__(self) -> "FileLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+b")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
            self.held = True
        except BlockingIOError:
            self._file.close()
            self._file = None
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()                  # closing releases the flock
