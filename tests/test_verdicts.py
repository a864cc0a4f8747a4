"""Verdicts as tests: known answers, false-positive rates on noise, coverage, rendering."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from ddbook import verdicts as V

S, C, I = V.OUTCOMES  # supported, contradicted, inconclusive at this scale
KEYS = [0.1, 0.3, 0.5, 0.7, 0.9]
XS = [0.05, 0.1, 0.2, 0.3]


def _argmax_table(shift: int, rng) -> dict:
    """Best key falls with x (shift 1), is the same everywhere (0), or rises (−1)."""
    table = {}
    for i, x in enumerate(XS):
        best = {1: KEYS[-1 - i], 0: None, -1: KEYS[i]}[shift]
        table[x] = {k: 0.6 - (0 if best is None else 0.05 * abs(k - best)) + rng.normal(0, 0.005, 3)
                    for k in KEYS}
    return table


# shift s: +1 separated in the claim's favour, 0 flat, −1 reversed; sd 1 point, effects 5 points
CASES = {
    "compare_means": lambda s, g: V.compare_means(0.6 + 0.05 * s + g.normal(0, .01, 4),
                                                  0.6 + g.normal(0, .01, 4), "a beats b"),
    "one_sample": lambda s, g: V.one_sample(0.05 * s + g.normal(0, .01, 5), "a beats b, paired"),
    "bootstrap_diff": lambda s, g: V.bootstrap_diff(0.6 + 0.05 * s + g.normal(0, .01, 10),
                                                    0.6 + g.normal(0, .01, 10), "a beats b"),
    "crossfit_best": lambda s, g: V.crossfit_best({k: 0.6 + 0.05 * s + g.normal(0, .01, 5) for k in KEYS},
                                                  0.6 + g.normal(0, .01, 5), "best key beats random"),
    "trend": lambda s, g: V.trend(XS, [0.6 - 0.3 * s * x + g.normal(0, .01, 3) for x in XS],
                                  "accuracy falls with x"),
    "argmax_trend": lambda s, g: V.argmax_trend(_argmax_table(s, g), "best key falls with x", n_boot=500),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("shift,want", [(1, S), (0, I), (-1, C)])
def test_known_answers(name, shift, want):
    v = CASES[name](shift, np.random.default_rng(3))
    assert v.outcome == want, f"{name}, shift {shift}: {v.sentence()}"
    lo, hi = v.interval
    assert lo <= hi and v.outcome in V.OUTCOMES
    if shift:
        assert math.copysign(1, v.effect) == shift, f"effect sign favours the claim: {v.sentence()}"


def test_best_of_10_on_noise_is_not_rewarded_when_cross_fitted():
    """300 experiments: 10 keys x 3 runs and a 3-run baseline, all from one distribution."""
    rng, n = np.random.default_rng(11), 300
    naive, cross, point = [], [], []
    for _ in range(n):
        pts = {k: rng.normal(0.55, 0.01, 3) for k in range(10)}
        base = rng.normal(0.55, 0.01, 3)
        best = max(pts, key=lambda k: pts[k].mean())
        naive.append(V.compare_means(pts[best], base, "best beats baseline"))
        cross.append(V.crossfit_best(pts, base, "best beats baseline"))
        point.append(V.at_point(pts, 4, base, "key 4 beats baseline"))
    rate = lambda vs: np.mean([v.outcome == S for v in vs])  # noqa: E731
    mean = lambda vs: np.mean([v.effect for v in vs])  # noqa: E731
    # the naive pick is biased upwards (E max of 10 means of 3 ≈ +0.9 point) and often "supported"
    assert mean(naive) > 0.6 and rate(naive) >= 0.04, (mean(naive), rate(naive))
    # the cross-fitted pick is unbiased (sd of one mean ≈ 0.08 point here) and near the nominal rate
    assert abs(mean(cross)) < 0.25 and rate(cross) <= 0.10, (mean(cross), rate(cross))
    assert abs(mean(point)) < 0.25 and rate(point) <= 0.06, (mean(point), rate(point))
    assert rate(naive) > rate(point)


def test_argmax_trend_on_noise_is_rarely_supported():
    rng, n = np.random.default_rng(2), 100
    got = [V.argmax_trend({x: {k: 0.6 + rng.normal(0, .01, 3) for k in KEYS} for x in XS}, "c",
                          n_boot=300, seed=i).outcome for i in range(n)]
    assert got.count(S) <= 8 and got.count(C) <= 8, (got.count(S), got.count(C))
    v = V.argmax_trend(_argmax_table(1, np.random.default_rng(0)), "c", units="β", per="unit of ratio")
    assert v.units == "β per unit of ratio" and v.n == "4 x values x 5 keys x 3 runs"
    assert v.details["picks"] == dict(zip(XS, KEYS[::-1]))


def test_crossfit_picks_never_see_the_held_out_run():
    # in-sample best is "a" (mean .633 > .6); leaving run 0 out, "b" wins the other runs
    v = V.crossfit_best({"a": [0.9, 0.5, 0.5], "b": [0.6, 0.6, 0.6]}, [0.5, 0.52, 0.48], "best wins")
    assert v.details["picks"] == ("b", "a", "a") and v.details["paired"]
    assert "run 0 → b" in v.note
    assert v.effect == pytest.approx(100 * np.mean([0.6 - 0.5, 0.5 - 0.52, 0.5 - 0.48]))


def test_crossfit_unpaired_baseline_uses_welch():
    v = V.crossfit_best({1: [0.6, 0.62, 0.61], 2: [0.5, 0.5, 0.52]}, [0.5, 0.51, 0.49, 0.5], "c")
    assert not v.details["paired"] and "Welch" in v.test and "4 runs" in v.n
    with pytest.raises(ValueError, match="paired=False"):
        V.crossfit_best({1: [0.6, 0.62, 0.61]}, [0.5, 0.51], "c", paired=True)
    one = V.crossfit_best({1: [0.6], 2: [0.5]}, [0.5], "c")
    assert one.outcome == I and "one run" in one.note


def test_welch_matches_scipy_and_uses_t_crit_not_2():
    a, b = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]
    v = V.compare_means(b, a, "b > a", scale=1.0)
    assert v.details["df"] == pytest.approx(4.0) and v.details["t_crit"] == pytest.approx(2.7764, abs=1e-4)
    assert v.details["t_crit"] > 2.5 and "t_crit 2.78" in v.test
    ref = stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    assert v.interval == pytest.approx((ref.low, ref.high))
    one = V.one_sample([0.3, 0.1, 0.5, 0.2], "d > 0", scale=1.0)
    ref = stats.ttest_1samp([0.3, 0.1, 0.5, 0.2], 0).confidence_interval(0.95)
    assert one.interval == pytest.approx((ref.low, ref.high)) and one.outcome == S


def test_welch_interval_covers_the_true_difference_about_95_percent():
    rng, n = np.random.default_rng(5), 1000
    hits = hits_2 = 0
    for _ in range(n):  # unequal variances and sizes; true difference 5 points
        v = V.compare_means(rng.normal(0.60, 0.02, 3), rng.normal(0.55, 0.005, 5), "c")
        lo, hi = v.interval
        hits += lo <= 5 <= hi
        hits_2 += abs(v.effect - 5) <= 2 * v.details["se"]
    assert 0.90 <= hits / n <= 0.99, hits / n
    assert hits_2 / n < 0.90, "a fixed ±2 SE interval under-covers at 3 runs; t_crit must not be 2"


def test_trend_matches_linregress():
    x, ys = XS, [[0.60, 0.62], [0.59, 0.57], [0.55, 0.56, 0.53], [0.52, 0.50]]
    v = V.trend(x, ys, "falls", scale=1.0)
    xs = np.repeat(x, [len(y) for y in ys])
    ref = stats.linregress(xs, np.concatenate(ys))
    t = stats.t.ppf(0.975, len(xs) - 2)
    assert v.effect == pytest.approx(-ref.slope)
    assert v.interval == pytest.approx((-ref.slope - t * ref.stderr, -ref.slope + t * ref.stderr))
    assert "Spearman" in v.note and v.details["spearman"] < 0
    up = V.trend(x, ys, "rises", direction="increasing", scale=1.0)
    assert up.outcome == C and up.effect == pytest.approx(ref.slope)


def test_no_noise_estimate_is_inconclusive_with_a_reason():
    one = V.compare_means([0.7], [0.5, 0.51], "c")
    assert one.outcome == I and "one run" in one.note and math.isnan(one.interval[0])
    same = V.compare_means([0.7, 0.7, 0.7], [0.5, 0.5, 0.5], "c")
    assert same.outcome == I and "zero run-to-run variance" in same.note
    assert V.one_sample([0.02, 0.02], "c").outcome == I
    assert V.bootstrap_diff([0.7, 0.7], [0.5, 0.5], "c").outcome == I
    line = V.trend([0.1, 0.2, 0.3], [[0.7], [0.8], [0.9]], "rises", direction="increasing")
    assert line.outcome == I and "exactly on a line" in line.note
    flat = V.argmax_trend({1: {0: [0.5], 1: [0.6]}, 2: {0: [0.6], 1: [0.5]}}, "c")
    assert flat.outcome == I and "one run per cell" in flat.note
    assert "interval not estimable" in one.sentence()


def test_bootstraps_are_seeded():
    a, b = [0.61, 0.63, 0.60, 0.64], [0.60, 0.59, 0.62, 0.61]
    v1, v2 = V.bootstrap_diff(a, b, "c", seed=4), V.bootstrap_diff(a, b, "c", seed=4)
    assert v1.interval == v2.interval
    assert V.bootstrap_diff(a, b, "c", seed=5).interval != v1.interval
    t = _argmax_table(0, np.random.default_rng(0))
    assert V.argmax_trend(t, "c", seed=1, n_boot=300).interval == \
        V.argmax_trend(t, "c", seed=1, n_boot=300).interval


def test_argmax_ties_take_the_mean_key():
    got = V._argmax_key(np.array([[0.5, 0.7, 0.7], [0.9, 0.1, 0.2]]), np.array([0.1, 0.3, 0.5]))
    assert got == pytest.approx([0.4, 0.1])


def test_render_and_summary():
    vs = [CASES["compare_means"](1, np.random.default_rng(0)),
          CASES["crossfit_best"](-1, np.random.default_rng(0)),
          V.compare_means([0.6], [0.5, 0.52], "<script>alert(1)</script> α < β")]
    table = V.render(vs)
    page, md, text = table._repr_html_(), table._repr_markdown_(), str(table)
    assert "<script" not in page and "&lt;script&gt;" in page and "http" not in page
    assert "95 % interval" in page
    assert "width:" not in page.replace("max-width", "")  # nothing fixed-width
    for v in vs:
        assert v.outcome in page and v.outcome in md and v.outcome in text
    for claim in ("a beats b", "best key beats random"):
        assert claim in page and claim in md and claim in text
    assert [r["outcome"] for r in (v.as_row() for v in vs)] == [S, C, I]
    assert set(vs[0].as_row()) == {"claim", "outcome", "effect", "95 % interval", "runs", "test"}
    para = V.summary(vs)
    assert "Of 3 claims tested, 1 supported, 1 contradicted and 1 inconclusive at this scale." in para
    assert "A beats b: supported (+" in para and "interval not estimable" in para
    assert V.summary([]) == "No claim was tested."
    overruled = replace(vs[0], outcome=I, note="not testable at this scale: unfit; runs = networks")
    para = V.summary([overruled])
    assert "inconclusive at this scale (+" in para and "; not testable at this scale: unfit)" in para
    assert "runs = networks" not in para, "only the reason, not the whole note"


@pytest.mark.parametrize("call,match", [
    (lambda: V.compare_means([0.5, float("nan")], [0.5, 0.6], "c"), "drop failed runs"),
    (lambda: V.compare_means([], [0.5, 0.6], "c"), "non-empty"),
    (lambda: V.compare_means([0.5, 0.6], [0.5, 0.6], "c", level=95), "fraction"),
    (lambda: V.at_point({0.5: [0.6, 0.6]}, 0.25, [0.5, 0.5], "c"), r"not among the points \[0.5\]"),
    (lambda: V.crossfit_best({1: [0.6, 0.6], 2: [0.6]}, [0.5], "c"), "same number of runs"),
    (lambda: V.trend([1, 1], [[0.5, 0.6], [0.5]], "c"), "two x values"),
    (lambda: V.trend([1, 2], [[0.5, 0.6]], "c"), "one group per x"),
    (lambda: V.trend([1, 2], [[0.5], [0.6]], "c", direction="down"), "'decreasing'"),
    (lambda: V.argmax_trend({1: {"a": [0.5, 0.6]}, 2: {"a": [0.5, 0.6]}}, "c"), "must be numbers"),
    (lambda: V.bootstrap_diff([0.5, 0.6], [0.5, 0.6], "c", n_boot=10), "at least 100"),
    (lambda: V.Verdict("c", "yes", 1.0, (0.0, 2.0), 0.95, "2 runs", "t"), "one of"),
])
def test_bad_inputs_name_the_fix(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_numbers_that_round_to_zero_print_without_a_minus_sign():
    assert V._num(-1e-17, 2) == V._num(-0.004, 2) == V._num(0.0, 2) == "+0.00"
    assert V._num(-0.006, 2) == "−0.01" and V._num(0.006, 2) == "+0.01"
    assert V._num(float("nan"), 2) == "n/a"


def test_differ_is_a_two_sided_control_never_contradicted():
    up = V.differ([.60, .61, .62], [.50, .51, .52], "c", effect="x minus y")
    down = V.differ([.50, .51, .52], [.60, .61, .62], "c")
    same = V.differ([.50, .52, .51], [.51, .50, .52], "c", note="why it matters")
    assert up.outcome == down.outcome == V.SUPPORTED and down.effect < 0 < up.effect
    assert same.outcome == V.INCONCLUSIVE
    assert up.interval == V.compare_means([.60, .61, .62], [.50, .51, .52], "c").interval
    assert up.note.startswith("effect = x minus y, either sign counts")
    assert "why it matters" in same.note
    assert V.differ([.6], [.5], "c").outcome == V.INCONCLUSIVE          # no noise estimate
