"""The sliding-window sweep (SelMatch Fig. 3): one file per point, resumable, stale refused."""
from __future__ import annotations

import pytest

import ddbook
from ddbook import results
from ddbook.figures import selmatch_fig3 as ws

TINY = ws.SweepConfig(ratios=(0.1,), beta_step=0.5, runs=1, width=4, steps=2, train_per_class=20,
                      test_per_class=5)


def test_points_cover_grid_and_random():
    pts = ws.sweep_points(TINY)
    assert pts == [(0.1, 0.0, 0), (0.1, 0.5, 0), (0.1, None, 0)], pts
    quick = ws.sweep_points(ws.sweep_config("quick"))
    assert len(quick) == 3 * (10 + 10 + 9 + 8 + 4), "the scripts' β grids, 3 runs, plus random"


def test_sweep_writes_one_file_per_point_and_resumes(cifar10, tmp_path, monkeypatch):
    monkeypatch.setenv("DDBOOK_RESULTS", str(tmp_path))
    assert ws.run_sweep(cifar10, "ci", device="cpu", config=TINY) == 3
    files = sorted(p.name for p in (tmp_path / "ci" / "selmatch_fig3_u20").glob("*.json"))
    assert files == ["r0.10_b0.0_run0.json", "r0.10_b0.5_run0.json", "r0.10_random_run0.json"]
    first = ws.load_sweep("ci", TINY)[0]
    (tmp_path / "ci" / "selmatch_fig3_u20" / "r0.10_b0.5_run0.json").unlink()   # an interrupted sweep
    assert ws.run_sweep(cifar10, "ci", device="cpu", config=TINY) == 1, "only the missing point reruns"
    again, missing = ws.load_sweep("ci", TINY)
    assert not missing and again["accuracy"].tolist() == first["accuracy"].tolist(), \
        "same seed, same numbers"
    row = again[again["beta"] == 0.5].iloc[0]
    assert row["ipc"] == 2 and row["steps"] >= 2, "IPC = 10 % of 20 images per class"


def test_a_result_from_another_config_is_stale(cifar10, tmp_path, monkeypatch):
    monkeypatch.setenv("DDBOOK_RESULTS", str(tmp_path))
    ws.run_sweep(cifar10, "ci", device="cpu", config=TINY)
    other = ws.SweepConfig(**{**TINY.__dict__, "lr": 0.05})
    with pytest.raises(results.StaleResultError, match="stale"):
        ws.load_sweep("ci", other)


def _found(acc, ratios=(0.05, 0.1, 0.2, 0.3), betas=(0.0, 0.2, 0.3, 0.5, 0.7, 0.9), runs=3,
           drop=()):
    """Fake sweep results: ``acc(ratio, beta or None, run)`` per point; ``drop``: (ratio, beta,
    run) points left out."""
    found = {}
    for ratio in ratios:
        for beta in (*betas, None):
            for run in range(runs):
                if (ratio, beta, run) in drop:
                    continue
                cfg = {"ratio": ratio, "beta": beta, "run": run}
                found[f"{ratio}/{beta}/{run}"] = results.Result(
                    None, {"accuracy": acc(ratio, beta, run)}, {"config": cfg}, None)
    return found


NOISE = (-0.004, 0.001, 0.003)    # run-to-run spread, the same pattern at every point


def _outcomes(found):
    return {v.claim: v.outcome for v in ws.verdicts(found)}


def test_verdicts_support_a_clear_effect():
    star = ws.paper_beta_star()
    assert star == {0.05: 0.5, 0.1: 0.3, 0.2: 0.2, 0.3: 0.2}, "the paper's beta*, from the csv"

    def acc(ratio, beta, run):
        base = 0.5 + 0.5 * ratio                        # random rises with the ratio
        if beta is None:
            return base + (0.002, -0.002, 0.0)[run]
        wiggle = ((7 * run + 13 * round(100 * beta)) % 9 - 4) / 1000   # within ±0.4 points
        return base + 0.05 - 0.2 * abs(beta - star[ratio]) + wiggle
    out = _outcomes(_found(acc))
    assert len(out) == 1 + 4 * 3 + 1, list(out)
    assert set(out.values()) == {"supported"}, out
    assert "the optimum moves toward harder windows (smaller β) as the subset grows" in out


def test_verdicts_on_flat_data_are_not_supported():
    """The audit's case: best β 0.5 everywhere, +0.1 point over random, 1-point noise."""
    wobble = (-0.01, 0.0, 0.01)

    def acc(ratio, beta, run):
        if beta is None:
            return 0.55 + wobble[run]
        return 0.55 + (0.001 if beta == 0.5 else 0.0) + wobble[(run + round(beta * 10)) % 3]
    verdicts = ws.verdicts(_found(acc))
    out = {v.claim: v.outcome for v in verdicts}
    assert "supported" not in out.values(), out
    assert out["the optimum moves toward harder windows (smaller β) as the subset grows"] == \
        "inconclusive at this scale"
    assert out["precondition: random-subset accuracy rises with the subset ratio"] == \
        "inconclusive at this scale"


def test_verdicts_use_only_complete_runs():
    def acc(ratio, beta, run):
        return 0.5 + (0.0 if beta is None else 0.01) + NOISE[run]
    found = _found(acc, ratios=(0.05, 0.1), drop={(0.05, 0.3, 2), (0.1, None, 0)})
    table = ws.run_table(found)
    assert table[0.05][2] == [0, 1] and table[0.1][2] == [1, 2], "runs complete at each ratio"
    v = {x.claim: x for x in ws.verdicts(_found(acc, ratios=(0.05,), runs=1))}
    assert all(x.outcome == "inconclusive at this scale" for x in v.values()), v
    assert ws.verdicts({}) == []


def test_shards_split_the_points(cifar10, tmp_path, monkeypatch):
    monkeypatch.setenv("DDBOOK_RESULTS", str(tmp_path))
    assert ws.run_sweep(cifar10, "ci", device="cpu", config=TINY, shard=(1, 2)) == 1
    assert ws.run_sweep(cifar10, "ci", device="cpu", config=TINY, shard=(0, 2)) == 2
    assert not ws.load_sweep("ci", TINY)[1], "two shards together cover every point"
    with pytest.raises(ValueError, match="shard"):
        ws.run_sweep(cifar10, "ci", config=TINY, shard=(2, 2))


def test_two_processes_from_opposite_ends(cifar10, tmp_path, monkeypatch):
    monkeypatch.setenv("DDBOOK_RESULTS", str(tmp_path))
    calls = []
    real = ws.run_point

    def record(*a, **k):
        calls.append(a[3:6])
        if len(calls) == 1:   # while the forward process trains its first point, the other one
            # runs from the end; it reaches that first point too (the one duplicate where they meet)
            assert ws.run_sweep(cifar10, "ci", device="cpu", config=TINY, reverse=True) == 3
        return real(*a, **k)

    monkeypatch.setattr(ws, "run_point", record)
    assert ws.run_sweep(cifar10, "ci", device="cpu", config=TINY) == 1, \
        "the forward process skips what the reverse one finished meanwhile"
    assert calls == [(0.1, 0.0, 0), (0.1, None, 0), (0.1, 0.5, 0), (0.1, 0.0, 0)], calls
