"""`python -m ddbook batch` / `unpack` (ddbook.batch): several pages under a time budget packed
into one archive for a lent GPU, and the checked unpacking of that archive here."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from ddbook import batch, results

REPO = Path(__file__).resolve().parents[1]


def _cli(*args, env=None, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "ddbook", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                          timeout=600)


def test_batch_runs_a_page_and_packs_its_results(tmp_path):
    out, res = tmp_path / "out", tmp_path / "res"
    r = _cli("batch", "difficulty-scores:published", "--profile", "ci", "--budget", "400",
             "--out", str(out), env={"DDBOOK_RESULTS": str(res)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "difficulty-scores:published: complete" in r.stdout
    summary = json.loads((out / "batch.json").read_text())
    assert [p["status"] for p in summary["pages"]] == ["complete"]
    assert summary["environment"]["torch"] and summary["profile"] == "ci"
    with tarfile.open(out / "results-ci.tar.gz") as tar:
        names = tar.getnames()
    assert names == ["ci/difficulty/published_scores_agreement.json"], names
    # and unpacked here into another results root: the same bytes
    back = tmp_path / "back"
    written = batch.unpack(out / "results-ci.tar.gz", root=back)
    assert [p.relative_to(back).as_posix() for p in written] == names
    assert written[0].read_bytes() == (res / names[0]).read_bytes()


def _fake_python(tmp_path: Path, body: str) -> str:
    """An executable standing in for python: ignores its arguments, runs ``body`` (sh)."""
    exe = tmp_path / "fakepy"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe)


def test_a_page_that_would_overrun_is_interrupted_and_the_next_is_not_started(tmp_path):
    fake = _fake_python(tmp_path, "echo working; exec sleep 60")
    runs = batch.run_batch(["mtt-cifar10", "selmatch-fig3:r0.05"], "ci", tmp_path / "out",
                           budget_s=6, min_start_s=5, grace_s=2, python=fake)
    assert [r.status for r in runs] == ["interrupted", "not started"], runs
    assert runs[0].seconds < 6 and "budget left" in runs[1].detail
    summary = json.loads((tmp_path / "out" / "batch.json").read_text())
    assert [p["status"] for p in summary["pages"]] == ["interrupted", "not started"]
    assert (tmp_path / "out" / "results-ci.tar.gz").is_file()   # packed after every page
    assert "working" in (tmp_path / "out" / "batch.log").read_text()


def test_a_failing_page_does_not_stop_the_next_and_its_error_is_reported(tmp_path):
    fake = _fake_python(tmp_path, 'case "$4" in mtt-cifar10) echo "error: it broke"; exit 2;; esac')
    runs = batch.run_batch(["mtt-cifar10", "datm-ranges"], "ci", tmp_path / "out", budget_s=120,
                           python=fake)
    assert [r.status for r in runs] == ["failed", "complete"], runs
    assert runs[0].detail == "error: it broke" and runs[0].returncode == 2


def test_bad_batch_arguments_are_one_line_errors(tmp_path):
    r = _cli("batch", "no-such-page", "--profile", "ci", "--budget", "10", "--out",
             str(tmp_path / "o"))
    assert r.returncode == 2 and r.stderr.startswith("error: unknown figure 'no-such-page'"), r.stderr
    with pytest.raises(ValueError, match="budget must be positive"):
        batch.run_batch(["mtt-cifar10"], "ci", tmp_path / "o", budget_s=0)
    r = _cli("unpack", str(tmp_path / "missing.tar.gz"))
    assert r.returncode == 2 and "Fix: give the results-<profile>.tar.gz" in r.stderr, r.stderr


def _archive(tmp_path: Path, name: str, provenance: dict) -> Path:
    arch = tmp_path / "results-gpu.tar.gz"
    src = tmp_path / "src" / name
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(json.dumps({"data": {}, "provenance": provenance}))
    with tarfile.open(arch, "w:gz") as tar:
        tar.add(src, arcname=name)
    return arch


def test_unpack_refuses_results_it_cannot_trace_and_writes_nothing(tmp_path):
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    root = tmp_path / "root"
    cases = {
        "not in this repository": {"profile": "gpu", "sha": "0" * 40},
        "unknown": {"profile": "gpu", "sha": "unknown"},
        "differs from commit": {"profile": "gpu", "sha": head, "lib_digest": "f" * 64},
        "says profile 'quick'": {"profile": "quick", "sha": head},
    }
    for message, prov in cases.items():
        arch = _archive(tmp_path, "gpu/distill/x.json", prov)
        with pytest.raises(ValueError, match=message):
            batch.unpack(arch, root=root)
        assert not root.exists(), f"{message}: something was written"
    ok = _archive(tmp_path, "gpu/distill/x.json", {"profile": "gpu", "sha": head})
    assert [p.name for p in batch.unpack(ok, root=root)] == ["x.json"]


def test_without_a_checkout_the_commit_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setattr(results.paths, "repo_root", lambda: tmp_path)   # not a git checkout
    monkeypatch.delenv("DDBOOK_SOURCE_COMMIT", raising=False)
    assert results._read_git_state() == {"sha": "unknown", "dirty_lib": None}
    monkeypatch.setenv("DDBOOK_SOURCE_COMMIT", "abc123")
    state = results._read_git_state()
    assert state["sha"] == "abc123" and state["lib_digest"] == results.lib_digest()


def test_the_library_digest_of_a_clean_checkout_is_its_commits():
    state = results.git_state()
    if state["sha"] == "unknown" or state["dirty_lib"]:
        pytest.skip("the library has local changes (CI runs this on a clean clone)")
    untracked = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--ignored",
                                "--", "lib/ddbook"], capture_output=True, text=True).stdout
    if any(line.endswith(".py") for line in untracked.splitlines()):
        pytest.skip("untracked .py files in lib/ddbook")
    assert batch._lib_digest_at(state["sha"]) == results.lib_digest()
