"""The figure layer: discovery, the protocol, and every committed quick result loading as current."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ddbook import figures, paths
from ddbook.figures import _common
from ddbook.profiles import get_profile

ROOT = Path(__file__).resolve().parents[1]


def test_every_page_module_is_discovered_and_follows_the_protocol():
    mods = figures.modules()
    assert {"selmatch-fig3", "mtt-cifar10", "datm-ranges", "difficulty-scores"} <= set(mods)
    for name, m in mods.items():
        assert (ROOT / "notebooks" / f"{m.NOTEBOOK}.py").exists(), f"{name}: no notebook"
        assert m.__name__.rsplit(".", 1)[1] in m.NOTEBOOK, "the module is named like its notebook"
        for profile in ("ci", "quick"):
            names = [p.name for p in m.plan(get_profile(profile))]
            assert names and len(set(names)) == len(names), f"{name} at {profile}: {names}"


@pytest.mark.parametrize("old, module, prefix", [
    ("mtt", "mtt-cifar10", "mtt-cifar10-"), ("cross-arch", "mtt-cifar10", "cross-arch-"),
    ("datm-ranges", "datm-ranges", ""), ("sweep-window", "selmatch-fig3", "")])
def test_the_older_command_names_still_resolve(old, module, prefix):
    m, got = figures.find(old)
    assert m.NAME == module and got == prefix


def test_only_selects_or_names_the_valid_pieces():
    pieces = [_common.DistillRun(n, "p", {}) for n in ("a-early", "a-late", "b-late")]
    assert [p.name for p in _common.select(pieces, "late")] == ["a-late", "b-late"]
    assert [p.name for p in _common.select(pieces, lambda n: n.startswith("a"))] == \
        ["a-early", "a-late"]
    with pytest.raises(ValueError, match="the pieces are: a-early, a-late, b-late"):
        _common.select(pieces, "middle")


def _committed(profile: str) -> set[Path]:
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", f"results/{profile}"],
                         capture_output=True, text=True, check=True).stdout.split()
    return {(ROOT / f).resolve() for f in out if f.endswith(".json")}


def test_every_committed_quick_result_loads_as_current(monkeypatch):
    """Each committed results file under results/quick/ is claimed by a piece of some figure
    module and loads as current (not stale) with the configuration that module asks for now."""
    monkeypatch.delenv("DDBOOK_RESULTS", raising=False)
    assert paths.results_root().resolve() == ROOT / "results"
    committed = _committed("quick")
    assert committed, "no committed quick results found"
    quick = get_profile("quick")
    loaded = {name: m.load(quick) for name, m in figures.modules().items()}
    loaded["selmatch-fig3 (earlier sweep)"] = figures.find("selmatch-fig3")[0].load_earlier(quick)
    current = set()
    for name, got in loaded.items():
        assert not got.stale, f"{name}: stale at quick: {got.stale}"
        current |= {r.path.resolve() for r in got.found.values()}
    unclaimed = sorted(str(p.relative_to(ROOT)) for p in committed - current)
    assert not unclaimed, f"committed quick results no figure module loads as current: {unclaimed}"


def test_confidence_names_each_source_once():
    from ddbook.reference import confidence, paper_numbers

    rows = paper_numbers(paper="MTT", where="Table 1", dataset="CIFAR-10")
    assert confidence(rows + rows) == "MTT Table 1: paper table"
    with pytest.raises(LookupError, match="no paper numbers"):
        confidence([])


def test_difficulty_verdicts_test_the_per_class_correlations():
    class R:
        def __init__(self, data):
            self.data = data
    mod = figures.find("difficulty-scores")[0]
    agree = R({"spearman_per_class": {c: -0.5 - 0.01 * i for i, c in enumerate("abcdefghij")}})
    noise = R({"spearman_per_class": {c: (-1) ** i * 0.05 for i, c in enumerate("abcdefghij")}})
    assert [v.outcome for v in mod.verdicts({"published-agreement": agree})] == ["supported"]
    assert [v.outcome for v in mod.verdicts({"published-agreement": noise})] == \
        ["inconclusive at this scale"]



def test_a_stale_piece_is_reported_with_what_changed(tmp_path, monkeypatch):
    """Issue 16: a result from an older configuration reads as stale, with the changed keys."""
    from dataclasses import replace

    from ddbook import results
    from ddbook.figures import selmatch_fig3 as fig3

    monkeypatch.setenv("DDBOOK_RESULTS", str(tmp_path))
    ci = get_profile("ci")
    config = fig3.sweep_config(ci)
    point = fig3.plan(ci, config)[0]
    results.save_result(point.name, "ci", {"accuracy": 0.5}, fig3._point_config(
        config, point.ratio, point.beta, point.run_index), [0], 1.0)
    changed = replace(config, lr=0.05)
    loaded = _common.load_pieces(fig3.plan(ci, changed)[:1], ci)
    assert list(loaded.stale) == [point.name] and not loaded.found and not loaded.missing
    assert "changed: lr: 0.1 -> 0.05" in loaded.describe("ci"), loaded.describe("ci")


@pytest.mark.parametrize("name", sorted(figures.modules()))
def test_every_page_takes_a_callable_only(name):
    """`reproduce --shard` hands each page a callable `only`: every page must select with it
    (here it accepts nothing, so the page refuses before any work)."""
    with pytest.raises(ValueError, match="no piece|matches"):
        figures.modules()[name].run(get_profile("ci"), device="cpu", only=lambda n: False)


@pytest.mark.parametrize("name, only", [("selmatch-fig3", None), ("mtt", None), ("dasm", "ipc")])
def test_shards_split_a_page_into_disjoint_parts_that_cover_it(name, only, monkeypatch):
    module, prefix = figures.find(name)
    ci = get_profile("ci")
    wanted = [p.name for p in module.plan(ci) if p.name.startswith(prefix)
              and (only is None or only in p.name)]
    taken = []
    monkeypatch.setattr(module, "run", lambda profile, device=None, only=None:
                        taken.append([n for n in wanted if only(n)]) or [])
    for k in range(3):
        figures.reproduce(name, ci, only=only, shard=(k, 3))
    assert sorted(sum(taken, [])) == sorted(wanted), "the shards must cover every piece once"
    assert [len(t) for t in taken] == [len(wanted[k::3]) for k in range(3)]
    with pytest.raises(ValueError, match="0 <= k < n"):
        figures.reproduce(name, ci, shard=(3, 3))


def test_claim_mode_takes_free_pieces_in_order_skips_held_ones_and_waits_for_sources(
        tmp_path, monkeypatch):
    """reproduce_claimed: each piece under its own file lock; a piece another process holds is
    skipped; a page with SOURCES first waits until those pages' held pieces are released."""
    import threading
    import time

    monkeypatch.setenv("DDBOOK_CACHE", str(tmp_path / "cache"))
    ci = get_profile("ci")
    table, coverage = figures.find("selmatch-table1")[0], figures.find("selmatch-coverage")[0]
    assert "selmatch-table1" in coverage.SOURCES
    ran, when = [], {}

    def fake_run(module):
        def run(profile, device=None, only=None):
            names = [p.name for p in module.plan(profile) if only(p.name)]
            assert len(names) == 1, "claim mode runs one piece per call"
            ran.append((module.NAME, names[0]))
            when.setdefault(module.NAME, time.monotonic())
            path = tmp_path / f"{module.NAME}-{names[0]}.json"
            path.write_text("{}")
            return [path]
        return run
    for m in (table, coverage):
        monkeypatch.setattr(m, "run", fake_run(m))
    pieces = [p.name for p in table.plan(ci)]
    held = paths.FileLock(figures.claim_path(ci, table, pieces[1]), wait=False).__enter__()
    assert held.held                                  # "another process" runs the second piece
    released = {}

    def release():
        released["t"] = time.monotonic()
        held.__exit__()
    timer = threading.Timer(0.5, release)
    timer.start()
    logs = []
    out = figures.reproduce_claimed(["selmatch-table1", "selmatch-coverage"], ci, log=logs.append)
    timer.join()
    assert [n for m, n in ran if m == table.NAME] == [p for p in pieces if p != pieces[1]]
    assert any(pieces[1] in line and "another process" in line for line in logs)
    assert [n for m, n in ran if m == coverage.NAME] == [p.name for p in coverage.plan(ci)]
    assert when[coverage.NAME] >= released["t"], "the page started before its source piece ended"
    assert len(out) == len(ran)
    # a piece nobody holds is not skipped on a second pass, and a held lock dies with its holder
    ran.clear()
    figures.reproduce_claimed(["selmatch-table1"], ci, only=pieces[1], log=logs.append)
    assert ran == [(table.NAME, pieces[1])]


def test_reproduce_command_refuses_mixed_sharing_modes_and_several_pages_without_claim():
    from ddbook.__main__ import main
    assert main(["reproduce", "selmatch-table1", "--profile", "ci", "--claim",
                 "--shard", "0/2"]) == 2
    assert main(["reproduce", "selmatch-table1", "dasm", "--profile", "ci"]) == 2
