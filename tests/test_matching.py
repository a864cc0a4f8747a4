"""Tests for ddbook.matching: the maths against finite differences and a plain nn.Module loop,
the DATM and SelMatch options, checkpoint/resume, divergence, and a real-CIFAR-10 run."""
from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch
from conftest import tiny_sets

from ddbook import matching
from ddbook.augment import apply_dsa
from ddbook.experts import ExpertConfig, train_experts
from ddbook.matching import (DistillationDiverged, LoopConfig, MatchConfig, distill, make_plan,
                             make_student, matching_grads, matching_loss, sample_start_epoch,
                             start_epoch_bound, unroll)
from ddbook.networks import flatten_params, get_network
from ddbook.synset import from_indices, make_synset, per_class_random, split_per_class
from ddbook.train import classification_loss

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = "cpu"


def tiny_problem(network="ConvNet", dtype=torch.float64, soft=False, seed=0):
    """A width-4 depth-2 student on 8x8 images: (student, start, target, X, Y, plan, model)."""
    g = torch.Generator().manual_seed(seed)
    model = get_network(network, 2, (8, 8), width=4, depth=2, seed=seed, device=CPU).to(dtype)
    start = flatten_params(model)
    target = start + 0.05 * torch.randn(start.shape, generator=g, dtype=dtype)
    images = torch.randn(5, 3, 8, 8, generator=g, dtype=dtype)
    labels = torch.randn(5, 2, generator=g, dtype=dtype) if soft else torch.tensor([0, 0, 0, 1, 1])
    plan = make_plan(5, 3, 3, (8, 8), g)   # 3 steps of 3 images: cycles through a re-permutation
    return make_student(model), start, target, images, labels, plan, model


@pytest.mark.parametrize("network", ["ConvNet", "ConvNetBN"])
def test_gradients_match_finite_differences(network):
    student, start, target, x, y, plan, _ = tiny_problem(network, soft=True)
    x, y = x.requires_grad_(), y.requires_grad_()
    lr = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    gx, gy, glr = torch.autograd.grad(matching_loss(student, start, target, x, y, lr, plan),
                                      [x, y, lr])
    g = torch.Generator().manual_seed(1)
    eps = 1e-6
    for name, leaf, grad in (("images", x, gx), ("label logits", y, gy), ("alpha", lr, glr)):
        v = torch.randn(leaf.shape, generator=g, dtype=torch.float64)
        with torch.no_grad():
            args = {"images": x, "label logits": y, "alpha": lr}
            plus = {k: (a + eps * v if k == name else a) for k, a in args.items()}
            minus = {k: (a - eps * v if k == name else a) for k, a in args.items()}
        f = [float(matching_loss(student, start, target, d["images"], d["label logits"],
                                 d["alpha"], plan).detach()) for d in (plus, minus)]
        fd, an = (f[0] - f[1]) / (2 * eps), float((grad * v).sum())
        assert abs(fd - an) <= 1e-6 * max(1.0, abs(fd)), \
            f"{network}: d loss / d {name} along v: autograd {an:.10g}, finite diff. {fd:.10g}"


@pytest.mark.parametrize("batch", [False, True], ids=["instance-norm", "batch-norm"])
def test_custom_kernels_match_stock_ops_to_second_order(batch):
    F = torch.nn.functional
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    stock_norm = (lambda x, w, b: F.batch_norm(x, None, None, w, b, True, 0.0, 1e-5)) if batch \
        else (lambda x, w, b: F.group_norm(x, 3, w, b, 1e-5))
    norm = lambda x, w, b: matching._Norm.apply(x, w, b, 1e-5, batch)[0]
    assert torch.allclose(norm(x, w, b), stock_norm(x, w, b)), "norm forward differs"
    assert torch.autograd.gradgradcheck(norm, (x, w, b)), "norm double backward"
    assert torch.allclose(matching._AvgPool2.apply(x), F.avg_pool2d(x, 2)), \
        "2x2 pooling forward differs from avg_pool2d"
    assert torch.autograd.gradgradcheck(matching._AvgPool2.apply, (x,)), "pooling double backward"
    tail = lambda x, w, b: matching._NormReLUPool.apply(x, w, b, 1e-5, batch)[0]
    stock = lambda x, w, b: F.avg_pool2d(torch.relu(stock_norm(x, w, b)), 2)
    assert torch.allclose(tail(x, w, b), stock(x, w, b)), "fused norm-ReLU-pool forward"
    assert torch.autograd.gradgradcheck(tail, (x, w, b)), "fused norm-ReLU-pool double backward"
    # and the second derivatives equal the stock ops' (not only finite differences)
    for mine, ref in ((norm, stock_norm), (tail, stock)):
        v = torch.randn(mine(x, w, b).shape, generator=g, dtype=torch.float64)
        second = []
        for f in (mine, ref):
            gx, gw = torch.autograd.grad((f(x, w, b) * v).sum(), (x, w), create_graph=True)
            second.append(torch.autograd.grad((gx.square().sum() + gw.square().sum()), (x, w)))
        for a, c in zip(*second):
            assert torch.allclose(a, c, atol=1e-10), "second derivative differs from stock"


def test_recomputed_segments_give_the_same_gradients():
    student, start, target, x, y, plan, _ = tiny_problem(soft=True)
    x, y = x.requires_grad_(), y.requires_grad_()
    lr = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    parts_x, parts_y = [x[:3], x[3:].detach()], [y[:3], y[3:].detach()]
    ref = None
    for k in (0, 1, 2, 3):
        loss, grads = matching_grads(student, start, target, parts_x, parts_y, lr, plan,
                                     [x, y, lr], segments=k)
        if ref is None:
            ref = (loss, grads)
            assert float(grads[0][3:].abs().max()) == 0, "the frozen images must get no gradient"
            continue
        assert torch.allclose(loss, ref[0], rtol=1e-12), f"segments={k}: loss differs"
        for name, a, b in zip(("images", "labels", "alpha"), grads, ref[1]):
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-14), \
                f"segments={k}: gradient wrt {name} differs from the full graph's"


@pytest.mark.parametrize("network,impl", [("ConvNet", "auto"), ("ConvNetBN", "auto"),
                                          ("ConvNet", "module")])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_unrolled_student_equals_module_sgd_loop(network, impl, dtype):
    _, start, _, x, y, plan, model = tiny_problem(network, dtype=dtype)
    lr = 0.3
    theta = unroll(make_student(model, impl), start, x, y,
                   torch.tensor(lr, dtype=dtype), plan, create_graph=True)
    net = copy.deepcopy(model).train()
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    for step in plan:
        batch = apply_dsa(x[step.indices], step.dsa)
        loss = classification_loss(net(batch), y[step.indices])
        opt.zero_grad()
        loss.backward()
        opt.step()
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    err = float((theta.detach() - flatten_params(net)).abs().max())
    assert err <= tol * float(flatten_params(net).abs().max()), \
        f"{network}/{impl}/{dtype}: functional unroll and nn.Module SGD differ by {err:.3g}"


def test_start_epoch_sampler_support_and_expansion():
    cfg = MatchConfig(min_start_epoch=2, initial_max_start_epoch=5, max_start_epoch=12,
                      expansion_end=70)
    for it in (0, 1, 9, 10, 35, 69, 70, 71, 1000):
        want = min(12, 5 + (12 - 5) * it // 70)
        got = start_epoch_bound(it, cfg)
        assert got == want, f"U({it}) = {got}, want {want}"
    g = torch.Generator().manual_seed(0)
    for it, upper in ((0, 5), (40, 9), (500, 12)):
        draws = {sample_start_epoch(it, cfg, g) for _ in range(800)}
        assert draws == set(range(2, upper)), \
            f"iteration {it}: drew {sorted(draws)}, want [2, {upper})"
    flat = MatchConfig(max_start_epoch=4)
    assert {start_epoch_bound(it, flat) for it in (0, 10**6)} == {4}, "no expansion: U = T+"
    with pytest.raises(ValueError, match="initial_max_start_epoch"):
        MatchConfig(initial_max_start_epoch=3, max_start_epoch=4)   # expansion_end missing


def test_plan_cycles_through_permutations():
    plan = make_plan(10, 4, 6, (8, 8), torch.Generator().manual_seed(0), dsa=False)
    sizes = [len(s.indices) for s in plan]
    assert sizes == [4, 4, 2, 4, 4, 2], \
        f"batch sizes {sizes}: chunks of a permutation, the last smaller"
    for a, b in ((0, 3), (3, 6)):
        seen = torch.cat([s.indices for s in plan[a:b]]).sort().values
        assert torch.equal(seen, torch.arange(10)), f"steps {a}..{b - 1} must cover the set once"


# ------------------------------------------------------------------------------------------
# the loop, on random data with two tiny experts


@pytest.fixture(scope="module")
def data():
    return tiny_sets(48, 8, size=8, classes=4)


@pytest.fixture(scope="module")
def buffer(data, tmp_path_factory):
    x, y, xt, yt = data
    cfg = ExpertConfig(network="ConvNet", width=8, depth=2, epochs=4, batch_size=16)
    return train_experts(cfg, x, y, 2, xt, yt, folder=tmp_path_factory.mktemp("experts"),
                         device=CPU)


def small_set(data, fraction=1.0, soft=False, ipc=3):
    x, y, _, _ = data
    idx = per_class_random(y, ipc, torch.Generator().manual_seed(0))
    s = from_indices(x, y, *split_per_class(idx, ipc, fraction), syn_lr=0.01)
    if soft:
        logits = torch.randn(len(s), 4, generator=torch.Generator().manual_seed(2))
        s = make_synset(s.images, logits, s.classes, s.is_selected, s.syn_lr)
    return s


CFG = MatchConfig(syn_steps=4, expert_epochs=2, max_start_epoch=3, batch_syn=5, lr_img=100.0)


def test_frozen_images_are_bit_identical_and_the_rest_moves(data, buffer):
    s = small_set(data, fraction=1 / 3)
    sel = s.is_selected
    assert int(sel.sum()) == 8 and not bool(sel[:4].any()), "[distilled; selected] storage order"
    out = distill(s, buffer, CFG, LoopConfig(iterations=3, eval_every=None, seed=3), device=CPU)
    assert torch.equal(out.synset.images[sel], s.images[sel]), "D_select must never change"
    assert not torch.equal(out.synset.images[~sel], s.images[~sel]), "D_distill must be updated"
    assert torch.equal(out.synset.is_selected, sel), "the split mask is kept"


def test_soft_labels_update_and_hard_labels_do_not(data, buffer):
    hard = small_set(data)
    out = distill(hard, buffer, CFG, LoopConfig(iterations=2, eval_every=None), device=CPU)
    assert torch.equal(out.synset.labels, hard.labels), "hard labels must stay fixed"
    soft = small_set(data, soft=True)
    out = distill(soft, buffer, replace_cfg(learn_labels=True, lr_label=5.0),
                  LoopConfig(iterations=2, eval_every=None), device=CPU)
    assert not torch.equal(out.synset.labels, soft.labels), "learned soft labels must change"
    frozen = distill(soft, buffer, CFG, LoopConfig(iterations=2, eval_every=None), device=CPU)
    assert torch.equal(frozen.synset.labels, soft.labels), "learn_labels=False keeps soft labels"
    with pytest.raises(ValueError, match="soft-label"):
        distill(hard, buffer, replace_cfg(learn_labels=True), LoopConfig(iterations=1), device=CPU)


def replace_cfg(**kw) -> MatchConfig:
    import dataclasses
    return dataclasses.replace(CFG, **kw)


def test_threshold_skips_and_records(data, buffer):
    s = small_set(data)
    out = distill(s, buffer, replace_cfg(threshold=0.0), LoopConfig(iterations=2, eval_every=None),
                  device=CPU)
    assert out.history["skipped"] == [True, True], f"skips {out.history['skipped']}"
    same_lr = out.synset.syn_lr == float(torch.tensor(s.syn_lr))  # alpha is a float32 tensor
    assert torch.equal(out.synset.images, s.images) and same_lr, \
        "a skipped iteration must not update anything"


def _same(a, b, what):
    assert torch.equal(a.synset.images, b.synset.images), f"{what}: images differ"
    assert torch.equal(a.synset.labels, b.synset.labels), f"{what}: labels differ"
    assert a.synset.syn_lr == b.synset.syn_lr, f"{what}: step size differs"
    assert a.history == {**b.history, "seconds": a.history["seconds"]} or \
        {k: v for k, v in a.history.items() if k != "seconds"} == \
        {k: v for k, v in b.history.items() if k != "seconds"}, f"{what}: histories differ"
    assert [p["mean"] for p in a.curve] == [p["mean"] for p in b.curve], f"{what}: curves differ"


def test_resume_equals_uninterrupted(data, buffer, tmp_path):
    s = small_set(data, fraction=2 / 3, soft=True)
    cfg = replace_cfg(learn_labels=True, threshold=5.0, recompute_segments=2)
    loop = LoopConfig(iterations=6, eval_every=2, checkpoint_every=10, seed=4)
    evaluate = lambda syn: {"mean": float(syn.images.mean()), "std": 0.0}   # cheap stand-in
    whole = distill(s, buffer, cfg, loop, evaluate=evaluate, folder=tmp_path / "a", device=CPU)
    part = distill(s, buffer, cfg, loop, evaluate=evaluate, folder=tmp_path / "b", device=CPU,
                   stop_after=3)
    assert part.iterations_done == 3 and not part.finished, "stop_after=3 stops after 3 iterations"
    resumed = distill(s, buffer, cfg, loop, evaluate=evaluate, folder=tmp_path / "b", device=CPU)
    _same(resumed, whole, "resumed vs uninterrupted")
    assert [p["iteration"] for p in whole.curve] == [0, 2, 4, 6], f"curve {whole.curve}"
    assert whole.report["iteration"] == 6 and "final" in whole.report["label"], \
        f"the declared point is the final iteration: {whole.report}"
    assert "optimistic" in whole.best["label"], "the best point is labelled as such"
    other = replace_cfg(lr_img=1.0)
    with pytest.raises(ValueError, match="another config"):
        distill(s, buffer, other, loop, folder=tmp_path / "b", device=CPU)


def test_a_cache_folder_sets_another_runs_checkpoint_aside(data, buffer, tmp_path, capsys):
    """In the library's own cache folder a checkpoint from another initial set (e.g. soft labels
    computed on another CPU or with other kernels) is set aside and the run starts afresh."""
    s = small_set(data, fraction=2 / 3, soft=True)
    cfg = replace_cfg()
    loop = LoopConfig(iterations=4, eval_every=None, checkpoint_every=1, seed=4)
    part = distill(s, buffer, cfg, loop, folder=tmp_path / "c", device=CPU, stop_after=2)
    assert part.iterations_done == 2
    moved = replace(s, labels=s.labels + 1e-6)   # the same set but for the labels' last bits
    with pytest.raises(ValueError, match="another config"):
        distill(moved, buffer, cfg, loop, folder=tmp_path / "c", device=CPU)
    fresh = distill(moved, buffer, cfg, loop, device=CPU)
    again = distill(moved, buffer, cfg, loop, folder=tmp_path / "c", device=CPU, cache=True)
    assert again.finished and again.iterations_done == 4
    assert "another initial set" in capsys.readouterr().err
    assert (tmp_path / "c" / "checkpoint.pt.corrupt").exists(), "kept for inspection"
    _same(again, fresh, "restarted vs a fresh run")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data, buffer, tmp_path, monkeypatch):
    original = matching._iteration

    def poisoned(state, *args, **kwargs):
        rec = original(state, *args, **kwargs)
        if state.done == 3:
            rec["loss"] = math.nan
        return rec
    monkeypatch.setattr(matching, "_iteration", poisoned)
    s = small_set(data)
    loop = LoopConfig(iterations=6, eval_every=None, checkpoint_every=1)
    with pytest.raises(DistillationDiverged, match=r"iteration 3: matching loss = nan") as e:
        distill(s, buffer, CFG, loop, folder=tmp_path, device=CPU)
    assert e.value.iteration == 3 and e.value.checkpoint == tmp_path / "checkpoint.pt", \
        f"the error names the iteration and the kept checkpoint: {e.value}"
    blob = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert blob["done"] == 3 and bool(torch.isfinite(blob["images"]).all()), \
        f"the checkpoint must hold the 3 good iterations, has {blob['done']}"
    monkeypatch.setattr(matching, "_iteration", original)
    out = distill(s, buffer, CFG, loop, folder=tmp_path, device=CPU)
    assert out.iterations_done == 6, "the run resumes from the last good checkpoint"


def test_infinite_step_size_is_detected(data, buffer):
    s = small_set(data)
    s = make_synset(s.images, s.labels, s.classes, s.is_selected, syn_lr=math.inf)
    with pytest.raises(DistillationDiverged, match="iteration 0"):
        distill(s, buffer, CFG, LoopConfig(iterations=2, eval_every=None), device=CPU)


def test_negative_step_size_is_detected(data, buffer):
    s = small_set(data)
    s = make_synset(s.images, s.labels, s.classes, s.is_selected, syn_lr=-0.01)
    with pytest.raises(DistillationDiverged, match="not positive: lower lr_lr"):
        distill(s, buffer, CFG, LoopConfig(iterations=2, eval_every=None), device=CPU)


# ------------------------------------------------------------------------------------------
# end to end on real CIFAR-10, ci profile


def test_ci_run_lowers_the_loss_on_cifar10(cifar10, tmp_path):
    from ddbook.data import normalize
    from ddbook.presets import get_preset, scaled

    preset = scaled(get_preset("mtt-cifar10-ipc10"), "ci")
    train = cifar10.train.take_per_class(20, seed=0)
    x, y = normalize(train.images, cifar10.mean, cifar10.std), train.labels
    cfg = ExpertConfig(network="ConvNet", width=preset.experts.width, epochs=2, batch_size=64)
    buf = train_experts(cfg, x, y, 1, folder=tmp_path / "experts", device=CPU)
    idx = per_class_random(y, preset.ipc, torch.Generator().manual_seed(0))
    s = from_indices(x, y, idx, syn_lr=preset.syn_lr)
    out = distill(s, buf, preset.match, LoopConfig(iterations=5, eval_every=None), device=CPU)
    assert len(out.history["loss"]) == 5 and all(map(math.isfinite, out.history["loss"])), \
        f"five finite losses, got {out.history['loss']}"
    student = make_student(get_network("ConvNet", 10, width=preset.experts.width, device=CPU))
    start, target = buf.snapshot(0, 0), buf.snapshot(0, preset.match.expert_epochs)
    plan = make_plan(len(s), preset.match.batch_syn, preset.match.syn_steps, (32, 32),
                     torch.Generator().manual_seed(9))
    before = float(matching_loss(student, start, target, s.images, s.labels,
                                 torch.tensor(s.syn_lr), plan).detach())
    after = float(matching_loss(student, start, target, out.synset.images, out.synset.labels,
                                torch.tensor(out.synset.syn_lr), plan).detach())
    print(f"ci run: losses {out.history['loss']}, fixed-plan loss {before:.4f} -> {after:.4f}")
    assert after < before, f"5 iterations must lower the matching loss: {before:.4f} -> {after:.4f}"
