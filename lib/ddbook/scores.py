"""Published per-example difficulty scores, mapped onto a loaded dataset's training order.

The files (``../shared/data/scores``, or ``$DDBOOK_SCORES``) are in the **original** CIFAR order.
C-score files carry that order's label sequence; forgetting files do not, so they are mapped with
the label sequence of the same dataset's C-score file (both come from the same original order).

Mapping (``../shared/data/README.md``): the example of class c whose rank within its class is k
sits, in the original order, at the k-th position where the label sequence equals c. Each
:class:`~ddbook.data.Split` records that rank, so the mapping works for the class-sorted JPEG
order and for torchvision's original order alike.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import paths
from .data import Dataset, Split

__all__ = ["Scores", "ScoreMismatchError", "load_published_scores", "map_to_split", "PUBLISHED",
           "ORIGINAL_LABELS_SHA256", "check_original_labels"]


class ScoreMismatchError(ValueError):
    """A score file does not fit the dataset (length, class counts or label sequence)."""


# (dataset, score) -> (file name, which end is hard, citation)
PUBLISHED = {
    ("cifar10", "cscore"): ("cscores_CIFAR10.npz", "low", "Jiang et al. 2021 (pluskid/structural-regularity)"),
    ("cifar100", "cscore"): ("cscores_CIFAR100.npz", "low", "Jiang et al. 2021 (pluskid/structural-regularity)"),
    ("cifar10", "forgetting"): ("forgetting_CIFAR10.npy", "high", "SelMatch scores/ (Yongalls/SelMatch)"),
    ("cifar100", "forgetting"): ("forgetting_CIFAR100.npy", "high", "SelMatch scores/ (Yongalls/SelMatch)"),
}


# SHA-256 of the original training-order label sequence (int64, little-endian) of each dataset,
# read from the published C-score files (whose first labels, 6 9 9 4 1 1 2 7 8 3 for CIFAR-10 and
# 19 29 0 11 1 86 90 28 23 31 for CIFAR-100, are the datasets' known first training labels). The
# JPEG layout keeps no original order, so this is how a shuffled label sequence is caught there.
ORIGINAL_LABELS_SHA256 = {
    "cifar10": "f5cfe00b0f00968c0cc5ff3b1d2de51b10e33efa277c2986f4e0fa63e58c9f4f",
    "cifar100": "8bf4935e7c77a3096270043c6f3b221b6ecb9c63d1a08608e9af66cff17e977a",
}


def check_original_labels(labels: np.ndarray, dataset: str, what: str) -> None:
    """Refuse a label sequence that is not ``dataset``'s original training order."""
    expected = ORIGINAL_LABELS_SHA256.get(dataset)
    digest = hashlib.sha256(np.asarray(labels, "<i8").tobytes()).hexdigest()
    if expected is not None and digest != expected:
        raise ScoreMismatchError(
            f"{what}: its label sequence is not {dataset}'s original training order (sha256 "
            f"{digest[:12]}, expected {expected[:12]}): the file is shuffled, re-sorted or of "
            f"another dataset, so its scores cannot be mapped onto the images. Fix: use the "
            f"published file unchanged (see ../shared/data/README.md) or point DDBOOK_SCORES at it")


@dataclass(frozen=True, eq=False)
class Scores:
    """Per-example scores aligned with a split: ``values`` float64 ``(N,)``; ``hard`` is "low"/"high"."""
    name: str
    values: torch.Tensor
    hard: str
    source: str

    def difficulty(self) -> torch.Tensor:
        """The scores signed so that larger always means harder."""
        return -self.values if self.hard == "low" else self.values

    def hardest_first(self, split: Split, c: int) -> torch.Tensor:
        """Indices of class ``c``'s examples, hardest first (ties broken by original rank)."""
        idx = split.class_indices(c)          # already in original within-class order
        order = torch.argsort(self.difficulty()[idx], descending=True, stable=True)
        return idx[order]


def _find(file_name: str) -> Path:
    tried = [d / file_name for d in paths.scores_dirs()]
    for p in tried:
        if p.exists():
            return p
    lines = "\n".join(f"  - {p}" for p in tried)
    env = paths.env_path("DDBOOK_SCORES")
    fix = f"Fix: put {file_name} in DDBOOK_SCORES={env}, point DDBOOK_SCORES at the folder that " \
          f"holds it, or unset it to use the default places" if env is not None else \
          "Fix: point DDBOOK_SCORES at the folder that holds it."
    raise FileNotFoundError(f"score file {file_name} not found. Looked at:\n{lines}\n{fix}")


def map_to_split(values: np.ndarray, file_labels: np.ndarray, split: Split, what: str) -> torch.Tensor:
    """Reorder original-order ``values`` onto ``split`` using the original ``file_labels``."""
    values, file_labels = np.asarray(values), np.asarray(file_labels)
    labels = split.labels.numpy()
    if len(values) != len(file_labels) or len(values) != len(labels):
        raise ScoreMismatchError(
            f"{what}: {len(values)} scores and {len(file_labels)} labels for a split of {len(labels)} "
            f"examples. Fix: use the score file of this dataset's training set (full, not a subset).")
    file_counts = np.bincount(file_labels, minlength=split.num_classes)
    counts = np.bincount(labels, minlength=split.num_classes)
    if len(file_counts) != len(counts) or (file_counts != counts).any():
        raise ScoreMismatchError(f"{what}: class counts {file_counts.tolist()} in the score file differ "
                                 f"from the dataset's {counts.tolist()}. Fix: use the file of this dataset.")
    if split.order == "original" and (file_labels != labels).any():
        first = int(np.flatnonzero(file_labels != labels)[0])
        raise ScoreMismatchError(f"{what}: label sequence differs from the dataset's at index {first} "
                                 f"(file {file_labels[first]}, dataset {labels[first]}). Fix: use the "
                                 f"score file in the dataset's original order.")
    positions = [np.flatnonzero(file_labels == c) for c in range(split.num_classes)]
    ranks = split.class_rank.numpy()
    orig = np.empty(len(labels), np.int64)
    for c in range(split.num_classes):
        where = np.flatnonzero(labels == c)
        orig[where] = positions[c][ranks[where]]
    return torch.from_numpy(values[orig].astype(np.float64))


def load_published_scores(dataset: Dataset, score: str = "cscore") -> Scores:
    """The published ``score`` ("cscore" or "forgetting") of ``dataset``'s training images, aligned.

    Used in: the difficulty-scores notebook, selection (sliding window), the SelMatch figures.
    """
    key = (dataset.name, score)
    if key not in PUBLISHED:
        valid = sorted(s for d, s in PUBLISHED if d == dataset.name)
        raise ValueError(f"no published {score!r} scores for {dataset.name}; choose one of {valid}")
    file_name, hard, cite = PUBLISHED[key]
    path = _find(file_name)
    labels_file = path if path.suffix == ".npz" else _find(PUBLISHED[(dataset.name, "cscore")][0])
    try:
        with np.load(labels_file) as blob:
            labels = blob["labels"]
            values = blob["scores"] if labels_file == path else np.load(path)
    except Exception as e:  # a truncated or foreign file: numpy raises several types
        raise ScoreMismatchError(f"{path if labels_file == path else f'{path} or {labels_file}'}"
                                 f" cannot be read ({type(e).__name__}: {e}). Fix: replace it "
                                 f"with the published file (see ../shared/data/README.md)") from None
    check_original_labels(labels, dataset.name, str(labels_file))
    mapped = map_to_split(values, labels, dataset.train, f"{path.name}")
    return Scores(score, mapped, hard, f"{path.name}: {cite}")
