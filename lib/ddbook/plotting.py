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

__all__ = ["style", "image_grid", "score_distributions", "PAPER_MARKER"]

PAPER_MARKER = dict(marker="*", s=140, color="black", zorder=5, label="paper")


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
               col_groups: Sequence[tuple[str, int]] | None = None, scale: float = 0.62):
    """A grid of images: ``rows[i]`` is a ``(k, 3, H, W)`` batch (uint8, or floats in [0, 1]).

    ``col_groups`` labels runs of columns, e.g. ``[("easiest", 8), ("hardest", 8)]``; a thin gap
    separates the groups. Used in: difficulty scores, MTT and SelMatch image pages.
    """
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
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
    fig, ax = plt.subplots(figsize=(6.4, 0.42 * len(classes) + 1.0))
    data = [values[labels == c] for c in range(len(classes))]
    palette = sns.color_palette("crest", len(classes))
    parts = ax.violinplot(data, vert=False, showmedians=True, widths=0.85)
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
