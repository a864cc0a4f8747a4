"""One training step of a width-32 ConvNet, torch ops against C loops, interleaved in one process.

The evaluation networks, experts and sweeps of the quick pages train width-32 ConvNets (batch
norm, channels-last, for SelMatch's scale model; instance norm for MTT / DATM) on the CPU. This
times their step (DSA draw and augmentation, forward, cross-entropy, backward, SGD with momentum
0.9 and weight decay 5e-4, as ``ddbook.train``) under each of ``--variants`` (VARIANTS below:
``torch``, the torch ops; ``c-tail``, the C block tails; ``c-first``, those and the
channels-last first convolution in C; ``c``, those and Winograd for the wider convolutions) in ONE process, in blocks of ``--block`` steps, each round of blocks in a
rotated order, so that a drift of the machine (this one is a shared VM whose sgemm rate moves by
2x within minutes) falls on all alike. All variants train the same network on the same stream
of batches; ``ddbook.ckernels`` reads DDBOOK_KERNELS at every call. CPU time of the process,
1 thread; medians and quartiles over the blocks' per-step times; a ratio is the median of the
per-round ratios (block i of the first variant / block i of the other). Peak memory is measured
in separate runs by bench_batched.py (each variant in its own process).

    OMP_NUM_THREADS=1 python benchmarks/bench_train_step.py --json benchmarks/results/train-step-ckernels.json
    OMP_NUM_THREADS=1 python benchmarks/bench_train_step.py --configs ConvNetBN:128,ConvNetBN:256 --blocks 20 --json benchmarks/results/train-step-conv-cl.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


VARIANTS = {
    # name: (DDBOOK_KERNELS, first convolution in C, Winograd for the wider convolutions)
    "torch": ("torch", False, False),   # the torch ops: the code issue 15 was filed against
    "c-tail": ("c", False, False),      # the C block tails, oneDNN's convolutions (session 21)
    "c-first": ("c", True, False),      # and the first convolution in C, channels-last
    "c": ("c", True, True),             # and the wider ones by Winograd F(2x2, 3x3) (_wino.c)
}


def measure(network: str, batch: int, blocks: int, block: int, warmup: int,
            variants: list[str], width: int = 32, clock=time.process_time) -> dict:
    import torch

    from ddbook import networks
    from ddbook.augment import DSA_STRATEGY, apply_dsa, sample_dsa
    from ddbook.networks import get_network
    from ddbook.train import sgd_step
    g = torch.Generator().manual_seed(0)
    pool = torch.randn(batch * 8, 3, 32, 32, generator=g)
    labels = torch.randint(0, 10, (batch * 8,), generator=g)
    net = get_network(network, 10, width=width, seed=0, device="cpu")
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    times = {v: [] for v in variants}

    def use(variant: str) -> None:
        os.environ["DDBOOK_KERNELS"], networks.C_FIRST_CONV_CL, networks.C_WINOGRAD = \
            VARIANTS[variant]

    def steps(n: int) -> float:
        t = clock()
        for _ in range(n):
            idx = torch.randint(0, len(pool), (batch,), generator=g)
            x = apply_dsa(pool[idx], sample_dsa(batch, (32, 32), g, DSA_STRATEGY))
            sgd_step(net, x, labels[idx], opt)
        return (clock() - t) / n
    for v in variants:
        use(v)
        steps(warmup)
    for i in range(blocks):   # each block in a rotated order
        for v in variants[i % len(variants):] + variants[:i % len(variants)]:
            use(v)
            times[v].append(steps(block))
    q = lambda v: statistics.quantiles(v, n=4)   # noqa: E731
    base = variants[0]
    speedup = {}
    for v in variants[1:]:
        ratios = [a / b for a, b in zip(times[base], times[v])]
        speedup[v] = {"median": statistics.median(ratios), "q1": q(ratios)[0], "q3": q(ratios)[2]}
    return {"network": network, "width": width, "batch": batch, "ms_per_step": {
        m: {"median": 1e3 * statistics.median(v), "q1": 1e3 * q(v)[0], "q3": 1e3 * q(v)[2]}
        for m, v in times.items()}, "speedup_over": base, "speedup": speedup, "raw_s": times}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--configs", default="ConvNetBN:128,ConvNet:100,ConvNetBN:256",
                   help="network:batch or network:batch:width (width 32 unless given), "
                        "comma-separated")
    p.add_argument("--blocks", type=int, default=12, help="blocks per variant")
    p.add_argument("--block", type=int, default=5, help="steps per block")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--variants", default="torch,c-tail,c-first,c",
                   help=f"comma-separated, the first the baseline: {', '.join(VARIANTS)}")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; above 1 the clock is the wall clock, not CPU time")
    p.add_argument("--json")
    args = p.parse_args()
    variants = args.variants.split(",")
    if len(variants) < 2 or any(v not in VARIANTS for v in variants):
        p.error(f"--variants: two or more of {', '.join(VARIANTS)}")
    import torch
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.threads == 1 else time.perf_counter
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_training import sgemm_peak
    peak0 = sgemm_peak(args.threads, 5, clock)
    load0, t0 = os.getloadavg()[0], time.time()
    rows = []
    for config in args.configs.split(","):
        network, batch, *width = config.split(":")
        rows.append(measure(network, int(batch), args.blocks, args.block, args.warmup,
                            variants, int(width[0]) if width else 32, clock))
        print(f"{config} done, load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    peak1 = sgemm_peak(args.threads, 5, clock)
    print(f"\n{args.threads} thread(s), {'CPU time' if args.threads == 1 else 'wall clock'}; "
          f"{args.blocks} blocks x {args.block} steps per variant, "
          f"alternating; sgemm peak {statistics.median(peak0):.0f} GFLOP/s before, "
          f"{statistics.median(peak1):.0f} after; load average {load0:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after; {time.time() - t0:.0f} s\n")
    base = variants[0]
    print("| network (batch) | " + " | ".join(f"{v} ms/step: median (quartiles)" for v in variants)
          + " | " + " | ".join(f"**{v} × {base}**" for v in variants[1:]) + " |")
    print("| --- " * (2 * len(variants)) + "|")
    for r in rows:
        cells = [f"{r['network']} w{r['width']} ({r['batch']})"]
        for v in variants:
            a = r["ms_per_step"][v]
            cells.append(f"{a['median']:.1f} ({a['q1']:.1f}–{a['q3']:.1f})")
        for v in variants[1:]:
            s = r["speedup"][v]
            cells.append(f"**{s['median']:.2f}** ({s['q1']:.2f}–{s['q3']:.2f})")
        print("| " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                       "load_before": load0, "sgemm_before": peak0, "sgemm_after": peak1,
                       "args": vars(args), "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
