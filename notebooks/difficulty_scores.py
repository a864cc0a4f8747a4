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
# # Difficulty scores: which CIFAR-10 images are hard?
#
# SelMatch (Lee & Chung, ICML 2024, §3) builds its synthetic set from a *window* of training images
# ordered from hardest to easiest within each class.
# The order comes from a per-example **difficulty score**.
# For CIFAR-10 and CIFAR-100 SelMatch uses the **C-score** of Jiang et al. (2021):
# the expected accuracy on an example of a network trained on random subsets that leave it out,
#
# $$
# C(x, y) = \mathbb{E}_{D \not\ni (x, y)} \big[\, \Pr(f_D(x) = y) \,\big],
# $$
#
# so a low C-score marks an atypical, hard example.
# For Tiny ImageNet it uses **forgetting counts** (Toneva et al., 2019):
# how often an example flips from correctly to incorrectly classified during training,
# where a high count marks a hard example.
#
# This page loads both published score files, maps them onto our copy of CIFAR-10,
# and shows what the two ends of each class look like. The chapter {doc}`../book/difficulty`
# explains what these scores measure and how the book uses them.
#
# :::{admonition} What this page computes, and at what scale
# :class: note
# The first half reads the **published** scores (`../shared/data/scores`), so it is the same at
# every profile and takes a few seconds (plus about 20 s once per machine to decode CIFAR-10).
# The scores are the authors' numbers, not ours; only the mapping onto the JPEG copy of CIFAR-10
# and the per-class correlations are computed here. The second half computes our own EL2N and
# forgetting scores: live at this page's profile (a smoke run at `ci`), and from the committed
# `quick` run (its configuration is printed where it is drawn).
# :::

# %% tags=["parameters"]
import os

profile: str = os.environ.get("DDBOOK_PROFILE", "ci")  # ci | quick | gpu | paper
score: str = "cscore"  # published score to order by: cscore | forgetting
n_show: int = 8  # images shown per class at each end (1–16)

# %% tags=["hide-input"]
import ddbook
from ddbook import params, plotting, results
from ddbook.figures import difficulty_scores as page

P, _ = params.page_profiles(globals(), ["profile", "score", "n_show"])  # an unknown -p is an error
score = params.check("score", score, str, choices=["cscore", "forgetting"])
n_show = params.check("n_show", n_show, int, low=1, high=16)
print(f"showing the {n_show} easiest and {n_show} hardest training images "
      f"of each class by {score}")

# %% [markdown]
# ## Loading the data and the scores
#
# The JPEG archive lists each class's images by their rank within the class in the original CIFAR
# order; the score files are in the original order and carry its label sequence.
# `load_published_scores` joins the two (and refuses a file whose length or class counts differ).

# %% tags=["hide-input"]
from pathlib import Path

with results.Timer() as load_time:
    ds = ddbook.load_dataset("cifar10")
    chosen = ddbook.load_published_scores(ds, score)
    cscore = ddbook.load_published_scores(ds, "cscore")
    forgetting = ddbook.load_published_scores(ds, "forgetting")
print(f"{len(ds.train):,} training images of {ds.num_classes} classes "
      f"(from {Path(ds.source).name})")
print(f"{chosen.name}: {chosen.source}; the hard end is the {chosen.hard} end")

# %% [markdown]
# ## The easiest and the hardest images of each class

# %% tags=["hide-input"]
order = {c: chosen.hardest_first(ds.train, c) for c in range(ds.num_classes)}


def extremes(which: str) -> list:
    """One row of ``n_show`` images per class: the easiest (easiest first) or the hardest."""
    pick = {"easiest": lambda o: o[-n_show:].flip(0), "hardest": lambda o: o[:n_show]}[which]
    return [ds.train.images[pick(order[c]).tolist()] for c in range(ds.num_classes)]


# %% tags=["hide-input"] mystnb={"figure": {"caption": "The easiest training images of each CIFAR-10 class under the chosen published score (easiest first). Easy images are canonical views on plain backgrounds.", "name": "fig-difficulty-easiest"}, "image": {"alt": "A grid of small CIFAR-10 photographs, one row per class, showing the easiest images of each class: centred, typical views on plain backgrounds."}}
fig = plotting.image_grid(extremes("easiest"), row_labels=ds.classes,
                          col_groups=[("easiest", n_show)])

# %% tags=["hide-input"] mystnb={"figure": {"caption": "The hardest training images of each CIFAR-10 class under the same score (hardest first): unusual views, crops, clutter, and the odd mislabelled image.", "name": "fig-difficulty-hardest"}, "image": {"alt": "A grid of small CIFAR-10 photographs, one row per class, showing the hardest images of each class: unusual views, crops, cluttered scenes and some mislabelled images."}}
fig = plotting.image_grid(extremes("hardest"), row_labels=ds.classes,
                          col_groups=[("hardest", n_show)])

# %% [markdown]
# ## How the scores are distributed within each class
#
# C-scores pile up near 1: most CIFAR-10 images are typical, and the hard tail is thin.
# How thin differs between classes (cats and birds have longer tails than cars and trucks),
# which is one reason SelMatch picks its window per class rather than globally.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Distribution of the published C-scores within each CIFAR-10 class (median marked). Low is hard.", "name": "fig-cscore-distributions"}, "image": {"alt": "Horizontal violin plots of the published C-scores, one per CIFAR-10 class; most mass sits near 1 with a thin tail toward low (hard) scores."}}
fig = plotting.score_distributions(
    cscore.values, ds.train.labels, ds.classes, "C-score", hard_side="low")

# %% [markdown]
# ## Do the two published scores agree?
#
# If both files are mapped onto the same images correctly, a hard example by one score should
# tend to be hard by the other: C-score (low = hard) and forgetting (high = hard) should be
# **negatively** correlated within every class. A wrong mapping would give correlations near zero.

# %% tags=["hide-input"]
import pandas as pd

page.run(P, only="published-agreement")     # computed once per profile, then read back
agreement = page.load(P).found["published-agreement"]
rho = agreement.data["spearman_per_class"]
table = pd.DataFrame({"Spearman ρ (C-score vs forgetting)": rho}).round(3)
table.loc["mean"] = table.mean().round(3)
table

# %% [markdown]
# ## Our own scores: EL2N and forgetting
#
# Published scores exist for CIFAR only; SelMatch needs a score for any dataset, so the library
# also computes two from training runs (`ddbook.scoring`):
# **EL2N** (Paul et al., 2021), the error norm $\lVert \mathrm{softmax}(f(x)) - e_y \rVert_2$
# early in training, and **forgetting events** (Toneva et al., 2019).
# Both are high for hard examples, so against the C-score (low = hard) a correct implementation on
# correctly mapped data gives clearly **negative** within-class correlations; a wrong mapping gives
# about zero. One deviation, ours: forgetting is counted on one clean pass over the training set
# after every epoch, not on the augmented mini-batch that trained on each image.
#
# The live cell below computes both at this page's profile; at `ci` that is 20 images per class,
# two runs of three epochs of a width-16 ConvNet, so its correlations are noise (the cell is
# folded away: open it to see the smoke run).

# %% tags=["hide-cell"] mystnb={"code_prompt_show": "Smoke run at this page's profile (at ci: numbers meaningless)", "code_prompt_hide": "Hide the smoke run"}
from ddbook import scoring

run_config = scoring.score_run_config(P.name)
with results.Timer() as score_time:
    ours = scoring.compute_scores(ds, run_config)
live_labels = ds.train.labels[ours.indices]
live_cscore = cscore.values[ours.indices]
live = {name: scoring.spearman_per_class(values, live_cscore, live_labels)
        for name, values in (("EL2N", ours.el2n), ("forgetting", ours.forgetting))}
print(f"profile {P.name!r}: {len(ours.indices):,} images, {run_config.runs} runs of "
      f"{run_config.epochs} epochs of {run_config.network} (width {run_config.width}) "
      f"in {score_time.seconds:.0f} s")
for name, rho in live.items():
    print(f"  {name:10s} mean within-class Spearman ρ with C-score: "
          f"{sum(rho.values()) / len(rho):+.3f}")

# %% [markdown]
# The committed `quick` run (all 50,000 training images; its settings are printed below) is
# loaded from `results/quick/`; if it is missing, or was made with another configuration, the
# page says so instead of drawing it.

# %% tags=["hide-input"]
quick_loaded = page.load(ddbook.get_profile("quick"))
quick = quick_loaded.found.get("our-scores")
if quick is None:
    print("no current committed quick result for our scores "
          + ("(it was made from another configuration) " if "our-scores" in quick_loaded.stale
             else "")
          + "- run `python -m ddbook scores --profile quick`")
else:
    prov = quick.provenance
    cfg = prov["config"]
    print(f"quick: {quick.data['n_scored']:,} images, {cfg['runs']} runs of {cfg['epochs']} epochs "
          f"of {cfg['network']} (width {cfg['width']}), EL2N after epoch {cfg['el2n_epoch']}")
    print(f"       git {prov['sha'][:10]}, {prov['device']}, {prov['wall_time_s'] / 60:.0f} min; "
          f"the training accuracy of each run: "
          + ", ".join(f"{a:.3f}" for a in quick.data["train_accuracy_per_run"]))
    for name, v in quick.data["spearman_vs_cscore"].items():
        print(f"       {name:10s} mean within-class Spearman ρ with C-score: {v['mean']:+.3f}")

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Within-class Spearman correlation of our EL2N and forgetting scores with the published C-scores, per CIFAR-10 class. Negative means agreement (C-score is low for hard images). Bars from the committed quick run when present (else from the live run, at the profile named in the legend).", "name": "fig-our-scores-vs-cscore"}, "image": {"alt": "Grouped bar chart of the within-class Spearman correlation of our EL2N and forgetting scores with the C-score, one group of bars per CIFAR-10 class, the legend above the axes."}}
if quick is not None:
    series = {f"{k} (quick)": v["per_class"]
              for k, v in quick.data["spearman_vs_cscore"].items()}
else:
    series = {f"{k} ({P.name})": {ds.classes[c]: r for c, r in v.items()}
              for k, v in live.items()}
fig = plotting.correlation_bars(series, ds.classes)

# %% [markdown]
# ## Verdict
#
# Do the scores rank the images alike? Within each class, a negative Spearman ρ between a score and
# the C-score means agreement; the test is a one-sample t over the ten classes' ρ (the classes are
# the replicates here, not training runs), for the two published files and for each of our scores
# (from the committed `quick` run).

# %% tags=["hide-input"]
from IPython.display import Markdown

from ddbook.verdicts import render, summary

judged = {"published-agreement": agreement, **({"our-scores": quick} if quick is not None else {})}
v = page.verdicts(judged)
render(v)

# %% [markdown]
# ## Summary
#
# - The published scores map onto the JPEG copy of CIFAR-10 through each image's within-class rank;
#   the mapping is checked for length and class counts.
# - Whether the two independent score files, and our EL2N and forgetting scores computed from
#   scratch, agree with the published C-scores is the verdict above; agreement is the evidence that
#   the score mapping onto the JPEG images is right. In words (generated from the verdict table):

# %% tags=["hide-input"]
Markdown(summary(v))

# %% [markdown]
# - Easy images are prototypes; hard images are the unusual, cluttered and sometimes mislabelled ones.
#   SelMatch's observation is that a small synthetic set should *not* be built from either extreme
#   alone: its sliding window picks a band whose position depends on the set's size.
