"""Our own per-example difficulty scores, from training runs: forgetting events and EL2N.

- Forgetting (Toneva et al., ICLR 2019; papers.md §6): over the presentations of an example in one
  run, count the transitions correct → incorrect; an example never classified correctly in a run
  counts as many events as it had presentations. Averaged over runs here (SelMatch's shipped file
  is such an average: its values are multiples of 1/5). High = hard.
- EL2N (Paul et al., NeurIPS 2021; papers.md §6): ‖softmax(f(x)) − onehot(y)‖₂ from a network
  early in training, averaged over runs. High = hard.

The functions here are pure (histories and logits in, scores out); the training runs that produce
their inputs live with the command that computes scores.
"""
from __future__ import annotations

import torch

__all__ = ["forgetting_events", "forgetting_scores", "el2n", "el2n_scores"]


def forgetting_events(correct: torch.Tensor) -> torch.Tensor:
    """Forgetting count per example of one run; ``correct`` is bool ``(presentations, N)``."""
    if correct.dim() != 2 or correct.dtype != torch.bool:
        raise ValueError("correct must be a bool tensor of shape (presentations, N)")
    c = correct.to(torch.int8)
    events = ((c[:-1] == 1) & (c[1:] == 0)).sum(0)            # (N,) correct → incorrect
    never = ~correct.any(0)
    return torch.where(never, torch.full_like(events, correct.shape[0]), events).float()


def forgetting_scores(runs: list[torch.Tensor]) -> torch.Tensor:
    """Mean forgetting count over runs (each a bool ``(presentations, N)`` history)."""
    if not runs:
        raise ValueError("forgetting_scores needs at least one run's history")
    return torch.stack([forgetting_events(r) for r in runs]).mean(0)


def el2n(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """‖softmax(logits) − onehot(labels)‖₂ per example; logits ``(N, C)``, labels ``(N,)``."""
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits must be (N, C) and labels (N,), got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    p = torch.softmax(logits.double(), dim=1)
    p[torch.arange(len(labels)), labels] -= 1.0
    return p.norm(dim=1)


def el2n_scores(logits_per_run: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Mean EL2N over runs."""
    if not logits_per_run:
        raise ValueError("el2n_scores needs at least one run's logits")
    return torch.stack([el2n(l, labels) for l in logits_per_run]).mean(0)
