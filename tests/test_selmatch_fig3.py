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


def test_verdict_reads_the_claims():
    import pandas as pd

    rows = [(0.05, b, 0, a) for b, a in ((0.0, 0.3), (0.5, 0.6), (0.9, 0.5))] + [(0.05, None, 0, 0.4)]
    rows += [(0.3, b, 0, a) for b, a in ((0.0, 0.5), (0.2, 0.7), (0.7, 0.6))] + [(0.3, None, 0, 0.65)]
    table = pd.DataFrame(rows, columns=["ratio", "beta", "run", "accuracy"])
    s = ws.summarise(table)
    assert s[0.05]["best_beta"] == 0.5 and s[0.3]["best_beta"] == 0.2
    lines = ws.verdict(s)
    assert "interior optimum at 2/2" in lines[-1] and "beats random at 2/2" in lines[-1]
    assert lines[-1].endswith("trend consistent with the paper"), lines[-1]
    assert "noise unknown: one run per point" in lines[0]


def test_verdict_weighs_the_margin_against_run_to_run_noise():
    import pandas as pd

    # two runs per point: window accuracies spread by ±0.01, random by ±0.01
    rows = []
    for run, d in ((0, -0.01), (1, 0.01)):
        rows += [(0.1, b, run, a + d) for b, a in ((0.0, 0.30), (0.5, 0.60), (0.9, 0.50))]
        rows += [(0.1, None, run, 0.55 + d), (0.2, None, run, 0.595 + d)]
        rows += [(0.2, b, run, a + d) for b, a in ((0.0, 0.40), (0.3, 0.60), (0.9, 0.50))]
    s = ws.summarise(pd.DataFrame(rows, columns=["ratio", "beta", "run", "accuracy"]))
    assert s[0.1]["pooled_std"] == pytest.approx(0.01 * 2 ** 0.5)
    assert s[0.1]["margin_se"] == pytest.approx(0.01 * 2 ** 0.5)   # pooled * sqrt(1/2 + 1/2)
    lines = ws.verdict(s)
    assert "+5.0 points, 3.5 standard errors" in lines[0], lines[0]
    assert "+0.5 points, 0.4 standard errors" in lines[1], lines[1]
    assert "beats random at 2/2 (by more than two standard errors at 1/2" in lines[-1], lines[-1]


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
