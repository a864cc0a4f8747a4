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

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

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
    if args.worker == "stock":
        _use_stock_batch_norm()
    from bench_distill import _fake_buffer, _synset

    from ddbook import matching
    n = 10 * args.ipc
    cfg = matching.MatchConfig(syn_steps=args.syn_steps, expert_epochs=2, max_start_epoch=1,
                               batch_syn=n // args.syn_steps, lr_img=100.0, lr_lr=1e-5)
    cpu = []
    with tempfile.TemporaryDirectory() as folder:
        buffer = _fake_buffer(folder, args.width, network="ConvNetBN")
        clock = [time.process_time()]

        def tick(iteration, record):
            cpu.append(time.process_time() - clock[0])
            clock[0] = time.process_time()
        matching.distill(_synset(args.ipc), buffer, cfg,
                         matching.LoopConfig(iterations=args.warmup + args.timed,
                                             eval_every=None),
                         device="cpu", callback=tick)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"cpu": cpu[args.warmup:], "peak_gib": peak}))


def run_worker(variant: str, ipc: int, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, "--ipc", str(ipc),
           "--width", str(args.width), "--syn-steps", str(args.syn_steps),
           "--warmup", str(args.warmup), "--timed", str(args.timed)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ipcs", default="25,50,100", help="set sizes per class (the quick ratios)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--timed", type=int, default=2)
    p.add_argument("--syn-steps", type=int, default=10)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--json", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--ipc", type=int, default=25, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    ipcs = [int(i) for i in args.ipcs.split(",")]
    rows = {(i, v): {"cpu": [], "peaks": []} for i in ipcs for v in VARIANTS}
    load0, t0 = os.getloadavg()[0], time.time()
    for r in range(args.rounds):
        for ipc in ipcs:
            for v in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
                res = run_worker(v, ipc, args)
                rows[(ipc, v)]["cpu"] += res["cpu"]
                rows[(ipc, v)]["peaks"].append(res["peak_gib"])
                print(f"round {r} IPC {ipc} {v}: cpu {res['cpu']} s, peak "
                      f"{res['peak_gib']:.2f} GiB, load {os.getloadavg()[0]:.1f}",
                      file=sys.stderr, flush=True)
    print(f"\nConvNet-BN width {args.width}, N = {args.syn_steps}, batch = set / N, M = 2, DSA; "
          f"1 thread; {args.rounds} rounds x {args.timed} timed iterations; load average "
          f"{load0:.1f} before, {os.getloadavg()[0]:.1f} after; {time.time() - t0:.0f} s\n")
    print("| IPC (batch) | stock CPU s/iteration | peak GiB | fused CPU s/iteration | peak GiB | "
          "**× stock** |\n| --- | --- | --- | --- | --- | --- |")
    out = []
    for ipc in ipcs:
        s, f = rows[(ipc, "stock")], rows[(ipc, "fused")]
        ms, mf = statistics.median(s["cpu"]), statistics.median(f["cpu"])
        print(f"| {ipc} ({10 * ipc // args.syn_steps}) | {ms:.3f} ({min(s['cpu']):.3f}-"
              f"{max(s['cpu']):.3f}) | {max(s['peaks']):.2f} | {mf:.3f} ({min(f['cpu']):.3f}-"
              f"{max(f['cpu']):.3f}) | {max(f['peaks']):.2f} | **{ms / mf:.2f}** |")
        out.append({"ipc": ipc, "stock": s, "fused": f, "speedup": ms / mf})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                       "load_before": load0, "args": vars(args), "rows": out}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
