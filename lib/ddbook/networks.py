"""Networks: the ConvNet family, AlexNet and VGG-11, a seeded factory, and pure-function students.

Source: papers.md §1.1 (architectures, named variants, parameter counts) and §1.5 (the flat
parameter vector of ReparamModule: ``torch.cat([p.reshape(-1) for p in model.parameters()])``).
ResNet-18 and its variants live in :mod:`ddbook.resnet`.
"""
from __future__ import annotations

import ctypes
import os
import re
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from . import ckernels
from .resnet import ResNet18, resnet_norm

__all__ = ["ConvNet", "AlexNet", "VGG11", "ResNet18", "get_network", "network_names",
           "functional_forward", "flatten_params", "unflatten_params", "count_params",
           "keep_cpu_memory", "release_cpu_memory"]

NORMS = ("instance", "batch", "layer", "group", "none")
POOLINGS = ("avg", "max", "none")
ACTIVATIONS = ("relu", "sigmoid", "leakyrelu")


def _check_choice(kind: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"unknown {kind} {value!r}; valid: {list(valid)}")


def make_norm(norm: str, shape: tuple[int, int, int]) -> nn.Module | None:
    """Return the ConvNet norm layer for features of shape ``(C, H, W)``, or None for "none".

    Source: papers.md §1.1, "Norm options". Layer norm normalises over (C, H, W) with an
    elementwise affine of that full shape, so its parameter count depends on the image size.
    Used in: ConvNet.
    """
    _check_choice("norm", norm, NORMS)
    c = shape[0]
    if norm == "instance":
        return nn.GroupNorm(c, c, affine=True)
    if norm == "batch":
        return nn.BatchNorm2d(c, affine=True)
    if norm == "layer":
        return nn.LayerNorm(list(shape), elementwise_affine=True)
    if norm == "group":
        return nn.GroupNorm(4, c, affine=True)
    return None


def make_activation(activation: str) -> nn.Module:
    """Return the ConvNet activation (ReLU, sigmoid, or leaky ReLU with slope 0.01)."""
    _check_choice("activation", activation, ACTIVATIONS)
    if activation == "relu":
        return nn.ReLU()
    return nn.Sigmoid() if activation == "sigmoid" else nn.LeakyReLU(0.01)


def convnet_layers(channels: int, width: int, depth: int, norm: str, pooling: str,
                   activation: str, im_size: tuple) -> tuple[list[nn.Module], list[int]]:
    """Return the ConvNet feature layers and the feature shape ``[C, H, W]`` they output.

    Source: papers.md §1.1, "One block": conv 3x3 (padding 3 on the first layer of 1-channel
    input, so 28x28 MNIST becomes 32x32), norm, activation, 2x2 pool with stride 2.
    Used in: ConvNet.
    """
    _check_choice("pooling", pooling, POOLINGS)
    if depth < 1 or width < 1:
        raise ValueError(f"ConvNet needs depth >= 1 and width >= 1, got {depth=}, {width=}")
    layers, shape = [], [channels, *im_size]
    for d in range(depth):
        pad = 3 if channels == 1 and d == 0 else 1
        layers.append(nn.Conv2d(shape[0], width, kernel_size=3, padding=pad))
        shape = [width, shape[1] + 2 * pad - 2, shape[2] + 2 * pad - 2]
        norm_layer = make_norm(norm, tuple(shape))
        layers += [norm_layer] if norm_layer is not None else []
        layers.append(make_activation(activation))
        if pooling != "none":
            pool = nn.AvgPool2d if pooling == "avg" else nn.MaxPool2d
            layers.append(pool(2, stride=2))
            shape = [width, shape[1] // 2, shape[2] // 2]
        if min(shape[1:]) < 1:
            raise ValueError(f"im_size {tuple(im_size)} is too small for a depth-{depth} ConvNet")
    return layers, shape


# Fast CPU path of a ConvNet block (measured in benchmarks/README.md). On the CPU a block's time
# goes to its convolution and, nearly as much, to memory traffic of the (B, W, 32, 32) activations:
# eager GroupNorm -> ReLU -> AvgPool2d makes a full-size tensor per op, and avg_pool2d's NCHW
# kernels read it slowly (~5x a copy). The fused ops below compute the same maths with fewer
# passes: native group norm, ReLU in place, the 2x2 mean as two strided adds; backward is one
# half-size copy and one broadcast threshold_backward (ReLU and pool at once), then
# native_group_norm_backward, the kernel nn.GroupNorm's backward calls. Backward is made of
# differentiable ATen ops, so create_graph=True, torch.func.grad and vmap work as with the
# separate modules. CUDA and other dtypes keep the stock modules (not measured there).


def _avg_pool2(x: torch.Tensor) -> torch.Tensor:
    """``F.avg_pool2d(x, 2)`` for (N, C, H, W) with even H, W; strided adds where that is faster."""
    if x.is_contiguous():  # NCHW: avg_pool2d's kernel is slow here; channels-last's is fast
        rows = x[:, :, 0::2] + x[:, :, 1::2]  # (N, C, H/2, W)
        return (rows[..., 0::2] + rows[..., 1::2]).mul_(0.25)  # (N, C, H/2, W/2)
    return F.avg_pool2d(x, 2)


def _unpool2(grad: torch.Tensor) -> torch.Tensor:
    """The adjoint of 2x2 mean pooling on NCHW: each value, times 1/4, copied to its 2x2 block
    (W first, then H)."""
    n, c, h, w = grad.shape
    row = (grad * 0.25).unsqueeze(-1).expand(n, c, h, w, 2).reshape(n, c, h, 2 * w)
    return row.unsqueeze(3).expand(n, c, h, 2, 2 * w).reshape(n, c, 2 * h, 2 * w)


def _relu_pool_grad(grad: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Gradient (N, C, H, W) wrt the input of ``_avg_pool2(relu(.))``; ``out`` is relu's input
    or output (only where it is > 0 is read)."""
    n, c, h, w = out.shape
    if out.is_contiguous():  # copy the pooled grad twice along W; broadcast it along H for free
        g = (grad * 0.25).unsqueeze(-1).expand(n, c, h // 2, w // 2, 2).reshape(n, c, h // 2, w)
        g = g.unsqueeze(3).expand(n, c, h // 2, 2, w)  # a size-2 dim inside would be 6x slower
        gx = torch.ops.aten.threshold_backward(g, out.view(n, c, h // 2, 2, w), 0)
        return gx.view(n, c, h, w)
    cl = torch.channels_last
    if out.is_contiguous(memory_format=cl) and grad.is_contiguous(memory_format=cl):
        # NHWC (batch-norm ConvNets on the CPU): the same broadcast in one pass, without the
        # zero fill and scatter of avg_pool2d_backward; x / 4 and x * 0.25 round alike. (A
        # gradient in another layout, e.g. from the flattening classifier, keeps the stock path:
        # converting it cannot run under vmap.)
        g = (grad * 0.25).permute(0, 2, 3, 1)                            # (N, H/2, W/2, C)
        g = g.unsqueeze(2).unsqueeze(4).expand(n, h // 2, 2, w // 2, 2, c)
        o = out.permute(0, 2, 3, 1).view(n, h // 2, 2, w // 2, 2, c)
        gx = torch.ops.aten.threshold_backward(g, o, 0)
        return gx.reshape(n, h, w, c).permute(0, 3, 1, 2)                 # channels-last
    g = torch.ops.aten.avg_pool2d_backward(grad, out, [2, 2], [2, 2], [0, 0], False, True, None)
    return torch.ops.aten.threshold_backward(g, out, 0)


class _InstanceReLUPool(torch.autograd.Function):
    """``avg_pool2d(relu(group_norm(x, C, weight, bias, eps)), 2)``: one ConvNet block's tail.

    Saves only the block's input: backward recomputes the normalised activation with the same
    kernel (so the ReLU mask is bit-identical), which keeps less memory than the stock modules.
    """
    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, eps):
        n, c, h, w = x.shape
        y, mean, rstd = torch.native_group_norm(x, weight, bias, n, c, h * w, c, eps)
        return _avg_pool2(y.relu_()), mean, rstd

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1], output[2])
        ctx.save_for_backward(*inputs[:3], output[1], output[2])
        ctx.eps = inputs[3]

    @staticmethod
    def backward(ctx, grad, *_):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        n, c, h, w = x.shape
        with torch.no_grad():
            y = torch.native_group_norm(x, weight, bias, n, c, h * w, c, ctx.eps)[0]
        gy = _relu_pool_grad(grad, y)  # (N, C, H, W); y's sign is all it reads
        del y
        if torch.is_grad_enabled():  # create_graph=True or torch.func.grad: differentiable maths
            return (*_instance_norm_backward(gy, x, weight, ctx.eps), None)
        mask = list(ctx.needs_input_grad[:3])
        gx, gw, gb = torch.ops.aten.native_group_norm_backward(
            gy, x, mean, rstd, weight, n, c, h * w, c, mask)  # not itself differentiable
        return gx, gw, gb, None


def _save_tail(ctx, inputs, output, stats: tuple) -> None:
    """A C-loop tail's context: inputs (x, weight, bias), the outputs ``stats`` (mean, rstd,
    mask) and eps; only the pooled output is differentiable."""
    ctx.mark_non_differentiable(*output[1:])
    ctx.save_for_backward(*inputs[:3], *(output[i] for i in stats))
    ctx.eps = inputs[3]
    ctx.set_materialize_grads(False)


class _InstanceReLUPoolC(torch.autograd.Function):
    """``_InstanceReLUPool`` through the C loops of ``ddbook.ckernels`` (NCHW, float32, CPU):
    the forward saves the 1-byte ReLU mask and the statistics, the backward reads them (two
    passes, no recomputation). A create_graph backward takes the differentiable tensor maths."""

    @staticmethod
    def forward(x, weight, bias, eps):
        return ckernels.tail_forward(x, weight, bias, eps, False)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save_tail(ctx, inputs, output, (1, 2, 3))

    @staticmethod
    def backward(ctx, grad, *_):
        if grad is None:
            return None, None, None, None
        x, weight, _, mean, rstd, mask = ctx.saved_tensors
        if torch.is_grad_enabled():   # create_graph: differentiable maths, as _InstanceReLUPool
            return (*_instance_norm_backward(_unpool2(grad) * mask, x, weight, ctx.eps), None)
        return (*ckernels.tail_backward(grad, x, weight, mean, rstd, mask, False), None)


def _instance_norm_backward(gy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                            eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (x, weight, bias) of instance norm given ``gy``, as differentiable tensor maths.

    The statistics are recomputed from ``x`` so that second derivatives see their dependence on it.
    """
    centred = x - x.mean(dim=(2, 3), keepdim=True)
    rstd = (centred.square().mean(dim=(2, 3), keepdim=True) + eps).rsqrt()  # (N, C, 1, 1)
    xhat = centred * rstd
    g = gy * weight[:, None, None]
    gx = (g - g.mean(dim=(2, 3), keepdim=True)
          - xhat * (g * xhat).mean(dim=(2, 3), keepdim=True)) * rstd
    return gx, (gy * xhat).sum(dim=(0, 2, 3)), gy.sum(dim=(0, 2, 3))


class _ReLUPool(torch.autograd.Function):
    """``avg_pool2d(relu(x), 2)``: the tail of a block with batch/layer/no norm."""
    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        y = torch.relu(x)
        return _avg_pool2(y), y

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])
        ctx.set_materialize_grads(False)   # no full-size zero gradient for the saved y

    @staticmethod
    def backward(ctx, grad, _):
        return None if grad is None else _relu_pool_grad(grad, ctx.saved_tensors[0])


class _BatchReLUPool(torch.autograd.Function):
    """``avg_pool2d(relu(batch_norm(x)), 2)`` on the batch's statistics for channels-last CPU
    activations, through the C loops of ``ddbook.ckernels`` (one pass for the statistics, one
    for the output; the backward two): the block tail of a ConvNet-BN network in training. The
    running statistics are updated by the caller from the returned mean and variance. A
    create_graph backward recomputes the block with the stock ops and differentiates that."""

    @staticmethod
    def forward(x, weight, bias, eps):
        return ckernels.bn_cl_forward(x, weight, bias, eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save_tail(ctx, inputs, output, (1, 3, 4))

    @staticmethod
    def backward(ctx, grad, *_):
        if grad is None:
            return None, None, None, None
        x, weight, bias, mean, rstd, mask = ctx.saved_tensors
        if torch.is_grad_enabled():   # create_graph: a differentiable recomputation
            with torch.enable_grad():
                y = F.batch_norm(x, None, None, weight, bias, True, 0.0, ctx.eps)
                out = F.avg_pool2d(F.relu(y), 2)
                return (*torch.autograd.grad(out, (x, weight, bias), grad, create_graph=True),
                        None)
        return (*ckernels.bn_cl_backward(grad, x, weight, mean, rstd, mask), None)


class _ConvCL(torch.autograd.Function):
    """``F.conv2d(x, weight, bias, padding=1)`` (3x3) in a channels-last training network,
    through the C loops of ``ddbook.ckernels``, the output channels-last: a first layer (1-4
    input channels, an input that needs no gradient) by the direct loops of ``_conv.c``
    (``winograd`` False), a wider layer (channels multiples of 16, even height and width) by
    Winograd F(2x2, 3x3) (``_wino.c``: 16 multiply-adds per 2x2 output tile and channel pair
    instead of 36, for the forward and both gradients). A create_graph backward differentiates
    the stock convolution instead."""

    @staticmethod
    def forward(ctx, x, weight, bias, winograd):
        if not winograd:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx.save_for_backward(x, weight)
        ctx.has_bias, ctx.winograd = bias is not None, winograd
        conv = ckernels.wino_forward if winograd else ckernels.conv3_cl_forward
        return conv(x, weight.contiguous(), bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        want_x, want_w, want_b = ctx.needs_input_grad[:3]
        want_b = want_b and ctx.has_bias
        if torch.is_grad_enabled():   # create_graph: a differentiable recomputation
            wanted = [t for t, on in ((x, want_x), (weight, want_w)) if on]
            got = []
            if wanted:
                with torch.enable_grad():
                    got = list(torch.autograd.grad(F.conv2d(x, weight, None, padding=1), wanted,
                                                   grad, create_graph=True))
            return (got.pop(0) if want_x else None, got.pop(0) if want_w else None,
                    grad.sum((0, 2, 3)) if want_b else None, None)
        grad = grad.contiguous(memory_format=torch.channels_last)
        gx = gw = gb = None
        if want_x:   # routed for Winograd only (a first layer's input needs no gradient)
            gx = ckernels.wino_grad_input(grad, weight.contiguous())
        if want_w or want_b:
            gw, gb = (ckernels.wino_grad_weight if ctx.winograd
                      else ckernels.conv3_cl_grad_weight)(x, grad)
        return gx, gw if want_w else None, gb if want_b else None, None


C_FIRST_CONV_CL = True   # the switches for _ConvCL's two kinds of layers, and C_WINOGRAD for
C_WINOGRAD = True        # the student's Winograd convolutions too (benchmarks turn them off)


def _conv3x3_pad1(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.kernel_size == (3, 3) and m.stride == (1, 1)
            and m.padding == (1, 1) and m.dilation == (1, 1) and m.groups == 1
            and m.padding_mode == "zeros")


def _wino_shapes(m: nn.Module, x: torch.Tensor) -> bool:
    """True when Winograd may compute ``m(x)`` (``C_WINOGRAD`` on): a 3x3, stride-1, padding-1
    convolution of channels in multiples of 16 on a 4-d input of even height and width."""
    return (C_WINOGRAD and _conv3x3_pad1(m) and m.in_channels % 16 == 0
            and m.out_channels % 16 == 0 and x.dim() == 4 and x.shape[-1] % 2 == 0
            and x.shape[-2] % 2 == 0)


def _conv_function(m: nn.Module, x: torch.Tensor) -> bool | None:
    """How ``_ConvCL`` computes ``m(x)`` in a channels-last training network: False for a first
    layer by the direct C loops (1-4 input channels, an input that needs no gradient), True for
    a wider layer by Winograd (channels multiples of 16, a channels-last input of even height
    and width), None when it does not. Both need a 3x3, stride-1, padding-1 convolution with a
    multiple of 16 output channels whose weight is a channels-last leaf (not a functional
    student's view), float32 CPU tensors and the C loops on (``ckernels.convolutions_wanted``:
    under ``auto``, one torch thread)."""
    if not (_conv3x3_pad1(m) and m.out_channels % 16 == 0 and x.dim() == 4
            and m.weight.grad_fn is None and x.dtype == torch.float32
            and m.weight.dtype == torch.float32
            and ckernels.usable(m.weight, channels_last=True) and ckernels.usable(m.bias)
            and ckernels.convolutions_wanted()):
        return None
    if (C_FIRST_CONV_CL and m.in_channels <= 4 and not x.requires_grad
            and (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last))
            and ckernels.usable(x, channels_last=not x.is_contiguous())):
        return False
    if _wino_shapes(m, x) and ckernels.usable(x, channels_last=True):
        return True
    return None


def _wino_nchw(m: nn.Module, x: torch.Tensor) -> bool:
    """True when ``m(x)`` runs as the student's NCHW Winograd op (``fused._Wino3x3``, every
    derivative again one of its loops) in an NCHW network (instance norm): a 3x3, stride-1,
    padding-1 convolution of channels in multiples of 16 on an input of even height and width,
    contiguous float32 CPU tensors, the C loops on."""
    return (_wino_shapes(m, x) and x.dtype == torch.float32
            and m.weight.dtype == torch.float32 and ckernels.usable(x, m.weight, m.bias)
            and ckernels.convolutions_wanted())


def _batch_relu_pool(norm: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """The fused tail in place of ``norm`` -> ReLU -> AvgPool2d(2), with ``norm``'s running
    statistics updated as ``nn.BatchNorm2d`` does in training (momentum, or the cumulative
    average when momentum is None; the unbiased variance)."""
    out, mean, var, _, _ = _BatchReLUPool.apply(x, norm.weight, norm.bias, norm.eps)
    if norm.track_running_stats and norm.running_mean is not None:
        with torch.no_grad():
            norm.num_batches_tracked.add_(1)
            f = (norm.momentum if norm.momentum is not None
                 else 1.0 / float(norm.num_batches_tracked))
            s = x.numel() // x.shape[1]
            norm.running_mean.mul_(1 - f).add_(mean, alpha=f)
            norm.running_var.mul_(1 - f).add_(var * (s / max(s - 1, 1)), alpha=f)
    return out


def _is_pool2(m: nn.Module) -> bool:
    return (type(m) is nn.AvgPool2d and m.kernel_size in (2, (2, 2)) and m.stride in (2, (2, 2))
            and m.padding in (0, (0, 0)) and not m.ceil_mode and m.divisor_override is None)


def _fusable(mods: list[nn.Module], i: int, x: torch.Tensor) -> int:
    """How many modules from ``mods[i]`` one fused op replaces for input ``x``: 3, 2 or 0; 4
    means 3 through the C loops (batch norm in training, channels-last)."""
    if (x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4
            or x.shape[-1] % 2 or x.shape[-2] % 2):
        return 0
    if i + 2 < len(mods) and type(mods[i + 1]) is nn.ReLU and _is_pool2(mods[i + 2]):
        norm = mods[i]
        if (type(norm) is nn.GroupNorm and norm.num_groups == norm.num_channels and norm.affine
                and norm.weight.dtype == torch.float32
                and (norm.weight.grad_fn is None or not torch.is_grad_enabled())):
            return 3
        # A weight with a history is a functional student (a view of a flat vector) whose
        # backward will be differentiated again: there the fused op's create_graph backward
        # kept ~1.5x the memory of nn.GroupNorm's (5-step unroll: 4.2 vs 2.8 GiB), so it stays.
        if (type(norm) is nn.BatchNorm2d and norm.affine and x.shape[1] > 1
                and (norm.training or not norm.track_running_stats)
                and norm.weight.dtype == torch.float32 and norm.weight.grad_fn is None
                and not x.is_contiguous()
                and ckernels.usable(x, norm.weight, norm.bias, channels_last=True)):
            return 4   # batch norm -> ReLU -> pool through the C loops (channels-last)
    if i + 1 < len(mods) and type(mods[i]) is nn.ReLU and _is_pool2(mods[i + 1]):
        return 2
    return 0


class ConvNetFeatures(nn.Sequential):
    """``nn.Sequential`` of ConvNet blocks whose norm-ReLU-pool tails run fused on the CPU, and
    whose 3x3 convolutions the C loops may compute (``_ConvCL``, ``fused._Wino3x3``).

    Same modules, parameters and results as the plain Sequential (tests/test_networks.py checks
    values and gradients to 1e-5); only the number of passes over memory, or of multiplications,
    differs. Forward hooks on a fused GroupNorm/ReLU/AvgPool2d, or on a convolution the C loops
    compute, do not fire on the CPU (run under ``ckernels.kernels_as("torch")`` to trace them).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mods, i = list(self), 0
        while i < len(mods):
            n = _fusable(mods, i, x)
            if n == 4:
                x, n = _batch_relu_pool(mods[i], x), 3
            elif n == 3:
                norm = mods[i]
                fn = (_InstanceReLUPoolC if ckernels.usable(x, norm.weight, norm.bias)
                      else _InstanceReLUPool)
                x = fn.apply(x, norm.weight, norm.bias, norm.eps)[0]
            elif n == 2:
                x = _ReLUPool.apply(x)[0]
            elif (winograd := _conv_function(mods[i], x)) is not None:
                x, n = _ConvCL.apply(x, mods[i].weight, mods[i].bias, winograd), 1
            elif _wino_nchw(mods[i], x):
                from .fused import _Wino3x3   # (fused imports this module)
                x, n = _Wino3x3.apply(x, mods[i].weight, mods[i].bias), 1
            else:
                x, n = mods[i](x), 1
            i += n
        return x


class ConvNet(nn.Module):
    """The distillation student: ``depth`` conv blocks and one linear layer; logits ``(B, K)``.

    Source: papers.md §1.1 (MTT/DATM/SelMatch ``ConvNet``; defaults width 128, depth 3, instance
    norm, ReLU, average pooling). Layers sit in ``features`` (an ``nn.Sequential``) and
    ``classifier``, as in the reference, so names and ``parameters()`` order agree with it.
    Used in: every distillation and evaluation notebook (through get_network).
    """

    def __init__(self, channels: int = 3, num_classes: int = 10, width: int = 128, depth: int = 3,
                 norm: str = "instance", pooling: str = "avg", activation: str = "relu",
                 im_size: tuple = (32, 32)):
        super().__init__()
        layers, shape = convnet_layers(channels, width, depth, norm, pooling, activation, im_size)
        self.features = ConvNetFeatures(*layers)
        self.classifier = nn.Linear(shape[0] * shape[1] * shape[2], num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, C*h*w)`` of images ``x`` ``(B, channels, H, W)``."""
        return torch.flatten(self.features(x), 1)  # reshape, not view: channels-last safe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class AlexNet(nn.Module):
    """AlexNet as adapted by DC for 32x32 images: five convs, three max-pools, one linear layer.

    Source: papers.md §1.1 table: conv 128-5x5 / 192-5x5 / 256-3x3 / 192-3x3 / 192-3x3 with ReLU,
    max-pools after the 1st, 2nd and 5th conv; padding 2 on the first conv (4 for 1-channel).
    The reference names the linear layer ``fc``; here it is ``classifier`` like every network.
    Used in: cross-architecture evaluation (get_network("AlexNet")).
    """

    def __init__(self, channels: int = 3, num_classes: int = 10, im_size: tuple = (32, 32)):
        super().__init__()
        pad = 4 if channels == 1 else 2
        self.features = nn.Sequential(
            nn.Conv2d(channels, 128, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2, stride=2),
            nn.Conv2d(128, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, stride=2),
            nn.Conv2d(192, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 192, 3, padding=1), nn.ReLU(),
            nn.Conv2d(192, 192, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, stride=2))
        h, w = ((s + 2 * pad - 4) // 8 for s in im_size)  # (B, 192, 4, 4) on 32x32
        if h < 1 or w < 1:
            raise ValueError(f"im_size {tuple(im_size)} is too small for AlexNet")
        self.classifier = nn.Linear(192 * h * w, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.features(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


VGG11_CONFIG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11(nn.Module):
    """VGG-11 with a norm after every conv and one linear layer on the ``512*h*w`` features.

    Source: papers.md §1.1 table: config 64-M-128-M-256-256-M-512-512-M-512-512-M, conv 3x3 with
    bias, instance norm (GroupNorm(C, C)) by default, batch norm for VGG11BN; Linear(512, K).
    Used in: cross-architecture evaluation (get_network("VGG11"), get_network("VGG11BN")).
    """

    def __init__(self, channels: int = 3, num_classes: int = 10, norm: str = "instance",
                 im_size: tuple = (32, 32)):
        super().__init__()
        layers, c, (h, w) = [], channels, im_size
        for i, v in enumerate(VGG11_CONFIG):
            if v == "M":
                layers.append(nn.MaxPool2d(2, stride=2))
                h, w = h // 2, w // 2
                continue
            pad = 3 if channels == 1 and i == 0 else 1
            layers += [nn.Conv2d(c, v, 3, padding=pad), resnet_norm(norm, v), nn.ReLU()]
            c, h, w = v, h + 2 * pad - 2, w + 2 * pad - 2
        if h < 1 or w < 1:
            raise ValueError(f"im_size {tuple(im_size)} is too small for VGG-11")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512 * h * w, num_classes)  # (B, 512) on 32x32

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.features(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


# Reference name -> (class, keyword arguments). ConvNetD<n> and ConvNetW<n> are parsed instead.
# Unlike the reference, every name passes im_size through (there, ConvNetBN & co. assume 32x32).
_NAMED = {
    "ConvNet": (ConvNet, {}),
    "ConvNetBN": (ConvNet, {"norm": "batch"}), "ConvNetIN": (ConvNet, {"norm": "instance"}),
    "ConvNetLN": (ConvNet, {"norm": "layer"}), "ConvNetGN": (ConvNet, {"norm": "group"}),
    "ConvNetNN": (ConvNet, {"norm": "none"}),
    "ConvNetMP": (ConvNet, {"pooling": "max"}), "ConvNetAP": (ConvNet, {"pooling": "avg"}),
    "ConvNetNP": (ConvNet, {"pooling": "none"}),
    "ConvNetAS": (ConvNet, {"activation": "sigmoid"}),
    "ConvNetAR": (ConvNet, {"activation": "relu"}),
    "ConvNetAL": (ConvNet, {"activation": "leakyrelu"}),
    "ConvNetD4BN": (ConvNet, {"depth": 4, "norm": "batch"}),
    "ResNet18": (ResNet18, {}), "ResNet18BN": (ResNet18, {"norm": "batch"}),
    "ResNet18_AP": (ResNet18, {"avg_pool": True}),
    "ResNet18BN_AP": (ResNet18, {"norm": "batch", "avg_pool": True}),
    "ResNet18_Tiny": (ResNet18, {"stem_stride": 2}),
    "ResNet18BN_Tiny": (ResNet18, {"norm": "batch", "stem_stride": 2}),
    "AlexNet": (AlexNet, {}),
    "VGG11": (VGG11, {}), "VGG11BN": (VGG11, {"norm": "batch"}),
}
_PATTERN = re.compile(r"ConvNet([DW])([1-9][0-9]*)")


def network_names() -> list[str]:
    """Names get_network accepts (``<n>`` is a positive integer)."""
    return [*_NAMED, "ConvNetD<n> (depth n, e.g. ConvNetD1..ConvNetD8)",
            "ConvNetW<n> (width n, e.g. ConvNetW32..ConvNetW1024)"]


def _resolve(name: str, width: int | None, depth: int | None) -> tuple[type, dict]:
    """Return the class and keyword arguments for a reference network name."""
    match = _PATTERN.fullmatch(name)
    if match:
        cls, kwargs = ConvNet, {"depth" if match[1] == "D" else "width": int(match[2])}
    elif name in _NAMED:
        cls, kwargs = _NAMED[name][0], dict(_NAMED[name][1])
    else:
        raise ValueError(f"unknown network {name!r}; valid names: {network_names()}")
    for key, value in (("width", width), ("depth", depth)):
        if value is None:
            continue
        if cls is not ConvNet:
            raise ValueError(f"{key}= applies to the ConvNet family only, not {name!r}")
        if kwargs.get(key, value) != value:
            raise ValueError(f"{name!r} fixes {key}={kwargs[key]}, but {key}={value} was given")
        kwargs[key] = value
    return cls, kwargs


def get_network(name: str, num_classes: int, im_size: tuple = (32, 32), channels: int = 3,
                width: int | None = None, depth: int | None = None, *, seed: int | None = None,
                generator: torch.Generator | None = None, device: str | torch.device | None = None,
                memory_format: torch.memory_format | None = None) -> nn.Module:
    """Return the network ``name`` (a reference name, papers.md §1.1) with a reproducible init.

    Source: the reference ``get_network``, without its clock re-seeding (STYLE.md §4.3).
    The init is PyTorch's default, drawn from ``seed`` (or one integer drawn from ``generator``)
    in a forked CPU RNG, so the global RNG is neither read nor advanced; with neither given it
    comes from the global RNG like a plain ``nn.Module``. ``device`` defaults to CUDA when present;
    on the CPU it calls keep_cpu_memory() (process-wide; DDBOOK_KEEP_CPU_MEMORY=0 opts out).
    ``width``/``depth`` override the ConvNet defaults (e.g. a width-32 student at ``quick``).
    ``memory_format`` None picks the faster layout measured on the CPU (benchmarks/README.md):
    channels-last for batch-norm ConvNets, contiguous otherwise (instance norm's backward is
    several times slower channels-last); on CUDA, contiguous. Results agree either way to ~1e-6.
    Used in: experts, evaluation and distillation notebooks.
    """
    cls, kwargs = _resolve(name, width, depth)
    if seed is not None and generator is not None:
        raise ValueError("pass seed or generator, not both")
    if generator is not None:
        seed = int(torch.randint(0, 2**62, (), generator=generator))
    kwargs.update(channels=channels, num_classes=num_classes, im_size=tuple(im_size))
    if seed is None:
        model = cls(**kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # CPU only: leaves CUDA's global RNG alone
            model = cls(**kwargs)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":
        keep_cpu_memory()  # freed activations are reused, not unmapped and faulted in again
    if memory_format is None:
        bn_convnet = cls is ConvNet and kwargs.get("norm") == "batch"
        memory_format = torch.channels_last if device.type == "cpu" and bn_convnet \
            else torch.contiguous_format
    return model.to(device=device, memory_format=memory_format)


_KEEP_MEMORY = {"done": False}


def keep_cpu_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse; True if it did (Linux/glibc only).

    Source: benchmarks/README.md. Each training step allocates and frees its activations (about
    0.5 GB at batch 256 for ConvNet-3 w128). glibc gives every block over 32 MB back to the
    kernel with munmap and maps it afresh next step; on the book's VM every fresh page faults
    into the host, costing more than the arithmetic (the stock expert step runs 1.2-4x slower).
    This serves all blocks from the heap and never trims it. Cost: the process keeps its
    high-water mark, which fragmentation puts above the live peak (batch 256: +0.3 GiB with
    instance norm, up to +0.6 GiB with batch norm); release_cpu_memory() hands free memory back.
    Opt out with the environment variable DDBOOK_KEEP_CPU_MEMORY=0. Process-wide, idempotent.
    Used in: get_network (CPU devices).
    """
    if _KEEP_MEMORY["done"]:
        return True
    if os.environ.get("DDBOOK_KEEP_CPU_MEMORY", "1").strip() in ("0", "false", "no"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
        ok = libc.mallopt(m_mmap_max, 0) == 1 and libc.mallopt(m_trim_threshold, -1) == 1
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
    _KEEP_MEMORY["done"] = ok
    return ok


def release_cpu_memory() -> bool:
    """Return the heap's free memory to the OS (glibc ``malloc_trim(0)``); True if any was."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def count_params(model: nn.Module) -> int:
    """Number of scalar parameters (buffers such as BN running stats are not counted)."""
    return sum(p.numel() for p in model.parameters())


def flatten_params(model: nn.Module) -> torch.Tensor:
    """Return a detached copy ``(P,)`` of all parameters, concatenated in ``parameters()`` order.

    Source: papers.md §1.5/§1.6: the layout of ReparamModule's ``flat_param`` and of a flattened
    expert snapshot. Used in: experts, matching (the student's starting point).
    """
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def unflatten_params(model: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Return ``{name: view of flat}`` shaped like ``model.named_parameters()``; keeps autograd.

    Source: papers.md §1.5 (ReparamModule's views of one flat vector). Used in: functional_forward.
    """
    total = count_params(model)
    if flat.dim() != 1 or flat.numel() != total:
        raise ValueError(f"flat must have shape ({total},) for this model, got {tuple(flat.shape)}")
    out, start = {}, 0
    for name, p in model.named_parameters():
        out[name] = flat[start:start + p.numel()].view(p.shape)
        start += p.numel()
    return out


def functional_forward(model: nn.Module, params: dict[str, torch.Tensor] | torch.Tensor,
                       x: torch.Tensor,
                       buffers: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Return ``model(x)`` computed with ``params`` (a dict or a flat ``(P,)`` vector) instead.

    Source: papers.md §1.5; ``torch.func.functional_call`` replaces ReparamModule. Gradients flow
    to ``params`` and ``x`` (``create_graph=True`` for unrolled students). Buffers not given are
    the module's own; in training mode BN updates them in place, as in the reference.
    Used in: matching (the unrolled student), tests.
    """
    if isinstance(params, torch.Tensor):
        params = unflatten_params(model, params)
    tensors = {**params, **(buffers or {})}
    return functional_call(model, tensors, (x,))
