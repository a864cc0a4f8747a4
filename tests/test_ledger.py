"""The claims ledger (Results at a glance): every page listed, pending pages say so, verdict rows
and numbers come from the page modules and the results, nothing typed."""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from ddbook.figures import Loaded, _ledger as ledger, modules
from ddbook.figures import mtt_cifar10 as mtt
from ddbook.reference import paper_numbers
from ddbook.results import Result
from ddbook.verdicts import compare_means

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "results_at_a_glance.py"


@pytest.fixture(scope="module")
def quick():
    return ledger.ledger("quick")


def test_ledger_lists_every_discovered_page(quick):
    names = list(modules())
    assert [p.name for p in quick] == names
    assert [p.notebook for p in quick] == [m.NOTEBOOK for m in modules().values()]
    assert [r["page"] for r in ledger.status_table(quick).rows] == names
    assert set(r["page"] for r in ledger.claims_table(quick).rows) == set(names)
    md = ledger.status_table(quick)._repr_markdown_()
    for m in modules().values():            # a MyST link to each page's notebook
        assert f"{{doc}}`{m.NAME} </notebooks/{m.NOTEBOOK}>`" in md
    for p in quick:      # what the modules themselves load (a running sweep may add pieces)
        loaded = modules()[p.name].load(ledger.as_profile("quick"))
        assert p.pieces == len(loaded.found) + len(loaded.missing) + len(loaded.stale)
        assert (p.present, p.missing, p.stale) == (len(p.loaded.found), len(p.loaded.missing),
                                                  len(p.loaded.stale))


def test_a_page_without_results_reads_pending(tmp_path, monkeypatch):
    monkeypatch.setenv("DDBOOK_RESULTS", str(tmp_path))       # an empty results tree
    pages = ledger.ledger("quick")
    assert pages and all(p.pending and p.verdicts == [] for p in pages)
    for row in ledger.status_table(pages).rows:
        assert row["commit"] == row["created"] == row["wall time (process-min)"] == "pending"
        assert row["present / missing / stale"].startswith("0 / ")
    claims = ledger.claims_table(pages).rows
    assert [r["outcome"] for r in claims] == ["pending"] * len(pages)
    assert all(r["claim"].startswith("results pending at quick") for r in claims)
    assert ledger.paper_comparison(pages).rows == []


def _result(sha: str, created: str, wall: float) -> Result:
    return Result(Path("x.json"), {}, {"sha": sha, "created": created, "wall_time_s": wall,
                                       "dirty_lib": False, "profile": "quick"}, None)


def test_verdict_rows_and_provenance_come_from_the_module():
    seen = {}
    found = {"a": _result("a" * 40, "2026-01-02T00:00:00+0000", 90.0),
             "b": _result("b" * 40, "2026-01-05T00:00:00+0000", 30.0)}
    verdict = compare_means([0.5, 0.52, 0.51], [0.4, 0.41, 0.43], "fake: a beats b")

    def verdicts(loaded):
        seen["loaded"] = loaded
        return [verdict]

    fake = SimpleNamespace(NAME="fake-page", NOTEBOOK="fake_page", TITLE="a fake page",
                           load=lambda profile: Loaded(found, ["c"], {"d": "changed"}),
                           verdicts=verdicts)
    [page] = ledger.ledger("quick", {"fake-page": fake})
    assert seen["loaded"].found is found                   # the module judged its own results
    assert (page.present, page.missing, page.stale, page.pending) == (2, 1, 1, False)
    assert page.commits == ["a" * 10, "b" * 10] and page.wall_s == 120.0
    [row] = ledger.status_table([page]).rows
    assert row["created"] == "2026-01-02 to 2026-01-05" and row["wall time (process-min)"] == "2"
    assert row["claims: supported / contradicted / inconclusive"] == "1 / 0 / 0"
    [claim] = ledger.claims_table([page]).rows
    assert claim == {"page": "fake-page", **verdict.as_row()}
    assert "{doc}`fake-page </notebooks/fake_page>`" in ledger.claims_table([page])._repr_markdown_()


def test_claims_are_every_module_verdict(quick):
    rows = ledger.claims_table(quick).rows
    for p in quick:
        module = modules()[p.name]
        expected = [v.as_row() for v in module.verdicts(p.loaded)] if p.present else []
        got = [r for r in rows if r["page"] == p.name and r["outcome"] != "pending"]
        assert [{k: v for k, v in r.items() if k not in ("page", "claim")} for r in got] == \
            [{k: v for k, v in e.items() if k != "claim"} for e in expected]


def test_mtt_numbers_come_from_the_results_and_the_csv(quick):
    page = next(p for p in quick if p.name == mtt.NAME)
    if not mtt.table_found(page.loaded.found):
        pytest.skip("no committed MTT results at quick")
    rows = [r for r in ledger.paper_comparison(quick).rows
            if r["quantity"].startswith("MTT Table 1") and "distilled" in r["quantity"]]
    table = mtt.table_rows(page.loaded.found)
    assert len(rows) == len(table)
    for r, t in zip(rows, table):
        assert r["ours, final"] == f"{t['distilled, final iteration']:.1f} ± {t['distilled std']:.1f}"
        assert r["ours, best over checkpoints"].startswith(f"{t['distilled, best over checkpoints']:.1f}")
        [csv] = paper_numbers(paper="MTT", where="Table 1", dataset="CIFAR-10", ipc=t["ipc"],
                              method="MTT")
        assert r["paper"] == f"{csv['mean']:.1f} ± {csv['std']:.1f}"
        assert r["paper confidence"] == csv["confidence"]


def test_the_page_types_no_numbers():
    text = NOTEBOOK.read_text()
    body = text.split("# ---", 2)[2]                           # after the jupytext header
    body = re.sub(r":\.\d+f", "", body)                        # format specs, not numbers
    assert not re.search(r"\d", body), "the ledger page must not type numbers: draw them from results"
    assert 'tags=["parameters"]' in text and 'params.page_profiles(globals(), ["profile", "draw"]' in text


def test_outcome_bars_draw_the_counts_and_pending(tmp_path, monkeypatch, quick):
    import matplotlib
    matplotlib.use("Agg")

    fig = ledger.outcome_bars(quick)
    ax = fig.axes[0]
    widths = {}
    for container, outcome in zip(ax.containers, ("supported", "contradicted",
                                                  "inconclusive at this scale")):
        for p, bar in zip(quick, container.patches):
            widths.setdefault(p.name, {})[outcome] = bar.get_width()
    assert widths == {p.name: {o: float(n) for o, n in p.counts().items()} for p in quick}
    monkeypatch.setenv("DDBOOK_RESULTS", str(tmp_path))
    empty = ledger.ledger("quick")
    texts = [t.get_text() for t in ledger.outcome_bars(empty).axes[0].texts]
    assert texts == [f"pending (0 of {p.pieces} pieces)" for p in empty]
