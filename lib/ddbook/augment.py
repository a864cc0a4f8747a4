"""Differentiable augmentation: DSA, plain crop + flip, and SelMatch's combined augmentation.

DSA (papers.md §1.4; MTT ``utils.py: DiffAugment``, from DC/DSA) applies one op group, drawn
uniformly per call, with per-sample random parameters; every op is differentiable in the images.
A draw is an explicit ``DSAParams`` object sampled from a ``torch.Generator`` and then applied.
Applying one object to two batches (real and synthetic) is the "siamese" trick, without the
reference's global re-seeding. The unused mode 'M' (all groups in sequence) is not provided.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["DSA_OPS", "DSA_STRATEGY", "AUGMENT_MODES", "DSAConfig", "DSAParams", "sample_dsa",
           "apply_dsa", "dsa", "simple_augment", "combined_augment", "augment"]

DSA_OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")
DSA_STRATEGY = "color_crop_cutout_flip_scale_rotate"  # what MTT, DATM and SelMatch all pass
AUGMENT_MODES = ("dsa", "simple", "combined", "none")  # SelMatch's evaluation `--aug` choices


@dataclass(frozen=True)
class DSAConfig:
    """DSA's op-group parameters; the defaults are ``ParamDiffAug`` (papers.md §1.4)."""
    brightness: float = 1.0    # additive shift (u - 0.5) * brightness, u ~ U[0, 1)
    saturation: float = 2.0    # factor u * saturation on the deviation from the channel mean
    contrast: float = 0.5      # factor u + contrast on the deviation from the image mean
    crop_ratio: float = 0.125  # max integer shift as a fraction of the side (4 px at 32)
    cutout_ratio: float = 0.5  # side of the zeroed square as a fraction of the side (16 px at 32)
    flip_prob: float = 0.5     # probability of a horizontal flip
    scale_ratio: float = 1.2   # x and y scale factors each uniform in [1/ratio, ratio)
    rotate_deg: float = 15.0   # angle uniform in [-rotate_deg, rotate_deg) degrees


@dataclass(frozen=True, eq=False)
class DSAParams:
    """One DSA draw: the op group and its parameter tensors, each (n,), or (1,) when siamese.

    ``values`` by op: color -> brightness, saturation, contrast (shift / factors);
    crop -> dy, dx (output pixel (i, j) reads input (i + dy, j + dx), zero outside);
    cutout -> top, bottom, left, right (half-open bounds of the zeroed square, may overhang);
    flip -> flip (bool); scale -> scale_x, scale_y; rotate -> angle (radians).
    """
    op: str                          # one of DSA_OPS
    values: dict[str, torch.Tensor]  # name -> (n,) or (1,)
    size: tuple[int, int]            # (H, W) the draw was made for
    siamese: bool = False            # True: one parameter set shared by every sample

    @property
    def batch_size(self) -> int:
        return next(iter(self.values.values())).shape[0]

    def to(self, device) -> "DSAParams":
        values = {k: v.to(device) for k, v in self.values.items()}
        return DSAParams(self.op, values, self.size, self.siamese)


def _parse_strategy(strategy: str) -> tuple[str, ...]:
    ops = tuple(strategy.split("_")) if strategy else ()
    bad = [op for op in ops if op not in DSA_OPS]
    if not ops or bad:
        raise ValueError(f"unknown DSA op(s) {bad or [strategy]} in strategy {strategy!r}; "
                         f"valid ops are {list(DSA_OPS)}, joined by '_'")
    return ops


def _as_size(size) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return int(h), int(w)


def _uniform(n: int, gen: torch.Generator, low: float, high: float) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=gen.device) * (high - low) + low  # (n,)


def _randint(n: int, gen: torch.Generator, low: int, high: int) -> torch.Tensor:
    return torch.randint(low, high, (n,), generator=gen, device=gen.device)  # (n,) in [low, high)


def _draw(op: str, n: int, size: tuple[int, int], gen: torch.Generator,
          cfg: DSAConfig) -> dict[str, torch.Tensor]:
    """Return the random parameters of op group ``op`` for ``n`` images of ``size``.

    Source: MTT ``utils.py`` ``rand_*`` functions (papers.md §1.4); sides use int(r * H + 0.5).
    Used in: sample_dsa, combined_augment.
    """
    h, w = size
    if op == "color":
        return {"brightness": _uniform(n, gen, -0.5, 0.5) * cfg.brightness,
                "saturation": _uniform(n, gen, 0.0, 1.0) * cfg.saturation,
                "contrast": _uniform(n, gen, 0.0, 1.0) + cfg.contrast}
    if op == "crop":
        sy, sx = int(h * cfg.crop_ratio + 0.5), int(w * cfg.crop_ratio + 0.5)
        return {"dy": _randint(n, gen, -sy, sy + 1), "dx": _randint(n, gen, -sx, sx + 1)}
    if op == "cutout":
        cy, cx = int(h * cfg.cutout_ratio + 0.5), int(w * cfg.cutout_ratio + 0.5)
        # Centre uniform over the image; an even side gets one extra position, as in the reference.
        top = _randint(n, gen, 0, h + 1 - cy % 2) - cy // 2
        left = _randint(n, gen, 0, w + 1 - cx % 2) - cx // 2
        return {"top": top, "bottom": top + cy, "left": left, "right": left + cx}
    if op == "flip":
        return {"flip": _uniform(n, gen, 0.0, 1.0) < cfg.flip_prob}
    if op == "scale":
        r = cfg.scale_ratio
        return {"scale_x": _uniform(n, gen, 1 / r, r), "scale_y": _uniform(n, gen, 1 / r, r)}
    if op == "rotate":
        max_rad = cfg.rotate_deg / 180 * math.pi
        return {"angle": _uniform(n, gen, -max_rad, max_rad)}
    raise ValueError(f"unknown DSA op {op!r}; valid ops are {list(DSA_OPS)}")


def sample_dsa(batch_size: int, size, generator: torch.Generator,
               strategy: str = DSA_STRATEGY, siamese: bool = False,
               config: DSAConfig = DSAConfig()) -> DSAParams:
    """Return one DSA draw: an op group chosen uniformly from ``strategy`` and its parameters.

    Source: MTT ``utils.py: DiffAugment`` with aug_mode 'S' (papers.md §1.4). ``siamese=True`` is
    the reference's batch mode (seed != -1): every sample shares sample 0's parameters, so the
    draw can be replayed on batches of any size. ``size`` is H or (H, W).
    Used in: dsa, experts, matching, gradient matching (siamese), evaluation.
    """
    ops, hw = _parse_strategy(strategy), _as_size(size)
    op = ops[int(_randint(1, generator, 0, len(ops)).item())]
    values = _draw(op, 1 if siamese else batch_size, hw, generator, config)
    return DSAParams(op, values, hw, siamese)


def _color(x: torch.Tensor, v: dict) -> torch.Tensor:
    """Brightness, then saturation, then contrast, in one pass.

    With y = x + b, z = (y - mean_c y) * s + mean_c y and out = (z - mean z) * c + mean z: the
    channel mean of y is m + b (m = mean_c x) and saturation keeps the image mean, mean z = M + b
    (M = mean x). So out = (x - m) * c * s + (m - M) * c + M + b, with two reductions, not three.
    """
    def col(t):
        return t.to(x.dtype).view(-1, 1, 1, 1)
    b, s, c = col(v["brightness"]), col(v["saturation"]), col(v["contrast"])
    m = x.mean(dim=1, keepdim=True)  # (n, 1, H, W) channel mean
    big_m = m.mean(dim=(2, 3), keepdim=True)  # (n, 1, 1, 1) image mean
    return (x - m) * (c * s) + ((m - big_m) * c + (big_m + b))


def _shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Zero-filled integer translation: out[:, :, i, j] = x[:, :, i + dy, j + dx] (one gather)."""
    n, c, h, w = x.shape
    rows = torch.arange(h, device=x.device) + dy.view(-1, 1)  # (n or 1, H)
    cols = torch.arange(w, device=x.device) + dx.view(-1, 1)  # (n or 1, W)
    inside = (((rows >= 0) & (rows < h)).unsqueeze(2)
              & ((cols >= 0) & (cols < w)).unsqueeze(1))  # (n or 1, H, W)
    flat = rows.clamp(0, h - 1).unsqueeze(2) * w + cols.clamp(0, w - 1).unsqueeze(1)
    flat = flat.view(-1, 1, h * w).expand(n, c, h * w)  # (n, C, H*W)
    out = x.reshape(n, c, h * w).gather(2, flat).view(n, c, h, w)
    return out * inside.unsqueeze(1).to(x.dtype)


def _cutout(x: torch.Tensor, v: dict) -> torch.Tensor:
    h, w = x.shape[-2:]
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = (rows >= v["top"].view(-1, 1)) & (rows < v["bottom"].view(-1, 1))  # (n, H)
    in_cols = (cols >= v["left"].view(-1, 1)) & (cols < v["right"].view(-1, 1))  # (n, W)
    keep = ~(in_rows.unsqueeze(2) & in_cols.unsqueeze(1))  # (n, H, W)
    return x * keep.unsqueeze(1).to(x.dtype)


def _flip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def _affine(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
            c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Warp by the linear map [[a, b], [c, d]] (normalised coords), bilinear, zero padding."""
    zero = torch.zeros_like(a)
    theta = torch.stack([torch.stack([a, b, zero], -1), torch.stack([c, d, zero], -1)], -2)
    theta = theta.to(x.dtype).expand(x.shape[0], 2, 3)  # (n, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)  # (n, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def apply_dsa(x: torch.Tensor, params: DSAParams) -> torch.Tensor:
    """Return images ``x`` (N, C, H, W) transformed by the DSA draw ``params``; differentiable.

    Source: MTT ``utils.py`` ``rand_*`` (papers.md §1.4). A siamese draw applies to any N.
    Used in: dsa, experts, matching, gradient matching (real and synthetic batch), evaluation.
    """
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"DSA expects float images (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
    if tuple(x.shape[-2:]) != params.size:
        raise ValueError(f"DSA params drawn for size {params.size}, images are {tuple(x.shape[-2:])}")
    if not params.siamese and x.shape[0] != params.batch_size:
        raise ValueError(f"DSA params drawn for {params.batch_size} images, got {x.shape[0]}; "
                         "draw with siamese=True to replay one draw on batches of any size")
    v, op = params.to(x.device).values, params.op
    if op == "color":
        return _color(x, v)
    if op == "crop":
        return _shift(x, v["dy"], v["dx"])
    if op == "cutout":
        return _cutout(x, v)
    if op == "flip":
        return _flip(x, v["flip"])
    if op == "scale":
        zero = torch.zeros_like(v["scale_x"])
        return _affine(x, v["scale_x"], zero, zero, v["scale_y"])
    if op == "rotate":
        cos, sin = torch.cos(v["angle"]), torch.sin(v["angle"])
        return _affine(x, cos, -sin, sin, cos)
    raise ValueError(f"unknown DSA op {op!r}; valid ops are {list(DSA_OPS)}")


def dsa(x: torch.Tensor, generator: torch.Generator, strategy: str = DSA_STRATEGY,
        config: DSAConfig = DSAConfig()) -> torch.Tensor:
    """Return DSA-augmented ``x`` (N, C, H, W): one op group per call, per-sample parameters.

    Source: MTT ``utils.py: DiffAugment(x, strategy, seed=-1, param)`` (papers.md §1.4).
    Used in: experts, matching, evaluation (every training batch).
    """
    return apply_dsa(x, sample_dsa(x.shape[0], x.shape[-2:], generator, strategy, config=config))


def simple_augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Return ``x`` (N, C, H, W) randomly cropped after ``pad`` px of zero padding, then flipped.

    Source: SelMatch ``RandomCrop(size, padding=4)`` + ``RandomHorizontalFlip()`` (papers.md §4.5),
    i.e. a per-sample integer shift in {-pad, ..., pad} per axis, zero filled, and a flip with p 0.5.
    Used in: combined_augment, augment ('simple'), the SelMatch augmentation ablation.
    """
    n = x.shape[0]
    dy, dx = _randint(n, generator, -pad, pad + 1), _randint(n, generator, -pad, pad + 1)
    flip = _uniform(n, generator, 0.0, 1.0) < 0.5
    return _flip(_shift(x, dy.to(x.device), dx.to(x.device)), flip.to(x.device))


def combined_augment(x: torch.Tensor, is_selected: torch.Tensor, generator: torch.Generator,
                     strategy: str = DSA_STRATEGY, pad: int = 4,
                     config: DSAConfig = DSAConfig()) -> torch.Tensor:
    """Return ``x`` (N, C, H, W) with crop + flip on selected images and DSA on distilled ones.

    Source: SelMatch evaluation, aug 'combined' (papers.md §4.5): the Dataset applies DSA to each
    distilled image on its own, so every distilled image draws its own op group and parameters;
    selected real images (``is_selected`` True, (N,) bool) get RandomCrop(padding=4) + flip.
    Vectorised by grouping the samples per op. Used in: evaluation (SelMatch protocol).
    """
    n, hw = x.shape[0], _as_size(x.shape[-2:])
    if is_selected.shape != (n,) or is_selected.dtype != torch.bool:
        raise ValueError(f"is_selected must be a bool tensor of shape ({n},), "
                         f"got {is_selected.dtype} {tuple(is_selected.shape)}")
    ops = _parse_strategy(strategy)
    selected = is_selected.to(x.device)
    idx_sel, idx_dist = selected.nonzero().squeeze(1), (~selected).nonzero().squeeze(1)
    pieces, order = [simple_augment(x[idx_sel], generator, pad)], [idx_sel]
    choice = _randint(idx_dist.numel(), generator, 0, len(ops)).to(x.device)  # (n_distilled,)
    for k, op in enumerate(ops):
        idx = idx_dist[choice == k]
        if idx.numel() == 0:
            continue
        params = DSAParams(op, _draw(op, idx.numel(), hw, generator, config), hw)
        pieces.append(apply_dsa(x[idx], params))
        order.append(idx)
    return torch.cat(pieces)[torch.argsort(torch.cat(order))]


def augment(x: torch.Tensor, mode: str, generator: torch.Generator,
            is_selected: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``x`` augmented by ``mode`` in AUGMENT_MODES ('combined' needs ``is_selected``).

    Source: SelMatch evaluation ``--aug`` modes (papers.md §4.5). Used in: evaluation.
    """
    if mode == "dsa":
        return dsa(x, generator)
    if mode == "simple":
        return simple_augment(x, generator)
    if mode == "combined":
        if is_selected is None:
            raise ValueError("augmentation mode 'combined' needs the is_selected mask")
        return combined_augment(x, is_selected, generator)
    if mode == "none":
        return x
    raise ValueError(f"unknown augmentation mode {mode!r}; valid modes are {list(AUGMENT_MODES)}")
