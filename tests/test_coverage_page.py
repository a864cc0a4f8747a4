"""The coverage page (SelMatch Fig. 1 and Fig. 5): set snapshots during distillation, the kept
final sets, the gradient-norm hook of the evaluation loop, easy / hard accuracy from packed
correctness, the verdict plumbing on synthetic data, and a tiny end-to-end run of the page."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import tiny_sets

from ddbook import selmatch_scale as sc
from ddbook import verdicts as V
from ddbook.analysis import GradNormRecorder, per_example_grad_norms, spread_epochs
from ddbook.coverage import group_accuracy
from ddbook.evaluate import SelMatchEvalConfig, evaluate_selmatch, pack_correct, unpack_correct
from ddbook.figures import _coverage_verdicts as CV, selmatch_table1
from ddbook.figures import selmatch_fig1_fig5_coverage as cov
from ddbook.matching import LoopConfig, MatchConfig, distill, snapshot_iterations
from ddbook.networks import get_network
from ddbook.profiles import get_profile
from ddbook.synset import from_indices, load_synset, per_class_random, split_per_class

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = "cpu"
CI, QUICK = get_profile("ci"), get_profile("quick")
TINY = replace(sc.SCALE_MODELS["ci"], universe_per_class=20, test_per_class=5, syn_steps=2,
               iterations=2, eval_steps=3, n_experts=2, expert_epochs=4)


# ------------------------------------------------------------------------------------------
# the engine options


from test_matching import buffer, data  # noqa: E402,F401 (the tiny expert-buffer fixtures)


def _set(data):
    x, y, _, _ = data
    idx = per_class_random(y, 3, torch.Generator().manual_seed(0))
    return from_indices(x, y, *split_per_class(idx, 3, 2 / 3), syn_lr=0.01)


CFG = MatchConfig(syn_steps=4, expert_epochs=2, max_start_epoch=3, batch_syn=5, lr_img=100.0)


def test_snapshots_are_kept_every_k_and_change_nothing(data, buffer, tmp_path):
    s, loop = _set(data), LoopConfig(iterations=5, eval_every=None, seed=3)
    plain = distill(s, buffer, CFG, loop, folder=tmp_path / "plain", device=CPU)
    snap = distill(s, buffer, CFG, loop, folder=tmp_path / "snap", device=CPU, snapshot_every=2)
    assert plain.history["loss"] == snap.history["loss"], "snapshots must not change the run"
    assert torch.equal(plain.synset.images, snap.synset.images)
    assert snapshot_iterations(tmp_path / "plain") == [], "off by default"
    assert snapshot_iterations(tmp_path / "snap") == [0, 2, 4, 5], "every 2, and the last"
    first = load_synset(tmp_path / "snap" / "snapshots" / "synset_000000.pt")
    last = load_synset(tmp_path / "snap" / "snapshots" / "synset_000005.pt")
    assert torch.equal(first.images, s.images), "iteration 0 is the initial set"
    assert torch.equal(last.images, snap.synset.images), "the last is the final set"
    mid = load_synset(tmp_path / "snap" / "snapshots" / "synset_000002.pt")
    assert not torch.equal(mid.images, first.images) and not torch.equal(mid.images, last.images)
    assert torch.equal(mid.is_selected, s.is_selected)
    # interrupted at 3 and resumed: the same snapshots and the same final set
    distill(s, buffer, CFG, loop, folder=tmp_path / "resume", device=CPU, snapshot_every=2,
            stop_after=3)
    assert snapshot_iterations(tmp_path / "resume") == [0, 2]
    again = distill(s, buffer, CFG, loop, folder=tmp_path / "resume", device=CPU,
                    snapshot_every=2)
    assert snapshot_iterations(tmp_path / "resume") == [0, 2, 4, 5]
    assert torch.equal(again.synset.images, snap.synset.images)
    with pytest.raises(ValueError, match="folder"):
        distill(s, buffer, CFG, loop, device=CPU, snapshot_every=2)


def _eval_data(seed=0):
    x, y, xt, yt = tiny_sets(24, 16, size=8, classes=4, seed=seed)
    sel = torch.arange(24) % 3 != 0
    return x, y, xt, yt, sel


def test_grad_norm_hook_changes_nothing_and_records_per_group():
    x, y, xt, yt, sel = _eval_data()
    config = SelMatchEvalConfig(network="ConvNetBN", width=4, depth=2, epochs=3, runs=2,
                                batch_size=8)
    off = evaluate_selmatch(x, y, xt, yt, sel, config=config, num_classes=4, device=CPU)
    rec = GradNormRecorder(x, y, {"select": sel, "distill": ~sel})
    on = evaluate_selmatch(x, y, xt, yt, sel, config=config, num_classes=4, device=CPU,
                           epoch_hook=rec)
    assert on.accuracies == off.accuracies and on.train_loss == off.train_loss
    assert np.array_equal(on.correct, off.correct), "bit-for-bit the same evaluation"
    traj = rec.trajectories()
    assert traj["epochs"].tolist() == [1, 2, 3]
    for g in ("select", "distill"):
        assert traj[g].shape == (2, 3) and np.isfinite(traj[g]).all() and (traj[g] > 0).all()
    assert not np.array_equal(traj["select"], traj["distill"]), "the groups are told apart"
    # one record by hand: the mean of the per-example norms over each group's images
    model = get_network("ConvNetBN", 4, (8, 8), 3, width=4, depth=2, seed=7, device=CPU)
    one = GradNormRecorder(x, y, {"select": sel, "distill": ~sel}, epochs=[0])
    one(0, 0, model)
    one(0, 1, model)                                   # not a chosen epoch: nothing recorded
    norms = per_example_grad_norms(model, x, y)
    assert one.records[0] == [{"epoch": 1, "select": pytest.approx(float(norms[sel].mean())),
                               "distill": pytest.approx(float(norms[~sel].mean()))}]
    with pytest.raises(ValueError, match="batched=False"):
        evaluate_selmatch(x, y, xt, yt, sel, config=config, num_classes=4, device=CPU,
                          batched=True, epoch_hook=rec)
    with pytest.raises(ValueError, match="non-empty bool mask"):
        GradNormRecorder(x, y, {"select": torch.zeros(24, dtype=torch.bool)})
    assert spread_epochs(512, 40)[0] == 0 and spread_epochs(512, 40)[-1] == 511
    assert spread_epochs(3, 40) == [0, 1, 2]


# ------------------------------------------------------------------------------------------
# easy / hard accuracy


def test_group_accuracy_from_packed_correctness_matches_a_hand_count():
    rng = np.random.default_rng(0)
    correct = rng.random((3, 37)) < 0.6
    back = unpack_correct(pack_correct(correct)["correct_bits"], 37)
    easy = np.arange(37) < 20
    acc = group_accuracy(back, {"easy": easy, "hard": ~easy})
    for k in range(3):
        assert acc["easy"][k] == sum(correct[k, j] for j in range(20)) / 20
        assert acc["hard"][k] == sum(correct[k, j] for j in range(20, 37)) / 17
    with pytest.raises(ValueError, match="another test set"):
        group_accuracy(back, {"easy": np.ones(36, bool)})
    cols = selmatch_table1._groups_of(back, {"easy": easy, "hard": ~easy})
    assert cols["easy_mean"] == pytest.approx(acc["easy"].mean())
    assert cols["hard_std"] == pytest.approx(acc["hard"].std())
    assert math.isnan(selmatch_table1._groups_of(back, None)["easy_mean"])


def test_bootstrap_weights_resample_the_test_examples():
    from ddbook.coverage import bootstrap_examples
    x = np.arange(10.0)
    seen = []
    means = bootstrap_examples(lambda w: seen.append(w) or (w @ x) / w.sum(1), 10, 150, seed=1,
                               chunk=64)
    assert means.shape == (150,) and len(seen) == 3, "chunks of 64, 64 and 22 resamples"
    w = np.concatenate(seen)
    assert (w.sum(1) == 10).all() and (w >= 0).all(), "each resample draws n examples"
    assert 3.0 < means.mean() < 6.0 and means.std() > 0.3, "resampled means scatter around 4.5"
    assert np.array_equal(means, bootstrap_examples(lambda w: (w @ x) / w.sum(1), 10, 150,
                                                    seed=1, chunk=64)), "seeded"
    with pytest.raises(ValueError, match="too few"):
        bootstrap_examples(lambda w: w.sum(1), 10, 10)


# ------------------------------------------------------------------------------------------
# the verdicts, on synthetic data


def _groups(n=400):
    easy = np.arange(n) < n // 2
    return {"easy": easy, "hard": ~easy}


def _cov(gap: float, n=400):
    """Coverage whose easy half is covered with gap more than the hard half (deterministic)."""
    half = n // 2
    easy = (np.arange(half) % 100) < 50 + 50 * gap
    hard = (np.arange(half) % 100) < 50 - 50 * gap
    return np.concatenate([easy, hard]).astype(float)


def test_coverage_verdicts_separated_and_flat():
    grp, cfg, ratios = _groups(), cov.CoverageConfig(n_boot=400), [0.05, 0.1, 0.2]
    separated = {**{("mtt", r): _cov(0.8) for r in ratios},
                 **{("selmatch", r): _cov(g) for r, g in zip(ratios, (0.8, 0.4, 0.0))}}
    out = {v.claim.split(" (")[0]: v for v in CV._coverage_verdicts(separated, grp, ratios, cfg)}
    assert out["MTT's coverage gap between easy and hard test examples persists at the largest "
               "ratio"].outcome == V.SUPPORTED
    assert out["SelMatch's easy-hard coverage gap narrows as the ratio grows"].outcome == \
        V.SUPPORTED
    assert out["the gap narrows more for SelMatch than for MTT as the ratio grows"].outcome == \
        V.SUPPORTED
    assert out["at 20%, SelMatch covers more of the hard half than MTT"].outcome == V.SUPPORTED
    flat = {(m, r): _cov(0.0) for m in ("mtt", "selmatch") for r in ratios}
    for v in CV._coverage_verdicts(flat, grp, ratios, cfg):
        assert v.outcome == V.INCONCLUSIVE, v.sentence()
        assert "bootstrap over test examples" in v.test and "one set per method" in v.note


def test_coverage_verdicts_wait_for_the_plans_grid():
    """With the plan's largest ratio missing, no 'largest ratio' claim names a smaller one, and no
    trend is drawn over a partial grid; per-ratio claims name their ratio and stay."""
    grp, cfg, ratios = _groups(), cov.CoverageConfig(n_boot=200), [0.05, 0.1, 0.2]
    part = {(m, r): _cov(0.5) for m in ("mtt", "selmatch") for r in ratios[:2]}
    claims = [v.claim for v in CV._coverage_verdicts(part, grp, ratios, cfg)]
    assert claims == [f"at {r:.0%}, SelMatch covers more of the hard half than MTT"
                      for r in (0.05, 0.1)], claims
    import pandas as pd
    rows = [{"method": m, "ratio": r, "hard": 0.3 + 0.01 * k} for m in ("mtt", "random")
            for r in ratios[:2] for k in range(3)]
    assert CV._accuracy_verdicts(pd.DataFrame(rows), ratios) == []
    rows += [{"method": m, "ratio": 0.2, "hard": 0.3 + 0.01 * k} for m in ("mtt", "random")
             for k in range(3)]
    assert len(CV._accuracy_verdicts(pd.DataFrame(rows), ratios)) == 2


def test_interaction_verdict_separated_and_flat():
    x = np.repeat([0.05, 0.1, 0.2], 3)
    noise = np.tile([-0.01, 0.0, 0.01], 3)
    rnd = 0.3 + 0.5 * x + noise
    shrinking = 0.3 + 0.2 + (0.5 - 1.0) * x + noise         # the advantage 0.2 - 1.0 x shrinks
    g = np.r_[np.ones(9), np.zeros(9)]
    v = CV.interaction_verdict(np.r_[x, x], np.r_[shrinking, rnd], g, "shrinks")
    assert v.outcome == V.SUPPORTED and v.effect == pytest.approx(100.0)
    flat = CV.interaction_verdict(np.r_[x, x], np.r_[rnd + 0.1, rnd], g, "shrinks")
    assert flat.outcome == V.INCONCLUSIVE and abs(flat.effect) < 1e-9


def test_gradnorm_verdict_separated_and_flat():
    epochs = [1, 2, 4, 8]
    big = {"epochs": epochs, "select": [[2.0, 2.1, 2.0, 1.9], [2.2, 2.0, 2.1, 2.0],
                                        [1.9, 2.0, 2.0, 2.1]],
           "distill": [[1.0] * 4, [1.1] * 4, [0.9] * 4]}
    d = CV.gradnorm_diffs(big)
    assert d.shape == (3,) and (d > 0.8).all()
    assert V.one_sample(d, "select > distill", scale=1.0).outcome == V.SUPPORTED
    level = {"epochs": epochs, "select": [[1.1] * 4, [0.9] * 4, [1.0] * 4],
             "distill": [[1.0] * 4] * 3}
    assert CV.gradnorm_diffs(level).tolist() == pytest.approx([0.1, -0.1, 0.0])
    assert V.one_sample(CV.gradnorm_diffs(level), "select > distill",
                        scale=1.0).outcome == V.INCONCLUSIVE


# ------------------------------------------------------------------------------------------
# the plan, and the page end to end on a tiny scale model


def test_plan_at_quick():
    names = [p.name for p in cov.plan(QUICK)]
    assert len(names) == len(set(names)) == 1 + 3 * (4 + 3) + 2 + 1 + 3
    assert cov.source_piece(QUICK, "selmatch", 0.2).name == "r0.20_selmatch-a0.1"
    assert cov.source_piece(QUICK, "window", 0.05).name == "r0.05_a0.0"
    snapped = [p.name for p in sc.alpha_plan(QUICK) + sc.table1_plan(QUICK)
               if sc.snapshot_every(QUICK, p) is not None]
    assert snapped == ["r0.10_a0.2", "r0.10_mtt"], "MTT and SelMatch (paper α) at 10 % only"
    assert sc.expected_snapshots(QUICK, sc.paper_alpha_piece(QUICK, 0.1)) == \
        list(range(0, 501, 50))


@pytest.fixture
def tiny(monkeypatch, tmp_path, one_thread):
    """ci with a 20-per-class universe; results and the pieces' cache folders in tmp_path."""
    monkeypatch.setenv("DDBOOK_RESULTS", str(tmp_path / "results"))
    monkeypatch.setitem(sc.SCALE_MODELS, "ci", TINY)
    monkeypatch.setattr(sc, "_folder", lambda profile, piece: tmp_path / "cache" / piece.name)
    return tmp_path


def test_kept_sets_are_the_evaluated_sets(tiny, cifar10):
    mtt = next(p for p in sc.table1_plan(CI) if p.name == "r0.10_mtt")
    window = next(p for p in sc.alpha_plan(CI) if p.name == "r0.10_a0.0")
    sc.run_pieces(CI, [mtt, window], device=CPU)
    loaded = sc.load_pieces(CI, [mtt, window])
    scale, data = sc.scale_config(CI), sc.universe(sc.scale_config(CI))
    for p in (mtt, window):
        s = sc.final_set(CI, p)
        r = loaded.found[p.name]
        assert len(s) == r.data["n_images"] and s.num_selected == r.data["n_selected"]
        ev = evaluate_selmatch(s.images, s.labels, data[5], data[6], s.is_selected,
                               config=sc.eval_config(scale, len(s)), num_classes=10, device=CPU)
        assert list(ev.accuracies) == r.data["accuracies"], "the kept set is the evaluated one"
    assert snapshot_iterations(sc.piece_folder(CI, mtt)) == [0, 1, 2]
    kept = sc.final_set(CI, mtt)
    (sc.piece_folder(CI, mtt) / "synset_final.pt").unlink()
    with pytest.raises(FileNotFoundError, match="ensure_set"):
        sc.final_set(CI, mtt)
    again = sc.ensure_set(CI, mtt, data, device=CPU)
    assert torch.equal(again.images, kept.images), "remade from its seed: the same set"
    # a set distilled before its snapshots were asked for is distilled again, keeping them
    import shutil
    shutil.rmtree(sc.piece_folder(CI, mtt) / "snapshots")
    again = sc.ensure_set(CI, mtt, data, device=CPU)
    assert snapshot_iterations(sc.piece_folder(CI, mtt)) == [0, 1, 2]
    assert torch.equal(again.images, kept.images)
    assert torch.equal(sc.snapshots(CI, mtt)[2].images, kept.images)
    # a remake interrupted after iteration 1 (its first snapshots kept) resumes: it keeps them
    folder = sc.piece_folder(CI, mtt)
    shutil.rmtree(folder)
    buffer = sc.experts(scale, data, CPU)
    assert sc._make_set(CI, mtt, data, buffer, CPU, stop_after=1)[0] is None
    first = (folder / "snapshots" / "synset_000000.pt").stat().st_mtime_ns
    assert snapshot_iterations(folder) == [0] and (folder / "checkpoint.pt").exists()
    again = sc.ensure_set(CI, mtt, data, buffer, device=CPU)
    assert snapshot_iterations(folder) == [0, 1, 2]
    assert (folder / "snapshots" / "synset_000000.pt").stat().st_mtime_ns == first, "resumed"
    assert torch.equal(again.images, kept.images)
    # another process remaking the set (holding its lock): ensure_set waits, then reads it
    import threading
    from ddbook import paths
    got = []
    with paths.FileLock(folder / ".ensure_set.lock", wait=True):
        t = threading.Thread(target=lambda: got.append(sc.ensure_set(CI, mtt, data, buffer,
                                                                      device=CPU)))
        t.start()
        t.join(0.5)
        assert t.is_alive() and not got, "it waits for the lock"
    t.join(60)
    assert got and torch.equal(got[0].images, kept.images)


def test_page_end_to_end(tiny, cifar10, monkeypatch):
    # 60 per class (ci's own universe): at 10 % SelMatch's set holds 1 distilled image per class
    monkeypatch.setitem(sc.SCALE_MODELS, "ci", replace(TINY, universe_per_class=60))
    monkeypatch.setattr(sc, "fig3_compatible", lambda profile: "not shared in this test")
    written = cov.run(CI, device=CPU)
    assert written, "the page writes its pieces (and the sets it needs)"
    loaded = cov.load(CI)
    assert not loaded.missing and not loaded.stale, loaded.describe("ci")
    assert not any(p.method == "random" for p in cov.plan(CI)), "tiny universe: no Fig. 3 share"
    table = cov.coverage_table(loaded)
    assert len(table) == 2 * 4 and table[["overall", "easy", "hard"]].apply(
        lambda c: c.between(0, 1)).all().all()
    # a larger radius covers at least as much
    assert (cov.coverage_table(loaded, 0.75)["overall"].values >=
            cov.coverage_table(loaded, 0.25)["overall"].values).all()
    ident = cov.set_identity_table(loaded, CI)
    assert len(ident) == 2 * 4, "mtt, datm, selmatch and the window at both ratios"
    assert (ident["evaluated on"] == ident["measured on"]).all()
    distilled = ident.dropna(subset=["pixel std, evaluated set"])
    assert len(distilled) and (distilled["relative difference"] == 0).all(), \
        "measured here: the very sets their pages evaluated"
    traj = cov.trajectory_table(loaded)
    assert sorted(traj["iteration"].unique()) == [0, 1, 2]
    grad = next(r for n, r in loaded.found.items() if n.endswith("_gradnorm"))
    assert grad.data["same_as_source"], "the hook leaves the evaluation as it was"
    assert np.isfinite(np.array(grad.data["select"])).all()
    tsne = next(r for n, r in loaded.found.items() if n.endswith("_tsne"))
    assert tsne.arrays["xy"].shape == (len(tsne.arrays["kind"]), 2)
    assert set(np.unique(tsne.arrays["kind"])) <= {0, 1, 2, 3}
    acc = cov.group_accuracy_table(CI)
    assert set(acc["method"]) == {"mtt", "datm", "selmatch", "window"}
    verdicts = cov.verdicts(loaded, CI)
    assert verdicts and all(v.outcome in V.OUTCOMES for v in verdicts)
    assert cov.run(CI, device=CPU) == [], "current pieces are kept"
    # every set piece keeps each test image's distance to the set: its coverage at each radius
    # is recomputable without the set
    from ddbook.evaluate import unpack_correct
    for r in loaded.found.values():
        if "quantiles" not in r.data:
            continue
        bits = unpack_correct(r.arrays["covered_bits"], int(r.arrays["n_test"]))
        for row, radius in enumerate(r.data["radii"]):
            assert (bits[row] == (r.arrays["nearest"] <= radius)).all()
    radii = loaded.found["features"].data["radii"]
    assert radii["0.25"] < radii["0.5"] < radii["0.75"]
    assert radii["0.5"] == loaded.found["features"].data["radius"]
    monkeypatch.setitem(cov.COVERAGE, "ci", replace(cov.COVERAGE["ci"], radius_quantiles=(0.5,)))
    after = cov.load(CI)
    assert "features" in after.stale, "another configuration reads as stale"
    assert any(n.endswith("_mtt") for n in after.stale)
    # the radii are not in the t-SNE map's or the gradient norms' configs: still current
    kept = {n for n in loaded.found if n.endswith(("_tsne", "_gradnorm"))}
    assert kept and set(after.found) == kept


def test_the_feature_network_is_made_on_first_use(tiny, cifar10, monkeypatch):
    """A process remaking a set does not first wait for (or train) the feature network."""
    from ddbook import feature_net

    def not_yet(*a, **k):
        raise RuntimeError("feature network asked for")

    monkeypatch.setattr(feature_net, "feature_network", not_yet)
    ctx = cov._Context(CI, CPU)
    assert ctx.data is not None
    with pytest.raises(RuntimeError, match="asked for"):
        ctx.radius
    with pytest.raises(AttributeError):
        ctx.no_such_attribute
