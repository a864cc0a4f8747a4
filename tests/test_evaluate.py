"""Tests for ddbook.evaluate: result shapes, determinism, LR schedules, soft labels, input errors."""
import math

import numpy as np
import pytest
import torch
from conftest import tiny_sets

from ddbook.data import normalize
from ddbook.evaluate import (MTTEvalConfig, SelMatchEvalConfig, evaluate_mtt, evaluate_selmatch,
                             mtt_optimizer, mtt_schedule, selmatch_epochs, selmatch_optimizer,
                             subset_ratio)

CPU = "cpu"
MTT = MTTEvalConfig(width=8, depth=2, epochs=4, batch_size=8, runs=2, seed=3)
SEL = SelMatchEvalConfig(network="ConvNetBN", width=8, depth=2, epochs=3, batch_size=8, runs=2)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sets():
    return tiny_sets(20, 30)


def test_mtt_result_shapes_and_bookkeeping(sets):
    x, y, xt, yt = sets
    r = evaluate_mtt(x, y, 0.01, xt, yt, MTT, device=CPU)
    assert r.correct.shape == (2, 30) and r.correct.dtype == bool, \
        f"correct is {r.correct.dtype} {r.correct.shape}, want bool (2, 30)"
    assert np.allclose(r.accuracies, r.correct.mean(axis=1)), "accuracies disagree with correct"
    assert r.mean == pytest.approx(np.mean(r.accuracies)), "mean is not the mean of the runs"
    assert r.std == pytest.approx(np.std(r.accuracies)), "std is not np.std of the runs"
    assert (r.epochs, r.steps) == (4, 4 * 3), f"epochs/steps {r.epochs}/{r.steps}, want 4/12"
    assert r.seeds == (3, 4), f"run i must be initialised from seed + i, got seeds {r.seeds}"
    assert "final epoch" in r.eval_point, f"evaluation point not declared: {r.eval_point!r}"
    d = r.to_dict()
    assert d["runs"] == 2 and d["schedule"]["decay_after_epochs"] == 2, f"to_dict: {d}"


def test_mtt_is_deterministic(sets):
    x, y, xt, yt = sets
    a = evaluate_mtt(x, y, 0.01, xt, yt, MTT, device=CPU)
    b = evaluate_mtt(x, y, 0.01, xt, yt, MTT, device=CPU)
    assert np.array_equal(a.correct, b.correct), "same seed must give the same predictions"
    assert a.train_loss == b.train_loss, f"same seed, different losses {a.train_loss} {b.train_loss}"
    assert a.train_loss[0] != a.train_loss[1], "runs 0 and 1 must use different seeds"


def test_mtt_lr_schedule_halfway_decay(sets):
    x, y, xt, yt = sets
    r = evaluate_mtt(x, y, 0.02, xt, yt, MTT, device=CPU)
    want = (0.02, 0.02, 0.002, 0.002)
    assert np.allclose(r.lrs, want), f"lrs per epoch {r.lrs}, want {want}"
    model = torch.nn.Linear(2, 2)
    for config, last_full in ((MTTEvalConfig(), 499), (MTTEvalConfig(reference_epochs=True), 501)):
        opt, sched, epochs = mtt_optimizer(model, 0.01, config)
        lrs = []
        for _ in range(epochs):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert epochs == (1001 if config.reference_epochs else 1000), f"{epochs} epochs"
        assert lrs[last_full] == pytest.approx(0.01) and lrs[last_full + 1] == pytest.approx(1e-3), \
            f"reference={config.reference_epochs}: lr must drop after 0-based epoch {last_full}"
    assert mtt_schedule(MTTEvalConfig()) == (1000, 500), "default: 1000 epochs, 500 at full lr"


def test_selmatch_cosine_schedule_and_epochs(sets):
    x, y, xt, yt = sets
    opt, sched, epochs = selmatch_optimizer(torch.nn.Linear(2, 2), 1000, SelMatchEvalConfig())
    lrs = []
    for _ in range(epochs + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1), f"starts at {lrs[0]}, want 0.1"
    assert lrs[500] == pytest.approx((0.1 + 0.001) / 2), f"mid-way {lrs[500]}, want 0.0505"
    assert lrs[1000] == pytest.approx(0.001), f"T_max: {lrs[1000]}, want eta_min 0.001"
    for ratio, want in ((0.05, 1000), (0.1, 500), (0.2, 250), (0.3, 167)):
        assert selmatch_epochs(ratio) == want, f"ratio {ratio}: {selmatch_epochs(ratio)} epochs"
    r = evaluate_selmatch(x, y, xt, yt, torch.arange(20) < 8, config=SEL, device=CPU)
    cos = [0.001 + 0.099 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]
    assert np.allclose(r.lrs, cos), f"SelMatch lrs {r.lrs}, want {cos}"
    assert r.correct.shape == (2, 30) and r.protocol == "selmatch", "SelMatch result malformed"


def test_soft_labels_datm(sets):
    x, y, xt, yt = sets
    soft = torch.nn.functional.one_hot(y, 4).float() * 3.0  # logits (20, 4)
    cfg = MTTEvalConfig(width=8, depth=2, epochs=2, batch_size=128, runs=1)
    r = evaluate_mtt(x, soft, torch.tensor(0.01), xt, yt, cfg, device=CPU)
    assert r.correct.shape == (1, 30) and math.isfinite(r.train_loss[0]), "soft labels failed"
    # the training-set accuracy is measured against the soft labels' argmax, per run
    fit = MTTEvalConfig(width=8, depth=2, epochs=60, batch_size=128, runs=2, augment="none")
    r = evaluate_mtt(x, soft, 0.05, xt, yt, fit, device=CPU)
    assert len(r.train_accuracy) == 2 and r.to_dict()["train_accuracy"] == r.train_accuracy
    assert min(r.train_accuracy) >= 0.9, f"20 images, 60 epochs: {r.train_accuracy}"
    flipped = evaluate_mtt(x, soft.roll(1, dims=1), 0.05, xt, yt, fit, device=CPU)
    assert min(flipped.train_accuracy) >= 0.9, \
        f"labels rolled by one class: still fitted, measured against the labels {flipped}"


def test_real_subset_ratio(cifar10):
    assert subset_ratio(50, cifar10.train.labels) == pytest.approx(0.01), "IPC 50 = 1 %"
    with pytest.raises(ValueError, match="smallest class"):
        subset_ratio(5001, cifar10.train.labels)
    with pytest.raises(ValueError, match="smallest class"):
        subset_ratio(2, cifar10.train.take_per_class(1, seed=0).labels)
    with pytest.raises(ValueError, match="subset ratio"):
        selmatch_epochs(0.0)


def test_real_images_evaluate(cifar10):
    train = cifar10.train.take_per_class(2, seed=0)
    test = cifar10.test.take_per_class(3, seed=0)
    x, xt = (normalize(s.images, cifar10.mean, cifar10.std) for s in (train, test))
    cfg = MTTEvalConfig(width=8, depth=3, epochs=1, runs=1)
    r = evaluate_mtt(x, train.labels, 0.01, xt, test.labels, cfg, device=CPU)
    assert r.correct.shape == (1, 30), f"real-image evaluation gave {r.correct.shape}"


def test_bad_inputs_raise_clear_errors(sets):
    x, y, xt, yt = sets
    cases = [
        (lambda: evaluate_mtt(x[:0], y[:0], 0.01, xt, yt, MTT, device=CPU), "empty"),
        (lambda: evaluate_mtt(x, y[:5], 0.01, xt, yt, MTT, device=CPU), "labels must be"),
        (lambda: evaluate_mtt(x, y, 0.01, xt, yt[:4], MTT, device=CPU), "test set"),
        (lambda: evaluate_mtt(x, torch.zeros(20, 3), 0.01, xt, yt, MTT, device=CPU), "classes"),
        (lambda: evaluate_mtt(x, y, 0.01, xt[:, :, :8], yt, MTT, device=CPU), "differ in shape"),
        (lambda: evaluate_mtt(x, y, -1.0, xt, yt, MTT, device=CPU), "positive finite"),
        (lambda: evaluate_mtt(x, y, float("nan"), xt, yt, MTT, device=CPU), "positive finite"),
        (lambda: evaluate_mtt(x, y, 0.01, xt, yt, MTTEvalConfig(network="ResNet99"), device=CPU),
         "unknown network"),
        (lambda: evaluate_selmatch(x, y, xt, yt, config=SEL, device=CPU), "needs is_selected"),
        (lambda: evaluate_selmatch(x, y, xt, yt, torch.ones(5, dtype=torch.bool), config=SEL,
                                   device=CPU), "is_selected must be bool"),
        (lambda: evaluate_selmatch(x, y, xt, yt, torch.arange(20) < 8,
                                   config=SelMatchEvalConfig(epochs=None), device=CPU),
         "subset ratio"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
