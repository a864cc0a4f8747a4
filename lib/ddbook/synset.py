"""The synthetic set: images, labels, the learned step size and SelMatch's frozen/updated split;
its initialisations; its file format; and the reference repositories' released files.

A set holds ``n`` images in a fixed order. SelMatch's sets (papers.md §4.3) are stored as the
reference stores them, all distilled images first, then all selected ones, each part class-major;
``is_selected`` marks the frozen real images, so the split is known downstream (evaluation applies
crop + flip to them and DSA to the rest).

File format (:func:`save_synset`), one ``torch.save`` file of plain tensors and one JSON string,
readable with ``torch.load(path, weights_only=True)``; nothing pickled but tensors:

    format       "ddbook-synset"       version  1
    images       float32 (n, C, H, W)  normalised as the student saw them (ZCA-whitened when the
                                       distillation used ZCA; the config in meta says which)
    labels       int64 (n,) hard class indices, or float32 (n, K) soft-label logits (softmax, T = 1)
    classes      int64 (n,)            the class each image was initialised from
    is_selected  bool (n,)             True: a frozen real image (SelMatch D_select)
    syn_lr       float64 ()            the learned step size alpha (the reference's lr_best.pt)
    meta         str                   JSON: init, source indices, distillation config, iteration

The reference repositories (MTT, DATM, SelMatch) save ``images_best.pt`` (a tensor (n, C, H, W)),
``labels_best.pt`` (int64 (n,), or DATM's float (n, K) logits) and ``lr_best.pt`` (a 0-d tensor);
:func:`load_reference` reads them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from . import paths
from .experts import ExpertBuffer
from .networks import functional_forward, get_network

__all__ = ["SyntheticSet", "make_synset", "from_indices", "per_class_random", "noise_images",
           "split_per_class", "correct_indices", "expert_network", "expert_logits",
           "expert_soft_labels", "save_synset", "load_synset", "load_reference", "display_uint8",
           "FORMAT"]

FORMAT = "ddbook-synset"
VERSION = 1


@dataclass(frozen=True, eq=False)
class SyntheticSet:
    """A synthetic set; ``n`` images, class-major within each part (distilled, then selected)."""
    images: torch.Tensor        # (n, C, H, W) float32, normalised (and ZCA-whitened if used)
    labels: torch.Tensor        # (n,) int64 hard, or (n, K) float32 learnable soft-label logits
    classes: torch.Tensor       # (n,) int64: the class each image stands for
    is_selected: torch.Tensor   # (n,) bool: True = frozen real image (SelMatch D_select)
    syn_lr: float               # learned step size alpha (MTT syn_lr; evaluation lr)
    meta: dict = field(default_factory=dict)  # JSON-able: how the set was made

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def soft(self) -> bool:
        return self.labels.is_floating_point()

    @property
    def num_selected(self) -> int:
        return int(self.is_selected.sum())

    def to(self, device) -> "SyntheticSet":
        return replace(self, images=self.images.to(device), labels=self.labels.to(device),
                       classes=self.classes.to(device), is_selected=self.is_selected.to(device))

    def detached(self) -> "SyntheticSet":
        """A copy with detached, cloned tensors (safe to keep while distillation goes on)."""
        return replace(self, images=self.images.detach().clone(),
                       labels=self.labels.detach().clone(), classes=self.classes.clone(),
                       is_selected=self.is_selected.clone(), meta=dict(self.meta))


def make_synset(images: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor | None = None,
                is_selected: torch.Tensor | None = None, syn_lr: float = 0.01,
                meta: dict | None = None) -> SyntheticSet:
    """A validated SyntheticSet; ``classes`` default to the hard labels (or soft labels' argmax)."""
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"images must be float (n, C, H, W), got {images.dtype} "
                         f"{tuple(images.shape)}")
    n = images.shape[0]
    soft = labels.is_floating_point()
    if labels.shape[0] != n or labels.dim() != (2 if soft else 1):
        raise ValueError(f"labels must be int64 ({n},) or float logits ({n}, K) for {n} images, "
                         f"got {labels.dtype} {tuple(labels.shape)}")
    if classes is None:
        classes = labels.argmax(1) if soft else labels
    if is_selected is None:
        is_selected = torch.zeros(n, dtype=torch.bool, device=images.device)
    if classes.shape != (n,) or is_selected.shape != (n,) or is_selected.dtype != torch.bool:
        raise ValueError(f"classes must be ({n},) and is_selected bool ({n},), got "
                         f"{tuple(classes.shape)} and {is_selected.dtype} "
                         f"{tuple(is_selected.shape)}")
    syn_lr = float(syn_lr)
    return SyntheticSet(images, labels, classes.long(), is_selected, syn_lr, dict(meta or {}))


def from_indices(images: torch.Tensor, labels: torch.Tensor, distill: torch.Tensor,
                 select: torch.Tensor | None = None, syn_lr: float = 0.01,
                 meta: dict | None = None) -> SyntheticSet:
    """A set of real images: ``distill`` (updated) first, then ``select`` (frozen), hard labels.

    Source: MTT/DATM ``pix_init real`` (papers.md §2.2, §3.2) with no selected part; SelMatch's
    storage order ``[distilled; selected]`` (§4.3). ``images`` (N, C, H, W), ``labels`` (N,) real.
    Used in: presets.run_preset (every initialisation from real images).
    """
    select = distill.new_zeros(0) if select is None else select
    idx = torch.cat([distill, select]).long()
    mask = torch.cat([torch.zeros(len(distill), dtype=torch.bool),
                      torch.ones(len(select), dtype=torch.bool)])
    meta = {**(meta or {}), "source_indices": idx.tolist()}
    dev = images.device
    return make_synset(images[idx.to(dev)].clone(), labels[idx.to(labels.device)].clone(),
                       is_selected=mask.to(dev), syn_lr=syn_lr, meta=meta)


def per_class_random(labels: torch.Tensor, ipc: int, generator: torch.Generator,
                     num_classes: int | None = None) -> torch.Tensor:
    """``ipc`` random indices per class, class-major (MTT ``pix_init real``, papers.md §2.2)."""
    labels = labels.cpu()
    num_classes = num_classes or int(labels.max()) + 1
    picks = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        if ipc > len(idx):
            raise ValueError(f"IPC {ipc} is larger than class {c}, which has {len(idx)} images")
        picks.append(idx[torch.randperm(len(idx), generator=generator)[:ipc]])
    return torch.cat(picks)


def noise_images(n: int, shape: tuple, generator: torch.Generator) -> torch.Tensor:
    """``(n, *shape)`` N(0, 1) pixels (MTT/DATM ``pix_init noise``)."""
    return torch.randn((n, *shape), generator=generator)


def split_per_class(indices: torch.Tensor, ipc: int, distill_fraction: float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(distill, select) from class-major ``indices`` of ``ipc`` per class: per class the first
    spc = ipc - floor(ipc * fraction) are selected (the harder part of a hardest-first window).

    Source: SelMatch ``distill.py`` partition (papers.md §4.3), also for ``--initialize random``.
    """
    cpc = int(ipc * distill_fraction + 1e-9)
    per_class = indices.view(-1, ipc)               # (K, ipc)
    return per_class[:, ipc - cpc:].reshape(-1), per_class[:, :ipc - cpc].reshape(-1)


def expert_network(buffer: ExpertBuffer, device=None) -> torch.nn.Module:
    """A network of the buffer's architecture (its parameters are overwritten by snapshots)."""
    data = buffer.meta["data"]
    c, h, w = data["image_shape"]
    cfg = buffer.config
    return get_network(cfg.network, data["num_classes"], (h, w), c, cfg.width, cfg.depth, seed=0,
                       device=device)


@torch.no_grad()
def expert_logits(buffer: ExpertBuffer, expert: int, images: torch.Tensor, epoch: int = -1,
                  chunk: int = 256, model: torch.nn.Module | None = None) -> torch.Tensor:
    """Logits ``(n, K)`` of expert ``expert`` at ``epoch`` (default: its last snapshot).

    Training-mode forward in chunks of ``chunk``: snapshots hold no BatchNorm running statistics
    (papers.md §1.6), so BN experts use batch statistics; instance norm is the same in both modes.
    Used in: correct_indices, expert_soft_labels.
    """
    model = model or expert_network(buffer, images.device)
    model.train()
    theta = buffer.snapshot(expert, epoch, images.device)
    return torch.cat([functional_forward(model, theta, images[i:i + chunk])
                      for i in range(0, len(images), chunk)])


def correct_indices(images: torch.Tensor, labels: torch.Tensor, ipc: int, buffer: ExpertBuffer,
                    generator: torch.Generator, chunk: int = 256) -> tuple[torch.Tensor, int]:
    """(indices class-major, number filled with misclassified images): DATM's init from images
    the expert classifies correctly.

    Source: DATM ``pix_init samples_predicted_correctly`` (papers.md §3.2): per class, scan a
    random permutation in chunks of 256 and keep the images expert 0 (last snapshot) predicts as
    the class; when the class runs out, rescan with the next expert. Where every expert is
    exhausted (tiny or poor experts), the rest is filled with the remaining images in permutation
    order and counted, where the reference would not terminate.
    Used in: presets.run_preset (init 'correct').
    """
    model = expert_network(buffer, images.device)
    experts = buffer.experts()
    picks, filled = [], 0
    for c in range(int(labels.max()) + 1):
        idx = torch.nonzero(labels.cpu() == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        chosen: list[int] = []
        for e in experts:
            for start in range(0, len(idx), chunk):
                part = [i for i in idx[start:start + chunk].tolist() if i not in chosen]
                if not part:
                    continue
                pred = expert_logits(buffer, e, images[part], model=model).argmax(1).cpu()
                chosen += [i for i, p in zip(part, pred.tolist()) if p == c][:ipc - len(chosen)]
                if len(chosen) == ipc:
                    break
            if len(chosen) == ipc:
                break
        rest = [i for i in idx.tolist() if i not in chosen][:ipc - len(chosen)]
        filled += len(rest)
        picks.append(torch.tensor(chosen + rest, dtype=torch.long))
    return torch.cat(picks), filled


def expert_soft_labels(buffer: ExpertBuffer, images: torch.Tensor, classes: torch.Tensor,
                       only_correct: bool = True, experts: list[int] | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(label logits (n, K), number of experts averaged per image (n,)): DATM's soft labels.

    Source: DATM ``distill/DATM.py`` (papers.md §3.2): the last-snapshot logits of every expert,
    averaged per image over the experts whose argmax is the image's class. An image no expert
    gets right takes the mean over all experts (its count is 0). ``only_correct=False``, one
    expert: DATM's ``pix_init real`` labels. Used in: presets.run_preset (soft labels).
    """
    model = expert_network(buffer, images.device)
    experts = buffer.experts() if experts is None else experts
    total = torch.zeros(len(images), model.classifier.out_features, device=images.device)
    every = torch.zeros_like(total)
    count = torch.zeros(len(images), device=images.device)
    classes = classes.to(images.device)
    for e in experts:
        logits = expert_logits(buffer, e, images, model=model)   # (n, K)
        ok = (logits.argmax(1) == classes) | (not only_correct)
        total += logits * ok[:, None]
        every += logits
        count += ok
    mean = torch.where(count[:, None] > 0, total / count.clamp_min(1)[:, None],
                       every / len(experts))
    return mean, count


def save_synset(path: str | os.PathLike, synset: SyntheticSet) -> Path:
    """Write ``synset`` to ``path`` in the documented format (atomically); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "version": VERSION,
            "images": synset.images.detach().float().cpu().contiguous(),
            "labels": synset.labels.detach().cpu().clone(),
            "classes": synset.classes.cpu().clone(),
            "is_selected": synset.is_selected.cpu().clone(),
            "syn_lr": torch.tensor(synset.syn_lr, dtype=torch.float64),
            "meta": json.dumps(synset.meta)}
    return paths.save_atomic(path, blob)


def load_synset(path: str | os.PathLike) -> SyntheticSet:
    """Read a file written by :func:`save_synset`."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a ddbook synthetic set (format {FORMAT!r}); for the "
                         f"reference repositories' images_best.pt use load_reference()")
    if blob["version"] > VERSION:
        raise ValueError(f"{path} has format version {blob['version']}; this library reads "
                         f"{VERSION}")
    return make_synset(blob["images"], blob["labels"], blob["classes"], blob["is_selected"],
                       float(blob["syn_lr"]), json.loads(blob["meta"]))


def _load_tensor(path) -> torch.Tensor:
    value = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(value, (list, tuple)) and value and \
            all(isinstance(v, torch.Tensor) for v in value):
        value = torch.cat(list(value))  # MTT Tiny IPC 50 comes as chunks (papers.md §7, issue #25)
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{path} holds a {type(value).__name__}, expected a tensor")
    return value.detach()


def load_reference(images_path: str | os.PathLike, labels_path: str | os.PathLike | None = None,
                   lr_path: str | os.PathLike | None = None, num_classes: int | None = None,
                   selected_per_class: int = 0, syn_lr: float | None = None) -> SyntheticSet:
    """A set from the reference repositories' images_best.pt / labels_best.pt / lr_best.pt files.

    Source: MTT/DATM/SelMatch ``distill.py`` (papers.md §2.2, §3.4, §4.3). Images are kept as
    saved (ZCA-whitened ones stay whitened: evaluate them with the train-fitted ZCA applied to
    the test set). Without a labels file the labels are class-major, ``n / num_classes`` per class
    (the reference's order). Float labels are DATM logits; their ``classes`` are the argmax.
    SelMatch sets: ``selected_per_class`` = spc marks the last ``num_classes * spc`` images as
    selected (storage order [distilled; selected]). ``syn_lr`` stands in for a missing lr file.
    Used in: evaluating the released sets.
    """
    images = _load_tensor(images_path).float()
    n = len(images)
    if labels_path is not None:
        labels = _load_tensor(labels_path)
        labels = labels.float() if labels.is_floating_point() else labels.long()
    else:
        if not num_classes or n % num_classes:
            raise ValueError(f"without a labels file give num_classes dividing the {n} images")
        labels = torch.arange(num_classes).repeat_interleave(n // num_classes)
    if lr_path is not None:
        syn_lr = float(_load_tensor(lr_path).reshape(-1)[0])
    elif syn_lr is None:
        raise ValueError("give lr_path (lr_best.pt) or syn_lr, the step size to evaluate with")
    k = num_classes or (labels.shape[1] if labels.is_floating_point() else int(labels.max()) + 1)
    if selected_per_class * k > n:
        raise ValueError(f"{selected_per_class} selected per class x {k} classes > {n} images")
    mask = torch.zeros(n, dtype=torch.bool)
    mask[n - selected_per_class * k:] = selected_per_class > 0
    meta = {"source": "reference files", "images": str(images_path), "labels": str(labels_path),
            "lr": str(lr_path)}
    return make_synset(images, labels, None, mask, syn_lr, meta)


def display_uint8(images: torch.Tensor, zca=None, mean=None, std=None,
                  clip_std: float = 2.5) -> torch.Tensor:
    """``images`` as the student saw them -> uint8 (n, C, H, W) for display.

    ZCA-whitened images are un-whitened with ``zca`` (a ``ddbook.zca.ZCA``), others
    un-normalised with ``mean``/``std``; then each image is clipped at ``clip_std`` standard
    deviations around its own mean and rescaled to [0, 255] (MTT's visualisation).
    Used in: presets.run_preset (the display copies saved with the results).
    """
    x = images.detach().float().cpu()
    if zca is not None:
        x = zca.invert(x)
    elif mean is not None and std is not None:
        m, sd = (torch.as_tensor(v, dtype=x.dtype).view(1, -1, 1, 1) for v in (mean, std))
        x = x * sd + m
    mu = x.mean(dim=(1, 2, 3), keepdim=True)
    sd = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
    lo, hi = mu - clip_std * sd, mu + clip_std * sd
    return ((x.clamp(lo, hi) - lo) / (hi - lo) * 255).round().clamp(0, 255).to(torch.uint8)
