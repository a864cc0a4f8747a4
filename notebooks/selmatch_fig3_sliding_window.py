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
# # SelMatch Fig. 3: which window of difficulty should a small subset come from?
#
# Lee & Chung (ICML 2024), Fig. 3: order each CIFAR-10 class from hardest to easiest by C-score,
# take a window of $\mathrm{IPC}$ consecutive images starting at a fraction $\beta$ of the class,
#
# $$
# \mathcal{D}_\text{window}(\beta) = \bigcup_c \operatorname{sorted}_c\big[\lfloor \beta N_c \rfloor,\;
# \lfloor \beta N_c \rfloor + \mathrm{IPC}\big),
# $$
#
# train a network on it, and plot test accuracy against $\beta$, one curve per subset ratio
# (5, 10, 20, 30 % of the training set), with random subsets of the same size as dashed lines.
# The paper's claim: the best window is **interior** (neither the hardest nor the easiest images),
# it **beats random selection**, and it **moves toward harder windows as the subset grows**
# (the paper's best $\beta$ for each ratio is printed in the comparison table below). SelMatch then
# initialises its synthetic set from that window.
# The method is taught in {doc}`../book/selmatch`; what reproduced at which scale, and the choices
# we made where the paper and its code are ambiguous, are in {doc}`../book/repro_selmatch`.
#
# :::{admonition} What this page computes, and at what scale
# :class: note
# The figure draws the committed **`quick`** sweep, a *scale model* of the paper's experiment: the
# first 500 images of each CIFAR-10 class stand in for the class (the test set is the full one), a
# width-32 ConvNet with batch norm stands in for ResNet-18, and every network takes the same number
# of SGD steps. The step budget is chosen so that each subset is seen for about as many epochs as in
# the paper (whose scripts train 1000 epochs at 5 % and scale the epochs down as the subset grows,
# keeping the step count about constant): the table printed below gives the epochs per ratio, ours
# beside the paper's. Why a scale model: an earlier sweep on the full training set at 400 steps per
# network (shown at the end of the page) gave random subsets the *same* accuracy at every ratio, so
# more data did not help and no claim about which data helps could be tested there. With the scale
# model the networks fit their subsets (their final training loss is printed) and random accuracy
# rises with the ratio (a precondition, tested below). Three runs per point allow run-level tests.
# Rerun it with `python -m ddbook reproduce selmatch-fig3 --profile quick` (resumable; two
# processes can share it, see `python -m ddbook sweep-window -h`).
# :::

# %% tags=["parameters"]
import os

profile: str = os.environ.get("DDBOOK_PROFILE", "ci")  # ci | quick | gpu | paper
draw: str = "quick"  # committed profile to draw beside the live run: quick | gpu | paper

# %% tags=["hide-input"]
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

import ddbook
from ddbook import params, plotting, results
from ddbook.figures import committed_or_live, selmatch_fig3 as fig3
from ddbook.reference import confidence, paper_numbers
from ddbook.verdicts import render, summary

P, D = params.page_profiles(globals(), ["profile", "draw"])  # an unknown -p is an error

# %% [markdown]
# The configuration of the sweep drawn (`quick` unless `draw` says otherwise), and what one network
# trains on at each ratio:

# %% tags=["hide-input"]
drawn_config = fig3.sweep_config(D)
print(f"{draw}: {drawn_config.network} width {drawn_config.width}, {drawn_config.steps} SGD steps "
      f"of {drawn_config.batch_size} per network, lr {drawn_config.lr} (cosine), "
      f"{drawn_config.augment.upper()} augmentation, {drawn_config.runs} runs per point, "
      f"β grid step {drawn_config.beta_step}, {len(fig3.sweep_points(drawn_config))} networks")
pd.DataFrame(fig3.budget(drawn_config)).set_index("ratio")

# %% [markdown]
# ## A smoke run at this page's profile
#
# The live cell runs the sweep at this page's profile; at `ci` that is two ratios on 60 images per
# class, a width-8 ConvNet for a few SGD steps (numbers meaningless: it proves the code runs). Each
# point is one network, trained and tested once, and its results file is written as soon as it
# finishes, so an interrupted sweep picks up where it stopped.

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Smoke run at this page's profile (at ci: numbers meaningless)", "code_prompt_hide": "Hide the smoke run"}
ds = ddbook.load_dataset("cifar10")
with results.Timer() as t:
    n_new = fig3.run_sweep(ds, P)
live = fig3.load(P)
print(f"{n_new} networks trained in {t.seconds:.0f} s; {live.describe(P.name)}")
fig3.table(live.found).pivot_table(index="beta", columns="ratio", values="accuracy",
                                   dropna=False).round(3)

# %% [markdown]
# ## The committed sweep
#
# The figure draws the results committed with the book at the profile `draw` names. Missing points
# are counted, never filled in; a point made from another configuration is refused as stale.

# %% tags=["hide-input"]
drawn = fig3.load(D)
found, shown_label = committed_or_live(drawn, draw, live.found, P.name)
provisional = shown_label == draw and bool(drawn.missing)
if provisional:
    print(f"PROVISIONAL: {len(drawn.missing)} of {len(drawn.missing) + len(drawn.found)} points "
          f"are still missing; the figure and the verdicts use what is there")
shown = fig3.table(found)

# %% tags=["hide-input"]
peaks = paper_numbers(paper="SelMatch", where="Fig. 3*", dataset="CIFAR-10")
randoms = paper_numbers(paper="SelMatch", where="Table 1", dataset="CIFAR-10", method="Random")
glue("fig3-paper-confidence", confidence(peaks + randoms), display=False)

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Top: test accuracy of a network trained on the sliding-window subset against the window start β, per subset ratio (mean ± std over runs; circles mark the best β; dashed lines are random subsets of the same size). Ours in colour (one colour per ratio), at the profile named on the axis. Bottom: the paper's best windows (black stars, labelled with the ratio) and its random baselines (grey dashed lines, labelled), ResNet-18 on CIFAR-10, as the paper reports them; how far to trust each: {glue:text}`fig3-paper-confidence`.", "name": "fig-selmatch-fig3"}, "image": {"alt": "Two stacked charts. Top: our test accuracy against the window start beta, one coloured line with a shaded band per subset ratio, dashed lines for random subsets and the best beta circled. Bottom: the paper's best window per ratio as black stars labelled with the ratio, and its random baselines as labelled grey dashed lines."}}
fig = plotting.window_curves(shown, peaks, randoms, label=shown_label)

# %% [markdown]
# Do the networks fit their subsets, and does more random data help? The final training loss (mean
# over the networks of each ratio) and the random-subset accuracy per ratio:

# %% tags=["hide-input"]
fit = shown.groupby("ratio").agg(**{"networks": ("accuracy", "size"),
                                    "final training loss (mean)": ("train_loss", "mean")})
fit["random-subset accuracy (%)"] = 100 * shown[shown["beta"].isna()].groupby("ratio")[
    "accuracy"].mean()
fit.index = [f"{r:.0%}" for r in fit.index]
fit.round(3)

# %% [markdown]
# ## How this compares
#
# Best window per subset ratio, ours (at the profile drawn; the best β here is the descriptive pick
# on the mean over runs) against the paper's (β from SelMatch's scripts, accuracy from its Table 1;
# ResNet-18, 5 runs).

# %% tags=["hide-input"]
paper = {float(r["subset_ratio"].rstrip("%")) / 100: r for r in peaks}
paper_rnd = {float(r["subset_ratio"].rstrip("%")) / 100: r["mean"] for r in randoms}
pd.DataFrame([{
    "ratio": f"{ratio:.0%}", "best β (ours)": s["best_beta"],
    "best window acc. (ours)": f"{100 * s['best_mean']:.1f} ± {100 * s['best_std']:.1f}",
    "random acc. (ours)": f"{100 * s['random_mean']:.1f}",
    "best β (paper)": float(paper[ratio]["method"].split("=")[-1]) if ratio in paper else None,
    "best window acc. (paper)": paper[ratio]["mean"] if ratio in paper else None,
    "random acc. (paper)": paper_rnd.get(ratio)}
    for ratio, s in fig3.summarise(shown).items()]).set_index("ratio")

# %% [markdown]
# What differs from the paper at `quick`, and why:
#
# - **data**: the first 500 images of each class (a tenth of CIFAR-10) instead of all 5,000, so that
#   a 2-core CPU can give every subset the paper's number of epochs (the table above); decoded from
#   JPEG, not the PNG-exact arrays;
# - **network**: ConvNet-3 of width 32 with batch norm instead of ResNet-18 (BN): a ResNet-18 trains
#   at about 16 images/s on this CPU;
# - **runs**: 3 per point instead of 5.
#
# The β grid, the C-score order, the window arithmetic ($\lfloor\beta N_c\rfloor$; the released code
# reads β differently, see the section "The window start β" of
# [What this reproduction changes](../book/deviations.md)) and the DSA augmentation are the paper's.
#
# ## Verdict
#
# Each claim is tested on the run-level accuracies, never on the sign of a difference. At each ratio:
# the window at the paper's $\beta^\star$, fixed before looking at our results (SelMatch's scripts),
# against random subsets (Welch's t); the best window *chosen on the other runs* and scored on the
# held-out one (a best-of-ten pick on noise would otherwise look like an effect); the best interior
# window against the better end of the grid. Across ratios: the random accuracy rising with the
# ratio (the precondition), and the best $\beta$ moving toward harder windows, as a bootstrap over
# runs of the slope of the per-ratio best $\beta$. Note that the paper's own best window is also a
# pick on test accuracy, among about ten windows, from 5 runs.

# %% tags=["hide-input"]
v = fig3.verdicts(found)
render(v)

# %% [markdown]
# ## An earlier diagnostic: the full training set at 400 steps
#
# Before the scale model, the sweep ran on all 5,000 images per class with 400 SGD steps per network
# (2 runs per point). Its random-subset accuracies, and its test of the precondition, show why it
# could not test the paper's claims: more random data did not make a better network at that
# budget. It is kept as a diagnostic and never mixed into the figure above.

# %% tags=["hide-input"]
earlier = fig3.load_earlier(D)
if earlier is None or not earlier.found:
    print(f"no earlier sweep at {draw}")
else:
    e = fig3.table(earlier.found)
    print(earlier.describe(f"{draw}, full data, {fig3.EARLIER[D.name].steps} steps"))
    print("random-subset accuracy per ratio: " + " / ".join(
        f"{100 * a:.1f} %" for a in e[e["beta"].isna()].groupby("ratio")["accuracy"].mean()))
    display(render([x for x in fig3.verdicts(earlier.found) if x.claim.startswith("precondition")]))

# %% [markdown]
# ## Summary
#
# The paragraph below is generated from the verdict table above (the sweep drawn, at the scale
# stated at the top of the page); when the sweep is incomplete it says how many points are missing.

# %% tags=["hide-input"]
Markdown(("**Provisional** (the sweep is incomplete: "
          f"{len(drawn.missing)} of {len(drawn.missing) + len(drawn.found)} points missing). "
          if provisional else "") + f"At `{shown_label}`: " + summary(v)
         + ("" if v else " No ratio has every window and its random subset for a run yet."))
