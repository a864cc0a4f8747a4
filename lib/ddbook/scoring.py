"""Training runs that produce our own difficulty scores (EL2N and forgetting) at a profile's scale.

One run trains a fresh network on the training images and, after every epoch, classifies every
training image once (eval mode, no augmentation). Those per-epoch correctness vectors are the
"presentations" for forgetting events, and the logits after epoch ``el2n_epoch`` give EL2N.
Toneva et al. record correctness of each example in the mini-batch that trains on it instead;
we test the whole set once per epoch (one extra forward pass) so both scores come from one loop,
and say so on the page that shows them.

Runs are independent and each is cached as soon as it finishes, so an interrupted computation
resumes at the first unfinished run.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from . import paths
from .data import Dataset, normalize
from .difficulty import el2n_scores, forgetting_scores
from .networks import get_network
from .train import default_device, predict, progress, train_epoch

__all__ = ["ScoreRunConfig", "SCORE_RUNS", "score_run_config", "OurScores", "compute_scores",
           "spearman_per_class"]


@dataclass(frozen=True)
class ScoreRunConfig:
    network: str = "ConvNetBN"    # get_network name
    width: int = 32               # ConvNet width
    train_per_class: int | None = None  # training images per class (None: all)
    runs: int = 3                 # independent runs averaged (data diet recommends ≥ 10)
    epochs: int = 6               # epochs per run (= presentations for forgetting)
    el2n_epoch: int = 2           # EL2N read after this epoch ("early in training")
    batch_size: int = 128
    lr: float = 0.05              # SGD, constant
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: str = "simple"       # crop + flip
    seed: int = 0                 # run r: network seed + r, shuffle generator seed + 1000 + r


# Per profile. paper: ResNet-18 for 200 epochs as data diet does is out of reach even on one GPU
# within budget; 'paper' here means the largest setting we name, not the authors' own.
SCORE_RUNS = {
    "ci": ScoreRunConfig(width=16, train_per_class=20, runs=2, epochs=3, el2n_epoch=1),
    "quick": ScoreRunConfig(),
    "gpu": ScoreRunConfig(network="ConvNet", width=128, runs=8, epochs=20, el2n_epoch=4),
    "paper": ScoreRunConfig(network="ResNet18BN", runs=10, epochs=200, el2n_epoch=20, lr=0.1),
}


def score_run_config(profile: str) -> ScoreRunConfig:
    if profile not in SCORE_RUNS:
        raise ValueError(f"unknown profile {profile!r}; choose one of {list(SCORE_RUNS)}")
    return SCORE_RUNS[profile]


@dataclass(frozen=True, eq=False)
class OurScores:
    indices: torch.Tensor         # (n,) indices into dataset.train of the scored images
    el2n: torch.Tensor            # (n,) float64, high = hard
    forgetting: torch.Tensor      # (n,) float64, high = hard
    train_accuracy: list          # final training-set accuracy of each run
    seconds_per_run: list


def _run_file(config: ScoreRunConfig, dataset: Dataset, r: int):
    key = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:12]
    folder = paths.cache_dir() / "score-runs" / f"{dataset.name}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"run{r}.pt"


def _one_run(config: ScoreRunConfig, x: torch.Tensor, y: torch.Tensor, num_classes: int, r: int,
             device) -> dict:
    model = get_network(config.network, num_classes, width=config.width, seed=config.seed + r,
                        device=device)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed + 1000 + r)
    history, el2n_logits = [], None
    for epoch in progress(range(1, config.epochs + 1), desc=f"score run {r}"):
        train_epoch(model, x, y, opt, config.batch_size, gen, augment_mode=config.augment)
        logits = predict(model, x)
        history.append((logits.argmax(1) == y).cpu())
        if epoch == config.el2n_epoch:
            el2n_logits = logits.float().cpu()
    return {"history": torch.stack(history), "el2n_logits": el2n_logits}


def compute_scores(dataset: Dataset, config: ScoreRunConfig, device=None) -> OurScores:
    """EL2N and forgetting for the training images (or a class-balanced subset), over runs.

    Used in: the difficulty-scores notebook, ``python -m ddbook scores``.
    """
    if not 1 <= config.el2n_epoch <= config.epochs:
        raise ValueError(f"el2n_epoch must lie in [1, epochs={config.epochs}], got {config.el2n_epoch}")
    device = device or default_device()
    split = dataset.train
    if config.train_per_class is not None:
        split_idx = torch.cat([split.class_indices(c)[:config.train_per_class]
                               for c in range(split.num_classes)])
    else:
        split_idx = torch.arange(len(split))
    x = normalize(split.images[split_idx], dataset.mean, dataset.std).to(device)
    y = split.labels[split_idx].to(device)
    runs, seconds = [], []
    for r in range(config.runs):
        file = _run_file(config, dataset, r)
        if file.exists():
            blob = torch.load(file, weights_only=True)
        else:
            t0 = time.perf_counter()
            blob = _one_run(config, x, y, dataset.num_classes, r, device)
            blob["seconds"] = torch.tensor(time.perf_counter() - t0)
            paths.save_atomic(file, blob)
        runs.append(blob)
        seconds.append(float(blob["seconds"]))
    labels = y.cpu()
    return OurScores(
        indices=split_idx,
        el2n=el2n_scores([b["el2n_logits"] for b in runs], labels),
        forgetting=forgetting_scores([b["history"] for b in runs]).double(),
        train_accuracy=[float(b["history"][-1].float().mean()) for b in runs],
        seconds_per_run=seconds)


def spearman_per_class(ours: torch.Tensor, reference: torch.Tensor, labels: torch.Tensor) -> dict:
    """Spearman ρ between two score vectors inside each class (scipy)."""
    from scipy.stats import spearmanr

    out = {}
    for c in labels.unique().tolist():
        m = (labels == c).numpy()
        out[int(c)] = float(spearmanr(np.asarray(ours)[m], np.asarray(reference)[m]).statistic)
    return out
