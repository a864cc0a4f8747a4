"""Fused CPU autograd kernels for the distillation student, and the ConvNet replayed through them.

Trajectory matching differentiates through SGD steps of a student, so every layer's backward is
itself differentiated (double backward). PyTorch's stock CPU kernels for instance norm, batch
norm and 2x2 average pooling are slow there; this module writes them out as
``torch.autograd.Function``s whose backward passes are again differentiable functions with
written-out formulas:

- ``_AvgPool2``: 2x2 mean pooling as a linear map (its adjoint ``_unpool2``; any derivative order
  costs one pass);
- ``_Norm`` (+ ``_NormBackward``): instance norm, or batch norm on the batch's statistics, with
  its first and second derivatives in closed form;
- ``_NormReLUPool`` (+ ``_NormReLUPoolBackward``): norm -> ReLU -> 2x2 mean pool fused in one op
  (the tail of every ConvNet block);
- ``_Conv3x3`` (+ ``_Conv3x3GradInput``, ``_Conv3x3GradWeight``): the 3x3 convolution of few
  input channels (the first layer on RGB images) through the C loops of ``_conv.c``, each
  derivative again one of the three.

``convnet_plan(model)`` turns a ConvNet into a list of functional ops over a parameter dict
(fused where the pattern allows, stock ``torch.nn.functional`` otherwise), or None when a layer is
not covered; :func:`ddbook.matching.make_student` builds the student from it. Nothing here changes
the arithmetic of the algorithm: tests/test_matching.py checks every kernel with gradcheck and
gradgradcheck and the student against an ``nn.Module`` SGD loop.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import ckernels
from .networks import ConvNet, _conv3x3_pad1, _unpool2, _wino_shapes

__all__ = ["convnet_plan"]


def _pool2(x: torch.Tensor) -> torch.Tensor:
    """2x2 mean pooling of (B, C, H, W), H and W even, as two strided adds (fast on the CPU)."""
    rows = x[:, :, 0::2] + x[:, :, 1::2]                       # (B, C, H/2, W)
    return (rows[..., 0::2] + rows[..., 1::2]).mul_(0.25)      # (B, C, H/2, W/2)


class _AvgPool2(torch.autograd.Function):
    """2x2 mean pooling as a linear map whose backward (and backward of that) is again linear:
    pooling and its adjoint call each other, so any order of derivative costs one pass."""

    @staticmethod
    def forward(x):
        return _pool2(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return _AvgPool2Adjoint.apply(grad)


class _AvgPool2Adjoint(torch.autograd.Function):
    @staticmethod
    def forward(grad):
        return _unpool2(grad)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        return _AvgPool2.apply(grad)


def _norm_forward(x, weight, bias, eps, batch: bool):
    """(y, mean, rstd) of batch norm with batch statistics (``batch``) or of instance norm."""
    if batch:
        return torch.ops.aten.native_batch_norm(x, weight, bias, None, None, True, 0.0, eps)
    n, c, h, w = x.shape
    return torch.ops.aten.native_group_norm(x, weight, bias, n, c, h * w, c, eps)


def _norm_backward(gy, x, weight, mean, rstd, batch: bool):
    """(gx, g_weight, g_bias) of the norm: the native kernels (papers.md §1.1 norm)."""
    if batch:   # training mode: eps enters only through the saved rstd
        return torch.ops.aten.native_batch_norm_backward(gy, x, weight, None, None, mean, rstd,
                                                         True, 0.0, [True, True, True])
    n, c, h, w = x.shape
    return torch.ops.aten.native_group_norm_backward(gy, x, mean, rstd, weight, n, c, h * w, c,
                                                     [True, True, True])


def _norm_double_backward(gy, x, weight, mean, rstd, a_x, a_w, a_b, batch: bool):
    """Gradients (gy, x, weight) of <a_x, gx> + <a_w, g_weight> + <a_b, g_bias>.

    The statistics are taken per channel over a group of S values: the pixels of one sample
    (instance norm) or of the whole batch (batch norm, ``batch``). With xh = (x - mu) r,
    g = w gy and P(v) = v - mean(v) - xh mean(v xh) (per group): gx = r P(g), g_w = sum gy xh,
    g_b = sum gy. So d/dgy = w r P(A) + a_w xh + a_b; d/dw = sum r <A, P(gy)>;
    d/dx = r P(v) - (r^2 w <A, P(gy)> / S) xh, v = -r w mean(gy xh) A + (a_w - r w <A, xh>/S) gy.
    Checked by gradgradcheck (tests).
    """
    n, c, h, w = x.shape
    x3, gy3 = x.reshape(n, c, h * w), gy.reshape(n, c, h * w)       # (N, C, HW)
    if batch:        # one group per channel: sums over (N, HW)
        s, stat = n * h * w, (1, c, 1)
        total = lambda t: t.sum((0, 2), keepdim=True)                           # noqa: E731
        dot = lambda a, b: torch.linalg.vecdot(a, b).sum(0).view(stat)          # noqa: E731
    else:            # one group per (sample, channel): sums over HW
        s, stat = h * w, (n, c, 1)
        total = lambda t: t.sum(-1, keepdim=True)                               # noqa: E731
        dot = lambda a, b: torch.linalg.vecdot(a, b).unsqueeze(-1)              # noqa: E731
    mu, r, gam = mean.view(stat), rstd.view(stat), weight.view(1, c, 1)
    a_w = (torch.zeros_like(weight) if a_w is None else a_w).view(1, c, 1)
    a_b = (torch.zeros_like(weight) if a_b is None else a_b).view(1, c, 1)
    sg = total(gy3)                                                  # sums over each group
    gy_bar, gy_xh = sg / s, r * (dot(gy3, x3) - mu * sg) / s
    a3 = None if a_x is None else a_x.reshape(n, c, h * w)
    zero = torch.zeros_like(sg)
    sa = zero if a3 is None else total(a3)
    a_xh = zero if a3 is None else r * (dot(a3, x3) - mu * sa)
    a_gy = zero if a3 is None else dot(a3, gy3)
    inner = a_gy - sa * gy_bar - a_xh * gy_xh                        # <A, P(gy)>
    cx = (a_w - gam * r * a_xh / s) * r                              # d/dgy: coefficient of x
    g_gy = x3 * cx + (a_b - gam * r * sa / s - cx * mu)
    c1, c2 = -r * gam * gy_xh, a_w - r * gam * a_xh / s              # v = c1 A + c2 gy
    k3 = -(r * (c1 * a_xh / s + c2 * gy_xh) + r * r * gam * inner / s)
    k4 = -r * (c1 * sa / s + c2 * gy_bar)
    g_x = torch.addcmul(x3 * (k3 * r) + (k4 - k3 * r * mu), gy3, r * c2)
    if a3 is not None:
        g_gy = torch.addcmul(g_gy, a3, gam * r)
        g_x = torch.addcmul(g_x, a3, r * c1)
    return g_gy.view_as(gy), g_x.view_as(x), (r * inner).sum((0, 2))


class _Norm(torch.autograd.Function):
    """Instance norm (GroupNorm(C, C), per-channel affine) or, with ``batch``, batch norm on the
    batch's statistics, whose backward is _NormBackward: the stock double backwards of both are
    long chains of full-size elementwise ops."""

    @staticmethod
    def forward(x, weight, bias, eps, batch):
        return _norm_forward(x, weight, bias, eps, batch)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1], output[2])
        ctx.save_for_backward(inputs[0], inputs[1], output[1], output[2])
        ctx.batch = inputs[4]

    @staticmethod
    def backward(ctx, grad, _mean, _rstd):
        return (*_NormBackward.apply(grad, *ctx.saved_tensors, ctx.batch), None, None)


class _NormBackward(torch.autograd.Function):
    """(gx, g_weight, g_bias) of the norm from gy, with a written-out backward."""

    @staticmethod
    def forward(grad, x, weight, mean, rstd, batch):
        return _norm_backward(grad, x, weight, mean, rstd, batch)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:5])
        ctx.batch = inputs[5]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, a_x, a_w, a_b):
        return (*_norm_double_backward(*ctx.saved_tensors, a_x, a_w, a_b, ctx.batch),
                None, None, None)


class _NormReLUPool(torch.autograd.Function):
    """pool2(relu(norm(z))), one ConvNet block's tail (instance norm, or batch norm with
    ``batch``), saving z, its statistics and a 1-byte mask instead of the ReLU output and the
    gradients that the stock ops keep: the unrolled graph needs about a third less memory, with
    the same maths."""

    @staticmethod
    def forward(z, weight, bias, eps, batch):
        if ckernels.usable(z, weight, bias):
            return ckernels.tail_forward(z, weight, bias, eps, batch)
        y, mean, rstd = _norm_forward(z, weight, bias, eps, batch)
        mask = (y > 0).view(torch.uint8)   # (B, C, H, W); uint8 multiplies faster than bool
        return _pool2(y.relu_()), mean, rstd, mask

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_backward(inputs[0], inputs[1], *output[1:])
        ctx.batch = inputs[4]
        ctx.set_materialize_grads(False)   # no zero gradients for the statistics and the mask

    @staticmethod
    def backward(ctx, grad, *_):
        if grad is None:
            return None, None, None, None, None
        return (*_NormReLUPoolBackward.apply(grad, *ctx.saved_tensors, ctx.batch), None, None)


class _NormReLUPoolBackward(torch.autograd.Function):
    """(gz, g_weight, g_bias) from the pooled gradient; keeps that (1/4 size), not gy."""

    @staticmethod
    def forward(grad, z, weight, mean, rstd, mask, batch):
        if ckernels.usable(z, weight, mean, rstd, mask):
            return ckernels.tail_backward(grad, z, weight, mean, rstd, mask, batch)
        return _norm_backward(_unpool2(grad) * mask, z, weight, mean, rstd, batch)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:6])
        ctx.batch = inputs[6]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, a_z, a_w, a_b):
        grad, z, weight, mean, rstd, mask = ctx.saved_tensors
        if ckernels.usable(z, weight, mean, rstd, mask) and grad.dtype == z.dtype:
            g_grad, g_z, g_w = ckernels.tail_double_backward(grad, z, weight, mean, rstd, mask,
                                                             a_z, a_w, a_b, ctx.batch)
            return g_grad, g_z, g_w, None, None, None, None
        g_gy, g_z, g_w = _norm_double_backward(_unpool2(grad) * mask, z, weight, mean, rstd,
                                               a_z, a_w, a_b, ctx.batch)
        return _pool2(g_gy * mask), g_z, g_w, None, None, None, None


def _wanted(ctx, i: int) -> bool:
    """Whether input ``i``'s gradient will be used by the running backward pass: a custom
    Function's ``needs_input_grad`` says only that the input requires grad, while the engine
    skips the paths ``autograd.grad`` does not ask for (the unroll asks for the student's
    parameters only, not for its input images)."""
    if not ctx.needs_input_grad[i]:
        return False
    node = ctx.next_functions[i][0]
    try:
        return node is None or torch._C._will_engine_execute_node(node)
    except RuntimeError:   # a leaf under autograd.grad(): the engine cannot tell
        return True


class _SavesInputs(torch.autograd.Function):
    """A Function of two tensors that keeps both for its backward, which gets None (not zeros)
    for an output whose gradient nothing asked for."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)
        ctx.set_materialize_grads(False)


def _conv3x3_family(kernels: str, name: str) -> tuple:
    """The three Functions of a 3x3, stride-1, padding-1 convolution computed by
    ``ckernels.<kernels>_forward``, ``_grad_input`` and ``_grad_weight`` (looked up at each
    call): the convolution, its adjoint in x, its weight and bias gradients. Each derivative is
    again one of the three, so every order of differentiation runs through them; the gradients a
    backward pass will not use are not computed."""

    def k(name: str) -> Callable:
        return getattr(ckernels, f"{kernels}_{name}")

    class Conv(torch.autograd.Function):
        @staticmethod
        def forward(x, weight, bias):
            return k("forward")(x, weight, bias)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0], inputs[1])
            ctx.set_materialize_grads(False)

        @staticmethod
        def backward(ctx, grad):
            if grad is None:
                return None, None, None
            x, weight = ctx.saved_tensors
            grad = grad.contiguous()
            gx = GradInput.apply(grad, weight) if _wanted(ctx, 0) else None
            want_w, want_b = _wanted(ctx, 1), _wanted(ctx, 2)
            gw, gb = GradWeight.apply(x, grad) if want_w or want_b else (None, None)
            return gx, gw if want_w else None, gb if want_b else None

    class GradInput(_SavesInputs):
        @staticmethod
        def forward(grad, weight):
            return k("grad_input")(grad, weight)

        @staticmethod
        def backward(ctx, a):   # <a, gi(g, w)> = <conv(a, w), g> = <w, gw(a, g)>
            if a is None:
                return None, None
            grad, weight = ctx.saved_tensors
            a = a.contiguous()
            g_grad = Conv.apply(a, weight, None) if _wanted(ctx, 0) else None
            g_w = GradWeight.apply(a, grad)[0] if _wanted(ctx, 1) else None
            return g_grad, g_w

    class GradWeight(_SavesInputs):
        @staticmethod
        def forward(x, grad):
            return k("grad_weight")(x, grad)

        @staticmethod
        def backward(ctx, a_w, a_b):
            # <a_w, gw(x, g)> + <a_b, gb(g)> = <conv(x, a_w) + a_b, g>
            #                                = <x, gi(g, a_w)> + <conv(x, a_w) + a_b, g>
            if a_w is None and a_b is None:
                return None, None
            x, grad = ctx.saved_tensors
            g_x = g_grad = None
            if a_w is not None and _wanted(ctx, 0):
                g_x = GradInput.apply(grad, a_w.contiguous())
            if _wanted(ctx, 1):
                a_w = (x.new_zeros((grad.shape[1], x.shape[1], 3, 3)) if a_w is None
                       else a_w.contiguous())
                g_grad = Conv.apply(x, a_w, None if a_b is None else a_b.contiguous())
            return g_x, g_grad

    for cls, suffix, doc in (
            (Conv, "", "``F.conv2d(x, weight, bias, padding=1)`` (``bias`` may be None)"),
            (GradInput, "GradInput", "gx: the adjoint in x of the convolution applied to grad"),
            (GradWeight, "GradWeight", "(gw, gb): the gradients wrt the weight and bias, from "
                                       "the input x and grad")):
        cls.__name__ = cls.__qualname__ = f"_{name}{suffix}"
        cls.__doc__ = f"{doc}, through ``ckernels.{kernels}_*``."
    return Conv, GradInput, GradWeight


# the 3x3 convolution of few input channels as direct C loops (_conv.c), and of channels in
# multiples of 16 by Winograd F(2x2, 3x3) (_wino.c)
_Conv3x3, _Conv3x3GradInput, _Conv3x3GradWeight = _conv3x3_family("conv3", "Conv3x3")
_Wino3x3, _Wino3x3GradInput, _Wino3x3GradWeight = _conv3x3_family("wino", "Wino3x3")


def _conv_c(m: nn.Module) -> bool:
    """True for a conv that the C loops compute: 3x3, stride 1, padding 1, few input channels."""
    return _conv3x3_pad1(m) and m.in_channels <= C_CONV_MAX_CHANNELS


C_CONV_MAX_CHANNELS = 4   # wider inputs keep oneDNN, near the sgemm peak there (benchmarks/)


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    if x.device.type == "cpu" and x.is_contiguous() and x.shape[-1] % 2 == 0 == x.shape[-2] % 2:
        return _AvgPool2.apply(x)  # avg_pool2d's CPU kernels are slow on NCHW (~5x a copy)
    return F.avg_pool2d(x, 2)


def _layer_op(m: nn.Module, name: str) -> Callable | None:
    """``op(params, x)`` computing module ``m`` (parameters under ``name.``), or None if unknown."""
    w, b = f"{name}.weight", f"{name}.bias"
    if type(m) is nn.Conv2d:
        def conv(p, x):
            if ckernels.usable(x, p[w], p[b]) and ckernels.convolutions_wanted():
                if _conv_c(m):
                    return _Conv3x3.apply(x, p[w], p[b])
                if _wino_shapes(m, x):
                    return _Wino3x3.apply(x, p[w], p[b])
            return F.conv2d(x, p[w], p[b], m.stride, m.padding, m.dilation, m.groups)
        return conv
    if type(m) is nn.GroupNorm and m.affine and m.num_groups == m.num_channels:
        return lambda p, x: _Norm.apply(x, p[w], p[b], m.eps, False)[0]
    if type(m) is nn.GroupNorm and m.affine:
        return lambda p, x: F.group_norm(x, m.num_groups, p[w], p[b], m.eps)
    if type(m) is nn.BatchNorm2d and m.affine:  # batch statistics; running ones play no role
        return lambda p, x: _Norm.apply(x, p[w], p[b], m.eps, True)[0]
    if type(m) is nn.LayerNorm and m.elementwise_affine:
        return lambda p, x: F.layer_norm(x, m.normalized_shape, p[w], p[b], m.eps)
    if type(m) in (nn.ReLU, nn.Sigmoid, nn.LeakyReLU):
        act = {nn.ReLU: F.relu, nn.Sigmoid: torch.sigmoid,
               nn.LeakyReLU: lambda x: F.leaky_relu(x, m.negative_slope)}[type(m)]
        return lambda p, x: act(x)
    if _is_pool2(m):
        return lambda p, x: _avg_pool(x)
    if type(m) is nn.MaxPool2d:
        return lambda p, x: F.max_pool2d(x, m.kernel_size, m.stride, m.padding)
    return None


def _is_pool2(m: nn.Module) -> bool:
    return (type(m) is nn.AvgPool2d and m.kernel_size in (2, (2, 2)) and m.stride in (2, (2, 2))
            and m.padding in (0, (0, 0)) and not m.ceil_mode)


def _fusable_norm(m: nn.Module) -> bool | None:
    """True for batch norm, False for instance norm (both affine), None for anything else."""
    if type(m) is nn.BatchNorm2d and m.affine:
        return True
    if type(m) is nn.GroupNorm and m.affine and m.num_groups == m.num_channels:
        return False
    return None


def _tail_op(mods: list, i: int) -> Callable | None:
    """The fused op for norm -> ReLU -> 2x2 mean pool at ``mods[i:i + 3]``, or None."""
    norm = mods[i]
    batch = _fusable_norm(norm)
    if not (i + 2 < len(mods) and batch is not None and type(mods[i + 1]) is nn.ReLU
            and _is_pool2(mods[i + 2])):
        return None
    w, b = f"features.{i}.weight", f"features.{i}.bias"
    stock = _layer_op(norm, f"features.{i}")

    def tail(p, x):
        if x.shape[-1] % 2 or x.shape[-2] % 2:   # odd sizes: avg_pool2d floors
            return F.avg_pool2d(F.relu(stock(p, x)), 2)
        return _NormReLUPool.apply(x, p[w], p[b], norm.eps, batch)[0]
    return tail


def convnet_plan(model: nn.Module) -> list[Callable] | None:
    """The ConvNet's layers as functional ops, or None when one of them is not covered."""
    if not isinstance(model, ConvNet):
        return None
    mods, ops, i = list(model.features), [], 0
    while i < len(mods):
        op = _tail_op(mods, i)
        ops.append(op or _layer_op(mods[i], f"features.{i}"))
        i += 3 if op else 1
    if any(op is None for op in ops) or type(model.classifier) is not nn.Linear:
        return None
    head = lambda p, x: F.linear(x.flatten(1), p["classifier.weight"], p["classifier.bias"])
    return ops + [head]
