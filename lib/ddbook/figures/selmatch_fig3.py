"""SelMatch Fig. 3: accuracy of a network trained on the sliding-window subset, against β.

For each subset ratio and each β of the grid, the window subset (papers.md §4.2: per class, the
images ranked [⌊β·N_c⌋, ⌊β·N_c⌋ + IPC) hardest-first by C-score) trains a fresh network, tested
once at the end; random subsets of the same size give the dashed baselines. Every (ratio, β, run)
writes its own results file, so an interrupted sweep resumes where it stopped and the figure draws
whatever is there.

The training length is a fixed number of SGD steps for every ratio (SelMatch's scripts keep the
step count about constant: epochs 1000 × 5 % / ratio); epochs = round(steps·batch / subset size).

The figure-module protocol (:mod:`ddbook.figures`): the pieces are the sweep's points
(:class:`SweepPoint`, named like their results files); :func:`verdicts` tests the paper's claims
on the run-level accuracies with :mod:`ddbook.verdicts`. The stored config of every point is
``SweepConfig`` + (ratio, beta, run) (:func:`_point_config`): changing a field or a default of
``SweepConfig`` makes every committed point stale.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from ..batched import use_batched
from ..data import Dataset, normalize
from ..evaluate import SelMatchEvalConfig, evaluate_selmatch
from ..profiles import Profile
from ..results import StaleResultError, load_result, save_result
from ..scores import Scores, load_published_scores
from ..selection import beta_grid, random_indices, window_indices
from ..train import default_device, progress
from ._common import Loaded, as_profile, load_pieces, select

__all__ = ["NAME", "NOTEBOOK", "TITLE", "ALIASES", "plan", "run", "load", "verdicts",
           "SweepConfig", "SWEEPS", "EARLIER", "sweep_config", "sweep_points", "run_sweep",
           "load_sweep", "load_earlier", "table", "run_point", "run_point_runs", "summarise", "run_table",
           "budget",
           "paper_beta_star"]

NAME = "selmatch-fig3"
NOTEBOOK = "selmatch_fig3_sliding_window"
TITLE = "SelMatch Fig. 3: accuracy of the sliding-window subset against beta"
ALIASES = {"sweep-window": ""}     # the sweep's older command-line name
# the results folder's stem (results/<profile>/selmatch_fig3[_u<U>]/): fixed, results depend on it
FOLDER = "selmatch_fig3"


@dataclass(frozen=True)
class SweepConfig:
    ratios: tuple = (0.05, 0.10, 0.20, 0.30)  # subset ratios (fraction of each class)
    beta_step: float = 0.1        # grid spacing of β (the scripts use 0.1)
    runs: int = 2                 # networks per point (the paper: 5)
    network: str = "ConvNetBN"    # the paper: ResNet18BN
    width: int | None = 32        # ConvNet width (None for ResNet)
    steps: int = 400              # SGD steps per network, the same for every ratio
    batch_size: int = 128
    lr: float = 0.1               # cosine to 0.01·lr (SelMatch protocol)
    augment: str = "dsa"          # the sliding-window scripts train with DSA only
    score: str = "cscore"
    reading: str = "class-fraction"
    train_per_class: int | None = None  # None: the full class (5,000 for CIFAR-10)
    test_per_class: int | None = None   # None: the full test set
    seed: int = 0


SWEEPS = {
    "ci": SweepConfig(ratios=(0.1, 0.3), beta_step=0.3, runs=1, width=8, steps=6,
                      train_per_class=60, test_per_class=20),
    # quick: a scale model (the first 500 images of each class, the full test set), in which 2,000
    # steps of 128 are 1,024 / 512 / 256 / 171 epochs of the 5 / 10 / 20 / 30 % subsets (the
    # paper's 1000 / 500 / 250 / 167), the networks fit their subsets and random accuracy rises
    # with the ratio; 3 runs per point so that best-of-grid picks can be cross-fitted
    "quick": SweepConfig(runs=3, steps=2000, train_per_class=500),
    "gpu": SweepConfig(runs=3, network="ResNet18BN", width=None, steps=4000),
    # paper: 5 runs of ResNet18BN for 1000 epochs at 5 % (2,500 images, batch 128: ≈ 20,000 steps)
    "paper": SweepConfig(runs=5, network="ResNet18BN", width=None, steps=20_000),
}


# earlier sweeps kept as labelled diagnostics (never mixed into the figure): at quick, the
# full-data sweep of 400 steps and 2 runs per point (results/quick/selmatch_fig3/), in which
# random-subset accuracy is flat across ratios
EARLIER = {"quick": SweepConfig()}


def sweep_config(profile: Profile | str) -> SweepConfig:
    """The sweep at ``profile`` (a Profile, or a name)."""
    name = profile.name if isinstance(profile, Profile) else profile
    if name not in SWEEPS:
        raise ValueError(f"unknown profile {name!r}; choose one of {list(SWEEPS)}")
    return SWEEPS[name]


def sweep_points(config: SweepConfig) -> list[tuple[float, float | None, int]]:
    """Every (ratio, β or None for random, run) of the sweep, in the order they are run."""
    points = []
    for run in range(config.runs):
        for ratio in config.ratios:
            grid = beta_grid(ratio)
            every = max(1, round(config.beta_step / 0.1))
            points += [(ratio, b, run) for b in grid[::every]] + [(ratio, None, run)]
    return points


def _folder(config: SweepConfig) -> str:
    """``selmatch_fig3`` on the full training set, ``selmatch_fig3_u<U>`` in a U-per-class universe
    (so that sweeps of different universes never share, or overwrite, a results file)."""
    return FOLDER if config.train_per_class is None else f"{FOLDER}_u{config.train_per_class}"


def _point_name(config: SweepConfig, ratio: float, beta: float | None, run: int) -> str:
    b = "random" if beta is None else f"b{beta:.1f}"
    return f"{_folder(config)}/r{ratio:.2f}_{b}_run{run}"


def _data(dataset: Dataset, config: SweepConfig):
    train, test = dataset.train, dataset.test
    scores = load_published_scores(dataset, config.score)
    if config.train_per_class is not None:
        keep = torch.cat([train.class_indices(c)[:config.train_per_class]
                          for c in range(train.num_classes)])
        train = train.subset(keep)
        scores = Scores(scores.name, scores.values[keep], scores.hard, scores.source)
    if config.test_per_class is not None:
        test = test.take_per_class(config.test_per_class, seed=config.seed)
    return train, test, scores


def _point_config(config: SweepConfig, ratio: float, beta, run: int) -> dict:
    return {**asdict(config), "ratio": ratio, "beta": beta, "run": run}


def _point_setup(dataset: Dataset, config: SweepConfig, ratio: float, beta, run: int, data):
    """(subset indices, normalised subset, test images, evaluation config) of one point."""
    train, test, scores = data
    n_class = len(train.class_indices(0))
    ipc = max(1, round(ratio * n_class))
    if beta is None:
        idx = random_indices(train, ipc, seed=config.seed + 7919 * run + ipc)
    else:
        idx = window_indices(scores, train, ipc, beta, config.reading)
    epochs = max(1, round(config.steps * config.batch_size / len(idx)))
    evc = SelMatchEvalConfig(network=config.network, width=config.width, epochs=epochs,
                             lr=config.lr, batch_size=config.batch_size, augment=config.augment,
                             runs=1, seed=config.seed + run)
    x = normalize(train.images[idx], dataset.mean, dataset.std)
    xt = normalize(test.images, dataset.mean, dataset.std)
    return idx, x, xt, evc


def _save_point(config: SweepConfig, profile: Profile, ratio: float, beta, run: int, data, idx,
                res, i: int, wall_time_s: float, device):
    """Write network ``i`` of the evaluation ``res`` as the results of point (ratio, beta, run)."""
    train, test, scores = data
    n_class = len(train.class_indices(0))
    data_out = {"accuracy": res.accuracies[i], "ipc": max(1, round(ratio * n_class)),
                "subset_size": len(idx), "epochs": res.epochs, "steps": res.steps,
                "train_loss": res.train_loss[i], "mean_score": float(scores.values[idx].mean()),
                "eval_point": res.eval_point, "n_test": int(res.correct.shape[1])}
    # per-test-example correctness (packed bits, test-set order) for easy/hard accuracy later
    arrays = {"correct_bits": np.packbits(np.asarray(res.correct[i], dtype=bool))}
    return save_result(_point_name(config, ratio, beta, run), as_profile(profile).name, data_out,
                       _point_config(config, ratio, beta, run), [config.seed + run],
                       wall_time_s, device, arrays=arrays)


def run_point(dataset: Dataset, config: SweepConfig, profile: Profile, ratio: float, beta,
              run: int, data=None, device=None):
    """Train and test one network of the sweep; write and return its results path."""
    data = data or _data(dataset, config)
    idx, x, xt, evc = _point_setup(dataset, config, ratio, beta, run, data)
    train, test, _ = data
    res = evaluate_selmatch(x, train.labels[idx], xt, test.labels, config=evc, ratio=ratio,
                            num_classes=dataset.num_classes, device=device, batched=False)
    return _save_point(config, profile, ratio, beta, run, data, idx, res, 0, res.wall_time_s,
                       device)


def run_point_runs(dataset: Dataset, config: SweepConfig, profile: Profile, ratio: float,
                   beta: float, runs: list[int], data=None, device=None) -> list:
    """Train the networks of consecutive ``runs`` of one window point stacked (ddbook.batched).

    The runs of a window point share the subset and differ only in their seeds, so they are one
    SelMatch evaluation with ``len(runs)`` runs from seed ``config.seed + runs[0]``: run r is
    initialised and draws exactly as :func:`run_point` would (to float rounding). Each run is
    written as its own point, with an equal share of the wall time. Returns the paths.
    """
    if beta is None or runs != list(range(runs[0], runs[0] + len(runs))):
        raise ValueError(f"stack consecutive runs of a window point (random subsets differ per "
                         f"run); got beta={beta}, runs={runs}")
    data = data or _data(dataset, config)
    idx, x, xt, evc = _point_setup(dataset, config, ratio, beta, runs[0], data)
    train, test, _ = data
    res = evaluate_selmatch(x, train.labels[idx], xt, test.labels,
                            config=replace(evc, runs=len(runs)), ratio=ratio,
                            num_classes=dataset.num_classes, device=device, batched=True)
    return [_save_point(config, profile, ratio, beta, run, data, idx, res, i,
                        res.wall_time_s / len(runs), device) for i, run in enumerate(runs)]


def _groups(points: list, stack: bool) -> list[list]:
    """The points in order, as groups to train together: the runs of one window point when
    ``stack`` (random points, whose subsets differ per run, stay alone), else one per group."""
    if not stack:
        return [[p] for p in points]
    groups, where = [], {}
    for p in points:
        key = (p.ratio, p.beta)
        if p.beta is not None and key in where and groups[where[key]][-1].run_index == p.run_index - 1:
            groups[where[key]].append(p)
            continue
        where[key] = len(groups)
        groups.append([p])
    return groups


@dataclass(frozen=True)
class SweepPoint:
    """One network of the sweep (a piece): (ratio, β or None for random, run) under ``config``."""
    config: SweepConfig
    ratio: float
    beta: float | None
    run_index: int

    @property
    def name(self) -> str:
        return _point_name(self.config, self.ratio, self.beta, self.run_index)

    def load(self, profile: Profile):
        return load_result(self.name, profile.name, missing_ok=True,
                           expect_config=_point_config(self.config, self.ratio, self.beta,
                                                       self.run_index))

    def run(self, profile: Profile, device=None, dataset: Dataset | None = None, data=None):
        from ..data import load_dataset
        return run_point(dataset or load_dataset("cifar10"), self.config, profile, self.ratio,
                         self.beta, self.run_index, data, device)


def plan(profile: Profile, config: SweepConfig | None = None) -> list[SweepPoint]:
    """Every point of the profile's sweep (or of ``config``), in the order they are run."""
    config = config or sweep_config(profile)
    return [SweepPoint(config, *p) for p in sweep_points(config)]


def _is_current(profile: Profile, point: SweepPoint) -> bool:
    try:
        return point.load(profile) is not None
    except StaleResultError:
        return False          # made from another config: recompute it


def run_sweep(dataset: Dataset, profile: Profile | str, device=None,
              config: SweepConfig | None = None, shard: tuple[int, int] = (0, 1),
              reverse: bool = False, only=None, batched: bool | None = None) -> int:
    """Run every missing point of the profile's sweep (existing, current results are kept).

    ``shard=(k, n)`` runs only the points whose position in :func:`sweep_points` is k mod n, so n
    processes (e.g. one per CPU core) can share a sweep without running a point twice. Each point
    is checked again just before it runs, so two processes can also share one sweep from opposite
    ends (``reverse=True`` for the second): they meet in the middle. ``only``: the points whose
    name contains it (see :func:`ddbook.figures._common.select`). ``batched`` trains the runs of
    one window point stacked (:func:`run_point_runs`; None: ddbook.batched.use_batched, i.e. on
    CUDA only); it is an execution detail, absent from the results' config.
    Returns the number of networks this call trained.
    """
    profile = as_profile(profile)
    config = config or sweep_config(profile)
    k, n = shard
    if not 0 <= k < n:
        raise ValueError(f"shard must be (k, n) with 0 <= k < n, got {shard}")
    data = _data(dataset, config)
    points = select(plan(profile, config), only)
    todo = [p for i, p in enumerate(points) if i % n == k and not _is_current(profile, p)]
    stack = use_batched(batched, config.network, config.width, None, config.runs,
                        torch.device(device) if device is not None else default_device())
    trained = 0
    groups = _groups(todo, stack)
    for group in progress(groups[::-1] if reverse else groups, desc="sliding window"):
        group = [p for p in group if not _is_current(profile, p)]   # done by another process
        runs = [p.run_index for p in group]
        if len(group) >= 2 and runs == list(range(runs[0], runs[0] + len(runs))):
            run_point_runs(dataset, config, profile, group[0].ratio, group[0].beta, runs, data,
                           device)
        else:
            for p in group:
                run_point(dataset, config, profile, p.ratio, p.beta, p.run_index, data, device)
        trained += len(group)
    return trained


def run(profile: Profile, device=None, only=None) -> list:
    """The protocol's ``run``: every missing or stale point of the sweep; the paths written."""
    from ..data import load_dataset

    profile = as_profile(profile)
    before = load(profile)
    run_sweep(load_dataset("cifar10"), profile, device, only=only)
    after = load(profile)
    return [r.path for name, r in after.found.items() if name not in before.found]


def load(profile: Profile, config: SweepConfig | None = None) -> Loaded:
    """The sweep's points at ``profile``: found (current), missing, stale."""
    profile = as_profile(profile)
    return load_pieces(plan(profile, config), profile)


def load_earlier(profile: Profile) -> Loaded | None:
    """The earlier sweep kept at ``profile`` as a diagnostic (:data:`EARLIER`), or None."""
    profile = as_profile(profile)
    config = EARLIER.get(profile.name)
    return None if config is None else load(profile, config)


def table(found: dict):
    """The found points as a DataFrame (ratio, beta, run, accuracy, ...; beta NaN for random)."""
    import pandas as pd

    rows = []
    for r in found.values():
        cfg = r.provenance["config"]
        rows.append({"ratio": cfg["ratio"], "beta": cfg["beta"], "run": cfg["run"], **r.data,
                     "wall_time_s": r.provenance["wall_time_s"], "sha": r.provenance["sha"]})
    columns = ["ratio", "beta", "run", "accuracy", "ipc", "epochs", "steps", "mean_score"]
    return pd.DataFrame(rows, columns=None if rows else columns)


def load_sweep(profile: Profile | str, config: SweepConfig | None = None):
    """The sweep's results as a DataFrame (ratio, beta, run, accuracy, ...), plus the missing points
    as (ratio, beta, run). A results file made from another configuration raises
    ``StaleResultError`` (never drawn)."""
    profile = as_profile(profile)
    points = plan(profile, config)
    found, missing = {}, []
    for p in points:
        r = p.load(profile)
        if r is None:
            missing.append((p.ratio, p.beta, p.run_index))
        else:
            found[p.name] = r
    return table(found), missing


def budget(config: SweepConfig, class_size: int = 5000) -> list[dict]:
    """Per ratio, what one network of the sweep trains on: images per class in the universe
    (``class_size``: CIFAR-10's 5,000 unless the config takes fewer), subset size, epochs and SGD
    steps, beside the epochs of SelMatch's scripts (1000 · 5 % / ratio, papers.md §4.4)."""
    n_class = config.train_per_class or class_size
    rows = []
    for ratio in config.ratios:
        ipc = max(1, round(ratio * n_class))
        size = 10 * ipc
        epochs = max(1, round(config.steps * config.batch_size / size))
        rows.append({"ratio": f"{ratio:.0%}", "images per class (universe)": n_class,
                     "subset images": size, "epochs": epochs,
                     "SGD steps": math.ceil(size / config.batch_size) * epochs,
                     "the paper's epochs": round(1000 * 0.05 / ratio)})
    return rows


def summarise(table) -> dict:
    """Per ratio, for the comparison table: the best β (by mean accuracy over runs; a descriptive
    pick, tested only by :func:`verdicts`), its mean and std, the random mean, the accuracies at the
    grid's ends (the hardest and easiest windows), the β grid and the number of runs."""
    out = {}
    for ratio in sorted(table["ratio"].unique()):
        t = table[table["ratio"] == ratio]
        win = t[t["beta"].notna()].groupby("beta")["accuracy"].agg(["mean", "std", "count"])
        rnd = t[t["beta"].isna()]["accuracy"]
        if not len(win):
            continue
        best = float(win["mean"].idxmax())
        out[float(ratio)] = {
            "best_beta": best, "best_mean": float(win["mean"][best]),
            "best_std": float(win["std"].fillna(0.0)[best]),
            "random_mean": float(rnd.mean()) if len(rnd) else math.nan,
            "hardest_mean": float(win["mean"].iloc[0]), "easiest_mean": float(win["mean"].iloc[-1]),
            "betas": [float(b) for b in win.index], "n_runs": int(t["run"].nunique())}
    return out


# ------------------------------------------------------------------------------------------
# verdicts (ddbook.verdicts): run-level tests of the paper's claims


def paper_beta_star() -> dict[float, float]:
    """{subset ratio: the paper's best β} (SelMatch's scripts; reference/paper-numbers.csv,
    confidence "inference"): the pre-specified points of the test at β*."""
    from ..reference import paper_numbers

    return {float(r["subset_ratio"].rstrip("%")) / 100: float(r["method"].split("=")[-1])
            for r in paper_numbers(paper="SelMatch", where="Fig. 3*", dataset="CIFAR-10")}


def run_table(found: dict) -> dict:
    """{ratio: (windows {β: [accuracy per run]}, random [accuracy per run], runs)} over the runs
    complete at that ratio (every β and the random subset present), ratios in ascending order."""
    cells: dict = {}
    for r in found.values():
        cfg = r.provenance["config"]
        cell = cells.setdefault(float(cfg["ratio"]), {})
        cell.setdefault(cfg["beta"], {})[int(cfg["run"])] = float(r.data["accuracy"])
    out = {}
    for ratio in sorted(cells):
        cell = cells[ratio]
        if None not in cell or len(cell) < 2:
            continue
        runs = sorted(set.intersection(*(set(v) for v in cell.values())))
        if runs:
            windows = {float(b): [v[k] for k in runs] for b, v in cell.items() if b is not None}
            out[ratio] = (windows, [cell[None][k] for k in runs], runs)
    return out


def verdicts(loaded) -> list:
    """The paper's Fig. 3 claims, tested on run-level accuracies (``loaded``: a Loaded or a
    {name: Result} dict); only runs complete at a ratio (every β and random) are used.

    - precondition: random-subset accuracy rises with the ratio (OLS slope over runs);
    - per ratio, the window at the paper's β* beats random (Welch, pre-specified: no selection);
    - per ratio, the best window beats random, the pick cross-fitted (leave one run out, paired
      by run: the window and the random network of run r share their initialisation seed);
    - per ratio, the optimum is interior: the best interior window (cross-fitted) beats the better
      end of the grid (the end with the better mean, a choice that favours the ends);
    - the optimum moves toward harder windows (smaller β) as the subset grows (bootstrap over runs
      of the slope of the per-ratio argmax).
    """
    from ..verdicts import argmax_trend, at_point, crossfit_best, trend

    found = loaded.found if isinstance(loaded, Loaded) else loaded
    table, star = run_table(found), paper_beta_star()
    out = []
    if len(table) >= 2:
        out.append(trend([100 * r for r in table], [rnd for _, rnd, _ in table.values()],
                         "precondition: random-subset accuracy rises with the subset ratio",
                         direction="increasing", per="percentage point of subset ratio"))
    for ratio, (windows, rnd, runs) in table.items():
        tag = f"{ratio:.0%}"
        if ratio in star and star[ratio] in windows:
            out.append(at_point(windows, star[ratio], rnd, f"{tag}: the window at the paper's "
                                f"β* = {star[ratio]:g} beats a random subset"))
        out.append(crossfit_best(windows, rnd, f"{tag}: the best window, chosen on the other runs, "
                                 f"beats a random subset"))
        betas = sorted(windows)
        ends = max((betas[0], betas[-1]), key=lambda b: sum(windows[b]))
        interior = {b: windows[b] for b in betas[1:-1]}
        if interior:
            out.append(crossfit_best(interior, windows[ends], f"{tag}: the optimum is interior "
                                     f"(the best interior window, chosen on the other runs, beats "
                                     f"the better end of the grid, β = {ends:g})"))
    if len(table) >= 2:
        out.append(argmax_trend({100 * r: w for r, (w, _, _) in table.items()},
                                "the optimum moves toward harder windows (smaller β) as the "
                                "subset grows", direction="decreasing", units="β",
                                per="percentage point of subset ratio"))
    return out
