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
# # Results at a glance
#
# Every page of this book that reproduces a paper's figure or table keeps its runs in `results/`,
# one file per piece of work, each with its provenance: the commit it ran from, the machine, the
# wall time, the configuration. This page reads those files **when the book is built** and
# collects, for every page, what is there and what the paper's claims look like on it.
# Nothing on this page is typed by hand: each table below is made by
# `ddbook.figures._ledger` from the page modules (`ddbook.figures`), the same code that draws each
# page, and a page without results at the profile drawn says **pending**.
#
# :::{admonition} How to read the verdicts
# :class: note
# A verdict is a statistical test over the runs behind a claim ({doc}`../book/evaluation`):
# **supported** when the whole confidence interval of the effect lies above zero,
# **contradicted** when it lies wholly below zero, and **inconclusive at this scale** otherwise,
# or when the runs cannot estimate their own noise. The runs are reduced-scale runs (the profile
# is named in each table), so a verdict says what holds *at that scale*, not whether the paper is
# right at its own.
# :::

# %% tags=["parameters"]
import os

profile: str = os.environ.get("DDBOOK_PROFILE", "ci")  # ci | quick | gpu | paper
draw: str = "quick"  # committed profile whose results the tables read: ci | quick | gpu | paper

# %% tags=["hide-input"]
from IPython.display import Markdown, display

import ddbook
from ddbook import params
from ddbook.figures import _ledger as ledger
from ddbook.results import Timer

P, D = params.page_profiles(globals(), ["profile", "draw"], announce=False)  # an unknown -p is an error
print(f"profile {P.name!r}: this page runs nothing; it reads the results committed at {D.name!r}")
with Timer() as read_time:
    pages = ledger.ledger(D)
print(f"read the results of {len(pages)} pages at {D.name!r} in {read_time.seconds:.1f} s")

# %% [markdown]
# ## What is there
#
# One row per page: how many of its pieces are present, missing (never run or unfinished) and
# stale (made from another configuration than the code now asks for, so not drawn); the commits
# and dates of the pieces present and their total wall time in process-minutes (pieces that ran
# side by side add up); and how its claims came out.

# %% tags=["hide-input"] mystnb={"markdown_format": "myst"}
display(Markdown(ledger.status_table(pages)._repr_markdown_()))

# %% tags=["hide-input"] mystnb={"figure": {"caption": "The claims of each page by verdict, from the results committed at the profile named on the axis: supported (green), contradicted (red), inconclusive at this scale (grey). A page without results there says pending, with how many pieces it plans.", "name": "fig-ledger-outcomes"}, "image": {"alt": "Horizontal bars, one per book page, each split into its supported, contradicted and inconclusive claims; pages without results are labelled pending."}}
ledger.outcome_bars(pages);

# %% [markdown]
# ## Every claim and its verdict
#
# Each page's claims as its own verdict table shows them, here side by side. The effect is signed
# so that a positive value favours the claim; "runs" names what the interval is taken over.

# %% tags=["hide-input"] mystnb={"markdown_format": "myst"}
display(Markdown(ledger.claims_table(pages)._repr_markdown_()))

# %% [markdown]
# ## Reproduced numbers beside the paper's
#
# Where a page reproduces a number the paper reports, ours stands beside it (test accuracy in %,
# mean ± standard deviation over evaluation networks). The paper's numbers come from
# `reference/paper-numbers.csv` with its confidence tag: "paper table" was read from the paper's
# own table, "approximate" from a figure or bar chart, "table image, secondary" from a reprint.
# Ours at the **final** iteration is the honest number; "best over checkpoints" picks the
# iteration on test accuracy, as the papers' numbers do, and is optimistic. The SelMatch rows come
# from the scale model (a universe of a few hundred images per class), so they are not the paper's setting and
# are shown for the gap, not for agreement.

# %% tags=["hide-input"] mystnb={"markdown_format": "myst"}
numbers = ledger.paper_comparison(pages)
display(Markdown(numbers._repr_markdown_() if numbers.rows else
                 f"No page has results at `{D.name}` that a paper reports a number for: pending."))

# %% [markdown]
# ## Rerunning
#
# Each page's runs are resumable: `python -m ddbook reproduce NAME --profile quick` runs the
# missing or stale pieces of the page named NAME in the first column above, and the next build of
# the book picks them up here. To execute a page itself at another profile, with its parameters,
# use `python -m ddbook notebook NAME --profile quick` (or `make rerun PAGE=NAME PROFILE=quick`);
# `python -m ddbook notebook --help` lists every page's parameters.
