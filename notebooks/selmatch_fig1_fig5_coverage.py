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
# # SelMatch Fig. 1 and Fig. 5: the coverage gap, and what partial update keeps
#
# SelMatch's motivation (Lee & Chung, ICML 2024, Fig. 1) is a measurement: as the synthetic set
# grows, trajectory matching **covers the hard test examples less and less**, and a gap between
# easy and hard examples persists, while a set initialised from a window of real images and only
# partly distilled covers more, most of all the hard ones; MTT's accuracy on the hard examples
# ends up level with random selection's. Fig. 5 looks at what partial update keeps: the unaltered
# real images $\mathcal{D}_\text{select}$ lie nearer the decision boundary than the distilled
# $\mathcal{D}_\text{distill}$, and a network training on the set sees larger gradients on them.
# The method is taught in {doc}`../book/selmatch`; what we changed is in
# {doc}`../book/repro_selmatch`.
#
# :::{admonition} What is ours on this page
# :class: note
# The paper's coverage definition was not recovered (papers.md §9), so every coverage number here
# is **our operationalisation**, and every figure says so: images are embedded by the penultimate
# layer of one **feature network we trained on the full CIFAR-10 training set** (not on the
# scale model's universe, so that "easy" and "hard" are properties of the test images under the
# task, not of the 500-per-class universe the sets are drawn from); a test image is *covered* when
# a synthetic image of its class lies within radius $r$ of it, with $r$ the median distance from a
# test image to its nearest same-class universe image (so the whole universe covers exactly half
# the test set; the radius check below uses the quartiles of that distance too); the easy and hard groups are the halves of the test set by that network's
# margin. The sets are the α page's and Table 1's (the scale model: the first 500 images per
# class, 5 / 10 / 20 % = IPC 25 / 50 / 100) and the Fig. 3 sweep's random subsets of the same
# universe. The live cell runs a `ci` smoke test (numbers meaningless); rerun the committed
# `quick` results with `python -m ddbook reproduce selmatch-coverage --profile quick`
# (resumable; it first runs any set of the α page or Table 1 that is missing).
# :::

# %% tags=["parameters"]
import os

profile: str = os.environ.get("DDBOOK_PROFILE", "ci")  # ci | quick | gpu | paper
draw: str = "quick"  # committed profile to draw beside the live run: quick | gpu | paper

# %% tags=["hide-input"]
import pandas as pd

import ddbook
from ddbook import params, selmatch_scale as sc, verdicts as V
from ddbook.figures import _coverage_plots as plots, drawn_or_live, selmatch_fig1_fig5_coverage as cov
from ddbook.figures import selmatch_fig4a_alpha as selmatch_alpha, selmatch_table1
from ddbook.results import Timer
from myst_nb import glue

P, D = params.page_profiles(globals(), ["profile", "draw"])  # an unknown -p is an error
for prof in (P, D):
    print(f"\nat {prof.name}: {len(cov.plan(prof))} pieces of this page; " + cov.feature_label(prof))
    for line in sc.describe_scale(prof):
        print(f"  - {line}")

# %% [markdown]
# ## The live smoke run at this page's profile
#
# The sets it reads (the α page's and Table 1's, and at `ci` the Fig. 3 sweep's random subsets),
# then this page's pieces: the feature network and radius, the coverage of every set, the
# coverage during distillation, the t-SNE map and the gradient norms. Each writes its own
# results file under `results/<profile>/selmatch_coverage/`.

# %% tags=["hide-output"]
with Timer() as t:
    sc.run_fig3(P) if P.name == "ci" else None
    cov.run(P)
live = cov.load(P)
print(f"{live.describe(P.name)}; {t.seconds:.0f} s")
cov.coverage_table(live).round(3)

# %% [markdown]
# ## The committed results
#
# The figures draw the results committed at `draw` (normally `quick`); a piece that is missing
# or was made from another configuration is listed, never filled in. The sets' own proofs of
# scale (updates per distilled image, the networks' training loss, random accuracy rising with
# the ratio) are the α page's and Table 1's, repeated here for the sets this page reads.

# %%
drawn = cov.load(D)
shown, shown_label = drawn_or_live(drawn, live, P, D, "figures and tables")
SP = D if shown is drawn else P
ours = cov.feature_label(SP)
features = shown.found.get("features")
if features is not None:
    f = features.data
    radii = ", ".join(f"r({q}) = {r:.3f}" for q, r in f["radii"].items())
    print(f"feature network: test accuracy {100 * f['feature_test_accuracy']:.1f} %; radii "
          f"{radii} (r = r(0.5)); easy / hard halves: {f['n_easy']} / {f['n_hard']} test images "
          f"(median margin {f['median_margin']:.2f})")
sets = sc.load_pieces(SP, selmatch_table1.plan(SP) + selmatch_alpha.plan(SP))
proof = selmatch_alpha.proofs(sets)
if proof["profile"]:
    print(f"the sets: fewest updates per distilled image {proof['min_updates']} (target "
          f"{proof['target_updates']}); largest final training loss of an evaluation network "
          f"{proof['max_train_loss']:.3f}")
trend = sc.random_trend(SP)
print("random-subset accuracy against the ratio: "
      + (trend.sentence() if trend else "fewer than two ratios of the Fig. 3 sweep present"))
# the sets' pixels: a distillation at a large image learning rate can carry its images far from
# real pixel values (real images: std about 1 after normalisation), and far images cover little
for m in ("mtt", "datm", "selmatch"):
    for r in sc.scale_config(SP).ratios:
        src = cov.source_piece(SP, m, r)
        res = sets.found.get(src.name)
        px = None if res is None else (res.data.get("pixels") or {}).get("distilled")
        if px:
            lr = sc.match_config(sc.scale_config(SP), src).lr_img
            print(f"{cov.LABELS[m]:>22} {r:4.0%}: distilled pixels std {px['std']:.2f}, "
                  f"max |x| {px['absmax']:.1f} (lr_img {lr:g})")
ident = cov.set_identity_table(shown, SP)
if len(ident):
    remade = ident[ident["evaluated on"] != ident["measured on"]]
    print(f"\n{len(remade)} of {len(ident)} distilled sets were measured on another kind of "
          f"machine than the one their page evaluated them on (remade from their seeds after "
          f"the cache was lost: the same computation, not bit-identical); largest relative "
          f"difference of the distilled pixels' std "
          f"{ident['relative difference'].max():.2%}" if len(remade) else
          f"\nall {len(ident)} distilled sets were measured on the machine type that evaluated "
          f"them")
walls = {n: r.provenance["wall_time_s"] for n, r in shown.found.items()}
if walls:
    print(f"\nthis page's pieces at {SP.name}: {len(walls)} files, measured wall time "
          f"{sum(walls.values()) / 3600:.2f} process-hours beyond the sets it reads (largest: "
          + ", ".join(f"{n} {w / 60:.0f} min" for n, w in sorted(walls.items(),
                                                                 key=lambda t: -t[1])[:3]) + ")")
print(f"gpu plan (one command; an estimate, NOT measured: no GPU run yet): "
      f"{sum(cov.PLANNED['gpu'].values()):.0f} min")
glue("coverage-ratio", f"{sc.SNAPSHOTS[SP.name][0]:.0%}", display=False)

# %% [markdown]
# ## Fig. 1(a): coverage of easy and hard test examples against the subset ratio

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Coverage of the test set (overall, easy half, hard half; our definition, radius r = r(0.5)) by each set against the subset ratio of the scale model: MTT, DATM, SelMatch at the paper's α and β, the window alone (α = 0) and random subsets of the Fig. 3 sweep (dashed, mean ± std over its subsets). The profile and the feature network are named under the panels.", "name": "fig-coverage-ratio"}, "image": {"alt": "Three side-by-side line charts of coverage in percent against subset ratio, for all, easy and hard test examples, one coloured line per method and a dashed grey line for random subsets."}}
cov_table = cov.coverage_table(shown)
fig = plots.fig1a(cov_table, shown_label, ours)

# %% [markdown]
# The numbers behind it (fractions; random: the mean over the sweep's subsets):

# %%
(cov_table.groupby(["ratio", "method"])[["overall", "easy", "hard", "gap"]].mean() * 100).round(1)

# %% [markdown]
# ## Fig. 1(b): coverage during distillation
#
# At the ratio {glue:text}`coverage-ratio`, the sets of MTT and of SelMatch were kept every few
# distillation iterations (in the cache; only the coverage numbers are committed). The paper:
# MTT's coverage falls quickly as distillation proceeds, SelMatch's stays stable.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Coverage (our definition, radius r = r(0.5)) of the test set against the distillation iteration, MTT (blue) and SelMatch at the paper's α (orange): overall solid, easy half dashed, hard half dotted.", "name": "fig-coverage-iterations"}, "image": {"alt": "Line chart of coverage in percent against distillation iteration, two colours for MTT and SelMatch, each with a solid, a dashed and a dotted line for all, easy and hard test examples."}}
traj = cov.trajectory_table(shown)
fig = plots.fig1b(traj, sc.SNAPSHOTS[SP.name][0], shown_label, ours)

# %% [markdown]
# ## Fig. 1(c): accuracy on the easy and on the hard half
#
# From the per-test-example correctness the evaluation networks committed (no network is trained
# for this figure). The same two columns are added to every row of {doc}`selmatch_table1`.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Test accuracy on the easy and on the hard half of the test set (our split, by the feature network's margin) against the subset ratio, mean ± std over the evaluation networks of each set; random subsets from the Fig. 3 sweep (dashed).", "name": "fig-coverage-accuracy"}, "image": {"alt": "Two side-by-side line charts of test accuracy in percent against subset ratio, for the easy and the hard half, one coloured line with error bars per method and a dashed grey line for random subsets."}}
acc = cov.group_accuracy_table(SP)
fig = plots.fig1c(acc, shown_label, ours)

# %%
(acc.groupby(["ratio", "method"])[["overall", "easy", "hard"]].agg(["mean", "std"]) * 100).round(1)

# %% [markdown]
# ## How much does the gap depend on the radius?
#
# The radius is ours. The gap between easy and hard coverage at three radii $r(q)$, the
# quartiles of the distance from a test image to its nearest same-class universe image (the whole
# universe covers a quarter, a half and three quarters of the test set at them; $r = r(0.5)$): a
# claim that holds at one radius only is a claim about the radius. (Multiples of $r$ were tried
# first: at $0.5r$ every set covered 0.0–0.1 % of the test set and at $2r$ 100 %, because
# nearest-neighbour distances in this feature space concentrate around $r$; such radii say
# nothing.)

# %% tags=["hide-input"] mystnb={"figure": {"caption": "The coverage gap (easy minus hard, points) against the subset ratio at the radii r(0.25), r(0.5) and r(0.75) (the whole universe covers 25, 50 and 75 % of the test set at them), one line per method (random: dashed).", "name": "fig-coverage-radius"}, "image": {"alt": "Three side-by-side line charts of the easy-minus-hard coverage gap against subset ratio, one per radius, one coloured line per method."}}
fig = plots.radius_sensitivity({k: cov.coverage_table(shown, k)
                                for k in cov.coverage_config(SP).radius_quantiles},
                               shown_label, ours)

# %% [markdown]
# ## Fig. 5: what partial update keeps
#
# (a) One t-SNE map of the test images of the first three classes together with MTT's and
# SelMatch's images of those classes at {glue:text}`coverage-ratio` (both panels are the same
# map); SelMatch's $\mathcal{D}_\text{select}$ (real, frozen) as crosses, its
# $\mathcal{D}_\text{distill}$ as circles. (b) While networks train on SelMatch's set (the
# evaluation protocol, the hook records without changing anything: the page checks that the
# accuracies equal the set's committed ones; on a GPU the committed evaluation trains its
# networks stacked, so there they agree only to float rounding), the mean per-example gradient
# norm on each part.

# %% tags=["hide-input"] mystnb={"figure": {"caption": "t-SNE of our feature network's embedding: test images of the first three classes (small dots, colour = class) with MTT's synthetic images (left, circles) and SelMatch's (right: D_distill circles, D_select crosses), one map for both panels.", "name": "fig-coverage-tsne"}, "image": {"alt": "Two scatter plots of the same two-dimensional t-SNE map: small coloured dots for test images of three classes, and larger markers for synthetic images, circles for MTT on the left, circles and crosses for SelMatch's distilled and selected images on the right."}}
tsne = next((r for n, r in shown.found.items() if n.endswith("_tsne")), None)
fig = plots.fig5a(tsne, shown_label, ours) if tsne is not None else print("t-SNE piece missing")

# %% tags=["hide-input"] mystnb={"figure": {"caption": "Mean per-example gradient norm of the loss on D_select (solid) and on D_distill (dashed) over the training epochs of networks trained on SelMatch's set (paper α and β), one colour per subset ratio; the band spans the networks.", "name": "fig-coverage-gradnorm"}, "image": {"alt": "Line chart on a logarithmic epoch axis of the mean gradient norm on the selected and on the distilled images, solid and dashed lines in one colour per subset ratio with shaded bands."}}
fig = plots.fig5b(cov.gradnorm_table(shown), shown_label, ours)

# %%
pd.DataFrame([{"ratio": f"{r.data['ratio']:.0%}", "α": r.data["alpha"],
               "D_select / D_distill": f"{r.data['n_select']} / {r.data['n_distill']}",
               "margin D_select": round(r.data["margin_select_mean"], 2),
               "margin D_distill": round(r.data["margin_distill_mean"], 2),
               "accuracies equal the set's committed ones": r.data["same_as_source"]}
              for n, r in sorted(shown.found.items()) if n.endswith("_gradnorm")])

# %% [markdown]
# ## Verdicts
#
# **Coverage** belongs to a set, not to evaluation networks, so its claims are tested by a paired
# percentile bootstrap over the **test examples** (the same resample for every set and ratio);
# there is one distilled set per method and ratio, so the distillation's own randomness is not in
# these intervals. **Hard-half accuracy** is tested over the evaluation networks (an OLS
# interaction of method and ratio, so both MTT's and random's noise count). The **gradient
# norms** are tested over networks (the time-averaged difference per network), the **margins**
# over the images of one set.

# %%
verdict_list = cov.verdicts(shown, SP)
V.render(verdict_list)

# %% [markdown]
# What differs from the paper, and why:
#
# - **the coverage definition, the radius, the easy / hard split and the feature network are
#   ours** (the paper's were not recovered); the radius sensitivity is shown above;
# - **the scale model** of the α page (500 images per class, 5 / 10 / 20 %), CIFAR-10 instead of
#   the paper's CIFAR-100 for Fig. 5; one distilled set per method and ratio;
# - the random baseline's sets are the Fig. 3 sweep's subsets (hard labels, DSA), whose networks
#   also give its easy / hard accuracy;
# - at 20 % the sets are distilled at the paper's image learning rate for that ratio (10,000),
#   which at this scale carries MTT's and DATM's images far from real pixel values (the pixel
#   spreads printed at the top): their coverage there measures those drifted images, and Table 1
#   shows the same MTT set at lr_img 1,000 as the check on how much of its accuracy the rate
#   costs; no lower-rate set is measured here;
# - Fig. 5(b) records the norms at about 40 log-spaced epochs, not every epoch (every epoch would
#   cost about 1.4 process-hours more at `quick`: `CoverageConfig(grad_points=None)`), in eval mode
#   and without augmentation, on the evaluation protocol's networks.
#
# ## Summary

# %%
print(V.summary(verdict_list))
