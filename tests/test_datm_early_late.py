"""The DATM page's module: the ranges, the plan at each profile, the verdict."""
from __future__ import annotations

import pytest

from ddbook.figures import datm_early_late as mr
from ddbook.presets import resolve
from ddbook.profiles import get_profile


@pytest.mark.parametrize("epochs, expected", [
    (100, {"early": (0, 20), "all": (0, 60), "late": (40, 60)}),   # DATM's own expert length
    (15, {"early": (0, 3), "all": (0, 9), "late": (6, 9)}),
    (6, {"early": (0, 1), "all": (0, 3), "late": (2, 3)}),
])
def test_datm_ranges_scale_with_the_expert_length(epochs, expected):
    for which, (lo, hi) in expected.items():
        o = mr.datm_range_overrides(which, epochs, 2)
        assert (o["match.min_start_epoch"], o["match.max_start_epoch"]) == (lo, hi), (which, o)
        assert o["match.max_start_epoch"] - 1 + 2 <= epochs, "t + M stays within the trajectory"
        assert o["match.initial_max_start_epoch"] is None, "one fixed range: no expansion"
    with pytest.raises(ValueError, match="unknown range"):
        mr.datm_range_overrides("middle", 15, 2)


def test_datm_plan_is_three_ranges_at_two_ipcs_and_resolves():
    for profile in ("ci", "quick"):
        runs = mr.range_runs(get_profile(profile))
        assert len(runs) == 6 and len({r.name for r in runs}) == 6, [r.name for r in runs]
        for r in runs:
            p = resolve(r.preset, profile, r.overrides)
            assert p.match.learn_labels and p.soft_labels == "correct-experts", "DATM soft labels"
            assert p.match.max_start_epoch - 1 + p.match.expert_epochs <= p.experts.epochs
        plan = mr.plan(get_profile(profile))
        evals = [r.name.replace("datm-ranges-", "datm-eval-") for r in runs]
        assert [x.name for x in plan] == ["datm-experts"] + [r.name for r in runs] + evals
        assert [x.range_run.name for x in plan[7:]] == [r.name for r in runs], \
            "one final evaluation per range run"
    quick = {r.name: resolve(r.preset, "quick", r.overrides)
             for r in mr.range_runs(get_profile("quick"))}
    mtt = resolve("mtt-cifar10-ipc10", "quick")
    assert quick["datm-ranges-ipc10-late"].experts == mtt.experts, \
        "at quick DATM shares MTT's ZCA experts"
    assert quick["datm-ranges-ipc500-all"].ipc == 500
    assert set(mr.SEGMENTS.values()) == {"progress"}, mr.SEGMENTS


def test_progress_defines_the_segments():
    from ddbook.experts import progress_epoch, training_progress

    # two experts over 11 snapshots: fast early rise, then a plateau (a dip is ignored)
    curves = [[0.1, 0.3, 0.4, 0.45, 0.5, 0.52, 0.53, 0.54, 0.55, 0.55, 0.55],
              [0.1, 0.3, 0.4, 0.45, 0.5, 0.52, 0.53, 0.54, 0.55, 0.54, 0.55]]
    prog = training_progress(curves)
    assert prog[0] == 0 and prog[-1] == 1 and (prog[1:] >= prog[:-1]).all(), prog
    assert progress_epoch(prog, 0.5) == 2 and progress_epoch(prog, 0.8) == 4
    o = {w: mr.progress_range_overrides(w, prog, 10, 2) for w in mr.PROGRESS_RANGES}
    spans = {w: (x["match.min_start_epoch"], x["match.max_start_epoch"]) for w, x in o.items()}
    assert spans == {"early": (0, 2), "all": (0, 9), "late": (4, 9)}, spans
    assert all(x["match.initial_max_start_epoch"] is None for x in o.values())
    with pytest.raises(ValueError, match="never rises"):
        training_progress([[0.5, 0.4, 0.3]])
    with pytest.raises(ValueError, match="one list"):
        training_progress([0.1, 0.2])


def test_ci_ranges_come_from_the_experts_curves(monkeypatch):
    ci = get_profile("ci")
    plan = mr.plan(ci)
    curves, late = plan[0], plan[3]
    assert late.name == "datm-ranges-ipc10-late"
    monkeypatch.setattr(mr.ExpertCurves, "load", lambda self, profile: None)
    assert late.load(ci) is None, "no curves yet: the range run is missing, not guessed"
    with pytest.raises(FileNotFoundError, match="--only datm-experts"):
        late.run(ci)
    prog = [0.0, 0.6, 0.9, 1.0, 1.0, 1.0, 1.0]         # 6-epoch experts at ci
    monkeypatch.setattr(mr.ExpertCurves, "load", lambda self, profile: _fake({"progress": prog}))
    o = late.resolved(ci).overrides
    assert (o["match.min_start_epoch"], o["match.max_start_epoch"]) == (2, 5), o
    assert curves.config(ci)["experts"]["epochs"] == 6


def _fake(data: dict, profile="quick", labels=None):
    class R:  # the parts of results.Result the verdicts read
        pass
    r = R()
    r.data, r.provenance, r.arrays = data, {"profile": profile}, {"labels": labels}
    return r


def _runs(ipc, accs: dict, loss=0.1, labels=None):
    return {f"datm-ranges-ipc{ipc}-{w}": _fake({"result_at_declared_iteration": {
        "accuracies": a, "epochs": 6, "train_loss": [loss, loss]}}, labels=labels)
        for w, a in accs.items()}


def test_verdicts_on_both_halves_and_the_fit_check():
    import torch

    small = _runs(10, {"early": [0.40, 0.41], "all": [0.39, 0.40], "late": [0.30, 0.31]})
    large = _runs(500, {"early": [0.60, 0.61], "all": [0.605, 0.60], "late": [0.64, 0.65]})
    out = {v.claim: v for v in mr.verdicts({**small, **large})}
    assert out["IPC 10: matching early segments beats matching late ones"].outcome == "supported"
    assert out["IPC 500: matching late segments beats matching early ones"].outcome == "supported"
    flat = _runs(10, {"early": [0.40, 0.42], "late": [0.41, 0.40]})
    assert mr.verdicts(flat)[0].outcome == "inconclusive at this scale"
    reversed_ = _runs(10, {"early": [0.30, 0.31], "late": [0.40, 0.41]})
    assert mr.verdicts(reversed_)[0].outcome == "contradicted"
    # soft labels with entropy ln 2 (two classes at 1/2): a loss of 0.9 is 0.21 nats above it
    soft = torch.log(torch.tensor([[0.5, 0.5]]))
    unfit = _runs(500, {"early": [0.60, 0.61], "late": [0.64, 0.65]}, loss=0.9, labels=soft)
    v = mr.verdicts(unfit)[0]
    assert v.outcome == "inconclusive at this scale" and v.note.startswith("not testable"), v
    assert abs(mr.fit_excess(next(iter(unfit.values()))) - (0.9 - 0.6931)) < 1e-3
    fit = _runs(500, {"early": [0.60, 0.61], "late": [0.64, 0.65]}, loss=0.7, labels=soft)
    assert mr.verdicts(fit)[0].outcome == "supported"


def _final(ipc, accs: dict, loss, entropy):
    return {f"datm-eval-ipc{ipc}-{w}": _fake({"accuracies": a, "epochs": 60,
                                               "train_loss": [loss] * len(a),
                                               "label_entropy": entropy})
            for w, a in accs.items()}


def test_the_final_evaluation_decides_where_it_exists():
    import torch

    soft = torch.log(torch.tensor([[0.5, 0.5]]))      # label entropy ln 2
    # the runs' own 2-network evaluation: unfit (0.21 nats above the floor) and too few networks
    runs = _runs(500, {"early": [0.60, 0.61], "late": [0.64, 0.65]}, loss=0.9, labels=soft)
    assert mr.verdicts(runs)[0].note.startswith("not testable")
    # the final evaluation: 5 networks that fit (0.05 nats above ln 2)
    final = _final(500, {"early": [0.60, 0.61, 0.605, 0.60, 0.615],
                         "late": [0.64, 0.65, 0.645, 0.655, 0.64]}, 0.7431, 0.6931)
    j = mr.judged({**runs, **final})
    assert j[500]["late"]["source"] == "final evaluation" and j[500]["late"]["networks"] == 5
    assert abs(j[500]["late"]["fit_excess"] - 0.05) < 1e-9
    v = mr.verdicts({**runs, **final})[0]
    assert v.outcome == "supported" and "(final evaluation)" in v.note, v
    # an unfit final evaluation is not testable either, however clear its interval
    unfit = _final(500, {"early": [0.60, 0.61, 0.605], "late": [0.64, 0.65, 0.645]}, 0.9, 0.6931)
    assert mr.verdicts({**runs, **unfit})[0].note.startswith("not testable")
    # one range evaluated finally, the other not: each is judged by what it has, and it says so
    mixed = {**runs, **{k: v for k, v in final.items() if k.endswith("late")}}
    sources = {w: r["source"] for w, r in mr.judged(mixed)[500].items()}
    assert sources == {"early": "the run's declared evaluation", "late": "final evaluation"}
    # where the training-set accuracy is recorded it decides the fit, not the loss
    for acc, testable in ((0.97, True), (0.90, False)):
        rec = {k: _fake({**v.data, "train_accuracy": [acc] * 3}) for k, v in unfit.items()}
        j = mr.judged({**runs, **rec})[500]["early"]
        assert j["fits"] is testable and "training-set accuracy" in j["fit"], j
        v = mr.verdicts({**runs, **rec})[0]
        assert v.note.startswith("not testable") is not testable, v.note


def test_final_evaluation_config_follows_the_run(monkeypatch):
    quick = get_profile("quick")
    plan = {p.name: p for p in mr.plan(quick)}
    declared = {"network": "ConvNet", "width": 32, "depth": None, "epochs": 6, "batch_size": 128,
                "momentum": 0.9, "weight_decay": 0.0005, "decay": 0.1, "augment": "dsa",
                "reference_epochs": False, "runs": 2, "seed": 1000, "test_batch_size": 1024}
    src = _fake({"result_at_declared_iteration": {"config": declared}, "n_images": 5000})
    src.provenance["config_hash"] = "abc"
    cfg = plan["datm-eval-ipc500-late"].config(quick, src)
    assert cfg["eval"]["epochs"] == 60 and cfg["eval"]["runs"] == 5, cfg
    assert cfg["eval"]["seed"] == 1000 and cfg["source_config_hash"] == "abc"
    small = _fake({"result_at_declared_iteration": {"config": {**declared, "epochs": 300}},
                   "n_images": 100})
    small.provenance["config_hash"] = "def"
    assert plan["datm-eval-ipc10-late"].config(quick, small)["eval"]["epochs"] == 300, \
        "the small IPC keeps its run's own evaluation epochs"
    # no finished run: the final evaluation is missing, and running it says what to run first
    monkeypatch.setattr(mr.ProgressRun, "load", lambda self, profile: None)
    assert plan["datm-eval-ipc10-late"].load(quick) is None
    with pytest.raises(FileNotFoundError, match="--only datm-ranges-ipc10-late"):
        plan["datm-eval-ipc10-late"].run(quick)


def test_a_set_gone_from_the_cache_is_remade_only_when_its_final_evaluation_needs_it(monkeypatch):
    ci = get_profile("ci")
    ran = []
    monkeypatch.setattr(mr, "run_pieces", lambda pieces, profile, device, only, rerun:
                        ran.extend(p.name for p in pieces if isinstance(p, mr.ProgressRun)
                                   and rerun(p, object())))
    monkeypatch.setattr(mr, "has_final_set", lambda result: False)       # every set is gone
    missing = {"datm-eval-ipc10-late"}
    monkeypatch.setattr(mr.FinalEval, "load",
                        lambda self, profile: None if self.name in missing else object())
    mr.run(ci)
    assert ran == ["datm-ranges-ipc10-late"], ran
    ran.clear()
    monkeypatch.setattr(mr, "has_final_set", lambda result: True)        # the sets are there
    mr.run(ci)
    assert ran == [], "a set still in the cache is evaluated, not remade"
