"""Tests for ddbook.batched: K stacked networks equal K networks trained alone, per network."""
import copy

import numpy as np
import pytest
import torch
from conftest import tiny_sets

from ddbook.batched import StackedConvNet, correct_stacked, train_epoch_stacked, use_batched
from ddbook.evaluate import (DATA_SEED_OFFSET, MTTEvalConfig, SelMatchEvalConfig, evaluate_mtt,
                             evaluate_selmatch, mtt_optimizer)
from ddbook.networks import get_network
from ddbook.train import correct, predict, train_epoch

pytestmark = pytest.mark.usefixtures("one_thread")
K = 3


@pytest.fixture(scope="module")
def sets():
    return tiny_sets(20, 40)


def _nets(name: str, k: int = K, width: int = 8):
    return [get_network(name, 4, (16, 16), width=width, depth=2, seed=s, device="cpu")
            for s in range(k)]


def _sgd(params):
    return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


def _train_both(name, mode, x, y, sel=None, epochs=2, datas=None):
    """(stacked nets, stacked losses, alone nets, alone losses, generators of both)."""
    datas = datas or [(x, y)] * K
    alone, stacked = _nets(name), _nets(name)
    gens_a = [torch.Generator().manual_seed(50 + s) for s in range(K)]
    gens_s = [torch.Generator().manual_seed(50 + s) for s in range(K)]
    losses_a = []
    for m, g, (xi, yi) in zip(alone, gens_a, datas):
        opt = _sgd(m.parameters())
        losses_a.append([float(train_epoch(m, xi, yi, opt, 8, g, mode, sel)) for _ in range(epochs)])
    model = StackedConvNet(stacked)
    opt = _sgd(model.parameters())
    losses_s = [train_epoch_stacked(model, [d[0] for d in datas], [d[1] for d in datas], opt, 8,
                                    gens_s, mode, [sel] * K) for _ in range(epochs)]
    model.unstack_into(stacked)
    return model, stacked, torch.stack(losses_s, 1), alone, torch.tensor(losses_a), gens_a, gens_s


@pytest.mark.parametrize("name,mode", [("ConvNetBN", "dsa"), ("ConvNet", "dsa"),
                                       ("ConvNetNN", "simple"), ("ConvNetBN", "combined")])
def test_stacked_equals_each_network_alone(sets, name, mode):
    x, y, xt, yt = sets
    sel = torch.arange(len(x)) % 3 == 0
    model, stacked, ls, alone, la, gens_a, gens_s = _train_both(name, mode, x, y, sel)
    assert torch.allclose(ls, la, rtol=1e-4, atol=1e-5), f"losses stacked {ls} vs alone {la}"
    for k, (s, a) in enumerate(zip(stacked, alone)):
        for (key, ts), ta in zip(s.state_dict().items(), a.state_dict().values()):
            assert torch.allclose(ts.float(), ta.float(), rtol=1e-4, atol=1e-4), \
                f"network {k}: {key} differs by {(ts.float() - ta.float()).abs().max():.2e}"
        assert torch.allclose(predict(s, xt), predict(a, xt), atol=1e-4), f"network {k} logits"
    right = correct_stacked(model, xt, yt, batch_size=16)  # (K, N), several test batches
    want = torch.stack([correct(a, xt, yt) for a in alone])
    assert torch.equal(right, want), "per-example predictions of the stack differ from alone"
    assert not torch.equal(want[0], want[1]) or not torch.allclose(la[0], la[1]), \
        "networks 0 and 1 should differ (own seeds and draws)"
    for ga, gs in zip(gens_a, gens_s):
        assert torch.equal(ga.get_state(), gs.get_state()), \
            "a stacked network must draw exactly what it draws alone, from its own generator"


def test_per_network_data_and_generators(sets):
    """Network k sees only its own data and draws: changing network 1's leaves 0 and 2 alone."""
    x, y, xt, _ = sets
    other = (torch.flip(x, (0,)), torch.flip(y, (0,)))
    _, base, *_ = _train_both("ConvNetBN", "dsa", x, y, epochs=1)
    _, moved, _, alone, *_ = _train_both("ConvNetBN", "dsa", x, y, epochs=1,
                                         datas=[(x, y), other, (x, y)])
    for k in (0, 2):
        assert torch.allclose(predict(base[k], xt), predict(moved[k], xt), atol=1e-5), \
            f"network {k} changed when only network 1's data did"
    assert not torch.allclose(predict(base[1], xt), predict(moved[1], xt)), "network 1 unchanged"
    assert torch.allclose(predict(moved[1], xt), predict(alone[1], xt), atol=1e-4), \
        "network 1 on its own data differs from training it alone on that data"


def test_batch_norm_statistics_stay_per_network(sets):
    x, *_ = sets
    nets = _nets("ConvNetBN")
    ref = copy.deepcopy(nets)
    model = StackedConvNet(nets).train()
    xs = torch.stack([x[:8] * (k + 1) + k for k in range(K)])  # (K, 8, C, H, W), distinct stats
    with torch.no_grad():
        model(xs)
        for k, r in enumerate(ref):
            r.train()(xs[k])
    model.unstack_into(nets)
    for k, (n, r) in enumerate(zip(nets, ref)):
        for name in ("features.1.running_mean", "features.1.running_var",
                     "features.5.running_var"):
            got, want = n.state_dict()[name], r.state_dict()[name]
            assert torch.allclose(got, want, atol=1e-5), f"network {k}: {name} {got} vs {want}"
    m0 = nets[0].state_dict()["features.1.running_mean"]
    assert not torch.allclose(m0, nets[1].state_dict()["features.1.running_mean"]), \
        "networks saw different data but share running statistics"


def test_stack_then_unstack_is_exact():
    nets = _nets("ConvNetBN")
    before = [copy.deepcopy(n.state_dict()) for n in nets]
    fresh = _nets("ConvNetBN")
    for n in fresh:  # scramble, then restore from the stack
        for p in n.parameters():
            p.data.zero_()
    StackedConvNet(nets).unstack_into(fresh)
    for b, n in zip(before, fresh):
        for key, t in n.state_dict().items():
            assert torch.equal(t, b[key]), f"{key} changed by stack + unstack"


def test_option_off_is_the_old_path_bit_for_bit(sets):
    """batched=False runs train_epoch per network exactly as evaluate always did."""
    x, y, xt, yt = sets
    cfg = MTTEvalConfig(network="ConvNetBN", width=8, depth=2, epochs=3, batch_size=8, runs=2,
                        seed=5)
    res = evaluate_mtt(x, y, 0.01, xt, yt, cfg, device="cpu", batched=False)
    for r in range(cfg.runs):
        m = get_network("ConvNetBN", 4, (16, 16), 3, 8, 2, seed=5 + r, device="cpu")
        opt, sched, epochs = mtt_optimizer(m, 0.01, cfg)
        g = torch.Generator().manual_seed(5 + r + DATA_SEED_OFFSET)
        for _ in range(epochs):
            loss = train_epoch(m, x, y, opt, 8, g, "dsa", None, sched)
        assert float(loss) == res.train_loss[r], f"run {r}: loss not bit-identical"
        assert np.array_equal(correct(m, xt, yt).numpy(), res.correct[r]), f"run {r}: predictions"
        assert res.train_accuracy[r] == float(correct(m, x, y).float().mean()), \
            f"run {r}: training-set accuracy is not the trained network's on its own set"


@pytest.mark.parametrize("protocol", ["mtt", "selmatch"])
def test_evaluation_batched_agrees_and_is_not_in_the_config(sets, protocol):
    x, y, xt, yt = sets
    if protocol == "mtt":
        cfg = MTTEvalConfig(width=8, depth=2, epochs=3, batch_size=8, runs=K, seed=1)
        run = lambda b: evaluate_mtt(x, y, 0.01, xt, yt, cfg, device="cpu", batched=b)  # noqa
    else:
        cfg = SelMatchEvalConfig(network="ConvNetBN", width=8, depth=2, epochs=3, batch_size=8,
                                 runs=K)
        sel = torch.arange(len(x)) % 2 == 0
        run = lambda b: evaluate_selmatch(x, y, xt, yt, sel, config=cfg, device="cpu",  # noqa
                                          batched=b)
    a, b = run(False), run(True)
    assert np.allclose(a.train_loss, b.train_loss, rtol=1e-4), f"{a.train_loss} {b.train_loss}"
    assert np.array_equal(a.correct, b.correct), "per-example predictions differ"
    assert a.accuracies == b.accuracies and a.seeds == b.seeds and a.lrs == b.lrs
    da, db = a.to_dict(), b.to_dict()
    assert da["config"] == db["config"] and "batched" not in str(da), \
        f"the execution option leaked into the stored config: {db['config']}"


def test_option_choice_and_errors():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not use_batched(None, "ConvNetBN", 32, None, 5, cpu), "automatic is off on the CPU"
    assert use_batched(None, "ConvNetBN", 32, None, 5, cuda), "automatic is on on CUDA"
    assert not use_batched(None, "ConvNetBN", 32, None, 1, cuda), "one network: nothing to stack"
    assert not use_batched(None, "ResNet18BN", None, None, 5, cuda), "ResNet cannot be stacked"
    assert not use_batched(None, "ConvNetLN", None, None, 5, cuda), "layer norm mixes channels"
    assert use_batched(True, "ConvNet", 32, None, 2, cpu)
    with pytest.raises(ValueError, match="batched=False"):
        use_batched(True, "ResNet18BN", None, None, 3, cpu)
    with pytest.raises(ValueError, match="cannot stack|layer"):
        StackedConvNet([get_network("ConvNetLN", 4, (16, 16), width=8, depth=2, seed=0,
                                    device="cpu")])
    with pytest.raises(ValueError, match="identical shapes"):
        StackedConvNet([get_network("ConvNet", 4, (16, 16), width=w, depth=2, seed=0,
                                    device="cpu") for w in (8, 16)])


def test_sweep_stacks_the_runs_of_a_window_point(cifar10, tmp_path, monkeypatch):
    """batched=True writes the same files, configs and (to float rounding) numbers as False."""
    import json

    from ddbook.figures import selmatch_fig3 as ws
    # one SGD step of 128 on 20 images = 6 epochs: training a width-4 network is chaotic, and the
    # stacked (grouped-convolution) sums round differently, so the runs part by more with every
    # step (measured on an AMD EPYC: train losses agree to rel 1e-7 at 1 step, 1e-5 at 2, 7e-3 at
    # 3; on an Intel Xeon 3 steps stayed within 1e-4). Per step, stacked equals alone to float
    # tolerance: test_stacked_equals_each_network_alone. Here: the plumbing (files, configs, seeds).
    # The stacked path runs the stock batch norm, one at a time the C loops (ddbook.ckernels):
    # both sides take the torch ops here, so the numbers compared differ by stacking alone.
    monkeypatch.setenv("DDBOOK_KERNELS", "torch")
    tiny = ws.SweepConfig(ratios=(0.1,), beta_step=0.5, runs=2, width=4, steps=1,
                          train_per_class=20, test_per_class=5)
    groups = ws._groups(ws.plan(ws.as_profile("ci"), tiny), True)
    assert [[(p.ratio, p.beta, p.run_index) for p in g] for g in groups] == [
        [(0.1, 0.0, 0), (0.1, 0.0, 1)], [(0.1, 0.5, 0), (0.1, 0.5, 1)], [(0.1, None, 0)],
        [(0.1, None, 1)]], "window runs stack, random runs (own subsets) do not"
    out, real = {}, ws.evaluate_selmatch
    for b in (False, True):
        monkeypatch.setenv("DDBOOK_RESULTS", str(tmp_path / str(b)))
        calls = []
        monkeypatch.setattr(ws, "evaluate_selmatch",
                            lambda *a, **k: calls.append(k["config"].runs) or real(*a, **k))
        assert ws.run_sweep(cifar10, "ci", device="cpu", config=tiny, batched=b) == 6
        assert calls == ([1] * 6 if not b else [2, 2, 1, 1]), f"batched={b}: evaluations {calls}"
        folder = tmp_path / str(b) / "ci" / "selmatch_fig3_u20"
        out[b] = {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
    assert out[False].keys() == out[True].keys() and len(out[True]) == 6
    for name, a in out[False].items():
        c = out[True][name]
        assert a["provenance"]["config"] == c["provenance"]["config"], f"{name}: config differs"
        assert a["data"]["accuracy"] == c["data"]["accuracy"], f"{name}: accuracy differs"
        assert a["data"]["train_loss"] == pytest.approx(c["data"]["train_loss"], rel=1e-4)


def test_experts_stacked_equal_one_at_a_time_and_resume(sets, tmp_path):
    """Stacked experts: same trajectories (float rounding), same records; a kill resumes."""
    from ddbook.experts import ExpertConfig, train_experts
    x, y, xt, yt = sets
    cfg = ExpertConfig(network="ConvNetBN", width=8, depth=2, epochs=3, batch_size=8,
                       momentum=0.9, weight_decay=5e-4)
    one = train_experts(cfg, x, y, K, xt, yt, folder=tmp_path / "one", device="cpu",
                        batched=False)
    stacked = train_experts(cfg, x, y, K, xt, yt, folder=tmp_path / "stacked", device="cpu",
                            batched=True)
    seen = []
    killed = train_experts(cfg, x, y, K, xt, yt, folder=tmp_path / "killed", device="cpu",
                           batched=True, stop_after_epochs=1,
                           callback=lambda i, e, a: seen.append((i, e)))
    assert seen == [(0, 1), (1, 1), (2, 1)] and len(killed) == 0, f"stopped at {seen}"
    killed = train_experts(cfg, x, y, K, xt, yt, folder=tmp_path / "killed", device="cpu",
                           batched=True)
    for i in range(K):
        a, b, c = one.trajectory(i), stacked.trajectory(i), killed.trajectory(i)
        assert np.array_equal(a[0], b[0]), f"expert {i}: stacked changed the init"
        assert np.allclose(a, b, atol=1e-4), f"expert {i}: {np.abs(a - b).max():.2e}"
        assert np.allclose(b, c, atol=1e-5), f"expert {i}: resumed differs from uninterrupted"
        assert one.test_accuracy(i) == stacked.test_accuracy(i), f"expert {i} accuracies"
        assert np.allclose(one.info(i)["train_loss"], stacked.info(i)["train_loss"], rtol=1e-4)
    assert not np.allclose(one.trajectory(0)[-1], one.trajectory(1)[-1]), "experts must differ"
    assert one.meta["config"] == stacked.meta["config"], "batched entered the stored config"


def test_cuda_check_script_runs_on_the_cpu(tmp_path, monkeypatch):
    """benchmarks/cuda_check.py is the one command a session lent a GPU runs (issue 15): it must
    work before that session starts. On the CPU, with the torch ops, its stacked networks equal
    the ones trained alone as tests above require."""
    import json
    import sys
    from pathlib import Path
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench))
    monkeypatch.setenv("DDBOOK_KERNELS", "torch")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    import cuda_check
    out = tmp_path / "check.json"
    assert cuda_check.main(["--device", "cpu", "--epochs", "1", "--steps", "2", "--rounds", "1",
                            "--iterations", "1", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [e["network"] for e in res["equality"]] == ["ConvNetBN", "ConvNet"]
    for e in res["equality"]:
        assert e["max_abs_parameter_difference"] <= 1e-4 * max(1.0, e["largest_abs_parameter"])
        assert e["test_correctness_agreement"] == 1.0
    assert all(t["median_img_s"]["stacked"] > 0 and not t["use_batched_auto"]
               for t in res["timing"]), "on the CPU the automatic choice is off"
    assert all(d["median_s"] > 0 and d["kernels"].startswith("torch ops") for d in res["distill"])
    assert res["device"] == "cpu" and sys.version.split()[0] == res["python"]
