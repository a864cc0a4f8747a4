"""Batch norm in the distillation student: stock kernels against the fused norm-ReLU-pool tail.

SelMatch's `quick` scale model distils with ConvNet-BN width 32 (``selmatch_scale``): N = 10
student steps per iteration, one pass over the set per iteration (batch = set size / 10), M = 2,
DSA. Until ``fused`` covered batch norm, its student ran the stock ``F.batch_norm`` / ReLU /
pooling, whose double backward is a long chain of full-size elementwise ops (``aten::mul`` alone
was a quarter of an iteration, benchmarks/README.md). This times one iteration both ways, side by
side in one run:

- ``stock``: the student as before (``F.batch_norm`` with batch statistics, ``F.relu``, the fused
  2x2 pooling), obtained by switching batch norm off in ``fused``'s pattern matcher;
- ``fused``: ``fused._NormReLUPool`` with ``batch=True`` (closed-form first and second derivatives).

Each (variant, set size) runs in its own worker process (1 thread, CPU time of ``--timed``
iterations after ``--warmup``), alternating the order in each of ``--rounds`` rounds; a figure is
the median over rounds x timed iterations. Peak RSS per worker.

    python benchmarks/bench_norm_tail.py --rounds 3 --json benchmarks/results/norm-tail-bn.json
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _sidebyside import finish, parser, run_rounds  # noqa: E402

VARIANTS = ("stock", "fused")


def _use_stock_batch_norm() -> None:
    """Make ``fused`` treat batch norm as it did before it was covered: stock ops, no fused tail."""
    import torch.nn as nn
    import torch.nn.functional as F

    from ddbook import fused
    fusable, layer_op = fused._fusable_norm, fused._layer_op
    fused._fusable_norm = lambda m: None if type(m) is nn.BatchNorm2d else fusable(m)

    def stock_layer_op(m, name):
        if type(m) is nn.BatchNorm2d and m.affine:
            w, b = f"{name}.weight", f"{name}.bias"
            return lambda p, x: F.batch_norm(x, None, None, p[w], p[b], True, 0.0, m.eps)
        return layer_op(m, name)
    fused._layer_op = stock_layer_op


def worker(args) -> None:
    import torch
    torch.set_num_threads(1)
    os.environ.setdefault("DDBOOK_KERNELS", "torch")   # as measured: the fused tail's torch ops
    if args.worker == "stock":
        _use_stock_batch_norm()
    from bench_ckernels import time_distill
    time_distill(args, "ConvNetBN", 10 * args.ipc // args.syn_steps)


def main(argv=None) -> int:
    p = parser(__doc__, sizes_help="set sizes per class (the quick ratios)", timed=2)
    p.add_argument("--syn-steps", type=int, default=10)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    rows, load0, t0 = run_rounds(__file__, VARIANTS, args, ("syn_steps",))
    finish(args, rows, load0, t0, VARIANTS, f"ConvNet-BN width {args.width}, N = "
           f"{args.syn_steps}, batch = set / N, M = 2, DSA", "IPC (batch)", "iteration",
           lambda ipc: f"{ipc} ({10 * ipc // args.syn_steps})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
