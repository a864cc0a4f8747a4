"""Tests for ddbook.augment: DSA against slow per-sample references, siamese replay, SelMatch's combined mode."""
import math

import pytest
import torch
import torch.nn.functional as F

from ddbook import augment as A


def gen(seed):
    return torch.Generator().manual_seed(seed)


def images(n, size=16, seed=0, dtype=torch.float32):
    return torch.randn(n, 3, size, size, generator=gen(1000 + seed), dtype=dtype)


# ---- slow per-sample references (one image (C, H, W), python scalars) ----

def ref_color(img, b, s, c):
    img = img + b
    m = img.mean(dim=0, keepdim=True)
    img = (img - m) * s + m
    m = img.mean()
    return (img - m) * c + m


def ref_crop(img, dy, dx):
    _, h, w = img.shape
    out = torch.zeros_like(img)
    for i in range(h):
        for j in range(w):
            if 0 <= i + dy < h and 0 <= j + dx < w:
                out[:, i, j] = img[:, i + dy, j + dx]
    return out


def ref_cutout(img, top, bottom, left, right):
    out = img.clone()
    for i in range(max(top, 0), min(bottom, img.shape[1])):
        for j in range(max(left, 0), min(right, img.shape[2])):
            out[:, i, j] = 0
    return out


def ref_flip(img, flip):
    _, _, w = img.shape
    out = img.clone()
    if flip:
        for j in range(w):
            out[:, :, j] = img[:, :, w - 1 - j]
    return out


def ref_affine(img, a, b, c, d):
    """Output pixel (i, j) samples the input bilinearly at [[a, b], [c, d]] @ (x, y), align_corners."""
    _, h, w = img.shape
    out = torch.zeros_like(img)
    for i in range(h):
        for j in range(w):
            xn, yn = -1 + 2 * j / (w - 1), -1 + 2 * i / (h - 1)
            px = ((a * xn + b * yn) + 1) / 2 * (w - 1)
            py = ((c * xn + d * yn) + 1) / 2 * (h - 1)
            x0, y0 = math.floor(px), math.floor(py)
            for yy, xx in [(y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)]:
                weight = (1 - abs(px - xx)) * (1 - abs(py - yy))
                if 0 <= yy < h and 0 <= xx < w:
                    out[:, i, j] += weight * img[:, yy, xx]
    return out


def ref_op(img, op, v, k):
    """Apply op group ``op`` with sample k's parameters from ``v`` to one image."""
    g = {name: t[k].item() for name, t in v.items()}
    if op == "color":
        return ref_color(img, g["brightness"], g["saturation"], g["contrast"])
    if op == "crop":
        return ref_crop(img, int(g["dy"]), int(g["dx"]))
    if op == "cutout":
        return ref_cutout(img, g["top"], g["bottom"], g["left"], g["right"])
    if op == "flip":
        return ref_flip(img, g["flip"])
    if op == "scale":
        return ref_affine(img, g["scale_x"], 0.0, 0.0, g["scale_y"])
    cos, sin = math.cos(g["angle"]), math.sin(g["angle"])
    return ref_affine(img, cos, -sin, sin, cos)


def crop_flip_candidates(img, pad=4):
    """All outputs of torchvision's RandomCrop(size, padding=pad) + horizontal flip on ``img``."""
    _, h, w = img.shape
    padded = F.pad(img, (pad, pad, pad, pad))
    crops = [padded[:, i:i + h, j:j + w] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]
    return crops + [c.flip(-1) for c in crops]


def is_crop_flip(out, img, pad=4):
    return any(torch.equal(out, cand) for cand in crop_flip_candidates(img, pad))


# ---- tests ----

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("op", A.DSA_OPS)
def test_shape_and_dtype(op, dtype):
    x = images(4, dtype=dtype)
    y = A.dsa(x, gen(0), strategy=op)
    assert y.shape == x.shape, f"{op}: shape {tuple(y.shape)} != {tuple(x.shape)}"
    assert y.dtype == dtype, f"{op}: dtype {y.dtype} != {dtype}"
    z = A.simple_augment(x, gen(0))
    assert z.shape == x.shape and z.dtype == dtype, f"simple_augment: shape/dtype {z.shape} {z.dtype}"


@pytest.mark.parametrize("op", A.DSA_OPS)
def test_each_op_matches_per_sample_reference(op):
    x = images(4, size=8 if op in ("scale", "rotate") else 16)
    params = A.sample_dsa(4, x.shape[-1], gen(3), strategy=op)
    assert params.op == op, f"strategy {op!r} drew {params.op!r}"
    y = A.apply_dsa(x, params)
    for k in range(4):
        expected = ref_op(x[k], op, params.values, k)
        assert torch.allclose(y[k], expected, atol=1e-5), \
            f"{op}: sample {k} differs from the reference by {(y[k] - expected).abs().max():.2e}"


def test_parameter_ranges_match_papers_md():
    n, h = 4000, 32
    v = {op: A.sample_dsa(n, h, gen(7), strategy=op).values for op in A.DSA_OPS}
    c = v["color"]
    assert c["brightness"].min() >= -0.5 and c["brightness"].max() < 0.5, "brightness shift not in [-0.5, 0.5)"
    assert c["saturation"].min() >= 0 and c["saturation"].max() < 2, "saturation factor not in [0, 2)"
    assert c["contrast"].min() >= 0.5 and c["contrast"].max() < 1.5, "contrast factor not in [0.5, 1.5)"
    assert set(v["crop"]["dy"].tolist()) == set(range(-4, 5)), "crop shift at 32 px must cover {-4..4}"
    assert set(v["crop"]["dx"].tolist()) == set(range(-4, 5)), "crop shift at 32 px must cover {-4..4}"
    cut = v["cutout"]
    assert torch.all(cut["bottom"] - cut["top"] == 16), "cutout side at 32 px must be 16"
    centres = set((cut["top"] + 8).tolist())
    assert centres == set(range(0, 33)), f"cutout centres should be 0..32 (even side), got {sorted(centres)}"
    frac = v["flip"]["flip"].float().mean().item()
    assert 0.45 < frac < 0.55, f"flip probability should be 0.5, got {frac:.3f}"
    for name in ("scale_x", "scale_y"):
        s = v["scale"][name]
        assert s.min() >= 1 / 1.2 - 1e-6 and s.max() <= 1.2, f"{name} not in [1/1.2, 1.2]"
    deg = v["rotate"]["angle"] * 180 / math.pi
    assert deg.min() >= -15 and deg.max() <= 15 and deg.abs().max() > 14, "rotation not spread over ±15°"
    cut64 = A.sample_dsa(10, 64, gen(0), strategy="cutout").values
    assert torch.all(cut64["bottom"] - cut64["top"] == 32), "cutout side at 64 px must be 32"
    assert A.sample_dsa(2000, 64, gen(0), strategy="crop").values["dy"].abs().max() == 8, "crop at 64 px is 8"


def test_op_group_drawn_uniformly():
    g = gen(0)
    counts = {op: 0 for op in A.DSA_OPS}
    for _ in range(1200):
        counts[A.sample_dsa(1, 32, g).op] += 1
    assert all(150 < c < 250 for c in counts.values()), f"op counts not uniform: {counts}"


def test_determinism_and_seed_dependence():
    x = images(8, size=32)
    for op in A.DSA_OPS + (A.DSA_STRATEGY,):
        y1, y2 = A.dsa(x, gen(5), strategy=op), A.dsa(x, gen(5), strategy=op)
        assert torch.equal(y1, y2), f"{op}: same seed gave different outputs"
        y3 = A.dsa(x, gen(6), strategy=op)
        assert not torch.equal(y1, y3), f"{op}: seeds 5 and 6 gave identical outputs"
    for f in (A.simple_augment, lambda x, g: A.combined_augment(x, torch.arange(8) % 2 == 0, g)):
        assert torch.equal(f(x, gen(1)), f(x, gen(1))), "same seed gave different outputs"
        assert not torch.equal(f(x, gen(1)), f(x, gen(2))), "different seeds gave identical outputs"


def test_generator_state_is_the_only_randomness():
    x = images(8, size=32)
    torch.manual_seed(0)
    y1 = A.dsa(x, gen(9))
    torch.manual_seed(123)
    y2 = A.dsa(x, gen(9))
    assert torch.equal(y1, y2), "output depends on the global RNG"


@pytest.mark.parametrize("op", A.DSA_OPS)
def test_siamese_replays_identical_transform(op):
    size = 8 if op in ("scale", "rotate") else 16
    params = A.sample_dsa(7, size, gen(11), strategy=op, siamese=True)
    assert params.batch_size == 1, "a siamese draw should hold one parameter set"
    real, syn = images(3, size, seed=1), images(5, size, seed=2)
    y_real, y_syn = A.apply_dsa(real, params), A.apply_dsa(syn, params)
    assert torch.equal(A.apply_dsa(real.clone(), params), y_real), f"{op}: replay on a clone differs"
    for batch, out in ((real, y_real), (syn, y_syn)):
        for k in range(batch.shape[0]):
            expected = ref_op(batch[k], op, params.values, 0)
            assert torch.allclose(out[k], expected, atol=1e-5), f"{op}: sample {k} not given sample 0's transform"


def test_siamese_full_strategy_same_as_one_by_one():
    x = images(6, size=32)
    for seed in range(12):
        params = A.sample_dsa(6, 32, gen(seed), siamese=True)
        y = A.apply_dsa(x, params)
        singles = torch.cat([A.apply_dsa(x[k:k + 1], params) for k in range(6)])
        assert torch.allclose(y, singles, atol=1e-6), f"{params.op}: batch and per-image replay differ"


@pytest.mark.parametrize("op", A.DSA_OPS)
def test_gradients_reach_images(op):
    x = images(4, size=32).requires_grad_()
    weights = torch.randn(4, 3, 32, 32, generator=gen(2))
    (A.dsa(x, gen(4), strategy=op) * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all(), f"{op}: gradient missing or non-finite"
    assert x.grad.abs().sum() > 0, f"{op}: gradient is zero"


def test_combined_gradients_and_selected_untouched_by_dsa():
    x = images(6, size=32).requires_grad_()
    mask = torch.tensor([True, False, True, False, False, True])
    A.combined_augment(x, mask, gen(0)).sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad[~mask].abs().sum() > 0), "combined: no gradient to distilled"


def test_combined_selected_images_only_crop_flipped():
    x = images(8, size=16)
    mask = torch.tensor([True, False] * 4)
    for seed in range(3):
        y = A.combined_augment(x, mask, gen(seed), strategy="color")
        for k in range(8):
            if mask[k]:
                assert is_crop_flip(y[k], x[k]), f"seed {seed}: selected image {k} is not a crop+flip of itself"
            else:
                assert not is_crop_flip(y[k], x[k]), f"seed {seed}: distilled image {k} was only crop/flipped"


def test_combined_all_selected_is_simple_augment():
    x = images(8, size=32)
    y = A.combined_augment(x, torch.ones(8, dtype=torch.bool), gen(4))
    assert torch.equal(y, A.simple_augment(x, gen(4))), "all-selected combined must equal crop+flip"
    for k in range(8):
        assert is_crop_flip(y[k], x[k]), f"simple_augment image {k} is not a 4-px crop + flip"


def test_combined_draws_op_per_image():
    x = images(32, size=16)
    y = A.combined_augment(x, torch.zeros(32, dtype=torch.bool), gen(0), strategy="color_flip")
    flipped = [torch.equal(y[k], x[k]) or torch.equal(y[k], x[k].flip(-1)) for k in range(32)]
    assert any(flipped) and not all(flipped), \
        "each distilled image should draw its own op group (both color and flip expected in 32 images)"


def test_bad_inputs_raise_value_error():
    x = images(4)
    with pytest.raises(ValueError, match="valid ops are"):
        A.dsa(x, gen(0), strategy="color_zoom")
    with pytest.raises(ValueError, match="valid ops are"):
        A.sample_dsa(4, 16, gen(0), strategy="")
    with pytest.raises(ValueError, match="drawn for 4 images"):
        A.apply_dsa(images(3), A.sample_dsa(4, 16, gen(0)))
    with pytest.raises(ValueError, match="size"):
        A.apply_dsa(images(4, size=32), A.sample_dsa(4, 16, gen(0)))
    with pytest.raises(ValueError, match="float images"):
        A.dsa(x.to(torch.uint8), gen(0))
    with pytest.raises(ValueError, match="is_selected"):
        A.combined_augment(x, torch.ones(3, dtype=torch.bool), gen(0))
    with pytest.raises(ValueError, match="valid modes"):
        A.augment(x, "mixup", gen(0))


def test_augment_modes_dispatch():
    x, mask = images(4, size=32), torch.tensor([True, False, True, False])
    assert torch.equal(A.augment(x, "dsa", gen(1)), A.dsa(x, gen(1))), "mode 'dsa' must call dsa"
    assert torch.equal(A.augment(x, "simple", gen(1)), A.simple_augment(x, gen(1))), "mode 'simple' mismatch"
    assert torch.equal(A.augment(x, "combined", gen(1), mask), A.combined_augment(x, mask, gen(1))), \
        "mode 'combined' mismatch"
    assert A.augment(x, "none", gen(1)) is x, "mode 'none' must return the input"
