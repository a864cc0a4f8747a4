"""Every published distillation setting as a named preset, the profiles as overrides, and the run.

Presets (``PRESETS``, names ``<method>-<dataset>-ipc<IPC>``) each cite their source:
- ``mtt-*``: the author-supplied DC-BENCH commands (papers.md §2.4 (a), justincui03/dc_benchmark
  ``methods/tm/readme.md``), ImageNet subsets from mtt-distillation issue #1;
- ``datm-*``: DATM ``configs/<dataset>/ConvIN/IPC<ipc>.yaml`` after the 2024-04-26 fixes (§3.3);
- ``selmatch-*``: SelMatch ``scripts/distill/*.sh`` plus ``distill.py`` defaults (§4.3, §4.4).

A profile (``ddbook.profiles``: ci, quick, gpu, paper) rescales a preset: its width, experts,
iterations, data and evaluation runs come from the profile, plus the caps in ``SCALES`` below
(except for the methods ``UNCAPPED`` lists at that profile: SelMatch at ``gpu`` keeps its own IPC
and evaluation length). Every change a profile makes is listed by :func:`reductions`, recorded in
the results of ``run_preset`` and printable with :func:`describe_reductions`: never silent.
Start epochs are scaled with the experts' length so that "early" and "late" segments keep their
meaning (DATM's point); expansion_end is scaled with the iterations. ``paper`` changes nothing.
Tiny ImageNet and the ImageNet subsets are listed as data; ``ddbook.data`` cannot load them yet.
"""
from __future__ import annotations

import hashlib
import json
import math
import types
import typing
from dataclasses import asdict, dataclass, replace

import torch

from .experts import ExpertConfig
from .matching import LoopConfig, MatchConfig
from .profiles import get_profile

__all__ = ["Preset", "PRESETS", "Scale", "SCALES", "UNCAPPED", "get_preset", "scaled",
           "preset_names", "with_overrides", "resolve", "run_config", "run_preset", "preset_hash",
           "reductions", "describe_reductions"]

SELMATCH_EVAL_AT = (0, 500, 1000, 2500, 5000, 7500, 10000)  # SelMatch distill.py eval iterations


@dataclass(frozen=True)
class Preset:
    """A full distillation setting: data, experts, initialisation, matching, loop, evaluation."""
    name: str
    source: str                   # where the numbers come from
    method: str                   # "mtt", "datm" or "selmatch"
    dataset: str                  # "cifar10", "cifar100", "tiny", "imagenet-subset"
    ipc: int                      # images per class
    zca: bool                     # ZCA-whitened data for experts, distillation and evaluation
    experts: ExpertConfig         # how the expert trajectories are trained
    n_experts: int                # expert trajectories (MTT/DATM/SelMatch: 100)
    match: MatchConfig            # one iteration's maths and optimisers
    loop: LoopConfig              # iterations, evaluation points, seed
    syn_lr: float                 # alpha_0, initial step size (MTT lr_teacher, SelMatch lr_init)
    init: str = "real"            # "real", "noise", "correct" (DATM), "window" (SelMatch), "random"
    soft_labels: str | None = None  # None: hard; "correct-experts" (DATM); "one-expert" (DATM real)
    distill_fraction: float = 1.0  # SelMatch alpha: fraction of each class distilled (1: all)
    beta: float | None = None     # SelMatch window start (see selection.window_start)
    score: str = "cscore"         # difficulty score of the window ("cscore", "forgetting")
    reading: str = "class-fraction"  # window-start reading (selection.READINGS)
    eval_protocol: str = "mtt"    # "mtt" (learned alpha, DSA) or "selmatch" (ResNet, cosine)
    eval_network: str | None = None  # evaluated architecture; None: the student's
    eval_batch: int = 256         # evaluation batch size (MTT 256, DATM 128, SelMatch 128)
    eval_runs: int = 5            # networks per evaluation point
    eval_epochs: int | None = None  # None: the protocol's (MTT 1000; SelMatch 1000 * 5% / ratio)
    train_per_class: int | None = None  # real images per class used (None: all)
    test_per_class: int | None = None   # test images per class used (None: all)
    notes: str = ""               # deviations and open questions

    def __post_init__(self):
        check_preset(self)


def _fail(key: str, must: str, value) -> None:
    raise ValueError(f"setting {key} must be {must}, got {value!r}")


def check_preset(p: Preset) -> None:
    """Refuse a preset whose values cannot run (a clear ValueError naming the setting): IPC, run
    counts and loop lengths at least 1, fractions in [0, 1], finite positive rates, known names."""
    for key, value, low in (("ipc", p.ipc, 1), ("n_experts", p.n_experts, 1),
                            ("eval_batch", p.eval_batch, 1), ("eval_runs", p.eval_runs, 1),
                            ("eval_epochs", p.eval_epochs, 1),
                            ("train_per_class", p.train_per_class, 1),
                            ("test_per_class", p.test_per_class, 1),
                            ("loop.iterations", p.loop.iterations, 1),
                            ("loop.checkpoint_every", p.loop.checkpoint_every, 1),
                            ("loop.eval_every", p.loop.eval_every, 1),
                            ("match.batch_syn", p.match.batch_syn, 1),
                            ("loop.report_iteration", p.loop.report_iteration, 0)):
        if value is not None and not (isinstance(value, int) and value >= low):
            _fail(key, f"a whole number >= {low}", value)
    if p.loop.report_iteration is not None and p.loop.report_iteration > p.loop.iterations:
        _fail("loop.report_iteration", f"at most loop.iterations ({p.loop.iterations})",
              p.loop.report_iteration)
    if any(not isinstance(i, int) or i < 0 for i in p.loop.eval_at):
        _fail("loop.eval_at", "a list of whole numbers >= 0", list(p.loop.eval_at))
    for key, value in (("syn_lr", p.syn_lr), ("match.lr_img", p.match.lr_img),
                       ("experts.lr", p.experts.lr)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            _fail(key, "a finite number > 0", value)
    for key, value in (("match.lr_lr", p.match.lr_lr), ("match.lr_label", p.match.lr_label),
                       ("match.threshold", p.match.threshold)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            _fail(key, "a finite number >= 0", value)
    for key, value in (("distill_fraction", p.distill_fraction), ("beta", p.beta)):
        if value is not None and not (math.isfinite(value) and 0 <= value <= 1):
            _fail(key, "a number in [0, 1]", value)
    for key, value, choices in (("init", p.init, INITS), ("soft_labels", p.soft_labels, SOFT_LABELS),
                                ("eval_protocol", p.eval_protocol, ("mtt", "selmatch")),
                                ("score", p.score, ("cscore", "forgetting")),
                                ("reading", p.reading, ("class-fraction", "ipc-offset"))):
        if value not in choices:
            _fail(key, f"one of {list(choices)}", value)


INITS = ("real", "random", "noise", "correct", "window")
SOFT_LABELS = (None, "correct-experts", "one-expert")


_MTT_SRC = "DC-BENCH methods/tm/readme.md (author-supplied MTT commands), papers.md §2.4 (a)"


def _mtt(dataset: str, ipc: int, n: int, m: int, t_max: int, lr_img: float, lr_lr: float,
         lr_teacher: float, batch_syn: int | None, zca: bool, network: str = "ConvNet",
         notes: str = "", source: str = _MTT_SRC) -> Preset:
    return Preset(f"mtt-{dataset}-ipc{ipc}", source, "mtt", dataset, ipc, zca,
                  ExpertConfig(network=network, epochs=50), 100,
                  MatchConfig(syn_steps=n, expert_epochs=m, max_start_epoch=t_max, lr_img=lr_img,
                              lr_lr=lr_lr, batch_syn=batch_syn),
                  LoopConfig(iterations=5000, eval_every=100), lr_teacher, notes=notes)


def _datm(dataset: str, ipc: int, n: int, t_min: int, t0: int | None, t_max: int,
          expansion_end: int | None, batch_syn: int, lr_img: float, lr_lr: float, lr_y: float,
          threshold: float = 1.0, init: str = "correct", m: int = 2, eval_it: int = 500,
          network: str = "ConvNet") -> Preset:
    match = MatchConfig(syn_steps=n, expert_epochs=m, min_start_epoch=t_min, max_start_epoch=t_max,
                        initial_max_start_epoch=t0, expansion_end=expansion_end,
                        batch_syn=batch_syn, lr_img=lr_img, lr_lr=lr_lr, learn_labels=True,
                        lr_label=lr_y, threshold=threshold)
    return Preset(f"datm-{dataset}-ipc{ipc}", f"DATM configs/{dataset}/ConvIN/IPC{ipc}.yaml "
                  "(papers.md §3.3)", "datm", dataset, ipc, True,
                  ExpertConfig(network=network, epochs=100, gsam=True), 100, match,
                  LoopConfig(iterations=10000, eval_every=eval_it), 0.01, init=init,
                  soft_labels="one-expert" if init == "real" else "correct-experts",
                  eval_batch=128, eval_runs=1,
                  notes="configs evaluate 1 network per point (num_eval 1); the paper reports "
                        "mean ± std, presumably over 5 (papers.md §3.4 [M])")


def _selmatch(dataset: str, ipc: int, fraction: float, beta: float, lr_img: float = 1000.0,
              tiny: bool = False) -> Preset:
    match = MatchConfig(syn_steps=20 if tiny else 55, expert_epochs=2, max_start_epoch=80,
                        batch_syn=125, lr_img=lr_img, lr_lr=1e-5)
    return Preset(f"selmatch-{dataset}-ipc{ipc}", f"SelMatch scripts/distill/{dataset}.sh and "
                  "distill.py defaults (papers.md §4.3, §4.4)", "selmatch", dataset, ipc, False,
                  ExpertConfig(network="ConvNetD4BN" if tiny else "ConvNetBN", epochs=100,
                               augment="none"), 100, match,
                  LoopConfig(iterations=10000, eval_every=None, eval_at=SELMATCH_EVAL_AT), 0.001,
                  init="window", distill_fraction=fraction, beta=beta,
                  score="forgetting" if tiny else "cscore", eval_protocol="selmatch",
                  eval_network="ResNet18BN_Tiny" if tiny else "ResNet18BN", eval_batch=128,
                  notes="experts without augmentation copies buffer.py's aug=True quirk (§4.3); "
                        "beta read as a fraction of the class (the paper), not int(IPC*beta)")


_PRESET_LIST = [
    _mtt("cifar10", 1, 50, 2, 2, 100, 1e-7, 0.01, None, True),
    _mtt("cifar10", 10, 30, 2, 20, 100, 1e-5, 0.001, None, True,
         notes="lr_img 100 with lr_teacher 0.001: issue #31's README typo resolved (§2.4)"),
    _mtt("cifar10", 50, 30, 2, 40, 1000, 1e-5, 0.001, None, False),
    _mtt("cifar100", 1, 20, 3, 20, 1000, 1e-5, 0.01, None, True),
    _mtt("cifar100", 10, 20, 2, 20, 1000, 1e-5, 0.01, None, False),
    _mtt("cifar100", 50, 80, 2, 40, 1000, 1e-5, 0.01, 125, True),
    _mtt("tiny", 1, 10, 2, 10, 10000, 1e-4, 0.01, None, False,
         notes="ConvNet as in the command; the paper uses ConvNetD4 [M]"),
    _mtt("tiny", 10, 20, 2, 40, 10000, 1e-4, 0.01, 200, False, notes="ConvNet as in the command"),
    _mtt("tiny", 50, 20, 2, 40, 10000, 1e-4, 0.01, 300, False, network="ConvNetD4"),
    _mtt("imagenet-subset", 1, 20, 2, 10, 100000, 1e-6, 0.01, None, False, network="ConvNetD5",
         source="mtt-distillation issue #1 (papers.md §2.2), resolution 128"),
    _mtt("imagenet-subset", 10, 20, 2, 10, 100000, 1e-6, 0.01, 20, False, network="ConvNetD5",
         source="mtt-distillation issue #1 (papers.md §2.2), resolution 128"),
    _datm("cifar10", 1, 80, 0, None, 4, None, 10, 100, 1e-7, 5, threshold=1.1),
    _datm("cifar10", 10, 80, 0, 10, 20, 1000, 100, 100, 1e-5, 2),
    _datm("cifar10", 50, 80, 0, 20, 40, 2000, 500, 1000, 1e-5, 2),
    _datm("cifar10", 500, 40, 40, None, 60, None, 1000, 50, 1e-5, 10, eval_it=1000),
    _datm("cifar10", 1000, 100, 40, None, 60, None, 1000, 50, 1e-5, 10, eval_it=1000),
    _datm("cifar100", 1, 40, 0, 10, 20, 1000, 1000, 1000, 1e-5, 10, m=3),
    _datm("cifar100", 10, 80, 0, 30, 50, 2000, 1000, 1000, 1e-5, 10),
    _datm("cifar100", 50, 80, 20, None, 70, None, 1000, 1000, 1e-5, 10, init="real"),
    _datm("cifar100", 100, 80, 30, None, 70, None, 1000, 50, 1e-5, 10),
    _datm("tiny", 1, 40, 0, 15, 20, 2000, 1000, 10000, 1e-4, 10, network="ConvNetD4"),
    _datm("tiny", 10, 40, 10, None, 50, None, 500, 100, 1e-4, 10, network="ConvNetD4"),
    _datm("tiny", 50, 20, 40, None, 70, None, 1000, 100, 1e-4, 10, network="ConvNetD4"),
    _selmatch("cifar10", 250, 0.6, 0.5),
    _selmatch("cifar10", 500, 0.2, 0.3),
    _selmatch("cifar10", 1000, 0.1, 0.2, lr_img=10000.0),
    _selmatch("cifar10", 1500, 0.1, 0.2, lr_img=10000.0),
    _selmatch("cifar100", 25, 0.8, 0.8),
    _selmatch("cifar100", 50, 0.6, 0.7),
    _selmatch("cifar100", 100, 0.3, 0.6),
    _selmatch("cifar100", 150, 0.2, 0.4),
    _selmatch("tiny", 50, 0.6, 0.8, tiny=True),
    _selmatch("tiny", 100, 0.5, 0.7, tiny=True),
]
PRESETS: dict[str, Preset] = {p.name: p for p in _PRESET_LIST}


@dataclass(frozen=True)
class Scale:
    """Distillation caps of a profile, on top of ``profiles.Profile`` (None: no cap)."""
    max_ipc: int | None           # images per class at most
    max_syn_steps: int | None     # N at most
    max_batch_syn: int | None     # batch_syn at most
    iterations: int | None        # None: the profile's distill_iterations
    eval_every: int | None        # evaluation spacing (None: the preset's points, rescaled)
    eval_epochs: int | None       # evaluation training epochs (None: the protocol's)
    eval_on_student: bool         # evaluate on the student architecture (no ResNet-18 on a CPU)
    zca: bool | None              # None: the preset's; False: skip ZCA (saves the fit at ci)


SCALES = {
    "ci": Scale(10, 5, 50, None, 5, 20, True, False),
    # quick: width-32 students, ~1-2 s per iteration on 2 CPU cores at CIFAR-10 IPC 10;
    # IPC up to 50 (MTT's table); larger IPCs only by an explicit override
    "quick": Scale(50, 10, 100, 200, 50, 300, True, None),
    "gpu": Scale(50, None, None, None, 250, 300, False, None),
    "paper": Scale(None, None, None, None, None, None, False, None),
}


# methods whose IPC and evaluation length a profile's caps do not touch (issue 14: a SelMatch
# preset at gpu runs at its own IPC, 250-1500 on CIFAR-10, and its protocol's evaluation epochs)
UNCAPPED = {"ci": (), "quick": (), "gpu": ("selmatch",), "paper": ("mtt", "datm", "selmatch")}


def preset_names(method: str | None = None) -> list[str]:
    return [n for n, p in PRESETS.items() if method is None or p.method == method]


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {preset_names()}")
    return PRESETS[name]


def _cap(value, cap):
    return value if cap is None or value is None else min(value, cap)


def _scaled_starts(match: MatchConfig, epochs: int, paper_epochs: int) -> dict:
    """Start epochs scaled by epochs / paper_epochs; T+ (exclusive) at most epochs - M + 1."""
    limit = epochs - match.expert_epochs + 1
    if limit < 1:
        raise ValueError(f"experts of {epochs} epochs cannot be matched over M = "
                         f"{match.expert_epochs} epochs")
    f = epochs / paper_epochs
    t_max = max(1, min(limit, math.floor(match.max_start_epoch * f)))
    t_min = min(math.floor(match.min_start_epoch * f), t_max - 1)
    t0 = match.initial_max_start_epoch
    t0 = None if t0 is None else min(max(math.floor(t0 * f), t_min + 1), t_max)
    return {"min_start_epoch": t_min, "max_start_epoch": t_max, "initial_max_start_epoch": t0}


def scaled(preset: Preset, profile: str) -> Preset:
    """``preset`` at ``profile``: the profile's widths, experts, data and runs, SCALES' caps."""
    prof, cap = get_profile(profile), SCALES[profile]
    if profile == "paper":
        return preset
    ex = preset.experts
    width = prof.width if ex.network.startswith("ConvNet") else None
    m = preset.match
    epochs = min(ex.epochs, max(prof.expert_epochs, m.expert_epochs))  # room for M epochs
    experts = replace(ex, width=width, epochs=epochs)
    iterations = cap.iterations or prof.distill_iterations
    expansion = None if m.expansion_end is None else \
        max(1, round(m.expansion_end * iterations / preset.loop.iterations))
    match = replace(m, syn_steps=_cap(m.syn_steps, cap.max_syn_steps),
                    batch_syn=_cap(m.batch_syn or cap.max_batch_syn, cap.max_batch_syn),
                    expansion_end=expansion, **_scaled_starts(m, experts.epochs, ex.epochs))
    capped = preset.method not in UNCAPPED[profile]
    frac = iterations / preset.loop.iterations
    eval_at = tuple(sorted({min(iterations, round(i * frac)) for i in preset.loop.eval_at}))
    every = preset.loop.eval_every and max(1, round(preset.loop.eval_every * frac))
    if cap.eval_every:  # the profile's spacing replaces the preset's points
        every, eval_at = cap.eval_every, ()
    loop = replace(preset.loop, iterations=iterations, eval_at=eval_at, eval_every=every,
                   checkpoint_every=max(1, min(preset.loop.checkpoint_every, iterations // 4 or 1)))
    eval_network = experts.network if cap.eval_on_student else preset.eval_network
    return replace(preset, experts=experts, n_experts=min(preset.n_experts, prof.n_experts),
                   match=match, loop=loop,
                   ipc=_cap(preset.ipc, cap.max_ipc) if capped else preset.ipc,
                   zca=preset.zca if cap.zca is None else cap.zca, eval_network=eval_network,
                   eval_runs=prof.eval_runs,
                   eval_epochs=(cap.eval_epochs or preset.eval_epochs) if capped
                   else preset.eval_epochs,
                   train_per_class=prof.train_per_class, test_per_class=prof.test_per_class)


_REDUCIBLE = {  # setting -> how to read it from a Preset
    "ipc": lambda p: p.ipc, "eval_epochs": lambda p: p.eval_epochs,
    "eval_runs": lambda p: p.eval_runs, "eval_network": lambda p: p.eval_network,
    "n_experts": lambda p: p.n_experts, "experts.epochs": lambda p: p.experts.epochs,
    "experts.width": lambda p: p.experts.width, "match.syn_steps": lambda p: p.match.syn_steps,
    "match.batch_syn": lambda p: p.match.batch_syn,
    "match.max_start_epoch": lambda p: p.match.max_start_epoch,
    "match.min_start_epoch": lambda p: p.match.min_start_epoch,
    "loop.iterations": lambda p: p.loop.iterations, "zca": lambda p: p.zca,
    "train_per_class": lambda p: p.train_per_class, "test_per_class": lambda p: p.test_per_class,
}


def reductions(preset: Preset, profile: str, overrides: dict | None = None) -> list[dict]:
    """Every setting in which ``resolve(preset, profile, overrides)`` differs from the preset's
    own value: ``{"setting", "preset", "run", "by"}`` with ``by`` "profile <name>" or "override".
    ``run_preset`` records this list with its results, so no cap is ever applied silently."""
    base = get_preset(preset) if isinstance(preset, str) else preset
    by_profile, final = scaled(base, profile), resolve(base, profile, overrides)
    out = []
    for key, read in _REDUCIBLE.items():
        if read(final) != read(base):
            by = "override" if read(final) != read(by_profile) else f"profile {profile}"
            out.append({"setting": key, "preset": read(base), "run": read(final), "by": by})
    return out


def describe_reductions(preset: Preset | str, profile: str, overrides: dict | None = None
                        ) -> list[str]:
    """:func:`reductions` as lines for a page: "ipc: 250 -> 50 (profile quick)"."""
    return [f"{r['setting']}: {r['preset']} -> {r['run']} ({r['by']})"
            for r in reductions(preset, profile, overrides)]


def with_overrides(preset: Preset, overrides: dict) -> Preset:
    """``preset`` with fields replaced: top-level names, or ``match.<f>``, ``loop.<f>``,
    ``experts.<f>``; a bare name that is a field of exactly one part is found there too.
    Values are checked against the field's type (a string from the command line is parsed); an
    unknown, ambiguous or ill-typed setting is a ValueError that lists the valid keys."""
    settings = _settings(preset)
    top, parts = {}, {s: {} for s in SECTIONS}
    for key, value in overrides.items():
        full = key
        if key in SECTIONS or "." not in key and key not in settings:
            owners = [s for s in SECTIONS if f"{s}.{key}" in settings]
            if len(owners) > 1:
                say = " or ".join(f"{o}.{key}" for o in owners)
                raise ValueError(f"ambiguous setting {key!r}: say {say}")
            full = f"{owners[0]}.{key}" if owners else key
        if full not in settings:
            raise ValueError(f"unknown setting {key!r}; valid keys: {_valid_keys(preset)}")
        part, _, name = full.rpartition(".")
        (parts[part] if part else top)[name] = _coerce(full, value, settings[full])
    for part, values in parts.items():
        if values:
            top[part] = replace(getattr(preset, part), **values)
    return replace(preset, **top)


def _settings(preset: Preset) -> dict:
    """Every settable key (``ipc``, ``match.syn_steps``, ...) and its type."""
    out = {}
    for name, hint in typing.get_type_hints(Preset).items():
        if name in SECTIONS:
            out.update({f"{name}.{n}": h for n, h in
                        typing.get_type_hints(type(getattr(preset, name))).items()})
        elif name != "name":
            out[name] = hint
    return out


SECTIONS = ("match", "loop", "experts")


def _valid_keys(preset: Preset) -> str:
    keys = _settings(preset)
    top = [k for k in keys if "." not in k]
    parts = [f"{s}.{{{', '.join(k.split('.', 1)[1] for k in keys if k.startswith(s + '.'))}}}"
             for s in SECTIONS]
    return f"{', '.join(top)}; " + "; ".join(parts)


def _coerce(key: str, value, hint):
    """``value`` (from JSON or a raw string) as the type ``hint`` of setting ``key``, or a clear
    ValueError: whole numbers for ints, finite numbers for floats, true/false, null for None."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            _fail(key, "a list, e.g. [0, 50, 100]", value)
        return tuple(_coerce(f"{key}[{i}]", v, typing.get_args(hint)[0])
                     for i, v in enumerate(value))
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            _fail(key, "true or false", value)
        return value
    if hint in (int, float) and isinstance(value, str):
        try:
            value = float(value) if hint is float else int(value)
        except ValueError:
            pass
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            _fail(key, "a whole number", value)
        return value
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) \
                or not math.isfinite(value):
            _fail(key, "a finite number", value)
        return float(value)
    if hint is str and not isinstance(value, str):
        _fail(key, "a string", value)
    return value


def resolve(name: str | Preset, profile: str, overrides: dict | None = None) -> Preset:
    """The preset a run uses: ``name`` scaled to ``profile``, then ``overrides`` applied."""
    preset = scaled(get_preset(name) if isinstance(name, str) else name, profile)
    return with_overrides(preset, overrides) if overrides else preset


def run_config(preset: Preset, baseline_lr: float | None = None) -> dict:
    """The config recorded with a run's results (and checked when they are loaded)."""
    return {**asdict(preset), "baseline_lr": baseline_lr}


def preset_hash(preset: Preset) -> str:
    text = json.dumps(asdict(preset), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _balanced(split, per_class: int, seed: int) -> torch.Tensor:
    """Sorted indices of ``per_class`` random images of each class (Split.take_per_class's draw)."""
    g = torch.Generator().manual_seed(seed)
    picks = [idx[torch.randperm(len(idx), generator=g)[:per_class]].sort().values
             for idx in split.per_class_indices()]
    return torch.cat(picks)


def _data(preset: Preset):
    """(dataset, train split, train indices or None, x, y, x_test, y_test), normalised or ZCA'd."""
    from .data import load_dataset, normalize
    from .zca import cached_zca

    if preset.dataset not in ("cifar10", "cifar100"):
        raise ValueError(f"preset {preset.name}: dataset {preset.dataset!r} cannot be loaded yet "
                         f"(ddbook.data reads cifar10 and cifar100)")
    ds = load_dataset(preset.dataset)
    idx = None if preset.train_per_class is None else \
        _balanced(ds.train, preset.train_per_class, preset.loop.seed)
    train = ds.train if idx is None else ds.train.subset(idx)
    test = ds.test if preset.test_per_class is None else \
        ds.test.take_per_class(preset.test_per_class, seed=preset.loop.seed)
    if preset.zca:
        zca = cached_zca(ds.train.images)  # fitted on the whole training set (papers.md §1.3)
        x, xt = (zca(s.images.float() / 255.0) for s in (train, test))
    else:
        x, xt = (normalize(s.images, ds.mean, ds.std) for s in (train, test))
    return ds, train, idx, x, train.labels, xt, test.labels


def _initial_set(preset: Preset, data, buffer):
    """The preset's initial synthetic set (images, labels, split) and a record of how."""
    from .scores import Scores, load_published_scores
    from .selection import partition_window
    from .synset import (correct_indices, expert_soft_labels, from_indices, make_synset,
                         noise_images, per_class_random, split_per_class)

    ds, train, train_idx, x, y, _, _ = data
    k, ipc = ds.num_classes, preset.ipc
    gen = torch.Generator().manual_seed(preset.loop.seed + 101)
    info = {"init": preset.init}
    if preset.init == "noise":
        synset = make_synset(noise_images(k * ipc, tuple(x.shape[1:]), gen),
                             torch.arange(k).repeat_interleave(ipc), syn_lr=preset.syn_lr)
    elif preset.init == "window":
        scores = load_published_scores(ds, preset.score)
        if train_idx is not None:
            scores = Scores(scores.name, scores.values[train_idx], scores.hard, scores.source)
        part = partition_window(scores, train, ipc, preset.beta, preset.distill_fraction,
                                preset.reading)
        synset = from_indices(x, y, part.distill, part.select, preset.syn_lr)
    elif preset.init in ("real", "random", "correct"):
        if preset.init == "correct":
            idx, info["filled_with_misclassified"] = correct_indices(x, y, ipc, buffer, gen)
        else:
            idx = per_class_random(y, ipc, gen, k)
        synset = from_indices(x, y, *split_per_class(idx, ipc, preset.distill_fraction),
                              preset.syn_lr)
    else:
        raise ValueError(f"unknown init {preset.init!r}; use real, random, noise, correct or "
                         f"window")
    if preset.soft_labels is not None:
        one = preset.soft_labels == "one-expert"
        logits, count = expert_soft_labels(buffer, synset.images, synset.classes, not one,
                                           buffer.experts()[:1] if one else None)
        info["images_no_expert_classifies"] = int((count == 0).sum())
        synset = make_synset(synset.images, logits, synset.classes, synset.is_selected,
                             synset.syn_lr, synset.meta)
    return replace(synset, meta={**synset.meta, **info}), info


def _evaluator(preset: Preset, data, device):
    """``evaluate(synset) -> EvalResult`` by the preset's protocol."""
    from .evaluate import (MTTEvalConfig, SelMatchEvalConfig, evaluate_mtt, evaluate_selmatch,
                           subset_ratio)

    ds, _, _, _, y, xt, yt = data
    net = preset.eval_network or preset.experts.network
    conv = net.startswith("ConvNet")
    width, depth = (preset.experts.width, preset.experts.depth) if conv else (None, None)
    seed = preset.loop.seed + 1000
    if preset.eval_protocol == "mtt":
        cfg = MTTEvalConfig(network=net, width=width, depth=depth,
                            epochs=preset.eval_epochs or 1000, batch_size=preset.eval_batch,
                            runs=preset.eval_runs, seed=seed)
        return lambda s: evaluate_mtt(s.images, s.labels, s.syn_lr, xt, yt, cfg,
                                      num_classes=ds.num_classes, device=device)
    cfg = SelMatchEvalConfig(network=net, width=width, depth=depth, epochs=preset.eval_epochs,
                             batch_size=preset.eval_batch, runs=preset.eval_runs, seed=seed)
    ratio = subset_ratio(preset.ipc, y)
    return lambda s: evaluate_selmatch(s.images, s.labels, xt, yt, s.is_selected, ratio, cfg,
                                       num_classes=ds.num_classes, device=device)


def _summary(preset: Preset, result, init_info: dict, folder) -> dict:
    h = result.history
    return {"preset": preset.name, "source": preset.source, "method": preset.method,
            "iterations_done": result.iterations_done, "finished": result.finished,
            "loss": h["loss"], "skipped": h["skipped"], "start_epoch": h["start_epoch"],
            "expert": h["expert"], "syn_lr": h["syn_lr"],
            "seconds_per_iteration_median": sorted(h["seconds"])[len(h["seconds"]) // 2]
            if h["seconds"] else None,
            "eval_curve": [{k: p.get(k) for k in ("iteration", "mean", "std", "accuracies")}
                           for p in result.curve],
            "result_at_declared_iteration": result.report,
            "best_over_checkpoints": result.best, "init": init_info,
            "n_images": len(result.synset), "n_selected": result.synset.num_selected,
            "run_folder": str(folder)}


DISPLAY_PER_CLASS = 2   # images per class saved with the results, as uint8, for the pages


def _display_arrays(preset: Preset, data, initial, final) -> dict:
    """What travels with the results (kept small: the repository carries them): labels, classes
    and split of the whole set, and the first DISPLAY_PER_CLASS images of each class before and
    after, as display-ready uint8. The full-precision set stays in the run folder."""
    from .synset import display_uint8
    from .zca import cached_zca

    ds = data[0]
    keep = torch.cat([torch.nonzero(final.classes == c).flatten()[:DISPLAY_PER_CLASS]
                      for c in range(ds.num_classes)])
    zca = cached_zca(ds.train.images) if preset.zca else None
    show = lambda x: display_uint8(x[keep], zca, ds.mean, ds.std)  # noqa: E731
    return {"labels": final.labels, "classes": final.classes, "is_selected": final.is_selected,
            "display_index": keep, "display_final": show(final.images),
            "display_initial": show(initial.images)}


ONE_OFF = "one-off"   # results/<profile>/distill/one-off/<preset>.json: runs no page draws


def run_preset(name: str | Preset, profile: str, *, device=None, overrides: dict | None = None,
               folder=None, stop_after: int | None = None, result_name: str | None = None,
               baseline_lr: float | None = None, overwrite: bool | None = None):
    """Run a preset at a profile end to end; write ``results/<profile>/distill/<result_name>.json``
    (without ``result_name``: ``distill/one-off/<preset>.json``, a name no page's run uses).

    ``overwrite``: whether a result of that name made from another configuration may be replaced
    (checked before any work; default: only for a named run, i.e. a page's run being refreshed by
    ``reproduce``; a one-off run needs ``overwrite=True``, the command line's ``--overwrite``).

    Data -> experts (trained, or found in the cache) -> initial set -> distill (resumable in
    ``folder``, default ``<cache>/distill/<name>-<profile>-<hash>-<initial set digest>``) ->
    evaluation curve -> results: the loss curve, the evaluation curve, the result at the declared
    (final) iteration and, labelled, the best over checkpoints; the final set as ``synset_final.pt`` in the folder.
    ``result_name`` names the results file (the pages' runs, ``ddbook.figures``).
    ``baseline_lr``: also evaluate the *initial* set by the preset's protocol with this fixed
    learning rate (MTT's random-real baseline: the DC/DSA protocol's lr 0.01), recorded apart.
    The results carry labels, classes and split of the whole set and, for the pages' side-by-side
    grids, the first ``DISPLAY_PER_CLASS`` images per class before and after as display-ready
    uint8 (``display_initial``, ``display_final``); the full set is ``synset_final.pt`` in the run
    folder (its path in the results). Returns (results path, DistillResult). Used in: ``python -m ddbook distill``,
    ``ddbook.figures``, notebooks.
    """
    from . import paths
    from .experts import train_experts
    from .matching import distill, initial_set_digest
    from .results import Timer, check_replace, check_writable, save_result
    from .train import default_device

    preset = resolve(name, profile, overrides)
    out_name = f"distill/{result_name or f'{ONE_OFF}/{preset.name}'}"
    config = run_config(preset, baseline_lr)
    check_writable(profile)                      # before the work, not after it
    if not (result_name is not None if overwrite is None else overwrite):
        check_replace(out_name, profile, config)
    device = torch.device(device) if device is not None else default_device()
    with Timer() as timer:
        data = _data(preset)
        buffer = train_experts(preset.experts, data[3], data[4], preset.n_experts, data[5],
                               data[6], num_classes=data[0].num_classes, device=device)
        synset, info = _initial_set(preset, data, buffer)
        cache = folder is None
        # keyed by the initial set too: one made through a network (DATM's soft labels and
        # selection) differs in its last bits on another CPU or with other kernels
        # (ddbook.ckernels), and must not meet that other set's checkpoint
        folder = folder or paths.cache_dir() / "distill" / \
            f"{preset.name}-{profile}-{preset_hash(preset)}-{initial_set_digest(synset)[:8]}"
        evaluate = _evaluator(preset, data, device)
        result = distill(synset, buffer, preset.match, preset.loop, evaluate=evaluate,
                         folder=folder, device=device, stop_after=stop_after, cache=cache)
        summary = _summary(preset, result, info, folder)
        summary["reductions"] = reductions(name, profile, overrides)
        if baseline_lr is not None:
            base = evaluate(replace(synset, syn_lr=float(baseline_lr)))
            summary["baseline"] = {**base.to_dict(), "label": f"the initial real images, "
                                   f"{preset.eval_protocol} protocol at a fixed lr {baseline_lr}"}
    arrays = {"loss": torch.tensor(result.history["loss"]), **_display_arrays(preset, data, synset,
                                                                              result.synset)}
    path = save_result(out_name, profile, summary, config, [preset.loop.seed], timer.seconds,
                       device, arrays=arrays)
    return path, result
