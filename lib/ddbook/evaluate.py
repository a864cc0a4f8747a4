"""Evaluation protocols: train k fresh networks on a (synthetic or selected) set, test each once.

Two protocols, each returning an :class:`EvalResult` (mean ± std over k runs, per-run accuracy,
per-test-example correctness, training length, the evaluation point):

- MTT/DATM (papers.md §2.3, §3.4): the learned step size as lr, ×0.1 half-way, SGD momentum 0.9,
  weight decay 5e-4, DSA, batch 256 (MTT) or 128 (DATM), hard labels or soft-label logits.
- SelMatch (§4.5): ResNet18BN, SGD lr 0.1 with cosine decay to 0.001, momentum 0.9, weight decay
  5e-4, batch 128, combined augmentation, epochs 1000 × (5 % / subset ratio).

Training length. The reference loops run ``range(Epoch + 1)``, i.e. E + 1 epochs, and the MTT
decay comes after 0-based epoch E//2 + 1 (E//2 + 2 epochs at the full lr). We run exactly E epochs
by default, with the decay after E//2 epochs (MTT) and a cosine whose T_max is E (SelMatch), and
record it; ``reference_epochs=True`` reproduces the reference's count and decay point. Either way
the evaluation point is the final epoch; no checkpoint is ever selected on test accuracy.
Network run i is initialised from ``seed + i`` and shuffles/augments from its own generator.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .augment import AUGMENT_MODES
from .batched import StackedConvNet, correct_stacked, train_epoch_stacked, use_batched
from .networks import get_network
from .train import check_labels, correct, default_device, progress, train_epoch

__all__ = ["MTTEvalConfig", "SelMatchEvalConfig", "EvalResult", "evaluate_mtt",
           "evaluate_selmatch", "mtt_schedule", "mtt_optimizer", "selmatch_optimizer", "subset_ratio",
           "selmatch_epochs", "pack_correct", "unpack_correct", "load_correct"]

DATA_SEED_OFFSET = 2**32  # run i: init seed + i, data generator seed + i + this
EVAL_POINT = "final epoch (no selection over checkpoints)"


@dataclass(frozen=True)
class MTTEvalConfig:
    """MTT/DATM evaluation (papers.md §2.3, §3.4); the lr is the learned step size, passed apart."""
    network: str = "ConvNet"      # get_network name of the evaluated architecture
    width: int | None = None      # ConvNet width override (None: the name's default)
    depth: int | None = None      # ConvNet depth override
    epochs: int = 1000            # E (MTT --epoch_eval_train)
    batch_size: int = 256         # 256 (MTT --batch_train) or 128 (DATM)
    momentum: float = 0.9         # SGD momentum
    weight_decay: float = 5e-4    # SGD weight decay
    decay: float = 0.1            # lr factor applied once, half-way
    augment: str = "dsa"          # DSA on every batch (AUGMENT_MODES)
    reference_epochs: bool = False  # True: E + 1 epochs, decay after E//2 + 2 (the reference loop)
    runs: int = 5                 # k networks, mean ± std reported
    seed: int = 0                 # run i initialised from seed + i
    test_batch_size: int = 1024   # images per forward pass when testing (no effect on results)


@dataclass(frozen=True)
class SelMatchEvalConfig:
    """SelMatch evaluation (papers.md §4.5): fixed lr 0.1 (the learned step size is not used)."""
    network: str = "ResNet18BN"   # get_network name (ResNet18BN_Tiny for Tiny ImageNet)
    width: int | None = None      # ConvNet width override, when network is a ConvNet
    depth: int | None = None      # ConvNet depth override
    epochs: int | None = None     # E; None: round(1000 * 0.05 / subset_ratio)
    lr: float = 0.1               # initial lr (--lr_net)
    min_lr_factor: float = 0.01   # cosine floor eta_min = min_lr_factor * lr (0.001)
    batch_size: int = 128         # --batch_train
    momentum: float = 0.9         # SGD momentum
    weight_decay: float = 5e-4    # SGD weight decay
    augment: str = "combined"     # crop+flip on selected images, per-image DSA on distilled ones
    reference_epochs: bool = False  # True: E + 1 epochs, the last at eta_min (the reference loop)
    runs: int = 5                 # k networks (--Iteration 5)
    seed: int = 0                 # run i initialised from seed + i
    test_batch_size: int = 1024   # images per forward pass when testing


@dataclass(frozen=True, eq=False)
class EvalResult:
    """k evaluation runs of one set. Accuracies are fractions in [0, 1]; std is np.std (ddof 0)."""
    protocol: str                    # "mtt" or "selmatch"
    network: str                     # evaluated architecture
    accuracies: tuple[float, ...]    # (k,) test accuracy of each run
    correct: np.ndarray = field(repr=False)  # (k, N_test) bool: run r classifies example j right
    epochs: int                      # epochs each network was trained
    steps: int                       # SGD steps each network took
    eval_point: str                  # where the accuracy is read
    lr: float                        # initial learning rate
    lrs: tuple[float, ...] = field(repr=False)  # (epochs,) lr used in each epoch
    schedule: dict                   # the schedule in words and numbers
    seeds: tuple[int, ...]           # init seed of each run
    train_loss: tuple[float, ...]    # last epoch's mean training loss, per run
    config: dict                     # the protocol config, as a dict
    wall_time_s: float               # for all k runs
    train_accuracy: tuple[float, ...] = ()  # per run, on its training set after training (no
    #                                         augmentation, eval mode; soft labels: their argmax)

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))

    def to_dict(self) -> dict:
        """JSON-able summary for ``results.save_result``, without ``lrs`` and without the
        per-example ``correct`` matrix: that goes beside the JSON, compactly, as
        ``save_result(..., arrays=result.correct_arrays())`` (read back by :func:`load_correct`);
        ``n_test`` is kept here so the bits can be unpacked."""
        keys = ("protocol", "network", "accuracies", "epochs", "steps", "eval_point", "lr",
                "schedule", "seeds", "train_loss", "train_accuracy", "config", "wall_time_s")
        return {"mean": self.mean, "std": self.std, "runs": len(self.accuracies),
                "n_test": int(self.correct.shape[1]), **{k: getattr(self, k) for k in keys}}

    def correct_arrays(self) -> dict:
        """``{"correct_bits", "n_test"}``: :func:`pack_correct` of the per-example correctness."""
        return pack_correct(self.correct)


def pack_correct(correct: np.ndarray) -> dict:
    """(k, N) bool correctness -> ``{"correct_bits": (k, ceil(N/8)) uint8, "n_test": N}`` (np.packbits
    along the test examples, in test-set order): 1/8 of a byte per example and network."""
    correct = np.asarray(correct, dtype=bool)
    if correct.ndim != 2:
        raise ValueError(f"correct must be (networks, test examples) bool, got shape {correct.shape}")
    return {"correct_bits": np.packbits(correct, axis=1), "n_test": np.int64(correct.shape[1])}


def unpack_correct(bits: np.ndarray, n_test: int) -> np.ndarray:
    """The inverse of :func:`pack_correct`: (k, n_test) bool; a 1-D ``bits`` (one network) gives
    (1, n_test)."""
    bits = np.asarray(bits, dtype=np.uint8)
    bits = bits[None] if bits.ndim == 1 else bits
    if bits.shape[1] != (n_test + 7) // 8:
        raise ValueError(f"{bits.shape[1]} bytes per network cannot hold {n_test} examples")
    return np.unpackbits(bits, axis=1, count=int(n_test)).astype(bool)


def load_correct(result) -> np.ndarray:
    """(k, n_test) bool per-example correctness saved with a ``results.Result`` (its .npz holds
    ``correct_bits``; ``n_test`` is in the arrays or the data). A clear error when it was not saved."""
    arrays = result.arrays or {}
    if "correct_bits" not in arrays:
        raise KeyError(f"{result.path} holds no per-example correctness (correct_bits); rerun it "
                       f"with this version of ddbook")
    n = arrays.get("n_test", result.data.get("n_test"))
    if n is None:
        raise KeyError(f"{result.path}: n_test is missing, so its correct_bits cannot be unpacked")
    return unpack_correct(arrays["correct_bits"], int(n))


def subset_ratio(ipc: int, train_labels: torch.Tensor) -> float:
    """The fraction of the training set that ``ipc`` images per class make (SelMatch's "ratio").

    Raises ValueError when ``ipc`` is not positive or larger than the smallest class.
    """
    counts = torch.bincount(train_labels.cpu())
    if ipc < 1 or ipc > int(counts.min()):
        raise ValueError(f"ipc must lie in [1, {int(counts.min())}] (the smallest class), got {ipc}")
    return ipc * len(counts) / len(train_labels)


def selmatch_epochs(ratio: float, base_epochs: int = 1000, base_ratio: float = 0.05) -> int:
    """round(1000 × (0.05 / ratio)): SelMatch keeps the SGD step count about constant (§4.2)."""
    if not 0 < ratio <= 1:
        raise ValueError(f"subset ratio must lie in (0, 1], got {ratio}")
    return max(1, round(base_epochs * base_ratio / ratio))


def mtt_schedule(config: MTTEvalConfig) -> tuple[int, int]:
    """(epochs run, epochs at the full lr): (E, E//2), or (E + 1, E//2 + 2) with reference_epochs.

    Source: MTT ``utils.py: evaluate_synset`` (papers.md §2.3): ``lr_schedule = [Epoch//2 + 1]``
    checked after 0-based epoch ``ep`` of ``range(Epoch + 1)``; see the module docstring.
    """
    if config.reference_epochs:
        return config.epochs + 1, config.epochs // 2 + 2
    return config.epochs, config.epochs // 2


def mtt_optimizer(model, lr: float, config: MTTEvalConfig) -> tuple:
    """(SGD, MultiStepLR, epochs): lr × decay once ``mtt_schedule(config)[1]`` epochs are done.

    The scheduler is stepped once per epoch. Used in: evaluate_mtt, tests.
    """
    epochs, decay_after = mtt_schedule(config)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[decay_after], gamma=config.decay)
    return opt, sched, epochs


def selmatch_optimizer(model, epochs: int, config: SelMatchEvalConfig) -> tuple:
    """(SGD, CosineAnnealingLR with T_max = epochs and eta_min = 0.01 lr, epochs run).

    Source: SelMatch ``utils.py: evaluate_synset`` (papers.md §4.5); stepped once per epoch.
    """
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs,
                                                       eta_min=config.min_lr_factor * config.lr)
    return opt, sched, epochs + 1 if config.reference_epochs else epochs


def _check_sets(images, labels, test_images, test_labels, num_classes) -> int:
    """Validate the training and test sets; return the number of classes."""
    check_labels(images, labels, what="training set")
    if num_classes is None:
        top = labels.shape[1] if labels.is_floating_point() else int(labels.max()) + 1
        num_classes = max(top, int(test_labels.max()) + 1 if test_labels.numel() else 0)
    check_labels(images, labels, num_classes, what="training set")
    check_labels(test_images, test_labels, num_classes, what="test set")
    if test_labels.is_floating_point():
        raise ValueError("test labels must be hard int64 class indices")
    if test_images.shape[1:] != images.shape[1:]:
        raise ValueError(f"test images {tuple(test_images.shape[1:])} differ in shape from "
                         f"training images {tuple(images.shape[1:])}")
    return num_classes


def _run_protocol(protocol: str, config, lr: float, data: tuple, make_optimizer, schedule: dict,
                  device, batched: bool | None = None, epoch_hook=None) -> EvalResult:
    """Train ``config.runs`` networks with ``make_optimizer(model) -> (opt, sched, epochs)``.

    ``batched`` (see :func:`ddbook.batched.use_batched`) trains the runs stacked, as one module;
    either way run r is initialised from seed + r and draws from its own generator.
    ``epoch_hook(run, epoch, model)`` is called after every epoch of every run (one module per
    run, so it trains them one after another; it must not change the model or draw from the
    training generators).
    """
    images, labels, is_selected, test_images, test_labels, num_classes = data
    if config.augment not in AUGMENT_MODES:
        raise ValueError(f"unknown augmentation {config.augment!r}; valid: {list(AUGMENT_MODES)}")
    if config.runs < 1:
        raise ValueError(f"runs must be >= 1, got {config.runs}")
    t0 = time.perf_counter()
    nets = [get_network(config.network, num_classes, tuple(images.shape[-2:]), images.shape[1],
                        config.width, config.depth, seed=config.seed + r, device=device)
            for r in range(config.runs)]
    gens = [torch.Generator().manual_seed(config.seed + r + DATA_SEED_OFFSET)
            for r in range(config.runs)]
    if epoch_hook is not None and batched:
        raise ValueError("epoch_hook needs one module per run: pass batched=False (or None)")
    stacked = epoch_hook is None and use_batched(batched, config.network, config.width,
                                                 config.depth, config.runs, device)
    if stacked:
        rights, losses, epochs, lrs, fits = _train_stacked(protocol, config, nets, gens, data,
                                                           make_optimizer)
    else:
        rights, losses, epochs, lrs, fits = _train_each(protocol, config, nets, gens, data,
                                                        make_optimizer, epoch_hook)
    steps = epochs * math.ceil(len(images) / config.batch_size)
    accs = tuple(float(r.mean()) for r in rights)
    seeds = tuple(config.seed + r for r in range(config.runs))
    return EvalResult(protocol, config.network, accs, rights, epochs, steps, EVAL_POINT, lr,
                      tuple(lrs), schedule, seeds, tuple(losses), asdict(config),
                      time.perf_counter() - t0, tuple(fits))


def _hard(labels: torch.Tensor) -> torch.Tensor:
    """Hard labels of a training set: soft label logits (N, K) -> their argmax."""
    return labels.argmax(1) if labels.ndim == 2 else labels


def _train_each(protocol, config, nets, gens, data, make_optimizer, epoch_hook=None):
    """The runs one after another; returns (correct (k, N), losses, epochs, lrs, training-set
    accuracies)."""
    images, labels, is_selected, test_images, test_labels, _ = data
    rights, losses, fits = [], [], []
    for r, (model, gen) in enumerate(zip(nets, gens)):
        opt, sched, epochs = make_optimizer(model)
        lrs = []
        for epoch in progress(range(epochs), f"{protocol} eval run {r}"):
            lrs.append(opt.param_groups[0]["lr"])
            loss = train_epoch(model, images, labels, opt, config.batch_size, gen, config.augment,
                               is_selected, sched)
            if epoch_hook is not None:
                epoch_hook(r, epoch, model)
        rights.append(correct(model, test_images, test_labels, config.test_batch_size).cpu())
        losses.append(float(loss))
        fits.append(float(correct(model, images, _hard(labels), config.test_batch_size)
                          .float().mean()))
    return torch.stack(rights).numpy(), losses, epochs, lrs, fits


def _train_stacked(protocol, config, nets, gens, data, make_optimizer):
    """The runs stacked into one module (ddbook.batched); same returns as _train_each."""
    images, labels, is_selected, test_images, test_labels, _ = data
    k = len(nets)
    model = StackedConvNet(nets)
    opt, sched, epochs = make_optimizer(model)
    lrs = []
    for _ in progress(range(epochs), f"{protocol} eval, {k} runs stacked"):
        lrs.append(opt.param_groups[0]["lr"])
        loss = train_epoch_stacked(model, [images] * k, [labels] * k, opt, config.batch_size,
                                   gens, config.augment, [is_selected] * k, sched)
    right = correct_stacked(model, test_images, test_labels, config.test_batch_size)
    fits = correct_stacked(model, images, _hard(labels), config.test_batch_size).float().mean(1)
    return right.cpu().numpy(), loss.tolist(), epochs, lrs, fits.tolist()


def evaluate_mtt(images: torch.Tensor, labels: torch.Tensor, lr: float | torch.Tensor,
                 test_images: torch.Tensor, test_labels: torch.Tensor,
                 config: MTTEvalConfig = MTTEvalConfig(), num_classes: int | None = None,
                 device: str | torch.device | None = None,
                 batched: bool | None = None) -> EvalResult:
    """Evaluate a synthetic set by the MTT/DATM protocol: k networks, each tested once at the end.

    Source: MTT ``utils.py: evaluate_synset`` (papers.md §2.3) and DATM ``evaluation.py`` (§3.4).
    ``images`` (N, C, H, W) float, normalised; ``labels`` hard int64 (N,) or soft logits (N, K)
    (DATM, soft cross-entropy); ``lr`` the learned step size. Use ``batch_size=128`` for DATM.
    ``batched``: train the k runs stacked as one module (ddbook.batched; an execution detail, not
    part of the config: results agree to float rounding); None decides by
    :func:`ddbook.batched.use_batched`. Used in: MTT, DATM and SelMatch-comparison notebooks.
    """
    lr = float(lr)
    if not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"the learned lr must be a positive finite number, got {lr}")
    if config.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {config.epochs}")
    device = torch.device(device) if device is not None else default_device()
    k = _check_sets(images, labels, test_images, test_labels, num_classes)
    data = tuple(t.to(device) for t in (images, labels)) + (None,) + \
        tuple(t.to(device) for t in (test_images, test_labels)) + (k,)
    schedule = {"kind": "step", "decay_after_epochs": mtt_schedule(config)[1],
                "factor": config.decay, "reference_epochs": config.reference_epochs}
    return _run_protocol("mtt", config, lr, data, lambda m: mtt_optimizer(m, lr, config), schedule,
                         device, batched)


def evaluate_selmatch(images: torch.Tensor, labels: torch.Tensor, test_images: torch.Tensor,
                      test_labels: torch.Tensor, is_selected: torch.Tensor | None = None,
                      ratio: float | None = None,
                      config: SelMatchEvalConfig = SelMatchEvalConfig(),
                      num_classes: int | None = None,
                      device: str | torch.device | None = None,
                      batched: bool | None = None, epoch_hook=None) -> EvalResult:
    """Evaluate a (selected + distilled) set by the SelMatch protocol; return k runs' results.

    Source: SelMatch ``utils.py: evaluate_synset``, ``eval.py`` (papers.md §4.5). ``is_selected``
    (N,) bool marks real selected images (crop + flip); the rest get per-image DSA. It is required
    by ``augment='combined'``. ``ratio`` is the subset ratio (see :func:`subset_ratio`) that sets
    the epochs when ``config.epochs`` is None. ``batched`` as in :func:`evaluate_mtt`.
    ``epoch_hook(run, epoch, model)`` (default off): called after every training epoch, e.g.
    :class:`ddbook.analysis.GradNormRecorder` (SelMatch Fig. 5b); it trains the runs one after
    another and changes no number of the evaluation.
    Used in: SelMatch notebooks, the coverage page (Fig. 5b).
    """
    device = torch.device(device) if device is not None else default_device()
    k = _check_sets(images, labels, test_images, test_labels, num_classes)
    if config.augment == "combined":
        if is_selected is None:
            raise ValueError("augment='combined' needs is_selected, a bool (N,) mask of real images")
        if is_selected.dtype != torch.bool or is_selected.shape != (len(images),):
            raise ValueError(f"is_selected must be bool ({len(images)},), got "
                             f"{is_selected.dtype} {tuple(is_selected.shape)}")
    if config.epochs is None and ratio is None:
        raise ValueError("give config.epochs or the subset ratio (epochs = round(1000·0.05/ratio))")
    epochs = config.epochs if config.epochs is not None else selmatch_epochs(ratio)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    sel = None if is_selected is None else is_selected.to(device)
    data = (images.to(device), labels.to(device), sel, test_images.to(device),
            test_labels.to(device), k)
    schedule = {"kind": "cosine", "t_max_epochs": epochs, "eta_min": config.min_lr_factor * config.lr,
                "reference_epochs": config.reference_epochs, "subset_ratio": ratio}
    return _run_protocol("selmatch", config, config.lr, data,
                         lambda m: selmatch_optimizer(m, epochs, config), schedule, device,
                         batched, epoch_hook)
