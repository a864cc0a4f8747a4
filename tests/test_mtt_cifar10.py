"""The MTT page's module: the table's plan, its baselines, the cross-architecture pieces, verdicts,
images for display."""
from __future__ import annotations

import pytest
import torch

from ddbook import figures
from ddbook.figures import _common
from ddbook.figures import mtt_cifar10 as mr
from ddbook.profiles import get_profile

CI, QUICK = get_profile("ci"), get_profile("quick")


def test_mtt_plan_respects_the_profile_cap():
    assert [r.name for r in mr.table_plan(QUICK)] == [f"mtt-cifar10-ipc{i}" for i in (1, 10, 50)]
    assert [r.name for r in mr.table_plan(CI)] == ["mtt-cifar10-ipc1", "mtt-cifar10-ipc10"], \
        "ci has 20 images per class: IPC 50 is impossible there"
    assert all(r.baseline_lr == 0.01 for r in mr.table_plan(QUICK))
    names = [p.name for p in mr.plan(QUICK)]
    assert len(set(names)) == len(names) == 3 + 3 + 9, names
    assert "mtt-cifar10-ipc50-random-learned-lr" in names and "cross-arch-VGG11-lr0.01" in names


def _fake(data: dict, config: dict | None = None):
    class R:  # the parts of results.Result the tables and verdicts read
        pass
    r = R()
    r.data, r.provenance = data, {"config": config or {}}
    return r


def _point(accs, lr=0.03, iteration=200):
    mean = sum(accs) / len(accs)
    return {"mean": mean, "std": max(accs) - mean, "runs": len(accs), "accuracies": accs,
            "lr": lr, "iteration": iteration}


def _table_runs(rows):
    found = {}
    for ipc, distilled, base, learned in rows:
        found[f"mtt-cifar10-ipc{ipc}"] = _fake({
            "result_at_declared_iteration": _point(distilled),
            "best_over_checkpoints": _point([a + 0.01 for a in distilled], iteration=150),
            "baseline": _point(base, lr=0.01)})
        if learned is not None:
            found[f"mtt-cifar10-ipc{ipc}-random-learned-lr"] = _fake(_point(learned))
    return found


def test_table_rows_split_the_gain_and_read_the_paper():
    found = _table_runs([(1, [0.30, 0.31], [0.15, 0.16], [0.20, 0.21]),
                         (10, [0.42, 0.43], [0.30, 0.29], None)])
    rows = {r["ipc"]: r for r in mr.table_rows(found)}
    assert set(rows) == {1, 10}, "IPC 50 absent: no row"
    r1 = rows[1]
    assert (r1["distilled, final iteration"], r1["random real, lr 0.01"],
            r1["random real, learned step size"]) == (30.5, 15.5, 20.5)
    assert r1["gain from the step size"] == 5.0 and r1["gain from the pixels"] == 10.0
    assert r1["distilled, best over checkpoints"] == 31.5 and r1["best at iteration"] == 150
    assert (r1["paper"], r1["paper random"]) == (46.3, 14.4), "MTT Table 1 from the csv"
    assert rows[10]["gain from the pixels"] is None, "no learned-lr baseline: no split"


def test_verdicts_per_ipc_and_architecture():
    found = _table_runs([(1, [0.30, 0.31], [0.15, 0.16], [0.30, 0.315]),
                         (10, [0.42, 0.43], [0.47, 0.48], None)])
    found.update({"cross-arch-VGG11": _fake(_point([0.40, 0.41])),
                  "cross-arch-VGG11-random": _fake(_point([0.30, 0.31])),
                  "cross-arch-AlexNet": _fake(_point([0.40, 0.41]))})
    out = {v.claim: v for v in mr.verdicts(found)}
    assert out["IPC 1: the distilled set beats the random real images it starts from (lr 0.01)"
               ].outcome == "supported"
    assert out["IPC 1: the pixels: the distilled set beats the same random images at its learned "
               "step size"].outcome == "inconclusive at this scale", "0.3 points against 1 of noise"
    assert out["IPC 10: the distilled set beats the random real images it starts from (lr 0.01)"
               ].outcome == "contradicted"
    assert out["VGG-11: the IPC 10 set beats random real images trained the same way"
               ].outcome == "supported"
    assert not any(k.startswith("AlexNet") for k in out), "AlexNet has no random-real piece"
    assert all("ONE distilled set" in v.note for v in out.values())


def test_display_copies_undo_the_normalisation(cifar10):
    from ddbook.data import normalize
    from ddbook.synset import display_uint8
    from ddbook.zca import fit_zca

    raw = cifar10.train.images[:20]
    out = display_uint8(normalize(raw, cifar10.mean, cifar10.std), None, cifar10.mean, cifar10.std)
    zca = fit_zca(cifar10.train.images[:2000].float() / 255)
    out_zca = display_uint8(zca(raw.float() / 255), zca)
    for shown in (out, out_zca):
        assert shown.dtype == torch.uint8 and shown.shape == raw.shape
        # un-normalised (un-whitened), then an affine stretch per image (clipped at ±2.5 std):
        # the pixels stay almost perfectly correlated with the original image
        for i in range(5):
            r = torch.corrcoef(torch.stack([shown[i].flatten().float(), raw[i].flatten().float()]))
            assert float(r[0, 1]) > 0.97, (i, float(r[0, 1]))


def test_display_images_pick_per_class(tmp_path):
    class R:
        path = tmp_path / "x.json"
        arrays = {"display_final": torch.arange(6).view(6, 1, 1, 1).to(torch.uint8),
                  "display_index": torch.tensor([0, 1, 4, 5, 8, 9]),
                  "classes": torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])}
        data = {"run_folder": str(tmp_path)}
    assert _common.display_images(R(), "final", per_class=1).flatten().tolist() == [0, 2, 4]
    with pytest.raises(KeyError, match="display_initial"):
        _common.display_images(R(), "initial")
    with pytest.raises(FileNotFoundError, match="rerun that distillation"):
        _common.final_set(R())


def test_unknown_figure_and_piece_are_refused():
    with pytest.raises(ValueError, match="unknown figure 'everything'; choose one of .*mtt"):
        figures.reproduce("everything", "ci")
    with pytest.raises(ValueError, match="no piece of 'cross-arch' matches --only 'LeNet'; its "
                                         "pieces are: cross-arch-ConvNet, "):
        figures.reproduce("cross-arch", "ci", only="LeNet")


def test_cross_arch_plan_pairs_every_network_with_its_random_baseline():
    plan = mr.cross_arch_plan(QUICK)
    assert plan == ["ConvNet", "ConvNet-random", "ResNet18", "ResNet18-random", "VGG11",
                    "VGG11-random", "AlexNet", "AlexNet-random", "VGG11-lr0.01"]
    assert mr._split_piece("VGG11-random") == ("VGG11", True, 0.01)
    assert mr._split_piece("AlexNet") == ("AlexNet", False, None)
    assert mr._split_piece("VGG11-lr0.003") == ("VGG11", False, 0.003)
    with pytest.raises(ValueError, match="unknown cross-architecture piece"):
        mr._split_piece("LeNet")
    for bad in ("VGG11-lrfast", "VGG11-lr-1", "VGG11-lrnan"):
        with pytest.raises(ValueError, match="must be a positive number"):
            mr._split_piece(bad)
    assert mr._cross_config("VGG11-lr0.01", QUICK)["set"] == "mtt-cifar10-ipc10", \
        "the diagnostic trains on the distilled set"
    distilled, random = mr._cross_config("VGG11", QUICK), mr._cross_config("VGG11-random", QUICK)
    assert distilled["eval"] == random["eval"], "both sides trained by one protocol"
    assert random["lr"] == 0.01 and "lr" not in distilled, "the distilled side uses its learned lr"
    assert distilled["set"] != random["set"], "the two results files cannot be mistaken"


def test_cross_arch_rows_and_diagnostics():
    def res(mean, std=0.002, runs=2, lr=0.01):
        return _fake({"mean": mean, "std": std, "runs": runs, "epochs": 300, "lr": lr},
                     {"eval": {"width": 32}})
    found = {"ConvNet": res(0.42), "ConvNet-random": res(0.26), "VGG11": res(0.15),
             "VGG11-random": res(0.20), "AlexNet": res(0.21)}
    found["VGG11"].data["lr"] = 0.0324
    rows = {r["network"]: r for r in mr.cross_arch_rows(found)}
    assert rows["ConvNet"]["gain"] == 16.0 and rows["ConvNet"]["paper (approx.)"] == 64.3
    assert rows["VGG11"]["gain"] == -5.0
    assert rows["VGG11"]["kept of ConvNet"] == round(0.15 / 0.42, 3)
    assert rows["VGG11"]["paper kept of ConvNet"] == round(50.3 / 64.3, 3)
    assert rows["VGG11"]["conv_width"] == 32, "ours divides by our (width-32) ConvNet"
    assert rows["ResNet18"]["distilled"] is None and rows["AlexNet"]["gain"] is None
    assert mr.cross_arch_diagnostics(found) == []
    found["VGG11-lr0.01"] = res(0.31, 0.01)
    assert mr.cross_arch_diagnostics(found) == [
        "diagnostic, VGG-11: the distilled set at a fixed lr 0.01 instead of its learned step size "
        "(0.0324): 31.0 ± 1.0 % (at the learned step size 15.0 %; random real at 0.01: 20.0 %)"]


def test_need_sets_reruns_a_finished_run_whose_set_the_cache_lost(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    folder.mkdir()
    done = _fake({"run_folder": str(folder), "finished": True})
    calls = []
    monkeypatch.setattr(_common.DistillRun, "load", lambda self, profile: done)
    monkeypatch.setattr(_common.DistillRun, "run", lambda self, profile, device=None:
                        calls.append(self.name) or f"{self.name}.json")
    table = {r.name for r in mr.table_plan(CI)}
    in_table = lambda name: name in table   # noqa: E731
    assert mr.run(CI, only=in_table) == [] and calls == [], "finished runs are not rerun"
    assert not _common.has_final_set(done)
    assert mr.run(CI, only=lambda n: n == "mtt-cifar10-ipc10", need_sets=True) == \
        ["mtt-cifar10-ipc10.json"]
    assert calls == ["mtt-cifar10-ipc10"], "only the run whose set is needed, and gone"
    (folder / "synset_final.pt").write_bytes(b"")
    assert _common.has_final_set(done)
    assert mr.run(CI, only=in_table, need_sets=True) == [], "a set still in the cache is not remade"


def test_aliases_run_their_part_of_the_page(monkeypatch):
    seen = {}
    monkeypatch.setattr(mr, "run", lambda profile, device=None, only=None: seen.setdefault(
        "names", [p.name for p in mr.plan(profile) if only(p.name)]))
    figures.reproduce("cross-arch", "quick", only="VGG11")
    assert seen.pop("names") == ["cross-arch-VGG11", "cross-arch-VGG11-random",
                                 "cross-arch-VGG11-lr0.01"]
    figures.reproduce("mtt", "quick")
    assert seen.pop("names") == ["mtt-cifar10-ipc1", "mtt-cifar10-ipc10", "mtt-cifar10-ipc50",
                                 "mtt-cifar10-ipc1-random-learned-lr",
                                 "mtt-cifar10-ipc10-random-learned-lr",
                                 "mtt-cifar10-ipc50-random-learned-lr"]
