"""Where one width-32 distillation iteration's time goes, at the quick settings.

N = 10 student steps, IPC 10 (all 100 images in every step), M = 2, DSA, ConvNet-3 width 32 with
instance norm, one thread, CPU time. The phases of ``matching.distill``'s iteration are timed by
wrapping the functions that make them (the plan with its DSA draws, the differentiable unroll, the
whole gradient computation, whose remainder is the meta-backward, the snapshot reads); the rest of
the iteration is the optimiser steps and bookkeeping. Then torch.profiler's top operators over the
same iterations (self CPU time). Prints markdown tables.

``--by-shape`` times instead every aten call and C-loop call of ``--iterations`` iterations by
its wall clock, grouped by operator and input shapes (a ``TorchDispatchMode``; torch.profiler's
self times, with shapes recorded, moved whole milliseconds between neighbouring operators here).

``--train NETWORK:BATCH`` does the same for ``--iterations`` training steps of a width-32
network (DSA draw and augmentation, forward, loss, backward, SGD: ``bench_train_step.py``'s
step) instead of distillation iterations.

    python benchmarks/profile_distill.py --iterations 4
    python benchmarks/profile_distill.py --iterations 3 --by-shape --top 24
    python benchmarks/profile_distill.py --iterations 20 --by-shape --train ConvNetBN:128
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_distill import _fake_buffer, _synset  # noqa: E402


@contextmanager
def _distiller(args):
    """``run(n)``: n iterations of one distillation at the options' settings (a random expert
    trajectory in a temporary folder)."""
    from ddbook import matching
    cfg = matching.MatchConfig(syn_steps=args.syn_steps, expert_epochs=2, max_start_epoch=1,
                               batch_syn=args.batch_syn, lr_img=100.0, lr_lr=1e-5)
    with tempfile.TemporaryDirectory() as folder:
        buffer = _fake_buffer(folder, args.width, network=args.network)

        def run(n):
            return matching.distill(_synset(args.ipc), buffer, cfg,
                                    matching.LoopConfig(iterations=n, eval_every=None),
                                    device="cpu")
        yield run


@contextmanager
def _trainer(args):
    """``run(n)``: n training steps of a seeded width-``args.width`` network on random images
    (``bench_train_step.py``'s step)."""
    import torch

    from ddbook.augment import DSA_STRATEGY, apply_dsa, sample_dsa
    from ddbook.networks import get_network
    from ddbook.train import sgd_step
    network, batch = args.train.split(":")
    batch = int(batch)
    g = torch.Generator().manual_seed(0)
    pool = torch.randn(batch * 8, 3, 32, 32, generator=g)
    labels = torch.randint(0, 10, (batch * 8,), generator=g)
    net = get_network(network, 10, width=args.width, seed=0, device="cpu")
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def run(n):
        for _ in range(n):
            idx = torch.randint(0, len(pool), (batch,), generator=g)
            x = apply_dsa(pool[idx], sample_dsa(batch, (32, 32), g, DSA_STRATEGY))
            sgd_step(net, x, labels[idx], opt)
    yield run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--syn-steps", type=int, default=10)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--network", default="ConvNet", help="ConvNet (instance norm) or ConvNetBN")
    p.add_argument("--ipc", type=int, default=10, help="images per class of the set")
    p.add_argument("--batch-syn", type=int, default=None,
                   help="images per student step (default: the whole set)")
    p.add_argument("--by-shape", action="store_true",
                   help="wall time per (operator, input shapes) instead of the phases")
    p.add_argument("--top", type=int, default=24, help="rows of the --by-shape table")
    p.add_argument("--train", default=None, metavar="NETWORK:BATCH",
                   help="with --by-shape: training steps of this network instead")
    args = p.parse_args()
    if args.by_shape:
        by_shape(args)
        return
    import torch
    from torch.profiler import profile

    from ddbook import matching
    from ddbook.experts import ExpertBuffer
    torch.set_num_threads(1)
    spent = defaultdict(float)

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.process_time() - t
        return wrapper
    matching.make_plan = timed("plan: batches and DSA draws", matching.make_plan)
    matching.matching_loss = timed("unroll: N steps, forward + create_graph backward",
                                   matching.matching_loss)
    matching.matching_grads = timed("gradients (all)", matching.matching_grads)
    ExpertBuffer.snapshot = timed("expert snapshots (read)", ExpertBuffer.snapshot)
    with _distiller(args) as run:
        run(1)  # warm-up
        spent.clear()
        t = time.process_time()
        run(args.iterations)
        total = (time.process_time() - t) / args.iterations
        per = {k: v / args.iterations for k, v in spent.items()}  # before the profiled run
        with profile() as prof:
            run(2)
    grads = per.pop("gradients (all)")
    per["meta-backward (through the N steps)"] = grads - per["unroll: N steps, forward + "
                                                             "create_graph backward"]
    per["optimiser steps, records, rest"] = total - grads - per["plan: batches and DSA draws"] \
        - per["expert snapshots (read)"]
    print(f"\nCPU time per iteration: {total:.3f} s (median not taken: mean of "
          f"{args.iterations}); load average {os.getloadavg()[0]:.2f}\n")
    print("| phase | CPU s / iteration | share |\n| --- | --- | --- |")
    for k, v in sorted(per.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v:.3f} | {100 * v / total:.1f} % |")
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    whole = sum(e.self_cpu_time_total for e in events)
    print("\n| operator (torch.profiler, 2 iterations) | self CPU share | calls / iteration |\n"
          "| --- | --- | --- |")
    for e in events[:14]:
        print(f"| `{e.key}` | {100 * e.self_cpu_time_total / whole:.1f} % | {e.count // 2} |")


def by_shape(args) -> None:
    """Wall time of every aten call and C-loop call, by (operator, input shapes)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from ddbook import ckernels
    torch.set_num_threads(1)
    stats = defaultdict(lambda: [0, 0.0])

    def shapes(a):
        return tuple(tuple(t.shape) for t in a if isinstance(t, torch.Tensor))[:3]

    class Timer(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, a=(), kw=None):
            t = time.perf_counter()
            out = func(*a, **(kw or {}))
            note = ""
            if func is torch.ops.aten.convolution.default:
                note = " transposed" if a[6] else ""
                note += "" if all(x.is_contiguous() for x in a[:2]) else " non-contiguous"
            elif func is torch.ops.aten.convolution_backward.default:
                note = " mask " + "".join("1" if m else "0" for m in a[-1])
            s = stats[(str(func).replace(".default", "") + note, shapes(a))]
            s[0] += 1
            s[1] += time.perf_counter() - t
            return out

    for name in ("tail_forward", "tail_backward", "tail_double_backward", "bn_cl_forward",
                 "bn_cl_backward", "conv3_forward", "conv3_grad_input", "conv3_grad_weight",
                 "conv3_cl_forward", "conv3_cl_grad_weight", "wino_forward", "wino_grad_input",
                 "wino_grad_weight"):
        def timed_c(*a, _f=getattr(ckernels, name), _n=name):
            t = time.perf_counter()
            out = _f(*a)
            s = stats[(f"C {_n}", shapes(a))]
            s[0] += 1
            s[1] += time.perf_counter() - t
            return out
        setattr(ckernels, name, timed_c)
    with (_trainer(args) if args.train else _distiller(args)) as run:
        run(1)  # warm-up
        stats.clear()
        t = time.perf_counter()
        with Timer():
            run(args.iterations)
        wall = (time.perf_counter() - t) / args.iterations
    k = args.iterations
    what = f"training step ({args.train})" if args.train else "iteration"
    print(f"\nwall s per {what}, timed: {wall:.3f}; DDBOOK_KERNELS="
          f"{os.environ.get('DDBOOK_KERNELS', 'auto')}; load average {os.getloadavg()[0]:.2f}\n")
    unit = "step" if args.train else "iteration"
    print(f"| operator | input shapes | ms / {unit} | calls / {unit} | ms / call | "
          "cumulative share |\n| --- | --- | --- | --- | --- | --- |")
    acc = 0.0
    for (op, shp), (n, dt) in sorted(stats.items(), key=lambda kv: -kv[1][1])[:args.top]:
        acc += dt / k
        print(f"| `{op}` | {' '.join('x'.join(map(str, s)) for s in shp)} | {1e3 * dt / k:.1f} "
              f"| {n / k:g} | {1e3 * dt / n:.2f} | {100 * acc / wall:.0f} % |")


if __name__ == "__main__":
    main()
