"""SelMatch Fig. 4(a): test accuracy against the distillation portion α, per subset ratio.

Each piece is one SelMatch set of the scale model (:mod:`ddbook.selmatch_scale`): the window at
the paper's β for that ratio, its easier ⌊α·IPC⌋ images per class distilled and the rest kept
real (α = 0: the window alone; α = 1: all distilled), evaluated by ``eval_runs`` networks.
The paper's figure is on CIFAR-100; this one is CIFAR-10 at the ratios of its scripts, with the
scripts' chosen α per ratio (0.6 / 0.2 / 0.1) drawn as markers.
"""
from __future__ import annotations

from ..profiles import Profile
from .. import selmatch_scale as sc

NAME = "selmatch-alpha"
NOTEBOOK = "selmatch_fig4a_alpha"
TITLE = "SelMatch Fig. 4(a): the distillation portion alpha"
UPDATES_TARGET = {"ci": 1, "quick": 500, "gpu": 500, "paper": 500}   # per distilled image

__all__ = ["NAME", "NOTEBOOK", "TITLE", "plan", "run", "load", "verdicts", "alpha_table",
           "points", "proofs", "control", "draw", "complete_rows", "UPDATES_TARGET"]


def plan(profile: Profile) -> list:
    """Every (ratio, α) of the profile's grid, at the paper's β for the ratio."""
    return sc.alpha_plan(profile)


def run(profile: Profile, device=None, only=None) -> list:
    """Run every missing or stale piece (resumable); ``only``: pieces whose name contains it."""
    return sc.run_pieces(profile, plan(profile), device, only)


def load(profile: Profile) -> sc.Loaded:
    return sc.load_pieces(profile, plan(profile))


def points(loaded):
    """One row per (ratio, α, evaluation network): accuracy, final training loss, updates per
    distilled image, piece. A DataFrame (empty with its columns when nothing is found)."""
    import pandas as pd
    rows = []
    for name, r in loaded.found.items():
        d = r.data
        for k, (acc, loss) in enumerate(zip(d["accuracies"], d["train_loss"])):
            rows.append({"ratio": d["ratio"], "alpha": d["alpha"], "network": k, "accuracy": acc,
                         "train_loss": loss, "updates": d["updates_per_distilled_image"],
                         "piece": name})
    cols = ["ratio", "alpha", "network", "accuracy", "train_loss", "updates", "piece"]
    return pd.DataFrame(rows, columns=cols)


def alpha_table(loaded) -> dict:
    """{ratio: {α: [accuracy of each evaluation network]}} of the pieces found."""
    out: dict = {}
    for r in loaded.found.values():
        out.setdefault(r.data["ratio"], {})[r.data["alpha"]] = list(r.data["accuracies"])
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def proofs(loaded) -> dict:
    """The scale's proofs that the mechanism acts, from the pieces found: the fewest updates per
    distilled image over the distilling pieces (and the target), the largest final training loss
    of any evaluation network, per ratio."""
    pts = points(loaded)
    prof = loaded.profile()
    dist = pts[pts["alpha"] > 0]
    out = {"profile": prof and prof.name,
           "target_updates": UPDATES_TARGET.get(prof.name) if prof else None,
           "min_updates": int(dist["updates"].min()) if len(dist) else None,
           "max_train_loss": float(pts["train_loss"].max()) if len(pts) else None,
           "per_ratio": {}}
    for ratio, g in pts.groupby("ratio"):
        d = g[g["alpha"] > 0]
        out["per_ratio"][float(ratio)] = {
            "min_updates": int(d["updates"].min()) if len(d) else None,
            "max_train_loss": float(g["train_loss"].max()),
            "mean_train_loss": float(g["train_loss"].mean())}
    out["updates_ok"] = (out["min_updates"] is not None and out["target_updates"] is not None
                         and out["min_updates"] >= out["target_updates"])
    return out


def control(loaded):
    """The control: at the smallest ratio, α = 1 (all distilled) against α = 0 (the window
    alone). A Verdict whose claim is "they differ" (either sign): supported when the Welch
    interval of mean(α=1) − mean(α=0) excludes 0; None when either is missing."""
    from .. import verdicts as V
    table = alpha_table(loaded)
    if not table:
        return None
    ratio = min(table)
    a1, a0 = table[ratio].get(1.0), table[ratio].get(0.0)
    if a1 is None or a0 is None:
        return None
    return V.differ(a1, a0, f"control at {ratio:.0%}: all distilled (α = 1) and the window "
                    f"alone (α = 0) differ by more than the run-to-run noise",
                    effect="α 1 minus α 0",
                    note="runs are evaluation networks of one distilled set each, so the noise "
                         "of the distillation itself is not in the interval")


def complete_rows(table: dict, alphas) -> dict:
    """The ratios of ``table`` ({ratio: {α: accuracies}}) that hold every α of the grid ``alphas``,
    each with the same number of networks: the only rows whose best α means anything (a row
    missing its larger α would have its argmax pulled down by what has not run yet)."""
    grid = {round(a, 6) for a in alphas}
    return {r: t for r, t in table.items() if {round(a, 6) for a in t} == grid
            and len({len(v) for v in t.values()}) == 1}


def verdicts(loaded) -> list:
    """The precondition (random-subset accuracy rises with the ratio, from the Fig. 3 sweep), the
    control, the paper's claim "the best α falls as the subset grows" (argmax trend over the
    ratios whose α grid is complete, bootstrap over networks; not judged before two are), and, at
    each ratio, the best α (cross-fitted over networks) against the window alone."""
    from .. import verdicts as V
    prof = loaded.profile()
    out = [v for v in [sc.random_trend(prof) if prof else None] if v is not None]
    c = control(loaded)
    if c is not None:
        out.append(c)
    table = alpha_table(loaded)
    full = complete_rows(table, sc.scale_config(prof).alphas) if prof else {}
    if len(full) >= 2:
        out.append(V.argmax_trend(full, "the best α falls as the subset grows (Fig. 4a)",
                                  direction="decreasing", units="α",
                                  per="unit of subset ratio"))
    for ratio, t in table.items():
        rest = {a: v for a, v in t.items() if a > 0}
        if 0.0 in t and len(rest) >= 1 and len({len(v) for v in rest.values()}) == 1:
            out.append(V.crossfit_best(
                rest, t[0.0], f"at {ratio:.0%}, distilling part of the window (best α, "
                f"cross-fitted) beats the window alone (α = 0)", paired=False))
    return out


def draw(loaded, ax=None, label: str = ""):
    """Accuracy against α, one line per ratio (mean ± std over networks), the best α circled, the
    paper's chosen α per ratio (CIFAR-10 scripts) as a triangle above the axis; returns the figure."""
    import matplotlib.pyplot as plt
    import numpy as np
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.2))
    table = alpha_table(loaded)
    for i, (ratio, t) in enumerate(table.items()):
        color = f"C{i}"
        a = np.array(list(t))
        m = np.array([100 * np.mean(v) for v in t.values()])
        s = np.array([100 * np.std(v) for v in t.values()])
        ax.errorbar(a, m, yerr=s, color=color, marker=".", capsize=3,
                    label=f"{ratio:.0%} (IPC {sc.ipc_of(sc.scale_config(loaded.profile()), ratio)})")
        best = int(np.argmax(m))
        ax.plot(a[best], m[best], "o", ms=12, mfc="none", mec=color)
        pa = sc.paper_setting(ratio)["alpha"]   # a marker on the axis: no accuracy is implied
        ax.plot(pa, 0.03 + 0.04 * i, "v", ms=10, color=color, mec="k",
                transform=ax.get_xaxis_transform(), label=f"paper's α at {ratio:.0%}: {pa}")
    ax.set_xlabel("distillation portion α (0: the window alone; 1: all distilled)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"SelMatch α ablation, CIFAR-10 scale model{(' — ' + label) if label else ''}")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the data
    return ax.figure
