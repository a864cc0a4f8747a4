"""Selection, our difficulty scores, and coverage: boundaries, directions, hand-made answers."""
from __future__ import annotations

import math

import pytest
import torch

import ddbook
from ddbook import coverage as cov
from ddbook import difficulty, selection
from ddbook.data import Split
from ddbook.scores import Scores

# papers.md §4.2: every released setting, (N_c, IPC, beta) -> window under both readings
RELEASED = [
    (5000, 250, 0.5, (2500, 2750), (125, 375)),
    (5000, 500, 0.3, (1500, 2000), (150, 650)),
    (5000, 1000, 0.2, (1000, 2000), (200, 1200)),
    (5000, 1500, 0.2, (1000, 2500), (300, 1800)),
    (500, 25, 0.8, (400, 425), (20, 45)),
    (500, 50, 0.7, (350, 400), (35, 85)),
    (500, 100, 0.6, (300, 400), (60, 160)),
    (500, 150, 0.4, (200, 350), (60, 210)),
    (500, 50, 0.8, (400, 450), (40, 90)),
    (500, 100, 0.7, (350, 450), (70, 170)),
]


@pytest.mark.parametrize("n_class,ipc,beta,fraction,offset", RELEASED)
def test_window_boundaries_of_every_released_setting(n_class, ipc, beta, fraction, offset):
    order = torch.arange(n_class)
    w = selection.window(order, ipc, beta)
    assert (int(w[0]), int(w[-1]) + 1) == fraction, f"class-fraction window for IPC {ipc}, β {beta}"
    w = selection.window(order, ipc, beta, reading="ipc-offset")
    assert (int(w[0]), int(w[-1]) + 1) == offset, f"ipc-offset window for IPC {ipc}, β {beta}"


def test_beta_grids_match_the_scripts():
    assert selection.beta_grid(0.05)[-1] == 0.9 and selection.beta_grid(0.10)[-1] == 0.9
    assert selection.beta_grid(0.20)[-1] == 0.8 and selection.beta_grid(0.30)[-1] == 0.7
    assert selection.beta_grid(0.05)[:3] == [0.0, 0.1, 0.2]
    for ratio in (0.05, 0.1, 0.2, 0.3):     # every grid point fits a CIFAR-10 class
        ipc = round(ratio * 5000)
        for beta in selection.beta_grid(ratio):
            selection.window_start(beta, 5000, ipc)


def test_window_past_the_end_names_the_largest_beta():
    with pytest.raises(ValueError, match=r"largest valid beta is 0\.7"):
        selection.window_start(0.8, 5000, 1500)
    with pytest.raises(ValueError, match="largest valid beta is 2"):
        selection.window_start(3.0, 5000, 1500, reading="ipc-offset")


def test_ipc_and_alpha_errors():
    with pytest.raises(ValueError, match="larger than"):
        selection.window_start(0.0, 500, 501)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        selection.check_alpha(1.5)
    with pytest.raises(ValueError, match="unknown window reading"):
        selection.window_start(0.1, 500, 50, reading="percent")


def _toy(n_per_class=20, classes=3):
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    ranks = torch.arange(n_per_class).repeat(classes)
    split = Split(torch.zeros(len(labels), 3, 2, 2, dtype=torch.uint8), labels, ranks, "class-sorted")
    values = torch.rand(len(labels), generator=torch.Generator().manual_seed(0)).double()
    return split, values


def test_hard_direction_per_score():
    split, values = _toy()
    low_hard = Scores("cscore", values, "low", "toy")
    high_hard = Scores("forgetting", values, "high", "toy")
    order = low_hard.hardest_first(split, 1)
    assert (values[order].diff() >= 0).all(), "C-score: hardest first = ascending"
    order = high_hard.hardest_first(split, 1)
    assert (values[order].diff() <= 0).all(), "forgetting: hardest first = descending"


def test_partition_puts_the_harder_part_in_select():
    split, values = _toy()
    s = Scores("cscore", values, "low", "toy")
    part = selection.partition_window(s, split, ipc=10, beta=0.25, alpha=0.3)
    assert part.distill_per_class == 3 and part.select_per_class == 7
    assert len(part.select) == 21 and len(part.distill) == 9
    for c in range(3):
        sel, dis = part.select[c * 7:(c + 1) * 7], part.distill[c * 3:(c + 1) * 3]
        assert values[sel].max() <= values[dis].min(), "selected images are the harder (lower) ones"
        window = selection.window(s.hardest_first(split, c), 10, 0.25)
        assert set((sel.tolist() + dis.tolist())) == set(window.tolist()), "parts tile the window"


def test_random_and_hardest_first_and_herding():
    split, values = _toy()
    a = selection.random_indices(split, 5, seed=1)
    assert torch.equal(a, selection.random_indices(split, 5, seed=1)), "seeded"
    assert torch.equal(torch.bincount(split.labels[a]), torch.full((3,), 5))
    hard = selection.hardest_first_indices(Scores("f", values, "high", "toy"), split, 2)
    assert values[hard[:2]].min() >= values[split.labels == 0].topk(2).values.min()
    feats = torch.randn(len(split), 4, generator=torch.Generator().manual_seed(2))
    h = selection.herding_indices(feats, split.labels, 4)
    assert len(h.unique()) == 12 and torch.equal(torch.bincount(split.labels[h]), torch.full((3,), 4))
    # herding's first pick is the example nearest the class mean
    cls0 = torch.nonzero(split.labels == 0).flatten()
    nearest = cls0[((feats[cls0] - feats[cls0].mean(0)) ** 2).sum(1).argmin()]
    assert int(h[0]) == int(nearest), "herding starts at the example closest to the mean"


def test_forgetting_on_a_hand_made_history():
    history = torch.tensor([[1, 0, 1, 0],     # presentation 1 (1 = correct)
                            [0, 0, 1, 1],
                            [1, 0, 0, 1],
                            [0, 0, 1, 1]], dtype=torch.bool)
    # ex 0: 1→0, 1→0 = 2 events; ex 1 never learned = 4 (presentations); ex 2: 1→0 once = 1;
    # ex 3: learned, never forgotten = 0
    assert difficulty.forgetting_events(history).tolist() == [2.0, 4.0, 1.0, 0.0]
    # the complement run: 1, 0 (always correct), 1, 1 events -> means over the two runs
    assert difficulty.forgetting_scores([history, ~history]).tolist() == [1.5, 2.0, 1.0, 0.5]


def test_el2n_on_hand_made_logits():
    logits = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    labels = torch.tensor([0, 0, 0])
    got = difficulty.el2n(logits, labels)
    assert torch.allclose(got, torch.tensor([math.sqrt(0.5), 0.0, math.sqrt(2.0)], dtype=torch.float64),
                          atol=1e-9), f"EL2N wrong: {got}"


def test_coverage_on_a_hand_made_point_set():
    test = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0], [0.0, 0.0]])
    test_y = torch.tensor([0, 0, 0, 1])
    syn = torch.tensor([[0.0, 0.5], [0.0, 0.0]])
    syn_y = torch.tensor([0, 0])          # class 1 has no synthetic example: never covered
    groups = {"easy": torch.tensor([True, True, False, False]), "hard": torch.tensor([False, False, True, True])}
    res = cov.coverage(test, test_y, syn, syn_y, radius=1.2, groups=groups)
    assert res.covered.tolist() == [True, True, False, False]
    assert res.overall == 0.5 and res.groups == {"easy": 1.0, "hard": 0.0}
    train = torch.tensor([[0.0, 1.0], [1.0, 1.0], [5.0, 3.0], [0.0, 2.0]])
    r = cov.coverage_radius(test, test_y, train, torch.tensor([0, 0, 0, 1]))
    assert r == pytest.approx(1.5), "median of the distances 1, 1, 3, 2"
    # other quantiles interpolate between the sorted distances 1, 1, 2, 3
    assert cov.coverage_radius(test, test_y, train, torch.tensor([0, 0, 0, 1]), 0.25) == \
        pytest.approx(1.0)
    assert cov.coverage_radius(test, test_y, train, torch.tensor([0, 0, 0, 1]), 0.75) == \
        pytest.approx(2.25)
    with pytest.raises(ValueError, match="quantile"):
        cov.coverage_radius(test, test_y, train, torch.tensor([0, 0, 0, 1]), 1.0)


def test_margin_and_groups():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 1.0, 5.0], [2.0, 0.0, 0.0]])
    m = cov.margin(logits, torch.tensor([0, 0, 2, 0]))
    assert m.tolist() == [2.0, -2.0, 4.0, 2.0]
    g = cov.difficulty_groups(m)
    # the median of [-2, 2, 2, 4] is 2 (torch takes the lower middle value): hard is margin <= 2
    assert g["hard"].tolist() == [True, True, False, True]
    assert g["easy"].tolist() == [False, False, True, False]
    with pytest.raises(ValueError, match="halves"):
        cov.difficulty_groups(m, "thirds")


def test_random_subset_coverage_rises_with_size(cifar10):
    """Sanity check on real data, in pixel space: a larger random subset covers more of the test set."""
    train = cifar10.train.take_per_class(200, seed=0)
    test = cifar10.test.take_per_class(50, seed=0)
    f_train = train.images.flatten(1).float() / 255
    f_test = test.images.flatten(1).float() / 255
    r = cov.coverage_radius(f_test, test.labels, f_train, train.labels)
    sizes = [2, 10, 50]
    covs = []
    for ipc in sizes:
        idx = selection.random_indices(train, ipc, seed=0)
        covs.append(cov.coverage(f_test, test.labels, f_train[idx], train.labels[idx], r).overall)
    assert covs[0] < covs[1] < covs[2], f"coverage should rise with subset size: {covs}"


def test_window_command_writes_a_result_and_refuses_a_bad_beta(cifar10, tmp_path, monkeypatch, capsys):
    from ddbook.__main__ import main

    monkeypatch.setenv("DDBOOK_RESULTS", str(tmp_path))
    assert main(["window", "--ratio", "0.05", "--beta", "0.5", "--profile", "ci"]) == 0
    r = ddbook.load_result("selection/window_cscore_r0.05_b0.5_class-fraction", "ci", root=tmp_path)
    assert (r.data["start"], r.data["end"]) == (2500, 2750) and len(r.arrays["indices"]) == 2500
    means = [v["window_mean"] for v in r.data["per_class"].values()]
    assert abs(sum(means) / len(means) - 0.84) < 0.01, "papers.md §9: mean C-score 0.84 at 5 %, β 0.5"
    assert main(["window", "--ratio", "0.3", "--beta", "0.8", "--profile", "ci"]) == 2
    assert "largest valid beta is 0.7" in capsys.readouterr().err
