"""Small, self-describing result files with provenance, written atomically.

A result is ``results/<profile>/<name>.json`` (``name`` may contain ``/``), holding

- ``data``: the numbers (JSON-able: dicts, lists, floats, strings);
- ``provenance``: git SHA (and whether the tree had uncommitted changes), profile, the full config
  and its hash, seeds, device, torch/python versions, wall time, creation time;
- optionally ``arrays``: the name of an ``.npz`` beside the JSON, with its SHA-256.

Reading checks the file against the config the caller expects: a result made from another config
raises :class:`StaleResultError` rather than being drawn silently.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import paths
from .profiles import get_profile

__all__ = ["Result", "StaleResultError", "save_result", "load_result", "config_hash",
           "describe_device", "git_state", "result_path", "Timer"]

SCHEMA = 1


class StaleResultError(RuntimeError):
    """A results file was made from a different config than the one now asked for."""


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def config_hash(config: dict) -> str:
    """A short, order-independent hash of a JSON-able config."""
    text = json.dumps(_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def git_state() -> dict:
    """``{"sha": ..., "dirty_lib": bool}`` of the code this process runs, or ``"unknown"`` outside a
    git checkout. Read once, when ``ddbook.results`` is first imported, so that a long run records
    the commit it started from even if the checkout moves on while it runs."""
    return dict(_GIT_STATE)


def _read_git_state() -> dict:
    root = paths.repo_root()
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "lib"],
                                capture_output=True, text=True, check=True, timeout=10).stdout
        return {"sha": sha, "dirty_lib": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"sha": "unknown", "dirty_lib": None}


_GIT_STATE = _read_git_state()


def describe_device(device: str | torch.device | None = None) -> str:
    """A human description of the device a result was computed on."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"cpu: {cpu}, {torch.get_num_threads()} threads"


class Timer:
    """Context manager measuring wall time in seconds (``.seconds``)."""

    def __enter__(self):
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


@dataclass(frozen=True)
class Result:
    path: Path
    data: dict
    provenance: dict
    arrays: dict | None

    @property
    def profile(self) -> str:
        return self.provenance["profile"]


def result_path(profile: str, name: str, root: Path | None = None) -> Path:
    if ".." in Path(name).parts or Path(name).is_absolute():
        raise ValueError(f"result name {name!r} must be a relative path inside results/<profile>/")
    return (root or paths.results_root()) / profile / f"{name}.json"


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are shared files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_result(name: str, profile: str, data: dict, config: dict, seeds, wall_time: float,
                device: str | torch.device | None = None, arrays: dict | None = None,
                root: Path | None = None) -> Path:
    """Write ``results/<profile>/<name>.json`` (and ``.npz`` if ``arrays``) atomically; return the path.

    Used in: every command and notebook that computes numbers the book shows.
    """
    get_profile(profile)  # refuse unknown profiles before writing anything
    path = result_path(profile, name, root)
    record = {"schema": SCHEMA, "name": name, "data": _jsonable(data)}
    if arrays:
        npz = path.with_suffix(".npz")
        _atomic_write(npz, lambda f: np.savez_compressed(
            f, **{k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
                  for k, v in arrays.items()}))
        record["arrays"] = {"file": npz.name, "sha256": hashlib.sha256(npz.read_bytes()).hexdigest()}
    record["provenance"] = {
        **git_state(), "profile": profile, "config": _jsonable(config),
        "config_hash": config_hash(config), "seeds": _jsonable(seeds),
        "device": describe_device(device), "torch": torch.__version__,
        "python": sys.version.split()[0], "wall_time_s": round(float(wall_time), 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    text = json.dumps(record, indent=1, sort_keys=False, allow_nan=False)
    _atomic_write(path, lambda f: f.write(text.encode() + b"\n"))
    return path


def load_result(name: str, profile: str, expect_config: dict | None = None,
                root: Path | None = None, missing_ok: bool = False) -> Result | None:
    """Read a result; with ``expect_config``, refuse (StaleResultError) one made from another config."""
    path = result_path(profile, name, root)
    if not path.exists():
        if missing_ok:
            return None
        raise FileNotFoundError(f"no result {path}; run it first (python -m ddbook ... --profile {profile})")
    record = json.loads(path.read_text())
    prov = record["provenance"]
    if expect_config is not None and prov["config_hash"] != config_hash(expect_config):
        raise StaleResultError(
            f"{path} was made from config {prov['config_hash']} (git {prov['sha'][:10]}), but the "
            f"current config hashes to {config_hash(expect_config)}: it is stale. Rerun it at profile "
            f"{profile!r} to refresh it, or check out the commit that made it.")
    arrays = None
    if "arrays" in record:
        npz = path.with_name(record["arrays"]["file"])
        if hashlib.sha256(npz.read_bytes()).hexdigest() != record["arrays"]["sha256"]:
            raise StaleResultError(f"{npz} does not match the checksum recorded in {path}; rerun it.")
        with np.load(npz) as blob:
            arrays = {k: blob[k] for k in blob.files}
    return Result(path, record["data"], prov, arrays)
