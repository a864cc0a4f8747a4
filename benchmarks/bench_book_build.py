"""The book build before and after papermill took over execution, side by side in one run.

before: ``jupyter-book build`` executes every notebook itself (``execute_notebooks: force``), one
        after another, in a checkout of the commit before the change (``--before``);
after:  ``python -m ddbook notebook --all --profile ci --jobs J`` (papermill, J pages at a time)
        then ``jupyter-book build`` rendering those executed notebooks, in ``--after``.

Both at the ci profile, each into a fresh temporary folder, alternating (before, after, before,
...) for ``--repeats`` rounds; wall time and the CPU time of the child processes are recorded, and
the machine's load average before each build is printed (a loaded machine slows both). Each tree
runs its own library (``PYTHONPATH=<tree>/lib``). Writes ``benchmarks/results/book_build.json``.

    python benchmarks/bench_book_build.py --before /tmp/old-checkout --after . --repeats 1
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(cmds: list[list[str]], tree: Path, env: dict) -> tuple[float, float]:
    cpu0, t0 = _children_cpu(), time.perf_counter()
    for cmd in cmds:
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed in {tree}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return time.perf_counter() - t0, _children_cpu() - cpu0


def build(variant: str, tree: Path, jobs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"book-{variant}-") as out:
        env = {**os.environ, "DDBOOK_PROFILE": "ci", "TQDM_DISABLE": "1",
               "PYTHONPATH": str(tree / "lib"), "DDBOOK_EXECUTED": str(Path(out) / "executed")}
        book = [str(BIN / "jupyter-book"), "build", str(tree), "-W", "--keep-going", "--all",
                "--path-output", out]
        cmds = [book] if variant == "before" else \
            [[str(BIN / "python"), "-m", "ddbook", "notebook", "--all", "--profile", "ci",
              "--jobs", str(jobs)], book]
        load = os.getloadavg()[0]
        wall, cpu = _run(cmds, tree, env)
    print(f"{variant:6s} wall {wall:6.1f} s  cpu {cpu:6.1f} s  (load before {load:.2f})", flush=True)
    return {"variant": variant, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "load_before": round(load, 2), "jobs": jobs if variant == "after" else 1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, required=True, help="a checkout before the change")
    ap.add_argument("--after", type=Path, default=Path("."), help="a checkout with it")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    rows = []
    for _ in range(args.repeats):
        rows.append(build("before", args.before.resolve(), 1))
        rows.append(build("after", args.after.resolve(), args.jobs))
    out = Path(__file__).parent / "results" / "book_build.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"cpus": os.cpu_count(), "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
