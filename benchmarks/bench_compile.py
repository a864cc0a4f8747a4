"""A lead for issue 15, measured and not wired in: ``torch.compile`` on the CPU for one training
step of the width-32 ConvNet-BN (the Fig. 3 / evaluation setting: batch 128, SGD momentum 0.9,
one thread), against the eager step (which already uses ddbook's fused norm/ReLU/pool kernels).

Each mode runs in its own process (``python benchmarks/bench_compile.py eager|compile``): one
step (for compile: the compilation), 3 warm-up steps, then the mean per-process CPU time of 30
steps (CPU time, so a shared machine inflates it less than wall time). ``--write`` appends the
row to ``benchmarks/results/compile.json``.

Not usable for the distillation unroll: its meta-gradient needs double backward, which
AOTAutograd does not support.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ddbook.networks import get_network


def main(mode: str, write: bool) -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("DDBOOK_KERNELS", "torch")   # as measured: before the C loops
    torch.manual_seed(0)
    net = get_network("ConvNetBN", 10, width=32)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 3, 32, 32, generator=g), torch.randint(0, 10, (128,), generator=g)
    model = torch.compile(net) if mode == "compile" else net

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    t0 = time.process_time()
    step()
    first = time.process_time() - t0
    for _ in range(3):
        step()
    n, t0 = 30, time.process_time()
    for _ in range(n):
        step()
    per_step = (time.process_time() - t0) / n
    row = {"mode": mode, "first_step_cpu_s": round(first, 2), "ms_per_step_cpu": round(1e3 * per_step, 1),
           "img_per_s": round(128 / per_step), "torch": torch.__version__,
           "load_before": round(os.getloadavg()[0], 2)}
    print(row)
    if write:
        out = Path(__file__).parent / "results" / "compile.json"
        rows = json.loads(out.read_text()) if out.exists() else []
        out.write_text(json.dumps(rows + [row], indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("eager", "compile"):
        raise SystemExit("usage: python benchmarks/bench_compile.py eager|compile [--write]")
    main(sys.argv[1], "--write" in sys.argv)
