"""Tests for ddbook.dasm (our reading of DASM): the selection rule, the segment split, frozen
segments, resume, and the figure module's ci plan end to end."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ddbook import dasm
from ddbook.dasm import (DASMConfig, ScoreConfig, distill_dasm, score_examples, segment_sizes,
                         select_hardest)
from ddbook.gradmatch import GMConfig, GMLoop

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = "cpu"
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def test_selection_rule_picks_the_highest_loss_examples_per_class():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1])
    losses = torch.tensor([0.1, 3.0, 2.0, 0.5, 9.0, 0.0, 1.0, 1.0, 5.0])
    assert select_hardest(losses, labels, 0.5).tolist() == [1, 2, 4, 6, 8]
    # ceil(0.5 x 5) = 3 from class 1: 9.0, 5.0 and the first of the tied 1.0s (index 6)
    assert select_hardest(losses, labels, 1.0).tolist() == list(range(9))
    assert select_hardest(losses, labels, 0.25).tolist() == [1, 4, 8]


def test_segment_sizes():
    assert segment_sizes(25, 2) == [13, 12]
    assert segment_sizes(10, 3) == [4, 3, 3]
    with pytest.raises(ValueError, match="at most 2 segments"):
        segment_sizes(2, 3)


def universe(n=32, classes=2, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.arange(n) % classes


def run(folder=None, stop_after=None, segments=2):
    x, y = universe()
    gm = GMConfig(width=4, depth=2, factor=2, inner_loop=2, batch_real=4, n_data=8, net_batch=4,
                  lr_img=0.5)
    cfg = DASMConfig(segments=segments, score=ScoreConfig(width=4, depth=2, steps=4,
                                                          batch_size=8))
    return distill_dasm(x, y, 4, gm, GMLoop(iterations=4, checkpoint_every=1, seed=3), cfg,
                        mean=MEAN, std=STD, folder=folder, device=CPU, stop_after=stop_after)


def test_frozen_segments_are_bit_identical_after_the_next_segment(tmp_path):
    first = run(tmp_path, stop_after=2)            # segment 0 done (2 of 4 iterations)
    assert not first.finished and first.segment.unique().tolist() == [0]
    seg0 = first.images.clone()
    full = run(tmp_path)
    assert full.finished and full.segment.tolist() == [0] * 4 + [1] * 4
    assert torch.equal(full.images[full.segment == 0], seg0), "segment 0 changed after segment 1"
    info = full.segments
    assert info[0]["next_pool_size"] == 16 and info[1]["pool_size"] == 16, \
        "segment 1 must match the hardest half of each class (16 of 32 examples)"
    assert info[0]["score_mean_loss_selected"] >= info[0]["score_mean_loss_all"]


def test_resume_equals_an_uninterrupted_run(tmp_path):
    whole = run()
    run(tmp_path / "a", stop_after=3)               # killed in the middle of segment 1
    resumed = run(tmp_path / "a")
    assert torch.equal(resumed.images, whole.images) and torch.equal(resumed.labels, whole.labels)
    assert [s["history"]["loss"] for s in resumed.segments] == \
        [s["history"]["loss"] for s in whole.segments]


def test_one_segment_is_plain_gradient_matching():
    res = run(segments=1)
    assert res.finished and res.segment.tolist() == [0] * 8 and len(res.segments) == 1


def test_another_config_in_the_same_folder_is_refused(tmp_path):
    run(tmp_path, stop_after=1)
    with pytest.raises(ValueError, match="another config"):
        run(tmp_path, segments=1)


def test_scores_are_per_example_losses():
    x, y = universe()
    losses = score_examples(x[:4], y[:4], 1, x, y, MEAN, STD,
                            ScoreConfig(width=4, depth=2, steps=2, batch_size=4), device=CPU)
    assert losses.shape == (32,) and bool((losses > 0).all())
    assert dasm.__doc__ and "OUR READING" in dasm.__doc__


def test_ci_plan_runs_end_to_end(tmp_path, monkeypatch):
    from dataclasses import replace

    from ddbook.figures import dasm as fig
    from ddbook.profiles import get_profile

    monkeypatch.setenv("DDBOOK_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(fig, "_folder", lambda profile, piece: tmp_path / "cache" / piece.name)
    ci = get_profile("ci")
    names = [p.name for p in fig.plan(ci)]
    assert len(names) == len(set(names)) and {p.method for p in fig.plan(ci)} == set(fig.METHODS)
    with pytest.raises(ValueError, match="valid pieces"):
        fig.run(ci, device=CPU, only="no-such-piece")
    paths = fig.run(ci, device=CPU, only="-ipc2")
    assert len(paths) == len(fig.METHODS) and all(p.exists() for p in paths)
    stamps = [p.stat().st_mtime_ns for p in paths]
    fig.run(ci, device=CPU, only="-ipc2")               # current results are kept, not recomputed
    assert [p.stat().st_mtime_ns for p in paths] == stamps
    loaded = fig.load(ci)
    assert sorted(loaded.found) == sorted(n for n in names if n.endswith("-ipc2"))
    assert sorted(loaded.missing) == sorted(n for n in names if n.endswith("-ipc4"))
    for r in loaded.found.values():
        acc = r.data["accuracies"]
        assert len(acc) == fig.SETTINGS["ci"].eval_runs and all(0 <= a <= 1 for a in acc)
        bits = r.arrays["correct_bits"]
        assert bits.shape == (len(acc), -(-r.data["n_test"] // 8))
        assert np.unpackbits(bits, axis=1)[:, :r.data["n_test"]].mean(1).tolist() == acc
    assert fig.table(loaded)["dasm"][2] == loaded.found["dasm-ipc2"].data["accuracies"]
    s = fig.SETTINGS["ci"]
    updates = {m: loaded.found[f"{m}-ipc2"].data["updates_per_image"] for m in fig.METHODS}
    assert updates["random"] == updates["init"] == 0
    assert updates["gm"] == s.iterations * s.gm.inner_loop       # 8 decoded <= batch_syn_max
    assert updates["tm"] == fig._tm_preset(2, ci).loop.iterations
    proofs = fig.proofs(loaded)
    assert list(proofs) == list(fig.METHODS) and proofs["gm"]["IPCs"] == [2]
    assert proofs["init"]["largest final training loss"] == \
        max(loaded.found["init-ipc2"].data["train_loss"])
    # the control evaluates gm's own initial mosaics, never matched
    assert "not matched" in loaded.found["init-ipc2"].data["source"]
    n_test = loaded.found["gm-ipc2"].data["n_test"]
    first = np.arange(n_test) < n_test // 2
    groups = fig.group_accuracies(loaded, {"first": first, "all": np.ones(n_test, bool)})
    assert groups["gm"][2]["all"] == loaded.found["gm-ipc2"].data["accuracies"]
    assert groups["tm"][2]["first"] == \
        fig.correctness(loaded.found["tm-ipc2"])[:, first].mean(1).tolist()
    monkeypatch.setitem(fig.SETTINGS, "ci", replace(fig.SETTINGS["ci"], seed=1))
    assert set(fig.load(ci).stale) == set(loaded.found), "a changed config must read as stale"


def test_random_points_equal_the_fig3_sweeps_and_are_reused(tmp_path, monkeypatch, cifar10):
    """Where the Fig. 3 sweep runs the same computation, its random points are read, not retrained;
    computing the piece here gives the same accuracies (the claim that makes reuse honest)."""
    from dataclasses import replace

    from ddbook.figures import selmatch_fig3 as ws
    from ddbook.figures import dasm as fig
    from ddbook.profiles import get_profile

    monkeypatch.setenv("DDBOOK_RESULTS", str(tmp_path / "results"))
    ci, sw = get_profile("ci"), ws.sweep_config("ci")
    settings = replace(fig.SETTINGS["ci"], ipcs=(round(sw.ratios[0] * sw.train_per_class),),
                       methods=("random",), universe=sw.train_per_class,
                       test_per_class=sw.test_per_class, eval_width=sw.width,
                       eval_steps=sw.steps, eval_runs=sw.runs)
    monkeypatch.setitem(fig.SETTINGS, "ci", settings)
    piece, = fig.plan(ci)
    assert fig._sweep_random(piece.ipc, ci, settings) is None      # the sweep has not run
    ws.run_point(cifar10, sw, "ci", sw.ratios[0], None, 0, device=CPU)
    fig.run(ci, device=CPU)
    got = fig.load(ci).found[piece.name]
    assert "Fig. 3 sweep" in got.data["source"]
    monkeypatch.setattr(fig, "_sweep_random", lambda *a: None)
    path = fig.run_piece(piece, ci, CPU)
    mine = fig.load(ci).found[piece.name]
    assert mine.data["source"] == "computed here" and path.exists()
    assert mine.data["accuracies"] == got.data["accuracies"]
    assert np.array_equal(mine.arrays["correct_bits"], got.arrays["correct_bits"])


def test_verdicts_read_the_table():
    from collections import namedtuple

    from ddbook.figures import dasm as fig

    R = namedtuple("R", "data profile")
    acc = {("gm", 25): [.50, .51, .52], ("gm", 50): [.55, .56, .57], ("gm", 100): [.60, .61, .62],
           ("dasm", 25): [.51, .50, .52], ("dasm", 50): [.60, .61, .62],
           ("dasm", 100): [.70, .72, .71], ("tm", 100): [.61, .60, .62]}
    found = {f"{m}-ipc{i}": R({"method": m, "ipc": i, "accuracies": a}, "quick")
             for (m, i), a in acc.items()}
    v = fig.verdicts(fig.Loaded(found, [], {}))
    assert [x.outcome for x in v] == ["supported", "supported", "inconclusive at this scale"], \
        [(x.claim, x.outcome) for x in v]
    # the precondition (random rises with IPC, every planned IPC) and the control (gm vs its
    # initial mosaics, either sign) come first, wherever their pieces are
    more = {**found, **{f"{m}-ipc{i}": R({"method": m, "ipc": i, "accuracies": a}, "quick")
                        for m, i, a in (("random", 25, [.40, .41, .42]),
                                        ("random", 50, [.45, .46, .44]),
                                        ("random", 100, [.50, .52, .51]),
                                        ("init", 25, [.56, .57, .58]),     # gm is lower: moved
                                        ("init", 100, [.60, .62, .61]))}}  # no difference
    w = fig.verdicts(fig.Loaded(more, [], {}))
    assert [x.outcome for x in w[:3]] == ["supported", "supported", "inconclusive at this scale"]
    assert "precondition" in w[0].claim and "IPC 25" in w[1].claim and "IPC 100" in w[2].claim
    assert w[1].effect < 0 and w[3:] == v
    assert "largest IPC (100)" in v[0].claim and "grows with IPC" in v[1].claim
    # a partial grid judges nothing it does not name: without the plan's largest IPC (100) no
    # comparison falls back to 50, and without every planned IPC there is no trend
    part = {k: r for k, r in found.items() if not k.endswith("ipc100")}
    assert fig.verdicts(fig.Loaded(part, [], {})) == []
    part = {k: r for k, r in found.items() if k != "dasm-ipc25"}
    assert [x.claim for x in fig.verdicts(fig.Loaded(part, [], {}))] == \
        [v[0].claim, v[2].claim]
    assert fig.verdicts(fig.Loaded({}, [], {})) == []
