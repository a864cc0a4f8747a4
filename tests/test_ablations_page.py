"""SelMatch Fig. 4(b)-(d) (issue 18): the three augmentation modes, the BN / IN switch, T+ by the
experts' training progress, the verdicts on synthetic data, the plan, the page end to end."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ddbook import selmatch_scale as sc, verdicts as V
from ddbook.augment import augment
from ddbook.figures import Loaded, selmatch_fig4bcd_ablations as ab
from ddbook.networks import get_network
from ddbook.profiles import get_profile
from ddbook.results import config_hash

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = "cpu"
CI, QUICK = get_profile("ci"), get_profile("quick")


# ------------------------------------------------------------------------------------------
# (b) the augmentation modes


def _images(n=64, seed=0):
    """Images whose every pixel value is distinct and non-zero: a crop (zero fill) and a flip only
    move values, so the values of an image augmented by crop + flip are a subset of its own and 0."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g) + 1.0


def _only_moved(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(n,) bool: image i of ``out`` holds only values of image i of ``x`` (and zeros)."""
    keep = []
    for o, i in zip(out, x):
        vals = torch.unique(i)
        o = o[o != 0]
        keep.append(bool(torch.isin(o, vals).all()))
    return torch.tensor(keep)


def test_combined_moves_selected_images_and_transforms_distilled_ones():
    x = _images()
    sel = torch.arange(len(x)) % 2 == 0
    out = augment(x, "combined", torch.Generator().manual_seed(1), sel)
    moved = _only_moved(out, x)
    assert moved[sel].all(), "selected images: crop + flip only"
    assert not moved[~sel].all(), "distilled images: per-image DSA (colour, scale, rotate) too"


def test_dsa_mode_reaches_the_selected_images_and_simple_mode_the_distilled_ones():
    x = _images(32)
    sel = torch.arange(len(x)) % 2 == 0
    g = torch.Generator().manual_seed(2)
    # DSA draws one op group per batch: over several batches, the selected images are transformed
    dsa_moved = [bool(_only_moved(augment(x, "dsa", g, sel), x)[sel].all()) for _ in range(8)]
    assert not all(dsa_moved), "'dsa' applies DSA to the selected images as well"
    for _ in range(4):
        assert _only_moved(augment(x, "simple", g, sel), x).all(), \
            "'simple' leaves every image, distilled ones included, un-augmented by DSA"


def test_each_aug_piece_evaluates_the_source_set_with_its_mode_and_the_same_networks():
    for p in ab.plan(QUICK):
        if p.kind != "aug":
            continue
        n = 10 * sc.ipc_of(sc.scale_config(QUICK), p.ratio)
        mine, source = ab._eval_config(QUICK, p, n), sc.eval_config(sc.scale_config(QUICK), n)
        assert mine.augment == p.mode != source.augment == "combined"
        assert replace(mine, augment="combined") == source, "same steps, lr, runs, init seeds"


# ------------------------------------------------------------------------------------------
# (c) the norm switch


def _has(model, kind) -> bool:
    return any(isinstance(m, kind) for m in model.modules())


def test_the_norm_switch_reaches_experts_student_and_evaluation():
    bn, inn = ab._scale(QUICK, "bn"), ab._scale(QUICK, "in")
    assert sc.expert_config(bn).network == "ConvNetBN" and sc.expert_config(inn).network == "ConvNet"
    assert replace(inn, network=bn.network) == bn, "only the network differs"
    assert sc.expert_config(inn) != sc.expert_config(bn), "a second buffer"
    for piece in ab.plan(QUICK):
        if piece.kind == "norm":
            assert ab._eval_config(QUICK, piece, 500).network == \
                {"bn": "ConvNetBN", "in": "ConvNet"}[piece.eval_norm]
    net_in = get_network("ConvNet", 10, (32, 32), 3, 8)
    net_bn = get_network("ConvNetBN", 10, (32, 32), 3, 8)
    assert _has(net_bn, torch.nn.BatchNorm2d) and not _has(net_in, torch.nn.BatchNorm2d)
    with pytest.raises(ValueError, match="'bn' or 'in'"):
        ab._scale(QUICK, "ln")


# ------------------------------------------------------------------------------------------
# (d) T+ by training progress


def test_tplus_is_the_first_epoch_at_the_progress_capped_by_the_segment():
    progress = [0.0, 0.1, 0.3, 0.6, 0.9, 1.0, 1.0]        # 6 epochs
    assert ab.tplus_epoch(progress, 0.5, 6, 2) == 3
    assert ab.tplus_epoch(progress, 0.3, 6, 2) == 2
    assert ab.tplus_epoch(progress, 1.0, 6, 2) == 5
    assert ab.tplus_epoch(progress, 1.0, 6, 3) == 4, "t + M <= E"
    assert ab.tplus_epoch(progress, 0.0, 6, 2) == 1, "at least one start epoch"
    with pytest.raises(ValueError, match="7"):
        ab.tplus_epoch(progress[:-1], 0.5, 6, 2)


# ------------------------------------------------------------------------------------------
# verdicts on synthetic results


def _res(**data):
    return SimpleNamespace(data=data, profile="ci", provenance={"wall_time_s": 1.0})


def _loaded(gap: float, noise=(0.0, 0.01, -0.01, 0.005)):
    """Synthetic results at ci: every alternative ``gap`` below the reference (combined, BN/BN,
    the largest T+ at the large ratio), with per-network noise."""
    found = {}
    a = lambda base: [base + e for e in noise]   # noqa: E731
    b = lambda base: [base + e for e in noise[::-1]]   # noqa: E731 (other noise, same scale)
    for r in (0.1, 0.3):
        src = sc.paper_alpha_piece(CI, r)
        found[f"{src.page}/{src.name}"] = _res(ratio=r, accuracies=a(0.6), train_loss=[0.1] * 4,
                                                updates_per_distilled_image=500)
        for m in ("dsa", "simple"):
            found[f"r{r:.2f}_aug-{m}"] = _res(kind="aug", ratio=r, mode=m,
                                              accuracies=b(0.6 - gap), train_loss=[0.1] * 4)
        # T+: at 0.3 accuracy rises by `gap` per unit of progress; at 0.1 it is flat
        found[f"r{r:.2f}_tplus-p0.50"] = _res(kind="tplus", ratio=r, t_plus=1,
                                              progress_at_tplus=0.0,
                                              accuracies=b(0.6 - gap * (r > 0.2)),
                                              train_loss=[0.1] * 4,
                                              updates_per_distilled_image=500)
    for d, e in (("bn", "in"), ("in", "bn"), ("in", "in")):
        found[f"r0.10_distil-{d}_eval-{e}"] = _res(kind="norm", ratio=0.1, distil_norm=d,
                                                   eval_norm=e,
                                                   accuracies=b(0.6 - gap),
                                                   train_loss=[0.1] * 4)
    t = sc.SCALE_MODELS["ci"].max_start_epoch
    progress = [0.0] * t + [1.0] * (5 - t)
    found["experts-bn"] = _res(norm="bn", progress=progress, test_accuracy=[[0.1] * 5])
    return Loaded(found, [], {})


def test_verdicts_separated_supported_flat_inconclusive():
    sep = ab.verdicts(_loaded(0.1))
    flat = ab.verdicts(_loaded(0.0))
    assert len(sep) == len(flat) == 2 * (1 + 2) + 3 + 2   # (b) pooled and per ratio
    assert all(v.outcome == V.SUPPORTED for v in sep), [(v.claim, v.outcome) for v in sep]
    assert all(v.outcome == V.INCONCLUSIVE for v in flat), [(v.claim, v.outcome) for v in flat]
    assert all(v.outcome == V.CONTRADICTED for v in ab.verdicts(_loaded(-0.1)))
    aug = [v for v in sep if "augmentation" in v.claim]
    pooled = [v for v in aug if "one ratio" not in v.claim]
    assert all("paired" in v.test and v.n == "8 paired networks at 10% and 30%" for v in pooled)
    assert sorted(v.claim.split(",")[0] for v in aug if v not in pooled) == \
        ["at 10%", "at 10%", "at 30%", "at 30%"]
    # a mode run at one ratio so far names that ratio only, not every ratio of the table
    part = _loaded(0.1)
    del part.found["r0.30_aug-simple"]
    simple = [v for v in ab.verdicts(part) if "crop + flip" in v.claim]
    assert [v.n for v in simple] == ["4 paired networks at 10%"]   # and no per-ratio copy of it


def test_tplus_verdicts_wait_for_the_plans_grid():
    """(d) judges the plan's large ratio only when its T+ grid is complete: without it nothing
    falls back to the small ratio; without the small ratio only the trend is judged."""
    full = _loaded(0.1)
    tplus = [v.claim for v in ab.verdicts(full) if "T+" in v.claim or "start epoch" in v.claim]
    assert len(tplus) == 2 and "at the large ratio (30%)" in tplus[0]

    def without(name):
        return Loaded({k: r for k, r in full.found.items() if k != name}, [], {})
    assert not [v for v in ab.verdicts(without("r0.30_tplus-p0.50")) if "Fig. 4d" in v.claim]
    left = [v.claim for v in ab.verdicts(without("r0.10_tplus-p0.50")) if "Fig. 4d" in v.claim]
    assert left == [tplus[0]]


def test_tables_place_the_source_at_its_own_tplus_progress():
    tp = ab.tplus_table(_loaded(0.1))
    src = tp[tp["source"]]
    assert len(src) == 8 and (src["t_plus"] == sc.SCALE_MODELS["ci"].max_start_epoch).all()
    assert (src["progress"] == 1.0).all() and (tp[~tp["source"]]["progress"] == 0.0).all()
    aug = ab.aug_table(_loaded(0.1))
    assert set(aug["mode"]) == {"combined", "dsa", "simple"} and len(aug) == 2 * 3 * 4
    assert set(map(tuple, ab.norm_table(_loaded(0.1))[["distil", "eval"]].values)) == \
        {("BN", "BN"), ("IN", "BN"), ("BN", "IN"), ("IN", "IN")}
    assert ab.proofs(_loaded(0.1))["min_updates"] == 500


# ------------------------------------------------------------------------------------------
# the plan


def test_plan_at_quick_and_its_cost():
    pieces = ab.plan(QUICK)
    names = [p.name for p in pieces]
    assert len(names) == len(set(names)) == 2 + 2 * 2 + 3 + 2 * 2 + 3
    # one rerun of each source set under its own protocol (the reference, evaluated here)
    here = [p for p in pieces if p.kind == "here"]
    assert sorted(p.ratio for p in here) == [0.05, 0.1, 0.2]
    for p in here:
        assert ab.piece_config(QUICK, p)["eval"] == sc.piece_config(QUICK, ab._source(QUICK, p))["eval"]
    aug = [p for p in pieces if p.kind == "aug"]
    assert len({p.ratio for p in aug}) >= 2 and sc.scale_config(QUICK).eval_runs >= 3
    assert {p.ratio for p in pieces if p.kind == "tplus"} == {0.05, 0.2}
    # every source is SelMatch at the paper's α and β, an existing α-page / Table 1 piece
    for s in ab._sources(QUICK):
        assert s in sc.alpha_plan(QUICK) + sc.table1_plan(QUICK)
        assert s.alpha == sc.paper_setting(s.ratio)["alpha"]
    rows = ab.planned_cost(QUICK)
    assert rows is not None, "the unit costs are committed (benchmarks/results/units)"
    hours = sum(r["cpu_min"] for r in rows) / 60
    assert 2.5 <= hours <= 5.0, hours
    with pytest.raises(ValueError, match="the pieces are"):
        ab.run(CI, only="no-such-piece")


# the configs of the α page's and Table 1's pieces at quick, as they stood when this page was
# written: the Fig. 3 sweep runs meanwhile, and this page must not make them stale
PINNED = {"r0.05_a0.6": "bbc9015baf9d", "r0.10_a0.2": "fc20ca3ad0ce",
          "r0.20_selmatch-a0.1": "a11f030ac603"}


def test_the_source_pieces_configs_are_not_changed_by_this_page():
    srcs = {s.name: s for s in ab._sources(QUICK)}
    assert set(srcs) == set(PINNED)
    for name, s in srcs.items():
        cfg = sc.piece_config(QUICK, s)
        assert config_hash(cfg) == PINNED[name], f"{name}: its stored config changed"
        assert ab.piece_config(QUICK, next(p for p in ab.plan(QUICK) if p.ratio == s.ratio and
                                           p.kind != "experts"))["source"] == cfg


# ------------------------------------------------------------------------------------------
# the page end to end at a tiny scale


TINY = replace(sc.SCALE_MODELS["ci"], universe_per_class=20, test_per_class=5, syn_steps=2,
               iterations=2, eval_steps=3, n_experts=2, expert_epochs=4)


@pytest.fixture
def tiny(monkeypatch, tmp_path, one_thread):
    monkeypatch.setenv("DDBOOK_RESULTS", str(tmp_path / "results"))
    monkeypatch.setitem(sc.SCALE_MODELS, "ci", replace(TINY, universe_per_class=60))
    monkeypatch.setattr(sc, "_folder", lambda profile, piece: tmp_path / "cache" / piece.name)
    monkeypatch.setattr(ab, "_folder", lambda profile, tag: tmp_path / "abl" / tag)
    return tmp_path


def test_page_end_to_end(tiny, cifar10):
    sc.run_pieces(CI, ab._sources(CI), device=CPU)
    assert not ab.load(CI).found, "the α page's sets alone: this page is still pending"
    written = ab.run(CI, device=CPU)
    assert len(written) == len(ab.plan(CI)), "the sources are read, not made again"
    loaded = ab.load(CI)
    assert not loaded.missing and not loaded.stale, loaded.describe("ci")
    f = loaded.found
    assert f["experts-in"].data["network"] == "ConvNet" and f["experts-bn"].data["network"] == \
        "ConvNetBN"
    assert len(f["experts-in"].data["progress"]) == TINY.expert_epochs + 1
    for name, r in f.items():
        if "/" in name or r.data.get("kind") is None:
            continue
        d = r.data
        assert d["eval"]["config"]["augment"] == d["mode"]
        assert d["eval_network"] == {"bn": "ConvNetBN", "in": "ConvNet"}[d["eval_norm"]]
        assert d["distil_network"] == {"bn": "ConvNetBN", "in": "ConvNet"}[d["distil_norm"]]
        if d["kind"] == "tplus":
            assert d["max_start_epoch"] == d["t_plus"] >= 1
    # the IN set is distilled once and evaluated two ways; the BN re-evaluations read the source
    a, b = f["r0.10_distil-in_eval-bn"].data, f["r0.10_distil-in_eval-in"].data
    assert a["cache_folder"] == b["cache_folder"] and a["distill_loss_last"] == b["distill_loss_last"]
    # a second process that needs the IN set while another distils it waits for it, then reads it
    import threading
    from ddbook import paths
    from ddbook.synset import load_synset
    piece = next(p for p in ab.plan(CI) if p.name == "r0.10_distil-in_eval-in")
    folder = ab._folder(CI, a["cache_folder"])
    got = []
    with paths.FileLock(folder / ".distil.lock", wait=True):
        t = threading.Thread(target=lambda: got.append(ab._distilled_set(
            ab._Context(CI, CPU), piece, ab._source(CI, piece))))
        t.start()
        t.join(1.0)
        assert t.is_alive() and not got, "it waits for the lock"
    t.join(120)
    assert got and torch.equal(got[0][0].images, load_synset(folder / "synset_final.pt").images)
    assert got[0][1]["distill_loss_last"] == a["distill_loss_last"]
    src = f[f"selmatch_table1/{sc.paper_alpha_piece(CI, 0.1).name}"]
    dsa = f["r0.10_aug-dsa"].data
    assert dsa["n_images"] == src.data["n_images"] and dsa["source"].endswith(
        sc.paper_alpha_piece(CI, 0.1).name)
    from ddbook.matching import expert_network
    ctx = ab._Context(CI, CPU)
    assert _has(expert_network(ctx.buffer("bn"), CPU), torch.nn.BatchNorm2d)
    assert not _has(expert_network(ctx.buffer("in"), CPU), torch.nn.BatchNorm2d), \
        "the IN student is the IN experts' network"
    # every panel pairs with the rerun of its source set here; on one machine the rerun is the
    # source page's evaluation to the bit (same set, protocol and seeds)
    refs = ab.references(loaded)
    assert refs and all(where == "rerun here" for _, where in refs.values())
    mt = ab.machine_table(loaded)
    assert len(mt) == len(refs) and (mt["paired difference (points)"] == 0).all(), mt
    assert (mt["source kernels"] == mt["rerun kernels"]).all(), mt
    verdicts = ab.verdicts(loaded)
    assert len(verdicts) == 2 * (1 + 2) + 3 + 2 and all(v.outcome in V.OUTCOMES for v in verdicts)
    assert ab.run(CI, device=CPU) == [], "current pieces are kept"
    import matplotlib.pyplot as plt
    plt.close(ab.figure(loaded, "ci"))
