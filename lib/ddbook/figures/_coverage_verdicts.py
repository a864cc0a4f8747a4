"""The coverage page's verdicts (SelMatch Fig. 1 and Fig. 5), through :mod:`ddbook.verdicts`.

- **Coverage** is a property of one set, not of evaluation networks, so there are no run-level
  values to test over; the sample is the test set. Each coverage claim is a paired percentile
  bootstrap over the test examples (the same resample for every method and ratio), with the
  statistic recomputed on each resample. The distillation's own randomness (one set per method
  and ratio) is not in the interval, and every verdict says so.
- **Hard-half accuracy, MTT vs random**: the OLS interaction of method and ratio over the
  evaluation networks (y = a + b·ratio + g·(c + d·ratio), g = 1 for MTT), so the noise of both
  groups is in the interval; plus Welch at the largest ratio.
- **D_select vs D_distill**: the time-averaged gradient-norm difference per evaluation network
  (one-sample t), and the feature network's margin of the two parts' images (Welch over images).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from .. import verdicts as V
from ..coverage import bootstrap_examples
from ..profiles import Profile

__all__ = ["page_verdicts", "covered", "boot_verdict", "interaction_verdict", "gradnorm_diffs"]

ONE_SET = ("one set per method and ratio: the distillation's own randomness is not in the "
           "interval")


def covered(loaded, q: float = 0.5) -> dict:
    """{(method, ratio): (N,) float}: per test example, covered (1) or not (0) at the radius r(q);
    random subsets: the fraction of the runs' subsets that cover it."""
    from ..evaluate import unpack_correct
    acc: dict = {}
    for r in loaded.found.values():
        d = r.data
        if "coverage" not in d or "iterations" in d:
            continue
        row = [float(x) for x in d["quantiles"]].index(float(q))   # the bits' row order
        bits = unpack_correct(r.arrays["covered_bits"], int(r.arrays["n_test"]))[row]
        acc.setdefault((d["method"], d["ratio"]), []).append(bits.astype(float))
    return {key: np.mean(v, axis=0) for key, v in acc.items()}


def boot_verdict(claim: str, stat, n: int, n_boot: int, seed: int, units: str, runs: str,
                 note: str = "") -> V.Verdict:
    """A Verdict for ``stat(W)`` (> 0 favours the claim; ``W`` (b, n) resample weights, see
    :func:`ddbook.coverage.bootstrap_examples`): the effect on all test examples, the 95 %
    percentile interval over ``n_boot`` resamples of them."""
    effect = float(stat(np.ones((1, n)))[0])
    boot = bootstrap_examples(stat, n, n_boot, seed)
    lo, hi = (float(q) for q in np.quantile(boot, [0.025, 0.975]))
    outcome = V.SUPPORTED if lo > 0 else V.CONTRADICTED if hi < 0 else V.INCONCLUSIVE
    return V.Verdict(claim, outcome, effect, (lo, hi), 0.95, runs,
                     f"paired percentile bootstrap over test examples, {n_boot} resamples", units,
                     "; ".join(x for x in (note, ONE_SET) if x), {"seed": seed, "n_boot": n_boot})


def interaction_verdict(x, y, g, claim: str, level: float = 0.95) -> V.Verdict:
    """"The gap between group 1 and group 0 shrinks as x grows": −d of the OLS fit
    y = a + b·x + g·(c + d·x) over run-level points, with its t interval (df = n − 4); in points
    per unit of x."""
    x, y, g = (np.asarray(v, dtype=float) for v in (x, y, g))
    X = np.column_stack([np.ones_like(x), x, g, g * x])
    n = f"{int(g.sum())} vs {int(len(g) - g.sum())} networks over {len(np.unique(x))} ratios"
    test = "OLS interaction (method x ratio) t"
    units = "points per unit of subset ratio"
    if len(y) <= 4 or np.linalg.matrix_rank(X) < 4:
        return V.Verdict(claim, V.INCONCLUSIVE, math.nan, (math.nan, math.nan), level, n, test,
                         units, "too few networks or ratios to fit the interaction")
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    df = len(y) - 4
    s2 = float(resid @ resid) / df
    se = 100 * math.sqrt(s2 * np.linalg.inv(X.T @ X)[3, 3])
    effect = -100 * float(beta[3])
    if se == 0:
        return V.Verdict(claim, V.INCONCLUSIVE, effect, (math.nan, math.nan), level, n, test,
                         units, "no residual noise")
    t_crit = float(stats.t.ppf((1 + level) / 2, df))
    lo, hi = effect - t_crit * se, effect + t_crit * se
    outcome = V.SUPPORTED if lo > 0 else V.CONTRADICTED if hi < 0 else V.INCONCLUSIVE
    return V.Verdict(claim, outcome, effect, (lo, hi), level, n,
                     f"{test}, df {df}, t_crit {t_crit:.2f}", units,
                     details={"coef": beta.tolist(), "se": se})


def gradnorm_diffs(data: dict) -> np.ndarray:
    """Per evaluation network: the time average (trapezoid over the recorded epochs) of the mean
    gradient norm on D_select minus that on D_distill."""
    e = np.asarray(data["epochs"], dtype=float)
    d = np.asarray(data["select"], dtype=float) - np.asarray(data["distill"], dtype=float)
    if len(e) < 2:
        return d[:, 0]
    return ((d[:, 1:] + d[:, :-1]) / 2 * np.diff(e)).sum(axis=1) / (e[-1] - e[0])


def _mean_in(cov, mask):
    """``W -> (b,)``: the resampled mean of ``cov`` over the examples in ``mask``."""
    num, den = cov * mask, mask.astype(float)
    return lambda w: (w @ num) / (w @ den)


def _gap(cov, grp):
    easy, hard = _mean_in(cov, grp["easy"]), _mean_in(cov, grp["hard"])
    return lambda w: easy(w) - hard(w)


def _slope(xs, fns):
    """``W -> (b,)``: the OLS slope over ``xs`` of the statistics ``fns``."""
    x = np.asarray(xs, dtype=float) - np.mean(xs)
    return lambda w: (np.stack([f(w) for f in fns], axis=1) @ x) / (x @ x)


def _coverage_verdicts(cov: dict, grp: dict, ratios: list, cfg) -> list:
    out, n = [], len(grp["easy"])
    boot = dict(n=n, n_boot=cfg.n_boot, seed=cfg.seed)
    per = "points per unit of subset ratio"
    have = {m: [r for r in ratios if (m, r) in cov] for m in ("mtt", "selmatch")}
    top = ratios[-1]     # the plan's largest ratio; a claim made there waits until it is present
    if top in have["mtt"]:
        g = _gap(cov[("mtt", top)], grp)
        out.append(boot_verdict(f"MTT's coverage gap between easy and hard test examples "
                                f"persists at the largest ratio ({top:.0%})",
                                lambda i: 100 * g(i), units="points",
                                runs=f"{n} test examples", **boot))
    gaps = {m: [_gap(cov[(m, r)], grp) for r in have[m]] for m in have}
    if have["selmatch"] == ratios and len(ratios) >= 2:     # trends: on the whole grid only
        s = _slope(have["selmatch"], gaps["selmatch"])
        out.append(boot_verdict("SelMatch's easy-hard coverage gap narrows as the ratio grows",
                                lambda i: -100 * s(i), units=per,
                                runs=f"{n} test examples x {len(have['selmatch'])} ratios",
                                **boot))
    both = [r for r in have["mtt"] if r in have["selmatch"]]
    if both == ratios and len(ratios) >= 2:
        sm = _slope(both, [_gap(cov[("mtt", r)], grp) for r in both])
        ss = _slope(both, [_gap(cov[("selmatch", r)], grp) for r in both])
        out.append(boot_verdict("the gap narrows more for SelMatch than for MTT as the ratio "
                                "grows (slope of MTT's gap minus SelMatch's)",
                                lambda i: 100 * (sm(i) - ss(i)), units=per,
                                runs=f"{n} test examples x {len(both)} ratios", **boot))
    hard = grp["hard"]
    for r in both:
        a, b = _mean_in(cov[("selmatch", r)], hard), _mean_in(cov[("mtt", r)], hard)
        out.append(boot_verdict(f"at {r:.0%}, SelMatch covers more of the hard half than MTT",
                                lambda w, a=a, b=b: 100 * (a(w) - b(w)),
                                units="points", runs=f"{int(hard.sum())} hard test examples",
                                **boot))
    return out


def _accuracy_verdicts(acc, ratios) -> list:
    """The interaction over the plan's ``ratios`` once both methods hold every one of them, and
    Welch at the plan's largest ratio once both are there (a partial grid judges nothing)."""
    t = acc[acc["method"].isin(["mtt", "random"])]
    out = []
    full = all(set(t[t["method"] == m]["ratio"]) >= set(ratios) for m in ("mtt", "random"))
    if full and len(ratios) >= 2:
        t = t[t["ratio"].isin(ratios)]
        out.append(interaction_verdict(t["ratio"], t["hard"], t["method"] == "mtt",
                                       "MTT's hard-half accuracy approaches random's as the ratio "
                                       "grows (its advantage over random shrinks)"))
    if len(t):
        top = ratios[-1]
        m = t[(t["ratio"] == top) & (t["method"] == "mtt")]["hard"]
        r = t[(t["ratio"] == top) & (t["method"] == "random")]["hard"]
        if len(m) and len(r):
            v = V.compare_means(list(m), list(r), f"at {top:.0%}, MTT's hard-half accuracy is "
                                f"above random's (the paper: they end level)")
            out.append(v)
    return out


def _partial_update_verdicts(loaded) -> list:
    out = []
    for r in sorted((r for r in loaded.found.values() if "select" in r.data),
                    key=lambda r: r.data["ratio"]):
        d = r.data
        diffs = gradnorm_diffs(d)
        out.append(V.one_sample(diffs, f"at {d['ratio']:.0%}, the gradient norm is larger on "
                                f"D_select than on D_distill while a network trains on D_syn",
                                scale=1.0, units="gradient norm (time average)",
                                runs=f"{len(diffs)} networks"))
        ms, md = r.arrays["margin_select"], r.arrays["margin_distill"]
        if len(ms) >= 2 and len(md) >= 2:
            v = V.compare_means(md, ms, f"at {d['ratio']:.0%}, D_select lies nearer the decision "
                                f"boundary than D_distill (smaller feature-net margin)",
                                scale=1.0, units="logit", runs=f"{len(md)} vs {len(ms)} images")
            out.append(V.Verdict(**{**v.__dict__, "note": "images of one set, not independent "
                                    "runs; the feature network is ours"}))
    return out


def page_verdicts(loaded, profile: Profile | None = None) -> list:
    from . import selmatch_fig1_fig5_coverage as page
    from .. import selmatch_scale as sc
    if profile is None:
        profile = loaded.profile()
        if profile is None:
            return []
    grp = page.groups(profile)
    if grp is None:
        return []
    cfg = page.coverage_config(profile)
    ratios = sorted(sc.scale_config(profile).ratios)
    out = _coverage_verdicts(covered(loaded), grp, ratios, cfg)
    out += _radius_verdicts(loaded, grp, ratios, cfg)
    out += _accuracy_verdicts(page.group_accuracy_table(profile, grp), ratios)
    return out + _partial_update_verdicts(loaded)


def _radius_verdicts(loaded, grp, ratios, cfg) -> list:
    """The two headline coverage claims again at the other radii (is it the radius speaking?)."""
    from dataclasses import replace
    out = []
    for q in cfg.radius_quantiles:
        if math.isclose(q, 0.5):
            continue
        for v in _coverage_verdicts(covered(loaded, q), grp, ratios, cfg):
            if v.claim.startswith(("MTT's coverage gap", "SelMatch's easy-hard")):
                out.append(replace(v, claim=f"{v.claim} — at radius r({q:g})"))
    return out
