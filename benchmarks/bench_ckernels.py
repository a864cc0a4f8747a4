"""A width-32 distillation iteration: the block tail as torch ops against the C loops (issue 15).

``ddbook.fused._NormReLUPool`` (norm -> ReLU -> 2x2 mean pool) and its first and second
derivatives ran as chains of full-size elementwise torch ops; ``ddbook/_tail.c`` (through
``ddbook.ckernels``) computes each in two or three passes. This times one trajectory-matching
iteration at the quick settings, side by side in one run:

- ``stock`` (batch norm only): the student as it was when issue 15 was filed, stock
  ``F.batch_norm`` / ReLU / pooling (batch norm switched off in ``fused``'s pattern matcher, as
  ``bench_norm_tail.py``); instance norm had the fused tail already then;
- ``torch``: the fused tail as torch ops (``DDBOOK_KERNELS=torch``);
- ``c-tail``: the fused tail as C loops, the convolutions the native ones (``DDBOOK_KERNELS=c``
  with ``fused.C_CONV_MAX_CHANNELS = 0``: the C loops as of session 21);
- ``c-direct``: the fused tail and the first layer's 3-channel convolution (``ddbook/_conv.c``)
  as C loops, the wider convolutions the native ones (``networks.C_WINOGRAD = False``: session
  22's code);
- ``c``: those and the wider (32-channel) convolutions by Winograd F(2x2, 3x3) (``_wino.c``).

Settings: ``--network ConvNetBN`` is SelMatch's scale model (IPC 25 / 50 / 100, one pass over the
set per iteration, batch = set / N); ``--network ConvNet`` is MTT / DATM at quick (instance norm,
IPC 10, all 100 images in every step: issue 15's "N = 10, 100 images per step, DSA"). Each
(variant, IPC) runs in its own worker process (1 thread, CPU time of ``--timed`` iterations after
``--warmup``), the variants' order alternating from round to round; a figure is the median over
rounds x timed iterations, with its range; peak RSS per worker.

    OMP_NUM_THREADS=1 python benchmarks/bench_ckernels.py --network ConvNetBN --ipcs 25,50,100 \\
        --json benchmarks/results/ckernels-bn.json
    OMP_NUM_THREADS=1 python benchmarks/bench_ckernels.py --network ConvNet --ipcs 10 \\
        --json benchmarks/results/ckernels-in.json

``--interleaved R`` instead runs the variants but ``stock`` in ONE process, one iteration each in
turn (order alternating), R rounds after a warm-up iteration each, on the same distillation
(``DDBOOK_KERNELS``, ``fused.C_CONV_MAX_CHANNELS`` and ``networks.C_WINOGRAD`` are read at
every call): a drift of this
shared VM then falls on all alike, and a ratio is the median of the per-round ratios. Peak
memory is not separated there (one process).

    OMP_NUM_THREADS=1 python benchmarks/bench_ckernels.py --network ConvNet --ipcs 10 \\
        --interleaved 15 --json benchmarks/results/conv-in-interleaved.json
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _sidebyside import parser, report, run_rounds, write_json  # noqa: E402


VARIANTS = ("torch", "c-tail", "c-direct", "c")


def use_variant(v: str) -> None:
    """Switch this process to variant ``v`` (but ``stock``, which patches ``fused`` for good)."""
    from ddbook import fused, networks
    os.environ["DDBOOK_KERNELS"] = "c" if v in ("c", "c-direct", "c-tail") else "torch"
    fused.C_CONV_MAX_CHANNELS = 0 if v == "c-tail" else 4
    networks.C_WINOGRAD = v == "c"


def time_distill(args, network: str, batch: int) -> None:
    """The worker's body: ``args.warmup + args.timed`` iterations of a distillation of
    ``args.ipc`` images per class at width ``args.width`` (one random expert trajectory), their
    CPU seconds reported (``_sidebyside.report``)."""
    from bench_distill import _fake_buffer, _synset

    from ddbook import matching
    cfg = matching.MatchConfig(syn_steps=args.syn_steps, expert_epochs=2, max_start_epoch=1,
                               batch_syn=batch, lr_img=100.0, lr_lr=1e-5)
    cpu = []
    with tempfile.TemporaryDirectory() as folder:
        buffer = _fake_buffer(folder, args.width, network=network)
        clock = [time.process_time()]

        def tick(iteration, record):
            cpu.append(time.process_time() - clock[0])
            clock[0] = time.process_time()
        matching.distill(_synset(args.ipc), buffer, cfg,
                         matching.LoopConfig(iterations=args.warmup + args.timed,
                                             eval_every=None),
                         device="cpu", callback=tick)
    report(cpu, args.warmup)


def interleaved(args, network: str, ipc: int, variants: tuple) -> dict:
    """CPU seconds of one iteration per variant per round, all in this process."""
    import torch

    from bench_distill import _fake_buffer, _synset
    from ddbook import matching
    torch.set_num_threads(1)
    n = 10 * ipc
    batch = n if network == "ConvNet" else n // args.syn_steps
    cfg = matching.MatchConfig(syn_steps=args.syn_steps, expert_epochs=2, max_start_epoch=1,
                               batch_syn=batch, lr_img=100.0, lr_lr=1e-5)
    loop = matching.LoopConfig(iterations=1, eval_every=None)
    times = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as folder:
        buffer = _fake_buffer(folder, args.width, network=network)
        synset = _synset(ipc)

        def one(v: str) -> float:
            use_variant(v)
            t = time.process_time()
            matching.distill(synset, buffer, cfg, loop, device="cpu")
            return time.process_time() - t
        for v in variants:
            one(v)   # warm-up
        for r in range(args.interleaved):
            for v in (variants if r % 2 == 0 else variants[::-1]):
                times[v].append(one(v))
            print(f"round {r}: " + ", ".join(f"{v} {times[v][-1]:.3f}" for v in variants),
                  file=sys.stderr, flush=True)
    return times


def report_interleaved(args, variants: tuple) -> int:
    q = lambda v: statistics.quantiles(v, n=4)   # noqa: E731
    out, t0, load0 = [], time.time(), os.getloadavg()[0]
    for ipc in [int(i) for i in args.ipcs.split(",")]:
        times = interleaved(args, args.network, ipc, variants)
        last = variants[-1]
        ratios = {v: [a / b for a, b in zip(times[v], times[last])] for v in variants[:-1]}
        out.append({"ipc": ipc, "cpu_s": times, "ratios_to_" + last: ratios})
        print(f"\n{args.network} width {args.width}, IPC {ipc}, N = {args.syn_steps}; one process, "
              f"{args.interleaved} interleaved rounds; load average {load0:.1f} before, "
              f"{os.getloadavg()[0]:.1f} after; {time.time() - t0:.0f} s\n")
        print("| variant | CPU s/iteration, median (quartiles) | × " + last + ", median of "
              "per-round ratios (quartiles) |\n| --- | --- | --- |")
        for v in variants:
            r = ratios.get(v)
            cell = f"**{statistics.median(r):.2f}** ({q(r)[0]:.2f}-{q(r)[2]:.2f})" if r else "1"
            print(f"| {v} | {statistics.median(times[v]):.3f} ({q(times[v])[0]:.3f}-"
                  f"{q(times[v])[2]:.3f}) | {cell} |")
    write_json(args, load0, out)
    return 0


def worker(args) -> None:
    import torch
    torch.set_num_threads(1)
    use_variant(args.worker)
    if args.worker == "stock":
        from bench_norm_tail import _use_stock_batch_norm
        _use_stock_batch_norm()
    n = 10 * args.ipc
    time_distill(args, args.network, n if args.network == "ConvNet" else n // args.syn_steps)


def main(argv=None) -> int:
    p = parser(__doc__, sizes_help="set sizes per class", timed=3)
    p.add_argument("--syn-steps", type=int, default=10)
    p.add_argument("--network", default="ConvNetBN", choices=("ConvNetBN", "ConvNet"))
    p.add_argument("--interleaved", type=int, default=0, metavar="R",
                   help="R rounds of the variants but stock in one process instead")
    args = p.parse_args(argv)
    if args.interleaved:
        return report_interleaved(args, VARIANTS)
    if args.worker:
        worker(args)
        return 0
    variants = ("stock", *VARIANTS) if args.network == "ConvNetBN" else VARIANTS
    rows, load0, t0 = run_rounds(__file__, variants, args, ("syn_steps", "network"))
    norm = "batch" if args.network == "ConvNetBN" else "instance"
    print(f"\n{args.network} ({norm} norm) width {args.width}, N = {args.syn_steps}, M = 2, DSA; "
          f"1 thread; {args.rounds} rounds x {args.timed} timed; load average {load0:.1f} "
          f"before, {os.getloadavg()[0]:.1f} after; {time.time() - t0:.0f} s\n")
    head = " | ".join(f"{v} CPU s/iteration | peak GiB" for v in variants)
    gains = " | ".join(f"**× {v}**" for v in variants[:-1])
    print(f"| IPC (batch) | {head} | {gains} |\n|" + " --- |" * (1 + 2 * len(variants)
                                                                 + len(variants) - 1))
    out = []
    for ipc in [int(i) for i in args.ipcs.split(",")]:
        med = {v: statistics.median(rows[(ipc, v)]["cpu"]) for v in variants}
        cells = " | ".join(
            f"{med[v]:.3f} ({min(rows[(ipc, v)]['cpu']):.3f}-{max(rows[(ipc, v)]['cpu']):.3f})"
            f" | {max(rows[(ipc, v)]['peaks']):.2f}" for v in variants)
        speed = {v: med[v] / med["c"] for v in variants[:-1]}
        batch = 10 * ipc if args.network == "ConvNet" else 10 * ipc // args.syn_steps
        print(f"| {ipc} ({batch}) | {cells} | "
              + " | ".join(f"**{speed[v]:.2f}**" for v in variants[:-1]) + " |")
        out.append({"ipc": ipc, "batch": batch, **{v: rows[(ipc, v)] for v in variants},
                    "speedup_of_c": speed})
    write_json(args, load0, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
