"""SelMatch Table 1 at the scale model: every row evaluated by one protocol, per subset ratio.

Rows (per ratio of :mod:`ddbook.selmatch_scale`), all under SelMatch's evaluation protocol
(combined augmentation: crop + flip on real images, per-image DSA on distilled ones) unless
labelled otherwise:

- **random**: random real images (the draw MTT starts from), hard labels, kept real: this page;
- **window (paper β)**: the window alone at the paper's β, which is SelMatch at α = 0: the α page;
- **MTT**: the same random real images as the random row, every image distilled, hard labels;
  where the ratio's SelMatch image learning rate is not the 5 / 10 % one (20 %: 10,000), MTT
  also at 1,000 (``selmatch_scale.LR_IMG_CHECK``), a sensitivity row;
- **DATM**: images the experts classify correctly, every image distilled, with DATM's soft labels
  (the correct experts' mean logits) learned, DATM's late start range and loss threshold;
- **random real + DATM's soft labels** (the fairness row): the same random images as MTT, not
  distilled, given DATM's label treatment (and, like DATM's images, DSA); how much of DATM's gain
  its labels make;
- **SelMatch**: at the paper's α and β for the ratio, and at our best α (cross-fitted over
  evaluation networks) from the α page, whose pieces this page reads;
- beside them, labelled **(Fig. 3 sweep, DSA)**: the sliding-window sweep's random subsets and
  windows (same universe, network, steps and lr; DSA on every real image, as in SelMatch's
  sliding-window scripts), among them the window at our best β, cross-fitted over runs. They are
  reused, never recomputed here, and not compared with the rows above in the verdicts (another
  augmentation).

MTT and DATM share SelMatch's experts (ConvNet-BN, no augmentation), unroll and iteration count
here, so the rows differ only in what the methods differ in: initialisation, which part is
updated, and labels. Random, MTT and the fairness row start from one draw of images.
"""
from __future__ import annotations

import math

import numpy as np

from ..profiles import Profile
from .. import selmatch_scale as sc
from . import selmatch_fig4a_alpha as selmatch_alpha

NAME = "selmatch-table1"
NOTEBOOK = "selmatch_table1"
TITLE = "SelMatch Table 1: selection, distillation and both, at one protocol"

__all__ = ["NAME", "NOTEBOOK", "TITLE", "plan", "run", "load", "verdicts", "rows", "crossfit",
           "PAPER_METHOD"]

# the Fig. 3 sweep's rows: real images under DSA, not SelMatch's protocol (shown, not tested)
RANDOM_DSA = "random (Fig. 3 sweep, DSA)"
WINDOW_DSA = "window (paper β; Fig. 3 sweep, DSA)"
BEST_WINDOW_DSA = "window (best β, cross-fitted; Fig. 3 sweep, DSA)"

# a sensitivity row (where the ratio's SelMatch lr_img is not the 5 / 10 % one: 20 %)
MTT_LR_CHECK = f"MTT at lr_img {sc.LR_IMG_CHECK:,.0f} (sensitivity)"

# our row -> the paper's Table 1 method name (reference/paper-numbers.csv)
PAPER_METHOD = {"random": "Random", "window (paper β)": "Best window (sliding-window selection)",
                "MTT": "MTT", "DATM": "DATM", "SelMatch (paper α, β)": "SelMatch"}


def plan(profile: Profile) -> list:
    """This page's own pieces (MTT, DATM, the fairness row, SelMatch at the paper's α where the α
    page does not hold it). It also draws the α page's pieces and the Fig. 3 sweep."""
    return sc.table1_plan(profile)


def run(profile: Profile, device=None, only=None) -> list:
    return sc.run_pieces(profile, plan(profile), device, only)


def load(profile: Profile) -> sc.Loaded:
    """The pieces this page draws: its own and the α page's (SelMatch rows)."""
    return sc.load_pieces(profile, plan(profile) + selmatch_alpha.plan(profile))


def crossfit(points: dict) -> tuple[list, list]:
    """(held-out scores, picks): for each run r, the key with the best mean over the other runs,
    scored on run r (``points[key][r]``; keys with fewer runs than the most are left out)."""
    if not points:
        return [], []
    n = max(len(v) for v in points.values())
    keys = sorted(k for k, v in points.items() if len(v) == n)
    vals = np.array([points[k] for k in keys], dtype=float)       # (k, R)
    if n < 2:
        return [], []
    held, picks = [], []
    for r in range(n):
        pick = int(np.argmax(np.delete(vals, r, axis=1).mean(axis=1)))
        picks.append(keys[pick])
        held.append(float(vals[pick, r]))
    return held, picks


def _fig3_points(table, ratio: float) -> tuple[list, dict, dict]:
    """(random runs, {β: runs}, {β or None: train losses}) of the Fig. 3 sweep at ``ratio``."""
    t = table[np.isclose(table["ratio"], ratio)]
    rnd = t[t["beta"].isna()].sort_values("run")
    win = t[t["beta"].notna()]
    by_beta = {float(b): list(g.sort_values("run")["accuracy"]) for b, g in win.groupby("beta")}
    losses = {None: list(rnd["train_loss"])} if "train_loss" in t else {}
    if "train_loss" in t:
        losses.update({float(b): list(g["train_loss"]) for b, g in win.groupby("beta")})
    return list(rnd["accuracy"]), by_beta, losses


def _paper(ratio: float, row: str):
    from ..reference import paper_numbers
    method = PAPER_METHOD.get(row)
    if method is None:
        return None
    found = paper_numbers(paper="SelMatch", where="Table 1", dataset="CIFAR-10",
                          subset_ratio=f"{round(100 * ratio)}%", method=method)
    return found[0] if found else None


def _groups_of(correct, groups) -> dict:
    """Mean and std over networks of the accuracy on the easy and the hard test half (fractions;
    NaN without correctness or groups)."""
    if groups is None or correct is None or not len(correct):
        return {f"{g}_{s}": math.nan for g in ("easy", "hard") for s in ("mean", "std")}
    from ..coverage import group_accuracy
    acc = group_accuracy(np.asarray(correct), groups)
    return {**{f"{g}_mean": float(acc[g].mean()) for g in ("easy", "hard")},
            **{f"{g}_std": float(acc[g].std()) for g in ("easy", "hard")}}


def _row(ratio, label, source, accs, losses, note="", correct=None, groups=None):
    p = _paper(ratio, label)
    return {"ratio": ratio, "row": label, "source": source, "accuracies": list(accs),
            **_groups_of(correct, groups),
            "mean": float(np.mean(accs)) if len(accs) else math.nan,
            "std": float(np.std(accs)) if len(accs) else math.nan, "n": len(accs),
            "max_train_loss": float(np.max(losses)) if len(losses) else math.nan,
            "paper_mean": None if p is None else p["mean"],
            "paper_std": None if p is None else p["std"],
            "paper_confidence": None if p is None else p["confidence"], "note": note}


def rows(loaded, profile: Profile, groups: dict | None = None) -> tuple[list[dict], list[str]]:
    """(one dict per table row, notes on what is missing or not comparable). With ``groups``
    ({"easy", "hard"} test masks, ``selmatch_fig1_fig5_coverage.groups``) every row also gets
    its networks' accuracy on the easy and the hard half (``easy_mean``, ``hard_std``, ...)."""
    from ..evaluate import load_correct
    notes = []
    fig3_correct = {_key(*k): v for k, v in
                    (sc.fig3_correct(profile) if groups is not None else {}).items()}

    def f3(ratio, beta, runs):   # the Fig. 3 networks' correctness, when all of them are there
        c = [fig3_correct.get(_key(ratio, beta, r)) for r in runs]
        return None if any(x is None for x in c) else np.stack(c)

    def piece(name, nets=None):
        r = loaded.found.get(name)
        if groups is None or r is None:
            return None
        c = load_correct(r)
        return c if nets is None else c[nets]
    fig3, fig3_missing, why = sc.fig3_rows(profile)
    if why:
        notes.append(f"the Fig. 3 sweep's rows (DSA) not drawn: {why}")
    elif fig3_missing:
        notes.append(f"the Fig. 3 sweep at {profile.name} misses {len(fig3_missing)} points")
    # the best-α row only where the α page's grid is complete (a partial grid's best is biased)
    alpha_t = selmatch_alpha.complete_rows(selmatch_alpha.alpha_table(loaded),
                                           sc.scale_config(profile).alphas)
    out = []
    for ratio in sc.scale_config(profile).ratios:
        ps = sc.paper_setting(ratio)
        r = loaded.found.get(f"r{ratio:.2f}_random")
        if r is not None:
            out.append(_row(ratio, "random", "this page", r.data["accuracies"],
                            r.data["train_loss"], "MTT's initial images, kept real",
                            piece(f"r{ratio:.2f}_random"), groups))
        w = f"r{ratio:.2f}_a0.0"
        r = loaded.found.get(w)
        if r is not None:
            out.append(_row(ratio, "window (paper β)", "α page (α = 0)", r.data["accuracies"],
                            r.data["train_loss"], f"β = {ps['beta']}", piece(w), groups))
        if fig3 is not None and len(fig3):
            rnd, by_beta, losses = _fig3_points(fig3, ratio)
            runs = _fig3_runs(fig3, ratio)
            if rnd:
                out.append(_row(ratio, RANDOM_DSA, "Fig. 3 sweep", rnd, losses.get(None, []),
                                "a new subset per network",
                                correct=f3(ratio, None, runs[None]), groups=groups))
            pb = next((b for b in by_beta if math.isclose(b, ps["beta"])), None)
            if pb is not None:
                out.append(_row(ratio, WINDOW_DSA, "Fig. 3 sweep", by_beta[pb],
                                losses.get(pb, []), f"β = {ps['beta']}",
                                f3(ratio, pb, runs[pb]), groups))
            elif any(math.isclose(b, ps["beta"]) for b in sc.fig3_betas(profile, ratio)):
                notes.append(f"{ratio:.0%}: the Fig. 3 sweep's window at the paper's β "
                             f"{ps['beta']} is not finished yet")
            else:
                notes.append(f"{ratio:.0%}: the paper's β {ps['beta']} is not on the Fig. 3 "
                             f"grid at {profile.name}")
            held, picks = crossfit(by_beta)
            if held:
                c = [f3(ratio, p, [runs[p][r]]) for r, p in enumerate(picks)]
                out.append(_row(ratio, BEST_WINDOW_DSA, "Fig. 3 sweep",
                                held, [], "picks per held-out run: " + ", ".join(
                                    f"{p:.1f}" for p in picks),
                                None if any(x is None for x in c) else np.concatenate(c), groups))
        for label, suffix, source in (("MTT", "mtt", "this page"),
                                      (MTT_LR_CHECK, f"mtt-lr{sc.LR_IMG_CHECK:g}", "this page"),
                                      ("DATM", "datm", "this page"),
                                      ("random real + DATM soft labels", "random-softlabels",
                                       "this page")):
            r = loaded.found.get(f"r{ratio:.2f}_{suffix}")
            if r is not None:
                out.append(_row(ratio, label, source, r.data["accuracies"], r.data["train_loss"],
                                _updates_note(r), piece(f"r{ratio:.2f}_{suffix}"), groups))
        sp = sc.paper_alpha_piece(profile, ratio)
        r = loaded.found.get(sp.name)
        if r is not None:
            out.append(_row(ratio, "SelMatch (paper α, β)", "α page" if sp.page == sc.ALPHA_PAGE
                            else "this page", r.data["accuracies"], r.data["train_loss"],
                            f"α = {ps['alpha']}, β = {ps['beta']}; " + _updates_note(r),
                            piece(sp.name), groups))
        t = {a: v for a, v in alpha_t.get(ratio, {}).items() if a > 0}
        held, picks = crossfit(t)
        if held:
            c = [piece(f"r{ratio:.2f}_a{p:.1f}", r) for r, p in enumerate(picks)]
            out.append(_row(ratio, "SelMatch (best α, cross-fitted)", "α page", held, [],
                            "picks per held-out network: " + ", ".join(f"{p:.1f}" for p in picks)
                            + f"; β = {ps['beta']}",
                            None if any(x is None for x in c) else np.stack(c), groups))
    return out, notes


def _key(ratio: float, beta, run: int) -> tuple:
    return round(ratio, 6), None if beta is None else round(float(beta), 6), int(run)


def _fig3_runs(table, ratio: float) -> dict:
    """{β or None (random): [run indices, in the order _fig3_points lists the accuracies]}."""
    t = table[np.isclose(table["ratio"], ratio)]
    out = {None: list(t[t["beta"].isna()].sort_values("run")["run"])}
    for b, g in t[t["beta"].notna()].groupby("beta"):
        out[float(b)] = list(g.sort_values("run")["run"])
    return out


def _updates_note(r) -> str:
    """How far distillation moved the set: its updates per distilled image and, where the
    results file records it (``selmatch_scale.pixel_stats``), the distilled images' normalised
    pixel std and largest |value| (real images: std ~1, |x| within ~2.5)."""
    u = r.data.get("updates_per_distilled_image")
    if u is None:
        return "not distilled"
    px = (r.data.get("pixels") or {}).get("distilled")
    return f"{u} updates per distilled image" + (
        f"; distilled pixels std {px['std']:.2f}, |x| ≤ {px['absmax']:.1f}" if px else "")


def verdicts(loaded, profile: Profile | None = None) -> list:
    """Random accuracy rises with the ratio (the scale's precondition); per ratio, the control
    (MTT's distillation changes its own random initial images' accuracy, two-sided), then SelMatch
    (paper α, β) against random, the window (paper β) and MTT, all under SelMatch's protocol; DATM
    against the same random images with DATM's soft labels (what distillation adds to DATM's
    labels). The Fig. 3 sweep's DSA rows are not tested against these (another augmentation)."""
    from .. import verdicts as V
    if profile is None:
        profile = loaded.profile()
        if profile is None:
            return []
    table, _ = rows(loaded, profile)
    by = {(r["ratio"], r["row"]): r["accuracies"] for r in table}
    out = [v for v in [sc.random_trend(profile)] if v is not None]
    for ratio in sc.scale_config(profile).ratios:
        m, rnd = by.get((ratio, "MTT")), by.get((ratio, "random"))
        if m and rnd:
            out.append(V.differ(m, rnd, f"at {ratio:.0%}, MTT's distillation changes the accuracy "
                                        f"of its own initial images (control: MTT vs random, the "
                                        f"same images kept real)", effect="MTT minus random"))
        lo = by.get((ratio, MTT_LR_CHECK))
        if m and lo:
            rate = sc.paper_setting(ratio)["lr_img"]
            out.append(V.differ(m, lo, f"at {ratio:.0%}, MTT's accuracy depends on the image "
                                       f"learning rate ({rate:,.0f}, SelMatch's for this ratio, "
                                       f"against {sc.LR_IMG_CHECK:,.0f})",
                                effect=f"lr_img {rate:,.0f} minus {sc.LR_IMG_CHECK:,.0f}"))
        sel = by.get((ratio, "SelMatch (paper α, β)"))
        for other in ("random", "window (paper β)", "MTT"):
            b = by.get((ratio, other))
            if sel and b:
                out.append(V.compare_means(sel, b, f"at {ratio:.0%}, SelMatch (paper α, β) beats "
                                                   f"{other}"))
        d, f = by.get((ratio, "DATM")), by.get((ratio, "random real + DATM soft labels"))
        if d and f:
            out.append(V.compare_means(d, f, f"at {ratio:.0%}, DATM's distillation adds to its soft "
                                             f"labels (DATM beats random real + the same labels)"))
    return out
