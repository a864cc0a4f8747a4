"""How much of the test set a synthetic set "covers" in a feature space — our operationalisation.

SelMatch's Fig. 1 plots coverage of easy and hard test examples, but its definition was not
recovered (papers.md §9). This book uses its own, labelled as ours on every page (SPEC.md):

- embed train, test and synthetic images with the penultimate layer of one network trained on the
  full training set;
- a test example is *covered* when some synthetic example **of its class** lies within radius r;
- r is the median, over test examples, of the distance to the nearest same-class training example
  (other quantiles q give radii r(q) at which the training set covers a fraction q of the test set);
- easy / hard test groups are the halves (or top / bottom quartiles) of the test set by that
  network's margin (true-class logit minus the largest other logit).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["nearest_same_class", "coverage_radius", "coverage_radii", "coverage",
           "coverage_from_distances", "margin", "difficulty_groups", "Coverage", "group_accuracy",
           "bootstrap_examples"]


def nearest_same_class(query: torch.Tensor, query_labels: torch.Tensor, ref: torch.Tensor,
                       ref_labels: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Distance from each query point to its nearest reference point of the same class ((Nq,); inf
    where the class has no reference point)."""
    out = torch.full((len(query),), float("inf"), dtype=torch.float64)
    for c in query_labels.unique():
        q_idx = torch.nonzero(query_labels == c).flatten()
        r = ref[ref_labels == c].double()
        if len(r) == 0:
            continue
        for start in range(0, len(q_idx), chunk):
            sel = q_idx[start:start + chunk]
            out[sel] = torch.cdist(query[sel].double(), r).min(1).values
    return out


def coverage_radius(test_f, test_y, train_f, train_y, q: float = 0.5) -> float:
    """r(q) = the q-quantile, over test examples, of the distance to the nearest same-class
    training example (q = 0.5: the median, the default radius r); the training set itself covers
    a fraction q of the test set at r(q), whatever the feature space's scale."""
    return coverage_radii(test_f, test_y, train_f, train_y, (q,))[q]


def coverage_radii(test_f, test_y, train_f, train_y, qs) -> dict:
    """{q: r(q)} for several quantiles from one distance computation (:func:`coverage_radius`)."""
    for q in qs:
        if not 0 < q < 1:
            raise ValueError(f"the radius quantile q must lie in (0, 1), got {q}")
    d = nearest_same_class(test_f, test_y, train_f, train_y)
    # linear interpolation between order statistics
    return {q: float(torch.quantile(d, q)) for q in qs}


@dataclass(frozen=True)
class Coverage:
    overall: float                 # fraction of test examples covered
    groups: dict                   # group name -> fraction covered within the group
    covered: torch.Tensor          # bool (N_test,)
    radius: float


def coverage(test_f, test_y, syn_f, syn_y, radius: float, groups: dict | None = None) -> Coverage:
    """Coverage of the test set by a synthetic set; ``groups`` maps names to bool masks over test."""
    return coverage_from_distances(nearest_same_class(test_f, test_y, syn_f, syn_y), radius,
                                   groups)


def coverage_from_distances(nearest: torch.Tensor, radius: float,
                            groups: dict | None = None) -> Coverage:
    """:func:`coverage` from the test examples' distances to their nearest same-class synthetic
    example (``nearest_same_class``), so several radii cost one distance computation."""
    if radius <= 0:
        raise ValueError(f"coverage radius must be positive, got {radius}")
    covered = torch.as_tensor(nearest) <= radius
    per_group = {name: float(covered[mask].float().mean()) for name, mask in (groups or {}).items()}
    return Coverage(float(covered.float().mean()), per_group, covered, float(radius))


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """True-class logit minus the largest other logit (large = easy)."""
    true = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    other = logits.clone()
    other.scatter_(1, labels.view(-1, 1), float("-inf"))
    return true - other.max(1).values


def difficulty_groups(margins: torch.Tensor, mode: str = "halves") -> dict:
    """Easy / hard masks by margin: ``halves`` (above / below the median) or ``quartiles``."""
    if mode == "halves":
        cut = margins.median()
        return {"easy": margins > cut, "hard": margins <= cut}
    if mode == "quartiles":
        lo, hi = torch.quantile(margins.double(), torch.tensor([0.25, 0.75], dtype=torch.float64))
        return {"easy": margins >= hi, "hard": margins <= lo}
    raise ValueError(f"unknown grouping {mode!r}; choose 'halves' or 'quartiles'")


def group_accuracy(correct, groups: dict) -> dict:
    """Per network, the accuracy on each group of test examples: ``correct`` (k, N) bool (network
    r classifies test example j right, :func:`ddbook.evaluate.load_correct`), ``groups`` {name:
    (N,) bool mask}; returns {name: (k,) float array} (fractions)."""
    correct = np.asarray(correct, dtype=bool)
    correct = correct[None] if correct.ndim == 1 else correct
    out = {}
    for name, mask in groups.items():
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != correct.shape[1:]:
            raise ValueError(f"group {name!r} masks {mask.shape[0]} test examples, but the "
                             f"correctness covers {correct.shape[1]}: were they made on another "
                             f"test set?")
        if not mask.any():
            raise ValueError(f"group {name!r} is empty")
        out[name] = correct[:, mask].mean(axis=1)
    return out


def bootstrap_examples(stat, n_examples: int, n_boot: int = 2000, seed: int = 0,
                       chunk: int = 100) -> np.ndarray:
    """``stat(W) -> (b,)`` on ``n_boot`` resamples (with replacement) of the test examples, drawn
    from ``np.random.default_rng(seed)``; ``W`` is (b, n_examples) float: how often each example
    was drawn into each resample (a weighted mean ``W @ x / W.sum(1)`` is the resample's mean of
    x). Every resample weighs every method and ratio alike (a paired bootstrap). Returns the
    (n_boot,) statistics; ``stat(np.ones((1, n)))`` is the statistic on the test set itself."""
    if n_boot < 100:
        raise ValueError(f"n_boot={n_boot} is too few; use at least 100")
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n_examples, (b, n_examples)) + n_examples * np.arange(b)[:, None]
        w = np.bincount(idx.ravel(), minlength=b * n_examples).reshape(b, n_examples)
        out.append(np.asarray(stat(w.astype(np.float64)), dtype=float))
    return np.concatenate(out)
