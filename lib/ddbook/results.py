"""Small, self-describing result files with provenance, written atomically.

A result is ``results/<profile>/<name>.json`` (``name`` may contain ``/``), holding

- ``data``: the numbers (JSON-able: dicts, lists, floats, strings);
- ``provenance``: git SHA (and whether the tree had uncommitted changes), profile, the full config
  and its hash, seeds, device, torch/python versions, wall time, creation time;
- optionally ``arrays``: the name of an ``.npz`` beside the JSON, with its SHA-256.

Writing is all or nothing: everything is serialised first (a NaN fails here, before any file is
touched), the arrays go to a *new* file named by their hash (``<name>.<sha12>.npz``), then the JSON
replaces the old one in one rename, and only then is the old ``.npz`` removed. A crash or a full
disk at any point leaves either the old pair or the new pair loadable.

Reading checks the file against the config the caller expects: a result made from another config
raises :class:`StaleResultError` carrying the differing config keys, rather than being drawn
silently; an unreadable file raises :class:`CorruptResultError` (a kind of stale result: rerun it).
"""
from __future__ import annotations

import hashlib
import io
import json
import math
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

from . import ckernels, paths
from .profiles import get_profile

__all__ = ["Result", "StaleResultError", "CorruptResultError", "ResultConflictError",
           "ResultWriteError", "save_result", "load_result", "config_hash", "config_diff",
           "check_replace", "check_writable", "result_status", "describe_device", "git_state", "lib_digest", "digest_files", "result_path",
           "Timer"]

SCHEMA = 1


class StaleResultError(RuntimeError):
    """A results file was made from a different config than the one now asked for.

    ``path``: the file; ``diff``: ``{dotted config key: (recorded, now)}`` (empty when unknown).
    """

    def __init__(self, message: str, path: Path | None = None, diff: dict | None = None):
        super().__init__(message)
        self.path, self.diff = path, dict(diff or {})


class CorruptResultError(StaleResultError):
    """A results file (or its ``.npz``) cannot be read; like a stale one, it is to be rerun."""


class ResultConflictError(ValueError):
    """Writing would replace a result made from another configuration (needs ``overwrite``)."""


class ResultWriteError(OSError):
    """A result could not be written (read-only or full disk); the previous one is intact."""


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


def _flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict) and obj:
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def config_diff(recorded: dict, now: dict) -> dict:
    """``{dotted key: (recorded value, current value)}`` for every key whose value differs
    (a key present on one side only shows ``"<absent>"`` on the other)."""
    a, b = _flatten(_jsonable(recorded)), _flatten(_jsonable(now))
    return {k: (a.get(k, "<absent>"), b.get(k, "<absent>")) for k in sorted(a.keys() | b.keys())
            if a.get(k, "<absent>") != b.get(k, "<absent>")}


def _describe_diff(diff: dict, limit: int = 6) -> str:
    parts = [f"{k}: {old!r} -> {new!r}" for k, (old, new) in list(diff.items())[:limit]]
    more = f", and {len(diff) - limit} more" if len(diff) > limit else ""
    return ", ".join(parts) + more


def git_state() -> dict:
    """``{"sha": ..., "dirty_lib": bool}`` of the code this process runs, or ``"unknown"`` outside a
    git checkout. Read once, when ``ddbook.results`` is first imported, so that a long run records
    the commit it started from even if the checkout moves on while it runs."""
    return dict(_GIT_STATE)


def digest_files(files: dict) -> str:
    """sha256 over ``{relative path: bytes}``, in path order (path and content both count)."""
    h = hashlib.sha256()
    for name in sorted(files):
        data = files[name]
        h.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


def lib_digest() -> str:
    """A digest of the library's source as it is on disk (every ``.py`` under ``ddbook/``)."""
    base = Path(__file__).resolve().parent
    return digest_files({p.relative_to(base).as_posix(): p.read_bytes()
                         for p in base.rglob("*.py") if "__pycache__" not in p.parts})


def _read_git_state() -> dict:
    root = paths.repo_root()
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "lib"],
                                capture_output=True, text=True, check=True, timeout=10).stdout
        return {"sha": sha, "dirty_lib": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        # no checkout (a lent GPU gets a copy of the tree): the commit named by whoever sent it,
        # and the source digest that `python -m ddbook unpack` checks against that commit's
        sha = os.environ.get("DDBOOK_SOURCE_COMMIT", "").strip()
        if sha:
            return {"sha": sha, "dirty_lib": None, "lib_digest": lib_digest()}
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


def _write_temp(folder: Path, name: str, payload: bytes) -> Path:
    """``payload`` in a fsynced temporary file in ``folder`` (mode 0644); return its path."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are shared files
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _non_finite(obj, where: str = "data") -> str | None:
    """The dotted place of the first NaN or infinity in a JSON-able value, or None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return f"{where} = {obj}"
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = ((f"[{i}]", v) for i, v in enumerate(obj))
    else:
        return None
    for k, v in items:
        found = _non_finite(v, f"{where}{k}" if str(k).startswith("[") else f"{where}.{k}")
        if found:
            return found
    return None


def _write_error(path: Path, e: OSError) -> ResultWriteError:
    return _with_errno(e, f"cannot write the result {path} ({e.strerror or e}); nothing was replaced: the "
        f"previous result, if any, is intact. Fix: free space or make {path.parent} writable (or "
        f"set DDBOOK_RESULTS to a writable folder), then rerun the same command (it resumes from "
        f"its checkpoints)")


def _with_errno(cause: OSError, message: str) -> ResultWriteError:
    err = ResultWriteError(message)   # one argument: str(err) is the message alone
    err.errno = cause.errno           # (setting strerror too would change str(err))
    return err


def check_writable(profile: str, root: Path | None = None) -> Path:
    """Refuse, before any work, a results folder ``<root>/<profile>`` that cannot be written."""
    folder = (root or paths.results_root()) / profile
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_temp(folder, "write-check", b"").unlink()
    except OSError as e:
        raise _with_errno(
            e, f"the results folder {folder} is not writable ({e.strerror or e}). Fix: make "
            f"it writable, or set DDBOOK_RESULTS to a writable folder") from None
    return folder


def check_replace(name: str, profile: str, config: dict, root: Path | None = None) -> None:
    """Refuse (ResultConflictError) to replace a result made from another configuration.

    Call it before the work; a missing, unreadable or same-config result may be replaced.
    """
    path = result_path(profile, name, root)
    try:
        prov = json.loads(path.read_text())["provenance"]
        old_hash, old_config = prov["config_hash"], prov["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if old_hash != config_hash(config):
        changed = _describe_diff(config_diff(old_config, config))
        raise ResultConflictError(
            f"{path} holds a result made from another configuration ({changed}); "
            f"replace it with --overwrite (overwrite=True), or write elsewhere with --name NAME")


def save_result(name: str, profile: str, data: dict, config: dict, seeds, wall_time: float,
                device: str | torch.device | None = None, arrays: dict | None = None,
                root: Path | None = None) -> Path:
    """Write ``results/<profile>/<name>.json`` (and ``<name>.<hash>.npz`` if ``arrays``) as a whole
    or not at all; return the JSON's path. A non-finite number is refused before anything is
    written; an OSError (read-only, full) raises :class:`ResultWriteError`, the old result intact.

    Used in: every command and notebook that computes numbers the book shows.
    """
    get_profile(profile)  # refuse unknown profiles before writing anything
    path = result_path(profile, name, root)
    record = {"schema": SCHEMA, "name": name, "data": _jsonable(data)}
    bad = _non_finite(record["data"])
    if bad:
        raise ValueError(f"result {name!r} holds a non-finite number ({bad}); nothing was written "
                         f"and the previous result, if any, is intact. Fix the computation (a "
                         f"diverged run?) or record the value as null")
    blob = None
    if arrays:
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor)
                                        else np.asarray(v)) for k, v in arrays.items()})
        blob = buf.getvalue()
        digest = hashlib.sha256(blob).hexdigest()
        npz = path.with_name(f"{path.stem}.{digest[:12]}.npz")
        record["arrays"] = {"file": npz.name, "sha256": digest}
    record["provenance"] = {
        **git_state(), "profile": profile, "config": _jsonable(config),
        "config_hash": config_hash(config), "seeds": _jsonable(seeds),
        "device": describe_device(device), "kernels": ckernels.describe(device),
        "torch": torch.__version__, "python": sys.version.split()[0],
        "wall_time_s": round(float(wall_time), 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    text = json.dumps(record, indent=1, sort_keys=False, allow_nan=False).encode() + b"\n"
    old_npz = _recorded_npz(path)
    tmps = []
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if blob is not None:
            tmps.append(_write_temp(path.parent, npz.name, blob))
            os.replace(tmps[-1], npz)      # a new name: the old pair is untouched
        tmps.append(_write_temp(path.parent, path.name, text))
        os.replace(tmps[-1], path)         # the one step that switches to the new pair
    except OSError as e:
        raise _write_error(path, e) from e
    finally:
        for t in tmps:
            t.unlink(missing_ok=True)
    if old_npz is not None and old_npz != (npz if blob is not None else None):
        old_npz.unlink(missing_ok=True)
    return path


def _recorded_npz(path: Path) -> Path | None:
    """The ``.npz`` the current JSON at ``path`` points to, if any (None when unreadable)."""
    try:
        return path.with_name(json.loads(path.read_text())["arrays"]["file"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _corrupt(path: Path, why: str, profile: str) -> CorruptResultError:
    return CorruptResultError(
        f"{path} cannot be read ({why}). It holds a computed result: it is safe to delete and "
        f"recompute (rerun the command that made it at --profile {profile}; if it is committed, "
        f"`git checkout -- {path.name}` in its folder restores it)", path)


def load_result(name: str, profile: str, expect_config: dict | None = None,
                root: Path | None = None, missing_ok: bool = False) -> Result | None:
    """Read a result; with ``expect_config``, refuse (StaleResultError, with ``.diff``) one made
    from another config; an unreadable JSON or ``.npz`` raises CorruptResultError."""
    path = result_path(profile, name, root)
    if not path.exists():
        if missing_ok:
            return None
        raise FileNotFoundError(f"no result {path}; run it first (python -m ddbook ... --profile {profile})")
    try:
        record = json.loads(path.read_text())
        prov = record["provenance"]
        recorded_hash = prov["config_hash"]
        data = record["data"]
    except (ValueError, KeyError, TypeError) as e:
        raise _corrupt(path, f"not a complete results file: {type(e).__name__}: {e}", profile) from None
    if expect_config is not None and recorded_hash != config_hash(expect_config):
        diff = config_diff(prov.get("config", {}), expect_config)
        raise StaleResultError(
            f"{path} is stale: it was made from another configuration (git "
            f"{str(prov.get('sha', '?'))[:10]}); changed: {_describe_diff(diff) or 'unknown'}. "
            f"Rerun it at profile {profile!r} to refresh it, or check out the commit that made it.",
            path, diff)
    arrays = None
    if "arrays" in record:
        try:
            npz = path.with_name(record["arrays"]["file"])
            raw = npz.read_bytes()
        except (OSError, KeyError, TypeError) as e:
            raise _corrupt(path, f"its arrays file is missing: {e}", profile) from None
        if hashlib.sha256(raw).hexdigest() != record["arrays"]["sha256"]:
            raise CorruptResultError(
                f"{npz} does not match the checksum recorded in {path} (a mismatched pair); "
                f"it is safe to delete both and rerun the command that made them", path)
        with np.load(io.BytesIO(raw)) as blob:
            arrays = {k: blob[k] for k in blob.files}
    return Result(path, data, prov, arrays)


def result_status(name: str, profile: str, expect_config: dict | None = None,
                  root: Path | None = None) -> tuple[str, str]:
    """``(state, line)``: state ``"current"``, ``"missing"``, ``"stale"`` or ``"corrupt"``, and a
    line a page or ``reproduce`` can print (for a stale result: which config keys changed).

    Used in: pages and commands that list what is there and what must be rerun.
    """
    try:
        r = load_result(name, profile, expect_config, root, missing_ok=True)
    except CorruptResultError as e:
        return "corrupt", str(e)
    except StaleResultError as e:
        return "stale", str(e)
    if r is None:
        return "missing", f"{result_path(profile, name, root)} is missing: run it first"
    return "current", f"{r.path} (git {str(r.provenance.get('sha', '?'))[:10]})"
