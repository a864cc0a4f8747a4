"""K small ConvNets trained one after another (``train_epoch``) against stacked (``ddbook.batched``)
and against one after another with the block tails in C (``ddbook.ckernels``).

Implementations: ``one after another`` and ``stacked`` run the torch ops (``DDBOOK_KERNELS=torch``,
the code as issue 15 found it, plus stacking); ``C loops`` is one after another with
``DDBOOK_KERNELS=c``: the block tails (batch norm -> ReLU -> pool, or instance norm's) in two
passes each way, and the convolutions (``ddbook.networks``): a batch-norm network's first layer
by direct channels-last loops, its wider layers by Winograd F(2x2, 3x3), an instance-norm
network's wider layers by the NCHW Winograd op (from session 23 on; session 21's rows had the
tails only).

Each (config, impl) runs in its own worker process (peak RSS is per process), workers in
alternating order, round after round, so both implementations see the same machine load. A
worker builds K seeded networks, trains each for one warm-up epoch and then ``--epochs`` timed
epochs over a pool of ``--steps`` batches (one SGD step per batch, the given augmentation, SGD
momentum 0.9, weight decay 5e-4: the evaluation setting), and reports images/s (K networks'
images over the time, CPU time of the process on 1 thread by default, also wall time), GFLOP/s
by bench_training's FLOP model, and its peak RSS. A row's figure is the median over the rounds.
The sgemm peak (2048^2 fp32, same clock and threads) is measured at the start and after every
round; the load average is printed with the table.

    python benchmarks/bench_batched.py --json benchmarks/results/batched-cpu-1thread.json
    python benchmarks/bench_batched.py --configs "BN w32 b128 K4" --rounds 3
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_training import flop_model, sgemm_peak  # noqa: E402

IMPLS = ("one after another", "stacked", "C loops")
CONFIGS = ("BN w32 b128 K3 dsa", "BN w32 b128 K5 dsa", "IN w32 b100 K5 dsa", "BN w32 b32 K4 dsa",
           "IN w128 b100 K3 dsa")
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def parse(config: str) -> dict:
    """'BN w32 b128 K3 dsa' -> norm, width, batch, K, augmentation."""
    norm, w, b, k, aug = config.split()
    return {"network": {"BN": "ConvNetBN", "IN": "ConvNet"}[norm], "width": int(w[1:]),
            "batch": int(b[1:]), "k": int(k[1:]), "augment": aug}


def run(impl: str, config: str, steps: int, epochs: int, clock) -> dict:
    import torch

    from ddbook.batched import StackedConvNet, train_epoch_stacked
    from ddbook.networks import get_network
    from ddbook.train import train_epoch
    c = parse(config)
    k, n = c["k"], c["batch"] * steps
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    nets = [get_network(c["network"], 10, width=c["width"], seed=s, device="cpu")
            for s in range(k)]
    gens = [torch.Generator().manual_seed(100 + s) for s in range(k)]

    def sgd(params):
        return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    if impl == "stacked":
        model = StackedConvNet(nets)
        opt = sgd(model.parameters())

        def epoch():
            train_epoch_stacked(model, [x] * k, [y] * k, opt, c["batch"], gens, c["augment"])
    else:
        opts = [sgd(m.parameters()) for m in nets]

        def epoch():
            for m, o, g in zip(nets, opts, gens):
                train_epoch(m, x, y, o, c["batch"], g, c["augment"])
    epoch()  # warm-up
    t, w = clock(), time.perf_counter()
    for _ in range(epochs):
        epoch()
    t, w = clock() - t, time.perf_counter() - w
    flops = flop_model(nets[0], (3, 32, 32))[1]
    imgs = k * n * epochs
    return {"img_s": imgs / t, "img_s_wall": imgs / w, "gflops": imgs * flops / t / 1e9,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def worker(args) -> None:
    import torch
    torch.set_num_threads(args.threads)
    out = run(args.impl, args.config, args.steps, args.epochs, CLOCKS[args.clock])
    print("RESULT " + json.dumps(out))


def spawn(impl: str, config: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--impl", impl, "--configs", config,
           "--threads", str(args.threads), "--steps", str(args.steps), "--epochs",
           str(args.epochs), "--clock", args.clock]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TQDM_DISABLE": "1",
           "DDBOOK_KERNELS": "c" if impl == "C loops" else "torch"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[7:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated, e.g. "
                   "'BN w32 b128 K3 dsa' (norm BN/IN, width, batch, networks, augment dsa/none)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3, help="batches per epoch")
    p.add_argument("--epochs", type=int, default=1, help="timed epochs per worker")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=list(CLOCKS), default="cpu")
    p.add_argument("--impls", default=",".join(IMPLS), help="comma-separated, of: "
                   + ", ".join(IMPLS) + " (the first is the baseline)")
    p.add_argument("--json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.config = args.configs
        return worker(args)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    impls = tuple(i.strip() for i in args.impls.split(",") if i.strip())
    if not impls or set(impls) - set(IMPLS):
        p.error(f"--impls must name some of {IMPLS}, got {args.impls!r}")
    load = [os.getloadavg()]
    peak = sgemm_peak(args.threads, 5, CLOCKS[args.clock])
    results = {(c, i): [] for c in configs for i in impls}
    for r in range(args.rounds):
        for j, c in enumerate(configs):
            for impl in (impls if (r + j) % 2 == 0 else impls[::-1]):
                results[c, impl].append(spawn(impl, c, args))
        peak += sgemm_peak(args.threads, 3, CLOCKS[args.clock])
        load.append(os.getloadavg())
        print(f"round {r + 1}/{args.rounds} done, load {load[-1][0]:.2f}", file=sys.stderr)
        rows = summarise(results, configs, statistics.median(peak), impls)
        if args.json:  # after every round: a stopped run keeps its finished rounds
            with open(args.json, "w") as f:
                json.dump({"sgemm_gflops": peak, "load": load, "clock": args.clock,
                           "threads": args.threads, "steps": args.steps, "epochs": args.epochs,
                           "rounds_done": r + 1, "rows": rows,
                           "raw": {f"{c} | {i}": v for (c, i), v in results.items()}}, f, indent=1)
    print_table(rows, peak, load, args, impls)


def summarise(results: dict, configs: list, peak: float, impls: tuple = IMPLS) -> list[dict]:
    rows = []
    for c in configs:
        row = {"config": c}
        for impl in impls:
            runs = results[c, impl]
            med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            row[impl] = {**med, "img_s_range": [min(r["img_s"] for r in runs),
                                                max(r["img_s"] for r in runs)],
                         "pct_peak": 100 * med["gflops"] / peak}
        row["speedup"] = {i: row[i]["img_s"] / row[impls[0]]["img_s"] for i in impls[1:]}
        rows.append(row)
    return rows


def print_table(rows, peak, load, args, impls: tuple = IMPLS) -> None:
    print(f"\nsgemm peak (2048^2 fp32, {args.threads} thread(s), {args.clock} clock): median "
          f"{statistics.median(peak):.1f} GFLOP/s (range {min(peak):.0f}-{max(peak):.0f}, "
          f"n = {len(peak)}); load average {load[0][0]:.2f} at the start, {load[-1][0]:.2f} "
          f"at the end")
    head = " | ".join(f"{i} img/s | GFLOP/s (% peak) | peak RSS" for i in impls)
    gains = " | ".join(f"**{i} × {impls[0]}**" for i in impls[1:])
    print(f"| config | {head} | {gains} |")
    print("|" + " --- |" * (1 + 3 * len(impls) + len(impls) - 1))
    for r in rows:
        cells = " | ".join(
            f"{r[i]['img_s']:.0f} ({r[i]['img_s_range'][0]:.0f}–{r[i]['img_s_range'][1]:.0f}) | "
            f"{r[i]['gflops']:.1f} ({r[i]['pct_peak']:.1f} %) | {r[i]['peak_rss_gib']:.2f} GiB"
            for i in impls)
        print(f"| {r['config']} | {cells} | "
              + " | ".join(f"**{r['speedup'][i]:.2f}**" for i in impls[1:]) + " |")


if __name__ == "__main__":
    main()
