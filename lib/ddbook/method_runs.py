"""The runs behind the MTT and DATM pages, as sets of preset runs at a profile.

- ``mtt``: MTT's CIFAR-10 table (papers.md §2.4, §2.5): the DC-BENCH presets at IPC 1, 10, 50, each
  with the random-real baseline (the initial real images, same protocol, lr 0.01);
- ``datm-ranges``: DATM's "match early / late / all" figure (papers.md §10): DATM's CIFAR-10
  settings with the start epochs confined to one range of the expert trajectory, at a small and a
  large IPC. The ranges are **ours** (DATM does not state them): early = [0, 20), late = [40, 60),
  all = [0, 60) epochs of DATM's 100-epoch experts, scaled with the profile's expert length;
- ``cross-arch``: MTT's CIFAR-10 IPC 10 set, distilled on the ConvNet, evaluated on ConvNet,
  ResNet-18, VGG-11 and AlexNet by MTT's protocol (papers.md §2.5); beside each, the same
  network trained on the set's random real initial images (lr 0.01, as the MTT table's baseline),
  so that each architecture's number has a reference made by the same protocol.

Every run writes its own results file (``results/<profile>/distill/...``, ``.../cross_arch/...``),
and every distillation checkpoints, so ``python -m ddbook reproduce <what> --profile quick``
resumes where it stopped. ``load_*`` read whatever is there and say what is missing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .presets import SCALES, get_preset, resolve, run_config, scaled
from .profiles import get_profile
from .results import StaleResultError, Timer, load_result, save_result

__all__ = ["MTT_IPCS", "DATM_RANGES", "datm_plan", "datm_range_overrides", "mtt_plan",
           "CROSS_ARCH", "cross_arch_plan", "cross_arch_rows", "cross_arch_verdict", "run",
           "load_runs", "load_cross_arch", "final_set", "has_final_set", "WHAT"]

MTT_IPCS = (1, 10, 50)
MTT_BASELINE_LR = 0.01          # DC/DSA's evaluation lr, with which the random rows were made
DATM_RANGES = {"early": (0, 20), "all": (0, 60), "late": (40, 60)}   # of 100 epochs: ours
DATM_PAPER_EPOCHS = 100
CROSS_ARCH = ("ConvNet", "ResNet18", "VGG11", "AlexNet")
# evaluation epochs of the cross-architecture check where they differ from the MTT runs' own
# (ci: a ResNet-18 trains at a few images/s on a CPU)
CROSS_ARCH_EPOCHS = {"ci": 1}
RANDOM_SUFFIX = "-random"       # cross-arch piece "<network>-random": the random real baseline
# cross-arch pieces "<network>-lr<x>": the distilled set trained at a fixed lr x instead of its
# learned step size; a diagnostic that separates "the set does not transfer" from "the learned
# step size does not suit that network" (VGG-11 does not fit the set at the learned lr at quick)
CROSS_ARCH_DIAGNOSTICS = ("VGG11-lr0.01",)


@dataclass(frozen=True)
class Run:
    """One distillation run: a preset, overrides on top of its profile scaling, a results name."""
    name: str                   # results name under distill/
    preset: str
    overrides: dict
    baseline_lr: float | None = None
    label: str = ""


# ------------------------------------------------------------------------------------------
# MTT's table


def mtt_plan(profile: str) -> list[Run]:
    """MTT CIFAR-10 at IPC 1, 10, 50: those within the profile's IPC cap (ci: 1 and 10)."""
    cap = SCALES[profile].max_ipc
    return [Run(f"mtt-cifar10-ipc{ipc}", f"mtt-cifar10-ipc{ipc}", {}, MTT_BASELINE_LR,
                f"IPC {ipc}") for ipc in MTT_IPCS if cap is None or ipc <= cap]


# ------------------------------------------------------------------------------------------
# DATM's early / late / all


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


def datm_plan(profile: str) -> list[Run]:
    """Three ranges x (small, large) IPC, on DATM's CIFAR-10 settings at ``profile``."""
    runs = []
    for ipc, base in DATM_IPCS[profile]:
        p = scaled(get_preset(base), profile)
        over = {"ipc": ipc}
        if ipc != DATM_IPCS[profile][0][0] and profile in DATM_LARGE_EVAL_EPOCHS:
            over["eval_epochs"] = DATM_LARGE_EVAL_EPOCHS[profile]
        if profile == "quick":   # share MTT's ZCA experts: no GSAM at quick (listed on the page)
            over["experts.gsam"] = False
            over["experts.epochs"] = get_profile(profile).expert_epochs
        if profile == "ci":      # 6-epoch experts, so that the three ranges differ at all
            over["experts.epochs"] = 6
        epochs = over.get("experts.epochs", p.experts.epochs)
        for which in DATM_RANGES:
            runs.append(Run(f"datm-ranges-ipc{ipc}-{which}", base,
                            {**over, **datm_range_overrides(which, epochs, p.match.expert_epochs)},
                            None, f"IPC {ipc}, {which}"))
    return runs


def _run_distill(r: Run, profile: str, device=None):
    from .presets import run_preset
    return run_preset(r.preset, profile, device=device, overrides=r.overrides,
                      result_name=r.name, baseline_lr=r.baseline_lr)


# ------------------------------------------------------------------------------------------
# cross-architecture


def cross_arch_plan(profile: str) -> list[str]:
    """The pieces of the cross-architecture check: per network, the distilled set and the random
    real baseline (``<network>-random``); then the diagnostics (``<network>-lr<x>``)."""
    get_profile(profile)
    return [n + s for n in CROSS_ARCH for s in ("", RANDOM_SUFFIX)] + list(CROSS_ARCH_DIAGNOSTICS)


def _split_piece(piece: str) -> tuple[str, bool, float | None]:
    """``piece`` -> (network, random real?, fixed lr or None for the learned step size)."""
    network, random, lr = piece, False, None
    if piece.endswith(RANDOM_SUFFIX):
        network, random, lr = piece[:-len(RANDOM_SUFFIX)], True, MTT_BASELINE_LR
    elif "-lr" in piece:
        network, _, x = piece.partition("-lr")
        try:
            lr = float(x)
        except ValueError:
            lr = math.nan
        if not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"cross-architecture piece {piece!r}: the fixed lr after '-lr' must "
                             f"be a positive number, e.g. VGG11-lr0.01")
    if network not in CROSS_ARCH:
        raise ValueError(f"unknown cross-architecture piece {piece!r}; choose one of "
                         f"{cross_arch_plan('ci')}")
    return network, random, lr


def _expected(r: Run, profile: str) -> dict:
    return run_config(resolve(r.preset, profile, r.overrides), r.baseline_lr)


def _load_run(r: Run, profile: str):
    """The finished, current result of run ``r``, or None (missing, unfinished or stale)."""
    try:
        res = load_result(f"distill/{r.name}", profile, expect_config=_expected(r, profile),
                          missing_ok=True)
    except StaleResultError:
        return None
    return res if res is not None and res.data.get("finished") else None


def _cross_arch_one(piece: str, profile: str, device=None):
    """Evaluate MTT's IPC 10 set (this profile's finished run) on a network by MTT's protocol, or,
    for ``<network>-random``, the set's random real initial images at MTT_BASELINE_LR."""
    from .evaluate import evaluate_mtt
    from .presets import _data, _initial_set

    network, random, fixed_lr = _split_piece(piece)
    src = _load_run(mtt_plan(profile)[1], profile)
    if src is None:
        raise FileNotFoundError(f"the cross-architecture check evaluates the finished "
                                f"mtt-cifar10-ipc10 run at {profile}: run "
                                f"`python -m ddbook reproduce mtt --profile {profile}` first")
    preset = resolve("mtt-cifar10-ipc10", profile)
    data = _data(preset)
    if random:  # MTT's init is "real": the initial set needs no experts
        synset, _ = _initial_set(preset, data, None)
        lr = MTT_BASELINE_LR
    else:
        synset = final_set(src)
        lr = synset.syn_lr if fixed_lr is None else fixed_lr
    cfg = _cross_eval(network, profile)
    with Timer() as t:
        res = evaluate_mtt(synset.images, synset.labels, lr, data[5], data[6], cfg,
                           num_classes=data[0].num_classes, device=device)
    what = ("the random real images the run starts from" if random else "the distilled set"
            + ("" if fixed_lr is None else f" at a fixed lr {fixed_lr} (diagnostic)"))
    return save_result(f"cross_arch/{piece}", profile,
                       {**res.to_dict(), "set": what, "distilled_on": f"{preset.experts.network} "
                        f"width {preset.experts.width}", "set_sha": src.provenance["sha"]},
                       _cross_config(piece, profile, cfg), [cfg.seed], t.seconds, device)


def _cross_eval(network: str, profile: str):
    """MTT's protocol for ``network``, as the MTT IPC 10 run evaluates its own ConvNet."""
    from .evaluate import MTTEvalConfig
    preset = resolve("mtt-cifar10-ipc10", profile)
    conv = network.startswith("ConvNet")
    return MTTEvalConfig(network=network, width=preset.experts.width if conv else None,
                         epochs=CROSS_ARCH_EPOCHS.get(profile, preset.eval_epochs or 1000),
                         batch_size=preset.eval_batch, runs=preset.eval_runs,
                         seed=preset.loop.seed + 1000)


def _cross_config(piece: str, profile: str, cfg=None) -> dict:
    from dataclasses import asdict

    network, random, fixed_lr = _split_piece(piece)
    cfg = cfg or _cross_eval(network, profile)
    config = {"network": network, "eval": asdict(cfg), "set": "mtt-cifar10-ipc10",
              "set_config": _expected(mtt_plan(profile)[1], profile)}
    if random:
        config.update(set="mtt-cifar10-ipc10 initial (random real)")
    if fixed_lr is not None:
        config.update(lr=fixed_lr)
    return config


# ------------------------------------------------------------------------------------------
# running and loading

WHAT = ("mtt", "datm-ranges", "cross-arch")


def run(what: str, profile: str, device=None, only: str | None = None,
        need_sets: bool = False) -> list:
    """Run every missing piece of ``what`` at ``profile`` (resumable); return the results paths.

    ``only``: run just the pieces whose name contains it (e.g. ``ipc10``, ``late``, ``VGG11``).
    ``need_sets``: also rerun a finished distillation whose full set (``synset_final.pt`` in its
    run folder, in the cache) is gone, for a caller that needs the set and not only its results.
    """
    get_profile(profile)
    paths = []
    if what == "cross-arch":
        for piece in cross_arch_plan(profile):
            if only and only not in piece:
                continue
            if _load_cross(piece, profile) is None:
                paths.append(_cross_arch_one(piece, profile, device))
        return paths
    plan = {"mtt": mtt_plan, "datm-ranges": datm_plan}.get(what)
    if plan is None:
        raise ValueError(f"unknown run set {what!r}; choose one of {WHAT}")
    for r in plan(profile):
        if only and only not in r.name:
            continue
        res = _load_run(r, profile)
        if res is None or (need_sets and not has_final_set(res)):
            paths.append(_run_distill(r, profile, device)[0])
    return paths


def load_runs(what: str, profile: str) -> tuple[dict, list[str]]:
    """{run name: Result} of the finished, current runs of ``what`` at ``profile``, and the names
    of the missing ones (never run, unfinished, or made from another config)."""
    plan = {"mtt": mtt_plan, "datm-ranges": datm_plan}[what](profile)
    found, missing = {}, []
    for r in plan:
        res = _load_run(r, profile)
        (missing.append(r.name) if res is None else found.__setitem__(r.name, res))
    return found, missing


def _load_cross(piece: str, profile: str):
    try:
        return load_result(f"cross_arch/{piece}", profile, missing_ok=True,
                           expect_config=_cross_config(piece, profile))
    except StaleResultError:
        return None


def load_cross_arch(profile: str) -> tuple[dict, list[str]]:
    """{piece: Result} of the finished, current pieces of the cross-architecture check at
    ``profile`` (pieces: ``<network>``, ``<network>-random`` and the diagnostics), and the
    missing pieces."""
    found, missing = {}, []
    for piece in cross_arch_plan(profile):
        res = _load_cross(piece, profile)
        (missing.append(piece) if res is None else found.__setitem__(piece, res))
    return found, missing


def has_final_set(result) -> bool:
    """Whether the full set of a run is still in its run folder (the cache)."""
    from pathlib import Path

    folder = result.data.get("run_folder")
    return bool(folder) and (Path(folder) / "synset_final.pt").exists()


def final_set(result):
    """The full-precision distilled set of a run (``synset_final.pt`` in its run folder, which
    lives in the cache, not in the repository)."""
    from pathlib import Path

    from .synset import load_synset

    path = Path(result.data["run_folder"]) / "synset_final.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is gone (the cache is not kept between machines): rerun "
                                f"that distillation (`python -m ddbook reproduce ...`) to recreate it")
    return load_synset(path)


def display_images(result, which: str = "final", per_class: int | None = None) -> torch.Tensor:
    """The display copies saved with a run (``which`` = "final" or "initial"), uint8 (n, C, H, W),
    ``per_class`` = k: the first k of each class (at most DISPLAY_PER_CLASS were saved)."""
    key = f"display_{which}"
    if not result.arrays or key not in result.arrays:
        raise KeyError(f"{key!r} was not saved with {result.path}; rerun it with this version")
    x = torch.as_tensor(result.arrays[key])
    if per_class is None:
        return x
    classes = torch.as_tensor(result.arrays["classes"])[torch.as_tensor(
        result.arrays["display_index"])]
    keep = torch.cat([torch.nonzero(classes == c).flatten()[:per_class]
                      for c in range(int(classes.max()) + 1)])
    return x[keep]


def mtt_verdict(runs: dict) -> list[str]:
    """Plain statements on the MTT runs: distilled vs the random real images they started from,
    per IPC, against the paper's gap; whether the IPCs rank by gain as in the paper."""
    from .reference import paper_numbers

    lines, gains = [], []
    for ipc in MTT_IPCS:
        r = runs.get(f"mtt-cifar10-ipc{ipc}")
        if r is None:
            lines.append(f"IPC {ipc}: no run")
            continue
        ours, base = r.data["result_at_declared_iteration"], r.data.get("baseline")
        if base is None:
            lines.append(f"IPC {ipc}: no random-real baseline recorded")
            continue
        gain = 100 * (ours["mean"] - base["mean"])
        paper = {row["method"]: float(row["mean"]) for row in paper_numbers(
            paper="MTT", where="Table 1", dataset="CIFAR-10", ipc=ipc)}
        pgain = paper["MTT"] - paper["Random"] if {"MTT", "Random"} <= paper.keys() else math.nan
        gains.append((ipc, gain, pgain))
        lines.append(f"IPC {ipc}: distilled {100 * ours['mean']:.1f} ± {100 * ours['std']:.1f} % "
                     f"vs random real {100 * base['mean']:.1f} % ({gain:+.1f} points; ± is the "
                     f"spread over {ours['runs']} evaluation networks of one distilled set); "
                     f"the paper's gap: {pgain:+.1f} points "
                     f"({paper.get('MTT')} vs {paper.get('Random')})")
    if gains:
        beats = sum(g > 0 for _, g, _ in gains)
        lines.append(f"distillation beats its random real initialisation at {beats}/{len(gains)} "
                     f"IPCs (the paper: at every IPC)")
    if len(gains) >= 2:
        order = [i for i, _, _ in sorted(gains, key=lambda t: -t[1])]
        porder = [i for i, _, _ in sorted(gains, key=lambda t: -t[2])]
        ratio = [g / pg for _, g, pg in gains if pg > 0]
        lines.append(f"IPCs by gain, ours: {order}; the paper's: {porder} ("
                     + ("the same order" if order == porder else "a different order")
                     + f"); our gains are {min(ratio):.0%}–{max(ratio):.0%} of the paper's")
    return lines


CROSS_ARCH_NAMES = {"ConvNet": "ConvNet-3 (instance norm)", "ResNet18": "ResNet-18",
                    "VGG11": "VGG-11", "AlexNet": "AlexNet"}


def _pct(x: float) -> float:
    """A fraction as a percentage, rounded as the cross-architecture table and verdict print it."""
    return round(100 * x, 2)


def _cross_paper() -> dict:
    from .reference import paper_numbers
    return {row["eval_network"]: float(row["mean"]) for row in
            paper_numbers(paper="MTT", where="cross-architecture (Table 2)")}


def cross_arch_rows(found: dict) -> list[dict]:
    """One row per network of the cross-architecture table (accuracies in %, None where a piece is
    missing): the distilled set, the random real images, the gain, the paper's reading, and the
    share of the ConvNet's accuracy the set keeps on that network (ours and the paper's)."""
    paper = _cross_paper()
    conv = found.get("ConvNet")
    pconv = paper.get(CROSS_ARCH_NAMES["ConvNet"])
    rows = []
    for net in CROSS_ARCH:
        d, r = found.get(net), found.get(net + RANDOM_SUFFIX)
        p = paper.get(CROSS_ARCH_NAMES[net])
        pct = (lambda x: None if x is None else _pct(x.data["mean"]))
        rows.append({
            "network": net, "evaluated on": CROSS_ARCH_NAMES[net],
            "distilled": pct(d), "distilled std": None if d is None else _pct(d.data["std"]),
            "random real": pct(r),
            "gain": None if d is None or r is None else round(pct(d) - pct(r), 2),
            "runs": None if d is None else d.data["runs"],
            "epochs": None if d is None else d.data["epochs"],
            "paper (approx.)": p,
            "kept of ConvNet": None if d is None or conv is None
            else round(d.data["mean"] / conv.data["mean"], 3),
            "paper kept of ConvNet": None if p is None or not pconv else round(p / pconv, 3)})
    return rows


def cross_arch_verdict(found: dict) -> list[str]:
    """Plain statements on the cross-architecture check: per network, does the distilled set beat
    the random real images trained the same way, and how much of its ConvNet accuracy does it keep
    (against the paper's reading)."""
    lines, wins, n = [], 0, 0
    for row in cross_arch_rows(found):
        name = row["evaluated on"]
        if row["distilled"] is None or row["random real"] is None:
            missing = [k for k in ("distilled", "random real") if row[k] is None]
            lines.append(f"{name}: incomplete (missing: {', '.join(missing)})")
            continue
        n += 1
        wins += row["gain"] > 0
        kept = ("" if row["kept of ConvNet"] is None or row["network"] == "ConvNet" else
                f"; keeps {row['kept of ConvNet']:.0%} of its ConvNet accuracy"
                + ("" if row["paper kept of ConvNet"] is None else
                   f" (the paper: {row['paper kept of ConvNet']:.0%})"))
        lines.append(f"{name}: distilled {row['distilled']:.1f} ± {row['distilled std']:.1f} % vs "
                     f"random real {row['random real']:.1f} % ({row['gain']:+.1f} points){kept}")
    if n:
        lines.append(f"the distilled set beats the random real images at {wins}/{n} architectures")
    for piece in CROSS_ARCH_DIAGNOSTICS:
        r = found.get(piece)
        if r is None:
            continue
        network, _, lr = _split_piece(piece)
        learned, rand = found.get(network), found.get(network + RANDOM_SUFFIX)
        lines.append(
            f"diagnostic, {CROSS_ARCH_NAMES[network]}: the distilled set at a fixed lr {lr:g} "
            f"instead of its learned step size"
            + ("" if learned is None else f" ({learned.data['lr']:.4f})")
            + f": {_pct(r.data['mean']):.1f} ± {_pct(r.data['std']):.1f} %"
            + ("" if learned is None else
               f" (at the learned step size {_pct(learned.data['mean']):.1f} %")
            + ("" if rand is None else f"{'; ' if learned else ' ('}random real at "
               f"{MTT_BASELINE_LR:g}: {_pct(rand.data['mean']):.1f} %")
            + (")" if learned is not None or rand is not None else ""))
    return lines


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


def committed_or_live(what: str, draw: str, live: dict, live_profile: str) -> tuple[dict, str]:
    """The committed runs of ``what`` at ``draw`` if there are any, else the live ones; prints how
    many are present, from which commit, their wall time, and which are missing."""
    drawn, missing = load_runs(what, draw)
    if drawn:
        first = next(iter(drawn.values()))
        print(f"{draw}: {len(drawn)} of {len(drawn) + len(missing)} runs present; git "
              f"{first.provenance['sha'][:10]}; "
              f"{sum(r.provenance['wall_time_s'] for r in drawn.values()) / 60:.0f} min in all")
    if missing:
        print(f"missing at {draw}: {', '.join(missing)}")
    if not drawn:
        print(f"no committed {draw} runs yet: drawing the live {live_profile} runs instead")
        return live, live_profile
    return drawn, draw
