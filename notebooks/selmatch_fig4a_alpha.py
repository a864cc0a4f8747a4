# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # SelMatch Fig. 4(a): how much of the window should be distilled?
#
# Lee & Chung (ICML 2024) initialise the synthetic set with a window of real images of suitable
# difficulty (the previous page), then split each class's window: the harder
# $\lfloor (1-\alpha)\,\mathrm{IPC} \rfloor$ images stay real and frozen ($\mathcal{D}_\text{select}$),
# the easier $\lfloor \alpha\,\mathrm{IPC} \rfloor$ are distilled by trajectory matching
# ($\mathcal{D}_\text{distill}$); the student unroll sees both,
#
# $$
# \min_{\mathcal{D}_\text{distill}} \;
# \mathcal{L}\big(\mathcal{D}_\text{select} \cup \mathcal{D}_\text{distill},\, \mathcal{D}_\text{real}\big).
# $$
#
# $\alpha = 0$ is the window selection alone; $\alpha = 1$ distils every image (MTT from a window
# initialisation). Fig. 4(a) of the paper varies $\alpha$ at several IPCs **on CIFAR-100** and
# claims that **the best $\alpha$ falls as the subset grows**: small sets profit from distillation,
# large ones from keeping real images. The scripts' choices for CIFAR-10 follow the same trend:
# $\alpha$ = {glue:text}`selmatch-script-alpha` at {glue:text}`selmatch-script-ratios` % (settings
# read from the scripts by `ddbook.presets`, not accuracies).
# The method is taught in {doc}`../book/selmatch`; what reproduced at which scale, and the choices
# we made where the paper and its code are ambiguous, are in {doc}`../book/repro_selmatch`.
#
# :::{admonition} What this page computes, and at what scale
# :class: note
# This page is **CIFAR-10** at the ratios of SelMatch's CIFAR-10 scripts, not the paper's CIFAR-100
# figure, whose numbers are not available to us (only its caption is); the markers are the
# scripts' chosen $\alpha$, not accuracies. The live cell runs a `ci` smoke test (seconds,
# numbers meaningless). The figure draws the committed **`quick`** runs of a *scale model*, built
# so that distillation acts at all on a 2-core CPU: the universe is the first 500 images of each
# class (C-score order kept), inside which 5 / 10 / 20 % are IPC 25 / 50 / 100; experts,
# windows and distillation all live inside it, and the full 10,000-image test set judges every
# set. Every distilled image is updated 500 times (the page checks this), and each set is
# evaluated by 3 ConvNet-BN networks of 2,000 SGD steps. Rerun it with
# `python -m ddbook reproduce selmatch-alpha --profile quick` (resumable, one results file per
# set).
# :::

# %% tags=["parameters"]
import os

profile: str = os.environ.get("DDBOOK_PROFILE", "ci")  # ci | quick | gpu | paper
draw: str = "quick"  # committed profile to draw beside the live run: quick | gpu | paper

# %%
import pandas as pd

import ddbook
from ddbook import params, selmatch_scale as sc, verdicts as V
from ddbook.figures import drawn_or_live, selmatch_fig4a_alpha as selmatch_alpha
from ddbook.results import Timer
from myst_nb import glue

P, D = params.page_profiles(globals(), ["profile", "draw"])  # an unknown -p is an error
script_ratios = (0.05, 0.1, 0.2, 0.3)
glue("selmatch-script-alpha", " / ".join(f"{sc.paper_setting(r)['alpha']:g}" for r in script_ratios),
     display=False)
glue("selmatch-script-ratios", " / ".join(f"{100 * r:g}" for r in script_ratios), display=False)
for prof in (P, D):
    plan = selmatch_alpha.plan(prof)
    print(f"\nthe scale at {prof.name} ({len(plan)} sets):")
    for line in sc.describe_scale(prof):
        print(f"  - {line}")
    print("  - the paper's β and chosen α per ratio (SelMatch's CIFAR-10 scripts): " + ", ".join(
        f"{r:.0%}: β {sc.paper_setting(r)['beta']}, α {sc.paper_setting(r)['alpha']}"
        for r in sc.scale_config(prof).ratios))

# %% [markdown]
# ## The live smoke run at this page's profile
#
# Each (ratio, $\alpha$) is one set: the window at the paper's $\beta$, partly distilled, then
# evaluated; its results file is `results/<profile>/selmatch_alpha/r<ratio>_a<alpha>.json`
# (with the evaluation networks' per-test-example correctness beside it, as packed bits).
# At `ci` this only proves the code paths.

# %% tags=["hide-output"]
with Timer() as t:
    selmatch_alpha.run(P)
live = selmatch_alpha.load(P)
print(f"{len(live.found)} sets present, {len(live.missing)} missing, {t.seconds:.0f} s")
selmatch_alpha.points(live).groupby(["ratio", "alpha"])[["accuracy", "train_loss"]].mean().round(3)

# %% [markdown]
# ## The committed runs
#
# The figure draws the runs committed at `draw` (normally `quick`). A set that is missing or was
# made from another configuration is listed, never filled in.

# %%
drawn = selmatch_alpha.load(D)
shown, shown_label = drawn_or_live(drawn, live, P, D, "figure and tables")

cost = sc.planned_cost(D)
if cost is None:
    print(f"no calibration run at {D.name}: " + ("each set's cost as it ran is in the table below"
                                                 if drawn.found else
                                                 "the plan's cost is not measured yet"))
else:
    print(f"measured cost per set at {D.name} (from its calibration run):")
    display(pd.DataFrame(cost).round(2).set_index("ratio"))
    print(f"the plan: {sum(c['ratio_hours'] for c in cost):.1f} process-hours (both pages)")
if drawn.found:
    display(pd.DataFrame(sc.measured_cost(drawn)).round(2).set_index("piece"))

# %% mystnb={"figure": {"caption": "Test accuracy against the distillation portion α (α = 0: the window alone; α = 1: every image distilled), one line per subset ratio of the scale model, mean ± std over the evaluation networks of each set; open circles: the best α per ratio; triangles above the axis: the α SelMatch's CIFAR-10 scripts chose for that ratio (a setting, not an accuracy). The paper's own Fig. 4(a) is on CIFAR-100 and is not redrawn here.", "name": "fig-selmatch-alpha"}, "image": {"alt": "Line chart of test accuracy against the distillation portion alpha from 0 to 1, one coloured line with error bars per subset ratio, the best alpha of each circled, and triangles near the bottom marking the alpha SelMatch's scripts chose for each ratio."}}
fig = selmatch_alpha.draw(shown, label=shown_label)

# %% [markdown]
# ## The α table
#
# Mean ± std (%) over the evaluation networks of each set, and the best $\alpha$ per ratio
# (by mean; the verdicts below cross-fit that choice instead of trusting it).

# %%
table = selmatch_alpha.alpha_table(shown)
rows = []
for ratio, t in table.items():
    row = {"ratio": f"{ratio:.0%}"}
    for a, accs in t.items():
        row[f"α {a:.1f}"] = f"{100 * pd.Series(accs).mean():.1f} ± {100 * pd.Series(accs).std(ddof=0):.1f}"
    row["best α (ours)"] = max(t, key=lambda a: sum(t[a]) / len(t[a]))
    row["chosen α (paper's scripts)"] = sc.paper_setting(ratio)["alpha"]
    rows.append(row)
pd.DataFrame(rows).set_index("ratio") if rows else "no sets to show"

# %% [markdown]
# ## Does the scale exercise the mechanism? The three proofs
#
# 1. **Updates per distilled image**: every distilled image must take part in (and be moved by)
#    at least 500 distillation iterations at `quick` (the paper: thousands). Below: the fewest
#    over every distilling set.
# 2. **The evaluation networks fit their training sets** (their final training loss), and
#    **random-subset accuracy rises with the ratio** (from the Fig. 3 sweep's random networks at
#    this scale): otherwise the ratio axis would mean nothing.
# 3. **The control**: at the smallest ratio, $\alpha = 1$ and $\alpha = 0$ must differ by more than
#    the run-to-run noise. If they do not, the scale cannot test the paper's claim, and the page
#    says so instead of drawing a conclusion.

# %%
proof = selmatch_alpha.proofs(shown)
print(f"1. fewest updates per distilled image: {proof['min_updates']} (target at "
      f"{proof['profile']}: {proof['target_updates']}): "
      + ("met" if proof["updates_ok"] else "NOT met"))
print(f"2. largest final training loss of any evaluation network: {proof['max_train_loss']:.3f}")
for ratio, p in proof["per_ratio"].items():
    print(f"   {ratio:.0%}: mean final training loss {p['mean_train_loss']:.3f}, largest "
          f"{p['max_train_loss']:.3f}, fewest updates per distilled image {p['min_updates']}")
prof_shown = ddbook.get_profile(proof["profile"]) if proof["profile"] else P
rnd = sc.random_by_ratio(prof_shown)
print("   random-subset accuracy by ratio (Fig. 3 sweep): " + (", ".join(
    f"{r:.0%}: {100 * sum(v) / len(v):.1f} % ({len(v)} networks)" for r, v in rnd.items())
    or f"not available at {prof_shown.name}: {sc.fig3_rows(prof_shown)[2] or 'the sweep is missing'}"))
ctrl = selmatch_alpha.control(shown)
if ctrl is None:
    print("3. control: α = 0 or α = 1 is missing at the smallest ratio: not testable yet")
else:
    print("3. " + ctrl.sentence())
    if ctrl.outcome != V.SUPPORTED:
        print("   => at this scale α = 1 and α = 0 are not distinguishable from noise: THE SCALE "
              "CANNOT TEST THE PAPER'S CLAIM about α, and the verdicts below are not evidence "
              "either way.")

# %% [markdown]
# ## Verdicts
#
# Each claim is tested on the run-level numbers drawn above (the evaluation networks of each set;
# the noise of the distillation itself, one run per set, is not in the intervals). The α trend is
# a bootstrap over networks of the slope of the per-ratio best α; with three ratios and three
# networks it may well be inconclusive.

# %%
verdict_list = selmatch_alpha.verdicts(shown)
V.render(verdict_list)

# %% [markdown]
# What differs from the paper, and why:
#
# - **dataset and figure**: CIFAR-10 at the CIFAR-10 scripts' ratios (5 / 10 / 20 %), not the
#   paper's CIFAR-100 figure; 30 % is left out for cost (1,500 images per set: it would nearly
#   double the plan);
# - **the scale model**: a 500-per-class universe instead of 5,000, the full test set; windows
#   start at $\lfloor\beta\cdot 500\rfloor$ with the paper's $\beta$ per ratio;
# - **experts**: 8 of 40 epochs of a width-32 ConvNet-BN, trained without augmentation as
#   SelMatch's `buffer.py` does (its `aug=True` quirk, copied on purpose), instead of 100 of 100
#   epochs at width 128; start epochs in $[0, 32)$ (80 % of the trajectory, as the paper's 80 of 100);
# - **distillation**: 500 iterations of an unroll of $N = 10$ steps that passes once over the
#   whole set (batch $n/10$), so every distilled image is updated in every iteration, instead of
#   10,000 iterations of $N = 55$ steps of 125; $\mathrm{lr_{img}}$, $\alpha_0 = 0.001$ and
#   $\mathrm{lr_{lr}}$ are the scripts' — including, at 20 %, $\mathrm{lr_{img}} = 10{,}000$,
#   ten times the 5 % and 10 % scripts' rate, which SelMatch set for distilling 10 % of a set
#   ($\alpha = 0.1$) and which is applied here to every $\alpha$ up to 1, settings the paper never
#   ran at that ratio. Read the 20 % curve's right end with that in mind: at $\alpha = 1$ every
#   image of the set moves at that rate and none stays real;
# - **evaluation**: 3 ConvNet-BN networks (width 32) of 2,000 SGD steps of 128, lr 0.1 cosine, the
#   combined augmentation (crop + flip on the real images, per-image DSA on the distilled ones),
#   instead of 5 ResNet-18s of about 20,000 steps; the final network is read, never the best
#   checkpoint;
# - **noise**: one distillation per (ratio, $\alpha$); the ± and the intervals are over evaluation
#   networks only.
#
# ## Summary

# %%
print(V.summary(verdict_list))
