"""SelMatch's own method at a scale where distillation acts: the scale model behind the α ablation
(Fig. 4a) and Table 1 pages.

The scale model (``quick``): the universe is the first U = 500 images of each CIFAR-10 class (the
Fig. 3 sweep's, ``figures.selmatch_fig3.SweepConfig(train_per_class=500)``), their C-score order kept, and
the full 10,000-image test set. Inside it the paper's subset ratios 5 / 10 / 20 % are IPC
25 / 50 / 100; the experts are trained, windows selected, random subsets drawn and sets distilled
there, and every set is evaluated by one protocol (the Fig. 3 sweep's: ConvNet-BN, 2,000 SGD steps
of 128, lr 0.1 cosine; combined augmentation for sets that hold distilled images).

One distillation iteration unrolls ``syn_steps`` student steps of ``n / syn_steps`` images, one
pass over the whole set (distilled and selected), so every distilled image takes part in (and is
updated by) every applied iteration: ``updates per distilled image`` = applied iterations.

A *piece* is one set: (page, ratio, method, α, β). Each writes
``results/<profile>/<page>/<piece>.json`` (+ ``.npz`` with the evaluation networks' per-test-
example correctness as packed bits), with its full config for provenance; a distillation
checkpoints in the cache, so an interrupted run resumes. The experts are one buffer in the cache,
shared by both pages.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from . import ckernels, paths
from .evaluate import SelMatchEvalConfig, evaluate_selmatch, pack_correct
from .experts import ExpertConfig
from .figures._common import Loaded
from .matching import LoopConfig, MatchConfig
from .profiles import Profile, get_profile
from .results import StaleResultError, Timer, load_result, save_result

__all__ = ["ScaleConfig", "SCALE_MODELS", "scale_config", "Piece", "Loaded", "paper_setting",
           "alpha_plan", "table1_plan", "LR_IMG_CHECK", "piece_config", "pixel_stats", "run_piece", "run_pieces", "load_pieces",
           "updates_per_image", "expert_config", "match_config", "eval_config", "universe",
           "calibrate", "correct_mixed", "fig3_rows", "fig3_compatible", "fig3_betas",
           "ALPHA_PAGE", "TABLE1_PAGE", "SNAPSHOTS", "snapshot_every", "piece_folder",
           "final_set", "snapshots", "ensure_set", "made_with_kernels",
           "expected_snapshots", "paper_alpha_piece", "ipc_of",
           "fig3_correct", "fig3_random_subset",
           "describe_scale", "random_by_ratio", "random_trend", "planned_cost", "measured_cost"]

ALPHA_PAGE, TABLE1_PAGE = "selmatch_alpha", "selmatch_table1"
CIFAR10_PER_CLASS = 5000        # the paper's N_c: subset ratio r is IPC = r * 5000 there

# how initial sets are made (bump when that code changes, so older results read as stale);
# 2: DATM's correct-image init and soft labels from BN experts in shuffled (all-class) chunks
INIT_VERSION = 2

# the coverage page (SelMatch Fig. 1b): at this subset ratio, the sets of MTT and of SelMatch at
# the paper's α are kept every k distillation iterations in the cache ((ratio, k) per profile);
# an execution option, not part of any piece's config (it changes no number)
SNAPSHOTS = {"ci": (0.1, 1), "quick": (0.1, 50), "gpu": (0.1, 50), "paper": (0.1, 1000)}


@dataclass(frozen=True)
class ScaleConfig:
    """Everything that sets the scale of the two pages at one profile."""
    universe_per_class: int       # U: the first U images of each class (C-score order kept)
    test_per_class: int | None    # None: the full CIFAR-10 test set
    ratios: tuple                 # subset ratios of the universe (IPC = ratio * U)
    alphas: tuple                 # distillation portions α of the Fig. 4a grid
    network: str = "ConvNetBN"    # experts, student and evaluation network (SelMatch: BN)
    width: int = 32
    n_experts: int = 8
    expert_epochs: int = 40       # SelMatch: 100
    expert_augment: str = "none"  # SelMatch's buffer.py quirk (papers.md §4.3): no augmentation
    max_start_epoch: int = 32     # T+ (SelMatch: 80 of 100 epochs; here 80 % of expert_epochs)
    match_epochs: int = 2         # M
    syn_steps: int = 10           # N; batch_syn = n / N (one pass over the set per iteration)
    iterations: int = 500         # distillation iterations = updates per distilled image
    syn_lr: float = 0.001         # SelMatch's lr_init
    lr_lr: float = 1e-5
    eval_steps: int = 2000        # SGD steps per evaluation network, every ratio (Fig. 3 sweep)
    eval_batch: int = 128
    eval_lr: float = 0.1
    eval_runs: int = 3            # evaluation networks per set
    datm_range: tuple = (40, 60)  # DATM's CIFAR-10 IPC 500/1000 start epochs, of 100
    datm_lr_label: float = 10.0   # DATM lr_y at IPC 500/1000
    datm_threshold: float = 1.0   # DATM's loss threshold (skip the update above it)
    seed: int = 0
    fig3_comparable: bool = True  # whether the Fig. 3 sweep at this profile shares the universe


SCALE_MODELS = {
    # ci: the Fig. 3 ci sweep's tiny universe; proves the code paths in seconds
    "ci": ScaleConfig(universe_per_class=60, test_per_class=20, ratios=(0.1, 0.3),
                      alphas=(0.0, 0.5, 1.0), width=8, n_experts=2, expert_epochs=4,
                      max_start_epoch=2, syn_steps=2, iterations=3, eval_steps=6, eval_runs=2),
    # quick: the scale model (see the module docstring); 3 ratios x 6 α x 3 networks
    "quick": ScaleConfig(universe_per_class=500, test_per_class=None, ratios=(0.05, 0.1, 0.2),
                         alphas=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0)),
    # gpu (planned, NOT yet run or timed: no GPU was lent while it was written): the quick scale
    # model at the paper's width 128 and 10 experts. Estimate for one H200, to be measured: an
    # iteration of 10 small-batch unroll steps is latency-bound (~30-50 ms), so 500 iterations
    # take ~20 s per set, an evaluation network of 2,000 steps ~5 s: the α page (15 distillations,
    # 54 networks, experts ~1 min) ~7-9 min, Table 1's own sets (7 distillations, 30 networks)
    # ~4 min; one command per page. The Fig. 3 gpu sweep is on the full training set with
    # ResNet-18, so Table 1 at gpu does not draw its rows (it says so).
    "gpu": ScaleConfig(universe_per_class=500, test_per_class=None, ratios=(0.05, 0.1, 0.2),
                       alphas=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), width=128, n_experts=10,
                       fig3_comparable=False),
    # paper: the paper's experts, unroll and iterations on the full CIFAR-10 training set
    "paper": ScaleConfig(universe_per_class=CIFAR10_PER_CLASS, test_per_class=None,
                         ratios=(0.05, 0.1, 0.2, 0.3), alphas=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
                         width=128, n_experts=100, expert_epochs=100, max_start_epoch=80,
                         syn_steps=55, iterations=10000, eval_steps=20000, eval_runs=5,
                         fig3_comparable=False),
}


def scale_config(profile: Profile | str) -> ScaleConfig:
    name = profile.name if isinstance(profile, Profile) else get_profile(profile).name
    return SCALE_MODELS[name]


def paper_setting(ratio: float) -> dict:
    """SelMatch's CIFAR-10 α, β and lr_img for a subset ratio (its scripts, via ``presets``)."""
    from .presets import PRESETS
    name = f"selmatch-cifar10-ipc{round(ratio * CIFAR10_PER_CLASS)}"
    if name not in PRESETS:
        raise ValueError(f"SelMatch has no CIFAR-10 setting at ratio {ratio:g}; ratios with a "
                         f"script: 0.05, 0.1, 0.2, 0.3")
    p = PRESETS[name]
    return {"alpha": p.distill_fraction, "beta": p.beta, "lr_img": p.match.lr_img,
            "preset": name}


def ipc_of(scale: ScaleConfig, ratio: float) -> int:
    return max(1, round(ratio * scale.universe_per_class))


# ------------------------------------------------------------------------------------------
# the pieces


@dataclass(frozen=True)
class Piece:
    """One set of a page: how it is made and where its results go."""
    name: str                 # unique within the page, e.g. "r0.05_a0.6"
    page: str                 # ALPHA_PAGE or TABLE1_PAGE: the results folder
    ratio: float
    method: str               # "selmatch" (window init, partial update), "mtt", "datm",
    #                           "soft-random" (MTT's initial images, DATM's labels), "random"
    #                           (MTT's initial images, hard labels, kept real)
    alpha: float              # distilled fraction (1 for mtt and datm, 0 for soft-random, random)
    beta: float | None        # window start (selmatch); None: a random real init
    lr_img: float | None = None  # the image learning rate, when not the ratio's SelMatch rate
    #                              (a sensitivity row); None: paper_setting(ratio)["lr_img"]

    @property
    def distills(self) -> bool:
        return self.method in ("mtt", "datm") or (self.method == "selmatch" and self.alpha > 0)

    @property
    def needs_experts(self) -> bool:
        """Distillation, DATM's correct-image init and soft labels read the expert buffer."""
        return self.distills or self.method in ("datm", "soft-random")


def alpha_plan(profile: Profile) -> list[Piece]:
    """Fig. 4a: every ratio x every α of the grid, at the paper's β for that ratio."""
    scale = scale_config(profile)
    return [Piece(f"r{r:.2f}_a{a:.1f}", ALPHA_PAGE, r, "selmatch", a, paper_setting(r)["beta"])
            for r in scale.ratios for a in scale.alphas]


# The image learning rate of a sensitivity row of Table 1: SelMatch's scripts set lr_img 10,000 at
# CIFAR-10 20 % and 30 %, where they distil only 10 % of the set, and 1,000 below; this page's
# rows use the ratio's rate for every method, so at 20 % MTT and DATM update every image at
# 10,000 (MTT's largest published CIFAR-10 setting, IPC 50, uses 1,000; DATM's own 10 % and 20 %
# configs use 50). Where the ratio's rate differs, MTT runs again at this one.
LR_IMG_CHECK = 1000.0


def table1_plan(profile: Profile) -> list[Piece]:
    """Table 1's own sets per ratio: random real images (MTT's initial images, kept real, hard
    labels: the random row under SelMatch's protocol), MTT, DATM, the same random images with
    DATM's soft labels, and SelMatch at the paper's (α, β) where that α is not on the Fig. 4a grid
    (else it is read from the α page, as is the window alone, α = 0). The Fig. 3 sweep's random
    and window rows (DSA on real images, :func:`fig3_rows`) are shown beside them."""
    scale = scale_config(profile)
    pieces = []
    for r in scale.ratios:
        pieces += [Piece(f"r{r:.2f}_random", TABLE1_PAGE, r, "random", 0.0, None),
                   Piece(f"r{r:.2f}_mtt", TABLE1_PAGE, r, "mtt", 1.0, None),
                   Piece(f"r{r:.2f}_datm", TABLE1_PAGE, r, "datm", 1.0, None),
                   Piece(f"r{r:.2f}_random-softlabels", TABLE1_PAGE, r, "soft-random", 0.0,
                         None)]
        ps = paper_setting(r)
        if ps["lr_img"] != LR_IMG_CHECK:   # MTT again at the 5 / 10 % rate (see LR_IMG_CHECK)
            pieces.append(Piece(f"r{r:.2f}_mtt-lr{LR_IMG_CHECK:g}", TABLE1_PAGE, r, "mtt", 1.0,
                                None, LR_IMG_CHECK))
        if not any(math.isclose(ps["alpha"], a) for a in scale.alphas):
            pieces.append(Piece(f"r{r:.2f}_selmatch-a{ps['alpha']:.1f}", TABLE1_PAGE, r,
                                "selmatch", ps["alpha"], ps["beta"]))
    return pieces


def paper_alpha_piece(profile: Profile, ratio: float) -> Piece:
    """The piece holding SelMatch at the paper's (α, β) for ``ratio`` (on either page)."""
    ps = paper_setting(ratio)
    for p in alpha_plan(profile) + table1_plan(profile):
        if p.method == "selmatch" and math.isclose(p.ratio, ratio) and \
                math.isclose(p.alpha, ps["alpha"]):
            return p
    raise ValueError(f"no SelMatch piece at ratio {ratio:g}, α {ps['alpha']}")


# ------------------------------------------------------------------------------------------
# configs


def expert_config(scale: ScaleConfig) -> ExpertConfig:
    """SelMatch's experts (buffer.py: ConvNet-BN, SGD lr 0.01, batch 256, no augmentation)."""
    return ExpertConfig(network=scale.network, width=scale.width, epochs=scale.expert_epochs,
                        lr=0.01, batch_size=256, augment=scale.expert_augment, seed=scale.seed)


def match_config(scale: ScaleConfig, piece: Piece) -> MatchConfig:
    """The matching of ``piece``: SelMatch's (lr_img per ratio, M = 2, start in [0, T+)), DATM's
    start range, threshold and label learning for the DATM row. batch_syn = n / N: one pass."""
    n = 10 * ipc_of(scale, piece.ratio)
    batch = math.ceil(n / scale.syn_steps)
    common = dict(syn_steps=scale.syn_steps, expert_epochs=scale.match_epochs, batch_syn=batch,
                  lr_img=paper_setting(piece.ratio)["lr_img"] if piece.lr_img is None
                  else piece.lr_img, lr_lr=scale.lr_lr)
    if piece.method == "datm":
        lo, hi = scale.datm_range
        f = scale.expert_epochs / 100
        t_max = max(1, min(math.floor(hi * f), scale.expert_epochs - scale.match_epochs + 1))
        t_min = min(math.floor(lo * f), t_max - 1)
        return MatchConfig(**common, min_start_epoch=t_min, max_start_epoch=t_max,
                           learn_labels=True, lr_label=scale.datm_lr_label,
                           threshold=scale.datm_threshold)
    return MatchConfig(**common, max_start_epoch=scale.max_start_epoch)


def loop_config(scale: ScaleConfig) -> LoopConfig:
    return LoopConfig(iterations=scale.iterations, eval_every=None, eval_at=(),
                      checkpoint_every=max(1, min(50, scale.iterations)), seed=scale.seed)


def eval_config(scale: ScaleConfig, n_images: int, augment: str = "combined") -> SelMatchEvalConfig:
    """The one protocol: the Fig. 3 sweep's network, steps, batch and lr; epochs = steps·batch/n."""
    epochs = max(1, round(scale.eval_steps * scale.eval_batch / n_images))
    return SelMatchEvalConfig(network=scale.network, width=scale.width, epochs=epochs,
                              lr=scale.eval_lr, batch_size=scale.eval_batch, augment=augment,
                              runs=scale.eval_runs, seed=scale.seed + 1000)


def updates_per_image(n: int, batch_syn: int, syn_steps: int, applied_iterations: int) -> int:
    """The fewest updates any image of an ``n``-image set takes part in: each applied iteration
    unrolls ``syn_steps`` chunks of a permutation (``matching.make_plan``), so it holds
    ⌊N / ⌈n / b⌉⌋ complete passes; an image in ≥ 1 of them is updated once by that iteration."""
    passes = syn_steps // math.ceil(n / min(batch_syn, n))
    return applied_iterations if passes >= 1 else 0


def piece_config(profile: Profile, piece: Piece) -> dict:
    """What a piece's results file is checked against (stale when any of it changes)."""
    scale = scale_config(profile)
    n = 10 * ipc_of(scale, piece.ratio)
    fields = asdict(piece)
    if fields["lr_img"] is None:       # the configs of pieces made before the field existed
        del fields["lr_img"]
    return {"scale": asdict(scale), "piece": fields, "ipc": ipc_of(scale, piece.ratio),
            "init_version": INIT_VERSION,
            "experts": asdict(expert_config(scale)),
            "match": asdict(match_config(scale, piece)) if piece.distills else None,
            "loop": asdict(loop_config(scale)) if piece.distills else None,
            "eval": asdict(eval_config(scale, n))}


def describe_scale(profile: Profile) -> list[str]:
    """The scale and its deviations from the paper, one line each (printed by both pages)."""
    s = scale_config(profile)
    lines = [f"universe: the first {s.universe_per_class} images of each CIFAR-10 class "
             f"(C-score order kept); test set: "
             + ("all 10,000 test images" if s.test_per_class is None else
                f"{s.test_per_class} per class"),
             "subset ratios " + ", ".join(f"{r:.0%} (IPC {ipc_of(s, r)})" for r in s.ratios),
             f"experts: {s.n_experts} x {s.expert_epochs} epochs of {s.network} width {s.width} "
             f"on the universe, SGD lr 0.01, batch 256, "
             + ("no augmentation (SelMatch's buffer.py quirk, copied)" if
                s.expert_augment == "none" else f"{s.expert_augment} augmentation")
             + " (the paper: 100 x 100 epochs, width 128, full data)",
             f"distillation: {s.iterations} iterations, each an unroll of N = {s.syn_steps} steps "
             f"over the whole set once (batch n/N), so every distilled image is updated "
             f"{s.iterations} times; start epoch in [0, {s.max_start_epoch}) of "
             f"{s.expert_epochs}, M = {s.match_epochs} (the paper: 10,000 iterations, N = 55, "
             f"batch 125, T+ = 80 of 100)",
             f"evaluation: {s.eval_runs} {s.network} networks of width {s.width} per set, "
             f"{s.eval_steps} SGD steps of {s.eval_batch}, lr {s.eval_lr} cosine; combined "
             f"augmentation (crop+flip on selected images, per-image DSA on distilled ones) "
             f"(the paper: 5 ResNet-18s, about 20,000 steps)"]
    return lines


# ------------------------------------------------------------------------------------------
# data and experts


def universe(scale: ScaleConfig):
    """(dataset, train split, scores, x, y, x_test, y_test) of the scale model (normalised, no
    ZCA: SelMatch uses none). The train split is the first U images of each class."""
    from .data import load_dataset, normalize
    from .scores import Scores, load_published_scores

    ds = load_dataset("cifar10")
    train, test = ds.train, ds.test
    keep = torch.cat([train.class_indices(c)[:scale.universe_per_class]
                      for c in range(train.num_classes)])
    train = train.subset(keep)
    scores = load_published_scores(ds, "cscore")
    scores = Scores(scores.name, scores.values[keep], scores.hard, scores.source)
    if scale.test_per_class is not None:
        test = test.take_per_class(scale.test_per_class, seed=scale.seed)
    x, xt = (normalize(s.images, ds.mean, ds.std) for s in (train, test))
    return ds, train, scores, x, train.labels, xt, test.labels


def experts(scale: ScaleConfig, data, device=None, n: int | None = None):
    """The scale model's expert buffer (trained once, in the cache; shared by both pages);
    ``n``: train only the first n experts (calibration), the rest later, into the same buffer."""
    from .experts import train_experts
    ds, _, _, x, y, xt, yt = data
    # each snapshot's accuracy on 100 test images per class (a record, not a selection)
    probe = torch.cat([torch.nonzero(yt == c).flatten()[:100] for c in range(ds.num_classes)])
    return train_experts(expert_config(scale), x, y, scale.n_experts if n is None else n,
                         xt[probe], yt[probe],
                         num_classes=ds.num_classes, device=device)


# ------------------------------------------------------------------------------------------
# one piece


def _mixed(fn, images: torch.Tensor, gen: torch.Generator):
    """``fn(images)`` evaluated in a random order and put back: BN experts normalise each chunk
    of 256 images with its own batch statistics (``synset.expert_logits``), and a class-major
    chunk would hold one or two classes; shuffled chunks hold every class."""
    perm = torch.randperm(len(images), generator=gen)
    inv = torch.argsort(perm)
    return tuple(t[inv.to(t.device)] for t in fn(perm))


def correct_mixed(x: torch.Tensor, y: torch.Tensor, ipc: int, buffer, gen: torch.Generator):
    """DATM's initialisation (images the expert classifies correctly, papers.md §3.2) for BN
    experts: expert 0's last snapshot predicts every image in shuffled chunks; per class, the
    first ``ipc`` correct images of a random order, topped up (and counted) with misclassified
    ones when a class runs short. Returns (class-major indices, number topped up)."""
    from .synset import expert_logits
    e0 = buffer.experts()[0]
    pred, = _mixed(lambda perm: (expert_logits(buffer, e0, x[perm]).argmax(1).cpu(),), x, gen)
    picks, filled = [], 0
    for c in range(int(y.max()) + 1):
        idx = torch.nonzero(y.cpu() == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        ok = pred[idx] == c
        chosen = torch.cat([idx[ok], idx[~ok]])[:ipc]
        filled += max(0, ipc - int(ok.sum()))
        picks.append(chosen)
    return torch.cat(picks), filled


def initial_set(scale: ScaleConfig, piece: Piece, data, buffer):
    """The set a piece starts from, and a record of how it was made."""
    from .selection import partition_window
    from .synset import expert_soft_labels, from_indices, make_synset, per_class_random

    ds, train, scores, x, y, _, _ = data
    ipc = ipc_of(scale, piece.ratio)
    gen = torch.Generator().manual_seed(scale.seed + 101 + ipc)
    info = {"method": piece.method}
    if piece.method == "selmatch":
        part = partition_window(scores, train, ipc, piece.beta, piece.alpha)
        synset = from_indices(x, y, part.distill, part.select, scale.syn_lr)
        info.update(distill_per_class=part.distill_per_class,
                    select_per_class=part.select_per_class)
    elif piece.method in ("mtt", "soft-random", "random"):
        idx = per_class_random(y, ipc, gen, ds.num_classes)   # the same draw for all three
        synset = from_indices(x, y, idx[:0], idx, scale.syn_lr) if piece.method == "random" \
            else from_indices(x, y, idx, None, scale.syn_lr)
    elif piece.method == "datm":
        idx, info["filled_with_misclassified"] = correct_mixed(x, y, ipc, buffer, gen)
        synset = from_indices(x, y, idx, None, scale.syn_lr)
    else:
        raise ValueError(f"unknown method {piece.method!r}; use selmatch, mtt, datm, "
                         f"soft-random or random")
    if piece.method in ("datm", "soft-random"):   # DATM's soft labels: correct experts' logits
        images, classes = synset.images, synset.classes
        logits, count = _mixed(lambda perm: expert_soft_labels(buffer, images[perm],
                                                               classes[perm], True), images, gen)
        info["images_no_expert_classifies"] = int((count == 0).sum())
        synset = make_synset(synset.images, logits, synset.classes, synset.is_selected,
                             synset.syn_lr, synset.meta)
    return synset, info


def _folder(profile: Profile, piece: Piece):
    from .results import config_hash
    return paths.cache_dir() / "selmatch_scale" / profile.name / \
        f"{piece.page}-{piece.name}-{config_hash(piece_config(profile, piece))}"


def piece_folder(profile: Profile, piece: Piece):
    """The piece's folder in the cache: its distillation checkpoint, its final set
    (``synset_final.pt``) and, for the pieces of :func:`snapshot_every`, ``snapshots/``."""
    return _folder(profile, piece)


def snapshot_every(profile: Profile, piece: Piece) -> int | None:
    """Every how many iterations the set of ``piece`` is kept during its distillation (coverage
    against iteration, SelMatch Fig. 1b): MTT and SelMatch at the paper's α, at the profile's
    :data:`SNAPSHOTS` ratio only; None for every other piece (and every set not distilled)."""
    ratio, every = SNAPSHOTS[profile.name]
    if not (piece.distills and math.isclose(piece.ratio, ratio)):
        return None
    if piece.method == "mtt" or (piece.method == "selmatch"
                                 and piece.name == paper_alpha_piece(profile, ratio).name):
        return every
    return None


def _make_set(profile: Profile, piece: Piece, data, buffer, device, stop_after=None):
    """(the piece's final set, or None when ``stop_after`` stopped it; how the initial set was
    made; the DistillResult or None). The final set is kept in :func:`piece_folder`."""
    from .matching import distill
    from .synset import save_synset
    scale = scale_config(profile)
    synset, info = initial_set(scale, piece, data, buffer)
    folder = _folder(profile, piece)
    if piece.distills and len(synset) > synset.num_selected:
        res = distill(synset, buffer, match_config(scale, piece), loop_config(scale),
                      folder=folder, device=device, stop_after=stop_after,
                      snapshot_every=snapshot_every(profile, piece), cache=True)
        return (res.synset if res.finished else None), info, res
    save_synset(folder / "synset_final.pt", synset)   # nothing distilled: the initial set
    return synset, info, None


def final_set(profile: Profile, piece: Piece):
    """The final set of ``piece`` (a SyntheticSet: images, labels, classes, is_selected), read
    from its cache folder; FileNotFoundError naming the fix when it is not there."""
    from .synset import load_synset
    path = _folder(profile, piece) / "synset_final.pt"
    if not path.exists():
        raise FileNotFoundError(f"the set of {piece.page}/{piece.name} at {profile.name} is not "
                                f"in the cache ({path}); recreate it with ensure_set (python -m "
                                f"ddbook reproduce selmatch-coverage --profile {profile.name} "
                                f"does this)")
    return load_synset(path)


def snapshots(profile: Profile, piece: Piece) -> dict:
    """{iteration: set} of the snapshots kept while ``piece`` was distilled (empty if none)."""
    from .matching import snapshot_iterations
    from .synset import load_synset
    folder = _folder(profile, piece)
    return {it: load_synset(folder / "snapshots" / f"synset_{it:06d}.pt")
            for it in snapshot_iterations(folder)}


def made_with_kernels(profile: Profile, piece: Piece) -> str | None:
    """The ``DDBOOK_KERNELS`` mode (``"torch"`` or ``"c"``) of the run that made ``piece``'s
    result, or None without a readable result. Results made before the C loops record no
    ``kernels``: the torch ops made them."""
    try:
        r = load_result(f"{piece.page}/{piece.name}", profile.name, missing_ok=True)
    except (StaleResultError, OSError):
        return None
    if r is None:
        return None
    return ckernels.recorded_mode(r.provenance.get("kernels"))


def ensure_set(profile: Profile, piece: Piece, data=None, buffer=None, device=None):
    """The final set of ``piece``, remade into its cache folder when it is missing there (a set
    not distilled is rebuilt from its seed; a distillation resumes from its checkpoint, or reruns
    from its seed, with its snapshots): the same set its results were evaluated on, on the same
    kind of machine (CPU runs are bit-reproducible), with the kernels its result records
    (:func:`made_with_kernels`: the C loops and the torch ops round differently)."""
    from .paths import FileLock
    folder = _folder(profile, piece)
    # one process at a time remakes a set: another one that needs it waits, then reads it
    with FileLock(folder / ".ensure_set.lock", wait=True):
        return _ensure_set(profile, piece, folder, data, buffer, device)


def _ensure_set(profile: Profile, piece: Piece, folder, data, buffer, device):
    from .matching import snapshot_iterations
    want = expected_snapshots(profile, piece)
    have = snapshot_iterations(folder)
    if (folder / "synset_final.pt").exists() and have == want:
        return final_set(profile, piece)
    # distilled (in part or whole) before its snapshots were asked for: distil again from
    # iteration 0 (the same seed, so the same set on this kind of machine), keeping them this
    # time; an interrupted run that kept its snapshots so far (a prefix of them) just resumes
    unsnapped = bool(want) and (not have or have != want[:len(have)])
    if unsnapped and (folder / "checkpoint.pt").exists():
        for f in [folder / "checkpoint.pt", folder / "synset_final.pt",
                  *(folder / "snapshots").glob("synset_*.pt")]:
            f.unlink(missing_ok=True)
    scale = scale_config(profile)
    data = data or universe(scale)
    if buffer is None and piece.needs_experts:
        buffer = experts(scale, data, device)
    made = made_with_kernels(profile, piece)
    print(f"remaking the set of {piece.page}/{piece.name} at {profile.name} in the cache"
          + (f" with DDBOOK_KERNELS={made}, as its result was made" if made else ""))
    with ckernels.kernels_as(made):
        return _make_set(profile, piece, data, buffer, device)[0]


def expected_snapshots(profile: Profile, piece: Piece) -> list[int]:
    """The iterations whose set a finished distillation of ``piece`` keeps ([] if none)."""
    every = snapshot_every(profile, piece)
    if every is None:
        return []
    n = scale_config(profile).iterations
    return sorted({*range(0, n + 1, every), n})


def pixel_stats(images: torch.Tensor, is_selected: torch.Tensor) -> dict:
    """{"distilled" | "real": {"n", "std", "absmax"}} of a set's normalised pixels, per part (a
    part with no image: None). Distillation at a large lr_img can carry images far outside the
    real images' range (std ~1, |x| within ~2.5 after normalisation); the pages print this."""
    out = {}
    for part, mask in (("distilled", ~is_selected.bool()), ("real", is_selected.bool())):
        x = images[mask.to(images.device)].detach().float()
        out[part] = None if len(x) == 0 else {"n": len(x), "std": float(x.std()),
                                               "absmax": float(x.abs().max())}
    return out


def run_piece(profile: Profile, piece: Piece, data=None, buffer=None, device=None,
              stop_after: int | None = None):
    """Make (distil if it distils) and evaluate one piece; write its results; return the path
    (None when ``stop_after`` stopped the distillation early: nothing is written then). The
    final set stays in the cache (:func:`final_set`)."""
    from .train import default_device

    scale = scale_config(profile)
    device = torch.device(device) if device is not None else default_device()
    t0, c0 = time.perf_counter(), time.process_time()
    data = data or universe(scale)
    if buffer is None and piece.needs_experts:
        buffer = experts(scale, data, device)
    t1 = time.perf_counter()
    synset, info, res = _make_set(profile, piece, data, buffer, device, stop_after)
    if synset is None:
        return None
    out = {"piece": piece.name, "page": piece.page, "method": piece.method, "ratio": piece.ratio,
           "ipc": ipc_of(scale, piece.ratio), "alpha": piece.alpha, "beta": piece.beta,
           "n_images": len(synset), "n_selected": synset.num_selected,
           "n_distilled": len(synset) - synset.num_selected, "init": info,
           "soft_labels": synset.soft, "snapshot_every": snapshot_every(profile, piece),
           "pixels": pixel_stats(synset.images, synset.is_selected)}
    loss = None
    if piece.distills and out["n_distilled"] == 0:
        out["init"]["note"] = "floor(alpha * IPC) = 0: nothing to distil, the window alone"
    if res is not None:
        match = match_config(scale, piece)
        h = res.history
        applied = sum(not s for s in h["skipped"])
        loss = torch.tensor(h["loss"])
        out.update(iterations=res.iterations_done, iterations_applied=applied,
                   updates_per_distilled_image=updates_per_image(
                       len(synset), match.batch_syn, match.syn_steps, applied),
                   batch_syn=match.batch_syn, syn_steps=match.syn_steps,
                   distill_loss_first=h["loss"][0], distill_loss_last=h["loss"][-1],
                   distill_loss_last50_mean=float(np.mean(h["loss"][-50:])),
                   syn_lr_final=h["syn_lr"][-1],
                   seconds_per_iteration_median=statistics.median(h["seconds"]),
                   distill_wall_s=time.perf_counter() - t1)
    else:
        out.update(iterations=0, iterations_applied=0, updates_per_distilled_image=None)
    ev = evaluate_selmatch(synset.images, synset.labels, data[5], data[6], synset.is_selected,
                           config=eval_config(scale, len(synset)), num_classes=10, device=device)
    out.update(eval=ev.to_dict(), accuracies=list(ev.accuracies), mean=ev.mean, std=ev.std,
               train_loss=list(ev.train_loss), n_test=int(ev.correct.shape[1]),
               eval_wall_s=ev.wall_time_s,
               seconds_per_eval_network=ev.wall_time_s / len(ev.accuracies))
    out.update(cpu_s=time.process_time() - c0, load_average=os.getloadavg())
    arrays = pack_correct(ev.correct)
    if loss is not None:
        arrays["distill_loss"] = loss
    return save_result(f"{piece.page}/{piece.name}", profile.name, out,
                       piece_config(profile, piece), [scale.seed], time.perf_counter() - t0,
                       device, arrays=arrays)


def _load(profile: Profile, piece: Piece):
    """(result or None, stale reason or None)."""
    try:
        r = load_result(f"{piece.page}/{piece.name}", profile.name, missing_ok=True,
                        expect_config=piece_config(profile, piece))
        return r, None
    except StaleResultError as e:
        return None, str(e)


def run_pieces(profile: Profile, pieces: list[Piece], device=None, only: str | None = None):
    """Run every missing or stale piece of ``pieces`` whose name contains ``only`` (a string) or
    that ``only`` accepts (a callable on the name); keep current results. Returns the paths
    written."""
    if only is not None:
        accept = only if callable(only) else (lambda name: only in name)
        chosen = [p for p in pieces if accept(p.name)]
        if not chosen:
            raise ValueError(f"no piece name contains {only!r}; the pieces are "
                             f"{', '.join(p.name for p in pieces)}")
        pieces = chosen
    todo = [p for p in pieces if _load(profile, p)[0] is None]
    if not todo:
        return []
    scale = scale_config(profile)
    data = universe(scale)
    buffer, written = None, []
    for p in sorted(todo, key=lambda p: p.needs_experts):   # sets without experts first
        if _load(profile, p)[0] is not None:      # finished by another process meanwhile
            continue
        if buffer is None and p.needs_experts:
            buffer = experts(scale, data, device)
        written.append(run_piece(profile, p, data, buffer, device))
    return written


def load_pieces(profile: Profile, pieces: list[Piece]) -> Loaded:
    """Loaded(found {name: Result}, missing [name], stale {name: reason})."""
    found, missing, stale = {}, [], {}
    for p in pieces:
        r, why = _load(profile, p)
        if r is not None:
            found[p.name] = r
        elif why is not None:
            stale[p.name] = why
        else:
            missing.append(p.name)
    return Loaded(found, missing, stale)


# ------------------------------------------------------------------------------------------
# the Fig. 3 sweep's random and window rows (the one adapter to figures.selmatch_fig3)


def _fig3():
    """The Fig. 3 sweep module (``ddbook.figures.selmatch_fig3``)."""
    from .figures import selmatch_fig3
    return selmatch_fig3


def fig3_compatible(profile: Profile) -> str | None:
    """None when the Fig. 3 sweep at ``profile`` shares this scale's universe and protocol; else
    the reason its rows cannot stand in Table 1."""
    scale, sweep = scale_config(profile), _fig3().sweep_config(profile.name)
    if not scale.fig3_comparable:
        return (f"the Fig. 3 sweep at {profile.name} is not this page's scale model (its universe "
                f"{sweep.train_per_class or 'all'} per class, {sweep.network})")
    mine = (scale.universe_per_class, scale.test_per_class, scale.network, scale.width,
            scale.eval_steps, scale.eval_batch, scale.eval_lr)
    theirs = (sweep.train_per_class, sweep.test_per_class, sweep.network, sweep.width,
              sweep.steps, sweep.batch_size, sweep.lr)
    if mine != theirs:
        return f"the Fig. 3 sweep at {profile.name} differs: {theirs} vs this scale's {mine}"
    return None


def fig3_rows(profile: Profile):
    """(table, missing, reason): the Fig. 3 sweep's points at ``profile`` as a DataFrame (ratio,
    beta, run, accuracy, train_loss, ...; beta NaN = random), or reason when not comparable."""
    why = fig3_compatible(profile)
    if why is not None:
        return None, [], why
    try:
        table, missing = _fig3().load_sweep(profile.name)
    except StaleResultError as e:
        return None, [], f"the Fig. 3 sweep at {profile.name} is stale: {e}"
    return table, missing, None


def fig3_betas(profile: Profile, ratio: float) -> list[float]:
    """The window starts β the Fig. 3 sweep at ``profile`` runs at ``ratio`` (its grid)."""
    fig3 = _fig3()
    return sorted({b for r, b, _ in fig3.sweep_points(fig3.sweep_config(profile.name))
                   if b is not None and math.isclose(r, ratio)})


def fig3_correct(profile: Profile) -> dict:
    """{(ratio, β or None for random, run): (N_test,) bool} per-test-example correctness of every
    current Fig. 3 network at this scale's ratios (empty when the sweep is not comparable)."""
    from .evaluate import load_correct
    if fig3_compatible(profile) is not None:
        return {}
    out = {}
    for p in _fig3().plan(profile):
        if not any(math.isclose(p.ratio, r) for r in scale_config(profile).ratios):
            continue
        try:
            res = p.load(profile)
        except StaleResultError:
            continue
        if res is not None:
            out[(p.ratio, p.beta, p.run_index)] = load_correct(res)[0]
    return out


def fig3_random_subset(profile: Profile, ratio: float, run: int, data) -> torch.Tensor:
    """The universe indices of the Fig. 3 sweep's random subset at ``ratio``, network ``run``
    (the sweep's own draw, recomputed from its seed; ``data``: :func:`universe`)."""
    why = fig3_compatible(profile)
    if why is not None:
        raise ValueError(f"no Fig. 3 random subset to share: {why}")
    fig3 = _fig3()
    config = fig3.sweep_config(profile.name)
    return fig3._point_setup(data[0], config, ratio, None, run, fig3._data(data[0], config))[0]


def random_by_ratio(profile: Profile) -> dict:
    """{ratio: [accuracy of each random-subset network]} of the Fig. 3 sweep at this scale's ratios
    (empty when the sweep is missing or not comparable)."""
    table, _, why = fig3_rows(profile)
    if why or table is None or not len(table):
        return {}
    out = {}
    for r in scale_config(profile).ratios:
        t = table[np.isclose(table["ratio"], r) & table["beta"].isna()].sort_values("run")
        if len(t):
            out[r] = list(t["accuracy"])
    return out


def random_trend(profile: Profile):
    """The scale's precondition as a Verdict: random-subset accuracy rises with the ratio (an OLS
    slope over the Fig. 3 sweep's random networks); None with fewer than two ratios present."""
    from . import verdicts as V
    rnd = random_by_ratio(profile)
    if len(rnd) < 2:
        return None
    xs = sorted(rnd)
    return V.trend(xs, [rnd[x] for x in xs], "random-subset accuracy rises with the subset ratio "
                   "(the ratio axis means something at this scale)", direction="increasing",
                   per="unit of subset ratio")


def _calibration(profile: Profile):
    try:
        return load_result(f"{ALPHA_PAGE}/calibration", profile.name, missing_ok=True)
    except StaleResultError:
        return None


def planned_cost(profile: Profile) -> list[dict] | None:
    """Per ratio, the cost of one piece from the measured calibration at ``profile`` (CPU seconds
    per image-step of the unroll and per evaluation network at the smallest ratio; wall seconds
    for an older calibration that has no CPU time): distillation and evaluation minutes, and the
    plan's process-hours; None without a calibration."""
    cal = _calibration(profile)
    if cal is None:
        return None
    scale, d = scale_config(profile), cal.data
    cpu = "cpu_seconds_per_image_step" in d      # process CPU time: immune to a shared machine
    step = d["cpu_seconds_per_image_step" if cpu else "seconds_per_image_step"]
    net = d["cpu_seconds_per_eval_network" if cpu else "seconds_per_eval_network"]
    rows = []
    for r in scale.ratios:
        n = 10 * ipc_of(scale, r)
        distill_min = step * n * scale.iterations / 60
        eval_min = net * scale.eval_runs / 60
        count = sum(math.isclose(p.ratio, r) for p in alpha_plan(profile) + table1_plan(profile)
                    if p.distills)
        evals = sum(math.isclose(p.ratio, r) for p in alpha_plan(profile) + table1_plan(profile))
        rows.append({"ratio": r, "n_images": n, "measured_as": "CPU time" if cpu else
                     "wall time (shared machine: an upper bound)", "distillation_min": distill_min,
                     "evaluation_min": eval_min, "distillations": count, "evaluated_sets": evals,
                     "ratio_hours": (count * distill_min + evals * eval_min) / 60})
    return rows


def measured_cost(loaded) -> list[dict]:
    """Per piece found: wall time (provenance), distillation and evaluation seconds, updates."""
    return [{"piece": n, "wall_min": r.provenance["wall_time_s"] / 60,
             "cpu_min": r.data["cpu_s"] / 60 if "cpu_s" in r.data else None,
             "distill_min": r.data.get("distill_wall_s", 0.0) / 60,
             "eval_min": r.data["eval_wall_s"] / 60,
             "s_per_iteration": r.data.get("seconds_per_iteration_median"),
             "updates_per_distilled_image": r.data.get("updates_per_distilled_image")}
            for n, r in loaded.found.items()]


def run_fig3(profile: Profile, device=None) -> int:
    """Run the missing points of the Fig. 3 sweep at ``profile`` (ci only, for the live cell)."""
    from .data import load_dataset
    if profile.name != "ci":
        raise ValueError("the Fig. 3 sweep beyond ci is run by its own page (python -m ddbook "
                         "sweep-window); Table 1 reuses its results")
    return _fig3().run_sweep(load_dataset("cifar10"), profile.name, device=device)


# ------------------------------------------------------------------------------------------
# calibration


def calibrate(profile: Profile, ratio: float | None = None, iterations: int = 3, device=None):
    """Measure the plan's unit costs at ``profile``: train (or find) the first expert (the
    others are trained by the first run, into the same buffer), time ``iterations`` distillation
    iterations of SelMatch at the smallest ratio (α = 1, one pass over the set each) and one
    evaluation network; write ``<ALPHA_PAGE>/calibration.json``."""
    from .matching import distill
    from .train import default_device

    scale = scale_config(profile)
    device = torch.device(device) if device is not None else default_device()
    ratio = ratio or min(scale.ratios)
    data = universe(scale)
    with Timer() as te:
        buffer = experts(scale, data, device, n=1)
    piece = Piece(f"r{ratio:.2f}_a1.0", ALPHA_PAGE, ratio, "selmatch", 1.0,
                  paper_setting(ratio)["beta"])
    synset, _ = initial_set(scale, piece, data, buffer)
    match = match_config(scale, piece)
    c0 = time.process_time()
    res = distill(synset, buffer, match, replace(loop_config(scale), iterations=iterations),
                  device=device)
    c1 = time.process_time()
    sec = statistics.median(res.history["seconds"])
    one = replace(eval_config(scale, len(synset)), runs=1)
    ev = evaluate_selmatch(synset.images, synset.labels, data[5], data[6], synset.is_selected,
                           config=one, num_classes=10, device=device)
    c2 = time.process_time()
    infos = [buffer.info(i) for i in buffer.experts()]
    out = {"ratio": ratio, "n_images": len(synset), "seconds_per_iteration": sec,
           "cpu_seconds_per_iteration": (c1 - c0) / iterations,
           "cpu_seconds_per_image_step": (c1 - c0) / iterations / (match.syn_steps *
                                                                   match.batch_syn),
           "cpu_seconds_per_eval_network": c2 - c1, "load_average": os.getloadavg(),
           "seconds_per_image_step": sec / (match.syn_steps * match.batch_syn),
           "distill_losses": res.history["loss"],
           "seconds_per_eval_network": ev.wall_time_s, "eval_accuracy_initial_set": ev.mean,
           "eval_train_loss": ev.train_loss[0],
           "experts_wall_s_this_call": te.seconds,
           "expert_wall_s": [i["wall_time_s"] for i in infos],
           "expert_seconds_per_epoch": [i["wall_time_s"] / scale.expert_epochs for i in infos],
           "expert_final_test_accuracy_probe": [i["test_accuracy"][-1] for i in infos],
           "expert_final_train_loss": [i["train_loss"][-1] for i in infos],
           "torch_threads": torch.get_num_threads()}
    config = {"scale": asdict(scale), "ratio": ratio, "iterations": iterations}
    return save_result(f"{ALPHA_PAGE}/calibration", profile.name, out, config, [scale.seed],
                       te.seconds + sum(res.history["seconds"]) + ev.wall_time_s, device)
