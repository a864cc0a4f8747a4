"""Tests for ddbook.synset: the file format, the reference repositories' files, initialisations."""
from __future__ import annotations

import pytest
import torch
from conftest import tiny_sets

from ddbook.experts import ExpertConfig, train_experts
from ddbook.synset import (correct_indices, expert_logits, expert_soft_labels, from_indices,
                           load_reference, load_synset, make_synset, per_class_random,
                           save_synset, split_per_class)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_save_load_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    s = make_synset(torch.randn(6, 3, 8, 8, generator=g), torch.randn(6, 3, generator=g),
                    torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([False] * 3 + [True] * 3),
                    syn_lr=0.0123, meta={"init": "window", "iteration": 7})
    back = load_synset(save_synset(tmp_path / "set.pt", s))
    for name in ("images", "labels", "classes", "is_selected"):
        assert torch.equal(getattr(back, name), getattr(s, name)), f"{name} changed in the file"
    assert back.syn_lr == 0.0123 and back.meta == s.meta, f"syn_lr/meta: {back.syn_lr}, {back.meta}"
    blob = torch.load(tmp_path / "set.pt", weights_only=True)
    assert blob["format"] == "ddbook-synset" and blob["version"] == 1, "documented header"


def test_reference_files(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(20, 3, 8, 8, generator=g)
    torch.save(images, tmp_path / "images_best.pt")
    torch.save(torch.arange(10).repeat_interleave(2), tmp_path / "labels_best.pt")
    torch.save(torch.tensor(0.02, requires_grad=True), tmp_path / "lr_best.pt")
    mtt = load_reference(tmp_path / "images_best.pt", tmp_path / "labels_best.pt",
                         tmp_path / "lr_best.pt")
    assert torch.equal(mtt.images, images) and not mtt.soft, "MTT: images and hard labels as saved"
    assert abs(mtt.syn_lr - 0.02) < 1e-8 and mtt.num_selected == 0, f"MTT lr {mtt.syn_lr}"
    logits = torch.randn(20, 10, generator=g)
    torch.save(logits, tmp_path / "soft.pt")
    datm = load_reference(tmp_path / "images_best.pt", tmp_path / "soft.pt", syn_lr=0.01)
    assert datm.soft and torch.equal(datm.classes, logits.argmax(1)), "DATM: soft logits, argmax"
    sel = load_reference(tmp_path / "images_best.pt", tmp_path / "labels_best.pt",
                         tmp_path / "lr_best.pt", selected_per_class=1)
    assert sel.is_selected.tolist() == [False] * 10 + [True] * 10, \
        "SelMatch: the last K * spc images are the selected ones"
    torch.save([images[:12], images[12:]], tmp_path / "chunks.pt")
    tiny = load_reference(tmp_path / "chunks.pt", num_classes=10, syn_lr=0.01)
    assert torch.equal(tiny.images, images) and tiny.labels.tolist()[:4] == [0, 0, 1, 1], \
        "chunked files are concatenated; no labels file: class-major labels"
    with pytest.raises(ValueError, match="lr_best"):
        load_reference(tmp_path / "images_best.pt", tmp_path / "labels_best.pt")
    with pytest.raises(ValueError, match="load_reference"):
        load_synset(tmp_path / "images_best.pt")


def test_split_and_storage_order():
    idx = torch.arange(20)                    # 2 classes x 10, hardest first within each
    distill, select = split_per_class(idx, 10, 0.6)
    assert select.tolist() == [0, 1, 2, 3, 10, 11, 12, 13], "spc = 4 hardest per class selected"
    assert distill.tolist() == [4, 5, 6, 7, 8, 9, 14, 15, 16, 17, 18, 19], "cpc = 6 distilled"
    x, y = torch.randn(20, 3, 4, 4), torch.arange(2).repeat_interleave(10)
    s = from_indices(x, y, distill, select, syn_lr=0.01)
    assert s.is_selected.tolist() == [False] * 12 + [True] * 8, "[distilled; selected] order"
    assert torch.equal(s.images[12], x[0]) and s.meta["source_indices"][:2] == [4, 5], \
        "images and their source indices follow the storage order"
    picks = per_class_random(y, 3, torch.Generator().manual_seed(0))
    assert y[picks].tolist() == [0, 0, 0, 1, 1, 1] and len(set(picks.tolist())) == 6, \
        "per-class random picks are class-major and distinct"


@pytest.fixture(scope="module")
def buffer(tmp_path_factory):
    x, y, xt, yt = tiny_sets(48, 8, size=8, classes=4)
    cfg = ExpertConfig(network="ConvNet", width=8, depth=2, epochs=2, batch_size=16)
    return train_experts(cfg, x, y, 2, folder=tmp_path_factory.mktemp("experts"), device="cpu"), \
        x, y


def test_soft_labels_average_the_correct_experts(buffer):
    buf, x, y = buffer
    images, classes = x[:12], y[:12]
    per = torch.stack([expert_logits(buf, e, images) for e in buf.experts()])   # (E, n, K)
    right = per.argmax(2) == classes                                           # (E, n)
    logits, count = expert_soft_labels(buf, images, classes)
    for i in range(len(images)):
        want = per[right[:, i], i].mean(0) if right[:, i].any() else per[:, i].mean(0)
        assert torch.allclose(logits[i], want, atol=1e-6), \
            f"image {i}: the mean over the {int(right[:, i].sum())} correct experts"
    assert count.tolist() == right.sum(0).float().tolist(), "counts of correct experts"
    one, _ = expert_soft_labels(buf, images, classes, only_correct=False, experts=[0])
    assert torch.allclose(one, per[0], atol=1e-6), "DATM real init: one expert's logits"


def test_correct_indices(buffer):
    buf, x, y = buffer
    idx, filled = correct_indices(x, y, 3, buf, torch.Generator().manual_seed(0))
    assert y[idx].tolist() == [c for c in range(4) for _ in range(3)], "class-major, 3 per class"
    pred = torch.stack([expert_logits(buf, e, x[idx]).argmax(1) for e in buf.experts()])
    ok = (pred == y[idx]).any(0)
    assert int((~ok).sum()) <= filled, \
        f"images no expert gets right ({int((~ok).sum())}) must be counted as filled ({filled})"
