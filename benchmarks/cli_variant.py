"""``python -m ddbook ...`` under one of ``bench_ckernels.py``'s variants of the C loops, for an
end-to-end comparison (benchmarks/README.md): ``c-direct`` (the C block tails and the student's
first convolution, the native wider convolutions and training convolutions: session 22's code)
or ``c`` (everything, as ``DDBOOK_KERNELS=c``). A benchmark switch only: the result's provenance
still names every C file, used or not.

    DDBOOK_KERNELS=c python benchmarks/cli_variant.py c-direct reproduce selmatch-alpha \\
        --profile quick --only r0.05_a0.6
"""
import os
import runpy
import sys

from ddbook import networks

if len(sys.argv) < 2 or sys.argv[1] not in ("c-direct", "c"):
    sys.exit("usage: cli_variant.py {c-direct|c} <ddbook arguments>")
if os.environ.get("DDBOOK_KERNELS") != "c":
    sys.exit("cli_variant.py: set DDBOOK_KERNELS=c (the variants are of the C loops)")
if sys.argv[1] == "c-direct":
    networks.C_WINOGRAD = networks.C_FIRST_CONV_CL = False
sys.argv = ["ddbook", *sys.argv[2:]]
runpy.run_module("ddbook", run_name="__main__", alter_sys=True)
