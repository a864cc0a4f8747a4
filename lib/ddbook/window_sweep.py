"""SelMatch Fig. 3: accuracy of a network trained on the sliding-window subset, against β.

For each subset ratio and each β of the grid, the window subset (papers.md §4.2: per class, the
images ranked [⌊β·N_c⌋, ⌊β·N_c⌋ + IPC) hardest-first by C-score) trains a fresh network, tested
once at the end; random subsets of the same size give the dashed baselines. Every (ratio, β, run)
writes its own results file, so an interrupted sweep resumes where it stopped and the figure draws
whatever is there.

The training length is a fixed number of SGD steps for every ratio (SelMatch's scripts keep the
step count about constant: epochs 1000 × 5 % / ratio); epochs = round(steps·batch / subset size).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from .batched import use_batched
from .data import Dataset, normalize
from .evaluate import SelMatchEvalConfig, evaluate_selmatch
from .results import StaleResultError, load_result, save_result
from .scores import Scores, load_published_scores
from .selection import beta_grid, random_indices, window_indices
from .train import default_device, progress

__all__ = ["SweepConfig", "SWEEPS", "sweep_config", "sweep_points", "run_sweep", "load_sweep",
           "run_point", "run_point_runs", "summarise", "verdict"]

NAME = "selmatch_fig3"


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


def sweep_config(profile: str) -> SweepConfig:
    if profile not in SWEEPS:
        raise ValueError(f"unknown profile {profile!r}; choose one of {list(SWEEPS)}")
    return SWEEPS[profile]


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
    return NAME if config.train_per_class is None else f"{NAME}_u{config.train_per_class}"


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


def _save_point(config: SweepConfig, profile: str, ratio: float, beta, run: int, data, idx,
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
    return save_result(_point_name(config, ratio, beta, run), profile, data_out,
                       _point_config(config, ratio, beta, run), [config.seed + run],
                       wall_time_s, device, arrays=arrays)


def run_point(dataset: Dataset, config: SweepConfig, profile: str, ratio: float, beta, run: int,
              data=None, device=None):
    """Train and test one network of the sweep; write and return its results path."""
    data = data or _data(dataset, config)
    idx, x, xt, evc = _point_setup(dataset, config, ratio, beta, run, data)
    train, test, _ = data
    res = evaluate_selmatch(x, train.labels[idx], xt, test.labels, config=evc, ratio=ratio,
                            num_classes=dataset.num_classes, device=device, batched=False)
    return _save_point(config, profile, ratio, beta, run, data, idx, res, 0, res.wall_time_s,
                       device)


def run_point_runs(dataset: Dataset, config: SweepConfig, profile: str, ratio: float, beta: float,
                   runs: list[int], data=None, device=None) -> list:
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


def _is_current(profile: str, config: SweepConfig, ratio, beta, run) -> bool:
    try:
        return load_result(_point_name(config, ratio, beta, run), profile, missing_ok=True,
                           expect_config=_point_config(config, ratio, beta, run)) is not None
    except StaleResultError:
        return False          # made from another config: recompute it


def _groups(points: list, stack: bool) -> list[list]:
    """The points in order, as groups to train together: the runs of one window point when
    ``stack`` (random points, whose subsets differ per run, stay alone), else one per group."""
    if not stack:
        return [[p] for p in points]
    groups, where = [], {}
    for ratio, beta, run in points:
        key = (ratio, beta)
        if beta is not None and key in where and groups[where[key]][-1][2] == run - 1:
            groups[where[key]].append((ratio, beta, run))
            continue
        where[key] = len(groups)
        groups.append([(ratio, beta, run)])
    return groups


def run_sweep(dataset: Dataset, profile: str, device=None, config: SweepConfig | None = None,
              shard: tuple[int, int] = (0, 1), reverse: bool = False,
              batched: bool | None = None):
    """Run every missing point of the profile's sweep (existing, current results are kept).

    ``shard=(k, n)`` runs only the points whose position in :func:`sweep_points` is k mod n, so n
    processes (e.g. one per CPU core) can share a sweep without running a point twice. Each point
    is checked again just before it runs, so two processes can also share one sweep from opposite
    ends (``reverse=True`` for the second): they meet in the middle. ``batched`` trains the runs
    of one window point stacked (:func:`run_point_runs`; None: ddbook.batched.use_batched); it
    is an execution detail, absent from the results' config.
    Returns the number of networks this call trained.
    """
    config = config or sweep_config(profile)
    k, n = shard
    if not 0 <= k < n:
        raise ValueError(f"shard must be (k, n) with 0 <= k < n, got {shard}")
    data = _data(dataset, config)
    todo = [p for i, p in enumerate(sweep_points(config))
            if i % n == k and not _is_current(profile, config, *p)]
    stack = use_batched(batched, config.network, config.width, None, config.runs,
                        torch.device(device) if device is not None else default_device())
    groups = _groups(todo, stack)
    trained = 0
    for group in progress(groups[::-1] if reverse else groups, desc="sliding window"):
        group = sorted(p for p in group if not _is_current(profile, config, *p))  # others' work
        runs = [p[2] for p in group]
        if len(group) >= 2 and runs == list(range(runs[0], runs[0] + len(runs))):
            run_point_runs(dataset, config, profile, group[0][0], group[0][1], runs, data, device)
        else:
            for ratio, beta, run in group:
                run_point(dataset, config, profile, ratio, beta, run, data, device)
        trained += len(group)
    return trained


def load_sweep(profile: str, config: SweepConfig | None = None):
    """The sweep's results as a DataFrame (ratio, beta, run, accuracy, ...), plus the missing points.

    A results file made from another configuration raises ``StaleResultError`` (never drawn).
    """
    import pandas as pd

    config = config or sweep_config(profile)
    rows, missing = [], []
    for ratio, beta, run in sweep_points(config):
        r = load_result(_point_name(config, ratio, beta, run), profile, missing_ok=True,
                        expect_config=_point_config(config, ratio, beta, run))
        if r is None:
            missing.append((ratio, beta, run))
            continue
        rows.append({"ratio": ratio, "beta": beta, "run": run, **r.data,
                     "wall_time_s": r.provenance["wall_time_s"], "sha": r.provenance["sha"]})
    columns = ["ratio", "beta", "run", "accuracy", "ipc", "epochs", "steps", "mean_score"]
    return pd.DataFrame(rows, columns=None if rows else columns), missing


def summarise(table) -> dict:
    """Per ratio: the best β (by mean accuracy over runs), its mean and std, the random mean,
    the accuracies at the grid's ends (the hardest and easiest windows), and the noise: the
    run-to-run std pooled over every point of the ratio with two or more runs (NaN with one run),
    and from it the standard error of (best window − random)."""
    out = {}
    for ratio in sorted(table["ratio"].unique()):
        t = table[table["ratio"] == ratio]
        win = t[t["beta"].notna()].groupby("beta")["accuracy"].agg(["mean", "std", "count"])
        rnd = t[t["beta"].isna()]["accuracy"]
        if not len(win):
            continue
        best = float(win["mean"].idxmax())
        groups = [g["accuracy"] for _, g in t.groupby(t["beta"].fillna(-1.0))]
        dof = sum(len(g) - 1 for g in groups)
        pooled = math.sqrt(sum(((g - g.mean()) ** 2).sum() for g in groups) / dof) if dof \
            else math.nan
        n_best, n_rnd = int(win["count"][best]), len(rnd)
        out[float(ratio)] = {
            "best_beta": best, "best_mean": float(win["mean"][best]),
            "best_std": float(win["std"].fillna(0.0)[best]),
            "random_mean": float(rnd.mean()) if n_rnd else math.nan,
            "hardest_mean": float(win["mean"].iloc[0]), "easiest_mean": float(win["mean"].iloc[-1]),
            "betas": [float(b) for b in win.index], "n_runs": int(t["run"].nunique()),
            "pooled_std": pooled,
            "margin_se": pooled * math.sqrt(1 / n_best + 1 / n_rnd) if n_rnd else math.nan}
    return out


def verdict(summary: dict) -> list[str]:
    """Plain statements testing the paper's three claims against ``summarise``'s output."""
    if not summary:
        return ["no results to judge"]
    lines = []
    for ratio, s in summary.items():
        interior = s["betas"][0] < s["best_beta"] < s["betas"][-1]
        beats = s["best_mean"] > s["random_mean"]
        margin, se = s["best_mean"] - s["random_mean"], s.get("margin_se", math.nan)
        noise = (f", {margin / se:.1f} standard errors (run-to-run std {100 * s['pooled_std']:.1f})"
                 if se > 0 else ", noise unknown: one run per point")
        lines.append(f"{ratio:.0%}: best β = {s['best_beta']:.1f} "
                     f"({'interior' if interior else 'at the end of the grid'}), "
                     f"{100 * s['best_mean']:.1f} % vs random {100 * s['random_mean']:.1f} % "
                     f"({'beats random' if beats else 'does not beat random'}: "
                     f"{100 * margin:+.1f} points{noise})")
    betas = [s["best_beta"] for s in summary.values()]
    monotone = all(b2 <= b1 for b1, b2 in zip(betas, betas[1:]))
    lines.append(f"best β by ratio {betas}: "
                 + ("moves toward harder windows (or stays) as the subset grows — as the paper says"
                    if monotone else "does not move monotonically toward harder windows"))
    n_interior = sum(s["betas"][0] < s["best_beta"] < s["betas"][-1] for s in summary.values())
    n_beats = sum(s["best_mean"] > s["random_mean"] for s in summary.values())
    n_clear = sum(s["best_mean"] - s["random_mean"] > 2 * s.get("margin_se", math.inf)
                  for s in summary.values())
    lines.append(f"overall: interior optimum at {n_interior}/{len(summary)} ratios, best window "
                 f"beats random at {n_beats}/{len(summary)} (by more than two standard errors at "
                 f"{n_clear}/{len(summary)}; the best of many windows is an optimistic pick), trend "
                 f"{'consistent' if monotone else 'inconsistent'} with the paper")
    return lines
