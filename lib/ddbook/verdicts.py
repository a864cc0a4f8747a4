"""Verdicts as statistical tests: a paper's claim judged on run-level results.

Every function returns a :class:`Verdict` whose ``outcome`` is one of :data:`OUTCOMES`, decided by
one rule: **supported** when the whole confidence interval of the effect lies above 0,
**contradicted** when it lies wholly below 0, **inconclusive at this scale** otherwise (and whenever
the runs cannot estimate their own noise: fewer than two runs, or zero run-to-run variance). The
effect is signed so that > 0 favours the claim, in accuracy points unless stated (``scale=100``
turns fractions into points; ``runs="3 vs 3 networks"`` overrides the runs in words).

- :func:`compare_means` — mean(a) > mean(b): Welch's t interval (Welch–Satterthwaite df).
- :func:`differ` — a control: mean(a) and mean(b) differ, either sign (Welch's t interval).
- :func:`one_sample` — mean(diffs) > 0 for paired or cross-fitted differences: t interval.
- :func:`bootstrap_diff` — mean(a) > mean(b): percentile bootstrap over runs, seeded.
- :func:`at_point` — a pre-specified point (the paper's β*) against a baseline: Welch, no selection.
- :func:`crossfit_best` — the best of k points against a baseline, the pick cross-fitted over runs.
- :func:`trend` — y moves with x: OLS slope over run-level pairs with its t interval.
- :func:`argmax_trend` — the best key moves with x: bootstrap over runs of the argmax's slope.
- :func:`render` (a table for a page), :func:`summary` (a paragraph for its Summary).

Used in: every page's verdict (the page modules of issue 13, ``ddbook.figures``).
"""
from __future__ import annotations

import html
import math
import textwrap
from dataclasses import dataclass, field, replace
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
from scipy import stats

__all__ = ["OUTCOMES", "Verdict", "VerdictTable", "compare_means", "differ", "one_sample",
           "bootstrap_diff", "at_point",
           "crossfit_best", "trend", "argmax_trend", "render", "summary", "NOT_TESTABLE"]

SUPPORTED, CONTRADICTED, INCONCLUSIVE = OUTCOMES = (
    "supported", "contradicted", "inconclusive at this scale")
NAN = float("nan")


@dataclass(frozen=True)
class Verdict:
    """One claim, its outcome and the numbers behind it."""
    claim: str                      # the paper's claim, in words
    outcome: str                    # one of OUTCOMES
    effect: float                   # point estimate in `units`, > 0 favours the claim
    interval: tuple[float, float]   # two-sided CI of `effect` at `level`; (nan, nan): not estimable
    level: float                    # e.g. 0.95
    n: str                          # the runs behind it, in words
    test: str                       # the procedure, with its df / critical value / resamples
    units: str = "points"           # accuracy (percentage) points unless stated
    note: str = ""                  # why inconclusive, caveats, picks per fold
    details: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    # ^ machine-readable extras (df, t_crit, picks, spearman, ...) for pages that need them

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ValueError(f"Verdict outcome {self.outcome!r}: use one of {OUTCOMES}")

    def _numbers(self) -> tuple[str, str]:
        d = _decimals(self.effect, *self.interval)
        lo, hi = self.interval
        ci = "not estimable" if math.isnan(lo) else f"[{_num(lo, d)}, {_num(hi, d)}]"
        return f"{_num(self.effect, d)} {self.units}", ci

    def sentence(self) -> str:
        """One plain sentence: claim — outcome (effect, interval, runs, test)."""
        effect, ci = self._numbers()
        return (f"{self.claim} — {self.outcome} (effect {effect}, {_pct(self.level)} interval "
                f"{ci}; {self.n}; {self.test}).")

    def as_row(self) -> dict:
        """The table row: claim, outcome, effect, interval, runs, test (display strings)."""
        effect, ci = self._numbers()
        return {"claim": self.claim, "outcome": self.outcome, "effect": effect,
                f"{_pct(self.level)} interval": ci, "runs": self.n, "test": self.test}


# ---------------------------------------------------------------------------------- the tests

def compare_means(a, b, claim: str, *, level: float = 0.95, units: str = "points",
                  scale: float = 100.0, runs: str | None = None) -> Verdict:
    """Welch's t test of "mean(a) > mean(b)" on run-level values; effect = scale·(ā − b̄).

    The interval is ā − b̄ ± t_crit·√(s²_a/n_a + s²_b/n_b), t_crit from Student's t at the
    Welch–Satterthwaite df (with 3 vs 3 runs it is ≈ 2.8–4.3, never 2). Read: supported if the
    interval is above 0. Fewer than two runs in a group, or zero variance in *both* groups (identical
    runs: no noise estimate, often a seeding mistake), give inconclusive with that reason in
    ``note`` — a difference between noiseless-looking groups is not evidence without a noise scale.
    """
    a, b = _runs(a, "a"), _runs(b, "b")
    _check_level(level)
    effect = scale * (a.mean() - b.mean())
    n = runs or f"{len(a)} vs {len(b)} runs"
    if min(len(a), len(b)) < 2:
        return _no_noise(claim, effect, level, n, "Welch's t", units,
                         "one run: no run-to-run noise estimate")
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return _no_noise(claim, effect, level, n, "Welch's t", units,
                         "zero run-to-run variance in both groups: no noise estimate "
                         "(are the runs seeded differently?)")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return _t_verdict(claim, effect, scale * math.sqrt(va + vb), df, level, n, "Welch's t", units)


def differ(a, b, claim: str, *, effect: str = "a minus b", note: str = "", level: float = 0.95,
           units: str = "points", scale: float = 100.0, runs: str | None = None) -> Verdict:
    """A control's test: "mean(a) and mean(b) differ by more than the run-to-run noise", either
    sign. Welch's interval of scale·(ā − b̄) as in :func:`compare_means`; supported when it
    excludes 0 on either side, inconclusive otherwise (never contradicted: a control that finds no
    difference says the scale cannot test what depends on it). ``effect`` names the difference
    in the note ("α 1 minus α 0"); ``note`` follows it, then the test's own note."""
    v = compare_means(a, b, claim, level=level, units=units, scale=scale, runs=runs)
    lo, hi = v.interval
    moved = not math.isnan(lo) and (lo > 0 or hi < 0)
    why = "; ".join(x for x in (f"effect = {effect}, either sign counts (a difference, not a "
                                f"direction)", note, v.note) if x)
    return replace(v, outcome=SUPPORTED if moved else INCONCLUSIVE, note=why)


def one_sample(diffs, claim: str, *, level: float = 0.95, units: str = "points",
               scale: float = 100.0, runs: str | None = None) -> Verdict:
    """One-sample t test of "mean(diffs) > 0" (paired or cross-fitted differences).

    Interval: d̄ ± t_crit(n − 1)·s/√n. Read: supported if it is above 0. Fewer than two differences
    or all differences equal: inconclusive (no noise estimate), see :func:`compare_means`.
    """
    d = _runs(diffs, "diffs")
    _check_level(level)
    effect = scale * d.mean()
    n = runs or f"{len(d)} paired differences"
    if len(d) < 2:
        return _no_noise(claim, effect, level, n, "one-sample t", units,
                         "one run: no run-to-run noise estimate")
    if np.ptp(d) == 0:
        return _no_noise(claim, effect, level, n, "one-sample t", units,
                         "all differences equal: no noise estimate")
    se = scale * d.std(ddof=1) / math.sqrt(len(d))
    return _t_verdict(claim, effect, se, len(d) - 1, level, n, "one-sample t", units)


def bootstrap_diff(a, b, claim: str, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0,
                   units: str = "points", scale: float = 100.0, runs: str | None = None) -> Verdict:
    """Percentile bootstrap of "mean(a) > mean(b)": each group's runs resampled with replacement
    ``n_boot`` times from ``np.random.default_rng(seed)``; the interval is the (1 ± level)/2
    quantiles of the resampled differences. Read as :func:`compare_means`. With a handful of runs
    the percentile interval is too narrow (it ignores the df); Welch's t is the primary test then,
    and the verdict says so in ``note``.
    """
    a, b = _runs(a, "a"), _runs(b, "b")
    _check_level(level)
    if n_boot < 100:
        raise ValueError(f"bootstrap_diff: n_boot={n_boot} is too few; use at least 100 (2000 default)")
    effect = scale * (a.mean() - b.mean())
    n, test = runs or f"{len(a)} vs {len(b)} runs", f"percentile bootstrap, {n_boot} resamples"
    if min(len(a), len(b)) < 2:
        return _no_noise(claim, effect, level, n, test, units, "one run: no run-to-run noise estimate")
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return _no_noise(claim, effect, level, n, test, units,
                         "zero run-to-run variance in both groups: no noise estimate")
    rng = np.random.default_rng(seed)
    boot = scale * (_boot_means(a, n_boot, rng) - _boot_means(b, n_boot, rng))
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    note = ("few runs: the percentile bootstrap is too narrow below ~10 runs per group; "
            "prefer Welch's t" if min(len(a), len(b)) < 10 else "")
    return Verdict(claim, _judge(lo, hi), float(effect), (float(lo), float(hi)), level, n, test,
                   units, note, {"seed": seed, "n_boot": n_boot})


def at_point(points: Mapping[Hashable, Sequence[float]], key: Hashable, baseline: Sequence[float],
             claim: str, **kw) -> Verdict:
    """The pre-specified point ``points[key]`` (e.g. the paper's β*) against ``baseline``:
    :func:`compare_means` (Welch), no selection, so its false-positive rate is the nominal one."""
    if key not in points:
        raise ValueError(f"at_point: key {key!r} is not among the points {sorted(points, key=str)}; "
                         "pass the pre-specified key exactly as the sweep stores it")
    v = compare_means(points[key], baseline, claim, **kw)
    note = f"pre-specified point {key} (no selection)" + (f"; {v.note}" if v.note else "")
    return replace(v, note=note, details={**v.details, "key": key})


def crossfit_best(points: Mapping[Hashable, Sequence[float]], baseline: Sequence[float], claim: str,
                  *, paired: bool | None = None, level: float = 0.95, units: str = "points",
                  scale: float = 100.0) -> Verdict:
    """The best of k points against ``baseline``, the choice cross-fitted (leave one run out).

    Every point has R runs, ``points[key][r]`` being run r. For each held-out run r, pick the key
    with the best mean over the *other* runs and score ``points[pick][r]``; the pick never sees the
    run it is scored on, so a best-of-k choice on noise is not rewarded. Then:
    ``paired`` (default: when the baseline has exactly R values, baseline[r] being run r's
    baseline) — :func:`one_sample` on the R margins ``points[pick][r] − baseline[r]``;
    unpaired — :func:`compare_means` (Welch) of the R held-out scores against the baseline's runs
    (subtracting the baseline's mean from each margin would ignore that mean's own noise).
    The picks per fold are in ``note`` and ``details["picks"]``. R < 2: inconclusive.

    Read: supported means the *procedure* "take the best key" beats the baseline on runs it did not
    choose on. The folds share runs (run r helps pick for every other fold), so the held-out margins
    are slightly positively correlated and the interval a little narrow: on pure noise (10 keys,
    same distribution as the baseline) it said supported in 3.9 % and contradicted in 3.6 % of
    3,000 experiments at 3 runs (5.3 % / 4.1 % of 1,500 at 5 runs), against 2.5 % each nominal;
    the naive "best key vs baseline" Welch test said supported in 7.5 % (11 % at 5 runs), with an
    upward-biased effect. Ties between keys go to the smallest key.
    """
    vals, keys = _points(points, "crossfit_best")
    base = _runs(baseline, "baseline")
    R = vals.shape[1]
    paired = len(base) == R if paired is None else paired
    if paired and len(base) != R:
        raise ValueError(f"crossfit_best: paired=True needs one baseline value per run ({R}), "
                         f"got {len(base)}; pass paired=False")
    if R < 2:
        return _no_noise(claim, NAN, level, f"{len(keys)} points x 1 run", "cross-fitted best", units,
                         "one run per point: nothing to cross-fit on")
    held_out, picks = np.empty(R), []
    for r in range(R):
        others = np.delete(vals, r, axis=1).mean(axis=1)
        picks.append(keys[int(np.argmax(others))])
        held_out[r] = vals[keys.index(picks[-1]), r]
    runs = f"{len(keys)} points x {R} runs, baseline {len(base)} runs"
    if paired:
        v = one_sample(held_out - base, claim, level=level, units=units, scale=scale, runs=runs)
    else:
        v = compare_means(held_out, base, claim, level=level, units=units, scale=scale, runs=runs)
    note = "picks per held-out run: " + ", ".join(f"run {r} → {p}" for r, p in enumerate(picks))
    return replace(v, test=f"best of {len(keys)} cross-fitted (leave one run out), {v.test}",
                    note=note + (f"; {v.note}" if v.note else ""),
                    details={**v.details, "picks": tuple(picks), "paired": paired})


def trend(x: Sequence[float], ys: Sequence[Sequence[float]], claim: str, *,
          direction: str = "decreasing", level: float = 0.95, units: str = "points",
          scale: float = 100.0, per: str = "unit of x") -> Verdict:
    """A trend tested as a trend: the OLS slope of y on x over all run-level pairs (x[i], ys[i][j]),
    with its t interval (df = pairs − 2; the runs at each x are independent networks, so each pair
    is one observation). Effect = ±scale·slope in ``units`` per ``per``, signed so that > 0 follows
    ``direction``. Read: supported if the interval is above 0; ``note`` gives Spearman's ρ over the
    same pairs. Chosen over a bootstrap over runs because with 2–3 runs per point a percentile
    bootstrap is too narrow, while the t interval accounts for the small df.
    """
    sign = _direction(direction)
    _check_level(level)
    if len(x) != len(ys):
        raise ValueError(f"trend: {len(x)} x values but {len(ys)} groups of runs; pass one group per x")
    groups = [_runs(y, f"ys[{i}]") for i, y in enumerate(ys)]
    xs = np.concatenate([np.full(len(g), float(xi)) for xi, g in zip(_runs(x, "x"), groups)])
    y = np.concatenate(groups)
    if np.unique(xs).size < 2:
        raise ValueError("trend: all runs sit at one x value; a trend needs at least two x values")
    n = f"{len(groups)} x values, {len(y)} runs"
    sxx = ((xs - xs.mean()) ** 2).sum()
    slope = ((xs - xs.mean()) * (y - y.mean())).sum() / sxx
    effect, units_per = sign * scale * slope, f"{units} per {per}"
    rho = float(stats.spearmanr(xs, y).statistic) if np.ptp(y) > 0 else NAN
    if len(y) < 3:
        return _no_noise(claim, effect, level, n, "OLS slope", units_per, "two runs: no residual noise")
    resid = y - y.mean() - slope * (xs - xs.mean())
    if np.abs(resid).max() <= 1e-12 * max(1.0, np.abs(y).max()):
        return _no_noise(claim, effect, level, n, "OLS slope", units_per,
                         "runs lie exactly on a line: no residual noise estimate")
    se = scale * math.sqrt((resid ** 2).sum() / (len(y) - 2) / sxx)
    v = _t_verdict(claim, effect, se, len(y) - 2, level, n, "OLS slope t", units_per)
    return replace(v, note=f"Spearman ρ = {rho:+.2f} over {len(y)} run-level pairs",
                    details={**v.details, "spearman": rho, "slope": float(slope)})


def argmax_trend(table: Mapping[float, Mapping[float, Sequence[float]]], claim: str, *,
                 direction: str = "decreasing", n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95, units: str = "key", per: str = "unit of x") -> Verdict:
    """"The best key moves with x" (best α falls as the subset grows, best β moves harder): tested
    on the noise of the pick itself.

    ``table[x][key]`` holds the run-level values at numeric x and numeric key. Statistic: the OLS
    slope of argmax_key(x) on x, where argmax_key(x) is the key with the best mean at x (ties: the
    mean of the tied keys). Bootstrap: ``n_boot`` times, resample the runs of every (x, key) cell with
    replacement (``np.random.default_rng(seed)``, cells drawn in sorted x, then sorted key order),
    recompute each argmax and the slope; the interval is the percentile interval of the signed
    slope (> 0 follows ``direction``), in ``units`` (the key's, e.g. "β") per ``per``; the effect
    is the slope on the observed means. Read: supported if the interval is above 0; a pick that
    flips under resampling gives an interval that straddles 0 (on pure noise, 4 ratios x 5 keys x
    3 runs, it said supported in 1 % of 400 experiments). A best key that never moves gives [0, 0]:
    inconclusive. Cells with fewer than two runs: inconclusive (nothing to resample).
    """
    sign = _direction(direction)
    _check_level(level)
    for x, row in table.items():
        if not all(isinstance(k, (int, float, np.number)) for k in [x, *row]):
            raise ValueError(f"argmax_trend: x and keys must be numbers (β, α values); got x={x!r}, "
                             f"keys {list(row)}")
    xs = sorted(table)
    if len(xs) < 2:
        raise ValueError("argmax_trend: the table needs at least two x values (e.g. two subset ratios)")
    cells = {x: _points(table[x], f"argmax_trend at x={x}") for x in xs}
    xa = np.asarray(xs, dtype=float)
    picks = np.array([_argmax_key(v.mean(axis=1)[None], np.asarray(k, float))[0]
                      for v, k in cells.values()])
    effect = sign * _slope(xa, picks[None])[0]
    runs, n = _grid_runs(cells)
    test, units = f"bootstrap of the argmax slope, {n_boot} resamples", f"{units} per {per}"
    note = "best key per x: " + ", ".join(f"{x:g} → {p:g}" for x, p in zip(xs, picks))
    if runs < 2:
        return _no_noise(claim, effect, level, n, test, units,
                         note + "; one run per cell: nothing to resample")
    rng = np.random.default_rng(seed)
    boot = np.stack([_argmax_key(np.stack([_boot_means(row, n_boot, rng) for row in v], axis=1),
                                 np.asarray(k, float)) for v, k in cells.values()], axis=1)
    lo, hi = np.quantile(sign * _slope(xa, boot), [(1 - level) / 2, (1 + level) / 2])
    return Verdict(claim, _judge(lo, hi), float(effect), (float(lo), float(hi)), level, n, test,
                   units, note, {"picks": dict(zip(xs, picks.tolist())), "seed": seed})


# --------------------------------------------------------------------------- output for a page

_BADGE = {SUPPORTED: "#1a7f37", CONTRADICTED: "#cf222e", INCONCLUSIVE: "#6e7781"}  # white text ≥ 4.5:1


class VerdictTable:
    """What :func:`render` returns: an HTML table in notebooks and books, text elsewhere."""

    def __init__(self, verdicts: Sequence[Verdict]):
        self.verdicts = list(verdicts)

    def _repr_html_(self) -> str:
        cell = 'style="padding:.2em .5em;vertical-align:top;text-align:left;overflow-wrap:break-word"'
        levels = {v.level for v in self.verdicts}
        ci = f"{_pct(levels.pop())} interval" if len(levels) == 1 else "interval"
        head = ["claim", "outcome", "effect", ci, "runs", "test"]
        rows = ["<tr>" + "".join(f"<th {cell}>{h}</th>" for h in head) + "</tr>"]
        for v in self.verdicts:
            r = v.as_row()
            badge = (f'<span style="display:inline-block;background:{_BADGE[v.outcome]};color:#fff;'
                     f'padding:0 .4em;border-radius:.3em">{html.escape(v.outcome)}</span>')
            claim = html.escape(v.claim) + (f"<br><small>{html.escape(v.note)}</small>" if v.note else "")
            values = [claim, badge, *(html.escape(str(x)) for x in list(r.values())[2:])]
            rows.append("<tr>" + "".join(f"<td {cell}>{x}</td>" for x in values) + "</tr>")
        return ('<div style="overflow-x:auto"><table class="ddbook-verdicts" '
                'style="border-collapse:collapse">' + "".join(rows) + "</table></div>")

    def _repr_markdown_(self) -> str:
        rows = [v.as_row() for v in self.verdicts]
        if not rows:
            return "(no verdicts)"
        esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
        lines += ["| " + " | ".join(esc(x) for x in r.values()) + " |" for r in rows]
        return "\n".join(lines)

    def __str__(self) -> str:
        return "\n".join(textwrap.fill(v.sentence() + (f" Note: {v.note}." if v.note else ""), 88,
                                       subsequent_indent="  ") for v in self.verdicts)

    __repr__ = __str__


def render(verdicts: Sequence[Verdict]) -> VerdictTable:
    """A compact table (claim | outcome badge | effect | interval | runs | test) for a page: HTML
    that wraps on a narrow screen (no fixed widths, no scripts, no external resources), Markdown,
    and plain text as a fallback."""
    return VerdictTable(verdicts)


# a verdict whose note starts with this was made inconclusive by a precondition, whatever its
# interval; the summary repeats that note's first clause (the reason)
NOT_TESTABLE = "not testable"


def summary(verdicts: Sequence[Verdict]) -> str:
    """One paragraph for a page's Summary: counts per outcome, then each claim's outcome with its
    effect and interval (and, for one overruled as not testable, why) — generated from the
    verdicts, never typed."""
    verdicts = list(verdicts)
    if not verdicts:
        return "No claim was tested."
    counts = [f"{sum(v.outcome == o for v in verdicts)} {o}" for o in OUTCOMES]
    head = (f"Of {len(verdicts)} claim{'s' * (len(verdicts) != 1)} tested, "
            f"{counts[0]}, {counts[1]} and {counts[2]}.")
    parts = []
    for v in verdicts:
        effect, ci = v._numbers()
        why = ""
        if v.note and v.note.startswith(NOT_TESTABLE):   # the reason an interval was overruled
            why = f"; {v.note.split(';')[0]}"
        parts.append(f"{_capital(v.claim)}: {v.outcome} ({effect}, {_pct(v.level)} interval "
                     f"{ci}{why}).")
    return " ".join([head, *parts])


# ---------------------------------------------------------------------------------- internals

def _runs(values, name: str) -> np.ndarray:
    """Run-level values as a finite 1-D float array, or a clear error."""
    try:
        a = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a sequence of numbers (one per run), got {values!r}") from None
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name}: expected a non-empty flat sequence of run-level values, "
                         f"got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: contains NaN or inf ({values!r}); drop failed runs explicitly "
                         "and say so on the page")
    return a


def _points(points: Mapping, where: str) -> tuple[np.ndarray, list]:
    """``{key: runs}`` with the same number of runs per key as ``(k, R)`` values and sorted keys."""
    if not points:
        raise ValueError(f"{where}: no points given; pass {{key: [run values]}}")
    keys = sorted(points)
    rows = [_runs(points[k], f"{where}, key {k!r}") for k in keys]
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"{where}: every key needs the same number of runs (run r = index r), got "
                         + ", ".join(f"{k}: {len(r)}" for k, r in zip(keys, rows)))
    return np.stack(rows), keys


def _grid_runs(cells: Mapping) -> tuple[int, str]:
    """The fewest runs in any cell, and the grid in words ("4 x values x 5 keys x 3 runs")."""
    keys = sorted({len(k) for _, k in cells.values()})
    runs = sorted({v.shape[1] for v, _ in cells.values()})
    span = lambda s: f"{s[0]}" if len(s) == 1 else f"{s[0]}–{s[-1]}"  # noqa: E731
    return runs[0], f"{len(cells)} x values x {span(keys)} keys x {span(runs)} runs"


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level={level}: a confidence level is a fraction in (0, 1), e.g. 0.95")


def _direction(direction: str) -> int:
    if direction not in ("increasing", "decreasing"):
        raise ValueError(f"direction={direction!r}: use 'increasing' or 'decreasing'")
    return 1 if direction == "increasing" else -1


def _judge(lo: float, hi: float) -> str:
    return SUPPORTED if lo > 0 else CONTRADICTED if hi < 0 else INCONCLUSIVE


def _t_verdict(claim, effect, se, df, level, n, name, units) -> Verdict:
    t_crit = float(stats.t.ppf((1 + level) / 2, df))
    lo, hi = effect - t_crit * se, effect + t_crit * se
    return Verdict(claim, _judge(lo, hi), float(effect), (float(lo), float(hi)), level, n,
                   f"{name}, df {df:.1f}, t_crit {t_crit:.2f}", units,
                   details={"df": float(df), "t_crit": t_crit, "se": float(se)})


def _no_noise(claim, effect, level, n, test, units, note) -> Verdict:
    return Verdict(claim, INCONCLUSIVE, float(effect), (NAN, NAN), level, n, test, units, note)


def _boot_means(a: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    return a[rng.integers(0, len(a), size=(n_boot, len(a)))].mean(axis=1)


def _argmax_key(means: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Per row of ``means`` (b, k): the key with the largest mean; ties → mean of the tied keys."""
    best = means == means.max(axis=1, keepdims=True)
    return (best * keys).sum(axis=1) / best.sum(axis=1)


def _slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """OLS slope of each row of ``y`` (b, len(x)) on ``x``."""
    xc = x - x.mean()
    return (y - y.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)


def _decimals(*xs: float) -> int:
    """Decimals that give the largest finite magnitude about three significant digits (1–4)."""
    m = max((abs(x) for x in xs if math.isfinite(x)), default=0.0)
    return 2 if m == 0 else min(4, max(1, 2 - math.floor(math.log10(m))))


def _num(x: float, d: int) -> str:
    """Signed, ``d`` decimals; a value that rounds to zero prints +0.00, never −0.00."""
    return "n/a" if math.isnan(x) else f"{round(x, d) + 0.0:+.{d}f}".replace("-", "−")


def _pct(level: float) -> str:
    return f"{level * 100:g} %"


def _capital(s: str) -> str:
    return s[:1].upper() + s[1:]
