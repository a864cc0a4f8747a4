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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny batches: one thread avoids OpenMP waits on the shared 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_sets(n_train: int, n_test: int, size: int = 16, classes: int = 4, seed: int = 0):
    """Random images with balanced labels: (x, y, x_test, y_test)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n_train, 3, size, size, generator=g), torch.arange(n_train) % classes
    xt, yt = torch.randn(n_test, 3, size, size, generator=g), torch.arange(n_test) % classes
    return x, y, xt, yt
