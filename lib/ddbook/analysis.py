"""Analyses behind SelMatch's Fig. 5: features, a t-SNE map, and per-example gradient norms.

- :func:`features`: penultimate-layer features (``model.embed``) in batches, eval mode.
- :func:`tsne`: a 2-D t-SNE map (scikit-learn), seeded.
- :func:`per_example_grad_norms`: ‖∇θ CE(f_θ(x_i), y_i)‖₂ for each example, computed with
  ``torch.func`` (vmap over per-example gradients) — Fig. 5(b) compares these on D_select and
  D_distill while a network trains on the synthetic set.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

__all__ = ["features", "tsne", "per_example_grad_norms"]


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
