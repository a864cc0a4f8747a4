"""Gradient matching (IDC, the DASM page): the synthetic branch through stock modules or fused ops.

One outer iteration of ``ddbook.gradmatch`` at the DASM page's ``quick`` settings (ConvNet with
instance norm, width 32, multi-formation factor 2, batch_real 64, batch_syn_max 128, n_data 512
real examples trained on per round) on a 500-per-class universe of random pixels (the cost does not
depend on the values). Per class and round, the synthetic branch's gradient is taken with
``create_graph=True`` and then differentiated again wrt the images; this times both
implementations of that branch side by side in one run:

- ``stock``: ``model(x)`` (the module's fused forward, whose backward is written-out instance-norm
  tensor maths when it is differentiated again);
- ``auto``: ``gradmatch.fused_forward`` (``fused._NormReLUPool``: closed-form first and second
  derivatives), what ``distill_gm`` uses by default.

Each (variant, IPC) runs in its own worker process (1 thread), ``--warmup`` outer iterations and
then ``--timed`` ones (CPU seconds each, ``--inner`` rounds per outer iteration), the order
alternating per round; a figure is the median over rounds x timed iterations. Peak RSS per worker.

    python benchmarks/bench_gradmatch.py --rounds 3 --json benchmarks/results/gradmatch-w32.json
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _sidebyside import finish, parser, report, run_rounds  # noqa: E402

VARIANTS = ("stock", "auto")


def worker(args) -> None:
    import torch
    torch.set_num_threads(1)
    os.environ.setdefault("DDBOOK_KERNELS", "torch")   # as measured: before the C loops
    from ddbook import gradmatch as gm
    cfg = gm.GMConfig(width=args.width, factor=2, inner_loop=args.inner, n_data=512,
                      net_batch=64)
    gen = torch.Generator().manual_seed(0)
    real_y = torch.arange(10).repeat_interleave(500)
    real_x = torch.rand(len(real_y), 3, 32, 32, generator=gen)
    labels = torch.arange(10).repeat_interleave(args.ipc)
    images = torch.rand(len(labels), 3, 32, 32, generator=gen).requires_grad_(True)
    state = gm._State(images, torch.optim.SGD([images], lr=gm.idc_lr_img(args.ipc), momentum=0.5),
                      torch.Generator().manual_seed(1))
    pools = {c: torch.nonzero(real_y == c).flatten() for c in range(10)}
    norm = gm.normalizer((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
    cpu = []
    for _ in range(args.warmup + args.timed):
        t = time.process_time()
        gm._outer_iteration(state, labels, real_x, real_y, pools, cfg, 10, norm,
                            torch.device("cpu"), args.worker)
        cpu.append(time.process_time() - t)
    report(cpu, args.warmup)


def main(argv=None) -> int:
    p = parser(__doc__, sizes_help="stored images per class (DASM quick)", timed=1)
    p.add_argument("--inner", type=int, default=2, help="rounds per outer iteration (quick: 10)")
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    rows, load0, t0 = run_rounds(__file__, VARIANTS, args, ("inner",))
    finish(args, rows, load0, t0, VARIANTS, f"ConvNet-IN width {args.width}, factor 2, "
           f"{args.inner} rounds per outer iteration", "IPC (decoded per class)", "round",
           lambda ipc: f"{ipc} ({min(4 * ipc, 128)})", per=args.inner)
    return 0


if __name__ == "__main__":
    sys.exit(main())
