"""The network whose penultimate layer defines "feature space" for coverage, herding and t-SNE.

One ConvNet trained on the full training set (a class-balanced subset at ``ci``) at the profile's
scale, cached on disk by its config so every figure that embeds images shares it. Its margins on
the test set also define the easy / hard test groups (:mod:`ddbook.coverage`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch

from . import paths
from .data import Dataset, normalize
from .networks import get_network
from .train import accuracy, default_device, progress, train_epoch

__all__ = ["FeatureNetConfig", "FEATURE_NETS", "feature_net_config", "feature_network"]


@dataclass(frozen=True)
class FeatureNetConfig:
    network: str = "ConvNetBN"    # get_network name (papers.md §9 suggests ResNet-18 at full scale)
    width: int = 32
    train_per_class: int | None = None  # None: all training images
    epochs: int = 12
    batch_size: int = 128
    lr: float = 0.05              # SGD, cosine to 0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: str = "simple"       # crop + flip
    seed: int = 0


FEATURE_NETS = {
    "ci": FeatureNetConfig(width=16, train_per_class=50, epochs=2),
    "quick": FeatureNetConfig(),
    "gpu": FeatureNetConfig(network="ConvNet", width=128, epochs=30),
    "paper": FeatureNetConfig(network="ResNet18BN", width=None, epochs=200, lr=0.1),
}


def feature_net_config(profile: str) -> FeatureNetConfig:
    if profile not in FEATURE_NETS:
        raise ValueError(f"unknown profile {profile!r}; choose one of {list(FEATURE_NETS)}")
    return FEATURE_NETS[profile]


def feature_network(dataset: Dataset, config: FeatureNetConfig, device=None):
    """The trained feature network (cached) and its test accuracy: ``(model, test_accuracy)``."""
    device = device or default_device()
    key = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:12]
    file = paths.cache_dir() / f"feature-net-{dataset.name}-{key}.pt"
    model = get_network(config.network, dataset.num_classes, width=config.width, seed=config.seed,
                        device=device)
    x_test = normalize(dataset.test.images, dataset.mean, dataset.std).to(device)
    y_test = dataset.test.labels.to(device)
    # one process trains it; another that needs it meanwhile waits, then loads it
    with paths.FileLock(file.with_suffix(".lock"), wait=True):
        return _trained(model, dataset, config, file, x_test, y_test, device)


def _trained(model, dataset, config, file, x_test, y_test, device):
    if file.exists():
        blob = torch.load(file, weights_only=True, map_location=device)
        model.load_state_dict(blob["state"])
        return model, float(blob["test_accuracy"])
    split = dataset.train
    if config.train_per_class is not None:
        split = split.take_per_class(config.train_per_class, seed=config.seed)
    x = normalize(split.images, dataset.mean, dataset.std).to(device)
    y = split.labels.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.epochs)
    gen = torch.Generator().manual_seed(config.seed + 1)
    ckpt, start = file.with_suffix(".ckpt"), 0
    if ckpt.exists():  # resume an interrupted training at the last finished epoch
        blob = torch.load(ckpt, weights_only=True, map_location=device)
        model.load_state_dict(blob["state"]), opt.load_state_dict(blob["opt"])
        sched.load_state_dict(blob["sched"]), gen.set_state(blob["gen"])
        start = int(blob["epoch"])
    for epoch in progress(range(start, config.epochs), desc="feature network"):
        train_epoch(model, x, y, opt, config.batch_size, gen, config.augment, scheduler=sched)
        paths.save_atomic(ckpt, {"state": model.state_dict(), "opt": opt.state_dict(),
                     "sched": sched.state_dict(), "gen": gen.get_state(), "epoch": epoch + 1})
    acc = accuracy(model, x_test, y_test)
    paths.save_atomic(file, {"state": model.state_dict(), "test_accuracy": acc,
                             "config": asdict(config)})
    ckpt.unlink(missing_ok=True)
    return model, acc


