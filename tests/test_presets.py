"""Tests for ddbook.presets: the published settings as data, profile scaling, the command line."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ddbook import presets
from ddbook.presets import PRESETS, get_preset, scaled, with_overrides

# papers.md §2.4 (a), §3.3, §4.3/§4.4: (preset, {path: published value})
PUBLISHED = [
    ("mtt-cifar10-ipc10", {"match.syn_steps": 30, "match.max_start_epoch": 20,
                           "match.lr_img": 100, "match.lr_lr": 1e-5, "syn_lr": 0.001,
                           "zca": True, "experts.epochs": 50}),
    ("mtt-cifar100-ipc50", {"match.syn_steps": 80, "match.batch_syn": 125, "match.lr_img": 1000}),
    ("mtt-cifar100-ipc1", {"match.expert_epochs": 3, "match.syn_steps": 20}),
    ("datm-cifar10-ipc1", {"match.threshold": 1.1, "match.syn_steps": 80, "match.lr_label": 5,
                           "match.initial_max_start_epoch": None, "match.max_start_epoch": 4}),
    ("datm-cifar10-ipc10", {"match.initial_max_start_epoch": 10, "match.max_start_epoch": 20,
                            "match.expansion_end": 1000, "match.batch_syn": 100,
                            "match.threshold": 1.0, "match.learn_labels": True,
                            "match.label_momentum": 0.9, "init": "correct",
                            "soft_labels": "correct-experts", "experts.gsam": True,
                            "experts.epochs": 100, "eval_batch": 128}),
    ("datm-cifar10-ipc1000", {"match.syn_steps": 100, "match.min_start_epoch": 40,
                              "match.max_start_epoch": 60, "match.lr_img": 50}),
    ("datm-cifar100-ipc50", {"init": "real", "soft_labels": "one-expert",
                             "match.min_start_epoch": 20, "match.max_start_epoch": 70}),
    ("selmatch-cifar10-ipc1000", {"match.lr_img": 10000, "distill_fraction": 0.1, "beta": 0.2,
                                  "match.syn_steps": 55, "match.max_start_epoch": 80,
                                  "match.batch_syn": 125, "syn_lr": 0.001, "zca": False,
                                  "experts.augment": "none", "experts.network": "ConvNetBN",
                                  "eval_network": "ResNet18BN", "eval_protocol": "selmatch"}),
    ("selmatch-cifar100-ipc25", {"distill_fraction": 0.8, "beta": 0.8, "match.lr_img": 1000}),
    ("selmatch-tiny-ipc100", {"distill_fraction": 0.5, "beta": 0.7, "match.syn_steps": 20,
                              "score": "forgetting", "experts.network": "ConvNetD4BN"}),
]


def _get(preset, path):
    obj = preset
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("name,values", PUBLISHED)
def test_published_values(name, values):
    p = get_preset(name)
    for path, want in values.items():
        assert _get(p, path) == want, f"{name}: {path} = {_get(p, path)!r}, published {want!r}"


def test_every_preset_cites_a_source_and_scales_at_every_profile():
    assert len(PRESETS) == 33, f"{len(PRESETS)} presets: 11 MTT, 12 DATM, 10 SelMatch expected"
    for name, p in PRESETS.items():
        assert p.source and p.name == name, f"{name}: a preset must cite its source"
        for profile in ("ci", "quick", "gpu", "paper"):
            s = scaled(p, profile)
            m = s.match
            assert m.max_start_epoch - 1 + m.expert_epochs <= s.experts.epochs, \
                f"{name}@{profile}: start epochs run past the experts' {s.experts.epochs} epochs"
    assert scaled(get_preset("datm-cifar10-ipc10"), "paper") == get_preset("datm-cifar10-ipc10"), \
        "paper changes nothing"


def test_profiles():
    ci, quick = (scaled(get_preset("mtt-cifar10-ipc10"), p) for p in ("ci", "quick"))
    assert ci.loop.iterations == 5 and ci.experts.width == 16 and ci.n_experts == 1, f"ci: {ci}"
    assert quick.experts.width == 32 and quick.match.syn_steps <= 10 and \
        quick.loop.iterations == 200, f"quick: {quick}"
    late = scaled(get_preset("datm-cifar10-ipc500"), "quick").match
    assert late.min_start_epoch >= late.max_start_epoch // 2, \
        f"late-trajectory presets keep matching late segments when scaled: {late}"
    sel = scaled(get_preset("selmatch-cifar10-ipc250"), "quick")
    assert sel.eval_network == "ConvNetBN", "no ResNet-18 evaluation on a CPU profile"


def test_overrides():
    p = with_overrides(get_preset("mtt-cifar10-ipc10"),
                       {"syn_steps": 3, "loop.iterations": 7, "ipc": 2, "match.dsa": False})
    assert (p.match.syn_steps, p.loop.iterations, p.ipc, p.match.dsa) == (3, 7, 2, False), \
        f"overrides not applied: {p.match}, {p.loop}"
    with pytest.raises(ValueError, match="ambiguous"):
        with_overrides(get_preset("mtt-cifar10-ipc10"), {"seed": 1})   # loop.seed or experts.seed


def test_command_line_lists_presets(capsys):
    from ddbook.__main__ import main
    assert main(["distill", "--list"]) == 0, "distill --list exits 0"
    out = capsys.readouterr().out
    assert "selmatch-cifar10-ipc250" in out and "DC-BENCH" in out, "names and sources are listed"


@pytest.mark.usefixtures("one_thread")
def test_run_preset_writes_results(cifar10, tmp_path, monkeypatch):
    import ddbook.data
    monkeypatch.setattr(ddbook.data, "load_dataset", lambda name: cifar10)
    monkeypatch.setenv("DDBOOK_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("DDBOOK_CACHE", str(tmp_path / "cache"))
    path, result = presets.run_preset("selmatch-cifar10-ipc250", "ci", device="cpu",
                                      overrides={"loop.iterations": 2, "eval_epochs": 2})
    data = json.loads(path.read_text())["data"]
    assert len(data["loss"]) == 2 and data["n_selected"] == 40, \
        f"2 losses and 4 selected images per class (IPC 10, alpha 0.6): {data['n_selected']}"
    assert [p["iteration"] for p in data["eval_curve"]] == [0, 2], f"curve {data['eval_curve']}"
    assert data["result_at_declared_iteration"]["iteration"] == 2, "declared point: final"
    assert "optimistic" in data["best_over_checkpoints"]["label"], "best is labelled"
    assert path.parent.name == "one-off", "a one-off run never shares a page run's name"
    blob = np.load(path.with_name(json.loads(path.read_text())["arrays"]["file"]))
    assert blob["display_final"].dtype == np.uint8 and blob["display_final"].shape == (20, 3, 32, 32), \
        "results carry two display images per class as uint8, not the full float set"
    assert blob["labels"].shape == (100,) and blob["is_selected"].sum() == 40
    assert result.synset.is_selected.tolist() == [False] * 60 + [True] * 40, \
        "the split mask travels with the set: [distilled; selected]"
