"""Shared fixtures: the real CIFAR-10 (loaded once), and one build of the book per test session."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def cifar10():
    """The real CIFAR-10 from ../shared/data (decoded once per machine, then cached)."""
    import ddbook

    return ddbook.load_dataset("cifar10")


@dataclass
class Build:
    returncode: int
    log: str
    html: Path
    seconds: float


@pytest.fixture(scope="session")
def book(tmp_path_factory) -> Build:
    """The book built once, at the ci profile, with ``-W --keep-going`` into a temporary folder."""
    import time

    out = tmp_path_factory.mktemp("book")
    env = {**os.environ, "DDBOOK_PROFILE": "ci", "TQDM_DISABLE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([str(BIN / "jupyter-book"), "build", str(REPO), "-W", "--keep-going",
                           "--path-output", str(out)], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=1500)
    return Build(proc.returncode, proc.stdout + proc.stderr, out / "_build" / "html",
                 time.perf_counter() - t0)
