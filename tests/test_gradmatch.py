"""Tests for ddbook.gradmatch: the matching loss against finite differences, multi-formation,
the siamese draw, the matched parameters, resume and the clamp."""
from __future__ import annotations

import pytest
import torch

from ddbook.augment import DSA_OPS, sample_dsa
from ddbook.gradmatch import (GMConfig, GMLoop, class_matching_loss, decode, distill_gm,
                              evaluation_set, grad_distance, idc_lr_img, matched_params,
                              mosaic_init, siamese_pair)
from ddbook.networks import get_network

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = "cpu"


def tiny_net(dtype=torch.float64, seed=0):
    return get_network("ConvNet", 2, (8, 8), width=4, depth=2, seed=seed, device=CPU).to(dtype)


def tiny_real(n=24, classes=2, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.arange(n) % classes


@pytest.mark.parametrize("distance,factor,op", [("mse", 2, "color"), ("mse", 1, "scale"),
                                                ("l1", 2, "crop")])
def test_matching_loss_gradient_matches_finite_differences(distance, factor, op):
    g = torch.Generator().manual_seed(1)
    model = tiny_net()
    cfg = GMConfig(factor=factor, distance=distance)
    real = torch.rand(6, 3, 8, 8, generator=g, dtype=torch.float64)
    syn = torch.rand(3, 3, 8, 8, generator=g, dtype=torch.float64).requires_grad_()
    draw = sample_dsa(1, (8, 8), g, op, siamese=True)
    norm = lambda x: (x - 0.5) / 0.25  # noqa: E731
    loss = class_matching_loss(model, real, syn, 1, cfg, draw, norm)
    grad, = torch.autograd.grad(loss, syn)
    assert float(grad.abs().sum()) > 0, "the matching loss does not depend on the images"
    v = torch.randn(syn.shape, generator=g, dtype=torch.float64)
    eps = 1e-6
    f = [float(class_matching_loss(model, real, (syn + s * eps * v).detach(), 1, cfg, draw,
                                 norm).detach())
         for s in (1, -1)]
    fd, an = (f[0] - f[1]) / (2 * eps), float((grad * v).sum())
    assert abs(fd - an) <= 1e-5 * max(1.0, abs(fd)), \
        f"{distance}, factor {factor}, {op}: autograd {an:.10g} vs finite differences {fd:.10g}"


def test_fused_float32_path_agrees_with_float64_stock_modules():
    """On the CPU, float32 ConvNets run a fused norm-ReLU-pool op: its double backward agrees."""
    g = torch.Generator().manual_seed(2)
    real = torch.rand(8, 3, 8, 8, generator=g)
    syn = torch.rand(2, 3, 8, 8, generator=g)
    cfg = GMConfig(factor=2)
    grads = []
    for dtype in (torch.float32, torch.float64):
        s = syn.to(dtype).requires_grad_()
        loss = class_matching_loss(tiny_net(dtype), real.to(dtype), s, 0, cfg, None)
        grads.append(torch.autograd.grad(loss, s)[0].double())
    err = float((grads[0] - grads[1]).norm() / grads[1].norm())
    assert err < 1e-4, f"float32 fused vs float64 stock gradients differ by {err:.2e} (relative)"


@pytest.mark.parametrize("distance", ["mse", "l1"])
def test_fused_synthetic_branch_equals_the_stock_modules(distance):
    """impl="auto" (fused_forward: closed-form double backward) against impl="stock" (the module):
    the same loss and the same gradient wrt the images, to float32 rounding."""
    g = torch.Generator().manual_seed(3)
    model = get_network("ConvNet", 10, (16, 16), width=8, depth=3, seed=0, device=CPU)
    real = torch.rand(6, 3, 16, 16, generator=g)
    syn = torch.rand(3, 3, 16, 16, generator=g)
    draw = sample_dsa(1, (16, 16), g, "color_crop_cutout", siamese=True)
    cfg = GMConfig(factor=2, distance=distance)
    out = {}
    for impl in ("stock", "auto"):
        s = syn.clone().requires_grad_()
        loss = class_matching_loss(model, real, s, 4, cfg, draw, lambda x: (x - 0.5) / 0.25,
                                   impl=impl)
        out[impl] = (float(loss.detach()), torch.autograd.grad(loss, s)[0])
    (ls, gs), (la, ga) = out["stock"], out["auto"]
    assert abs(ls - la) <= 1e-5 * abs(ls)
    err = float((gs - ga).norm() / gs.norm())
    assert err < 1e-5, f"fused and stock image gradients differ by {err:.2e} (relative)"


def test_fused_forward_covers_exactly_the_instance_norm_convnet_on_cpu_float32():
    from ddbook.gradmatch import fused_forward
    net = get_network("ConvNet", 10, (16, 16), width=8, depth=2, seed=0, device=CPU)
    x = torch.rand(4, 3, 16, 16)
    f = fused_forward(net)
    assert f is not None and torch.allclose(f(x), net(x), atol=1e-6)
    # batch norm (running statistics are a module side effect), float64 and non-ConvNets: stock
    assert fused_forward(get_network("ConvNetBN", 10, (16, 16), width=8, depth=2, seed=0)) is None
    assert fused_forward(net.double()) is None
    assert fused_forward(get_network("AlexNet", 10, (32, 32), seed=0)) is None
    with pytest.raises(ValueError, match="unknown impl"):
        class_matching_loss(net.float(), x, x[:1], 0, GMConfig(), None, impl="fast")


def test_decode_shapes_order_and_mosaic_round_trip():
    imgs = torch.rand(3, 3, 8, 8)
    labels = torch.tensor([0, 1, 2])
    out, lab = decode(imgs, labels, 2)
    assert out.shape == (12, 3, 8, 8) and lab.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    same, lab1 = decode(imgs, labels, 1)
    assert same is imgs and lab1 is labels, "factor 1 (IDC-I) must not decode"
    odd, _ = decode(torch.rand(2, 3, 9, 9), torch.tensor([0, 1]), 2)
    assert odd.shape == (8, 3, 9, 9), "a side not divisible by the factor is padded, then tiled"
    # a mosaic of four flat images decodes back to those flat images, in order
    flat = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 3, 8, 8) / 8
    stored = mosaic_init(flat, 2)
    assert stored.shape == (2, 3, 8, 8)
    back, _ = decode(stored, torch.tensor([0, 0]), 2)
    assert torch.allclose(back, flat, atol=1e-6), "decode(mosaic_init(x)) must give x back"


def test_siamese_draw_is_identical_on_both_batches():
    g = torch.Generator().manual_seed(3)
    real = torch.rand(5, 3, 16, 16, generator=g)
    syn = real[[3, 1]].clone()                       # the same pictures in another batch
    for op in DSA_OPS:
        draw = sample_dsa(1, (16, 16), g, op, siamese=True)
        ra, sa = siamese_pair(real, syn, draw)
        assert torch.equal(ra[[3, 1]], sa), f"op {op}: real and synthetic got different transforms"
        assert not torch.equal(ra, real) or op in ("flip", "crop"), f"op {op} did nothing"
    with pytest.raises(ValueError, match="siamese"):
        siamese_pair(real, syn, sample_dsa(5, (16, 16), g, "crop"))


def test_matched_parameters_skip_1d_and_classifier_by_default():
    model = tiny_net()
    names = [n for n, _ in matched_params(model)]
    assert names == ["features.0.weight", "features.4.weight"], names
    every = [n for n, _ in matched_params(model, match_bias=True, match_fc=True)]
    assert every == [n for n, _ in model.named_parameters()]
    assert "classifier.weight" in [n for n, _ in matched_params(model, match_fc=True)]


def test_distances():
    a, b = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])], [torch.zeros(2), torch.ones(1, 1)]
    assert float(grad_distance(a, b, "mse")) == 1 + 4 + 4
    assert float(grad_distance(a, b, "l1")) == 1 + 2 + 2
    with pytest.raises(ValueError, match="mse"):
        GMConfig(distance="cos")
    assert idc_lr_img(50) == pytest.approx(0.025)


def small_run(tmp=None, stop_after=None, iterations=3, factor=2):
    x, y = tiny_real()
    init = mosaic_init(x[:4 * factor ** 2] if factor > 1 else x[:4], factor)
    labels = torch.tensor([0, 1, 0, 1])
    cfg = GMConfig(width=4, depth=2, factor=factor, inner_loop=2, batch_real=4, n_data=8,
                   net_batch=4, lr_img=0.5)
    return init, distill_gm(init, labels, x, y, cfg, GMLoop(iterations=iterations,
                                                            checkpoint_every=1, seed=5),
                            mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), folder=tmp,
                            device=CPU, stop_after=stop_after)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    _, full = small_run()
    _, part = small_run(tmp_path, stop_after=1)
    assert part.iterations_done == 1 and not part.finished
    _, resumed = small_run(tmp_path)
    assert resumed.finished and resumed.iterations_done == 3
    assert torch.equal(resumed.images, full.images), "resumed images differ from uninterrupted"
    assert resumed.history["loss"] == full.history["loss"]


def test_images_move_and_stay_in_pixel_range():
    init, res = small_run()
    assert not torch.equal(res.images, init), "gradient matching did not change the images"
    assert float(res.images.min()) >= 0 and float(res.images.max()) <= 1, "not clamped to [0, 1]"
    s = evaluation_set(res.images, res.labels, 2, (0.5,) * 3, (0.25,) * 3)
    assert len(s) == 16 and s.labels.tolist() == [0] * 4 + [1] * 4 + [0] * 4 + [1] * 4
    assert float(s.images.min()) >= -2 - 1e-6 and float(s.images.max()) <= 2 + 1e-6


def test_bad_inputs_name_the_fix():
    x, y = tiny_real()
    with pytest.raises(ValueError, match="uint8 / 255"):
        distill_gm(x[:2], y[:2], (x - 0.5) / 0.25, y, GMConfig(width=4, depth=2),
                   GMLoop(iterations=1), device=CPU)
    with pytest.raises(ValueError, match="no real examples"):
        distill_gm(x[:2], torch.tensor([0, 1]), x, y, GMConfig(width=4, depth=2),
                   GMLoop(iterations=1), match_pool=torch.tensor([0, 2]), device=CPU)


def test_image_steps_lower_the_matching_loss_of_a_fixed_network():
    """The update goes downhill: SGD on the images along the loss's gradient lowers it."""
    g = torch.Generator().manual_seed(4)
    model = tiny_net(torch.float32)
    real = torch.rand(16, 3, 8, 8, generator=g)
    syn = torch.rand(2, 3, 8, 8, generator=g).requires_grad_()
    cfg = GMConfig(factor=2)
    opt = torch.optim.SGD([syn], lr=1.0, momentum=0.5)
    losses = []
    for _ in range(30):
        loss = class_matching_loss(model, real, syn, 0, cfg, None)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], f"matching loss {losses[0]:.3g} -> {losses[-1]:.3g}"
