"""The convolutions of the C loops alone against oneDNN's, side by side in one process (issue 15).

For each case (layout, batch, input and output channels, image size) this times the forward, the
input gradient and the weight gradient (with the bias gradient) of a 3x3, stride-1, padding-1
convolution, by the C loops (``ckernels.wino_*`` for channels in multiples of 16,
``ckernels.conv3_cl_*`` for the 3-channel first layer of a channels-last network) and by oneDNN
(``F.conv2d``; ``aten.convolution_backward`` with the one output asked for), alternating call by
call in ``--rounds`` rounds after a warm-up; medians of the wall times, 1 thread, and GFLOP/s of
the direct convolution's count (2 x N x H x W x C x O x 9 per operation: Winograd does fewer
multiplications, so its rate is an *effective* one).

    OMP_NUM_THREADS=1 python benchmarks/bench_wino.py --json benchmarks/results/wino-kernels.json
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _sidebyside import write_json  # noqa: E402

# (layout, N, C, O, H): the quick scale's shapes (training batch 128, distillation batch 100),
# and width 64 / 128 for "nothing slower at width 128"
CASES = [
    ("cl", 128, 3, 32, 32), ("cl", 128, 32, 32, 16), ("cl", 128, 32, 32, 8),
    ("nchw", 100, 32, 32, 16), ("nchw", 100, 32, 32, 8),
    ("cl", 128, 64, 64, 16), ("cl", 128, 128, 128, 16), ("cl", 128, 128, 128, 8),
    ("nchw", 100, 128, 128, 16),
]


def measure(layout: str, n: int, c: int, o: int, h: int, rounds: int) -> dict:
    import torch
    import torch.nn.functional as F

    from ddbook import ckernels
    fmt = torch.channels_last if layout == "cl" else torch.contiguous_format
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, h, generator=g).contiguous(memory_format=fmt)
    w = (torch.randn(o, c, 3, 3, generator=g) * 0.1).contiguous(memory_format=fmt)
    b = torch.randn(o, generator=g)
    grad = torch.randn(n, o, h, h, generator=g).contiguous(memory_format=fmt)
    wc = w.contiguous()

    def backward(mask):
        return lambda: torch.ops.aten.convolution_backward(
            grad, x, w, [o], [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)
    if c <= 4:   # the first layer: no input gradient in training
        ours = {"forward": lambda: ckernels.conv3_cl_forward(x, wc, b),
                "grad_weight": lambda: ckernels.conv3_cl_grad_weight(x, grad)}
    else:
        ours = {"forward": lambda: ckernels.wino_forward(x, wc, b),
                "grad_input": lambda: ckernels.wino_grad_input(grad, wc),
                "grad_weight": lambda: ckernels.wino_grad_weight(x, grad)}
    theirs = {"forward": lambda: F.conv2d(x, w, b, padding=1),
              "grad_input": backward([True, False, False]),
              "grad_weight": backward([False, True, True])}
    times = {(k, who): [] for k in ours for who in ("c", "onednn")}
    for r in range(rounds + 1):
        for k in ours:
            for who, fn in ((("c", ours[k]), ("onednn", theirs[k])) if r % 2 == 0
                            else (("onednn", theirs[k]), ("c", ours[k]))):
                t = time.perf_counter()
                fn()
                if r:   # round 0 warms up
                    times[(k, who)].append(time.perf_counter() - t)
    flop = 2 * n * h * h * c * o * 9
    out = {}
    for k in ours:
        c_ms = 1e3 * statistics.median(times[(k, "c")])
        d_ms = 1e3 * statistics.median(times[(k, "onednn")])
        out[k] = {"c_ms": c_ms, "onednn_ms": d_ms, "c_gflops": flop / c_ms / 1e6,
                  "onednn_gflops": flop / d_ms / 1e6, "speedup": d_ms / c_ms}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--json")
    args = p.parse_args()
    import torch
    torch.set_num_threads(1)
    os.environ["DDBOOK_KERNELS"] = "c"
    t0, load0 = time.time(), os.getloadavg()[0]
    rows = []
    print("| layout, batch, channels in → out, size | operation | C loops ms (eff. GFLOP/s) | "
          "oneDNN ms (GFLOP/s) | **×** |\n| --- | --- | --- | --- | --- |")
    for layout, n, c, o, h in CASES:
        res = measure(layout, n, c, o, h, args.rounds)
        rows.append({"layout": layout, "n": n, "c": c, "o": o, "h": h, "ops": res})
        for k, r in res.items():
            print(f"| {layout}, {n}, {c} → {o}, {h}×{h} | {k} | {r['c_ms']:.2f} "
                  f"({r['c_gflops']:.0f}) | {r['onednn_ms']:.2f} ({r['onednn_gflops']:.0f}) | "
                  f"**{r['speedup']:.2f}** |", flush=True)
    print(f"\n1 thread, wall clock, medians of {args.rounds} alternating rounds; load average "
          f"{load0:.2f} before, {os.getloadavg()[0]:.2f} after; {time.time() - t0:.0f} s")
    write_json(args, load0, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
