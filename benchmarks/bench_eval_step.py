"""The SelMatch evaluation step of the `quick` scale model, before and after the one-pass ReLU-pool
gradient for channels-last activations (issue 15).

A ConvNet-BN width 32 trains on the CPU in channels-last (``networks.get_network``). Its fused
ReLU + 2x2 pool tail computed the gradient with ``avg_pool2d_backward`` (a zero fill of the
full-size input gradient, then a scatter) and, because its saved ReLU output is a second output of
the autograd function, the engine also materialised a full-size zero gradient for that output:
two zero fills of every block's (B, C, H, W) per step, ~10 % of a step in ``torch.profiler``.
Now the gradient is one broadcast ``threshold_backward`` and zero gradients are not materialised;
the numbers are bit-identical (tests/test_networks.py; here: the final training loss, every bit).

- ``before``: the tail's backward as it was (patched back in the worker);
- ``after``: the library as it is.

Each variant trains ``evaluate_selmatch`` (combined augmentation: crop + flip on selected images,
per-image DSA on distilled ones; batch 128; SGD momentum 0.9) on a 500-image set, 40 % selected,
for ``--epochs`` epochs (4 steps each) in its own worker process (1 thread), CPU time per step
after a warm-up evaluation; alternating order over ``--rounds`` rounds; medians.

    python benchmarks/bench_eval_step.py --rounds 3 --json benchmarks/results/eval-step-bn.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = ("before", "after")


def _restore_before() -> None:
    import torch

    from ddbook import networks

    def grad_before(grad, out):
        if out.is_contiguous():
            return grad_contiguous(grad, out)
        g = torch.ops.aten.avg_pool2d_backward(grad, out, [2, 2], [2, 2], [0, 0], False, True,
                                               None)
        return torch.ops.aten.threshold_backward(g, out, 0)
    grad_contiguous = networks._relu_pool_grad
    networks._relu_pool_grad = grad_before

    def setup_before(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])
    networks._ReLUPool.setup_context = staticmethod(setup_before)


def worker(args) -> None:
    import torch
    torch.set_num_threads(1)
    os.environ.setdefault("DDBOOK_KERNELS", "torch")   # as measured: before the C loops
    if args.worker == "before":
        _restore_before()
    from ddbook.evaluate import SelMatchEvalConfig, evaluate_selmatch
    g = torch.Generator().manual_seed(0)
    n = 500
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.arange(10).repeat_interleave(n // 10)
    sel = torch.arange(n) % 10 < 4
    xt, yt = torch.randn(100, 3, 32, 32, generator=g), torch.arange(10).repeat(10)

    def run(epochs):
        cfg = SelMatchEvalConfig(network="ConvNetBN", width=32, epochs=epochs, runs=1)
        return evaluate_selmatch(x, y, xt, yt, sel, config=cfg, num_classes=10, device="cpu")
    run(2)
    t = time.process_time()
    res = run(args.epochs)
    per_step = (time.process_time() - t) / (args.epochs * -(-n // 128))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"per_step": per_step, "peak_gib": peak,
                      "train_loss": repr(float(res.train_loss[0])),     # all bits of it
                      "accuracy": float(res.accuracies[0])}))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--json", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    rows = {v: [] for v in VARIANTS}
    load0, t0 = os.getloadavg()[0], time.time()
    for r in range(args.rounds):
        for v in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
            cmd = [sys.executable, __file__, "--worker", v, "--epochs", str(args.epochs)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
            res = json.loads(out.strip().splitlines()[-1])
            rows[v].append(res)
            print(f"round {r} {v}: {1000 * res['per_step']:.1f} ms/step, final training loss "
                  f"{res['train_loss']}, peak {res['peak_gib']:.2f} GiB, load "
                  f"{os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    same = len({r["train_loss"] for v in VARIANTS for r in rows[v]}) == 1
    med = {v: statistics.median(r["per_step"] for r in rows[v]) for v in VARIANTS}
    print(f"\nConvNet-BN w32 channels-last, batch 128, combined augmentation, 1 thread; "
          f"{args.rounds} rounds x {4 * args.epochs} steps; load {load0:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after; {time.time() - t0:.0f} s; final training loss "
          f"identical to the last bit across variants and rounds: {same}\n")
    print("| variant | CPU ms/step: median (range) | peak GiB |\n| --- | --- | --- |")
    for v in VARIANTS:
        s = [1000 * r["per_step"] for r in rows[v]]
        print(f"| {v} | {statistics.median(s):.1f} ({min(s):.1f}–{max(s):.1f}) | "
              f"{max(r['peak_gib'] for r in rows[v]):.2f} |")
    print(f"\n**× before: {med['before'] / med['after']:.2f}**")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                       "load_before": load0, "args": vars(args), "rows": rows,
                       "identical_train_loss": same,
                       "speedup": med["before"] / med["after"]}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
