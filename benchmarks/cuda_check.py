"""Issue 15's checks that need a GPU, in one command: run it when a session is lent one.

1. **Stacked equals alone on the device.** K width-32 ConvNets (batch norm, and instance norm)
   trained ``--epochs`` epochs one after another (``train.train_epoch``) and stacked
   (``batched.train_epoch_stacked``) from the same seeds, data and generators: the largest
   absolute parameter difference (beside the largest parameter), and how many test predictions
   agree (tests/test_batched.py checks the same on the CPU: 1e-4 absolute and relative). On the
   CPU run it with ``DDBOOK_KERNELS=torch``: the stacked path runs the stock batch norm, the C
   loops round differently.
2. **Stacked against one after another, timed** (wall clock, the device synchronised): images/s
   of K networks trained both ways, medians of ``--rounds`` rounds in alternating order, and what
   ``batched.use_batched`` chooses automatically on the device (on for CUDA).
3. **A distillation iteration** at width 32 (instance norm IPC 10, batch 100; batch norm IPC 50,
   batch 50; N = 10, DSA): seconds per iteration and peak device memory, and what computes the
   block tails there (``ckernels.describe``: the torch ops on CUDA, never the C loops).

Everything goes to one JSON file (``--out``) with the device, torch version and the settings, and
a markdown summary to stdout. It runs on the CPU too (``--device cpu``, the test of this script,
and a baseline); on an H200, a few minutes.

    python benchmarks/cuda_check.py --out "$OUT/cuda-check.json"
    python benchmarks/cuda_check.py --device cpu --epochs 1 --rounds 1 --steps 2 --iterations 1 \\
        --out /tmp/cuda-check-cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _nets(network: str, k: int, device):
    from ddbook.networks import get_network
    return [get_network(network, 10, width=32, seed=s, device=device) for s in range(k)]


def _data(n: int, device):
    import torch
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 32, 32, generator=g).to(device)
    return x, torch.randint(0, 10, (n,), generator=g).to(device)


def _sgd(params):
    import torch
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)


def equality(network: str, k: int, batch: int, steps: int, epochs: int, device) -> dict:
    """Network j trained alone against network j of a stacked run, same seeds and draws."""
    import torch

    from ddbook.batched import StackedConvNet, correct_stacked, train_epoch_stacked
    from ddbook.train import train_epoch
    x, y = _data(batch * steps, device)
    alone = _nets(network, k, device)
    for j, m in enumerate(alone):
        opt, g = _sgd(m.parameters()), torch.Generator().manual_seed(100 + j)
        for _ in range(epochs):
            train_epoch(m, x, y, opt, batch, g, "dsa")
    stacked = StackedConvNet(_nets(network, k, device))
    opt = _sgd(stacked.parameters())
    gens = [torch.Generator().manual_seed(100 + j) for j in range(k)]
    for _ in range(epochs):
        train_epoch_stacked(stacked, [x] * k, [y] * k, opt, batch, gens, "dsa")
    mine = _nets(network, k, device)
    stacked.unstack_into(mine)
    worst = scale = 0.0   # the largest |difference| and the largest |parameter|, all networks
    with torch.no_grad():
        for m, n in zip(alone, mine):
            for a, b in zip(m.parameters(), n.parameters()):
                worst = max(worst, float((a - b).abs().max()))
                scale = max(scale, float(a.abs().max()))
    tx, ty = _data(1000, device)
    with torch.no_grad():
        pred_alone = torch.stack([m.eval()(tx).argmax(-1) == ty for m in alone])
    agree = float((correct_stacked(stacked, tx, ty) == pred_alone).float().mean())
    return {"network": network, "k": k, "batch": batch, "steps": steps, "epochs": epochs,
            "max_abs_parameter_difference": worst, "largest_abs_parameter": scale,
            "test_correctness_agreement": agree}


def timing(network: str, k: int, batch: int, steps: int, rounds: int, device) -> dict:
    """images/s of K networks, one after another against stacked (wall clock)."""
    import torch

    from ddbook.batched import StackedConvNet, train_epoch_stacked, use_batched
    from ddbook.train import train_epoch
    x, y = _data(batch * steps, device)
    alone = _nets(network, k, device)
    opts = [_sgd(m.parameters()) for m in alone]
    stacked = StackedConvNet(_nets(network, k, device))
    sopt = _sgd(stacked.parameters())
    gens = [torch.Generator().manual_seed(100 + j) for j in range(k)]

    def one_after_another():
        for m, o, g in zip(alone, opts, gens):
            train_epoch(m, x, y, o, batch, g, "dsa")

    def as_one():
        train_epoch_stacked(stacked, [x] * k, [y] * k, sopt, batch, gens, "dsa")
    impls = {"one after another": one_after_another, "stacked": as_one}
    for f in impls.values():
        f()   # warm-up (cuDNN autotuning, allocator)
    rates = {name: [] for name in impls}
    for r in range(rounds):
        for name in (list(impls) if r % 2 == 0 else list(impls)[::-1]):
            _sync(device)
            t = time.perf_counter()
            impls[name]()
            _sync(device)
            rates[name].append(k * len(x) / (time.perf_counter() - t))
    med = {name: statistics.median(v) for name, v in rates.items()}
    return {"network": network, "k": k, "batch": batch, "steps": steps, "rounds": rounds,
            "img_s": rates, "median_img_s": med,
            "stacked_x": med["stacked"] / med["one after another"],
            "use_batched_auto": bool(use_batched(None, network, 32, None, k, device))}


def distill_iteration(network: str, ipc: int, iterations: int, device) -> dict:
    """Seconds per width-32 distillation iteration on the device (after one warm-up)."""
    import torch
    from bench_distill import _fake_buffer, _synset

    from ddbook import ckernels, matching
    n = 10 * ipc
    batch = n if network == "ConvNet" else n // 10
    cfg = matching.MatchConfig(syn_steps=10, expert_epochs=2, max_start_epoch=1, batch_syn=batch,
                               lr_img=100.0, lr_lr=1e-5)
    times = []
    with tempfile.TemporaryDirectory() as folder:
        buffer = _fake_buffer(folder, 32, network=network)
        synset = _synset(ipc)

        def tick(iteration, record):
            _sync(device)
            times.append(time.perf_counter())
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        times.append(time.perf_counter())
        matching.distill(synset, buffer, cfg,
                         matching.LoopConfig(iterations=iterations + 1, eval_every=None),
                         device=device, callback=tick)
    per = [b - a for a, b in zip(times, times[1:])][1:]   # the first is the warm-up
    peak = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None)
    return {"network": network, "ipc": ipc, "batch": batch, "s_per_iteration": per,
            "median_s": statistics.median(per), "peak_device_gib": peak,
            "kernels": ckernels.describe(device)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", required=True, help="the JSON file to write")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the equality check")
    p.add_argument("--steps", type=int, default=10, help="batches per epoch")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per configuration")
    p.add_argument("--iterations", type=int, default=5, help="timed distillation iterations")
    args = p.parse_args(argv)
    import torch
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: run it where one is lent, or pass --device cpu",
              file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    out = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": name,
           "torch": torch.__version__, "python": sys.version.split()[0], "args": vars(args)}
    t0 = time.time()
    out["equality"] = [equality(net, 3, b, args.steps, args.epochs, device)
                       for net, b in (("ConvNetBN", 128), ("ConvNet", 100))]
    out["timing"] = [timing(net, k, b, args.steps, args.rounds, device)
                     for net, b, k in (("ConvNetBN", 128, 3), ("ConvNetBN", 128, 5),
                                       ("ConvNet", 100, 5))]
    out["distill"] = [distill_iteration(net, ipc, args.iterations, device)
                      for net, ipc in (("ConvNet", 10), ("ConvNetBN", 50))]
    out["seconds"] = round(time.time() - t0, 1)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(out, fh, indent=1)
    os.replace(tmp, args.out)
    print(f"{name}, torch {torch.__version__}, {out['seconds']} s\n")
    print("| equality: network | K | max abs. parameter difference (largest parameter) | "
          "test correctness agreement |\n| --- | --- | --- | --- |")
    for e in out["equality"]:
        print(f"| {e['network']} | {e['k']} | {e['max_abs_parameter_difference']:.2e} "
              f"({e['largest_abs_parameter']:.2f}) | "
              f"{e['test_correctness_agreement']:.4f} |")
    print("\n| timing: network (batch) | K | one after another img/s | stacked img/s | stacked × "
          "| automatic choice |\n| --- | --- | --- | --- | --- | --- |")
    for t in out["timing"]:
        m = t["median_img_s"]
        print(f"| {t['network']} ({t['batch']}) | {t['k']} | {m['one after another']:.0f} | "
              f"{m['stacked']:.0f} | {t['stacked_x']:.2f} | "
              f"{'stacked' if t['use_batched_auto'] else 'one after another'} |")
    print("\n| distillation: network, IPC (batch) | s/iteration | peak device GiB | tails |\n"
          "| --- | --- | --- | --- |")
    for d in out["distill"]:
        print(f"| {d['network']}, {d['ipc']} ({d['batch']}) | {d['median_s']:.3f} | "
              f"{d['peak_device_gib']} | {d['kernels']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
