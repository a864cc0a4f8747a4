"""One command that runs several pages' pieces under a time budget and packs their results into
one archive, for a lent GPU; and the other half, which unpacks such an archive into ``results/``.

A lent GPU machine (SPEC: "the gpu profile") is bare, is reached by one shell command of at most
10 minutes, has no git checkout, and brings back a handful of files from one folder. So:

- :func:`run_batch` runs ``python -m ddbook reproduce NAME --profile P`` for each page in turn (a
  subprocess each, so that one page's failure or time-out leaves the others running), stops
  starting pages when too little of the budget is left, interrupts a page that would overrun
  (Ctrl-C: its finished pieces and its last checkpoint are kept, as in any run), and after every
  page rewrites ``<out>/results-<profile>.tar.gz`` (every results file of the profile) and
  ``<out>/batch.json`` (what ran, how it ended, how long, on which device and torch). A time-out
  therefore loses nothing finished.
- The results files record the commit they were made from; without a checkout it comes from
  ``$DDBOOK_SOURCE_COMMIT`` (set it in the command), with a digest of the library's source beside
  it (:func:`ddbook.results.lib_digest`), so that :func:`unpack` can check, here, that the commit
  exists and that its library is the one that ran.
- :func:`unpack` checks every results file in the archive (readable, of the named profile, its
  commit in this repository, its library unmodified) before it writes any, then replaces each
  file whole.

Command line: ``python -m ddbook batch selmatch-fig3 mtt-cifar10:ipc10 --profile gpu --budget 540
--out $OUT`` there; ``python -m ddbook unpack results-gpu.tar.gz`` here.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import paths

__all__ = ["PageRun", "parse_page", "run_batch", "pack", "unpack", "ARCHIVE", "SUMMARY"]

ARCHIVE = "results-{profile}.tar.gz"
SUMMARY = "batch.json"
LOG = "batch.log"


@dataclass
class PageRun:
    """One page of a batch and how it ended: ``complete``, ``interrupted`` (the budget ran out:
    finished pieces kept, rerun to resume), ``failed`` (the command's last error line in
    ``detail``) or ``not started`` (too little budget left)."""
    page: str
    only: str | None
    status: str = "not started"
    seconds: float = 0.0
    returncode: int | None = None
    detail: str = ""


def parse_page(spec: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME:ONLY`` (ONLY as ``reproduce --only``) -> (NAME, ONLY or None); the name
    must be a figure's (``python -m ddbook reproduce -h`` lists them)."""
    from .figures import find

    name, _, only = spec.partition(":")
    find(name)                               # a ValueError naming the valid ones
    return name, (only or None)


def _archive_members(root: Path, profile: str) -> list[Path]:
    base = root / profile
    return sorted(p for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")) \
        if base.is_dir() else []


def pack(profile: str, out: Path, root: Path | None = None) -> Path:
    """Every results file of ``profile`` under the results root, as ``<out>/results-<profile>
    .tar.gz`` (paths relative to the root: ``<profile>/...``), written to a temporary name and
    renamed, so that the archive is whole or absent."""
    root = Path(root or paths.results_root())
    out.mkdir(parents=True, exist_ok=True)

    def write(f):
        with tarfile.open(fileobj=f, mode="w:gz") as tar:
            for p in _archive_members(root, profile):
                tar.add(p, arcname=str(p.relative_to(root)))

    return paths.write_atomic(out / ARCHIVE.format(profile=profile), write)


def _environment(device: str | None) -> dict:
    import torch

    from .results import describe_device, git_state
    return {"python": sys.version.split()[0], "torch": torch.__version__,
            "device": describe_device(device), **git_state()}




def _last_error(log_text: str) -> str:
    lines = [ln for ln in log_text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("error:", "Traceback", "interrupted"))]
    return (errors or lines or [""])[-1][:300]


def run_batch(pages: list[str], profile: str, out: Path, budget_s: float,
              device: str | None = None, min_start_s: float = 60.0, grace_s: float = 30.0,
              python: str = sys.executable) -> list[PageRun]:
    """Run each page (``NAME`` or ``NAME:ONLY``) at ``profile`` in turn within ``budget_s``
    seconds from now; see the module docstring. Returns how each page ended."""
    from .profiles import get_profile

    get_profile(profile)
    if budget_s <= 0:
        raise ValueError(f"the budget must be positive (seconds), got {budget_s}")
    runs = [PageRun(*parse_page(p)) for p in pages]
    if not runs:
        raise ValueError("name at least one page (python -m ddbook reproduce -h lists them)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    deadline = start + budget_s
    summary = {"profile": profile, "budget_s": budget_s, "environment": _environment(device),
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pages": []}
    log = out / LOG
    for run in runs:
        left = deadline - time.monotonic()
        if left < min_start_s:
            run.detail = f"{left:.0f} s of the budget left, under {min_start_s:.0f} s"
        else:
            cmd = [python, "-m", "ddbook", "reproduce", run.page, "--profile", profile]
            cmd += ["--device", device] if device else []
            cmd += ["--only", run.only] if run.only else []
            t0 = time.monotonic()
            with open(log, "a") as fh:
                fh.write(f"\n== {' '.join(cmd[1:])}  ({left:.0f} s of the budget left)\n")
                fh.flush()
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                        env={**os.environ, "TQDM_DISABLE": "1",
                                             "PYTHONUNBUFFERED": "1"})
                try:
                    run.returncode = proc.wait(timeout=max(1.0, left - grace_s))
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGINT)     # finished pieces and checkpoints kept
                    try:
                        run.returncode = proc.wait(timeout=grace_s / 2)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        run.returncode = proc.wait()
                    run.status = "interrupted"
            run.seconds = round(time.monotonic() - t0, 1)
            if run.status != "interrupted":
                run.status = "complete" if run.returncode == 0 else "failed"
            if run.status != "complete":
                run.detail = _last_error(log.read_text(errors="replace"))
        summary["pages"] = [asdict(r) for r in runs]
        summary["seconds"] = round(time.monotonic() - start, 1)
        pack(profile, out)
        paths.write_atomic(out / SUMMARY, lambda f: f.write(json.dumps(summary, indent=2)
                                                           .encode() + b"\n"))
    return runs


# ------------------------------------------------------------------------------------------
# here: unpack an archive into results/


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(paths.repo_root()), *args], capture_output=True,
                          timeout=30)


def _lib_digest_at(sha: str) -> str | None:
    """The library digest (:func:`ddbook.results.lib_digest`) of commit ``sha``, from git."""
    from .results import digest_files

    listing = _git("ls-tree", "-r", "--name-only", sha, "--", "lib/ddbook")
    if listing.returncode:
        return None
    files = {}
    for name in listing.stdout.decode().split():
        if name.endswith(".py"):
            files[name[len("lib/ddbook/"):]] = _git("show", f"{sha}:{name}").stdout
    return digest_files(files)


def unpack(archive: Path, root: Path | None = None) -> list[Path]:
    """Check every results file in ``archive`` (a :func:`pack` archive) and then write them under
    the results root, each replaced whole. Refused, before anything is written, when a member is
    not under one profile's folder, a results JSON is unreadable or of another profile, its commit
    is not in this repository, or the library that made it differs from that commit's."""
    archive, root = Path(archive), Path(root or paths.results_root())
    if not archive.is_file():
        raise FileNotFoundError(f"{archive} does not exist. Fix: give the results-<profile>.tar.gz "
                                f"that `python -m ddbook batch` wrote")
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        profiles = {Path(m.name).parts[0] for m in members}
        bad = [m.name for m in members if m.name.startswith("/") or ".." in Path(m.name).parts]
        if bad or len(profiles) > 1:
            raise ValueError(f"{archive} is not one profile's results archive "
                             f"({'unsafe paths ' + ', '.join(bad[:3]) if bad else 'profiles ' + ', '.join(sorted(profiles))})")
        data = {m.name: tar.extractfile(m).read() for m in members}
    digests: dict[str, str | None] = {}
    for name, raw in data.items():
        if not name.endswith(".json"):
            continue
        try:
            prov = json.loads(raw)["provenance"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{name} in {archive} is not a results file ({e}); nothing written")
        profile = Path(name).parts[0]
        if prov.get("profile") != profile:
            raise ValueError(f"{name} says profile {prov.get('profile')!r} but lies under "
                             f"{profile}/; nothing written")
        sha = prov.get("sha", "unknown")
        if sha == "unknown" or _git("cat-file", "-e", f"{sha}^{{commit}}").returncode:
            raise ValueError(f"{name} was made from commit {sha!r}, which is not in this "
                             f"repository; nothing written. Fix: run the batch with "
                             f"DDBOOK_SOURCE_COMMIT=<the commit whose tree travelled>")
        if prov.get("lib_digest"):
            if sha not in digests:
                digests[sha] = _lib_digest_at(sha)
            if digests[sha] != prov["lib_digest"]:
                raise ValueError(f"{name} was made from a library that differs from commit "
                                 f"{sha[:10]}'s; nothing written")
    written = []
    for name, raw in sorted(data.items()):
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        written.append(paths.write_atomic(target, lambda f, raw=raw: f.write(raw)))
    return written
