"""DASM, the sequential difficulty-aligned driver on IDC gradient matching: OUR READING of a
draft.

Only the draft's abstract and introduction exist (papers.md §11): it splits the synthetic set into
segments distilled one after another, easy to hard, each against a different part of the real
data chosen by a model trained on the segments distilled before, on IDC gradient matching with
multi-formation and DSA. No method section or code is available, so everything below the first
sentence is **ours** (papers.md §11, "Our reading"):

1. the per-class budget IPC is split into K segments of (nearly) equal size, earlier segments
   taking the remainder (:func:`segment_sizes`);
2. segment 1 is distilled by IDC gradient matching (:func:`ddbook.gradmatch.distill_gm`) against the
   whole real training set (the *universe*);
3. after segment k, a network is trained on the union of segments 1..k (decoded, as evaluation
   sees them) and scores every real training example by its cross-entropy loss
   (:func:`score_examples`); segment k + 1 is matched against the examples it finds hardest:
   per class, the ``hard_fraction`` of the class with the highest loss (:func:`select_hardest`).
   Earlier segments are frozen: they are never handed to an optimiser again. The matching network
   still trains on the whole universe (only the real batches it is matched against change), so
   its trajectory is the one segment 1 saw;
4. the union is evaluated exactly as the other methods are.

Options and the reasons for their defaults (all ours):

- ``segments`` K = 2: the smallest split that tests the idea, and every segment keeps half the
  budget (at IPC 10, 5 stored images = 20 decoded ones per class); the draft names no K.
- ``hard_fraction`` = 0.5: "the upper half by loss" (papers.md §11); per class, so every class
  keeps real examples to match (the matching is per class) and no class is emptied.
- ``score``: the distillation network (ConvNet-3, instance norm) trained with IDC's evaluation
  optimiser (SGD 0.01, momentum 0.9, weight decay 5e-4, lr × 0.2 at 2/3 and 5/6 of training) with
  DSA for ``steps`` steps of 128 — "a model trained on all previously distilled segments" in the
  family whose gradients are matched; per-example loss read in eval mode without augmentation.
- each segment is initialised with real mosaics drawn from the real examples it is matched
  against, and its image lr follows IDC's rule at the segment's size (``idc_lr_img``).
- ``split_iterations`` True: the run's outer iterations are shared by the segments (in proportion
  to their sizes), so DASM and plain gradient matching cost about the same; False gives every
  segment the full count.

Resumable: segment k's gradient-matching checkpoints live in ``<folder>/seg<k>/``; a finished
segment is kept as ``seg<k>/segment.pt`` and its scores as ``seg<k>/scores.pt``, so a rerun skips
what is done and resumes the segment in progress at its last checkpoint.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from .gradmatch import GMConfig, GMLoop, decode, distill_gm, mosaic_init, normalizer
from .networks import get_network
from .paths import save_atomic
from .train import default_device, predict, train_epoch

__all__ = ["ScoreConfig", "DASMConfig", "DASMResult", "segment_sizes", "select_hardest",
           "score_examples", "initial_segment", "distill_dasm"]


@dataclass(frozen=True)
class ScoreConfig:
    """The scoring network trained on the union distilled so far (ours; module docstring)."""
    network: str = "ConvNet"          # the distillation family (ConvNet-3, instance norm)
    width: int | None = None          # ConvNet width (None: the name's default)
    depth: int | None = None
    steps: int = 500                  # SGD steps
    batch_size: int = 128
    lr: float = 0.01                  # IDC evaluation: SGD 0.01, momentum 0.9, wd 5e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: str = "dsa"
    seed: int = 0


@dataclass(frozen=True)
class DASMConfig:
    """The sequential driver's options (ours; reasons in the module docstring)."""
    segments: int = 2                 # K
    hard_fraction: float = 0.5        # per class, share of the real examples segments 2..K match
    score: ScoreConfig = ScoreConfig()
    split_iterations: bool = True     # share the outer iterations among the segments

    def __post_init__(self):
        if self.segments < 1 or not 0 < self.hard_fraction <= 1:
            raise ValueError(f"need segments >= 1 and hard_fraction in (0, 1], got "
                             f"{self.segments}, {self.hard_fraction}")


@dataclass(frozen=True, eq=False)
class DASMResult:
    images: torch.Tensor              # (K_total, C, H, W) stored pixels of every segment, in order
    labels: torch.Tensor              # (n,) int64
    segment: torch.Tensor             # (n,) int64: the segment (0-based) each image belongs to
    segments: list                    # per segment: ipc, iterations, pool size, losses, history
    finished: bool


def segment_sizes(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal positive sizes, larger ones first."""
    if parts < 1 or total < parts:
        raise ValueError(f"cannot split {total} into {parts} non-empty segments; use at most "
                         f"{total} segments")
    return [total // parts + (i < total % parts) for i in range(parts)]


def select_hardest(losses: torch.Tensor, labels: torch.Tensor, fraction: float) -> torch.Tensor:
    """Sorted indices of the ceil(fraction x n_c) highest-loss examples of every class c.

    Ties go to the lower index (a stable sort). Our selection rule (module docstring).
    """
    if losses.shape != labels.shape:
        raise ValueError(f"losses {tuple(losses.shape)} and labels {tuple(labels.shape)} differ")
    picks = []
    for c in labels.unique().tolist():
        idx = torch.nonzero(labels == c).flatten()
        order = torch.sort(-losses[idx].double(), stable=True).indices
        picks.append(idx[order[:math.ceil(fraction * len(idx))]])
    return torch.cat(picks).sort().values


def score_examples(images: torch.Tensor, labels: torch.Tensor, factor: int, real_x: torch.Tensor,
                   real_y: torch.Tensor, mean, std, config: ScoreConfig = ScoreConfig(),
                   num_classes: int | None = None, device=None) -> torch.Tensor:
    """Per-example cross-entropy (N,) of ``real_x`` (pixels in [0, 1]) under a network trained on
    the decoded stored ``images`` (pixels) with ``labels``; our scoring step (module docstring)."""
    device = torch.device(device) if device is not None else default_device()
    num_classes = num_classes or int(real_y.max()) + 1
    norm = normalizer(mean, std)
    x, y = decode(images.float().cpu(), labels.cpu(), factor)
    x, y = norm(x).to(device), y.to(device)
    model = get_network(config.network, num_classes, tuple(x.shape[-2:]), x.shape[1],
                        config.width, config.depth, seed=config.seed, device=device)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    epochs = max(1, round(config.steps * config.batch_size / len(x)))
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [2 * epochs // 3, 5 * epochs // 6], 0.2)
    gen = torch.Generator().manual_seed(config.seed + 2**32)
    for _ in range(epochs):
        train_epoch(model, x, y, opt, config.batch_size, gen, config.augment, scheduler=sched)
    logits = predict(model, norm(real_x.float()).to(device))
    return F.cross_entropy(logits, real_y.to(device), reduction="none").cpu()


def initial_segment(real_x: torch.Tensor, real_y: torch.Tensor, pool: torch.Tensor, ipc: int,
                    factor: int, classes, generator: torch.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(stored (K ipc, C, H, W), labels): per class, mosaics of ipc x f^2 random pool images.

    Source: IDC ``init='mix'`` (papers.md §5; factor 1: real images). Drawn without replacement
    while the class's pool lasts, then with (a pool smaller than ipc x f^2 is reused).
    """
    stored, labels = [], []
    pool_y = real_y[pool]
    for c in classes:
        idx = pool[pool_y == c]
        need = ipc * factor * factor
        if len(idx) == 0:
            raise ValueError(f"class {c} has no real examples in the pool to initialise from")
        reps = math.ceil(need / len(idx))
        order = torch.cat([torch.randperm(len(idx), generator=generator) for _ in range(reps)])
        stored.append(mosaic_init(real_x[idx[order[:need]]].float(), factor))
        labels.append(torch.full((ipc,), c, dtype=torch.long))
    return torch.cat(stored), torch.cat(labels)


def _segment_iterations(loop: GMLoop, sizes: list[int], split: bool) -> list[int]:
    if not split:
        return [loop.iterations] * len(sizes)
    return [max(1, round(loop.iterations * s / sum(sizes))) for s in sizes]


def distill_dasm(real_x: torch.Tensor, real_y: torch.Tensor, ipc: int,
                 gm: GMConfig = GMConfig(), loop: GMLoop = GMLoop(),
                 config: DASMConfig = DASMConfig(), *, mean=(0.0, 0.0, 0.0),
                 std=(1.0, 1.0, 1.0), num_classes: int | None = None,
                 folder: str | os.PathLike | None = None, device=None,
                 stop_after: int | None = None) -> DASMResult:
    """Distil ``ipc`` stored images per class in ``config.segments`` segments (our reading of
    DASM, module docstring) from the universe ``real_x`` (N, C, H, W) pixels in [0, 1], ``real_y``.

    Segment k runs ``distill_gm`` with seed ``loop.seed + 1000 k`` on its share of the outer
    iterations. ``stop_after=t`` stops after t outer iterations counted over the whole run (as if
    killed); with ``folder`` a rerun resumes there. Used in: the DASM figure (figures/dasm.py).
    """
    num_classes = num_classes or int(real_y.max()) + 1
    real_y = real_y.cpu()
    classes = sorted(real_y.unique().tolist())
    sizes = segment_sizes(ipc, config.segments)
    iters = _segment_iterations(loop, sizes, config.split_iterations)
    folder = Path(folder) if folder is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        _check_folder(folder, {"ipc": ipc, "gm": asdict(gm), "loop": asdict(loop),
                               "dasm": asdict(config), "n_real": len(real_x)})
    pool = torch.arange(len(real_x))
    done_images, done_labels, info, start = [], [], [], 0
    for k, (size, its) in enumerate(zip(sizes, iters)):
        seg_dir = None if folder is None else folder / f"seg{k}"
        kept = _load_segment(seg_dir)
        if kept is None:
            gen = torch.Generator().manual_seed(loop.seed + 1000 * k + 17)
            init, labels = initial_segment(real_x, real_y, pool, size, gm.factor, classes, gen)
            local_stop = None if stop_after is None else stop_after - start
            if local_stop is not None and local_stop <= 0:
                return _result(done_images, done_labels, info, finished=False)
            res = distill_gm(init, labels, real_x, real_y, gm,
                             replace(loop, iterations=its, seed=loop.seed + 1000 * k),
                             mean=mean, std=std, match_pool=None if k == 0 else pool,
                             num_classes=num_classes, folder=seg_dir, device=device,
                             stop_after=local_stop)
            if not res.finished:
                return _result(done_images, done_labels, info, finished=False)
            kept = {"images": res.images, "labels": res.labels, "pool_size": len(pool),
                    "ipc": size, "iterations": its, "history": res.history}
            if seg_dir is not None:
                save_atomic(seg_dir / "segment.pt", {**kept, "history": json.dumps(res.history)})
        done_images.append(kept["images"])
        done_labels.append(kept["labels"])
        info.append({k2: v for k2, v in kept.items() if k2 not in ("images", "labels")})
        start += its
        if k + 1 < len(sizes):
            pool, seg_info = _next_pool(torch.cat(done_images), torch.cat(done_labels), real_x,
                                        real_y, gm.factor, mean, std, config, k, num_classes,
                                        seg_dir, device)
            info[-1].update(seg_info)
    return _result(done_images, done_labels, info, finished=True)


def _next_pool(images, labels, real_x, real_y, factor, mean, std, config: DASMConfig, k: int,
               num_classes: int, seg_dir: Path | None, device):
    """(pool for segment k + 1, a record): score by a network on segments 0..k; the hardest."""
    path = None if seg_dir is None else seg_dir / "scores.pt"
    if path is not None and path.exists():
        losses = torch.load(path, map_location="cpu", weights_only=True)["losses"]
    else:
        score = replace(config.score, seed=config.score.seed + k)
        losses = score_examples(images, labels, factor, real_x, real_y, mean, std, score,
                                num_classes, device)
        if path is not None:
            save_atomic(path, {"losses": losses})
    pool = select_hardest(losses, real_y, config.hard_fraction)
    return pool, {"score_mean_loss_all": float(losses.mean()),
                  "score_mean_loss_selected": float(losses[pool].mean()),
                  "next_pool_size": len(pool)}


def _load_segment(seg_dir: Path | None) -> dict | None:
    if seg_dir is None or not (seg_dir / "segment.pt").exists():
        return None
    blob = torch.load(seg_dir / "segment.pt", map_location="cpu", weights_only=True)
    return {**blob, "history": json.loads(blob["history"])}


def _check_folder(folder: Path, record: dict) -> None:
    """Refuse a folder holding another run's segments (the per-segment checkpoints check more)."""
    path = folder / "dasm.json"
    text = json.dumps(record, sort_keys=True)
    if path.exists() and path.read_text() != text:
        raise ValueError(f"{folder} holds a DASM run with another config; use another folder or "
                         f"delete it to start afresh")
    path.write_text(text)


def _result(images: list, labels: list, info: list, finished: bool) -> DASMResult:
    if not images:
        return DASMResult(torch.empty(0), torch.empty(0, dtype=torch.long),
                          torch.empty(0, dtype=torch.long), info, finished)
    seg = torch.cat([torch.full((len(x),), k, dtype=torch.long) for k, x in enumerate(images)])
    return DASMResult(torch.cat(images), torch.cat(labels), seg, info, finished)
