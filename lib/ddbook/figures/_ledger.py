"""The claims ledger ("Results at a glance"): every page's results at a profile, read from
``results/`` when the book is built, never typed.

For every page module (:func:`ddbook.figures.modules`) at a profile:

- :func:`page_status` — pieces present / missing / stale, and the provenance of what is present
  (commits, whether the library was modified, date range, total wall time), and the page's
  verdicts (``module.verdicts(module.load(profile))``); a page with no piece present is
  **pending**;
- :func:`ledger` — that, for every page;
- :func:`status_table`, :func:`claims_table` — the two tables of the page (Markdown with MyST
  ``{doc}`` links to each page, plain text elsewhere);
- :func:`outcome_bars` — a figure: each page's claims by outcome (pending pages marked);
- :func:`paper_comparison` — reproduced numbers beside the paper's (with the confidence column of
  ``reference/paper-numbers.csv``) for the pages that expose them: MTT's CIFAR-10 table and its
  cross-architecture check, SelMatch's Table 1 at the scale model.

Used in: ``notebooks/results_at_a_glance.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import ModuleType

from ..verdicts import OUTCOMES, Verdict
from ._common import as_profile

__all__ = ["PENDING", "PageStatus", "page_status", "ledger", "status_table", "claims_table",
           "outcome_bars", "paper_comparison", "LedgerTable"]

PENDING = "pending"


@dataclass
class PageStatus:
    """One page at one profile: what is present, its provenance, its verdicts."""
    name: str                   # the page module's NAME
    notebook: str               # notebooks/<notebook>.py
    title: str
    profile: str
    present: int
    missing: int
    stale: int
    commits: list = field(default_factory=list)   # distinct short shas of the present pieces
    dirty: bool = False         # some present piece ran from a modified library
    first: str = ""             # earliest / latest creation time of the present pieces
    last: str = ""
    wall_s: float = 0.0         # total wall time of the present pieces (process-seconds)
    verdicts: list = field(default_factory=list)
    loaded: object = None       # the module's Loaded, for tables that need the results

    @property
    def pending(self) -> bool:
        """No piece of the page is present at this profile."""
        return self.present == 0

    @property
    def pieces(self) -> int:
        return self.present + self.missing + self.stale

    def counts(self) -> dict:
        """{outcome: number of this page's claims with it}."""
        return {o: sum(v.outcome == o for v in self.verdicts) for o in OUTCOMES}


def page_status(module: ModuleType, profile) -> PageStatus:
    """Load one page module's results at ``profile`` and judge its claims (a page with nothing
    present has no verdicts: it is pending)."""
    prof = as_profile(profile)
    loaded = module.load(prof)
    found = loaded.found
    prov = [r.provenance for r in found.values()]
    created = sorted(p.get("created", "") for p in prov if p.get("created"))
    return PageStatus(
        name=module.NAME, notebook=module.NOTEBOOK, title=module.TITLE, profile=prof.name,
        present=len(found), missing=len(loaded.missing), stale=len(loaded.stale),
        commits=list(dict.fromkeys(str(p.get("sha", "unknown"))[:10] for p in prov)),
        dirty=any(p.get("dirty_lib") for p in prov),
        first=created[0] if created else "", last=created[-1] if created else "",
        wall_s=float(sum(p.get("wall_time_s") or 0.0 for p in prov)),
        verdicts=list(module.verdicts(loaded)) if found else [], loaded=loaded)


def ledger(profile, modules: dict | None = None) -> list[PageStatus]:
    """:func:`page_status` of every page module (default: every discovered one), in discovery
    order."""
    if modules is None:
        from . import modules as discover
        modules = discover()
    return [page_status(m, profile) for m in modules.values()]


# ------------------------------------------------------------------------------------ tables

def _link(page: PageStatus) -> str:
    return f"{{doc}}`{page.name} </notebooks/{page.notebook}>`"


def _esc(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


class LedgerTable:
    """Rows with a ``page`` column: Markdown with a MyST ``{doc}`` link per page (the book renders
    it with ``markdown_format: myst``), plain names in plain text."""

    def __init__(self, rows: list[dict], pages: list[PageStatus]):
        self.rows, self._pages = rows, {p.name: p for p in pages}

    def _repr_markdown_(self) -> str:
        if not self.rows:
            return "(nothing to show)"
        head = list(self.rows[0])
        lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for r in self.rows:
            cells = [_link(self._pages[v]) if k == "page" else _esc(v) for k, v in r.items()]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        if not self.rows:
            return "(nothing to show)"
        return "\n".join("; ".join(f"{k}: {v}" for k, v in r.items()) for r in self.rows)

    __repr__ = __str__

    def to_frame(self):
        import pandas as pd
        return pd.DataFrame(self.rows)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f}" if seconds >= 60 else f"{seconds / 60:.1f}"


def status_table(pages: list[PageStatus]) -> LedgerTable:
    """One row per page: pieces present / missing / stale, and where the present ones come from
    (commits, date range, total wall time), and its claims per outcome; "pending" when nothing is
    present."""
    rows = []
    for p in pages:
        c = p.counts()
        rows.append({
            "page": p.name, "profile": p.profile,
            "present / missing / stale": f"{p.present} / {p.missing} / {p.stale}",
            "commit": PENDING if p.pending else ", ".join(p.commits) + (" (modified lib)"
                                                                          if p.dirty else ""),
            "created": PENDING if p.pending else (p.first[:10] if p.first[:10] == p.last[:10]
                                                  else f"{p.first[:10]} to {p.last[:10]}"),
            "wall time (process-min)": PENDING if p.pending else _minutes(p.wall_s),
            "claims: supported / contradicted / inconclusive": PENDING if p.pending else
            f"{c[OUTCOMES[0]]} / {c[OUTCOMES[1]]} / {c[OUTCOMES[2]]}"})
    return LedgerTable(rows, pages)


def _verdict_row(page: PageStatus, v: Verdict) -> dict:
    r = v.as_row()
    claim = v.claim + (f" ({v.note})" if v.note else "")
    return {"page": page.name, "claim": claim, **{k: x for k, x in r.items() if k != "claim"}}


def claims_table(pages: list[PageStatus]) -> LedgerTable:
    """Every claim of every page, as :func:`ddbook.verdicts.render` shows it (claim, outcome,
    effect, interval, runs, test) with the page first; a page with no verdict gets one row saying
    why (pending, or no claim testable with the pieces present)."""
    rows = []
    for p in pages:
        for v in p.verdicts:
            rows.append(_verdict_row(p, v))
        if not p.verdicts:
            why = (f"results pending at {p.profile} (0 of {p.pieces} pieces)" if p.pending else
                   f"no claim testable yet with the {p.present} of {p.pieces} pieces present")
            rows.append({"page": p.name, "claim": why, "outcome": PENDING})
    # the columns of every row (a pending row leaves the numbers empty)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    rows = [{k: r.get(k, "") for k in keys} for r in rows]
    return LedgerTable(rows, pages)


def outcome_bars(pages: list[PageStatus]):
    """A horizontal bar per page: its claims stacked by outcome, in the verdict tables' colours;
    a pending page gets no bar and the word "pending" with its piece count. Returns the Figure."""
    import matplotlib.pyplot as plt

    from ..verdicts import _BADGE

    fig, ax = plt.subplots(figsize=(6.4, 0.5 * len(pages) + 1.4), layout="constrained")
    y = list(range(len(pages)))[::-1]
    left = [0] * len(pages)
    for outcome in OUTCOMES:
        counts = [p.counts()[outcome] for p in pages]
        ax.barh(y, counts, left=left, color=_BADGE[outcome], label=outcome, height=0.6)
        left = [a + b for a, b in zip(left, counts)]
    for yi, p in zip(y, pages):
        if p.pending or not p.verdicts:
            ax.text(0.1, yi, f"{PENDING} (0 of {p.pieces} pieces)" if p.pending else
                    f"no claim testable yet ({p.present} of {p.pieces} pieces)",
                    va="center", fontsize=9, color="#57606a")
    ax.set_yticks(y, [p.name for p in pages])
    ax.set_xlabel(f"claims at {pages[0].profile if pages else ''}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlim(0, max(max(left, default=0), 1) + 1)
    fig.legend(loc="outside lower center", ncol=3, frameon=False, fontsize=9)
    return fig


# ------------------------------------------------------------------- numbers beside the paper's

def _pm(mean, std, scale: float = 1.0) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    text = f"{scale * mean:.1f}"
    return text if std is None or (isinstance(std, float) and math.isnan(std)) \
        else f"{text} ± {scale * std:.1f}"


def _mtt_rows(page: PageStatus) -> list[dict]:
    from ..reference import paper_numbers
    from . import mtt_cifar10 as mtt

    found = page.loaded.found
    out = []
    for r in mtt.table_rows(found):
        conf = paper_numbers(paper="MTT", where="Table 1", dataset="CIFAR-10", ipc=r["ipc"],
                             method="MTT")
        best = r["distilled, best over checkpoints"]
        out.append({"page": page.name, "profile": page.profile, "quantity": f"MTT Table 1, CIFAR-10 IPC {r['ipc']}: "
                    "distilled set, ConvNet",
                    "ours, final": _pm(r["distilled, final iteration"], r["distilled std"]),
                    "ours, best over checkpoints": "—" if best is None else
                    f"{best:.1f} (iteration {r['best at iteration']})",
                    "paper": _pm(r["paper"], r["paper std"]),
                    "paper confidence": conf[0]["confidence"] if conf else "—"})
        rand = paper_numbers(paper="MTT", where="Table 1", dataset="CIFAR-10", ipc=r["ipc"],
                             method="Random")
        out.append({"page": page.name, "profile": page.profile, "quantity": f"MTT Table 1, CIFAR-10 IPC {r['ipc']}: "
                    "random real images, lr 0.01",
                    "ours, final": _pm(r["random real, lr 0.01"], None),
                    "ours, best over checkpoints": "—",
                    "paper": _pm(r["paper random"], rand[0]["std"] if rand else None),
                    "paper confidence": rand[0]["confidence"] if rand else "—"})
    paper = {row["eval_network"]: row for row in
             paper_numbers(paper="MTT", where="cross-architecture (Table 2)")}
    for r in mtt.cross_arch_rows(mtt.cross_arch_found(found)):
        if r["distilled"] is None:
            continue
        p = paper.get(r["evaluated on"])
        out.append({"page": page.name, "profile": page.profile, "quantity": f"MTT cross-architecture, IPC 10 set "
                    f"evaluated on {r['evaluated on']}",
                    "ours, final": _pm(r["distilled"], r["distilled std"]),
                    "ours, best over checkpoints": "—",
                    "paper": _pm(r["paper (approx.)"], None),
                    "paper confidence": p["confidence"] if p else "—"})
    return out


def _table1_rows(page: PageStatus) -> list[dict]:
    from ..profiles import get_profile
    from . import selmatch_table1 as t1

    prof = get_profile(page.profile)
    table, _ = t1.rows(page.loaded, prof)
    return [{"page": page.name, "profile": page.profile, "quantity": f"SelMatch Table 1, {r['ratio']:.0%} subset: "
             f"{r['row']} (scale model, not the paper's setting; {r['n']} "
             f"run{'s' * (r['n'] != 1)})",
             "ours, final": _pm(r["mean"], r["std"] if r["n"] > 1 else None, 100),
             "ours, best over checkpoints": "—",
             "paper": _pm(r["paper_mean"], r["paper_std"]),
             "paper confidence": r["paper_confidence"]}
            for r in table if r["paper_mean"] is not None]


# the pages whose results have numbers of the paper beside them, and how to read them
_COMPARISONS = {"mtt-cifar10": _mtt_rows, "selmatch-table1": _table1_rows}


def paper_comparison(pages: list[PageStatus]) -> LedgerTable:
    """Reproduced numbers beside the paper's (accuracy in %, mean ± std over evaluation runs), for
    the pages that expose them; "best over checkpoints" is the optimistic pick on test accuracy
    that the paper's numbers are (our final iteration is the honest one)."""
    rows = []
    for p in pages:
        if p.name in _COMPARISONS and p.loaded is not None:
            rows += _COMPARISONS[p.name](p)
    return LedgerTable(rows, pages)
