"""Expert trajectories: networks trained on the real data, with their parameters after every epoch.

Source: MTT ``buffer.py`` (papers.md §2.1: SGD lr 0.01, momentum 0, weight decay 0, batch 256,
DSA, 50 epochs, the init plus one snapshot per epoch) and FTD/DATM ``buffer_FTD.py`` (§3.1: the
same under GSAM with rho 0.01, alpha 0.3, adaptive). The reference stores lists of tensors in
``.pt`` files of 10 experts (§1.6); we store one memory-mappable array per expert instead:

    <folder>/config.json          format, ExpertConfig, data fingerprint, P, parameter shapes
    <folder>/expert_007.npy       float32 (E + 1, P): row e = flat parameters after epoch e
                                  (row 0 = the init), in ``model.parameters()`` order
    <folder>/expert_007.json      per-epoch test accuracy (E + 1 entries) and train loss (E)
    <folder>/expert_007.partial.npy, expert_007.ckpt.pt   only while expert 7 is being trained

The folder defaults to ``<cache>/experts/<network>-<hash of config and data>``. Training resumes
from the checkpoint written after every epoch (model, optimizer and generator state), so a killed
run loses at most the epoch in progress and ends bit-identical to an uninterrupted one (on the
CPU; on CUDA only as far as its kernels are deterministic).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from . import paths
from .batched import StackedConvNet, train_epoch_stacked, use_batched
from .networks import count_params, flatten_params, get_network
from .train import (GSAMStep, accuracy, check_labels, default_device, progress, sgd_step,
                    train_epoch)

__all__ = ["ExpertConfig", "ExpertBuffer", "train_experts", "expert_folder",
           "data_fingerprint", "training_progress", "progress_epoch", "CorruptCacheError",
           "set_aside"]

FORMAT = 1
DATA_SEED_OFFSET = 2**32  # expert i shuffles/augments from seed + i + this, inits from seed + i


@dataclass(frozen=True)
class ExpertConfig:
    """How experts are trained; paper defaults are MTT's (papers.md §2.1)."""
    network: str = "ConvNet"    # get_network name (ConvNet; ConvNetD4 for Tiny; ConvNetBN: SelMatch)
    width: int | None = None    # ConvNet width override (None: the name's default, 128)
    depth: int | None = None    # ConvNet depth override (None: the name's default, 3)
    epochs: int = 50            # E, epochs per expert; E + 1 snapshots (MTT 50, DATM/SelMatch 100)
    lr: float = 0.01            # constant SGD learning rate (MTT --lr_teacher)
    momentum: float = 0.0       # SGD momentum (MTT --mom 0)
    weight_decay: float = 0.0   # SGD weight decay (MTT --l2 0)
    batch_size: int = 256       # images per step, last batch smaller (MTT --batch_train)
    augment: str = "dsa"        # 'dsa' (MTT, DATM) or 'none' (SelMatch's buffers)
    gsam: bool = False          # wrap SGD in GSAM, as FTD/DATM experts (papers.md §3.1)
    gsam_rho: float = 0.01      # GSAM perturbation radius (constant: rho_max = rho_min)
    gsam_alpha: float = 0.3     # GSAM weight of the surrogate-gap (orthogonal) gradient term
    gsam_adaptive: bool = True  # ASAM-style perturbation scaled by |w|
    seed: int = 0               # expert i: init seed seed + i; data generator seed + i + 2**32

    def __post_init__(self):
        if self.augment not in ("dsa", "none"):
            raise ValueError(f"expert augment must be 'dsa' or 'none', got {self.augment!r}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {self.epochs}, "
                             f"{self.batch_size}, {self.lr}")


def data_fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    """A short hash of the training data (shape, ~1M strided pixel values, all labels)."""
    flat = images.detach().reshape(-1)
    sample = flat[::max(1, flat.numel() // 2**20)].float().cpu().numpy()
    h = hashlib.sha256(f"{tuple(images.shape)}{images.dtype}".encode())
    h.update(sample.tobytes())
    h.update(labels.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def expert_folder(config: ExpertConfig, fingerprint: str) -> Path:
    """Default folder: ``<cache>/experts/<network>-<12-hex hash of config and data>``."""
    text = json.dumps({"config": asdict(config), "data": fingerprint, "format": FORMAT},
                      sort_keys=True)
    key = hashlib.sha256(text.encode()).hexdigest()[:12]
    return paths.cache_dir() / "experts" / f"{config.network}-{key}"


class CorruptCacheError(ValueError):
    """A cache file (expert trajectory, record or folder config) cannot be read."""


def set_aside(path: Path, what: str, then: str) -> Path:
    """Rename a broken cache file to ``<name>.corrupt`` (kept for inspection), say so on stderr
    in one line, and return the new path; the caller recomputes what it held."""
    target = path.with_name(path.name + ".corrupt")
    os.replace(path, target)
    print(f"warning: {path} was {what}; it is only a cache, so it was set aside as {target.name} "
          f"(safe to delete) and {then}", file=sys.stderr)
    return target


def _unreadable(path: Path, e: Exception) -> CorruptCacheError:
    return CorruptCacheError(
        f"{path} cannot be read ({type(e).__name__}: {e}). It is only a cache: it is safe to "
        f"delete, and train_experts (run by any command that needs these experts) sets it aside "
        f"and retrains it")


class _ExpertLock(paths.FileLock):
    """An exclusive ``flock`` on ``<folder>/.expert_<i>.lock`` while expert ``i`` is trained, so
    that processes sharing a buffer (two pages, or two shards of one, on two cores) split its
    experts instead of training each twice. ``wait=False``: ``held`` is False when another process
    holds it. The lock dies with its process, so a killed trainer never blocks anyone."""

    def __init__(self, folder: Path, i: int, wait: bool):
        super().__init__(folder / f".expert_{i:03d}.lock", wait)


def _write_json(path: Path, obj: dict) -> None:
    paths.write_atomic(path, lambda f: f.write(json.dumps(obj, indent=1).encode() + b"\n"))


class ExpertBuffer:
    """Lazy view of an expert folder: trajectories are memory-mapped, never loaded whole.

    Used in: matching (start and target parameters), DATM soft-label init, expert notebooks.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        meta = self.folder / "config.json"
        if not meta.exists():
            raise FileNotFoundError(
                f"no expert buffer at {self.folder} ({meta.name} is missing). Make one with "
                f"ddbook.experts.train_experts(ExpertConfig(...), images, labels, n_experts, "
                f"folder='{self.folder}')")
        try:
            self.meta = json.loads(meta.read_text())
            self.config = ExpertConfig(**self.meta["config"])
            self.num_params: int = self.meta["num_params"]   # P
        except (ValueError, KeyError, TypeError) as e:
            raise _unreadable(meta, e) from None
        self.epochs: int = self.config.epochs            # E (E + 1 snapshots)

    def path(self, i: int) -> Path:
        return self.folder / f"expert_{i:03d}.npy"

    def experts(self) -> list[int]:
        """Indices of the finished experts, ascending."""
        return sorted(int(p.name[7:10]) for p in self.folder.glob("expert_[0-9][0-9][0-9].npy"))

    def __len__(self) -> int:
        return len(self.experts())

    def trajectory(self, i: int) -> np.memmap:
        """Read-only memory map float32 ``(E + 1, P)`` of expert ``i``'s flat parameters."""
        path = self.path(i)
        if not path.exists():
            state = " (partly trained: call train_experts again to resume it)" if \
                self.folder.joinpath(f"expert_{i:03d}.ckpt.pt").exists() else ""
            raise FileNotFoundError(
                f"expert {i} not found: {path} is missing{state}; this buffer has experts "
                f"{self.experts()}. Train it with ddbook.experts.train_experts(buffer.config, "
                f"images, labels, n_experts={i + 1}, folder='{self.folder}')")
        try:
            traj = np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as e:
            raise _unreadable(path, e) from None
        if traj.shape != (self.epochs + 1, self.num_params) or traj.dtype != np.float32:
            raise _unreadable(path, ValueError(
                f"shape {traj.shape} {traj.dtype}, expected ({self.epochs + 1}, "
                f"{self.num_params}) float32"))
        return traj

    def snapshot(self, i: int, epoch: int, device: str | torch.device = "cpu") -> torch.Tensor:
        """A copy ``(P,)`` float32 of expert ``i``'s parameters after ``epoch`` (0 init, -1 last)."""
        if not -(self.epochs + 1) <= epoch <= self.epochs:
            raise ValueError(f"epoch must lie in [0, {self.epochs}] (or negative from the end), "
                             f"got {epoch}")
        return torch.from_numpy(np.array(self.trajectory(i)[epoch])).to(device)

    def info(self, i: int) -> dict:
        """Expert ``i``'s record: seeds, test accuracy per snapshot, loss per epoch, wall time."""
        self.trajectory(i)  # the clear error when it is missing
        record = self.path(i).with_suffix(".json")
        try:
            return json.loads(record.read_text())
        except (ValueError, OSError) as e:
            raise _unreadable(record, e) from None

    def check(self, i: int) -> None:
        """Read expert ``i``'s trajectory and record; CorruptCacheError when either is broken."""
        self.trajectory(i)
        if not isinstance(self.info(i).get("test_accuracy"), list):
            raise _unreadable(self.path(i).with_suffix(".json"), KeyError("test_accuracy"))

    def test_accuracy(self, i: int) -> list[float | None]:
        """Test accuracy in [0, 1] at each of expert ``i``'s E + 1 snapshots (None: no test set)."""
        return self.info(i)["test_accuracy"]


def _prepare_folder(folder: Path, config: ExpertConfig, model: nn.Module, fingerprint: str,
                    images: torch.Tensor, num_classes: int) -> None:
    meta = {"format": FORMAT, "config": asdict(config),
            "data": {"fingerprint": fingerprint, "num_train": int(images.shape[0]),
                     "num_classes": num_classes, "image_shape": list(images.shape[1:])},
            "num_params": count_params(model),
            "param_shapes": [[n, list(p.shape)] for n, p in model.named_parameters()],
            "layout": "expert_NNN.npy: float32 (epochs + 1, num_params), row e after epoch e"}
    path = folder / "config.json"
    if path.exists():
        try:
            old = json.loads(path.read_text())
            old["config"], old["data"]
        except (ValueError, KeyError, TypeError) as e:
            set_aside(path, f"unreadable ({type(e).__name__})", "it was written again; the "
                      "experts in the folder are kept only where their shape fits")
            old = meta
        if old["config"] != meta["config"] or old["data"] != meta["data"]:
            raise ValueError(f"{folder} holds experts of another config or data set "
                             f"({old['config']}, {old['data']}); use another folder")
        if path.exists():
            return
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(path, meta)


def _start_or_resume(folder: Path, i: int, model, optimizer, generator, config, test) -> tuple:
    """Return (partial trajectory memmap, state dict), from the checkpoint when there is one."""
    ckpt, partial = folder / f"expert_{i:03d}.ckpt.pt", folder / f"expert_{i:03d}.partial.npy"
    if ckpt.exists() and partial.exists():
        try:
            saved = torch.load(ckpt, map_location="cpu", weights_only=True)
            parts = saved["model"], saved["optimizer"], saved["generator"], saved["state"]
            traj = np.lib.format.open_memmap(partial, mode="r+")
            if traj.shape != (config.epochs + 1, count_params(model)):
                raise ValueError(f"{partial.name} has shape {traj.shape}")
        except Exception as e:  # torn or foreign bytes: torch and numpy raise several types
            for p in (ckpt, partial):
                set_aside(p, f"part of an unreadable checkpoint of expert {i} "
                          f"({type(e).__name__})", f"expert {i} is trained again from its start")
        else:
            model.load_state_dict(parts[0])
            optimizer.load_state_dict(parts[1])
            generator.set_state(parts[2])
            return traj, parts[3]
    traj = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32,
                                     shape=(config.epochs + 1, count_params(model)))
    traj[0] = flatten_params(model).cpu().numpy()
    state = {"epoch": 0, "test_accuracy": [_test(model, test)], "train_loss": [], "wall_time_s": 0.0}
    _checkpoint(folder, i, traj, model, optimizer, generator, state)
    return traj, state


def _checkpoint(folder: Path, i: int, traj, model, optimizer, generator, state: dict) -> None:
    traj.flush()  # rows up to state["epoch"] are on disk before the checkpoint says so
    blob = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(), "state": state}
    paths.save_atomic(folder / f"expert_{i:03d}.ckpt.pt", blob)


def _test(model: nn.Module, test) -> float | None:
    return None if test is None else accuracy(model, *test)


def _finish(folder: Path, i: int, traj, config: ExpertConfig, state: dict) -> None:
    """Write the record, then publish the trajectory, then drop the checkpoint (crash-safe order)."""
    traj.flush()
    del traj
    _write_json(folder / f"expert_{i:03d}.json",
                {"expert": i, "init_seed": config.seed + i,
                 "data_seed": config.seed + i + DATA_SEED_OFFSET, **state,
                 "torch": torch.__version__})
    os.replace(folder / f"expert_{i:03d}.partial.npy", folder / f"expert_{i:03d}.npy")
    (folder / f"expert_{i:03d}.ckpt.pt").unlink(missing_ok=True)


def _setup(folder: Path, i: int, config: ExpertConfig, data: tuple, test, device) -> tuple:
    """Expert ``i``'s (model, optimizer, generator, trajectory memmap, state), fresh or resumed."""
    images, labels, num_classes = data
    model = get_network(config.network, num_classes, tuple(images.shape[-2:]), images.shape[1],
                        config.width, config.depth, seed=config.seed + i, device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed + i + DATA_SEED_OFFSET)
    traj, state = _start_or_resume(folder, i, model, optimizer, generator, config, test)
    return model, optimizer, generator, traj, state


def _end_epoch(folder: Path, i: int, epoch: int, run: tuple, loss: float, seconds: float, test,
               config: ExpertConfig, stop_after_epochs: int | None, callback) -> bool:
    """Record expert ``i``'s epoch and checkpoint it; True when training should stop here."""
    model, optimizer, generator, traj, state = run
    traj[epoch] = flatten_params(model).cpu().numpy()  # a copy: torch.cat, then the memmap
    state["test_accuracy"].append(_test(model, test))
    state["train_loss"].append(loss)
    state["epoch"], state["wall_time_s"] = epoch, state["wall_time_s"] + seconds
    _checkpoint(folder, i, traj, model, optimizer, generator, state)
    if callback is not None:
        callback(i, epoch, state["test_accuracy"][-1])
    return stop_after_epochs is not None and epoch >= stop_after_epochs and epoch < config.epochs


def _train_one(folder: Path, i: int, config: ExpertConfig, data: tuple, test, device,
               stop_after_epochs: int | None, callback, run: tuple | None = None) -> bool:
    """Train (or resume) expert ``i``; return True when it is finished."""
    images, labels, _ = data
    run = run or _setup(folder, i, config, data, test, device)
    model, optimizer, generator, traj, state = run
    step = GSAMStep(config.gsam_rho, config.gsam_alpha, config.gsam_adaptive) if config.gsam \
        else sgd_step
    for epoch in progress(range(state["epoch"] + 1, config.epochs + 1), f"expert {i}",
                          total=config.epochs - state["epoch"]):
        t0 = time.perf_counter()
        loss = train_epoch(model, images, labels, optimizer, config.batch_size, generator,
                           config.augment, step=step)
        if _end_epoch(folder, i, epoch, run, float(loss), time.perf_counter() - t0, test, config,
                      stop_after_epochs, callback):
            return False
    _finish(folder, i, traj, config, state)
    return True


def _train_stacked(folder: Path, ids: list[int], runs: list[tuple], config: ExpertConfig,
                   data: tuple, test, stop_after_epochs: int | None, callback) -> bool:
    """Train experts ``ids`` (set up by _setup, all at the same epoch) stacked (ddbook.batched).

    Each expert keeps its init, generator and checkpoints; after every epoch the stack is copied
    back into the experts' own models and optimizers, which are recorded and checkpointed exactly
    as one expert's are (so a killed stacked run resumes, stacked or not). True when finished.
    """
    images, labels, _ = data
    nets, opts = [r[0] for r in runs], [r[1] for r in runs]
    model = StackedConvNet(nets)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    params = list(model.parameters())
    buffers = [[o.state[p].get("momentum_buffer") for p in n.parameters()]
               for o, n in zip(opts, nets)]
    if all(b is not None for bs in buffers for b in bs):  # resumed with momentum: stack its state
        for p, b in zip(params, model.join(buffers)):
            optimizer.state[p]["momentum_buffer"] = b.clone()
    first = runs[0][4]["epoch"] + 1
    for epoch in progress(range(first, config.epochs + 1), f"experts {ids[0]}-{ids[-1]} stacked",
                          total=config.epochs - first + 1):
        t0 = time.perf_counter()
        losses = train_epoch_stacked(model, [images] * len(ids), [labels] * len(ids), optimizer,
                                     config.batch_size, [r[2] for r in runs], config.augment)
        model.unstack_into(nets)
        state = [optimizer.state[p].get("momentum_buffer") for p in params]
        if all(b is not None for b in state):
            for o, n, bs in zip(opts, nets, model.split(state)):
                for p, b in zip(n.parameters(), bs):
                    o.state[p]["momentum_buffer"] = b.clone()
        seconds = (time.perf_counter() - t0) / len(ids)
        stop = [_end_epoch(folder, i, epoch, run, float(loss), seconds, test, config,
                           stop_after_epochs, callback)
                for i, run, loss in zip(ids, runs, losses)]
        if any(stop):
            return False
    for i, run in zip(ids, runs):
        _finish(folder, i, run[3], config, run[4])
    return True


def train_experts(config: ExpertConfig, images: torch.Tensor, labels: torch.Tensor,
                  n_experts: int, test_images: torch.Tensor | None = None,
                  test_labels: torch.Tensor | None = None, *,
                  folder: str | os.PathLike | None = None, num_classes: int | None = None,
                  device: str | torch.device | None = None, stop_after_epochs: int | None = None,
                  callback: Callable[[int, int, float | None], None] | None = None,
                  batched: bool | None = None) -> ExpertBuffer:
    """Train experts 0 .. n_experts - 1 (skip finished ones, resume a partial one); return the buffer.

    Source: MTT ``buffer.py`` / FTD ``buffer_FTD.py`` (papers.md §2.1, §3.1). ``images`` are float,
    normalised (and ZCA-whitened if the distillation uses ZCA), ``labels`` int64 in
    [0, num_classes) (default: max + 1). With a test set, each snapshot's test accuracy is
    recorded. ``stop_after_epochs=k`` stops (as if killed) once the expert in progress has k epochs
    checkpointed; ``callback(i, epoch, test_acc)`` runs after each epoch's checkpoint (an exception
    there is a kill too). Device: CUDA when available. Experts are trained one after another, or
    (``batched``; None: :func:`ddbook.batched.use_batched`) those at the same epoch stacked as
    one module: an execution detail, not part of the config or the folder's hash; the
    trajectories agree with one-at-a-time training to float rounding. GSAM is not stacked.
    One at a time, each expert is trained under a per-expert file lock: processes sharing the
    buffer split its experts (each skips those another holds, then waits for them, and trains any
    that a stopped process left unfinished).
    Used in: the expert notebooks and every distillation notebook (through the cached buffer).
    """
    device = torch.device(device) if device is not None else default_device()
    check_labels(images, labels, what="expert training set")
    if labels.is_floating_point():
        raise ValueError("experts train on hard int64 labels, got soft labels")
    num_classes = num_classes or int(labels.max()) + 1
    check_labels(images, labels, num_classes, what="expert training set")
    if n_experts < 0:
        raise ValueError(f"n_experts must be >= 0, got {n_experts}")
    images, labels = images.to(device), labels.to(device)
    test = None
    if test_images is not None:
        check_labels(test_images, test_labels, num_classes, what="expert test set")
        test = (test_images.to(device), test_labels.to(device))
    fingerprint = data_fingerprint(images, labels)
    folder = Path(folder) if folder is not None else expert_folder(config, fingerprint)
    probe = get_network(config.network, num_classes, tuple(images.shape[-2:]), images.shape[1],
                        config.width, config.depth, seed=0, device="cpu")
    _prepare_folder(folder, config, probe, fingerprint, images, num_classes)
    buffer = ExpertBuffer(folder)
    for i in buffer.experts():
        try:
            buffer.check(i)
        except CorruptCacheError as e:
            for p in (buffer.path(i), buffer.path(i).with_suffix(".json")):
                if p.exists():
                    set_aside(p, f"unreadable or of the wrong shape ({type(e).__name__})",
                              f"expert {i} is trained again")
    done = set(buffer.experts())
    for i in sorted(done):
        (folder / f"expert_{i:03d}.ckpt.pt").unlink(missing_ok=True)  # left by a late crash
    todo = [i for i in range(n_experts) if i not in done]
    if config.gsam and batched:
        raise ValueError("GSAM experts cannot be stacked (their perturbation is per network): "
                         "pass batched=False (or None)")
    data = (images, labels, num_classes)
    if config.gsam or not use_batched(batched, config.network, config.width, config.depth,
                                      len(todo), device):
        deferred = []                  # being trained by another process: wait for them last
        for wait, ids in ((False, todo), (True, deferred)):
            for i in list(ids):
                with _ExpertLock(folder, i, wait) as lock:
                    if not lock.held:
                        deferred.append(i)
                        continue
                    if i in buffer.experts():               # finished by another process
                        continue
                    if not _train_one(folder, i, config, data, test, device, stop_after_epochs,
                                      callback):
                        return buffer
        return buffer
    runs = {i: _setup(folder, i, config, data, test, device) for i in todo}
    for epoch in sorted({r[4]["epoch"] for r in runs.values()}, reverse=True):  # resumed first
        ids = [i for i in todo if runs[i][4]["epoch"] == epoch]
        if len(ids) == 1:
            ok = _train_one(folder, ids[0], config, data, test, device, stop_after_epochs,
                            callback, runs[ids[0]])
        else:
            ok = _train_stacked(folder, ids, [runs[i] for i in ids], config, data, test,
                                stop_after_epochs, callback)
        if not ok:
            break
    return buffer


def training_progress(test_accuracy) -> np.ndarray:
    """How far the experts have come at each snapshot, in [0, 1]: the mean test accuracy over
    experts (``test_accuracy``: one list of E + 1 values per expert, as ``ExpertBuffer.info``
    records them), as a fraction of its gain from the init to its best snapshot, running maximum
    (so that "progress p is reached at epoch e" is well defined). Ours: DATM defines its early and
    late segments by epoch, for 100-epoch experts; training progress carries them over to experts
    of another length or learning rate. Used in: ddbook.figures.datm_early_late."""
    acc = np.asarray(test_accuracy, dtype=float)
    if acc.ndim != 2 or acc.shape[1] < 2 or not np.isfinite(acc).all():
        raise ValueError(f"test_accuracy must be one list of E + 1 >= 2 finite accuracies per "
                         f"expert (train the experts with a test set); got shape {acc.shape}")
    mean = acc.mean(axis=0)
    gain = mean.max() - mean[0]
    if gain <= 0:
        raise ValueError("the experts' mean test accuracy never rises above its value at the init: "
                         "no training progress to define segments by")
    return np.maximum.accumulate(np.clip((mean - mean[0]) / gain, 0.0, 1.0))


def progress_epoch(progress: np.ndarray, fraction: float) -> int:
    """The first epoch at which ``progress`` (from :func:`training_progress`) reaches
    ``fraction`` in [0, 1]."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    return int(np.argmax(np.asarray(progress) >= fraction - 1e-6))   # float32 accuracies

