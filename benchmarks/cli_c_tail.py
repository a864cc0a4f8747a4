"""``python -m ddbook ...`` with the student's first convolution on the native kernels (the C
block tails only, as before ``_conv.c``): the ``c-tail`` side of the end-to-end comparison in
benchmarks/README.md. A benchmark switch only: the result's provenance still names ``_conv.c``.

    DDBOOK_KERNELS=c python benchmarks/cli_c_tail.py reproduce selmatch-alpha --profile quick \\
        --only r0.05_a0.6
"""
import runpy
import sys

from ddbook import fused

fused.C_CONV_MAX_CHANNELS = 0
sys.argv = ["ddbook", *sys.argv[1:]]
runpy.run_module("ddbook", run_name="__main__", alter_sys=True)
