"""Choosing real images per class: SelMatch's sliding window, and the baselines it is compared with.

Every function returns indices into a :class:`~ddbook.data.Split`, grouped class by class
(class 0's picks, then class 1's, ...). Orders are per class, hardest first.

The window start β (papers.md §4.2, §9). The paper's numbers fit a start of ⌊β·N_c⌋ with N_c the
number of images in the class ("class-fraction", our default); the released code computes
``int(IPC·β)`` ("ipc-offset"), kept as a named option so its exact behaviour can be reproduced.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .data import Split
from .scores import Scores

__all__ = ["READINGS", "window_start", "max_beta", "beta_grid", "window", "window_indices",
           "random_indices", "hardest_first_indices", "herding_indices", "partition_window",
           "check_ipc", "check_alpha", "WindowPartition"]

READINGS = ("class-fraction", "ipc-offset")
_EPS = 1e-9  # β·N_c is computed in floating point: 0.7·5000 = 3500.0000000000005


def check_ipc(ipc: int, n_class: int, c: int | None = None) -> int:
    """Raise a clear ValueError unless 1 ≤ ipc ≤ n_class."""
    if not isinstance(ipc, int) or isinstance(ipc, bool) or ipc < 1:
        raise ValueError(f"IPC must be a positive integer, got {ipc!r}")
    if ipc > n_class:
        which = f"class {c}" if c is not None else "a class"
        raise ValueError(f"IPC {ipc} is larger than {which}, which has {n_class} images; "
                         f"use at most {n_class} images per class")
    return ipc


def check_alpha(alpha: float) -> float:
    """Raise a clear ValueError unless α (the distilled fraction) lies in [0, 1]."""
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha (the fraction of each class's window that is distilled) must lie "
                         f"in [0, 1], got {alpha!r}")
    return float(alpha)


def _check_reading(reading: str) -> None:
    if reading not in READINGS:
        raise ValueError(f"unknown window reading {reading!r}; choose one of {READINGS}")


def max_beta(n_class: int, ipc: int, reading: str = "class-fraction") -> float:
    """The largest β whose window still fits in a class of ``n_class`` images."""
    _check_reading(reading)
    return (n_class - ipc) / n_class if reading == "class-fraction" else (n_class - ipc) / ipc


def window_start(beta: float, n_class: int, ipc: int, reading: str = "class-fraction") -> int:
    """Start of the window [s, s + ipc) in a class's hardest-first order (SelMatch §4.2)."""
    _check_reading(reading)
    check_ipc(ipc, n_class)
    if not (isinstance(beta, (int, float)) and beta >= 0):
        raise ValueError(f"beta must be a number ≥ 0, got {beta!r}")
    s = math.floor(beta * (n_class if reading == "class-fraction" else ipc) + _EPS)
    if s + ipc > n_class:
        raise ValueError(f"window [{s}, {s + ipc}) runs past the end of a class of {n_class} images "
                         f"(beta {beta}, IPC {ipc}, {reading} reading); the largest valid beta is "
                         f"{max_beta(n_class, ipc, reading):.4g}")
    return s


def beta_grid(ratio: float) -> list[float]:
    """The scripts' β grid for a subset ratio: 0, 0.1, … up to ⌊10·(1 − ratio)⌋/10 (0.9 at 5 %)."""
    if not 0 < ratio <= 1:
        raise ValueError(f"subset ratio must lie in (0, 1], got {ratio!r}")
    top = math.floor(10 * (1 - ratio) + _EPS)
    return [round(0.1 * k, 1) for k in range(top + 1)]


def window(order: torch.Tensor, ipc: int, beta: float, reading: str = "class-fraction") -> torch.Tensor:
    """The slice order[s : s + ipc] of one class's hardest-first ``order``."""
    s = window_start(beta, len(order), ipc, reading)
    return order[s:s + ipc]


def window_indices(scores: Scores, split: Split, ipc: int, beta: float,
                   reading: str = "class-fraction") -> torch.Tensor:
    """SelMatch's sliding-window subset: each class's window, hardest first within it.

    Used in: the sliding-window figure (SelMatch Fig. 3), SelMatch's initialisation.
    """
    return torch.cat([window(scores.hardest_first(split, c), ipc, beta, reading)
                      for c in range(split.num_classes)])


def random_indices(split: Split, ipc: int, seed: int) -> torch.Tensor:
    """``ipc`` images per class drawn uniformly without replacement from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c, idx in enumerate(split.per_class_indices()):
        check_ipc(ipc, len(idx), c)
        picks.append(idx[torch.randperm(len(idx), generator=g)[:ipc]])
    return torch.cat(picks)


def hardest_first_indices(scores: Scores, split: Split, ipc: int) -> torch.Tensor:
    """The ``ipc`` hardest images of each class (the "Forgetting" baseline with forgetting scores)."""
    return torch.cat([window(scores.hardest_first(split, c), ipc, 0.0)
                      for c in range(split.num_classes)])


def herding_indices(features: torch.Tensor, labels: torch.Tensor, ipc: int) -> torch.Tensor:
    """Herding (Welling 2009) per class in a given feature space: greedily pick the example that
    keeps the running mean of the picks closest to the class mean.

    ``features`` (N, d) for the whole split. The caller chooses (and the page names) the feature
    space, e.g. the penultimate layer of a network trained on the full set.
    """
    picks = []
    for c in range(int(labels.max()) + 1):
        idx = torch.nonzero(labels == c).flatten()
        check_ipc(ipc, len(idx), c)
        f = features[idx].double()
        target, total = f.mean(0), torch.zeros_like(f[0])
        available = torch.ones(len(idx), dtype=torch.bool)
        chosen = []
        for k in range(1, ipc + 1):
            dist = ((target - (total + f) / k) ** 2).sum(1)   # (n_c,) mean after adding each candidate
            dist[~available] = float("inf")
            j = int(dist.argmin())
            chosen.append(j), available.__setitem__(j, False)
            total += f[j]
        picks.append(idx[torch.tensor(chosen)])
    return torch.cat(picks)


@dataclass(frozen=True)
class WindowPartition:
    """SelMatch's split of each class's window: ``select`` (frozen, harder part) and ``distill``
    (optimised, easier part), both class-major index tensors into the split."""
    select: torch.Tensor
    distill: torch.Tensor
    distill_per_class: int
    select_per_class: int


def partition_window(scores: Scores, split: Split, ipc: int, beta: float, alpha: float,
                     reading: str = "class-fraction") -> WindowPartition:
    """SelMatch §4.3: cpc = ⌊IPC·α⌋ distilled and spc = IPC − cpc selected per class; inside each
    window the harder ``spc`` images are selected (kept real) and the easier ``cpc`` are distilled.
    """
    check_alpha(alpha)
    cpc = math.floor(ipc * alpha + _EPS)
    spc = ipc - cpc
    select, distill = [], []
    for c in range(split.num_classes):
        w = window(scores.hardest_first(split, c), ipc, beta, reading)
        select.append(w[:spc]), distill.append(w[spc:])
    return WindowPartition(torch.cat(select), torch.cat(distill), cpc, spc)
