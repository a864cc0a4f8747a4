"""The MTT page (MTT's CIFAR-10 table and its cross-architecture check), as pieces at a profile.

- the table (papers.md §2.4): the DC-BENCH presets at IPC 1, 10, 50 (pieces ``mtt-cifar10-ipc<K>``),
  each with the random-real baseline inside its results (the initial real images, same protocol,
  lr 0.01, the DC/DSA protocol's lr with which the paper's random row was made); beside each, the
  same initial images trained at the **learned** step size of the distilled set
  (``mtt-cifar10-ipc<K>-random-learned-lr``), so that the gain over random splits into what the
  pixels bring and what the learned step size brings;
- the cross-architecture check (papers.md §2.5; pieces ``cross-arch-<network>[-random|-lr<x>]``):
  the IPC 10 set, distilled on the ConvNet, evaluated on ConvNet, ResNet-18, VGG-11 and AlexNet by
  MTT's protocol; beside each, the same network trained on the set's random real initial images
  (lr 0.01), and a fixed-lr diagnostic.

Every piece writes its own results file (``results/<profile>/distill/...``,
``.../cross_arch/...``); every distillation checkpoints, so ``python -m ddbook reproduce mtt-cifar10
--profile quick`` resumes where it stopped (``mtt`` and ``cross-arch`` run one part each).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..presets import SCALES, resolve
from ..profiles import Profile
from ..results import Timer, load_result, save_result
from ._common import (DistillRun, Loaded, as_profile, display_images, final_set, has_final_set,
                      load_pieces, run_pieces)

__all__ = ["NAME", "NOTEBOOK", "TITLE", "ALIASES", "plan", "run", "load", "verdicts", "MTT_IPCS",
           "table_plan", "table_found", "table_rows", "paper_rows", "cross_arch_plan",
           "cross_arch_found", "cross_arch_rows", "cross_arch_diagnostics", "final_set",
           "has_final_set", "display_images"]

NAME = "mtt-cifar10"
NOTEBOOK = "mtt_cifar10"
TITLE = "MTT on CIFAR-10: IPC 1, 10, 50 and the cross-architecture check"
ALIASES = {"mtt": "mtt-cifar10-", "cross-arch": "cross-arch-"}

MTT_IPCS = (1, 10, 50)
MTT_BASELINE_LR = 0.01          # DC/DSA's evaluation lr, with which the random rows were made
LEARNED_LR_SUFFIX = "-random-learned-lr"
CROSS_PREFIX = "cross-arch-"
CROSS_ARCH = ("ConvNet", "ResNet18", "VGG11", "AlexNet")
# evaluation epochs of the cross-architecture check where they differ from the MTT runs' own
# (ci: a ResNet-18 trains at a few images/s on a CPU)
CROSS_ARCH_EPOCHS = {"ci": 1}
RANDOM_SUFFIX = "-random"       # cross-arch piece "<network>-random": the random real baseline
# cross-arch pieces "<network>-lr<x>": the distilled set trained at a fixed lr x instead of its
# learned step size; a diagnostic that separates "the set does not transfer" from "the learned
# step size does not suit that network" (VGG-11 does not fit the set at the learned lr at quick)
CROSS_ARCH_DIAGNOSTICS = ("VGG11-lr0.01",)


# ------------------------------------------------------------------------------------------
# MTT's table


def table_plan(profile: Profile) -> list[DistillRun]:
    """MTT CIFAR-10 at IPC 1, 10, 50: those within the profile's IPC cap (ci: 1 and 10)."""
    cap = SCALES[profile.name].max_ipc
    return [DistillRun(f"mtt-cifar10-ipc{ipc}", f"mtt-cifar10-ipc{ipc}", {}, MTT_BASELINE_LR,
                       f"IPC {ipc}") for ipc in MTT_IPCS if cap is None or ipc <= cap]


@dataclass(frozen=True)
class LearnedLrBaseline:
    """The random real images a run starts from, trained by the run's own evaluation protocol
    (same networks, seeds, epochs) at the run's final **learned** step size instead of lr 0.01."""
    source: DistillRun

    @property
    def name(self) -> str:
        return self.source.name + LEARNED_LR_SUFFIX

    def _config(self, profile: Profile, src) -> dict:
        return {"set": f"{self.source.preset} initial (random real)",
                "lr": "the distilled set's final learned step size",
                "learned_lr": src.data["result_at_declared_iteration"]["lr"],
                "set_config": self.source.expected_config(profile)}

    def _source(self, profile: Profile):
        src = self.source.load(profile)
        if src is None:
            raise FileNotFoundError(f"{self.name} trains at the learned step size of the finished "
                                    f"{self.source.name} run at {profile.name}: run `python -m "
                                    f"ddbook reproduce mtt --profile {profile.name}` first")
        return src

    def load(self, profile: Profile):
        src = self.source.load(profile)
        if src is None:      # no source run (or a stale one): this piece cannot be current
            return None
        return load_result(f"distill/{self.name}", profile.name, missing_ok=True,
                           expect_config=self._config(profile, src))

    def run(self, profile: Profile, device=None) -> Path:
        from ..presets import _data, _evaluator, _initial_set

        src = self._source(profile)
        preset = resolve(self.source.preset, profile.name, self.source.overrides)
        lr = src.data["result_at_declared_iteration"]["lr"]
        with Timer() as t:
            data = _data(preset)
            synset, _ = _initial_set(preset, data, None)   # MTT starts from real images
            res = _evaluator(preset, data, device)(replace(synset, syn_lr=float(lr)))
        return save_result(f"distill/{self.name}", profile.name,
                           {**res.to_dict(), "set": "the random real images the run starts from, "
                            "at its final learned step size", "source_sha": src.provenance["sha"]},
                           self._config(profile, src), [preset.loop.seed + 1000], t.seconds, device)


# ------------------------------------------------------------------------------------------
# cross-architecture


@dataclass(frozen=True)
class CrossArchPiece:
    """One evaluation of the cross-architecture check (``piece`` as in :func:`_split_piece`)."""
    piece: str

    @property
    def name(self) -> str:
        return CROSS_PREFIX + self.piece

    def load(self, profile: Profile):
        return load_result(f"cross_arch/{self.piece}", profile.name, missing_ok=True,
                           expect_config=_cross_config(self.piece, profile))

    def run(self, profile: Profile, device=None) -> Path:
        return _cross_arch_one(self.piece, profile, device)


def cross_arch_plan(profile: Profile | None = None) -> list[str]:
    """The pieces of the cross-architecture check: per network, the distilled set and the random
    real baseline (``<network>-random``); then the diagnostics (``<network>-lr<x>``). The same at
    every profile."""
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
                         f"{cross_arch_plan()}")
    return network, random, lr


def _cross_arch_one(piece: str, profile: Profile, device=None):
    """Evaluate MTT's IPC 10 set (this profile's finished run) on a network by MTT's protocol, or,
    for ``<network>-random``, the set's random real initial images at MTT_BASELINE_LR."""
    from ..evaluate import evaluate_mtt
    from ..presets import _data, _initial_set

    network, random, fixed_lr = _split_piece(piece)
    src = table_plan(profile)[1].load(profile)
    if src is None:
        raise FileNotFoundError(f"the cross-architecture check evaluates the finished "
                                f"mtt-cifar10-ipc10 run at {profile.name}: run "
                                f"`python -m ddbook reproduce mtt --profile {profile.name}` first")
    preset = resolve("mtt-cifar10-ipc10", profile.name)
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
    return save_result(f"cross_arch/{piece}", profile.name,
                       {**res.to_dict(), "set": what, "distilled_on": f"{preset.experts.network} "
                        f"width {preset.experts.width}", "set_sha": src.provenance["sha"]},
                       _cross_config(piece, profile, cfg), [cfg.seed], t.seconds, device)


def _cross_eval(network: str, profile: Profile):
    """MTT's protocol for ``network``, as the MTT IPC 10 run evaluates its own ConvNet."""
    from ..evaluate import MTTEvalConfig
    preset = resolve("mtt-cifar10-ipc10", profile.name)
    conv = network.startswith("ConvNet")
    return MTTEvalConfig(network=network, width=preset.experts.width if conv else None,
                         epochs=CROSS_ARCH_EPOCHS.get(profile.name, preset.eval_epochs or 1000),
                         batch_size=preset.eval_batch, runs=preset.eval_runs,
                         seed=preset.loop.seed + 1000)


def _cross_config(piece: str, profile: Profile, cfg=None) -> dict:
    network, random, fixed_lr = _split_piece(piece)
    cfg = cfg or _cross_eval(network, profile)
    config = {"network": network, "eval": asdict(cfg), "set": "mtt-cifar10-ipc10",
              "set_config": table_plan(profile)[1].expected_config(profile)}
    if random:
        config.update(set="mtt-cifar10-ipc10 initial (random real)")
    if fixed_lr is not None:
        config.update(lr=fixed_lr)
    return config


# ------------------------------------------------------------------------------------------
# the protocol: plan, run, load


def plan(profile: Profile) -> list:
    """The table's runs, their learned-step-size baselines, then the cross-architecture pieces
    (which need the IPC 10 run) at ``profile``."""
    table = table_plan(profile)
    return (table + [LearnedLrBaseline(r) for r in table]
            + [CrossArchPiece(p) for p in cross_arch_plan(profile)])


def run(profile: Profile, device=None, only=None, need_sets: bool = False) -> list:
    """Run every missing or stale piece (resumable); return the results paths.

    ``only``: the pieces whose name contains it (e.g. ``ipc10``, ``VGG11``; see
    :func:`ddbook.figures._common.select`).
    ``need_sets``: also rerun a finished distillation whose full set (``synset_final.pt`` in its
    run folder, in the cache) is gone, for a caller that needs the set and not only its results.
    """
    profile = as_profile(profile)
    rerun = (lambda p, res: isinstance(p, DistillRun) and not has_final_set(res)) \
        if need_sets else None
    return run_pieces(plan(profile), profile, device, only, rerun)


def load(profile: Profile) -> Loaded:
    """Every piece at ``profile``: found (current), missing, stale."""
    profile = as_profile(profile)
    return load_pieces(plan(profile), profile)


def table_found(found: dict) -> dict:
    """The table's runs among ``found``: {run name: Result}."""
    return {k: v for k, v in found.items()
            if k.startswith("mtt-cifar10-") and not k.endswith(LEARNED_LR_SUFFIX)}


def cross_arch_found(found: dict) -> dict:
    """The cross-architecture pieces among ``found``, keyed by piece (``VGG11``, ``VGG11-random``)."""
    return {k[len(CROSS_PREFIX):]: v for k, v in found.items() if k.startswith(CROSS_PREFIX)}


def _point(result, key: str) -> dict | None:
    """An evaluation point of a run's results: ``result.data[key]`` (None when absent)."""
    return None if result is None else result.data.get(key)


def _pct_or_none(point: dict | None) -> float | None:
    return None if point is None else _pct(point["mean"])


def table_rows(found: dict) -> list[dict]:
    """One row per IPC of MTT's table (percent; None where a piece is missing): the distilled set
    at the final iteration and its best over checkpoints (the iteration picked on test accuracy,
    as the paper's numbers are), the random real images it starts from at lr 0.01 and at the
    learned step size, the gain split into the step size and the pixels, and the paper's."""
    from ..reference import paper_numbers

    rows = []
    for r in table_plan_names(found):
        run, ipc = found.get(r), int(r.rsplit("ipc", 1)[1])
        final, best = _point(run, "result_at_declared_iteration"), _point(run, "best_over_checkpoints")
        base, learned = _point(run, "baseline"), found.get(r + LEARNED_LR_SUFFIX)
        paper = {row["method"]: row for row in paper_numbers(
            paper="MTT", where="Table 1", dataset="CIFAR-10", ipc=ipc)}
        d, b, bl = _pct_or_none(final), _pct_or_none(base), _pct(learned.data["mean"]) \
            if learned is not None else None
        rows.append({
            "ipc": ipc, "distilled, final iteration": d,
            "distilled std": None if final is None else _pct(final["std"]),
            "distilled, best over checkpoints": _pct_or_none(best),
            "best at iteration": None if best is None else best["iteration"],
            "random real, lr 0.01": b, "random real, learned step size": bl,
            "learned step size": None if final is None else final["lr"],
            "gain from the step size": None if b is None or bl is None else round(bl - b, 2),
            "gain from the pixels": None if d is None or bl is None else round(d - bl, 2),
            "paper": paper.get("MTT", {}).get("mean"), "paper std": paper.get("MTT", {}).get("std"),
            "paper random": paper.get("Random", {}).get("mean")})
    return rows


def table_plan_names(found: dict) -> list[str]:
    """The table's run names among ``found`` and the IPCs MTT reports, in IPC order."""
    return [f"mtt-cifar10-ipc{i}" for i in MTT_IPCS if f"mtt-cifar10-ipc{i}" in found]


def paper_rows() -> list[dict]:
    """The rows of reference/paper-numbers.csv this page draws (MTT Table 1, CIFAR-10, the IPCs
    of the table; MTT's cross-architecture Table 2)."""
    from ..reference import paper_numbers
    return ([r for r in paper_numbers(paper="MTT", where="Table 1", dataset="CIFAR-10")
             if r["ipc"] in MTT_IPCS and r["method"] in ("MTT", "Random")]
            + paper_numbers(paper="MTT", where="cross-architecture (Table 2)"))


CROSS_ARCH_NAMES = {"ConvNet": "ConvNet-3 (instance norm)", "ResNet18": "ResNet-18",
                    "VGG11": "VGG-11", "AlexNet": "AlexNet"}


def _pct(x: float) -> float:
    """A fraction as a percentage, rounded as the cross-architecture table and verdict print it."""
    return round(100 * x, 2)


def _cross_paper() -> dict:
    from ..reference import paper_numbers
    return {row["eval_network"]: float(row["mean"]) for row in
            paper_numbers(paper="MTT", where="cross-architecture (Table 2)")}


def cross_arch_rows(found: dict) -> list[dict]:
    """One row per network of the cross-architecture table (accuracies in %, None where a piece is
    missing): the distilled set, the random real images, the gain, the paper's reading, and the
    share of the ConvNet's accuracy the set keeps on that network: ours divides by our ConvNet
    (the width the set was distilled and evaluated at, ``conv_width``), the paper's by its own
    ConvNet (width 128)."""
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
            "paper kept of ConvNet": None if p is None or not pconv else round(p / pconv, 3),
            "conv_width": None if conv is None else conv.provenance["config"]["eval"]["width"]})
    return rows


def cross_arch_diagnostics(found: dict) -> list[str]:
    """One line per diagnostic piece present: the distilled set at a fixed lr on a network,
    beside the same set at its learned step size and the random real images."""
    lines = []
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


# ------------------------------------------------------------------------------------------
# verdicts (ddbook.verdicts)

ONE_SET = "runs = evaluation networks of ONE distilled set: the spread is evaluation noise only"


def _accuracies(point: dict | None):
    return None if point is None else point["accuracies"]


def _compare(a, b, claim: str):
    from dataclasses import replace as with_note

    from ..verdicts import compare_means
    v = compare_means(a, b, claim)
    return with_note(v, note="; ".join(x for x in (ONE_SET, v.note) if x))


def verdicts(loaded) -> list:
    """MTT's claims at this scale, on the accuracies of the evaluation networks (Welch's t):
    per IPC, the distilled set beats the random real images it starts from (lr 0.01, the protocol
    of the paper's random row), and beats them at its own learned step size (what the pixels
    bring); per architecture, the IPC 10 set beats random real images trained the same way.
    ``loaded``: a Loaded or a {piece name: Result} dict."""
    found = loaded.found if isinstance(loaded, Loaded) else loaded
    out = []
    for name in table_plan_names(found):
        run, ipc = found[name], name.rsplit("ipc", 1)[1]
        final = _accuracies(run.data["result_at_declared_iteration"])
        base = _accuracies(run.data.get("baseline"))
        if base is not None:
            out.append(_compare(final, base, f"IPC {ipc}: the distilled set beats the random real "
                                f"images it starts from (lr 0.01)"))
        learned = found.get(name + LEARNED_LR_SUFFIX)
        if learned is not None:
            out.append(_compare(final, learned.data["accuracies"], f"IPC {ipc}: the pixels: the "
                                f"distilled set beats the same random images at its learned "
                                f"step size"))
    cross = cross_arch_found(found)
    for net in CROSS_ARCH:
        d, r = cross.get(net), cross.get(net + RANDOM_SUFFIX)
        if d is not None and r is not None:
            out.append(_compare(d.data["accuracies"], r.data["accuracies"],
                                f"{CROSS_ARCH_NAMES[net]}: the IPC 10 set beats random real "
                                f"images trained the same way"))
    return out
