"""Analyses behind SelMatch's Fig. 5: features, a t-SNE map, and per-example gradient norms.

- :func:`features`: penultimate-layer features (``model.embed``) in batches, eval mode.
- :func:`tsne`: a 2-D t-SNE map (scikit-learn), seeded.
- :func:`per_example_grad_norms`: ‖∇θ CE(f_θ(x_i), y_i)‖₂ for each example, computed with
  ``torch.func`` (vmap over per-example gradients) — Fig. 5(b) compares these on D_select and
  D_distill while a network trains on the synthetic set;
- :class:`GradNormRecorder`: the ``epoch_hook`` of :func:`ddbook.evaluate.evaluate_selmatch` that
  records, per evaluation network, the mean of those norms on each group (D_select, D_distill) at
  chosen epochs — the curves of Fig. 5(b).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

__all__ = ["features", "tsne", "per_example_grad_norms", "GradNormRecorder", "spread_epochs"]


@torch.no_grad()
def features(model: nn.Module, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Penultimate features ``(N, d)`` of float, normalised ``images`` (model in eval mode)."""
    was = model.training
    model.eval()
    try:
        return torch.cat([model.embed(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    finally:
        model.train(was)


def tsne(points: torch.Tensor, seed: int = 0, perplexity: float = 30.0,
         max_iter: int = 1000) -> np.ndarray:
    """A 2-D t-SNE embedding ``(N, 2)`` of ``points`` (scikit-learn, PCA init, seeded)."""
    from sklearn.manifold import TSNE

    x = points.detach().cpu().double().numpy()
    perplexity = min(perplexity, max(2.0, (len(x) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                max_iter=max_iter).fit_transform(x)


def per_example_grad_norms(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                           batch_size: int = 256) -> torch.Tensor:
    """‖∇θ loss_i‖₂ per example ``(N,)``, the model in eval mode (BN uses running statistics, so
    each example's gradient is its own)."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss(p, x, y):
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(out, y.unsqueeze(0))

    was = model.training
    model.eval()
    try:
        norms = []
        for i in range(0, len(images), batch_size):
            g = vmap(grad(loss), in_dims=(None, 0, 0))(params, images[i:i + batch_size],
                                                        labels[i:i + batch_size])
            sq = sum(v.flatten(1).pow(2).sum(1) for v in g.values())
            norms.append(sq.sqrt())
        return torch.cat(norms)
    finally:
        model.train(was)


def spread_epochs(total: int, n: int) -> list[int]:
    """About ``n`` 0-based epoch indices in [0, total), log-spaced (dense early, where the norms
    move), always with the first and the last epoch."""
    if total < 1 or n < 1:
        raise ValueError(f"need total >= 1 epochs and n >= 1 points, got {total}, {n}")
    pts = np.unique(np.round(np.geomspace(1, total, num=max(n, 2))).astype(int) - 1)
    return sorted({0, total - 1, *pts.tolist()})


class GradNormRecorder:
    """An ``epoch_hook(run, epoch, model)`` for :func:`ddbook.evaluate.evaluate_selmatch`: after
    the chosen epochs, the mean per-example gradient norm ‖∇θ CE‖₂ (:func:`per_example_grad_norms`,
    BN in eval mode, no augmentation) of the set's images on each group, per evaluation network.

    SelMatch Fig. 5(b): groups {"select": D_select mask, "distill": D_distill mask}. It reads the
    model and writes nothing to it and draws no random number, so the evaluation's numbers are the
    same with and without it. ``epochs``: 0-based epoch indices (None: every epoch).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, groups: dict,
                 epochs=None):
        if labels.is_floating_point():
            raise ValueError("GradNormRecorder needs hard int64 labels (the per-example loss is "
                             "the cross-entropy with the true class)")
        self.groups = {}
        for name, mask in groups.items():
            mask = torch.as_tensor(mask).bool().cpu()
            if mask.shape != (len(images),) or not bool(mask.any()):
                raise ValueError(f"group {name!r}: need a non-empty bool mask of shape "
                                 f"({len(images)},), got {tuple(mask.shape)} with "
                                 f"{int(mask.sum())} members")
            self.groups[name] = mask
        self.images, self.labels = images, labels
        self.epochs = None if epochs is None else {int(e) for e in epochs}
        self.records: dict[int, list[dict]] = {}

    def __call__(self, run: int, epoch: int, model: nn.Module) -> None:
        if self.epochs is not None and epoch not in self.epochs:
            return
        device = next(model.parameters()).device
        norms = per_example_grad_norms(model, self.images.to(device),
                                       self.labels.to(device)).cpu()
        rec = {"epoch": epoch + 1}                       # epochs completed
        rec.update({name: float(norms[m].mean()) for name, m in self.groups.items()})
        self.records.setdefault(run, []).append(rec)

    def trajectories(self) -> dict:
        """``{"epochs": (E,) epochs completed, group: (runs, E) mean norms}`` (numpy)."""
        runs = sorted(self.records)
        if not runs:
            raise ValueError("no gradient norms were recorded: was the recorder passed as "
                             "epoch_hook, and do its epochs lie within the training?")
        out = {"epochs": np.array([r["epoch"] for r in self.records[runs[0]]])}
        for name in self.groups:
            out[name] = np.array([[r[name] for r in self.records[k]] for k in runs])
        return out
