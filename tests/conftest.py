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
    executed: Path          # the notebooks papermill executed, which the book rendered


@pytest.fixture(scope="session")
def book(tmp_path_factory) -> Build:
    """The book as ``make book`` makes it, into a temporary folder: papermill executes every
    notebook at the ci profile (two at a time), then the book is built from those executed
    notebooks with ``-W --keep-going`` (it executes none itself)."""
    import time

    out = tmp_path_factory.mktemp("book")
    executed = out / "executed"
    env = {**os.environ, "DDBOOK_PROFILE": "ci", "TQDM_DISABLE": "1",
           "DDBOOK_EXECUTED": str(executed)}
    t0 = time.perf_counter()
    run = subprocess.run([str(BIN / "python"), "-m", "ddbook", "notebook", "--all", "--profile",
                          "ci", "--jobs", "2"], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=1500)
    log = run.stdout + run.stderr
    if run.returncode == 0:
        proc = subprocess.run([str(BIN / "jupyter-book"), "build", str(REPO), "-W",
                               "--keep-going", "--path-output", str(out)], capture_output=True,
                              text=True, env=env, cwd=REPO, timeout=1500)
        run, log = proc, log + proc.stdout + proc.stderr
    return Build(run.returncode, log, out / "_build" / "html", time.perf_counter() - t0,
                 executed)


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
