"""SelMatch's α ablation and Table 1 on the scale model (ddbook.selmatch_scale and the two figure
modules): plan sizes, updates-per-image accounting, reported caps, per-example bits, resume, and a
tiny end-to-end run of every kind of piece."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from ddbook import selmatch_scale as sc
from ddbook.evaluate import load_correct, pack_correct, unpack_correct
from ddbook.figures import selmatch_fig4a_alpha as selmatch_alpha, selmatch_table1
from ddbook.presets import describe_reductions, get_preset, reductions, scaled
from ddbook.profiles import get_profile

CI, QUICK, GPU = (get_profile(p) for p in ("ci", "quick", "gpu"))
TINY = replace(sc.SCALE_MODELS["ci"], universe_per_class=20, test_per_class=5, syn_steps=2,
               iterations=2, eval_steps=3, n_experts=2, expert_epochs=4)


@pytest.fixture
def tiny(monkeypatch, tmp_path, one_thread):
    """ci with a 20-per-class universe (ratios 10 / 30 %: IPC 2 and 6), results in tmp_path."""
    monkeypatch.setenv("DDBOOK_RESULTS", str(tmp_path))
    monkeypatch.setitem(sc.SCALE_MODELS, "ci", TINY)
    return tmp_path


def test_plan_sizes_and_names():
    a, t = selmatch_alpha.plan(QUICK), selmatch_table1.plan(QUICK)
    assert len(a) == 3 * 6, "3 ratios x 6 alphas at quick"
    # per ratio random, MTT, DATM, the fairness row; at 20 % MTT again at lr_img 1,000, and
    # SelMatch at the paper's alpha 0.1, off the grid
    assert len(t) == 3 * 4 + 2 and [p.name for p in t if p.method == "selmatch"] == \
        ["r0.20_selmatch-a0.1"]
    check = next(p for p in t if p.lr_img is not None)
    assert check.name == "r0.20_mtt-lr1000" and check.method == "mtt"
    assert sc.match_config(sc.scale_config(QUICK), check).lr_img == 1000.0
    mtt20 = next(p for p in t if p.name == "r0.20_mtt")
    assert sc.match_config(sc.scale_config(QUICK), mtt20).lr_img == 10000.0
    # a piece without its own rate keeps the config (and so the results) it had before the field
    assert "lr_img" not in sc.piece_config(QUICK, mtt20)["piece"]
    assert sc.piece_config(QUICK, check)["piece"]["lr_img"] == 1000.0
    names = [p.name for p in a + t]
    assert len(set(names)) == len(names), "piece names are unique across both pages"
    assert {sc.ipc_of(sc.scale_config(QUICK), r) for r in sc.scale_config(QUICK).ratios} == \
        {25, 50, 100}, "5 / 10 / 20 % of a 500-per-class universe"
    assert sc.paper_setting(0.05) == {"alpha": 0.6, "beta": 0.5, "lr_img": 1000.0,
                                      "preset": "selmatch-cifar10-ipc250"}
    assert sc.paper_alpha_piece(QUICK, 0.05).page == sc.ALPHA_PAGE
    assert sc.paper_alpha_piece(QUICK, 0.2).page == sc.TABLE1_PAGE
    with pytest.raises(ValueError, match="no SelMatch CIFAR-10 setting|has no CIFAR-10"):
        sc.paper_setting(0.15)


def test_every_distilled_image_is_updated_every_iteration_at_quick():
    scale = sc.scale_config(QUICK)
    for p in selmatch_alpha.plan(QUICK) + selmatch_table1.plan(QUICK):
        if not p.distills:
            continue
        m = sc.match_config(scale, p)
        n = 10 * sc.ipc_of(scale, p.ratio)
        assert m.syn_steps * m.batch_syn >= n, f"{p.name}: one unroll must cover the whole set"
        assert sc.updates_per_image(n, m.batch_syn, m.syn_steps, scale.iterations) >= 500
    # the accounting itself: a plan that covers half the set gives no guaranteed update
    assert sc.updates_per_image(250, 25, 10, 500) == 500
    assert sc.updates_per_image(250, 25, 5, 500) == 0
    assert sc.updates_per_image(250, 125, 55, 7) == 7


def test_scale_shares_the_fig3_protocol():
    assert sc.fig3_compatible(QUICK) is None and sc.fig3_compatible(CI) is None
    assert "not this page's scale model" in sc.fig3_compatible(GPU)


def test_a_capped_setting_is_reported_never_silent():
    quick = reductions("selmatch-cifar10-ipc250", "quick")
    ipc = next(r for r in quick if r["setting"] == "ipc")
    assert (ipc["preset"], ipc["run"], ipc["by"]) == (250, 50, "profile quick")
    assert "ipc: 250 -> 50 (profile quick)" in describe_reductions("selmatch-cifar10-ipc250", "quick")
    gpu = scaled(get_preset("selmatch-cifar10-ipc1000"), "gpu")
    assert gpu.ipc == 1000 and gpu.eval_epochs is None, "gpu: SelMatch's own IPC and eval length"
    assert not any(r["setting"] in ("ipc", "eval_epochs")
                   for r in reductions("selmatch-cifar10-ipc1000", "gpu"))
    assert reductions("selmatch-cifar10-ipc250", "paper") == []
    over = reductions("selmatch-cifar10-ipc250", "gpu", {"ipc": 20})
    assert {"setting": "ipc", "preset": 250, "run": 20, "by": "override"} in over
    # every difference between the preset and what runs is listed
    for name in ("mtt-cifar10-ipc10", "datm-cifar10-ipc500", "selmatch-cifar100-ipc50"):
        for prof in ("ci", "quick", "gpu"):
            listed = {r["setting"] for r in reductions(name, prof)}
            base, run = get_preset(name), scaled(get_preset(name), prof)
            assert ("ipc" in listed) == (base.ipc != run.ipc)
            assert ("eval_epochs" in listed) == (base.eval_epochs != run.eval_epochs)


def test_per_example_bits_round_trip():
    rng = np.random.default_rng(0)
    for n in (1, 8, 13, 10000):
        c = rng.random((3, n)) < 0.5
        packed = pack_correct(c)
        assert packed["correct_bits"].shape == (3, (n + 7) // 8) and packed["n_test"] == n
        assert np.array_equal(unpack_correct(packed["correct_bits"], n), c)
    with pytest.raises(ValueError, match="cannot hold"):
        unpack_correct(np.zeros((2, 3), np.uint8), 100)


def test_pieces_end_to_end_and_resume(tiny, cifar10, monkeypatch):
    alpha = selmatch_alpha.plan(CI)
    assert [p.name for p in alpha] == ["r0.10_a0.0", "r0.10_a0.5", "r0.10_a1.0", "r0.30_a0.0",
                                       "r0.30_a0.5", "r0.30_a1.0"]
    written = selmatch_alpha.run(CI, device="cpu", only="r0.30")
    assert len(written) == 3
    assert selmatch_alpha.run(CI, device="cpu", only="r0.30") == [], "finished pieces are kept"
    with pytest.raises(ValueError, match="r0.10_a0.0"):
        selmatch_alpha.run(CI, device="cpu", only="nothing-like-this")
    loaded = selmatch_alpha.load(CI)
    assert sorted(loaded.found) == ["r0.30_a0.0", "r0.30_a0.5", "r0.30_a1.0"]
    assert sorted(loaded.missing) == ["r0.10_a0.0", "r0.10_a0.5", "r0.10_a1.0"]
    for name, r in loaded.found.items():
        d = r.data
        assert d["n_images"] == 60 and d["n_test"] == 50 and len(d["accuracies"]) == 2
        assert all(math.isfinite(x) for x in d["train_loss"])
        assert load_correct(r).shape == (2, 50)
        assert np.allclose(load_correct(r).mean(1), d["accuracies"]), "bits agree with accuracy"
        px = d["pixels"]
        assert (px["distilled"] or {"n": 0})["n"] == d["n_distilled"]
        assert (px["real"] or {"n": 0})["n"] == d["n_selected"]
        assert all(p["absmax"] > 0 and p["std"] > 0 for p in px.values() if p)
        if d["alpha"] == 0.0:
            assert d["updates_per_distilled_image"] is None and d["n_distilled"] == 0
        else:
            assert d["n_distilled"] == 10 * math.floor(6 * d["alpha"])
            assert d["updates_per_distilled_image"] == d["iterations_applied"] == 2
        assert r.provenance["config"]["scale"]["universe_per_class"] == 20
    proofs = selmatch_alpha.proofs(loaded)
    assert proofs["min_updates"] == 2 and proofs["updates_ok"]
    # a changed scale makes the results stale: reported, not drawn
    monkeypatch.setitem(sc.SCALE_MODELS, "ci", replace(TINY, eval_steps=4))
    assert sorted(selmatch_alpha.load(CI).stale) == ["r0.30_a0.0", "r0.30_a0.5", "r0.30_a1.0"]


def test_table1_pieces_and_rows(tiny, cifar10):
    table_plan = selmatch_table1.plan(CI)
    assert {p.method for p in table_plan} == {"random", "mtt", "datm", "soft-random", "selmatch"}
    selmatch_table1.run(CI, device="cpu", only=lambda n: n.startswith("r0.10"))
    loaded = selmatch_table1.load(CI)
    d = {n: r.data for n, r in loaded.found.items()}
    assert d["r0.10_datm"]["soft_labels"] and d["r0.10_random-softlabels"]["soft_labels"]
    assert not d["r0.10_mtt"]["soft_labels"]
    assert d["r0.10_mtt"]["updates_per_distilled_image"] == d["r0.10_mtt"]["iterations_applied"]
    assert d["r0.10_random-softlabels"]["iterations"] == 0
    # the random row: MTT's initial draw, kept real (crop + flip under the combined protocol)
    rnd = d["r0.10_random"]
    assert not rnd["soft_labels"] and rnd["iterations"] == 0
    assert rnd["n_selected"] == rnd["n_images"] and rnd["n_distilled"] == 0
    by = {p.name: p for p in table_plan}
    first = [sc.final_set(CI, by[n]).meta["source_indices"]
             for n in ("r0.10_random", "r0.10_random-softlabels")]
    assert first[0] == first[1], "random and the fairness row hold the same images"
    sel = d["r0.10_selmatch-a0.2"]
    assert (sel["alpha"], sel["beta"], sel["n_distilled"]) == (0.2, 0.3, 0)  # floor(2 * 0.2) = 0
    selmatch_alpha.run(CI, device="cpu", only="r0.10_a0.0")     # the window row (α = 0)
    loaded = selmatch_table1.load(CI)
    rows, notes = selmatch_table1.rows(loaded, CI)
    labels = {r["row"] for r in rows if r["ratio"] == 0.1}
    assert {"random", "window (paper β)", "MTT", "DATM", "random real + DATM soft labels",
            "SelMatch (paper α, β)"} <= labels
    claims = [v.claim for v in selmatch_table1.verdicts(loaded, CI)]
    assert any("control: MTT vs random" in c for c in claims)
    assert any("beats window (paper β)" in c for c in claims)
    assert any("not drawn" in n for n in notes), "the tiny universe is not the Fig. 3 sweep's"
    paper = next(r for r in rows if r["row"] == "MTT")
    assert paper["paper_mean"] == 82.2, "the paper's number comes from the CSV"


def test_crossfit_never_scores_on_the_run_it_picked_with():
    held, picks = selmatch_table1.crossfit({0.2: [0.5, 0.1, 0.5], 0.4: [0.1, 0.9, 0.1]})
    # run 0: others favour 0.4 (0.5 vs 0.3) -> 0.1; run 1: 0.2 (0.5 vs 0.1) -> 0.1; run 2: 0.4 -> 0.1
    assert picks == [0.4, 0.2, 0.4] and held == [0.1, 0.1, 0.1]


def test_verdicts_of_the_control(tiny, cifar10):
    V = pytest.importorskip("ddbook.verdicts")
    from ddbook.results import Result
    fake = {f"r0.10_a{a:.1f}": Result(None, {"ratio": 0.1, "alpha": a, "accuracies": acc,
                                             "train_loss": [0.1] * 3,
                                             "updates_per_distilled_image": 500 if a else None},
                                      {"profile": "quick"}, None)
            for a, acc in ((0.0, [0.40, 0.41, 0.42]), (0.5, [0.45, 0.46, 0.47]),
                           (1.0, [0.50, 0.51, 0.52]))}
    loaded = sc.Loaded(fake, [], {})
    c = selmatch_alpha.control(loaded)
    assert c.outcome == V.SUPPORTED and c.effect > 0
    same = dict(fake, **{"r0.10_a1.0": replace(fake["r0.10_a1.0"], data={
        **fake["r0.10_a1.0"].data, "accuracies": [0.42, 0.40, 0.41]})})
    assert selmatch_alpha.control(sc.Loaded(same, [], {})).outcome == V.INCONCLUSIVE
    assert all(isinstance(v, V.Verdict) for v in selmatch_alpha.verdicts(loaded))


def test_the_alpha_trend_waits_for_complete_grids():
    from ddbook.results import Result

    def fake(rows):
        return sc.Loaded({f"r{r:.2f}_a{a:.1f}": Result(None, {
            "ratio": r, "alpha": a, "accuracies": acc, "train_loss": [0.01] * len(acc),
            "updates_per_distilled_image": 500 if a else None}, {"profile": "quick"}, None)
            for r, t in rows.items() for a, acc in t.items()}, [], {})

    grid = sc.scale_config(QUICK).alphas
    up = {a: [0.40 + 0.1 * a + d for d in (0.0, 0.01, 0.02)] for a in grid}     # best α = 1
    down = {a: [0.50 - 0.1 * a + d for d in (0.0, 0.01, 0.02)] for a in grid}   # best α = 0
    claim = "the best α falls as the subset grows (Fig. 4a)"
    # 10 % has run only α = 0 and 0.2: its argmax (0.2) would fake a fall from 5 %'s 1.0
    partial = fake({0.05: up, 0.10: {a: up[a] for a in (0.0, 0.2)}})
    assert claim not in [v.claim for v in selmatch_alpha.verdicts(partial)]
    assert set(selmatch_alpha.complete_rows(selmatch_alpha.alpha_table(partial), grid)) == {0.05}
    both = {v.claim: v for v in selmatch_alpha.verdicts(fake({0.05: up, 0.10: down}))}
    assert both[claim].outcome == "supported", both[claim]


def test_cli_names_the_pieces_when_only_matches_none(capsys):
    from ddbook.__main__ import main
    assert main(["reproduce", "selmatch-table1", "--profile", "ci", "--only", "zzz"]) == 2
    err = capsys.readouterr().err
    assert "r0.10_mtt" in err and "r0.30_datm" in err


def test_pixel_stats_per_part_and_the_table_note():
    from collections import namedtuple

    from ddbook.figures.selmatch_table1 import _updates_note
    x = torch.zeros(4, 3, 2, 2)
    x[0] = 5.0                     # a distilled image far outside the real range
    x[1] = -1.0
    sel = torch.tensor([False, False, True, True])
    px = sc.pixel_stats(x, sel)
    assert px["distilled"]["n"] == 2 and px["distilled"]["absmax"] == 5.0
    assert px["real"] == {"n": 2, "std": 0.0, "absmax": 0.0}
    assert sc.pixel_stats(x, torch.ones(4, dtype=torch.bool))["distilled"] is None
    R = namedtuple("R", "data")
    note = _updates_note(R({"updates_per_distilled_image": 500, "pixels": px}))
    assert note.startswith("500 updates per distilled image") and "|x| ≤ 5.0" in note
    assert _updates_note(R({"updates_per_distilled_image": None})) == "not distilled"


def test_a_set_is_remade_with_the_kernels_its_result_records(tiny, cifar10, monkeypatch):
    """The committed quick results predate the C loops (no ``kernels`` in their provenance): a
    set remade for them (coverage, ablations) must be distilled with the torch ops, the same
    computation to the bit on the same kind of CPU, not the C loops' rounding."""
    import os
    from ddbook import ckernels
    piece = next(p for p in selmatch_alpha.plan(CI) if p.name == "r0.30_a0.5")
    assert sc.made_with_kernels(CI, piece) is None, "no result yet"
    folder = tiny / "cache" / piece.name   # not the machine's cache: this test deletes in it
    monkeypatch.setattr(sc, "_folder", lambda profile, p: folder)
    monkeypatch.setenv("DDBOOK_KERNELS", "c")
    (path,) = selmatch_alpha.run(CI, device="cpu", only="r0.30_a0.5")
    assert sc.made_with_kernels(CI, piece) == "c"
    record = json.loads(path.read_text())
    record["provenance"].pop("kernels")           # as the results made before the C loops
    path.write_text(json.dumps(record))
    assert sc.made_with_kernels(CI, piece) == "torch"
    seen = []
    real_make = sc._make_set
    monkeypatch.setattr(sc, "_make_set", lambda *a, **k: seen.append(ckernels.mode())
                        or real_make(*a, **k))
    (folder / "synset_final.pt").unlink()   # the cache lost the set and its checkpoint
    (folder / "checkpoint.pt").unlink()
    remade = sc.ensure_set(CI, piece)
    assert seen == ["torch"] and os.environ["DDBOOK_KERNELS"] == "c", "torch within, c after"
    assert remade.images.shape[0] == 60
    with ckernels.kernels_as(None):
        assert os.environ["DDBOOK_KERNELS"] == "c"
    monkeypatch.delenv("DDBOOK_KERNELS")
    with ckernels.kernels_as("torch"):
        assert ckernels.mode() == "torch"
    assert "DDBOOK_KERNELS" not in os.environ
