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
        plan = mr.plan(get_profile(profile))
        assert len(plan) == 6 and len({r.name for r in plan}) == 6, [r.name for r in plan]
        for r in plan:
            p = resolve(r.preset, profile, r.overrides)
            assert p.match.learn_labels and p.soft_labels == "correct-experts", "DATM soft labels"
            assert p.match.max_start_epoch - 1 + p.match.expert_epochs <= p.experts.epochs
    quick = {r.name: resolve(r.preset, "quick", r.overrides) for r in mr.plan(get_profile("quick"))}
    mtt = resolve("mtt-cifar10-ipc10", "quick")
    assert quick["datm-ranges-ipc10-late"].experts == mtt.experts, \
        "at quick DATM shares MTT's ZCA experts"
    assert quick["datm-ranges-ipc500-all"].ipc == 500


def _fake(data: dict):
    class R:  # the parts of results.Result the verdicts read
        pass
    r = R()
    r.data = data
    return r


def _point(mean, std=0.01, runs=2):
    return {"mean": mean, "std": std, "runs": runs}


def test_datm_verdict_reads_both_halves_of_the_claim():
    def runs_for(ipc, early, all_, late):
        return {f"datm-ranges-ipc{ipc}-{w}": _fake({"n_images": 10 * ipc,
                                                    "result_at_declared_iteration": _point(a)})
                for w, a in (("early", early), ("all", all_), ("late", late))}
    lines = mr.datm_verdict({**runs_for(10, 0.40, 0.38, 0.30), **runs_for(500, 0.60, 0.61, 0.64)})
    assert "late loses to the better of early/all (early) by 10.0 points" in lines[0], lines[0]
    assert "late beats the better of early/all (all) by 3.0 points" in lines[1], lines[1]
    assert lines[-1].endswith("late wins at the large IPC (500): yes"), lines[-1]
    assert "late loses at the small IPC (10): yes" in lines[-1]
    partial = mr.datm_verdict(runs_for(10, 0.4, 0.4, 0.3) | {
        "datm-ranges-ipc500-late": _fake({"n_images": 5000,
                                          "result_at_declared_iteration": _point(0.5)})})
    assert "IPC 500: incomplete (late present)" in partial
