"""Where one width-32 distillation iteration's time goes, at the quick settings.

N = 10 student steps, IPC 10 (all 100 images in every step), M = 2, DSA, ConvNet-3 width 32 with
instance norm, one thread, CPU time. The phases of ``matching.distill``'s iteration are timed by
wrapping the functions that make them (the plan with its DSA draws, the differentiable unroll, the
whole gradient computation, whose remainder is the meta-backward, the snapshot reads); the rest of
the iteration is the optimiser steps and bookkeeping. Then torch.profiler's top operators over the
same iterations (self CPU time). Prints markdown tables.

    python benchmarks/profile_distill.py --iterations 4
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_distill import _fake_buffer, _synset  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--syn-steps", type=int, default=10)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--network", default="ConvNet", help="ConvNet (instance norm) or ConvNetBN")
    p.add_argument("--ipc", type=int, default=10, help="images per class of the set")
    p.add_argument("--batch-syn", type=int, default=None,
                   help="images per student step (default: the whole set)")
    args = p.parse_args()
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
    cfg = matching.MatchConfig(syn_steps=args.syn_steps, expert_epochs=2, max_start_epoch=1,
                               batch_syn=args.batch_syn, lr_img=100.0, lr_lr=1e-5)
    with tempfile.TemporaryDirectory() as folder:
        buffer = _fake_buffer(folder, args.width, network=args.network)

        def run(n):
            return matching.distill(_synset(args.ipc), buffer, cfg,
                                    matching.LoopConfig(iterations=n, eval_every=None),
                                    device="cpu")
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


if __name__ == "__main__":
    main()
