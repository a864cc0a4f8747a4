"""DASM Fig. 1 (our reading): test accuracy against IPC for gradient matching, trajectory
matching, the sequential difficulty-aligned variant and random selection.

The draft's figure shows existing methods plateauing at larger IPC (papers.md §11); only its
message is known. Our version, at the scale of the SelMatch pages:

- universe: the first 500 images of each CIFAR-10 class (``train.class_indices(c)[:500]``), the
  same scale model as the Fig. 3 sweep (``figures.selmatch_fig3``, quick); the full test set;
- methods at each IPC (stored images per class, the storage budget):
  ``init`` the control: gradient matching's initial set (real mosaics, the same draw as ``gm``),
           evaluated without any matching — does matching change anything at this scale?
  ``gm``   IDC gradient matching (``ddbook.gradmatch``), multi-formation factor 2 (IDC's CIFAR
           setting, so 4 x IPC decoded images), initialised with real mosaics;
  ``dasm`` the sequential variant (``ddbook.dasm``, our reading), K = 2, the hardest half per
           class, on the same gradient matching and the same total outer iterations;
  ``tm``   trajectory matching by the engine (``presets.resolve`` of the MTT CIFAR-10 preset with
           the nearest IPC at or below, at the profile's scale, ``ipc`` overridden), its experts
           trained on the universe; without ZCA, so that every method is evaluated on the same
           normalised pixels (MTT uses ZCA at IPC 1 and 10: a deviation, ours);
  ``random`` IPC random real images per class of the universe, a fresh subset per evaluation run
           (the same draws as the Fig. 3 sweep's random points at the same IPC);
- evaluation, the same for all: SelMatch's protocol as the Fig. 3 sweep runs it at quick —
  ConvNet-BN width 32, SGD lr 0.1 with cosine decay to 0.001, momentum 0.9, weight decay 5e-4,
  2,000 steps of 128 (epochs = round(2000 x 128 / set size)), DSA, the final epoch;
  3 networks per point; per-test-example correctness kept as packed bits (easy / hard later).

Each (method, IPC) is one piece with its own results file ``results/<profile>/dasm_fig1/<piece>``;
distillations checkpoint in ``<cache>/dasm_fig1/`` and resume.

Plan and cost at ``quick``. Measured on this project's 2-core CPU, one thread per process, as
process CPU seconds (what one process takes with a core to itself; the machine's load at the
time, 12-16 on 2 cores, made wall times 4-8x longer):

| step (width 32) | measured |
| --- | --- |
| gradient matching, one outer iteration (10 rounds, n_data 512), IPC 10, factor 2 | 33 CPU-s |
| the same at IPC 50 (128 decoded per class, the batch_syn_max cap; IPC 100 alike) | 72 CPU-s |
| an evaluation network, 2,000 steps of 128 (ConvNet-BN, DSA: 131 ms/step) | 4.4 CPU-min |
| the DASM scoring network, 500 steps (ConvNet-IN: 127 ms/step) | 1.1 CPU-min |
| trajectory matching: one expert epoch on the universe (ConvNet-IN) | 5.4 CPU-s |
| trajectory matching, one iteration at IPC 50 or 100 (N = 10, batch_syn 100) | 3.9 CPU-s |

By interpolation (cost ~ 15 + 0.44 x decoded images per class CPU-s per outer iteration) IPC 25
(100 decoded) costs ~60 s. The quick plan: IPC 25, 50, 100 (5, 10, 20 % of the 500-image
universe, three of the Fig. 3 sweep's ratios, whose random points it reuses), 12 outer
iterations of 10 rounds each (IDC: 2,000 of 100), 3 evaluation networks per point:

| pieces | CPU minutes |
| --- | --- |
| gm-ipc25/50/100: 12 x (60 + 72 + 72) s / 1.25 (the fused synthetic branch, below) | 33 |
| dasm-ipc25/50/100: 12 x (37 + 60 + 72) s / 1.25 (segments of half the IPC) + 3 scorings | 30 |
| tm-ipc25/50/100: 3 experts x 15 epochs once (4 min), 200 iterations each (13 min) | 43 |
| evaluation: 9 distilled points x 13 min; random: read from the Fig. 3 sweep | 117 |
| the control, init-ipc25/50/100: evaluation only, 3 x 13 min | 39 |

About 4.4 process-hours in all (262 CPU minutes); pieces can run side by side (``--only gm``,
``--only dasm``, ``--only tm``). IPC 150 (the sweep's 30 %) would add ~80 minutes; left out.
The gradient-matching rows were measured before its synthetic branch ran through the fused
norm-ReLU-pool ops (``gradmatch.fused_forward``), which ``benchmarks/bench_gradmatch.py`` measures
at 1.25x per round at IPC 25 (the same maths; their estimate here is divided by that).
The ``gpu`` settings are planned, not measured.

Updates per stored image (``updates_per_image``, printed on the page): 12 x 10 = 120 rounds, each
stepping a class on at most 32 of its stored images (batch_syn_max 128 / f^2), so 120 at IPC 25,
77 at IPC 50 and 38 at IPC 100 (IDC: 200,000 rounds); DASM 60 / 60 / 38 (each of its two
segments has half the outer iterations and half the images); trajectory matching 200. Far fewer
than the papers' — hence the control.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from ..dasm import DASMConfig, ScoreConfig, distill_dasm, initial_segment
from ..gradmatch import GMConfig, GMLoop, distill_gm, evaluation_set
from ..results import StaleResultError, Timer, load_result, save_result
from ._common import Loaded

NAME = "dasm"
NOTEBOOK = "dasm_fig1"
TITLE = ("DASM Fig. 1 (our reading): accuracy against IPC for gradient matching, trajectory "
         "matching, the sequential difficulty-aligned variant and random selection")
FOLDER = "dasm_fig1"
METHODS = ("random", "init", "gm", "dasm", "tm")
MTT_PRESET_IPCS = (1, 10, 50)



@dataclass(frozen=True)
class Settings:
    """One profile's scale of the figure."""
    ipcs: tuple                       # stored images per class
    universe: int | None              # first N images of each class (None: all)
    test_per_class: int | None        # None: the full test set
    gm: GMConfig                      # gradient matching (gm and dasm)
    iterations: int                   # outer iterations (dasm: shared by its segments)
    dasm: DASMConfig
    eval_network: str = "ConvNetBN"
    eval_width: int | None = 32
    eval_steps: int = 2000
    eval_batch: int = 128
    eval_lr: float = 0.1
    eval_augment: str = "dsa"
    eval_runs: int = 3
    methods: tuple = METHODS
    seed: int = 0


def _gm(width, inner, n_data, factor=2) -> GMConfig:
    return GMConfig(width=width, factor=factor, inner_loop=inner, n_data=n_data, net_batch=64)


SETTINGS = {
    # ci: every code path on real CIFAR-10 in seconds; numbers mean nothing
    "ci": Settings(ipcs=(2, 4), universe=10, test_per_class=10,
                   gm=replace(_gm(8, 1, 16), batch_real=8, net_batch=8), iterations=2,
                   dasm=DASMConfig(score=ScoreConfig(width=8, steps=4, batch_size=16)),
                   eval_width=8, eval_steps=4, eval_runs=1),
    # quick: planned from the measured cost (module docstring); IDC runs 2000 x 100 rounds
    "quick": Settings(ipcs=(25, 50, 100), universe=500, test_per_class=None,
                      gm=_gm(32, 10, 512), iterations=12,
                      dasm=DASMConfig(score=ScoreConfig(width=32, steps=500))),
    # gpu: planned, not run: width 128 (IDC's), 200 x 20 rounds, the same universe and protocol
    "gpu": Settings(ipcs=(10, 25, 50, 100, 150), universe=500, test_per_class=None,
                    gm=_gm(128, 20, 2000), iterations=200,
                    dasm=DASMConfig(score=ScoreConfig(width=128, steps=1000)), eval_runs=5),
    # paper: IDC's CIFAR-10 settings on the full training set (papers.md §5); not run here
    "paper": Settings(ipcs=(10, 50, 100, 250, 500), universe=None, test_per_class=None,
                      gm=GMConfig(width=128, factor=2), iterations=2000,
                      dasm=DASMConfig(score=ScoreConfig(width=128, steps=2000)),
                      eval_width=128, eval_runs=5),
}


@dataclass(frozen=True)
class Piece:
    name: str                         # "<method>-ipc<IPC>"
    method: str
    ipc: int
    config: dict = field(compare=False)  # what its results file must agree with


def settings(profile) -> Settings:
    if profile.name not in SETTINGS:
        raise ValueError(f"no DASM figure settings for profile {profile.name!r}; choose one of "
                         f"{list(SETTINGS)}")
    return SETTINGS[profile.name]


def _tm_preset(ipc: int, profile):
    """The engine's MTT CIFAR-10 preset nearest below ``ipc``, scaled, ipc overridden, no ZCA."""
    from ..presets import resolve
    base = max([p for p in MTT_PRESET_IPCS if p <= ipc] or [MTT_PRESET_IPCS[0]])
    return resolve(f"mtt-cifar10-ipc{base}", profile.name, {"ipc": ipc, "zca": False})


def updates_per_image(method: str, ipc: int, s: Settings, profile) -> int:
    """Expected updates of a stored image over the whole run (0: not distilled).

    Gradient matching steps each class once per round on at most ``batch_syn_max / f^2`` of its
    stored images (a random subset when it holds more), so a stored image takes part in
    ``iterations x inner_loop x min(1, (batch_syn_max / f^2) / ipc)`` updates on average; DASM:
    the fewest over its segments (each with its share of the iterations and its own size).
    Trajectory matching: its applied iterations when every image is in a pass of each one
    (``selmatch_scale.updates_per_image``)."""
    from ..dasm import _segment_iterations, segment_sizes
    from ..gradmatch import GMLoop
    from ..selmatch_scale import updates_per_image as tm_updates

    def gm(n: int, iterations: int) -> int:
        return round(iterations * s.gm.inner_loop * min(n, s.gm.batch_syn_max // s.gm.factor ** 2)
                     / n)
    if method == "gm":
        return gm(ipc, s.iterations)
    if method == "dasm":
        sizes = segment_sizes(ipc, s.dasm.segments)
        its = _segment_iterations(GMLoop(iterations=s.iterations), sizes, s.dasm.split_iterations)
        return min(gm(n, i) for n, i in zip(sizes, its))
    if method == "tm":
        p = _tm_preset(ipc, profile)
        n = 10 * ipc
        return tm_updates(n, p.match.batch_syn or n, p.match.syn_steps, p.loop.iterations)
    return 0


def _piece_config(method: str, ipc: int, s: Settings, profile) -> dict:
    common = {"method": method, "ipc": ipc, "universe": s.universe,
              "test_per_class": s.test_per_class, "seed": s.seed,
              "eval": {k: getattr(s, k) for k in ("eval_network", "eval_width", "eval_steps",
                                                   "eval_batch", "eval_lr", "eval_augment",
                                                   "eval_runs")}}
    if method == "gm":
        return {**common, "gm": asdict(s.gm), "iterations": s.iterations}
    if method == "init":   # gm's initial set, not matched: the control
        return {**common, "factor": s.gm.factor, "init_seed": s.seed + 101}
    if method == "dasm":
        return {**common, "gm": asdict(s.gm), "iterations": s.iterations, "dasm": asdict(s.dasm)}
    if method == "tm":
        return {**common, "preset": asdict(_tm_preset(ipc, profile))}
    return common


def plan(profile) -> list[Piece]:
    """The pieces at ``profile``: every method at every IPC."""
    s = settings(profile)
    return [Piece(f"{m}-ipc{ipc}", m, ipc, _piece_config(m, ipc, s, profile))
            for ipc in s.ipcs for m in s.methods]


# ------------------------------------------------------------------------------------------
# data and evaluation


def _data(s: Settings):
    """(dataset, universe split, pixels (N, C, H, W) in [0, 1], labels, normalised test, labels)."""
    from ..data import load_dataset, normalize
    ds = load_dataset("cifar10")
    train = ds.train
    if s.universe is not None:
        train = train.subset(torch.cat([train.class_indices(c)[:s.universe]
                                        for c in range(train.num_classes)]))
    test = ds.test if s.test_per_class is None else \
        ds.test.take_per_class(s.test_per_class, seed=s.seed)
    return (ds, train, train.images.float() / 255, train.labels,
            normalize(test.images, ds.mean, ds.std), test.labels)


def _evaluate(x, y, data, s: Settings, runs: int, seed: int, device):
    from ..evaluate import SelMatchEvalConfig, evaluate_selmatch
    ds, _, _, _, xt, yt = data
    cfg = SelMatchEvalConfig(network=s.eval_network, width=s.eval_width,
                             epochs=max(1, round(s.eval_steps * s.eval_batch / len(x))),
                             lr=s.eval_lr, batch_size=s.eval_batch, augment=s.eval_augment,
                             runs=runs, seed=seed)
    return evaluate_selmatch(x, y, xt, yt, config=cfg, num_classes=ds.num_classes, device=device)


def _folder(profile, piece: Piece):
    from .. import paths
    from ..results import config_hash
    return paths.cache_dir() / FOLDER / f"{profile.name}-{piece.name}-{config_hash(piece.config)}"


def _distill(piece: Piece, s: Settings, data, profile, device) -> tuple:
    """(normalised training images, labels, record) of one method's set."""
    ds, train, x, y, xt, yt = data
    if piece.method in ("gm", "init"):
        gen = torch.Generator().manual_seed(s.seed + 101)
        init, labels = initial_segment(x, y, torch.arange(len(x)), piece.ipc, s.gm.factor,
                                       range(ds.num_classes), gen)
        if piece.method == "init":   # the control: the same mosaics, never matched
            syn = evaluation_set(init, labels, s.gm.factor, ds.mean, ds.std)
            return syn.images, syn.labels, {"source": "gm's initial mosaics, not matched"}
        res = distill_gm(init, labels, x, y, s.gm, GMLoop(iterations=s.iterations,
                                                          seed=s.seed),
                         mean=ds.mean, std=ds.std, num_classes=ds.num_classes,
                         folder=_folder(profile, piece), device=device)
        syn = evaluation_set(res.images, res.labels, s.gm.factor, ds.mean, ds.std)
        return syn.images, syn.labels, {"loss": res.history["loss"],
                                        "seconds_per_outer": res.history["seconds"]}
    if piece.method == "dasm":
        res = distill_dasm(x, y, piece.ipc, s.gm, GMLoop(iterations=s.iterations, seed=s.seed),
                           s.dasm, mean=ds.mean, std=ds.std, num_classes=ds.num_classes,
                           folder=_folder(profile, piece), device=device)
        syn = evaluation_set(res.images, res.labels, s.gm.factor, ds.mean, ds.std)
        return syn.images, syn.labels, {"segments": res.segments}
    return _trajectory_matching(piece, data, profile, device)


def _trajectory_matching(piece: Piece, data, profile, device) -> tuple:
    from ..data import normalize
    from ..experts import train_experts
    from ..matching import distill
    from ..synset import from_indices, per_class_random
    ds, train, _, y, xt, yt = data
    preset = _tm_preset(piece.ipc, profile)
    xn = normalize(train.images, ds.mean, ds.std)
    buffer = train_experts(preset.experts, xn, y, preset.n_experts, xt, yt,
                           num_classes=ds.num_classes, device=device)
    idx = per_class_random(y, piece.ipc, torch.Generator().manual_seed(preset.loop.seed + 101),
                           ds.num_classes)
    synset = from_indices(xn, y, idx, None, preset.syn_lr)
    res = distill(synset, buffer, preset.match, preset.loop, folder=_folder(profile, piece),
                  device=device, cache=True)
    return res.synset.images, res.synset.labels, {"preset": preset.name, "loss":
                                                  res.history["loss"],
                                                  "syn_lr": res.synset.syn_lr}


def run_piece(piece: Piece, profile, device=None, data=None):
    """Distil (unless random) and evaluate one piece; write and return its results path."""
    from ..data import normalize
    from ..selection import random_indices
    s = settings(profile)
    data = data or _data(s)
    ds, train = data[0], data[1]
    with Timer() as timer:
        if piece.method == "random":
            reused = _sweep_random(piece.ipc, profile, s)
            if reused is not None:
                return _save_reused(piece, profile, s, reused, timer)
            # one subset per run, drawn as the Fig. 3 sweep draws its random points
            evals = [_evaluate(normalize(train.images[idx], ds.mean, ds.std), train.labels[idx],
                               data, s, 1, s.seed + r, device)
                     for r in range(s.eval_runs)
                     for idx in [random_indices(train, piece.ipc, s.seed + 7919 * r + piece.ipc)]]
            record, distill_s = {"source": "computed here"}, 0.0
        else:
            with Timer() as dt:
                x, labels, record = _distill(piece, s, data, profile, device)
            evals, distill_s = [_evaluate(x, labels, data, s, s.eval_runs, s.seed, device)], \
                dt.seconds
    accs = [a for e in evals for a in e.accuracies]
    correct = np.concatenate([e.correct for e in evals])            # (runs, N_test)
    out = {"method": piece.method, "ipc": piece.ipc, "accuracies": accs,
           "mean": float(np.mean(accs)), "std": float(np.std(accs)), "runs": len(accs),
           "train_images": piece.ipc * ds.num_classes if piece.method == "random" else len(labels),
           "epochs": evals[0].epochs, "steps": evals[0].steps,
           "train_loss": [l for e in evals for l in e.train_loss],
           "eval_point": evals[0].eval_point, "distill_seconds": distill_s,
           "eval_seconds": sum(e.wall_time_s for e in evals), "n_test": int(correct.shape[1]),
           "updates_per_image": updates_per_image(piece.method, piece.ipc, s, profile),
           **record}
    arrays = {"correct_bits": np.packbits(correct.astype(bool), axis=1)}
    return save_result(f"{FOLDER}/{piece.name}", profile.name, out, piece.config,
                       [s.seed], timer.seconds, device, arrays=arrays)


def _sweep_random(ipc: int, profile, s: Settings) -> list | None:
    """The Fig. 3 sweep's random points at this IPC (its runs 0..eval_runs-1) when that sweep runs
    exactly this computation (same universe, test set, protocol, seeds and draws) and all of them
    are there and current; else None. They are the same networks, so they are not trained twice."""
    from . import selmatch_fig3 as ws
    try:
        cfg = ws.sweep_config(profile.name)
    except ValueError:
        return None
    same = (cfg.network, cfg.width, cfg.steps, cfg.batch_size, cfg.lr, cfg.augment,
            cfg.train_per_class, cfg.test_per_class, cfg.seed, cfg.runs >= s.eval_runs) == \
        (s.eval_network, s.eval_width, s.eval_steps, s.eval_batch, s.eval_lr, s.eval_augment,
         s.universe, s.test_per_class, s.seed, True)
    ratios = [r for r in cfg.ratios if s.universe and round(r * s.universe) == ipc]
    if not same or not ratios:
        return None
    found = []
    for run in range(s.eval_runs):
        name = ws._point_name(cfg, ratios[0], None, run)
        try:
            r = load_result(name, profile.name, ws._point_config(cfg, ratios[0], None, run),
                            missing_ok=True)
        except StaleResultError:
            return None
        if r is None:
            return None
        found.append((name, r))
    return found


def _save_reused(piece: Piece, profile, s: Settings, reused: list, timer):
    accs = [r.data["accuracy"] for _, r in reused]
    n_test = reused[0][1].data["n_test"]
    bits = np.stack([np.packbits(np.unpackbits(r.arrays["correct_bits"])[:n_test].astype(bool))
                     for _, r in reused])
    out = {"method": "random", "ipc": piece.ipc, "accuracies": accs,
           "mean": float(np.mean(accs)), "std": float(np.std(accs)), "runs": len(accs),
           "train_images": reused[0][1].data["subset_size"], "epochs": reused[0][1].data["epochs"],
           "steps": reused[0][1].data["steps"],
           "train_loss": [r.data["train_loss"] for _, r in reused],
           "eval_point": reused[0][1].data["eval_point"], "distill_seconds": 0.0,
           "eval_seconds": sum(r.provenance["wall_time_s"] for _, r in reused), "n_test": n_test,
           "updates_per_image": 0,
           "source": "the Fig. 3 sweep's random points (the same computation): "
                     + ", ".join(f"{profile.name}/{n} (git {r.provenance['sha'][:10]})"
                                 for n, r in reused)}
    return save_result(f"{FOLDER}/{piece.name}", profile.name, out, piece.config, [s.seed],
                       timer.seconds, None, arrays={"correct_bits": bits})


def _is_current(piece: Piece, profile) -> bool:
    try:
        return load_result(f"{FOLDER}/{piece.name}", profile.name, piece.config,
                           missing_ok=True) is not None
    except StaleResultError:
        return False


def run(profile, device=None, only=None) -> list:
    """Run every missing or stale piece (``only``: those whose name contains it, or that it
    accepts when callable); return the results paths of the selected pieces."""
    from ..results import result_path
    pieces = plan(profile)
    if only is not None:
        pieces = [p for p in pieces if (only(p.name) if callable(only) else only in p.name)]
        if not pieces:
            raise ValueError(f"no piece of {NAME!r} at {profile.name} matches {only!r}; valid "
                             f"pieces: {[p.name for p in plan(profile)]}")
    data = None
    for p in pieces:
        if not _is_current(p, profile):
            data = data or _data(settings(profile))
            run_piece(p, profile, device, data)
    return [result_path(profile.name, f"{FOLDER}/{p.name}") for p in pieces]


def load(profile) -> Loaded:
    """Every piece's result: found (current), missing, or stale (with the reason)."""
    found, missing, stale = {}, [], {}
    for p in plan(profile):
        try:
            r = load_result(f"{FOLDER}/{p.name}", profile.name, p.config, missing_ok=True)
        except StaleResultError as err:
            stale[p.name] = str(err)
            continue
        if r is None:
            missing.append(p.name)
        else:
            found[p.name] = r
    return Loaded(found, missing, stale)


def table(loaded: Loaded) -> dict:
    """{method: {ipc: [accuracy of each run]}} of the found pieces."""
    out: dict = {}
    for r in loaded.found.values():
        out.setdefault(r.data["method"], {})[r.data["ipc"]] = list(r.data["accuracies"])
    return out


def proofs(loaded: Loaded) -> dict:
    """What makes the scale meaningful, per method over its pieces found: the fewest updates per
    stored image (0: not distilled), the largest final training loss of any evaluation network
    (do the networks fit their training set?) and the IPCs present."""
    out: dict = {}
    for r in loaded.found.values():
        d = r.data
        row = out.setdefault(d["method"], {"ipcs": [], "updates": [], "train_loss": []})
        row["ipcs"].append(d["ipc"])
        row["updates"].append(d.get("updates_per_image"))
        row["train_loss"] += [float(x) for x in d.get("train_loss", [])]
    return {m: {"IPCs": sorted(v["ipcs"]),
                "fewest updates per stored image": (None if None in v["updates"]
                                                    else min(v["updates"])),
                "largest final training loss": max(v["train_loss"]) if v["train_loss"] else None}
            for m, v in sorted(out.items(), key=lambda kv: METHODS.index(kv[0]))}


def verdicts(loaded: Loaded) -> list:
    """The page's claims, judged over the evaluation runs by the shared verdict module.

    First what the scale must show before any claim means anything: random real images gain
    accuracy with IPC (more data still helps: the OLS slope over the plan's IPCs), and the
    control at every planned IPC: gradient matching moves its own initial mosaics' accuracy (the
    ``init`` pieces, the same stored images never matched) by more than the run-to-run noise,
    either sign. Then the claims:

    1. the sequential variant beats plain gradient matching at the plan's largest IPC;
    2. its gain over gradient matching grows with IPC (the draft: it lessens the plateau at larger
       IPC) — the OLS slope of the per-run differences over the plan's IPCs, run r of both
       evaluated from the same network seed;
    3. gradient matching beats trajectory matching at the plan's largest IPC (the draft's reason
       for building on gradient matching).
    A claim is judged only on the grid it names: a comparison when both methods are present at
    the plan's largest IPC, the trend when both are present at every planned IPC with as many runs
    each (a partial grid would judge a smaller IPC, or a shorter trend, than the page promises).
    With 3 runs per point any of them may come out inconclusive at this scale.
    """
    from ..verdicts import compare_means, differ, trend
    if not loaded.found:
        return []
    ipcs = sorted(settings(loaded.profile()).ipcs)
    t = table(loaded)
    out = []
    largest = ipcs[-1]
    pre = []
    if all(i in t.get("random", {}) for i in ipcs) and len(ipcs) >= 2:
        pre.append(trend(ipcs, [t["random"][i] for i in ipcs], "precondition: random real "
                         "images gain accuracy with IPC at this scale (more data still helps)",
                         direction="increasing", per="image per class"))
    for i in ipcs:
        if i in t.get("gm", {}) and i in t.get("init", {}):
            pre.append(differ(t["gm"][i], t["init"][i], f"control at IPC {i}: gradient matching "
                              f"changes its initial mosaics' accuracy by more than the "
                              f"run-to-run noise", effect="matched minus initial mosaics",
                              note="the same stored images before matching, same evaluation "
                                   "seeds; if not, the scale cannot test the claims below"))
    for a, b, claim in (("dasm", "gm", "the sequential variant beats gradient matching"),
                        ("gm", "tm", "gradient matching beats trajectory matching")):
        if largest in t.get(a, {}) and largest in t.get(b, {}):
            out.insert(len(out) if a == "gm" else 0,
                       compare_means(t[a][largest], t[b][largest],
                                     f"{claim} at the largest IPC ({largest})"))
    complete = all(i in t.get(m, {}) for i in ipcs for m in ("dasm", "gm")) and \
        all(len(t["dasm"][i]) == len(t["gm"][i]) for i in ipcs)
    if complete and len(ipcs) >= 2:
        diffs = [[d - g for d, g in zip(t["dasm"][i], t["gm"][i])] for i in ipcs]
        out.insert(1, trend(ipcs, diffs, "the sequential variant's gain over gradient matching "
                            "grows with IPC (it lessens the plateau)", direction="increasing",
                            per="image per class"))
    return pre + out


def correctness(result) -> np.ndarray:
    """(runs, N_test) bool: whether each evaluation network got each test example right."""
    n = result.data["n_test"]
    return np.unpackbits(result.arrays["correct_bits"], axis=1)[:, :n].astype(bool)


def group_accuracies(loaded: Loaded, groups: dict) -> dict:
    """{method: {ipc: {group: [accuracy of each run on that group]}}} for test-set groups given as
    bool masks (N_test,) in test-set order, e.g. the coverage page's easy and hard halves."""
    out: dict = {}
    for r in loaded.found.values():
        right = correctness(r)
        for g, mask in groups.items():
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (right.shape[1],):
                raise ValueError(f"group {g!r} has {mask.shape} entries, the test set "
                                 f"{right.shape[1]}: build the masks on the same test set")
            out.setdefault(r.data["method"], {}).setdefault(r.data["ipc"], {})[g] = \
                right[:, mask].mean(1).tolist()
    return out
