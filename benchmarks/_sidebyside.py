"""The side-by-side harness of the variant benchmarks (``bench_norm_tail``, ``bench_gradmatch``).

Each (variant, size) runs in its own worker process (the script itself with ``--worker VARIANT``,
one thread); within a round the variants' order alternates (round 0 in order, round 1 reversed,
...) so a drift of the machine's load falls on both alike. A worker prints one JSON line: the CPU
seconds of its timed repetitions and its peak RSS.
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


def parser(doc: str, *, sizes_help: str, timed: int) -> argparse.ArgumentParser:
    """The options every variant benchmark shares; a script adds its own."""
    p = argparse.ArgumentParser(description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ipcs", default="25,50,100", help=sizes_help)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--timed", type=int, default=timed)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--json", default=None)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--ipc", type=int, default=25, help=argparse.SUPPRESS)
    return p


def report(cpu: list, warmup: int) -> None:
    """A worker's last line: its timed CPU seconds (after ``warmup``) and peak RSS in GiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"cpu": cpu[warmup:], "peak_gib": peak}))


def run_rounds(script: str, variants: tuple, args, passed: tuple) -> tuple[dict, float, float]:
    """Every round x size x variant in its own worker (``script --worker v --ipc n`` plus the
    options named in ``passed``); returns ({(size, variant): {"cpu": all timed values, "peaks":
    [...]}}, the load average before, the start time)."""
    sizes = [int(i) for i in args.ipcs.split(",")]
    rows = {(n, v): {"cpu": [], "peaks": []} for n in sizes for v in variants}
    load0, t0 = os.getloadavg()[0], time.time()
    flags = [x for name in ("width", "warmup", "timed", *passed)
             for x in (f"--{name.replace('_', '-')}", str(getattr(args, name)))]
    for r in range(args.rounds):
        for n in sizes:
            for v in (variants if r % 2 == 0 else variants[::-1]):
                cmd = [sys.executable, script, "--worker", v, "--ipc", str(n), *flags]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
                res = json.loads(out.strip().splitlines()[-1])
                rows[(n, v)]["cpu"] += res["cpu"]
                rows[(n, v)]["peaks"].append(res["peak_gib"])
                print(f"round {r} IPC {n} {v}: cpu {res['cpu']} s, peak "
                      f"{res['peak_gib']:.2f} GiB, load {os.getloadavg()[0]:.1f}",
                      file=sys.stderr, flush=True)
    return rows, load0, t0


def finish(args, rows: dict, load0: float, t0: float, variants: tuple, setting: str, size: str,
           unit: str, size_label=str, per: float = 1.0) -> None:
    """Print the side-by-side table (median CPU s per ``unit`` with its range, peak GiB, the
    speed-up of the second variant over the first) and write ``args.json`` when given. ``per``
    divides a timed value into ``unit``s (e.g. rounds per outer iteration)."""
    a, b = variants
    print(f"\n{setting}; 1 thread; {args.rounds} rounds x {args.timed} timed; load average "
          f"{load0:.1f} before, {os.getloadavg()[0]:.1f} after; {time.time() - t0:.0f} s\n")
    print(f"| {size} | {a} CPU s/{unit} | peak GiB | {b} CPU s/{unit} | peak GiB | **× {a}** |\n"
          "| --- | --- | --- | --- | --- | --- |")
    out = []
    for n in [int(i) for i in args.ipcs.split(",")]:
        cells, med = [], []
        for v in variants:
            cpu = [c / per for c in rows[(n, v)]["cpu"]]
            med.append(statistics.median(cpu))
            cells.append(f"{med[-1]:.3f} ({min(cpu):.3f}-{max(cpu):.3f}) | "
                         f"{max(rows[(n, v)]['peaks']):.2f}")
        print(f"| {size_label(n)} | {cells[0]} | {cells[1]} | **{med[0] / med[1]:.2f}** |")
        out.append({"ipc": n, a: rows[(n, a)], b: rows[(n, b)], "speedup": med[0] / med[1]})
    write_json(args, load0, out)


def write_json(args, load0: float, rows, **extra) -> None:
    """``args.json`` (when given): the date, the load average before, the options, ``rows``
    and any ``extra`` fields."""
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                       "load_before": load0, **extra, "args": vars(args), "rows": rows}, fh,
                      indent=1)
