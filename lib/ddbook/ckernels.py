"""A ConvNet block's norm -> ReLU -> 2x2 pool tail (``_tail.c``) and its 3x3 convolutions
(``_conv.c``: direct, for few input channels; ``_wino.c``: Winograd F(2x2, 3x3), for channels in
multiples of 16) as C loops, built on first use.

``ddbook.fused._NormReLUPool`` (norm -> ReLU -> 2x2 mean pool, instance or batch norm) and its
first and second derivatives are long chains of full-size elementwise torch ops: about a third of
a width-32 distillation iteration on the CPU (benchmarks/README.md, ``profile_distill.py``).
``_tail.c`` computes each of the three in two or three passes over its planes. ``_conv.c`` has
the convolution on 1-4 input channels (RGB images) and its two adjoints, which the native NCHW
kernels compute at a quarter to a half of the machine's peak in a distillation iteration's
double backward (``fused._Conv3x3``), and a channels-last forward and weight gradient for a
batch-norm network's first layer in training. ``_wino.c`` computes the wider convolutions, their
input and weight gradients with 16 multiply-adds per 2x2 output tile and channel pair instead of
36, NCHW (the student, ``fused._Wino3x3``; instance-norm networks in training) or channels-last
(batch-norm networks in training, ``networks._ConvCL``). All are compiled once per source,
compiler and CPU with the system C compiler (``$CC``, else ``cc``) into the cache folder, and
called through ctypes: no Python headers, no build step at install.

``DDBOOK_KERNELS`` chooses:

- ``auto`` (default): the C loops when they build, else the torch ops, with one warning that
  says why (the maths is the same; only the rounding differs);
- ``c``: the C loops, or a clear error when they cannot be built;
- ``torch``: the torch ops (``ddbook.fused``, ``F.conv2d``), as before these loops existed.

``_tail.c`` also has the tail of ConvNet networks in training (``ddbook.networks``: batch norm
channels-last, instance norm NCHW; first derivative only). ``networks.C_FIRST_CONV_CL`` and
``networks.C_WINOGRAD`` switch the convolutions off for comparisons (benchmarks/). Which code ran
is part of every result's provenance (:func:`describe`). They are used only for contiguous
float32 CPU tensors; CUDA and other dtypes always take the torch ops. The loops are
single-threaded (the book's CPU runs are one process per core): tests/test_ckernels.py checks
them against the torch ops to float tolerance.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

__all__ = ["mode", "library", "describe", "usable", "convolutions_wanted", "tail_forward",
           "tail_backward", "tail_double_backward", "bn_cl_forward", "bn_cl_backward", "conv3_forward",
           "conv3_grad_input", "conv3_grad_weight", "conv3_cl_forward", "conv3_cl_grad_weight",
           "wino_forward", "wino_grad_input", "wino_grad_weight", "recorded_mode", "kernels_as",
           "KernelBuildError"]

_SOURCES = [Path(__file__).with_name(f) for f in ("_tail.c", "_conv.c", "_wino.c")]
_HEADERS = [Path(__file__).with_name("_simd.h")]   # in the build's key, not on its command line
_FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-std=gnu11", "-shared",
          "-fPIC"]
_MODES = ("auto", "c", "torch")
_CL = torch.channels_last


class KernelBuildError(RuntimeError):
    """The C loops were asked for (``DDBOOK_KERNELS=c``) and cannot be built or loaded."""


def mode() -> str:
    """``DDBOOK_KERNELS`` (auto, c or torch); anything else is refused with the fix."""
    value = os.environ.get("DDBOOK_KERNELS", "auto").strip().lower() or "auto"
    if value not in _MODES:
        raise ValueError(f"DDBOOK_KERNELS={value!r} is not one of {', '.join(_MODES)}. Fix: "
                         f"unset it (auto: the C loops when they build) or choose one of those")
    return value


def convolutions_wanted() -> bool:
    """Whether the convolution loops (``_conv.c``, ``_wino.c``) replace oneDNN's: always under
    ``c``; under ``auto`` only while torch runs on one thread (the book's CPU runs: one process
    per core). The loops are single-threaded: at 2 threads Winograd measured 1.09x (batch norm)
    and 0.92x (instance norm) oneDNN's training step on both threads (benchmarks/README.md), and
    more threads favour oneDNN further."""
    return mode() == "c" or torch.get_num_threads() == 1


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            lines = [l for l in f if l.startswith(("model name", "flags"))][:2]
        return "".join(lines) or platform.processor()
    except OSError:
        return platform.processor() or platform.machine()


def _compiler() -> tuple[str, str]:
    cc = os.environ.get("CC", "cc")
    path = shutil.which(cc)
    if path is None:
        raise KernelBuildError(f"no C compiler: {cc!r} is not on PATH")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    return path, (out.stdout.splitlines() or ["?"])[0]


def _build() -> ctypes.CDLL:
    from .paths import cache_dir
    cc, version = _compiler()
    source = b"\0".join(f.read_bytes() for f in _SOURCES + _HEADERS)
    key = hashlib.sha256(b"\0".join([source, version.encode(), " ".join(_FLAGS).encode(),
                                     _cpu().encode(), sys.platform.encode()])).hexdigest()[:16]
    folder = cache_dir() / "kernels"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"tail-{key}.so"
    if not target.exists():
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".tail-{key}.", suffix=".so")
        os.close(fd)
        try:
            run = subprocess.run([cc, *_FLAGS, "-o", tmp, *map(str, _SOURCES), "-lm"],
                                 capture_output=True, text=True, timeout=300)
            if run.returncode != 0:
                raise KernelBuildError(f"{cc} failed on {' '.join(f.name for f in _SOURCES)}: "
                                       f"{(run.stderr or run.stdout).strip()[-800:]}")
            os.replace(tmp, target)   # whole or not at all; two builders write the same file
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    lib = ctypes.CDLL(str(target))
    i64, c_int, ptr, dbl = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p, ctypes.c_double
    lib.ddb_tail_forward.argtypes = [i64] * 4 + [c_int, ptr, ptr, ptr, dbl] + [ptr] * 4
    lib.ddb_tail_backward.argtypes = [i64] * 4 + [c_int] + [ptr] * 9
    lib.ddb_tail_double_backward.argtypes = [i64] * 4 + [c_int] + [ptr] * 12
    lib.ddb_bn_cl_forward.argtypes = [i64] * 4 + [ptr, ptr, ptr, dbl] + [ptr] * 5
    lib.ddb_bn_cl_backward.argtypes = [i64] * 4 + [ptr] * 9
    lib.ddb_conv3_forward.argtypes = [i64] * 5 + [ptr] * 4
    lib.ddb_conv3_grad_input.argtypes = [i64] * 5 + [ptr] * 3
    lib.ddb_conv3_grad_weight.argtypes = [i64] * 5 + [ptr] * 4
    lib.ddb_conv3_cl_forward.argtypes = [i64] * 5 + [ptr] * 4
    lib.ddb_conv3_cl_grad_weight.argtypes = [i64] * 5 + [ptr] * 4
    lib.ddb_wino_forward.argtypes = [i64] * 5 + [ptr] * 4 + [c_int]
    lib.ddb_wino_grad_input.argtypes = [i64] * 5 + [ptr] * 3 + [c_int]
    lib.ddb_wino_grad_weight.argtypes = [i64] * 5 + [ptr] * 4 + [c_int]
    for f in (lib.ddb_tail_forward, lib.ddb_tail_backward, lib.ddb_tail_double_backward,
              lib.ddb_bn_cl_forward, lib.ddb_bn_cl_backward, lib.ddb_conv3_forward,
              lib.ddb_conv3_grad_input, lib.ddb_conv3_grad_weight, lib.ddb_conv3_cl_forward,
              lib.ddb_conv3_cl_grad_weight, lib.ddb_wino_forward, lib.ddb_wino_grad_input,
              lib.ddb_wino_grad_weight):
        f.restype = c_int
    lib.ddbook_version = version
    return lib


_STATE: dict = {}


def library() -> ctypes.CDLL | None:
    """The loaded C loops, or None when the mode is torch (or auto and they do not build)."""
    m = mode()
    if m == "torch":
        return None
    if "lib" not in _STATE:
        try:
            _STATE["lib"], _STATE["why"] = _build(), None
        except (KernelBuildError, OSError, subprocess.SubprocessError) as e:
            _STATE["lib"], _STATE["why"] = None, str(e)
    if _STATE["lib"] is None:
        if m == "c":
            raise KernelBuildError(f"DDBOOK_KERNELS=c but the C loops cannot be built: "
                                   f"{_STATE['why']}. Fix: install a C compiler (or set CC), or "
                                   f"set DDBOOK_KERNELS=torch")
        if not _STATE.get("warned"):
            _STATE["warned"] = True
            warnings.warn(f"ddbook: the C loops of the block tail cannot be built "
                          f"({_STATE['why']}); using the torch ops (same maths, slower). "
                          f"Set DDBOOK_KERNELS=torch to silence this", stacklevel=2)
    return _STATE["lib"]


def describe(device: str | torch.device | None = None) -> str:
    """What computes the block tails on ``device`` (default: CUDA when present), for a result's
    provenance."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cpu":
        return f"torch ops (ddbook.fused) on {device.type}"
    try:
        lib = library()
    except (KernelBuildError, ValueError) as e:
        return f"unusable ({e})"
    if lib is None:
        return "torch ops (ddbook.fused)"
    convs = "" if convolutions_wanted() else (
        f"; convolutions by the torch ops: {torch.get_num_threads()} threads")
    return (f"C loops (ddbook/_tail.c, _conv.c, _wino.c, {lib.ddbook_version}, "
            f"{' '.join(_FLAGS[:2])}{convs})")


def recorded_mode(kernels: str | None) -> str:
    """``"c"`` or ``"torch"``: the mode a result's recorded ``kernels`` (:func:`describe`) names;
    a result without one was made before the C loops, with the torch ops."""
    return "c" if (kernels or "").startswith("C loops") else "torch"


@contextmanager
def kernels_as(mode: str | None):
    """``DDBOOK_KERNELS`` set to ``mode`` within the block (None: left as it is), then restored
    (:func:`mode` reads it at every call)."""
    if mode is None:
        yield
        return
    old = os.environ.get("DDBOOK_KERNELS")
    os.environ["DDBOOK_KERNELS"] = mode
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("DDBOOK_KERNELS", None)
        else:
            os.environ["DDBOOK_KERNELS"] = old


def usable(*tensors: torch.Tensor | None, channels_last: bool = False) -> bool:
    """True when the C loops are on and every tensor is a plain contiguous (4-d ones
    channels-last, with ``channels_last``) float32 or uint8 CPU tensor: not one that vmap or
    torch.func wraps."""
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    for t in tensors:
        if t is None:
            continue
        layout = _CL if channels_last and t.dim() == 4 else torch.contiguous_format
        if (t.device.type != "cpu" or t.dtype not in (torch.float32, torch.uint8) or wrapped(t)
                or not t.is_contiguous(memory_format=layout)):
            return False
    return library() is not None


def _p(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _check(code: int) -> None:
    if code == 2:
        raise ValueError("ddbook C convolution: shapes outside what its loops take (the caller "
                         "routes only those: networks._conv_function)")
    if code != 0:
        raise MemoryError("ddbook C block tail: out of memory for its work buffers")


def tail_forward(z, weight, bias, eps: float, batch: bool):
    """(pool2(relu(y)), mean, rstd, mask) with y = norm(z): as ``fused._NormReLUPool.forward``."""
    n, c, h, w = z.shape
    out = z.new_empty((n, c, h // 2, w // 2))
    stat = (c,) if batch else (n, c)   # the native kernels' shapes
    mean, rstd = z.new_empty(stat), z.new_empty(stat)
    mask = torch.empty(z.shape, dtype=torch.uint8)
    _check(library().ddb_tail_forward(n, c, h, w, int(batch), _p(z), _p(weight), _p(bias),
                                      float(eps), _p(out), _p(mean), _p(rstd), _p(mask)))
    return out, mean, rstd, mask


def tail_backward(grad, z, weight, mean, rstd, mask, batch: bool):
    """(g_z, g_weight, g_bias) from the pooled gradient: as ``fused._NormReLUPoolBackward``."""
    n, c, h, w = z.shape
    g_z, g_w, g_b = torch.empty_like(z), torch.empty_like(weight), torch.empty_like(weight)
    grad = grad.contiguous()
    _check(library().ddb_tail_backward(n, c, h, w, int(batch), _p(grad), _p(z), _p(weight),
                                       _p(mean), _p(rstd), _p(mask), _p(g_z), _p(g_w), _p(g_b)))
    return g_z, g_w, g_b


def tail_double_backward(grad, z, weight, mean, rstd, mask, a_z, a_w, a_b, batch: bool):
    """(g_grad, g_z, g_weight): the second derivative, as ``_NormReLUPoolBackward.backward``."""
    n, c, h, w = z.shape
    grad = grad.contiguous()
    a_z = None if a_z is None else a_z.contiguous()
    a_w = None if a_w is None else a_w.contiguous()
    a_b = None if a_b is None else a_b.contiguous()
    g_grad, g_z, g_w = torch.empty_like(grad), torch.empty_like(z), torch.empty_like(weight)
    _check(library().ddb_tail_double_backward(
        n, c, h, w, int(batch), _p(grad), _p(z), _p(weight), _p(mean), _p(rstd), _p(mask),
        _p(a_z), _p(a_w), _p(a_b), _p(g_grad), _p(g_z), _p(g_w)))
    return g_grad, g_z, g_w


def bn_cl_forward(x, weight, bias, eps: float):
    """Channels-last ``x`` (N, C, H, W): (pool2(relu(batch_norm(x))), mean, biased var, rstd,
    mask), the output and mask channels-last too."""
    n, c, h, w = x.shape
    out = torch.empty((n, c, h // 2, w // 2), memory_format=_CL)
    mean, var, rstd = x.new_empty(c), x.new_empty(c), x.new_empty(c)
    mask = torch.empty(x.shape, dtype=torch.uint8, memory_format=_CL)
    _check(library().ddb_bn_cl_forward(n, c, h, w, _p(x), _p(weight), _p(bias), float(eps),
                                       _p(out), _p(mean), _p(var), _p(rstd), _p(mask)))
    return out, mean, var, rstd, mask


def bn_cl_backward(grad, x, weight, mean, rstd, mask):
    """(g_x channels-last, g_weight, g_bias) of ``bn_cl_forward``'s output from its gradient."""
    n, c, h, w = x.shape
    grad = grad.contiguous(memory_format=_CL)
    g_x = torch.empty(x.shape, memory_format=_CL)
    g_w, g_b = torch.empty_like(weight), torch.empty_like(weight)
    _check(library().ddb_bn_cl_backward(n, c, h, w, _p(grad), _p(x), _p(weight), _p(mean),
                                        _p(rstd), _p(mask), _p(g_x), _p(g_w), _p(g_b)))
    return g_x, g_w, g_b


def conv3_forward(x, weight, bias):
    """``F.conv2d(x, weight, bias, padding=1)`` for a 3x3 kernel, NCHW (``_conv.c``)."""
    n, c, h, w = x.shape
    y = x.new_empty((n, weight.shape[0], h, w))
    _check(library().ddb_conv3_forward(n, c, weight.shape[0], h, w, _p(x), _p(weight),
                                       _p(bias), _p(y)))
    return y


def conv3_grad_input(grad, weight):
    """The gradient wrt the input of :func:`conv3_forward` from its output's gradient."""
    n, o, h, w = grad.shape
    gx = grad.new_empty((n, weight.shape[1], h, w))
    _check(library().ddb_conv3_grad_input(n, weight.shape[1], o, h, w, _p(grad), _p(weight),
                                          _p(gx)))
    return gx


def conv3_grad_weight(x, grad):
    """The gradients wrt the (O, C, 3, 3) weight and the (O,) bias of :func:`conv3_forward`."""
    n, c, h, w = x.shape
    o = grad.shape[1]
    gw, gb = x.new_empty((o, c, 3, 3)), x.new_empty(o)
    _check(library().ddb_conv3_grad_weight(n, c, o, h, w, _p(x), _p(grad), _p(gw), _p(gb)))
    return gw, gb


def conv3_cl_forward(x, weight, bias):
    """``F.conv2d(x, weight, bias, padding=1)`` for a 3x3 kernel on a channels-last ``x``; the
    output channels-last too (``_conv.c``; the output channels a multiple of 8)."""
    n, c, h, w = x.shape
    y = torch.empty((n, weight.shape[0], h, w), memory_format=_CL)
    _check(library().ddb_conv3_cl_forward(n, c, weight.shape[0], h, w, _p(x), _p(weight),
                                          _p(bias), _p(y)))
    return y


def conv3_cl_grad_weight(x, grad):
    """The gradients wrt the weight and the bias of :func:`conv3_cl_forward` from its output's
    (channels-last) gradient."""
    n, c, h, w = x.shape
    o = grad.shape[1]
    gw, gb = x.new_empty((o, c, 3, 3)), x.new_empty(o)
    _check(library().ddb_conv3_cl_grad_weight(n, c, o, h, w, _p(x), _p(grad), _p(gw), _p(gb)))
    return gw, gb


def _layout(t: torch.Tensor):
    """NCHW for a contiguous tensor, else channels-last (the Winograd loops take both)."""
    return torch.contiguous_format if t.is_contiguous() else _CL


def wino_forward(x, weight, bias):
    """``F.conv2d(x, weight, bias, padding=1)`` for a 3x3 kernel by Winograd F(2x2, 3x3)
    (``_wino.c``; channels multiples of 16, even height and width), on an NCHW or a
    channels-last ``x``; the output in the same layout."""
    n, c, h, w = x.shape
    fmt = _layout(x)
    y = torch.empty((n, weight.shape[0], h, w), memory_format=fmt)
    _check(library().ddb_wino_forward(n, c, weight.shape[0], h, w, _p(x), _p(weight), _p(bias),
                                      _p(y), int(fmt == torch.contiguous_format)))
    return y


def wino_grad_input(grad, weight):
    """The gradient wrt the input of :func:`wino_forward` from its output's gradient, in the
    gradient's layout."""
    n, o, h, w = grad.shape
    fmt = _layout(grad)
    gx = torch.empty((n, weight.shape[1], h, w), memory_format=fmt)
    _check(library().ddb_wino_grad_input(n, weight.shape[1], o, h, w, _p(grad), _p(weight),
                                         _p(gx), int(fmt == torch.contiguous_format)))
    return gx


def wino_grad_weight(x, grad):
    """The gradients wrt the weight and the bias of :func:`wino_forward` from its input and its
    output's gradient (taken in the input's layout)."""
    n, c, h, w = x.shape
    o = grad.shape[1]
    fmt = _layout(x)
    grad = grad.contiguous(memory_format=fmt)
    gw, gb = x.new_empty((o, c, 3, 3)), x.new_empty(o)
    _check(library().ddb_wino_grad_weight(n, c, o, h, w, _p(x), _p(grad), _p(gw), _p(gb),
                                          int(fmt == torch.contiguous_format)))
    return gw, gb
