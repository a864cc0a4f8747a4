"""Tests for ddbook.train: shapes, determinism, soft labels, GSAM, errors, progress bars."""
import io

import pytest
import torch
import torch.nn.functional as F

from ddbook.data import normalize
from ddbook.networks import flatten_params, get_network
from ddbook.train import (GSAMStep, accuracy, check_labels, correct, predict, progress,
                          soft_cross_entropy, train_epoch)

CPU = "cpu"


pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic(n=48, size=16, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.arange(n) % classes


def tiny_net(seed=0, name="ConvNet", classes=4, size=16):
    return get_network(name, classes, (size, size), width=8, depth=2, seed=seed, device=CPU)


def run_epochs(seed, epochs=2, mode="dsa", labels=None, name="ConvNet"):
    x, y = synthetic()
    model = tiny_net(name=name)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    losses = [train_epoch(model, x, y if labels is None else labels, opt, 16, gen, mode)
              for _ in range(epochs)]
    return flatten_params(model), torch.stack(losses)


def test_predict_correct_accuracy_shapes():
    x, y = synthetic()
    model = tiny_net()
    logits = predict(model, x, batch_size=20)
    assert logits.shape == (48, 4), f"predict gave {tuple(logits.shape)}, want (48, 4)"
    right = correct(model, x, y, batch_size=7)
    assert right.dtype == torch.bool and right.shape == (48,), f"correct: {right.dtype} {right.shape}"
    acc = accuracy(model, x, y)
    assert isinstance(acc, float) and 0 <= acc <= 1, f"accuracy {acc!r} is not a float in [0, 1]"
    assert acc == pytest.approx(right.float().mean().item()), "accuracy disagrees with correct"
    assert model.training, "predict must restore the model's train mode"


def test_train_epoch_is_deterministic():
    p1, l1 = run_epochs(seed=3)
    p2, l2 = run_epochs(seed=3)
    assert torch.equal(p1, p2), "same generator seed must give bit-identical parameters"
    assert torch.equal(l1, l2), "same generator seed must give identical losses"
    p3, _ = run_epochs(seed=4)
    assert not torch.equal(p1, p3), "another generator seed must give another shuffle/augmentation"


def test_train_epoch_returns_device_loss_and_steps_scheduler():
    x, y = synthetic()
    model = tiny_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    loss = train_epoch(model, x, y, opt, 16, torch.Generator().manual_seed(0), "none",
                       scheduler=sched)
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0, "loss must be a 0-d tensor"
    assert torch.isfinite(loss), f"loss {loss} is not finite"
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05), "scheduler must step once per epoch"


def test_soft_cross_entropy_matches_probability_targets():
    g = torch.Generator().manual_seed(1)
    logits, target = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    want = F.cross_entropy(logits, F.softmax(target, dim=1))
    got = soft_cross_entropy(logits, target)
    assert torch.allclose(got, want, atol=1e-6), f"soft CE {got} != cross_entropy {want}"


def test_soft_labels_train_on_real_images(cifar10):
    split = cifar10.train.take_per_class(10, seed=0)
    x = normalize(split.images, cifar10.mean, cifar10.std)  # (100, 3, 32, 32)
    soft = F.one_hot(split.labels, 10).float() * 4.0  # logits, peaked on the true class
    model = get_network("ConvNet", 10, width=8, depth=3, seed=0, device=CPU)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    losses = [float(train_epoch(model, x, soft, opt, 50, gen, "none")) for _ in range(4)]
    assert losses[-1] < losses[0], f"soft-label loss did not fall: {losses}"


def test_gsam_without_perturbation_is_sgd():
    x, y = synthetic()
    a, b = tiny_net(), tiny_net()
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1)
    la = GSAMStep(rho=0.0, alpha=0.0)(a, x, y, opt_a)
    opt_b.zero_grad()
    lb = F.cross_entropy(b(x), y)
    lb.backward()
    opt_b.step()
    assert torch.allclose(la, lb), f"GSAM loss {la} != plain loss {lb}"
    assert torch.allclose(flatten_params(a), flatten_params(b), atol=1e-6), \
        "GSAM with rho = 0 and alpha = 0 must take the plain SGD step"


def test_gsam_perturbed_pass_keeps_bn_running_stats():
    x, y = synthetic()
    a, b = tiny_net(name="ConvNetBN"), tiny_net(name="ConvNetBN")
    GSAMStep()(a, x, y, torch.optim.SGD(a.parameters(), lr=0.1))
    b(x)  # one forward in train mode: the only running-stat update GSAM may make
    for (name, ba), bb in zip(a.named_buffers(), b.buffers()):
        if "running" in name:
            assert torch.allclose(ba, bb), f"GSAM's perturbed pass changed {name}"
    p_sgd, _ = run_epochs(seed=0, epochs=1, name="ConvNetBN")
    assert torch.isfinite(flatten_params(a)).all(), "GSAM produced non-finite parameters"
    assert not torch.equal(flatten_params(a)[:10], p_sgd[:10]), "GSAM step equals SGD's"


def test_bad_inputs_raise_clear_errors():
    x, y = synthetic()
    model = tiny_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="unknown augmentation mode"):
        train_epoch(model, x, y, opt, 16, gen, "cutmix")
    with pytest.raises(ValueError, match="batch_size"):
        train_epoch(model, x, y, opt, 0, gen)
    with pytest.raises(ValueError, match="labels must be"):
        check_labels(x, y[:-1])
    with pytest.raises(ValueError, match="empty"):
        check_labels(x[:0], y[:0])
    with pytest.raises(ValueError, match="soft labels have 3 classes"):
        check_labels(x, torch.zeros(48, 3), num_classes=4)
    with pytest.raises(ValueError, match=r"lie in \[0, 2\)"):
        check_labels(x, y, num_classes=2)


def test_progress_is_silent_with_tqdm_disable(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    items = range(3)
    bar = progress(items, "x")
    assert bar.inner is items and list(bar) == [0, 1, 2], \
        "TQDM_DISABLE=1: no bar at all, the iterable itself (counted for the Ctrl-C message)"
    monkeypatch.setenv("TQDM_DISABLE", "0")
    bar = progress(range(3), "x", file=io.StringIO())
    assert not bar.disable, "TQDM_DISABLE=0 must leave the bar on"
    assert list(bar) == [0, 1, 2], "progress must yield the iterable's items"
