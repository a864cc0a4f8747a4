"""Training throughput of the ConvNet student on this machine, side by side with a reference-like
implementation (the MTT code's plain nn.Module with nn.GroupNorm, default malloc).

Measures the sgemm peak (2048^2 fp32 matmul), then images/s, achieved GFLOP/s and the share of
the sgemm peak for: the expert-training step (forward + backward + SGD step, batch 256, lr 0.01),
the evaluation-style training step (batch 100, SGD momentum 0.9, weight decay 5e-4, DSA) and a
no-grad test pass (batch 256), for ConvNet-3 at width 128 and 32, instance and batch norm, with
and without DSA. FLOPs follow reference/perf.md: conv and linear MACs x 2, counted from the
network's own layer shapes; backward = 2x forward except the first layer's input gradient.

Every implementation runs in its own worker processes (the allocator setting is process-wide),
started in alternating order for --rounds rounds; a row's figure is the median over all timed
steps after warm-up, with the range. The machine may be shared: the load average is printed.

    python benchmarks/bench_training.py            # full table, 2 threads, wall clock (~25 min)
    python benchmarks/bench_training.py --threads 1 --clock cpu   # same, CPU time (shared box)
    python benchmarks/bench_training.py --quick    # the headline rows, 1 round (~3 min)
    python benchmarks/bench_training.py --json benchmarks/bench_training.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# name -> (kind, width, norm, augment, batch)
CONFIGS = {
    "expert w128 IN": ("expert", 128, "instance", False, 256),
    "expert w128 IN +DSA": ("expert", 128, "instance", True, 256),
    "expert w128 BN": ("expert", 128, "batch", False, 256),
    "expert w128 BN +DSA": ("expert", 128, "batch", True, 256),
    "expert w32 IN": ("expert", 32, "instance", False, 256),
    "expert w32 IN +DSA": ("expert", 32, "instance", True, 256),
    "expert w32 BN +DSA": ("expert", 32, "batch", True, 256),
    "eval-train w128 IN +DSA": ("eval", 128, "instance", True, 100),
    "test pass w128 IN": ("test", 128, "instance", False, 256),
    "test pass w128 BN": ("test", 128, "batch", False, 256),
}
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
QUICK = ["expert w128 IN", "expert w128 IN +DSA", "test pass w128 IN"]
# name -> (description, extra environment)
IMPLS = {
    "reference-like": ("plain nn.Sequential, nn.GroupNorm, contiguous, default malloc",
                       {"DDBOOK_KEEP_CPU_MEMORY": "0"}),
    "ref-like+keepmem": ("the same modules, ddbook.networks.keep_cpu_memory()", {}),
    "ddbook nokeepmem": ("get_network (fused tails), DDBOOK_KEEP_CPU_MEMORY=0",
                         {"DDBOOK_KEEP_CPU_MEMORY": "0"}),
    "ddbook": ("get_network as shipped (fused tails, keep_cpu_memory)", {}),
    "ddbook NCHW": ("get_network(memory_format=torch.contiguous_format)", {}),
    "ddbook CL": ("get_network(memory_format=torch.channels_last)", {}),
}
DEFAULT_IMPLS = ["reference-like", "ref-like+keepmem", "ddbook nokeepmem", "ddbook"]
QUICK_IMPLS = ["reference-like", "ddbook"]


def reference_convnet(width: int, norm: str, depth: int = 3, num_classes: int = 10):
    """The MTT reference's ConvNet as plain stock modules (what its ``get_network`` builds)."""
    import torch.nn as nn
    layers, c, hw = [], 3, 32
    for _ in range(depth):
        norm_layer = nn.GroupNorm(width, width, affine=True) if norm == "instance" \
            else nn.BatchNorm2d(width)
        layers += [nn.Conv2d(c, width, 3, padding=1), norm_layer, nn.ReLU(inplace=True),
                   nn.AvgPool2d(2, stride=2)]
        c, hw = width, hw // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * hw * hw, num_classes))


def flop_model(model, shape) -> tuple[float, float]:
    """(forward, forward+backward) FLOPs per image: conv/linear MACs x 2, from a traced forward;
    a direct convolution's count (Winograd's C loops do fewer multiplications: its rate is then
    an effective one).

    Backward costs 2x forward (input and weight gradients) except for layers whose input needs
    no gradient (the first conv on plain images): weight gradient only.
    """
    import torch
    import torch.nn as nn
    macs = []

    def hook(mod, inp, out):
        k = mod.in_features if isinstance(mod, nn.Linear) else \
            mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        macs.append((out[0].numel() * k, inp[0].requires_grad))

    from ddbook import ckernels
    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    # under the torch ops: the C loops compute a ConvNet's convolutions without calling the
    # modules, whose hooks would then not fire (and count nothing)
    with torch.enable_grad(), ckernels.kernels_as("torch"):
        model(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    fwd = 2.0 * sum(m for m, _ in macs)
    return fwd, fwd + sum(4.0 * m if needs else 2.0 * m for m, needs in macs)


def sgemm_peak(threads: int, reps: int, clock=time.perf_counter) -> list[float]:
    """GFLOP/s of 2048^2 fp32 matmuls on ``threads`` threads, one figure per repetition."""
    import torch
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    out = []
    for _ in range(reps):
        t = clock()
        a @ b
        out.append(2 * 2048**3 / (clock() - t) / 1e9)
    return out


def build(impl: str, width: int, norm: str):
    """The network of implementation ``impl`` (see IMPLS), seeded, on the CPU."""
    import torch
    if impl.startswith("ref"):
        if impl == "ref-like+keepmem":
            from ddbook.networks import keep_cpu_memory
            keep_cpu_memory()
        torch.manual_seed(0)
        return reference_convnet(width, norm)
    from ddbook.networks import get_network
    fmt = {"ddbook CL": torch.channels_last, "ddbook NCHW": torch.contiguous_format}.get(impl)
    return get_network("ConvNetBN" if norm == "batch" else "ConvNet", 10, width=width, seed=0,
                       device="cpu", memory_format=fmt)


def run_config(impl: str, name: str, warmup: int, reps: int, clock=time.perf_counter) -> dict:
    """Time ``reps`` steps (after ``warmup``) of one configuration; seconds per step."""
    import torch
    import torch.nn.functional as F
    from ddbook.augment import dsa
    kind, width, norm, aug, batch = CONFIGS[name]
    model = build(impl, width, norm)
    fwd, fwdbwd = flop_model(model, (3, 32, 32))
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2048, 3, 32, 32, generator=gen)  # a pool to draw batches from
    labels = torch.randint(0, 10, (2048,), generator=gen)
    if kind == "eval":
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        idx = torch.randint(0, len(images), (batch,), generator=gen)
        x, y = images[idx], labels[idx]
        if kind == "test":
            with torch.no_grad():
                model(x)
            return
        if aug:
            x = dsa(x, gen)
        loss = F.cross_entropy(model(x), y)  # as ddbook.train.sgd_step
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train(kind != "test")
    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        t = clock()
        step()
        times.append(clock() - t)
    flops = fwd if kind == "test" else fwdbwd
    return {"impl": impl, "config": name, "batch": batch, "times": times, "flop_per_image": flops,
            "fwd_flop_per_image": fwd, "threads": torch.get_num_threads()}


def worker(args) -> None:
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.configs.split(","):
        print(json.dumps(run_config(args.worker, name, args.warmup, args.reps, CLOCKS[args.clock])),
              flush=True)


def check_flop_model() -> tuple[float, float]:
    """ConvNet-3 w128 on 32x32 must give perf.md's 101.5 / 297.4 MFLOP per image."""
    fwd, both = flop_model(reference_convnet(128, "instance"), (3, 32, 32))
    if (round(fwd / 1e6, 1), round(both / 1e6, 1)) != (101.5, 297.4):
        raise SystemExit(f"FLOP model gives {fwd / 1e6:.1f} / {both / 1e6:.1f} MFLOP, perf.md "
                         "says 101.5 / 297.4")
    return fwd, both


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="headline rows only, 1 round")
    ap.add_argument("--rounds", type=int, default=None, help="worker rounds per impl (3; quick 1)")
    ap.add_argument("--reps", type=int, default=None, help="timed steps per round (3; quick 3)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (2)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (2; 0 = torch default)")
    ap.add_argument("--clock", choices=list(CLOCKS), default="wall",
                    help="wall: elapsed time (default); cpu: the thread's CPU time, with "
                         "--threads 1 a measure that other jobs on a shared machine disturb less")
    ap.add_argument("--configs", default=None, help="comma-separated config names (see source)")
    ap.add_argument("--impls", default=None, help=f"comma-separated of {list(IMPLS)}")
    ap.add_argument("--json", metavar="PATH", help="write every timing and the table here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    configs = args.configs.split(",") if args.configs else (QUICK if args.quick else list(CONFIGS))
    impls = args.impls.split(",") if args.impls else (QUICK_IMPLS if args.quick else DEFAULT_IMPLS)
    if args.clock == "cpu" and args.threads != 1:
        raise SystemExit("--clock cpu needs --threads 1 (a thread's CPU time misses its helpers)")
    rounds = args.rounds or (1 if args.quick else 3)
    reps = args.reps or 3
    for bad in [c for c in configs if c not in CONFIGS] + [i for i in impls if i not in IMPLS]:
        raise SystemExit(f"unknown config or impl {bad!r}")
    fwd, both = check_flop_model()
    load = [os.getloadavg()]
    print(f"FLOP model check: ConvNet-3 w128 32x32 = {fwd / 1e6:.1f} MFLOP fwd, "
          f"{both / 1e6:.1f} fwd+bwd (perf.md: 101.5 / 297.4)")
    print(f"load average at start: {load[0][0]:.2f} {load[0][1]:.2f} {load[0][2]:.2f} "
          f"on {os.cpu_count()} CPUs")
    peak = sgemm_peak(args.threads or 2, 7, CLOCKS[args.clock])
    results = []
    for r in range(rounds):
        order = impls if r % 2 == 0 else impls[::-1]  # alternate who goes first
        for impl in order:
            env = {**os.environ, **IMPLS[impl][1]}
            cmd = [sys.executable, __file__, "--worker", impl, "--configs", ",".join(configs),
                   "--reps", str(reps), "--warmup", str(args.warmup),
                   "--threads", str(args.threads), "--clock", args.clock]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"worker {impl} failed:\n{out.stderr}")
            results += [json.loads(ln) for ln in out.stdout.splitlines() if ln.startswith("{")]
            print(f"  round {r + 1}/{rounds} {impl}: done (load {os.getloadavg()[0]:.2f})",
                  flush=True)
        peak += sgemm_peak(args.threads or 2, 3, CLOCKS[args.clock])
    load.append(os.getloadavg())
    table = summarise(results, configs, impls, statistics.median(peak))
    print_table(table, peak, load)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"sgemm_gflops": peak, "load": load, "clock": args.clock,
                       "threads": args.threads, "rows": table, "raw": results,
                       "impls": {k: IMPLS[k][0] for k in impls}, "argv": sys.argv[1:]}, f, indent=1)


def summarise(results, configs, impls, peak) -> list[dict]:
    rows = []
    for name in configs:
        base = None
        for impl in impls:
            rs = [r for r in results if r["impl"] == impl and r["config"] == name]
            if not rs:
                continue
            ips = [rs[0]["batch"] / t for r in rs for t in r["times"]]
            med = statistics.median(ips)
            gflops = med * rs[0]["flop_per_image"] / 1e9
            base = med if impl == "reference-like" else base
            rows.append({"config": name, "impl": impl, "img_s": med, "min": min(ips),
                         "max": max(ips), "n": len(ips), "gflops": gflops,
                         "peak_share": gflops / peak, "vs_ref": med / base if base else None})
    return rows


def print_table(rows, peak, load) -> None:
    print(f"\nsgemm peak (2048^2 fp32): median {statistics.median(peak):.1f} GFLOP/s "
          f"(range {min(peak):.1f}-{max(peak):.1f}, n={len(peak)})")
    print(f"load average at end: {load[-1][0]:.2f} {load[-1][1]:.2f} {load[-1][2]:.2f}\n")
    head = (f"| {'config':24s} | {'impl':17s} | img/s (median) | range | GFLOP/s | % peak "
            "| x ref-like |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        vs = f"{r['vs_ref']:.2f}" if r["vs_ref"] else "-"
        print(f"| {r['config']:24s} | {r['impl']:17s} | {r['img_s']:14.1f} | "
              f"{r['min']:.0f}-{r['max']:.0f} | {r['gflops']:7.1f} | "
              f"{100 * r['peak_share']:5.1f} % | {vs:>10s} |")


if __name__ == "__main__":
    main()
