"""The DATM page: DATM's "match early / late / all" figure (papers.md §10), as pieces at a profile.

DATM's CIFAR-10 settings with the start epochs confined to one range of the expert trajectory, at
a small and a large IPC (pieces ``datm-ranges-ipc<K>-<range>``). The ranges are **ours** (DATM
does not state them): early = [0, 20), late = [40, 60), all = [0, 60) epochs of DATM's 100-epoch
experts, scaled with the profile's expert length. Every run writes its own results file
(``results/<profile>/distill/...``) and checkpoints, so ``python -m ddbook reproduce datm-ranges
--profile quick`` resumes where it stopped.
"""
from __future__ import annotations

import math

from ..presets import get_preset, scaled
from ..profiles import Profile
from ._common import DistillRun, Loaded, as_profile, load_pieces, run_pieces

__all__ = ["NAME", "NOTEBOOK", "TITLE", "plan", "run", "load", "DATM_RANGES",
           "datm_range_overrides", "datm_verdict"]

NAME = "datm-ranges"
NOTEBOOK = "datm_early_late"
TITLE = "DATM: matching early, late or all trajectory segments, at a small and a large IPC"

DATM_RANGES = {"early": (0, 20), "all": (0, 60), "late": (40, 60)}   # of 100 epochs: ours
DATM_PAPER_EPOCHS = 100


def datm_range_overrides(which: str, expert_epochs: int, m: int) -> dict:
    """Start epochs confined to DATM_RANGES[which], scaled from 100-epoch experts to ``expert_epochs``:
    t ~ UniformInt[floor(lo·f), floor(hi·f)), f = E/100, capped so that t + M <= E; no expansion."""
    if which not in DATM_RANGES:
        raise ValueError(f"unknown range {which!r}; choose one of {list(DATM_RANGES)}")
    lo, hi = DATM_RANGES[which]
    f = expert_epochs / DATM_PAPER_EPOCHS
    t_max = max(1, min(math.floor(hi * f), expert_epochs - m + 1))
    t_min = min(math.floor(lo * f), t_max - 1)
    return {"match.min_start_epoch": t_min, "match.max_start_epoch": t_max,
            "match.initial_max_start_epoch": None, "match.expansion_end": None}


# (small, large) IPC, the base preset of each and the evaluation epochs at the large one
DATM_IPCS = {"ci": ((10, "datm-cifar10-ipc10"), (15, "datm-cifar10-ipc1000")),
             "quick": ((10, "datm-cifar10-ipc10"), (500, "datm-cifar10-ipc1000")),
             "gpu": ((10, "datm-cifar10-ipc10"), (1000, "datm-cifar10-ipc1000")),
             "paper": ((10, "datm-cifar10-ipc10"), (1000, "datm-cifar10-ipc1000"))}
# quick: the large set's evaluation keeps the small set's number of SGD steps (about 300 epochs
# of 100 images = 30,000 images seen), not its epochs: 5,000 images x 6 epochs
DATM_LARGE_EVAL_EPOCHS = {"quick": 6}


def plan(profile: Profile) -> list[DistillRun]:
    """Three ranges x (small, large) IPC, on DATM's CIFAR-10 settings at ``profile``."""
    runs, name = [], profile.name
    for ipc, base in DATM_IPCS[name]:
        p = scaled(get_preset(base), name)
        over = {"ipc": ipc}
        if ipc != DATM_IPCS[name][0][0] and name in DATM_LARGE_EVAL_EPOCHS:
            over["eval_epochs"] = DATM_LARGE_EVAL_EPOCHS[name]
        if name == "quick":   # share MTT's ZCA experts: no GSAM at quick (listed on the page)
            over["experts.gsam"] = False
            over["experts.epochs"] = profile.expert_epochs
        if name == "ci":      # 6-epoch experts, so that the three ranges differ at all
            over["experts.epochs"] = 6
        epochs = over.get("experts.epochs", p.experts.epochs)
        for which in DATM_RANGES:
            runs.append(DistillRun(
                f"datm-ranges-ipc{ipc}-{which}", base,
                {**over, **datm_range_overrides(which, epochs, p.match.expert_epochs)},
                None, f"IPC {ipc}, {which}"))
    return runs


def run(profile: Profile, device=None, only=None) -> list:
    """Run every missing or stale range run (resumable); return the results paths. ``only``: the
    runs whose name contains it (e.g. ``late``, ``ipc500``)."""
    profile = as_profile(profile)
    return run_pieces(plan(profile), profile, device, only)


def load(profile: Profile) -> Loaded:
    """Every range run at ``profile``: found (finished and current), missing, stale."""
    profile = as_profile(profile)
    return load_pieces(plan(profile), profile)


def datm_verdict(runs: dict) -> list[str]:
    """Plain statements testing DATM's claim on the range runs: at the smaller IPC matching late
    segments loses to early/all, at the larger IPC it wins (final evaluation point)."""
    by_ipc: dict[int, dict] = {}
    for name, r in runs.items():
        ipc, which = r.data["n_images"] // 10, name.rsplit("-", 1)[1]
        by_ipc.setdefault(ipc, {})[which] = r.data["result_at_declared_iteration"]
    if not by_ipc:
        return ["no results to judge"]
    lines, wins = [], {}
    for ipc in sorted(by_ipc):
        res = by_ipc[ipc]
        if not {"early", "all", "late"} <= res.keys():
            lines.append(f"IPC {ipc}: incomplete ({', '.join(sorted(res))} present)")
            continue
        other = max(("early", "all"), key=lambda k: res[k]["mean"])
        diff = 100 * (res["late"]["mean"] - res[other]["mean"])
        spread = 100 * max(res[k]["std"] for k in ("early", "all", "late"))
        wins[ipc] = diff
        lines.append(f"IPC {ipc}: early {100 * res['early']['mean']:.1f} %, all "
                     f"{100 * res['all']['mean']:.1f} %, late {100 * res['late']['mean']:.1f} %: "
                     f"late {'beats' if diff > 0 else 'loses to'} the better of early/all "
                     f"({other}) by {abs(diff):.1f} points (largest run-to-run std "
                     f"{spread:.1f})")
    if len(wins) >= 2:
        small, large = min(wins), max(wins)
        holds_small, holds_large = wins[small] < 0, wins[large] > 0
        lines.append(f"DATM's claim at this scale: late loses at the small IPC ({small}): "
                     f"{'yes' if holds_small else 'no'}; late wins at the large IPC ({large}): "
                     f"{'yes' if holds_large else 'no'}")
    return lines
