"""IDC-style gradient matching: per class, match the network's gradients on real and synthetic data.

Source: IDC (Kim et al., ICML 2022), ``condense.py`` / ``argument.py`` (papers.md §5). One outer
iteration re-initialises the network (IDC ``fix_iter = 1``) and runs ``inner_loop`` rounds; a round

1. for each class c in turn: draws a real batch of class c (``batch_real``) and takes the class's
   synthetic images, decoded by multi-formation (at most ``batch_syn_max`` decoded images); passes
   both through **one** siamese DSA draw (the same transform on both batches, IDC's
   ``DiffAug(batch=True)``); computes the cross-entropy gradients g_r (real, a constant) and g_s
   (synthetic, differentiable) of the network's parameters; and takes one SGD step on the stored
   images along the gradient of L = sum over matched layers of dist(g_r, g_s), where dist is
   ``mse`` = sum (g_r - g_s)^2 (IDC's CIFAR choice) or ``l1`` = sum |g_r - g_s|. One-dimensional
   parameters (norm weights, biases) and the classifier are skipped by default (IDC ``--bias
   False --fc False``). As in IDC, one optimiser holds all the images and steps once per class, so
   the momentum of the other classes is applied at every class's step;
2. trains the network on ``n_data`` real examples (SGD 0.01, momentum 0.9, weight decay 5e-4; DSA
   with per-sample parameters and CutMix with probability 0.5, IDC's ``mixup_net='cut'``).

After each outer iteration the stored images are clamped to [0, 1].

Pixel space and normalisation. As in IDC, stored images live in [0, 1] pixel space: decoding and
DSA act there, and the dataset's mean/std normalisation is applied last, just before the network.
The clamp to [0, 1] is therefore a clamp to valid pixels. :func:`evaluation_set` returns the decoded
images normalised, as every evaluation protocol of the library expects.

Multi-formation (IDC ``decode_zoom``, factor f): each stored H x W image is cut into f x f tiles of
H/f x W/f, and each tile is upsampled back to H x W (bilinear); one stored image becomes f^2
training images. Here a stored image's tiles are adjacent (image-major order; IDC orders them tile-
major, which changes nothing but the order). With f > 1 IDC initialises each stored image as a
mosaic of f^2 real images of its class, each downsampled to a tile (``init='mix'``):
:func:`mosaic_init`.

Every random draw (network initialisations, real batches, DSA draws, CutMix boxes, the subset of
stored images decoded when a class has more than ``batch_syn_max`` decoded images) comes from one
CPU generator seeded from ``loop.seed``. With ``folder`` the state (images, their optimiser's
momentum, the generator, the history) is checkpointed every ``loop.checkpoint_every`` outer
iterations, at outer-iteration boundaries, where the network is re-drawn anyway: a resumed run
equals an uninterrupted one bit for bit on the CPU.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .augment import DSAParams, apply_dsa, sample_dsa
from .paths import save_atomic
from .networks import get_network
from .synset import SyntheticSet, make_synset
from .train import default_device, progress

__all__ = ["GMConfig", "GMLoop", "GMResult", "idc_lr_img", "decode", "mosaic_init",
           "matched_params", "grad_distance", "class_matching_loss", "siamese_pair",
           "normalizer", "fused_forward", "distill_gm", "evaluation_set", "DISTANCES",
           "IDC_MATCH_STRATEGY", "IMPLS"]

DISTANCES = ("mse", "l1")
IDC_MATCH_STRATEGY = "color_crop_cutout"  # IDC aug_type for matching (and the net update)


@dataclass(frozen=True)
class GMConfig:
    """The maths of one outer iteration; defaults: IDC's CIFAR-10 reproduce settings (§5)."""
    network: str = "ConvNet"          # IDC: ConvNet-3 with instance norm
    width: int | None = None          # ConvNet width (None: the name's default, 128)
    depth: int | None = None          # ConvNet depth (None: 3)
    factor: int = 1                   # multi-formation factor f (IDC CIFAR: 2; 1 = IDC-I)
    batch_real: int = 64              # real images per class per matching step (IDC batch_real)
    batch_syn_max: int = 128          # decoded synthetic images per class at most (batch_syn_max)
    distance: str = "mse"             # "mse" (IDC CIFAR) or "l1" (IDC ImageNet, MNIST)
    match_bias: bool = False          # also match 1-D parameters (norm weights, biases) (--bias)
    match_fc: bool = False            # also match the classifier (--fc)
    dsa_strategy: str = IDC_MATCH_STRATEGY  # op groups of the siamese and the net-update DSA
    inner_loop: int = 100             # rounds per outer iteration (IDC inner_loop)
    lr_img: float | None = None       # None: IDC's rule, see idc_lr_img
    img_momentum: float = 0.5         # SGD momentum on the images
    n_data: int = 2000                # real examples the network trains on per round (n_data)
    net_batch: int = 64               # their mini-batch size (IDC batch_size)
    net_lr: float = 0.01              # network SGD lr
    net_momentum: float = 0.9
    net_weight_decay: float = 5e-4
    cutmix_prob: float = 0.5          # CutMix (beta 1, IDC's) probability per net batch; 0: off

    def __post_init__(self):
        if self.distance not in DISTANCES:
            raise ValueError(f"unknown distance {self.distance!r}; choose one of {list(DISTANCES)}")
        if self.factor < 1 or self.batch_real < 1 or self.batch_syn_max < self.factor ** 2:
            raise ValueError(f"need factor >= 1, batch_real >= 1 and batch_syn_max >= factor^2 "
                             f"(one stored image), got {self.factor}, {self.batch_real}, "
                             f"{self.batch_syn_max}")
        if self.inner_loop < 1 or self.n_data < 0 or self.net_batch < 1:
            raise ValueError(f"need inner_loop >= 1, n_data >= 0, net_batch >= 1, got "
                             f"{self.inner_loop}, {self.n_data}, {self.net_batch}")
        if not 0 <= self.cutmix_prob <= 1:
            raise ValueError(f"cutmix_prob must lie in [0, 1], got {self.cutmix_prob}")


@dataclass(frozen=True)
class GMLoop:
    """A gradient-matching run: its length, checkpoints and seed."""
    iterations: int = 2000            # outer iterations (IDC niter at inner_loop 100)
    checkpoint_every: int = 10        # write a resumable checkpoint every k outer iterations
    seed: int = 0                     # the run's one generator


@dataclass(frozen=True, eq=False)
class GMResult:
    images: torch.Tensor              # (n, C, H, W) stored images in [0, 1], CPU
    labels: torch.Tensor              # (n,) int64
    history: dict                     # per outer iteration: loss (mean, rounds x classes), seconds
    iterations_done: int
    finished: bool


def idc_lr_img(ipc: int, size: int = 32) -> float:
    """IDC's image lr, 5e-3 x (IPC / 10) x (size / 32)^2 (``tune_lr_img``, papers.md §5)."""
    return 5e-3 * (ipc / 10) * (size / 32) ** 2


# ------------------------------------------------------------------------------------------
# multi-formation


def decode(images: torch.Tensor, labels: torch.Tensor, factor: int
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(decoded (n f^2, C, H, W), labels (n f^2,)): each image's f x f tiles, upsampled to H x W.

    Source: IDC ``Synthesizer.decode_zoom`` (papers.md §5), bilinear, align_corners False; a side
    not divisible by f is zero-padded first, as IDC does. Tiles of one image are adjacent, row-
    major. Differentiable in ``images``. Used in: class_matching_loss, evaluation_set.
    """
    if factor == 1:
        return images, labels
    n, c, h, w = images.shape
    s = math.ceil(h / factor), math.ceil(w / factor)
    x = F.pad(images, (0, s[1] * factor - w, 0, s[0] * factor - h))
    tiles = x.reshape(n, c, factor, s[0], factor, s[1]).permute(0, 2, 4, 1, 3, 5)
    tiles = tiles.reshape(n * factor * factor, c, s[0], s[1])           # (n f^2, C, H/f, W/f)
    up = F.interpolate(tiles, size=(h, w), mode="bilinear", align_corners=False)
    return up, labels.repeat_interleave(factor * factor)


def mosaic_init(real: torch.Tensor, factor: int) -> torch.Tensor:
    """Stored images (m, C, H, W) each tiled from f^2 real images (m f^2, C, H, W), downsampled.

    Source: IDC ``init='mix'`` (papers.md §5); downsampling by area averaging (ours). Real image
    k f^2 + t becomes tile t (row-major) of stored image k, the inverse of :func:`decode`'s order.
    """
    if factor == 1:
        return real.clone()
    n, c, h, w = real.shape
    if n % (factor * factor) or h % factor or w % factor:
        raise ValueError(f"mosaic_init needs a multiple of {factor ** 2} images whose sides divide "
                         f"by {factor}, got {tuple(real.shape)}")
    small = F.interpolate(real, size=(h // factor, w // factor), mode="area")
    m = n // (factor * factor)
    tiles = small.reshape(m, factor, factor, c, h // factor, w // factor)
    return tiles.permute(0, 3, 1, 4, 2, 5).reshape(m, c, h, w).contiguous()


# ------------------------------------------------------------------------------------------
# the matching loss


def normalizer(mean, std, device=None):
    """``x -> (x - mean) / std`` for (N, 3, H, W) pixels in [0, 1] (the dataset's normalisation)."""
    m = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return lambda x: (x - m.to(x.dtype)) / s.to(x.dtype)


def matched_params(model: torch.nn.Module, match_bias: bool = False,
                   match_fc: bool = False) -> list[tuple[str, torch.nn.Parameter]]:
    """The (name, parameter) pairs whose gradients are matched.

    Source: IDC ``matchloss`` (papers.md §5): a parameter with one dimension (bias, norm weight)
    is skipped unless ``match_bias``; the classifier (here any parameter of ``model.classifier``;
    IDC: any 2-D parameter, which in its ConvNet is the FC layer) unless ``match_fc``.
    """
    fc = {id(p) for p in model.classifier.parameters()} if hasattr(model, "classifier") else set()
    out = [(n, p) for n, p in model.named_parameters()
           if (match_bias or p.dim() > 1) and (match_fc or id(p) not in fc)]
    if not out:
        raise ValueError("no parameter is matched; set match_bias or match_fc")
    return out


def grad_distance(g_real: list[torch.Tensor], g_syn: list[torch.Tensor],
                  distance: str = "mse") -> torch.Tensor:
    """Sum over layers of sum (g_r - g_s)^2 (``mse``) or sum |g_r - g_s| (``l1``); IDC ``dist``."""
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; choose one of {list(DISTANCES)}")
    terms = [(gr - gs).square().sum() if distance == "mse" else (gr - gs).abs().sum()
             for gr, gs in zip(g_real, g_syn)]
    return torch.stack(terms).sum()


def siamese_pair(real: torch.Tensor, syn: torch.Tensor, draw: DSAParams | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Both batches through the one siamese DSA draw ``draw`` (None: unchanged)."""
    if draw is None:
        return real, syn
    if not draw.siamese:
        raise ValueError("gradient matching needs a siamese DSA draw (sample_dsa(siamese=True))")
    return apply_dsa(real, draw), apply_dsa(syn, draw)


IMPLS = ("auto", "stock")


def fused_forward(model: torch.nn.Module) -> Callable | None:
    """``x -> model(x)`` replayed through ``fused.convnet_plan`` (norm-ReLU-pool tails with
    closed-form first and second derivatives), or None where that would not be the same
    computation: not a plan-covered ConvNet, not float32 on the CPU, or a batch-norm network (its
    module forward also updates running statistics, which the functional ops leave alone).

    The synthetic branch of the matching loss is differentiated twice (its gradient, then the
    distance's gradient wrt the images); the stock modules' double backward there is made of many
    small element-wise ops (instance norm written out as tensor maths). Same values and gradients
    to float rounding (tests/test_gradmatch.py); speed in benchmarks/bench_gradmatch.py.
    """
    from .fused import convnet_plan
    p0 = next(model.parameters(), None)
    if (p0 is None or p0.device.type != "cpu" or p0.dtype != torch.float32
            or any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())):
        return None
    ops = convnet_plan(model)
    if ops is None:
        return None

    def forward(x: torch.Tensor) -> torch.Tensor:
        p = dict(model.named_parameters())
        for op in ops:
            x = op(p, x)
        return x
    return forward


def class_matching_loss(model: torch.nn.Module, real: torch.Tensor, syn_stored: torch.Tensor,
                        label: int, config: GMConfig, draw: DSAParams | None,
                        norm=lambda x: x, impl: str = "auto") -> torch.Tensor:
    """The matching loss of one class: dist(grad CE(real), grad CE(decode(syn))) over the matched
    parameters; differentiable in ``syn_stored`` (k, C, H, W) pixels, ``real`` (b, C, H, W).

    Source: IDC ``matchloss`` (papers.md §5). ``norm`` maps pixels to the network's input space.
    ``impl``: "auto" runs the synthetic branch (the one differentiated twice) through
    :func:`fused_forward` where it applies, "stock" through the module; the same maths.
    Used in: distill_gm, tests (finite differences, fused against stock).
    """
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; choose one of {list(IMPLS)}")
    labels = torch.full((len(syn_stored),), label, dtype=torch.long, device=syn_stored.device)
    syn, syn_y = decode(syn_stored, labels, config.factor)
    real_a, syn_a = siamese_pair(real, syn, draw)
    params = [p for _, p in matched_params(model, config.match_bias, config.match_fc)]
    real_y = torch.full((len(real),), label, dtype=torch.long, device=real.device)
    g_real = torch.autograd.grad(F.cross_entropy(model(norm(real_a)), real_y), params)
    g_real = [g.detach() for g in g_real]
    forward = (fused_forward(model) if impl == "auto" else None) or model
    g_syn = torch.autograd.grad(F.cross_entropy(forward(norm(syn_a)), syn_y), params,
                                create_graph=True)
    return grad_distance(g_real, g_syn, config.distance)


# ------------------------------------------------------------------------------------------
# the network update


def _cutmix(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
    """(mixed x, y, y of the pasted images, lam): a box from a shuffled copy (CutMix, beta 1).

    The box's area ratio is 1 - lam with lam ~ Beta(1, 1) = U(0, 1), its centre uniform; lam is
    then recomputed from the clipped box, as CutMix does.
    """
    n, _, h, w = x.shape
    lam = float(torch.rand((), generator=gen))
    perm = torch.randperm(n, generator=gen).to(x.device)
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = (int(torch.randint(s, (), generator=gen)) for s in (h, w))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    mixed = x.clone()
    mixed[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
    return mixed, y, y[perm], 1 - (y1 - y0) * (x1 - x0) / (h * w)


def _train_net(model, opt, real_x, real_y, config: GMConfig, gen: torch.Generator, norm) -> None:
    """Train ``model`` on ``n_data`` random real examples (DSA + CutMix; IDC ``train_epoch``)."""
    if config.n_data == 0:
        return
    model.train()
    order = torch.randperm(len(real_x), generator=gen)[:config.n_data].to(real_x.device)
    for start in range(0, len(order), config.net_batch):
        idx = order[start:start + config.net_batch]
        x, y = real_x[idx], real_y[idx]
        x = apply_dsa(x, sample_dsa(len(x), x.shape[-2:], gen, config.dsa_strategy))
        if config.cutmix_prob > 0 and float(torch.rand((), generator=gen)) < config.cutmix_prob:
            x, ya, yb, lam = _cutmix(x, y, gen)
            out = model(norm(x))
            loss = lam * F.cross_entropy(out, ya) + (1 - lam) * F.cross_entropy(out, yb)
        else:
            loss = F.cross_entropy(model(norm(x)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


# ------------------------------------------------------------------------------------------
# the loop


@dataclass
class _State:
    images: torch.Tensor              # (n, C, H, W) leaf, stored pixels in [0, 1]
    optimizer: torch.optim.Optimizer  # SGD on the images
    generator: torch.Generator        # every draw of the run (CPU)
    done: int = 0                     # outer iterations done
    history: dict = field(default_factory=lambda: {"loss": [], "seconds": []})


def _per_class(labels: torch.Tensor, classes) -> dict[int, torch.Tensor]:
    return {c: torch.nonzero(labels == c).flatten() for c in classes}


def _outer_iteration(state: _State, labels, real_x, real_y, pools: dict, config: GMConfig,
                     num_classes: int, norm, device, impl: str = "auto") -> float:
    """One outer iteration in place (fresh network, inner_loop rounds, clamp); its mean loss."""
    gen, f2 = state.generator, config.factor ** 2
    model = get_network(config.network, num_classes, tuple(real_x.shape[-2:]), real_x.shape[1],
                        config.width, config.depth, generator=gen, device=device)
    net_opt = torch.optim.SGD(model.parameters(), lr=config.net_lr, momentum=config.net_momentum,
                              weight_decay=config.net_weight_decay)
    stored = _per_class(labels.cpu(), sorted(pools))
    total, count = 0.0, 0
    for _ in range(config.inner_loop):
        model.train()
        for c in sorted(pools):
            pool = pools[c]
            real = real_x[pool[torch.randperm(len(pool), generator=gen)[:config.batch_real]]
                          .to(real_x.device)]
            idx = stored[c]
            if len(idx) * f2 > config.batch_syn_max:   # IDC batch_syn_max: a random subset
                idx = idx[torch.randperm(len(idx), generator=gen)[:config.batch_syn_max // f2]]
            draw = sample_dsa(1, real.shape[-2:], gen, config.dsa_strategy, siamese=True)
            loss = class_matching_loss(model, real, state.images[idx.to(device)], c, config,
                                       draw, norm, impl)
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            state.optimizer.step()
            total, count = total + float(loss.detach()), count + 1
        _train_net(model, net_opt, real_x, real_y, config, gen, norm)
    with torch.no_grad():
        state.images.clamp_(0.0, 1.0)
    return total / count


def _digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(str((tuple(t.shape), t.dtype)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _run_record(config: GMConfig, loop: GMLoop, images, labels, real_x, real_y, pool_idx,
                lr_img: float) -> dict:
    """What a checkpoint must agree on to be resumed (not the run's length: it may be extended)."""
    from .experts import data_fingerprint
    return {"config": asdict(config), "seed": loop.seed, "lr_img": lr_img,
            "initial": _digest(images, labels), "real": data_fingerprint(real_x, real_y),
            "pool": _digest(pool_idx)}


def _save(folder: Path, state: _State, record: dict) -> None:
    save_atomic(folder / "checkpoint.pt", {
        "record": json.dumps(record, sort_keys=True), "done": state.done,
        "images": state.images.detach().cpu(), "optimizer": state.optimizer.state_dict(),
        "generator": state.generator.get_state(), "history": json.dumps(state.history)})


def _load(folder: Path, state: _State, record: dict) -> None:
    """Restore ``state`` from ``folder/checkpoint.pt`` if there is one made by the same run."""
    path = folder / "checkpoint.pt"
    if not path.exists():
        return
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if json.loads(blob["record"]) != json.loads(json.dumps(record, sort_keys=True)):
        raise ValueError(f"{path} belongs to a run with another config, seed or data; use another "
                         f"folder or delete it to start afresh")
    state.images.data.copy_(blob["images"])
    state.optimizer.load_state_dict(blob["optimizer"])
    state.generator.set_state(blob["generator"])
    state.done, state.history = blob["done"], json.loads(blob["history"])


def _check_inputs(images, labels, real_x, real_y, pools, num_classes) -> None:
    for name, x in (("images", images), ("real_x", real_x)):
        if x.dim() != 4 or not x.is_floating_point():
            raise ValueError(f"{name} must be float pixels (N, C, H, W) in [0, 1], got "
                             f"{x.dtype} {tuple(x.shape)}")
    if float(real_x.min()) < 0 or float(real_x.max()) > 1:
        raise ValueError("real_x must be pixels in [0, 1] (uint8 / 255), not normalised images: "
                         "gradient matching normalises after decoding and DSA, as IDC does")
    if labels.shape != (len(images),) or real_y.shape != (len(real_x),):
        raise ValueError("labels and real_y must be int64 (n,) class indices of their images")
    missing = [c for c in labels.unique().tolist() if len(pools.get(c, ())) == 0]
    if missing:
        raise ValueError(f"classes {missing} have synthetic images but no real examples to match")
    if int(labels.max()) >= num_classes:
        raise ValueError(f"labels reach {int(labels.max())} but num_classes is {num_classes}")


def distill_gm(images: torch.Tensor, labels: torch.Tensor, real_x: torch.Tensor,
               real_y: torch.Tensor, config: GMConfig = GMConfig(), loop: GMLoop = GMLoop(), *,
               mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), match_pool: torch.Tensor | None = None,
               num_classes: int | None = None, folder: str | os.PathLike | None = None,
               device=None, stop_after: int | None = None, impl: str = "auto") -> GMResult:
    """Distil the stored images ``images`` (n, C, H, W) in [0, 1] of classes ``labels`` (n,) by
    IDC gradient matching against ``real_x`` (N, C, H, W) pixels in [0, 1], ``real_y`` (N,).

    Source: IDC ``condense.py`` (papers.md §5); see the module docstring. ``mean``/``std``: the
    dataset normalisation applied before the network. ``match_pool`` (M,) indices into ``real_x``:
    the examples the matching real batches are drawn from (None: all; DASM passes the hard part);
    the network always trains on all of ``real_x``. ``lr_img`` None: ``idc_lr_img`` of the stored
    images per class. Resumable from ``folder``; ``stop_after=k`` stops after k outer iterations
    (as if killed). ``impl``: the matching loss's implementation (:func:`class_matching_loss`;
    the same maths). Used in: dasm.distill_dasm, the DASM figure.
    """
    device = torch.device(device) if device is not None else default_device()
    num_classes = num_classes or int(real_y.max()) + 1
    pool_idx = torch.arange(len(real_x)) if match_pool is None else match_pool.long().cpu()
    pools = {c: pool_idx[real_y.cpu()[pool_idx] == c] for c in labels.unique().tolist()}
    _check_inputs(images, labels, real_x, real_y, pools, num_classes)
    ipc = int(torch.bincount(labels.cpu()).max())
    lr_img = config.lr_img if config.lr_img is not None else idc_lr_img(ipc, images.shape[-1])
    leaf = images.detach().clone().float().to(device).requires_grad_(True)
    state = _State(leaf, torch.optim.SGD([leaf], lr=lr_img, momentum=config.img_momentum),
                   torch.Generator().manual_seed(loop.seed))
    record = _run_record(config, loop, images, labels, real_x, real_y, pool_idx, lr_img)
    folder = Path(folder) if folder is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        _load(folder, state, record)
    real_x, real_y, labels = real_x.float().to(device), real_y.to(device), labels.cpu()
    norm = normalizer(mean, std, device)
    for _ in progress(range(state.done, loop.iterations), "gradient matching"):
        t0 = time.perf_counter()
        loss = _outer_iteration(state, labels, real_x, real_y, pools, config, num_classes, norm,
                                device, impl)
        if not math.isfinite(loss):
            raise FloatingPointError(f"gradient matching: the matching loss is {loss} at outer "
                                     f"iteration {state.done}; lower lr_img")
        state.history["loss"].append(loss)
        state.history["seconds"].append(time.perf_counter() - t0)
        state.done += 1
        last = state.done == loop.iterations
        stop = stop_after is not None and state.done >= stop_after and not last
        if folder is not None and (state.done % loop.checkpoint_every == 0 or last or stop):
            _save(folder, state, record)
        if stop:
            break
    return GMResult(state.images.detach().cpu().clone(), labels.clone(), state.history,
                    state.done, state.done >= loop.iterations)


def evaluation_set(images: torch.Tensor, labels: torch.Tensor, factor: int, mean, std,
                   meta: dict | None = None) -> SyntheticSet:
    """The decoded, normalised training set of stored images (what an evaluation network sees).

    ``syn_lr`` is set to 0.01 and unused: the SelMatch protocol trains at its own fixed lr.
    """
    x, y = decode(images.detach().float().cpu(), labels.cpu(), factor)
    x = normalizer(mean, std)(x)
    return make_synset(x, y, syn_lr=0.01,
                       meta={"factor": factor, "stored": len(images), **(meta or {})})
