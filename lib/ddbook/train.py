"""The shared training loop: one epoch of mini-batch SGD on tensors held on the device, prediction,
accuracy, and the soft cross-entropy of learnable labels.

Every network the book trains (experts, evaluation networks, full-data baselines) goes through
:func:`train_epoch`. Data stays on the device; the only host-device synchronisation per epoch is
the one the caller makes when it reads the returned loss. The shuffle and every augmentation draw
come from one explicit ``torch.Generator`` (a CPU generator is recommended: its state can be saved
in a checkpoint, and drawing from it never waits on the GPU).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .augment import AUGMENT_MODES, augment

__all__ = ["default_device", "progress", "soft_cross_entropy", "classification_loss", "sgd_step",
           "GSAMStep", "check_labels", "train_epoch", "predict", "correct", "accuracy"]

StepFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.optim.Optimizer], torch.Tensor]


def default_device() -> torch.device:
    """CUDA when available, else the CPU (STYLE.md §3.13: one device, passed explicitly)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def progress(iterable: Iterable, desc: str, total: int | None = None, **kwargs):
    """A text progress bar over ``iterable``; none when ``TQDM_DISABLE`` is set to anything but 0.

    Plain ``tqdm`` (not ``tqdm.auto``): the book keeps ipywidgets out of its environment, and
    ``tqdm.auto`` warns about that in every notebook. tqdm >= 4.66 reads ``TQDM_DISABLE`` itself;
    older versions (on the GPU machines) do not, so it is checked here. Used in: experts, evaluate.
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false"):
        return _Tracked(iterable, desc, total)
    from tqdm import tqdm

    return _Tracked(tqdm(iterable, desc=desc, total=total, leave=False, disable=False, **kwargs),
                    desc, total)


ACTIVE: dict[str, list] = {}   # loops running now, outermost first: desc -> [steps done, total]


class _Tracked:
    """``inner`` (an iterable or a tqdm bar, whose attributes it passes through), counting the
    finished steps in ``ACTIVE`` (read by the command line's Ctrl-C message: where a run stopped)."""

    def __init__(self, inner, desc: str, total: int | None):
        self.inner, self.desc, self.total = inner, desc, total

    def __iter__(self):
        ACTIVE.pop(self.desc, None)
        ACTIVE[self.desc] = entry = [0, self.total]
        for item in self.inner:
            yield item
            entry[0] += 1
        ACTIVE.pop(self.desc, None)

    def __getattr__(self, name):
        return getattr(self.inner, name)



def where_stopped() -> str:
    """The loops that were running, e.g. ``distill after 12 of 150 steps``, or ``""``."""
    return ", in ".join(f"{d} after {n} of {t if t is not None else '?'} steps"
                        for d, (n, t) in ACTIVE.items())


def soft_cross_entropy(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_k softmax(target)_k * log_softmax(logits)_k``.

    Source: DATM ``distill/DATM.py`` soft labels (papers.md §3.2): the learnable labels are logits,
    turned into a distribution by a softmax at temperature 1. Used in: classification_loss.
    """
    return -(F.softmax(target_logits, dim=1) * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with hard labels (int ``(B,)``), soft cross-entropy with logits ``(B, K)``."""
    if labels.is_floating_point():
        return soft_cross_entropy(logits, labels)
    return F.cross_entropy(logits, labels)


def sgd_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """One plain optimiser step on the batch ``(x, y)``; returns the detached loss (no sync)."""
    loss = classification_loss(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


@dataclass(frozen=True)
class GSAMStep:
    """One GSAM step (Zhuang et al. 2022), as FTD/DATM train experts: a train_epoch ``step``.

    Source: papers.md §3.1 (FTD ``buffer/gsam``): gradient g at w; ascend to w + e with
    e = rho * T^2 g / ||T g|| (T = |w| when adaptive, else 1); gradient g_p there; step the base
    optimiser on g_p - alpha * (g - proj_{g_p} g). Both passes see the same augmented batch; the
    perturbed pass leaves BatchNorm running statistics untouched.
    Used in: experts (ExpertConfig(gsam=True)).
    """
    rho: float = 0.01
    alpha: float = 0.3
    adaptive: bool = True

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 optimizer: torch.optim.Optimizer) -> torch.Tensor:
        params = [p for p in model.parameters() if p.requires_grad]
        loss = classification_loss(model(x), y)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            scales = [p.abs() if self.adaptive else torch.ones_like(p) for p in params]
            norm = torch.linalg.vector_norm(torch.stack(
                [torch.linalg.vector_norm(s * g) for s, g in zip(scales, grads)]))
            saved = [p.clone() for p in params]
            for p, s, g in zip(params, scales, grads):
                p.add_(s * s * g * (self.rho / (norm + 1e-12)))
        with _frozen_bn_stats(model):
            grads_p = torch.autograd.grad(classification_loss(model(x), y), params)
        with torch.no_grad():
            inner = sum((g * gp).sum() for g, gp in zip(grads, grads_p))
            coef = inner / (sum((gp * gp).sum() for gp in grads_p) + 1e-12)
            for p, old, g, gp in zip(params, saved, grads, grads_p):
                p.copy_(old)  # restore exactly, not p - e (rounding)
                p.grad = gp - self.alpha * (g - coef * gp)
        optimizer.step()
        return loss.detach()


@contextmanager
def _frozen_bn_stats(model: nn.Module):
    """BatchNorm layers use batch statistics inside, but do not update their running ones."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom


def check_labels(images: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None,
                 what: str = "training set") -> None:
    """Raise ValueError unless images are float (N, C, H, W) and labels hard (N,) or soft (N, K)."""
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"{what}: images must be float (N, C, H, W), normalised; "
                         f"got {images.dtype} {tuple(images.shape)}")
    n = images.shape[0]
    if n == 0:
        raise ValueError(f"{what} is empty: it needs at least one image")
    soft = labels.is_floating_point()
    if labels.shape[0] != n or labels.dim() != (2 if soft else 1):
        raise ValueError(f"{what}: labels must be hard int64 ({n},) or soft logits ({n}, K) for "
                         f"{n} images; got {labels.dtype} {tuple(labels.shape)}")
    if num_classes is None:
        return
    if soft and labels.shape[1] != num_classes:
        raise ValueError(f"{what}: soft labels have {labels.shape[1]} classes, the network "
                         f"{num_classes}")
    if not soft and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"{what}: hard labels must lie in [0, {num_classes}), got "
                         f"[{int(labels.min())}, {int(labels.max())}]")


def train_epoch(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                optimizer: torch.optim.Optimizer, batch_size: int, generator: torch.Generator,
                augment_mode: str = "dsa", is_selected: torch.Tensor | None = None,
                scheduler=None, step: StepFn = sgd_step) -> torch.Tensor:
    """Train ``model`` for one epoch over a fresh shuffle; return the mean loss as a 0-d tensor.

    Source: the reference ``epoch('train', ...)`` (MTT/DATM/SelMatch ``utils.py``): shuffled
    mini-batches, the last one smaller (drop_last off), augmentation per batch, one step each.
    ``images`` (N, C, H, W) are float and normalised; ``labels`` hard int64 (N,) or soft logits
    (N, K). The permutation and the augmentation draws come from ``generator`` only, so the same
    generator state gives the same epoch. ``scheduler`` (if any) is stepped once, after the epoch.
    The loss stays on the device: ``float()`` it when you need it.
    Used in: experts, evaluate.
    """
    if augment_mode not in AUGMENT_MODES:
        raise ValueError(f"unknown augmentation mode {augment_mode!r}; valid: {list(AUGMENT_MODES)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if labels.device != images.device:
        raise ValueError(f"images are on {images.device} but labels on {labels.device}")
    model.train()
    n = images.shape[0]
    order = torch.randperm(n, generator=generator, device=generator.device).to(images.device)
    total = torch.zeros((), device=images.device)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]  # (B,)
        sel = None if is_selected is None else is_selected[idx]
        x = augment(images[idx], augment_mode, generator, sel)  # (B, C, H, W)
        total += step(model, x, labels[idx], optimizer) * idx.numel()
    if scheduler is not None:
        scheduler.step()
    return total / n


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits ``(N, K)`` of ``model`` in eval mode (BN uses running statistics), in batches.

    The model's train/eval mode is restored afterwards. Used in: correct, accuracy, DATM labels.
    """
    was_training = model.training
    model.eval()
    try:
        starts = range(0, len(images), batch_size)
        return torch.cat([model(images[i:i + batch_size]) for i in starts])  # (N, K)
    finally:
        model.train(was_training)


def correct(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
            batch_size: int = 1024) -> torch.Tensor:
    """Bool ``(N,)`` on the device: whether each example's argmax prediction equals its label."""
    return predict(model, images, batch_size).argmax(dim=1) == labels.to(images.device)


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 1024) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on ``(images, labels)`` (one host sync)."""
    return float(correct(model, images, labels, batch_size).float().mean())
