"""One trajectory-matching distillation iteration: time and peak memory, side by side with a
reference-like implementation.

Setting (reference/perf.md): CIFAR-10 shapes, IPC 10 (100 images, all in every batch), N = 20
student steps, M = 2, ConvNet-3 instance norm at width 128 (and 32, the quick profile's student),
DSA on, no ZCA. An iteration is what ``ddbook.matching.distill`` does per iteration: draw the
expert and start epoch, unroll, meta-backward, three optimiser steps; no evaluation.

Implementations, each in its own worker process (peak RSS is per process; the allocator setting is
process-wide), started in alternating order for --rounds rounds:

- ``reference-like``: what the MTT code computes, the way it computes it: the ConvNet as stock
  modules (nn.GroupNorm, nn.AvgPool2d) called on a flat parameter vector (functional_call, as
  ReparamModule), ``backward()`` into every leaf including the start parameters, default malloc;
- ``reference-like+keepmem``: the same with ``ddbook.networks.keep_cpu_memory()`` (freed memory is
  reused instead of being unmapped and faulted in again), to separate the allocator's share;
- ``ddbook``: ``matching.distill`` as shipped (functional ConvNet whose norm-ReLU-pool tail has a
  written-out double backward and keeps a 1-byte ReLU mask; keep_cpu_memory from get_network);
- ``ddbook nokeepmem``: the same with the default allocator;
- ``ddbook recompute k``: the same with ``recompute_segments=k`` (exact gradients; the graph of
  only k steps alive, one extra first-order unroll of compute).

Each worker runs --warmup iterations, then --timed ones; a row's figure is the median over all
timed iterations of all rounds, with the range, as wall time and as the process's CPU time (with
--threads 1 the CPU time is the robust one on a shared machine: it does not count the time other
processes hold the core; with 2 threads it includes OpenMP's waiting). The load average before
and after is printed with the table; the numbers are only comparable within one table.

    python benchmarks/bench_distill.py                    # widths 128 and 32, 3 rounds (~30 min)
    python benchmarks/bench_distill.py --widths 32 --rounds 5
    python benchmarks/bench_distill.py --json results/bench_distill.json
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

REFERENCE_S = 49.8          # perf.md: the MTT code, IPC 10, N 20, w128, 2 threads (median)
REFERENCE_GIB = (7.2, 7.4)  # its peak RSS
# name -> (description, extra environment); 'ddbook recompute K' is ddbook with segments of K
IMPLS = {
    "reference-like": ("stock modules via functional_call, backward() into all leaves, default "
                       "malloc", {"DDBOOK_KEEP_CPU_MEMORY": "0"}),
    "reference-like+keepmem": ("the same, with ddbook.networks.keep_cpu_memory()", {}),
    "ddbook": ("matching.distill as shipped (keep_cpu_memory via get_network)", {}),
    "ddbook nokeepmem": ("matching.distill, DDBOOK_KEEP_CPU_MEMORY=0 (default malloc)",
                         {"DDBOOK_KEEP_CPU_MEMORY": "0"}),
}


def _fake_buffer(folder: str, width: int, epochs: int = 2, network: str = "ConvNet"):
    """An expert folder with one random trajectory (timing does not depend on the values)."""
    import dataclasses

    import numpy as np
    import torch

    from ddbook.experts import ExpertBuffer, ExpertConfig
    from ddbook.networks import count_params, flatten_params, get_network

    cfg = ExpertConfig(network=network, width=width, epochs=epochs)
    net = get_network(network, 10, width=width, seed=0, device="cpu")
    p = count_params(net)
    g = torch.Generator().manual_seed(0)
    traj = flatten_params(net) + 0.01 * torch.randn(epochs + 1, p, generator=g).cumsum(0)
    np.save(os.path.join(folder, "expert_000.npy"), traj.numpy().astype(np.float32))
    meta = {"format": 1, "config": dataclasses.asdict(cfg),
            "data": {"fingerprint": "random", "num_train": 0, "num_classes": 10,
                     "image_shape": [3, 32, 32]},
            "num_params": p,
            "param_shapes": [[n, list(t.shape)] for n, t in net.named_parameters()]}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(meta, f)
    return ExpertBuffer(folder)


def _synset(n_per_class: int):
    import torch

    from ddbook.synset import make_synset
    g = torch.Generator().manual_seed(1)
    return make_synset(torch.randn(10 * n_per_class, 3, 32, 32, generator=g),
                       torch.arange(10).repeat_interleave(n_per_class), syn_lr=0.01)


def _worker_ddbook(args, recompute: int) -> tuple[list[float], list[float]]:
    from ddbook.matching import LoopConfig, MatchConfig, distill

    with tempfile.TemporaryDirectory() as folder:
        buffer = _fake_buffer(folder, args.width)
        cfg = MatchConfig(syn_steps=args.syn_steps, expert_epochs=2, max_start_epoch=1,
                          batch_syn=None, lr_img=100.0, lr_lr=1e-5,
                          recompute_segments=recompute)
        clock = [time.process_time()]
        cpu = []

        def tick(iteration, record):   # after each iteration: its CPU time
            cpu.append(time.process_time() - clock[0])
            clock[0] = time.process_time()
        clock[0] = time.process_time()
        out = distill(_synset(args.ipc), buffer, cfg,
                      LoopConfig(iterations=args.warmup + args.timed, eval_every=None),
                      device="cpu", callback=tick)
    return out.history["seconds"][args.warmup:], cpu[args.warmup:]


def _worker_reference(args) -> tuple[list[float], list[float]]:
    """The reference's iteration, re-implemented (not its code): see the module docstring."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from ddbook.matching import make_plan
    from ddbook.augment import apply_dsa
    from ddbook.networks import functional_forward, get_network

    model = get_network("ConvNet", 10, width=args.width, seed=0, device="cpu")
    model.features = nn.Sequential(*list(model.features))      # stock modules, no fused tails
    with tempfile.TemporaryDirectory() as folder:
        buffer = _fake_buffer(folder, args.width)
        start, target = buffer.snapshot(0, 0), buffer.snapshot(0, 2)
    syn = _synset(args.ipc)
    images = syn.images.clone().requires_grad_(True)
    syn_lr = torch.tensor(0.01, requires_grad=True)
    opt_img = torch.optim.SGD([images], lr=100.0, momentum=0.5)
    opt_lr = torch.optim.SGD([syn_lr], lr=1e-5, momentum=0.5)
    gen, times, cpu = torch.Generator().manual_seed(1), [], []
    for _ in range(args.warmup + args.timed):
        t0, c0 = time.perf_counter(), time.process_time()
        plan = make_plan(len(images), None, args.syn_steps, (32, 32), gen)
        params = [start.clone().requires_grad_(True)]
        for step in plan:
            x = apply_dsa(images[step.indices], step.dsa)
            ce = F.cross_entropy(functional_forward(model, params[-1], x), syn.labels[step.indices])
            grad = torch.autograd.grad(ce, params[-1], create_graph=True)[0]
            params.append(params[-1] - syn_lr * grad)
        loss = F.mse_loss(params[-1], target, reduction="sum") / \
            F.mse_loss(params[0], target, reduction="sum")
        opt_img.zero_grad()
        opt_lr.zero_grad()
        loss.backward()
        opt_img.step()
        opt_lr.step()
        del params, loss
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return times[args.warmup:], cpu[args.warmup:]


def worker(args) -> None:
    import torch
    torch.set_num_threads(args.threads)
    if args.worker.startswith("reference-like"):
        times, cpu = _worker_reference(args)
    else:
        recompute = int(args.worker.split()[-1]) if "recompute" in args.worker else 0
        times, cpu = _worker_ddbook(args, recompute)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # KiB -> GiB
    print(json.dumps({"times": times, "cpu": cpu, "peak_gib": peak}))


def run_worker(impl: str, width: int, args) -> dict:
    env = {**os.environ, **IMPLS.get(impl, ("", {}))[1], "TQDM_DISABLE": "1"}
    cmd = [sys.executable, __file__, "--worker", impl, "--width", str(width), "--threads",
           str(args.threads), "--warmup", str(args.warmup), "--timed", str(args.timed),
           "--syn-steps", str(args.syn_steps), "--ipc", str(args.ipc)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"worker {impl} w{width} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="128,32", help="comma-separated ConvNet widths")
    parser.add_argument("--impls", default="reference-like,ddbook,ddbook recompute 10,"
                        "ddbook recompute 2", help="comma-separated implementations: "
                        "reference-like, ddbook, 'ddbook recompute K'")
    parser.add_argument("--rounds", type=int, default=3, help="worker processes per row (>= 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations per worker")
    parser.add_argument("--timed", type=int, default=1, help="timed iterations per worker")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per worker")
    parser.add_argument("--syn-steps", type=int, default=20, help="N, student steps per unroll")
    parser.add_argument("--ipc", type=int, default=10, help="images per class (all in each batch)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, default=128, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    impls = [s.strip() for s in args.impls.split(",") if s.strip()]
    widths = [int(w) for w in args.widths.split(",")]
    rows = {(w, i): {"times": [], "cpu": [], "peaks": []} for w in widths for i in impls}
    load_before, t0 = loadavg(), time.time()
    for r in range(args.rounds):
        order = impls if r % 2 == 0 else impls[::-1]
        for w in widths:
            for impl in order:
                res = run_worker(impl, w, args)
                rows[(w, impl)]["times"] += res["times"]
                rows[(w, impl)]["cpu"] += res["cpu"]
                rows[(w, impl)]["peaks"].append(res["peak_gib"])
                print(f"round {r} w{w} {impl}: wall {res['times']} s, cpu {res['cpu']} s, "
                      f"peak {res['peak_gib']:.2f} GiB, "
                      f"load {loadavg()}", file=sys.stderr, flush=True)
    print(f"\nIPC {args.ipc} (batch = all {10 * args.ipc} images), N = {args.syn_steps}, M = 2, "
          f"ConvNet-3 IN, DSA, no ZCA; {args.threads} threads; {args.rounds} rounds x "
          f"{args.timed} timed iteration(s); load average before {load_before}, after "
          f"{loadavg()}; {time.time() - t0:.0f} s in all\n")
    print("| width | implementation | wall s/iteration: median (range) | vs reference-like | "
          "CPU s/iteration: median (range) | vs reference-like | peak RSS GiB (max) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    out = []
    for w in widths:
        base = {k: statistics.median(rows[(w, impls[0])][k]) for k in ("times", "cpu")}
        for impl in impls:
            row = rows[(w, impl)]
            med = {k: statistics.median(row[k]) for k in ("times", "cpu")}
            cells = [f"{med[k]:.2f} ({min(row[k]):.2f}-{max(row[k]):.2f}) | {base[k] / med[k]:.2f}x"
                     for k in ("times", "cpu")]
            print(f"| {w} | {impl} | {cells[0]} | {cells[1]} | {max(row['peaks']):.2f} |")
            out.append({"width": w, "impl": impl, "median_wall_s": med["times"],
                        "median_cpu_s": med["cpu"], **row})
    print(f"\nperf.md's reference (the MTT code, w128): {REFERENCE_S} s/iteration, "
          f"{REFERENCE_GIB[0]}-{REFERENCE_GIB[1]} GiB peak RSS, measured on another day.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": out, "load_before": load_before, "load_after": loadavg(),
                       "args": vars(args)}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
