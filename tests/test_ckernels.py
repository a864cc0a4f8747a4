"""The C loops of the block tail (ddbook/_tail.c through ddbook.ckernels) against the torch ops.

The torch ops (``DDBOOK_KERNELS=torch``) are themselves checked by gradcheck/gradgradcheck in
tests/test_matching.py; here every output and both derivatives of the fused op must agree with
them to float32 rounding, in both norms, with and without the optional adjoints.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from ddbook import ckernels, fused, matching
from ddbook.networks import get_network


@pytest.fixture
def kernels(monkeypatch):
    """Switch DDBOOK_KERNELS; the built library is kept between switches (it does not change)."""
    def use(mode):
        monkeypatch.setenv("DDBOOK_KERNELS", mode)
    return use


def _tail_and_derivatives(batch, shape, seed, adjoints=(True, True, True)):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(*shape, generator=g, requires_grad=True)
    c = shape[1]
    w = (torch.rand(c, generator=g) + 0.5).requires_grad_()
    b = torch.randn(c, generator=g).requires_grad_()
    out = fused._NormReLUPool.apply(z, w, b, 1e-5, batch)[0]
    v = torch.randn(out.shape, generator=g)
    gz, gw, gb = torch.autograd.grad((out * v).sum(), (z, w, b), create_graph=True)
    terms = [(t * torch.randn(t.shape, generator=g)).sum()
             for t, on in zip((gz, gw, gb), adjoints) if on]
    second = torch.autograd.grad(sum(terms), (z, w, b), allow_unused=True)
    return [out, gz, gw, gb] + [s for s in second if s is not None]


@pytest.mark.parametrize("batch", [True, False], ids=["batch-norm", "instance-norm"])
@pytest.mark.parametrize("shape", [(6, 8, 16, 16), (3, 5, 6, 4), (1, 4, 2, 2)])
@pytest.mark.parametrize("adjoints", [(True, True, True), (True, False, False),
                                      (False, True, True)], ids=["all", "z-only", "no-z"])
def test_c_loops_equal_the_torch_ops(kernels, batch, shape, adjoints):
    kernels("torch")
    ref = _tail_and_derivatives(batch, shape, 0, adjoints)
    kernels("c")
    got = _tail_and_derivatives(batch, shape, 0, adjoints)
    assert len(got) == len(ref)
    for r, c in zip(ref, got):
        assert c.shape == r.shape and c.dtype == r.dtype
        assert (c - r).abs().max() <= 1e-5 * r.abs().max() + 1e-7


def test_c_loops_are_taken_and_deterministic(kernels, monkeypatch):
    kernels("c")
    calls = {"forward": 0, "backward": 0, "double": 0}
    for name, key in [("tail_forward", "forward"), ("tail_backward", "backward"),
                      ("tail_double_backward", "double")]:
        def counted(*a, _f=getattr(ckernels, name), _k=key):
            calls[_k] += 1
            return _f(*a)
        monkeypatch.setattr(ckernels, name, counted)
    first = _tail_and_derivatives(True, (4, 8, 8, 8), 3)
    assert calls == {"forward": 1, "backward": 1, "double": 1}
    again = _tail_and_derivatives(True, (4, 8, 8, 8), 3)
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_other_dtypes_and_layouts_take_the_torch_ops(kernels, monkeypatch):
    kernels("c")
    monkeypatch.setattr(ckernels, "tail_forward", lambda *a: pytest.fail("C loops on float64"))
    z = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    w, b = torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    fused._NormReLUPool.apply(z, w, b, 1e-5, False)
    cl = torch.randn(2, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    fused._NormReLUPool.apply(cl, torch.ones(3), torch.zeros(3), 1e-5, True)


def test_student_unroll_agrees_across_kernels(kernels):
    """A 3-step unroll of a width-8 ConvNet-BN student and its gradient wrt the images."""
    model = get_network("ConvNetBN", 4, (16, 16), width=8, depth=2, seed=0, device="cpu")
    student = matching.make_student(model)
    theta0 = torch.cat([p.detach().flatten() for p in model.parameters()])
    images = torch.randn(12, 3, 16, 16)
    labels = torch.arange(12) % 4
    plan = matching.make_plan(12, 4, 3, (16, 16), torch.Generator().manual_seed(1), dsa=False)

    def run():
        x = images.clone().requires_grad_()
        end = matching.unroll(student, theta0.clone().requires_grad_(), x, labels,
                              torch.tensor(0.01), plan)
        (g,) = torch.autograd.grad(end.square().sum(), x)
        return end.detach(), g
    kernels("torch")
    ref_end, ref_g = run()
    kernels("c")
    end, g = run()
    assert (end - ref_end).abs().max() <= 1e-5 * ref_end.abs().max()
    assert (g - ref_g).abs().max() <= 1e-4 * ref_g.abs().max()


def test_every_c_file_is_shipped_with_the_package():
    """A wheel or non-editable install carries the C files the build reads (pyproject.toml's
    package data): a missing one would fail only at first use, on someone else's machine."""
    import tomllib
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    data = tomllib.loads((root / "pyproject.toml").read_text())
    shipped = set(data["tool"]["setuptools"]["package-data"]["ddbook"])
    needed = {f.name for f in ckernels._SOURCES + ckernels._HEADERS}
    assert needed <= shipped, needed - shipped
    on_disk = {f.name for f in (root / "lib" / "ddbook").glob("*.[ch]")}
    assert on_disk == needed, "a C file on disk that the build does not read, or the reverse"


def test_mode_is_checked_and_named_in_provenance(kernels, monkeypatch, tmp_path):
    kernels("fast")
    with pytest.raises(ValueError, match="DDBOOK_KERNELS='fast'.*Fix"):
        ckernels.mode()
    kernels("torch")
    assert ckernels.describe("cpu") == "torch ops (ddbook.fused)"
    kernels("c")
    assert ckernels.describe("cpu").startswith("C loops (ddbook/_tail.c")
    assert ckernels.describe("cuda").startswith("torch ops")


def test_no_compiler_is_an_error_under_c_and_a_warning_under_auto(kernels, monkeypatch,
                                                                   tmp_path):
    monkeypatch.setattr(ckernels, "_STATE", {})
    monkeypatch.setenv("DDBOOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", "no-such-compiler-ddbook")
    kernels("c")
    with pytest.raises(ckernels.KernelBuildError, match="no-such-compiler.*Fix"):
        ckernels.library()
    kernels("auto")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ckernels.library() is None
        assert ckernels.library() is None       # warned once
    assert len(caught) == 1 and "DDBOOK_KERNELS=torch" in str(caught[0].message)
    assert not ckernels.usable(torch.zeros(2))
    assert ckernels.describe("cpu") == "torch ops (ddbook.fused)"


# ------------------------------------------------------------------------------------------
# the channels-last batch-norm tail of a ConvNet-BN network in training (ddbook.networks)


def _bn_network_step(momentum="default", track=True, create_graph=False):
    net = get_network("ConvNetBN", 4, (16, 16), width=8, depth=2, seed=0, device="cpu")
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            if momentum != "default":
                m.momentum = momentum
            if not track:
                m.track_running_stats, m.running_mean, m.running_var = False, None, None
    g = torch.Generator().manual_seed(2)
    x = torch.randn(12, 3, 16, 16, generator=g).contiguous(memory_format=torch.channels_last)
    y = torch.arange(12) % 4
    outs = []
    for _ in range(2):    # two batches: the running statistics move twice
        out = net(x)
        loss = torch.nn.functional.cross_entropy(out, y)
        grads = torch.autograd.grad(loss, list(net.parameters()), create_graph=create_graph)
        if create_graph:  # the gradient's norm, differentiated again (gradient-matching style)
            grads = torch.autograd.grad(sum(gr.square().sum() for gr in grads),
                                        list(net.parameters()))
        outs += [out.detach(), *grads]
        x = x.flip(0)
    stats = [t.clone() for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)
             for t in (m.running_mean, m.running_var, m.num_batches_tracked) if t is not None]
    net.eval()
    return outs, stats, net(x).detach()


@pytest.mark.parametrize("momentum,track", [("default", True), (None, True), (0.3, False)],
                         ids=["momentum-0.1", "cumulative", "no-running-stats"])
def test_bn_network_with_c_loops_equals_the_stock_modules(kernels, monkeypatch, momentum, track):
    kernels("torch")
    ref, ref_stats, ref_eval = _bn_network_step(momentum, track)
    kernels("c")
    calls = []
    real = ckernels.bn_cl_forward
    monkeypatch.setattr(ckernels, "bn_cl_forward", lambda *a: calls.append(1) or real(*a))
    got, stats, evaluated = _bn_network_step(momentum, track)
    # both blocks of both training batches; without running statistics evaluation uses the
    # batch's too (as nn.BatchNorm2d), so its pass runs the C loops as well
    assert len(calls) == (4 if track else 6), calls
    assert len(got) == len(ref)
    scale = max(r.abs().max() for r in ref[1:])
    for r, c in zip(ref, got):
        # a conv bias feeding batch norm has a zero gradient (rounding noise, ~1e-7 of the
        # others): an absolute term on the scale of the rest covers it
        assert (c - r).abs().max() <= 1e-5 * r.abs().max() + 1e-6 * scale
    assert len(stats) == len(ref_stats) == (6 if track else 2)   # else num_batches_tracked: 0
    for r, c in zip(ref_stats, stats):
        assert torch.allclose(c.double(), r.double(), rtol=1e-5, atol=1e-7)
    assert (evaluated - ref_eval).abs().max() <= 1e-5 * ref_eval.abs().max()


def test_bn_tail_create_graph_backward_recomputes_with_the_stock_ops(kernels):
    kernels("torch")
    ref, _, _ = _bn_network_step(create_graph=True)
    kernels("c")
    got, _, _ = _bn_network_step(create_graph=True)
    scale = max(r.abs().max() for r in ref[1:])
    # The conv biases feed batch norms: their gradients are zero but for rounding (~1e-6 of
    # the scale, either way, in both computations; which depends on the thread count).
    for r, c in zip(ref, got):
        assert (c - r).abs().max() <= 1e-4 * r.abs().max() + 1e-5 * scale


def test_bn_tail_kernels_equal_the_stock_ops_and_are_deterministic(kernels):
    kernels("c")
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 16, 8, 10, generator=g).contiguous(memory_format=torch.channels_last)
    w, b = torch.rand(16, generator=g) + 0.5, torch.randn(16, generator=g)
    out, mean, var, rstd, mask = ckernels.bn_cl_forward(x, w, b, 1e-5)
    xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
    y = torch.nn.functional.batch_norm(xr, None, None, wr, br, True, 0.1, 1e-5)
    assert torch.equal(mask.bool(), y > 0), "no value of this draw sits on the ReLU's tie"
    ref = torch.nn.functional.avg_pool2d(torch.relu(y), 2)
    grad = torch.randn(ref.shape, generator=g)
    ref_grads = torch.autograd.grad(ref, (xr, wr, br), grad)
    got_grads = ckernels.bn_cl_backward(grad, x, w, mean, rstd, mask)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert got_grads[0].is_contiguous(memory_format=torch.channels_last)
    for r, c in zip((ref, *ref_grads), (out, *got_grads)):
        assert (c - r.detach()).abs().max() <= 2e-6 * r.abs().max()
    assert torch.allclose(var, x.var((0, 2, 3), unbiased=False), rtol=1e-6)
    again = ckernels.bn_cl_forward(x, w, b, 1e-5)
    assert all(torch.equal(a, c) for a, c in zip(again, (out, mean, var, rstd, mask)))


# --- the first layer's 3x3 convolution (ddbook/_conv.c) -----------------------------------


def _conv_and_derivatives(conv, shape, out_channels, bias, seed, adjoints=(True, True, True),
                          dtype=torch.float32):
    """y = conv(x, w, b), its first derivatives from a loss sum(sin(y) v), and the second from
    random adjoints of the chosen first derivatives, in ``dtype`` (the draws are float32's)."""
    g = torch.Generator().manual_seed(seed)

    def draw(*size):
        return torch.randn(*size, generator=g).to(dtype)
    x = draw(*shape).requires_grad_()
    w = draw(out_channels, shape[1], 3, 3).requires_grad_()
    b = draw(out_channels).requires_grad_() if bias else None
    inputs = [t for t in (x, w, b) if t is not None]
    y = conv(x, w, b)
    # a nonlinear loss, so that the output gradient depends on x, w, b (as in an unroll)
    firsts = torch.autograd.grad((torch.sin(y) * draw(*y.shape)).sum(), inputs,
                                 create_graph=True)
    terms = [(t * draw(*t.shape)).sum() for t, on in zip(firsts, adjoints) if on]
    second = torch.autograd.grad(sum(terms), inputs, allow_unused=True)
    return [y, *firsts] + [s for s in second if s is not None]


def _native_conv(x, w, b):
    return torch.nn.functional.conv2d(x, w, b, padding=1)


@pytest.mark.parametrize("shape,out_channels", [
    ((5, 3, 32, 32), 32), ((2, 3, 7, 11), 5), ((3, 1, 9, 20), 4), ((1, 4, 5, 3), 7),
    ((2, 2, 16, 17), 3)], ids=lambda v: str(v))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("adjoints", [(True, True, True), (True, False, False),
                                      (False, True, True)], ids=["all", "x-only", "no-x"])
def test_conv_c_loops_equal_the_native_convolution(kernels, shape, out_channels, bias,
                                                   adjoints):
    """Forward, first and second derivatives of fused._Conv3x3 against F.conv2d, on shapes
    whose widths are and are not whole 8-float vectors, and output channels that are and are
    not whole register blocks of 3."""
    kernels("c")
    adjoints = adjoints[:2 + bias]
    got = _conv_and_derivatives(fused._Conv3x3.apply, shape, out_channels, bias, 0, adjoints)
    ref = _conv_and_derivatives(_native_conv, shape, out_channels, bias, 0, adjoints)
    assert len(got) == len(ref)
    for r, c in zip(ref, got):
        assert c.shape == r.shape and c.dtype == r.dtype
        assert (c - r).abs().max() <= 1e-5 * r.abs().max() + 1e-7


@pytest.mark.parametrize("shape,out_channels", [
    ((3, 16, 8, 8), 16), ((2, 32, 6, 4), 48), ((2, 48, 2, 10), 16)], ids=lambda v: str(v))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("adjoints", [(True, True, True), (True, False, False),
                                      (False, True, True)], ids=["all", "x-only", "no-x"])
def test_winograd_student_convolution_equals_the_native_one(kernels, shape, out_channels, bias,
                                                            adjoints):
    """fused._Wino3x3 (NCHW, as the distillation student runs it): forward, first and second
    derivatives against F.conv2d."""
    kernels("c")
    adjoints = adjoints[:2 + bias]
    got = _conv_and_derivatives(fused._Wino3x3.apply, shape, out_channels, bias, 1, adjoints)
    # against float64 (oneDNN's float32 second derivatives are off by up to 2e-5 of their
    # scale here, Winograd's by 5e-6)
    ref = _conv_and_derivatives(_native_conv, shape, out_channels, bias, 1, adjoints,
                                dtype=torch.float64)
    assert len(got) == len(ref)
    for r, c in zip(ref, got):
        assert c.shape == r.shape and c.is_contiguous() and c.dtype == torch.float32
        assert (c.double() - r).abs().max() <= 1e-5 * r.abs().max()
    again = _conv_and_derivatives(fused._Wino3x3.apply, shape, out_channels, bias, 1, adjoints)
    assert all(torch.equal(a, b) for a, b in zip(got, again))


def test_the_student_takes_winograd_for_channels_in_sixteens(kernels, monkeypatch):
    from ddbook import networks
    kernels("c")
    calls = []
    for name in ("conv3_forward", "wino_forward"):
        monkeypatch.setattr(ckernels, name, lambda *a, _f=getattr(ckernels, name), _n=name:
                            calls.append((_n, a[0].shape[1])) or _f(*a))
    model = get_network("ConvNet", 4, (16, 16), width=16, depth=3, seed=0, device="cpu")
    student = matching.make_student(model)
    theta = torch.cat([p.detach().flatten() for p in model.parameters()])
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    out = student(theta, images)
    # 3 -> 16 at 16x16 direct; 16 -> 16 at 8x8 Winograd; 16 -> 16 at 4x4 Winograd
    assert calls == [("conv3_forward", 3), ("wino_forward", 16), ("wino_forward", 16)]
    monkeypatch.setattr(networks, "C_WINOGRAD", False)
    calls.clear()
    direct = student(theta, images)
    assert calls == [("conv3_forward", 3)]
    assert (out - direct).abs().max() <= 1e-5 * direct.abs().max()


def test_conv_c_loops_are_deterministic_and_skip_unused_gradients(kernels, monkeypatch):
    kernels("c")
    first = _conv_and_derivatives(fused._Conv3x3.apply, (3, 3, 12, 12), 6, True, 5)
    again = _conv_and_derivatives(fused._Conv3x3.apply, (3, 3, 12, 12), 6, True, 5)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    calls = []
    monkeypatch.setattr(ckernels, "conv3_grad_input",
                        lambda *a, _f=ckernels.conv3_grad_input: calls.append(1) or _f(*a))
    images = torch.randn(2, 3, 8, 8, requires_grad=True)
    x = images * 2.0                       # a non-leaf input, as the DSA output in an unroll
    w, b = torch.randn(4, 3, 3, 3, requires_grad=True), torch.randn(4, requires_grad=True)
    y = fused._Conv3x3.apply(x, w, b).square().sum()
    (gw,) = torch.autograd.grad(y, (w,), create_graph=True)   # the unroll: the weight only
    assert calls == []
    (gi,) = torch.autograd.grad(gw.square().sum() + y, (images,), retain_graph=True)
    assert len(calls) == 2   # the output's adjoint, and the weight gradient's derivative in x
    ref_w = torch.autograd.grad(_native_conv(x, w, b).square().sum(), (w,), create_graph=True)[0]
    ref = torch.autograd.grad(ref_w.square().sum() + _native_conv(x, w, b).square().sum(),
                              (images,))[0]
    assert (gi - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_the_student_takes_the_conv_c_loops_for_few_input_channels_only(kernels, monkeypatch):
    kernels("c")
    calls = []
    monkeypatch.setattr(ckernels, "conv3_forward",
                        lambda *a, _f=ckernels.conv3_forward: calls.append(a[0].shape[1]) or _f(*a))
    model = get_network("ConvNet", 4, (16, 16), width=8, depth=2, seed=0, device="cpu")
    student = matching.make_student(model)
    theta = torch.cat([p.detach().flatten() for p in model.parameters()])
    student(theta, torch.randn(2, 3, 16, 16))
    assert calls == [3]    # the first layer (3 channels), not the second (8)
    monkeypatch.setattr(fused, "C_CONV_MAX_CHANNELS", 0)
    student(theta, torch.randn(2, 3, 16, 16))
    assert calls == [3]
    monkeypatch.setattr(fused, "C_CONV_MAX_CHANNELS", 4)
    kernels("torch")
    student(theta, torch.randn(2, 3, 16, 16))
    assert calls == [3]
    assert not fused._conv_c(torch.nn.Conv2d(3, 8, 3, padding=2))
    assert not fused._conv_c(torch.nn.Conv2d(3, 8, 3, padding=1, stride=2))
    assert not fused._conv_c(torch.nn.Conv2d(3, 8, 5, padding=1))
    assert fused._conv_c(torch.nn.Conv2d(3, 8, 3, padding=1))


# --- the channels-last first convolution of a ConvNet-BN network in training ---------------

_CL = torch.channels_last


def _cl_conv_case(conv, shape, out_channels, bias, seed):
    """Channels-last x, weights, bias (or None), conv's output, F.conv2d's, and an output
    gradient (channels-last), from one seed."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g).contiguous(memory_format=_CL)
    w = torch.randn(out_channels, shape[1], 3, 3, generator=g)
    b = torch.randn(out_channels, generator=g) if bias else None
    y = conv(x, w, b)
    ref = torch.nn.functional.conv2d(x, w, b, padding=1)
    assert y.is_contiguous(memory_format=_CL) and y.shape == ref.shape
    return x, w, b, y, ref, torch.randn(ref.shape, generator=g).contiguous(memory_format=_CL)


@pytest.mark.parametrize("shape,out_channels", [
    ((5, 3, 32, 32), 32), ((2, 3, 7, 11), 16), ((3, 1, 9, 5), 48), ((1, 4, 5, 3), 64),
    ((2, 2, 1, 1), 16), ((2, 3, 6, 6), 24)], ids=lambda v: str(v))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_channels_last_conv_c_loops_equal_the_native_convolution(kernels, shape, out_channels,
                                                                 bias):
    """conv3_cl_forward and conv3_cl_grad_weight against F.conv2d and its weight gradient, on
    widths that are and are not whole pixel blocks (2) and output channels that are and are not
    whole blocks of 32 (forward) and 16 (weight gradient: 24 is refused); deterministic."""
    kernels("c")
    x, w, b, y, ref, grad = _cl_conv_case(ckernels.conv3_cl_forward, shape, out_channels, bias, 7)
    assert (y - ref).abs().max() <= 1e-5 * ref.abs().max()
    assert torch.equal(y, ckernels.conv3_cl_forward(x, w, b))
    if out_channels % 16:
        with pytest.raises(ValueError, match="shapes outside"):
            ckernels.conv3_cl_grad_weight(x, grad)
        return
    _, rgw, rgb = torch.ops.aten.convolution_backward(
        grad, x, w, [out_channels], [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
        [False, True, True])
    gw, gb = ckernels.conv3_cl_grad_weight(x, grad)
    assert (gw - rgw).abs().max() <= 1e-5 * rgw.abs().max()
    assert (gb - rgb).abs().max() <= 1e-5 * rgb.abs().max()
    again = ckernels.conv3_cl_grad_weight(x, grad)
    assert torch.equal(gw, again[0]) and torch.equal(gb, again[1])


def _bn_training_steps(create_graph=False, input_grad=False):
    """Two SGD-free training steps of a channels-last ConvNet-BN (width 16: its first conv is
    the C loops' when they are on); outputs, parameter gradients, running statistics."""
    net = get_network("ConvNetBN", 4, (16, 16), width=16, depth=2, seed=0, device="cpu")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(10, 3, 16, 16, generator=g)   # NCHW, as augmentation hands it over
    y = torch.arange(10) % 4
    outs = []
    for _ in range(2):
        xi = x.clone().requires_grad_() if input_grad else x
        out = net(xi)
        grads = torch.autograd.grad(torch.nn.functional.cross_entropy(out, y),
                                    list(net.parameters()), create_graph=create_graph)
        if create_graph:
            grads = torch.autograd.grad(sum(gr.square().sum() for gr in grads),
                                        list(net.parameters()))
        outs += [out.detach(), *grads]
        x = x.flip(0)
    outs += [t.clone() for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)
             for t in (m.running_mean, m.running_var)]
    return outs


@pytest.mark.parametrize("create_graph", [False, True], ids=["backward", "create-graph"])
def test_bn_network_takes_the_channels_last_convs_and_equals_the_native_ones(kernels, monkeypatch,
                                                                            create_graph):
    from ddbook import networks
    kernels("torch")
    ref = _bn_training_steps(create_graph)
    kernels("c")
    monkeypatch.setattr(networks, "C_FIRST_CONV_CL", False)
    monkeypatch.setattr(networks, "C_WINOGRAD", False)
    tail_only = _bn_training_steps(create_graph)
    monkeypatch.setattr(networks, "C_FIRST_CONV_CL", True)
    monkeypatch.setattr(networks, "C_WINOGRAD", True)
    calls = []
    for name in ("conv3_cl_forward", "conv3_cl_grad_weight", "wino_forward", "wino_grad_input",
                 "wino_grad_weight"):
        monkeypatch.setattr(ckernels, name,
                            lambda *a, _f=getattr(ckernels, name), _n=name: calls.append(_n)
                            or _f(*a))
    got = _bn_training_steps(create_graph)
    # per step: the first layer (3 -> 16 channels) and the second (16 -> 16, 8x8) forward, then
    # their gradients. Under create_graph the first backward recomputes them with F.conv2d
    # (differentiable: the second derivatives below agree) and the C loops serve the second
    # backward, back through the layers' outputs.
    step = ["conv3_cl_forward", "wino_forward", "wino_grad_input", "wino_grad_weight",
            "conv3_cl_grad_weight"]
    assert calls == step * 2
    scale = max(r.abs().max() for r in ref[1:])
    for r, t, c in zip(ref, tail_only, got):
        # conv biases feeding batch norm have zero gradients but for rounding (as above)
        assert (c - r).abs().max() <= 1e-5 * r.abs().max() + 1e-5 * scale
        assert (c - t).abs().max() <= 1e-5 * t.abs().max() + 1e-5 * scale
    calls.clear()
    _bn_training_steps(create_graph, input_grad=True)   # an input that needs its gradient
    assert "conv3_cl_forward" not in calls and calls.count("wino_forward") == 2


def test_instance_norm_network_takes_winograd_and_equals_the_native_one(kernels, monkeypatch):
    """An NCHW (instance-norm) network in training runs its 16-channel layer through the
    student's Winograd op (fused._Wino3x3), its 3-channel first layer natively."""
    from ddbook import networks

    def steps():
        net = get_network("ConvNet", 4, (16, 16), width=16, depth=2, seed=0, device="cpu")
        g = torch.Generator().manual_seed(5)
        x, y = torch.randn(6, 3, 16, 16, generator=g), torch.arange(6) % 4
        out = net(x)
        grads = torch.autograd.grad(torch.nn.functional.cross_entropy(out, y),
                                    list(net.parameters()))
        return [out.detach(), *grads]
    kernels("torch")
    ref = steps()
    kernels("c")
    calls = []
    monkeypatch.setattr(ckernels, "wino_forward", lambda *a, _f=ckernels.wino_forward:
                        calls.append(tuple(a[0].shape)) or _f(*a))
    got = steps()
    assert calls == [(6, 16, 8, 8)]
    scale = max(r.abs().max() for r in ref[1:])
    for r, c in zip(ref, got):
        assert (c - r).abs().max() <= 1e-5 * r.abs().max() + 1e-6 * scale
    monkeypatch.setattr(networks, "C_WINOGRAD", False)
    calls.clear()
    steps()
    assert calls == []


def test_channels_last_convs_are_taken_only_where_they_apply(kernels, monkeypatch):
    from ddbook import networks
    from ddbook.networks import _conv_function
    kernels("c")
    bn = get_network("ConvNetBN", 10, width=32, seed=0, device="cpu")
    conv, conv2 = bn.features[0], bn.features[4]
    x = torch.randn(2, 3, 32, 32)
    h = torch.randn(2, 32, 16, 16).contiguous(memory_format=_CL)
    assert _conv_function(conv, x) is False
    assert _conv_function(conv, x.contiguous(memory_format=_CL)) is False
    assert _conv_function(conv2, h) is True
    assert _conv_function(conv2, h.requires_grad_()) is True
    assert _conv_function(conv, x.requires_grad_()) is None          # input gradient wanted
    assert _conv_function(conv2, torch.randn(2, 32, 16, 16)) is None  # NCHW input
    assert _conv_function(conv2, torch.randn(2, 32, 15, 16).contiguous(memory_format=_CL)) is None
    assert _conv_function(conv, torch.randn(2, 3, 32, 32, dtype=torch.float64)) is None
    assert _conv_function(conv, torch.randn(2, 3, 32, 64)[..., ::2]) is None   # strided
    inorm = get_network("ConvNet", 10, width=32, seed=0, device="cpu")         # NCHW weights
    assert _conv_function(inorm.features[0], torch.randn(2, 3, 32, 32)) is None
    assert _conv_function(inorm.features[4], h) is None
    narrow = get_network("ConvNetBN", 10, width=8, seed=0, device="cpu")      # 8 channels
    assert _conv_function(narrow.features[0], torch.randn(2, 3, 32, 32)) is None
    assert _conv_function(narrow.features[4],
                          torch.randn(2, 8, 16, 16).contiguous(memory_format=_CL)) is None
    monkeypatch.setattr(networks, "C_WINOGRAD", False)
    assert _conv_function(conv2, h) is None and _conv_function(conv, x.detach()) is False
    monkeypatch.setattr(networks, "C_FIRST_CONV_CL", False)
    assert _conv_function(conv, x.detach()) is None
    monkeypatch.setattr(networks, "C_WINOGRAD", True)
    kernels("torch")
    assert _conv_function(conv2, h) is None


@pytest.mark.parametrize("mode,threads,taken", [("auto", 1, True), ("auto", 2, False),
                                                ("c", 2, True), ("torch", 1, False)])
def test_convolution_loops_run_under_auto_on_one_thread_only(kernels, mode, threads, taken):
    """The convolution loops are single-threaded: under auto they replace oneDNN's (which use
    every torch thread) only on one thread; c forces them."""
    from ddbook.networks import _conv_function, _wino_nchw
    kernels(mode)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert ckernels.convolutions_wanted() is (mode == "c" or threads == 1)
        assert ("convolutions by the torch ops" in ckernels.describe("cpu")) is (
            mode == "auto" and not taken)
        bn = get_network("ConvNetBN", 10, width=32, seed=0, device="cpu")
        h = torch.randn(2, 32, 16, 16)
        assert (_conv_function(bn.features[4], h.contiguous(memory_format=_CL)) is True) is taken
        inorm = get_network("ConvNet", 10, width=32, seed=0, device="cpu")
        assert _wino_nchw(inorm.features[4], h) is taken
        model = get_network("ConvNet", 4, (16, 16), width=16, depth=2, seed=0, device="cpu")
        student = matching.make_student(model)
        theta = torch.cat([p.detach().flatten() for p in model.parameters()])
        calls = []
        real = (ckernels.conv3_forward, ckernels.wino_forward)
        ckernels.conv3_forward = lambda *a: calls.append("conv3") or real[0](*a)
        ckernels.wino_forward = lambda *a: calls.append("wino") or real[1](*a)
        try:
            student(theta, torch.randn(2, 3, 16, 16))
        finally:
            ckernels.conv3_forward, ckernels.wino_forward = real
        assert calls == (["conv3", "wino"] if taken else [])
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("shape,out_channels", [
    ((5, 32, 16, 16), 32), ((2, 16, 6, 10), 48), ((3, 48, 2, 2), 16), ((1, 16, 8, 4), 16)],
    ids=lambda v: str(v))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_winograd_loops_equal_the_native_convolution(kernels, shape, out_channels, bias):
    """wino_forward, wino_grad_input and wino_grad_weight against F.conv2d and its gradients, on
    square and oblong images, block counts of tiles that are and are not whole (24 tiles) and
    more and fewer output than input channels; deterministic; other shapes refused."""
    kernels("c")
    x, w, b, y, ref, grad = _cl_conv_case(ckernels.wino_forward, shape, out_channels, bias, 11)
    rgx, rgw, rgb = torch.ops.aten.convolution_backward(
        grad, x, w, [out_channels], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [True, True, True])
    gx = ckernels.wino_grad_input(grad, w)
    gw, gb = ckernels.wino_grad_weight(x, grad)
    assert gx.is_contiguous(memory_format=_CL)
    for r, c in ((ref, y), (rgx, gx), (rgw, gw), (rgb, gb)):
        assert c.shape == r.shape
        assert (c - r).abs().max() <= 1e-5 * r.abs().max()
    again = (ckernels.wino_forward(x, w, b), ckernels.wino_grad_input(grad, w),
             *ckernels.wino_grad_weight(x, grad))
    assert all(torch.equal(a, c) for a, c in zip(again, (y, gx, gw, gb)))
    for bad in ((2, 8, 4, 4), (2, 16, 5, 4)):
        xb = torch.randn(*bad).contiguous(memory_format=_CL)
        with pytest.raises(ValueError, match="shapes outside"):
            ckernels.wino_forward(xb, torch.randn(16, bad[1], 3, 3), None)
    with pytest.raises(ValueError, match="shapes outside"):
        ckernels.wino_forward(x, torch.randn(24, shape[1], 3, 3), None)
