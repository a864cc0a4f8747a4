"""Fig. 5 analyses and our score runs: per-example gradient norms, t-SNE, the ci score run."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import ddbook
from ddbook import analysis, scoring


def _net():
    return ddbook.get_network("ConvNetBN", 10, width=8, seed=0, device="cpu")


def test_per_example_grad_norms_match_a_loop():
    model = _net()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 3, 32, 32, generator=g), torch.randint(0, 10, (5,), generator=g)
    model.train()
    got = analysis.per_example_grad_norms(model, x, y, batch_size=2)
    assert model.training, "the caller's training mode is restored"
    model.eval()
    analysis.per_example_grad_norms(model, x[:2], y[:2])
    assert not model.training, "and so is eval mode"
    for i in range(5):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        want = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
        assert torch.allclose(got[i], want, rtol=1e-4), f"example {i}: {got[i]} vs {want}"


def test_features_and_tsne_shapes_and_seed():
    model = _net()
    x = torch.randn(40, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    f = analysis.features(model, x, batch_size=16)
    assert f.shape == (40, 8 * 4 * 4), f"penultimate features of ConvNet-3 w8: {f.shape}"
    a, b = analysis.tsne(f, seed=3, max_iter=250), analysis.tsne(f, seed=3, max_iter=250)
    assert a.shape == (40, 2) and (a == b).all(), "t-SNE is seeded"


def test_ci_score_run_is_deterministic_and_resumes(cifar10, tmp_path, monkeypatch):
    monkeypatch.setenv("DDBOOK_CACHE", str(tmp_path))
    cfg = scoring.ScoreRunConfig(width=8, train_per_class=10, runs=2, epochs=2, el2n_epoch=1)
    first = scoring.compute_scores(cifar10, cfg, device="cpu")
    assert first.el2n.shape == (100,) and first.forgetting.shape == (100,)
    assert (first.el2n >= 0).all() and (first.el2n <= 2 ** 0.5 + 1e-9).all(), "EL2N lies in [0, √2]"
    files = sorted(tmp_path.rglob("run*.pt"))
    assert len(files) == 2, f"each run is cached when it finishes: {files}"
    files[1].unlink()                       # as if interrupted during the second run
    again = scoring.compute_scores(cifar10, cfg, device="cpu")
    assert torch.equal(first.el2n, again.el2n) and torch.equal(first.forgetting, again.forgetting), \
        "a resumed computation must equal the uninterrupted one"


def test_feature_network_is_cached_and_resumes(cifar10, tmp_path, monkeypatch):
    from ddbook import feature_net

    monkeypatch.setenv("DDBOOK_CACHE", str(tmp_path))
    cfg = feature_net.FeatureNetConfig(width=8, train_per_class=10, epochs=2)
    model, acc = feature_net.feature_network(cifar10, cfg, device="cpu")
    assert 0.0 <= acc <= 1.0
    again, acc2 = feature_net.feature_network(cifar10, cfg, device="cpu")
    assert acc2 == acc and all(torch.equal(a, b) for a, b in
                               zip(model.state_dict().values(), again.state_dict().values())), \
        "the second call loads the cached network"
    # while another process holds the network's lock (training it), a caller waits for it
    import threading
    from ddbook import paths
    lock, = tmp_path.glob("feature-net-*.lock")
    got = []
    with paths.FileLock(lock, wait=True):
        t = threading.Thread(target=lambda: got.append(feature_net.feature_network(
            cifar10, cfg, device="cpu")))
        t.start()
        t.join(0.5)
        assert t.is_alive() and not got, "it waits for the lock"
    t.join(60)
    assert got and got[0][1] == acc
    # interrupted after epoch 1: the checkpoint is kept; the rerun resumes and ends identical
    cfg3 = feature_net.FeatureNetConfig(width=8, train_per_class=10, epochs=3, seed=5)
    real_train, calls = feature_net.train_epoch, []

    def dying(*a, **k):
        if len(calls) == 1:
            raise KeyboardInterrupt("simulated kill")
        calls.append(1)
        return real_train(*a, **k)

    monkeypatch.setattr(feature_net, "train_epoch", dying)
    try:
        feature_net.feature_network(cifar10, cfg3, device="cpu")
    except KeyboardInterrupt:
        pass
    assert list(tmp_path.glob("feature-net-*.ckpt")), "a checkpoint survives the kill"
    monkeypatch.setattr(feature_net, "train_epoch", real_train)
    resumed, _ = feature_net.feature_network(cifar10, cfg3, device="cpu")
    for f in tmp_path.glob("feature-net-*.pt"):
        f.unlink()
    straight, _ = feature_net.feature_network(cifar10, cfg3, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(),
                                                 resumed.state_dict().values())), \
        "resumed training must equal an uninterrupted one"
