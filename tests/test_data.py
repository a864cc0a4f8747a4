"""The data module on the real CIFAR-10: shapes, order, cache, normalisation, clear errors."""
from __future__ import annotations

import pickle
import time
import zipfile

import numpy as np
import pytest
import torch

import ddbook
from ddbook import data as data_mod


def test_shapes_and_label_order(cifar10):
    ds = cifar10
    assert ds.classes[:3] == ("airplane", "automobile", "bird"), f"class order wrong: {ds.classes}"
    assert ds.train.images.shape == (50_000, 3, 32, 32) and ds.train.images.dtype == torch.uint8
    assert ds.test.images.shape == (10_000, 3, 32, 32)
    assert torch.equal(torch.bincount(ds.train.labels), torch.full((10,), 5000)), "5000 per class"
    assert torch.equal(torch.bincount(ds.test.labels), torch.full((10,), 1000)), "1000 per class"
    # the zip yields class-sorted order: labels non-decreasing, ranks 0..4999 within each class
    assert ds.train.order == "class-sorted"
    assert (ds.train.labels.diff() >= 0).all(), "class-sorted labels must be non-decreasing"
    assert torch.equal(ds.train.class_rank[:5000], torch.arange(5000)), "ranks within class 0"


def test_class_indices_are_per_class_and_ordered(cifar10):
    idx = cifar10.train.class_indices(3)
    assert len(idx) == 5000 and (cifar10.train.labels[idx] == 3).all(), "indices of class 3 only"
    assert (cifar10.train.class_rank[idx].diff() == 1).all(), "original within-class order"
    per = cifar10.train.per_class_indices()
    assert sum(len(i) for i in per) == 50_000, "per-class indices cover the split"


def test_second_load_hits_the_cache(cifar10, monkeypatch):
    def no_decode(*a, **k):
        raise AssertionError("the second load decoded the archive again instead of using the cache")

    monkeypatch.setattr(data_mod, "_decode_zip", no_decode)
    t0 = time.perf_counter()
    again = ddbook.load_dataset("cifar10")
    seconds = time.perf_counter() - t0
    assert seconds < 2.0, f"a cached load took {seconds:.2f} s (must be well under 2 s)"
    assert torch.equal(again.train.images[:100], cifar10.train.images[:100]), "cache changed the data"


def test_take_per_class_is_balanced_and_seeded(cifar10):
    a = cifar10.train.take_per_class(7, seed=3)
    b = cifar10.train.take_per_class(7, seed=3)
    c = cifar10.train.take_per_class(7, seed=4)
    assert torch.equal(torch.bincount(a.labels), torch.full((10,), 7)), "7 per class"
    assert torch.equal(a.images, b.images), "same seed must give the same subset"
    assert not torch.equal(a.images, c.images), "different seeds should differ"
    with pytest.raises(ValueError, match="at most 5000"):
        cifar10.train.take_per_class(5001, seed=0)


def test_normalize_round_trip(cifar10):
    x = cifar10.train.images[:64]
    z = ddbook.normalize(x, cifar10.mean, cifar10.std)
    assert z.dtype == torch.float32 and z.shape == x.shape
    back = ddbook.denormalize(z, cifar10.mean, cifar10.std)
    assert torch.allclose(back * 255, x.float(), atol=1e-3), "denormalize inverts normalize"
    full = ddbook.normalize(cifar10.train.images[::10], cifar10.mean, cifar10.std)
    assert full.mean().abs() < 0.15, f"normalised mean should be near 0, got {full.mean():.3f}"


def test_missing_dataset_names_paths_and_fix(tmp_path):
    with pytest.raises(ddbook.DataNotFoundError) as err:
        ddbook.load_dataset("cifar10", source=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "cifar10-jpeg.zip") in msg, "message lists the paths tried"
    assert "DDBOOK_DATA" in msg, "message names the fix"


def test_missing_dataset_via_environment(tmp_path, monkeypatch):
    from ddbook import paths

    monkeypatch.setenv("DDBOOK_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setattr(paths, "repo_root", lambda: tmp_path / "repo")
    with pytest.raises(ddbook.DataNotFoundError, match="nowhere"):
        ddbook.load_dataset("cifar10")


def test_corrupt_archive(tmp_path, monkeypatch):
    monkeypatch.setenv("DDBOOK_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "cifar10-jpeg.zip"
    bad.write_bytes(b"this is not a zip archive" * 100)
    with pytest.raises(ddbook.CorruptDataError, match="not a readable zip"):
        ddbook.load_dataset("cifar10", source=bad)


def test_truncated_archive(tmp_path, monkeypatch):
    monkeypatch.setenv("DDBOOK_CACHE", str(tmp_path / "cache"))
    small = tmp_path / "cifar10-jpeg.zip"
    with zipfile.ZipFile(small, "w") as z:
        z.writestr("train/airplane/0000.jpg", b"\xff\xd8 not really a jpeg")
    with pytest.raises(ddbook.CorruptDataError, match="expected 50000"):
        ddbook.load_dataset("cifar10", source=small)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="cifar10"):
        ddbook.load_dataset("mnist")


def _original_order(ds):
    """Permutation from the class-sorted zip order to the original CIFAR order (via the C-score labels)."""
    from ddbook.scores import _find

    labels = np.load(_find("cscores_CIFAR10.npz"))["labels"]
    perm = np.empty(len(labels), np.int64)
    for c in range(10):
        perm[np.flatnonzero(labels == c)] = ds.train.class_indices(c).numpy()
    return labels, perm


def _write_torchvision_copy(ds, root):
    """Write ds in torchvision's cifar-10-batches-py layout (original order)."""
    labels, perm = _original_order(ds)
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    images = ds.train.images.numpy()[perm].reshape(50_000, -1)
    for b in range(5):
        sl = slice(b * 10_000, (b + 1) * 10_000)
        blob = {b"data": images[sl], b"labels": labels[sl].tolist()}
        (folder / f"data_batch_{b + 1}").write_bytes(pickle.dumps(blob))
    blob = {b"data": ds.test.images.numpy().reshape(10_000, -1), b"labels": ds.test.labels.tolist()}
    (folder / "test_batch").write_bytes(pickle.dumps(blob))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in ds.classes]}))
    return folder, perm


def test_torchvision_layout_gives_original_order_and_same_scores(cifar10, tmp_path, monkeypatch):
    monkeypatch.setenv("DDBOOK_CACHE", str(tmp_path / "cache"))
    folder, perm = _write_torchvision_copy(cifar10, tmp_path)
    tv = ddbook.load_dataset("cifar10", source=tmp_path)
    assert tv.train.order == "original" and tv.source == str(folder)
    assert torch.equal(tv.train.images, cifar10.train.images[perm]), "same images, original order"
    a = ddbook.load_published_scores(cifar10, "cscore").values
    b = ddbook.load_published_scores(tv, "cscore").values
    assert torch.equal(b, a[perm]), "both orders must receive each image's own score"


def test_travel_copy_holds_the_same_jpegs_and_decodes_to_the_same_arrays(tmp_path, monkeypatch):
    """The compact copy for a lent GPU (data --travel-copy): the zip's JPEG bytes in one xz tar,
    written deterministically, decoded to identical arrays (a 3-image archive stands in for the
    60,000-image one, whose copy was checked the same way: identical train and test tensors)."""
    import dataclasses

    from ddbook import data as data_mod

    monkeypatch.setenv("DDBOOK_CACHE", str(tmp_path / "cache"))
    real = data_mod._locate(data_mod.SPECS["cifar10"], None)
    names = ["train/airplane/0000.jpg", "train/automobile/0003.jpg", "test/truck/0007.jpg"]
    small = tmp_path / "src" / "cifar10-jpeg.zip"
    small.parent.mkdir()
    with zipfile.ZipFile(real) as src, zipfile.ZipFile(small, "w") as z:
        for n in names:
            z.writestr(n, src.read(n))
    monkeypatch.setitem(data_mod.SPECS, "cifar10",
                        dataclasses.replace(data_mod.SPECS["cifar10"], n_train=2, n_test=1))
    copy = data_mod.write_travel_copy(tmp_path / "a", source=small)
    again = data_mod.write_travel_copy(tmp_path / "b", source=small)
    assert copy.name == "cifar10-jpeg.tar.xz" and copy.read_bytes() == again.read_bytes()
    assert data_mod._tar_members(copy) == data_mod._zip_members(small)
    a = ddbook.load_dataset("cifar10", source=small)
    b = ddbook.load_dataset("cifar10", source=tmp_path / "a")   # a folder holding the copy
    assert b.source == str(copy)
    for split in ("train", "test"):
        x, y = getattr(a, split), getattr(b, split)
        assert torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels)
        assert torch.equal(x.class_rank, y.class_rank)
    bad = tmp_path / "c" / "cifar10-jpeg.tar.xz"
    bad.parent.mkdir()
    bad.write_bytes(b"not xz" * 50)
    with pytest.raises(ddbook.CorruptDataError, match="not a readable xz-compressed tar"):
        ddbook.load_dataset("cifar10", source=bad)
    with pytest.raises(ddbook.DataNotFoundError, match="made from cifar10-jpeg.zip"):
        data_mod.write_travel_copy(tmp_path / "d", source=tmp_path / "a")
