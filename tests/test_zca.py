"""ZCA whitening: the formula, the round trip, and whitening on real CIFAR-10 images."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ddbook import zca as zca_mod
from ddbook.zca import fit_zca


def test_matches_the_formula_on_a_small_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(400, 3, 2, 2, generator=g) * torch.linspace(0.2, 1.0, 12).view(1, 3, 2, 2)
    z = fit_zca(x, eps=0.1)
    flat = x.reshape(400, -1).double().numpy()
    mu = flat.mean(0)
    cov = (flat - mu).T @ (flat - mu) / (len(flat) - 1)
    s, u = np.linalg.eigh(cov)
    expected = u @ np.diag((s + 0.1) ** -0.5) @ u.T
    assert np.allclose(z.transform.numpy(), expected, atol=1e-5), "T = U (S+eps)^-1/2 U^T"
    assert np.allclose(z.mean.numpy(), mu, atol=1e-6), "mean of the fitting data"


def test_round_trip_on_cifar(cifar10):
    # 2,000 real images, centre 16x16 crops (D = 768) to keep the eigendecomposition fast on 2 cores
    x = cifar10.train.images[::25, :, 8:24, 8:24].float() / 255.0
    z = fit_zca(x, eps=0.1)
    white = z(x)
    assert white.shape == x.shape
    back = z.invert(white)
    err = (back - x).abs().max().item()
    assert err < 1e-3, f"ZCA inverse must undo the transform (max error {err:.2e})"
    # whitening: the covariance of the whitened data has eigenvalues S/(S+eps) < 1
    flat = white.reshape(len(x), -1).double()
    flat = flat - flat.mean(0)
    v = torch.ones(flat.shape[1], dtype=torch.float64)
    for _ in range(100):                                    # power iteration on the covariance
        v = flat.T @ (flat @ v) / (len(x) - 1)
        top = v.norm().item()
        v = v / top
    assert 0.9 < top < 1.0, f"the top whitened variance should be just below 1, got {top:.3f}"


def test_bad_eps_and_too_few_images():
    with pytest.raises(ValueError, match="positive"):
        fit_zca(torch.rand(10, 3, 2, 2), eps=0)
    with pytest.raises(ValueError, match="two images"):
        fit_zca(torch.rand(1, 3, 2, 2))


def test_cached_zca_reuses_the_fit(tmp_path, monkeypatch):
    monkeypatch.setenv("DDBOOK_CACHE", str(tmp_path))
    imgs = (torch.rand(300, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    first = zca_mod.cached_zca(imgs)
    calls = []
    monkeypatch.setattr(zca_mod, "fit_zca", lambda *a, **k: calls.append(1))
    second = zca_mod.cached_zca(imgs)
    assert not calls, "the second call must read the cache, not refit"
    assert torch.equal(first.transform, second.transform)
