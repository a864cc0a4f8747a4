"""One figure style for the whole book; functions take data or result objects and return figures.

No function sets global state on import: call :func:`style` once (every notebook does, in its
imports cell). Axis labels are lowercase, figures carry no embedded titles (the book captions them),
and the papers' numbers are drawn as reference markers labelled "paper".
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["style", "image_grid", "score_distributions", "correlation_bars", "window_curves",
           "distill_curves", "versus_paper", "PAPER_MARKER", "PAPER_COLOUR", "PAPER_LINE",
           "MAX_WIDTH"]

PAPER_MARKER = dict(marker="*", s=140, color="black", zorder=5, label="paper")
# The book's colour convention: ours in colour, the papers' values black (markers) or grey (dashed
# reference lines), on every page.
PAPER_COLOUR = "black"
PAPER_LINE = dict(ls="--", lw=1.2, color="0.5")
# The widest figure, in inches: at 110 dpi a 6.4 in figure is shown at about half its natural width
# in a phone's 342 px text column (two panels side by side are stacked instead).
MAX_WIDTH = 6.4


def style() -> None:
    """Set the book's matplotlib defaults (seaborn 'paper' context, white grid, 110 dpi)."""
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)
    matplotlib.rcParams.update({"figure.dpi": 110, "savefig.dpi": 110, "axes.titlesize": "medium",
                                "figure.constrained_layout.use": True})


def _to_hwc(img: torch.Tensor) -> np.ndarray:
    img = img.detach().cpu()
    if img.dtype == torch.uint8:
        img = img.float() / 255.0
    return img.clamp(0, 1).permute(1, 2, 0).numpy()


def image_grid(rows: Sequence[torch.Tensor], row_labels: Sequence[str] | None = None,
               col_groups: Sequence[tuple[str, int]] | None = None, scale: float = 0.62,
               max_width: float = MAX_WIDTH):
    """A grid of images: ``rows[i]`` is a ``(k, 3, H, W)`` batch (uint8, or floats in [0, 1]).

    ``col_groups`` labels runs of columns, e.g. ``[("easiest", 8), ("hardest", 8)]``; a thin gap
    separates the groups. Each image is ``scale`` inches wide, less where the figure would be wider
    than ``max_width`` inches (so that it stays legible in a phone's text column).
    Used in: difficulty scores, MTT and SelMatch image pages.
    """
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    scale = min(scale, (max_width - 1.2) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(n_cols * scale + 1.2, n_rows * scale + 0.4),
                             squeeze=False, gridspec_kw=dict(wspace=0.04, hspace=0.04),
                             layout="none")
    boundaries = np.cumsum([n for _, n in col_groups])[:-1] if col_groups else []
    for i, batch in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([]), ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if j < len(batch):
                ax.imshow(_to_hwc(batch[j]), interpolation="nearest")
            if j in boundaries:
                ax.spines["left"].set_visible(True)
                ax.spines["left"].set_linewidth(2.5)
                ax.spines["left"].set_color("white")
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], rotation=0, ha="right", va="center", fontsize=9)
    if col_groups:
        start = 0
        for name, n in col_groups:
            axes[0, start + n // 2].set_title(name, fontsize=10, loc="center")
            start += n
    fig.subplots_adjust(left=0.12, right=0.99, top=0.93, bottom=0.01)
    return fig


def score_distributions(values: torch.Tensor, labels: torch.Tensor, classes: Sequence[str],
                        xlabel: str, hard_side: str | None = None):
    """Per-class distributions of a score as stacked violins (one row per class).

    ``hard_side`` ("low" or "high") adds an arrow telling which end is hard.
    Used in: difficulty scores.
    """
    import seaborn as sns

    values, labels = np.asarray(values, dtype=float), np.asarray(labels)
    fig, ax = plt.subplots(figsize=(MAX_WIDTH, 0.42 * len(classes) + 1.0))
    data = [values[labels == c] for c in range(len(classes))]
    palette = sns.color_palette("crest", len(classes))
    parts = ax.violinplot(data, orientation="horizontal", showmedians=True, widths=0.85)
    for body, colour in zip(parts["bodies"], palette):
        body.set_facecolor(colour), body.set_alpha(0.75)
    ax.set_yticks(range(1, len(classes) + 1), classes)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    if hard_side:
        ax.annotate(f"harder ({hard_side})", xy=(0.0 if hard_side == "low" else 1.0, -0.09),
                    xycoords="axes fraction", ha="left" if hard_side == "low" else "right",
                    fontsize=8, color="0.3")
    return fig


def correlation_bars(series: dict, classes: Sequence[str], reference: dict | None = None,
                     ylabel: str = "Spearman ρ with C-score"):
    """Grouped bars of per-class correlations: ``series`` maps a label to ``{class: rho}``.

    ``reference`` (optional) maps a label to one number drawn as a dashed line (e.g. the value
    ``../shared/data/README.md`` reports). Used in: difficulty scores.
    """
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(MAX_WIDTH, 3.6))
    width = 0.8 / max(1, len(series))
    palette = sns.color_palette("deep", len(series))
    x = np.arange(len(classes))
    for k, (label, rho) in enumerate(series.items()):
        ax.bar(x + (k - (len(series) - 1) / 2) * width, [rho[c] for c in classes], width,
               label=label, color=palette[k])
    for label, value in (reference or {}).items():
        ax.axhline(value, **{**PAPER_LINE, "lw": 1}, label=label)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, classes, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    # above the axes, never over the bars
    ax.legend(fontsize=8, ncols=2, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    return fig


def window_curves(table, paper_peaks: Sequence[dict] = (), paper_random: Sequence[dict] = (),
                  label: str = "ours"):
    """SelMatch Fig. 3: accuracy vs window start β, one colour per subset ratio.

    ``table`` has columns ratio, beta (NaN for random subsets), run, accuracy (fraction). Top:
    ours, mean ± std over runs as a band, random subsets as dashed lines, the best β circled, one
    colour per ratio (seaborn "colorblind", without its vermilion). Bottom: the paper's expected
    peaks (black stars at their β, the ratio as a text label) and random baselines (grey dashed,
    labelled), in percent.
    Used in: the sliding-window notebook.
    """
    import seaborn as sns

    ratios = sorted(table["ratio"].unique())
    # "colorblind" without its vermilion (index 3), which is too close to its orange
    palette = sns.color_palette("colorblind", 10)
    palette = [palette[i] for i in (0, 1, 2, 4, 5, 6, 7, 8, 9)]
    colours = dict(zip(ratios, palette[:len(ratios)] if len(ratios) <= len(palette)
                       else sns.color_palette("husl", len(ratios))))
    fig, (ax, axp) = plt.subplots(2, 1, figsize=(MAX_WIDTH, 7.4), height_ratios=(1.5, 1))
    win, rnd = table[table["beta"].notna()], table[table["beta"].isna()]
    for ratio in ratios:
        c = colours[ratio]
        g = win[win["ratio"] == ratio].groupby("beta")["accuracy"].agg(["mean", "std"]).fillna(0)
        g = g * 100
        ax.plot(g.index, g["mean"], "-o", ms=3, color=c, label=f"{ratio:.0%} window")
        ax.fill_between(g.index, g["mean"] - g["std"], g["mean"] + g["std"], color=c, alpha=0.2)
        if len(g):
            best = g["mean"].idxmax()
            ax.plot([best], [g["mean"][best]], "o", ms=10, mfc="none", mec=c, mew=1.8)
        r = rnd[rnd["ratio"] == ratio]["accuracy"]
        if len(r):
            ax.axhline(r.mean() * 100, ls="--", lw=1.2, color=c)
    ax.set_xlabel("window start β (fraction of the class, hardest → easiest)")
    ax.set_ylabel(f"test accuracy (%), {label}")
    ax.plot([], [], "k--", lw=1.2, label="random subset")
    ax.plot([], [], "o", ms=9, mfc="none", mec="k", label="best β")
    ax.legend(fontsize=7.5, ncols=2)
    star = {k: v for k, v in PAPER_MARKER.items() if k != "label"}
    for row in paper_peaks:
        ratio = float(row["subset_ratio"].rstrip("%")) / 100
        beta = float(row["method"].split("=")[-1])
        axp.scatter([beta], [row["mean"]], **star)
        axp.annotate(f"{ratio:.0%}", (beta, row["mean"]), textcoords="offset points",
                     xytext=(7, -3), fontsize=8)
    for row in paper_random:
        ratio = float(row["subset_ratio"].rstrip("%")) / 100
        axp.axhline(row["mean"], **PAPER_LINE)
        axp.annotate(f"random {ratio:.0%}", (0.99, row["mean"]), xycoords=("axes fraction", "data"),
                     textcoords="offset points", xytext=(0, 2), ha="right", fontsize=7.5,
                     color="0.35")
    axp.set_xlim(-0.05, 0.95)
    axp.set_xlabel("β of the paper's best window")
    axp.set_ylabel("test accuracy (%),\npaper (ResNet-18)")
    axp.scatter([], [], **star, label="paper: best window (ratio labelled)")
    axp.plot([], [], **PAPER_LINE, label="paper: random")
    axp.legend(fontsize=7.5, ncols=2, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    return fig


def _smooth(y: np.ndarray, k: int) -> np.ndarray:
    """Trailing moving average over ``k`` points (the first points over what there is)."""
    c = np.cumsum(np.insert(np.asarray(y, float), 0, 0.0))
    n = np.arange(1, len(y) + 1)
    lo = np.maximum(n - k, 0)
    return (c[n] - c[lo]) / (n - lo)


def distill_curves(runs: dict, label: str = "ours", smooth: int = 10, colours: dict | None = None,
                   styles: dict | None = None):
    """Matching loss and test accuracy against distillation iteration, one line per run.

    ``runs`` maps a label to a dict with ``loss`` (per iteration), ``skipped`` (per iteration,
    optional) and ``eval_curve`` (``{"iteration", "mean", "std"}`` records, accuracy fractions):
    a distillation result's ``data``. The loss is drawn raw (thin) and as a ``smooth``-point moving
    average (top); accuracy as mean ± std over evaluation runs (bottom). Used in: the MTT and DATM
    pages.
    """
    import seaborn as sns

    colours = colours or dict(zip(runs, sns.color_palette("colorblind", len(runs))))
    styles = styles or {}
    fig, (axl, axa) = plt.subplots(2, 1, figsize=(MAX_WIDTH, 6.4))
    for name, d in runs.items():
        c, ls = colours[name], styles.get(name, "-")
        loss = np.asarray(d["loss"], float)
        it = np.arange(1, len(loss) + 1)
        axl.plot(it, loss, lw=0.5, alpha=0.3, color=c)
        axl.plot(it, _smooth(loss, smooth), lw=1.6, color=c, ls=ls, label=name)
        curve = d["eval_curve"]
        x = np.array([p["iteration"] for p in curve])
        m = np.array([p["mean"] for p in curve]) * 100
        s = np.array([p["std"] or 0.0 for p in curve]) * 100
        axa.plot(x, m, marker="o", ms=3, color=c, ls=ls, label=name)
        axa.fill_between(x, m - s, m + s, color=c, alpha=0.15)
    axl.set_xlabel("distillation iteration")
    axl.set_ylabel(f"matching loss ({smooth}-it. average),\n{label}")
    axa.set_xlabel("distillation iteration")
    axa.set_ylabel(f"test accuracy (%), {label}")
    axl.legend(fontsize=8)
    axa.legend(fontsize=8)
    return fig


def versus_paper(rows: Sequence[dict], label: str = "ours", ylabel: str = "test accuracy (%)"):
    """Ours next to the paper's, per setting: ``rows`` of ``{"setting", "ours", "ours_std",
    "ours_baseline", "paper", "paper_std", "paper_baseline"}`` (percent; missing keys or None are
    not drawn). Ours as filled circles, our random-real baselines as open circles, the paper's
    numbers as stars (its baselines as open stars), all labelled. Used in: the MTT page.
    """
    fig, ax = plt.subplots(figsize=(MAX_WIDTH, 3.6))
    x = np.arange(len(rows))
    first = dict(ours=True, base=True, paper=True, pbase=True)

    def lab(key, text):
        if first[key]:
            first[key] = False
            return text
        return None

    for i, r in enumerate(rows):
        if r.get("ours") is not None:
            ax.errorbar([i - 0.12], [r["ours"]], yerr=[r.get("ours_std") or 0], fmt="o", ms=7,
                        color="C0", capsize=3, label=lab("ours", f"{label}: distilled"))
        if r.get("ours_baseline") is not None:
            ax.plot([i - 0.12], [r["ours_baseline"]], "o", ms=7, mfc="none", mec="C0",
                    label=lab("base", f"{label}: random real images"))
        if r.get("paper") is not None:
            ax.errorbar([i + 0.12], [r["paper"]], yerr=[r.get("paper_std") or 0], fmt="*", ms=11,
                        color=PAPER_COLOUR, capsize=3, label=lab("paper", "paper: distilled"))
        if r.get("paper_baseline") is not None:
            ax.plot([i + 0.12], [r["paper_baseline"]], "*", ms=11, mfc="none", mec=PAPER_COLOUR,
                    label=lab("pbase", "paper: random real images"))
    ax.set_xticks(x, [r["setting"] for r in rows])
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return fig
