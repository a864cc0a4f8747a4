"""The coverage page's figures (SelMatch Fig. 1 and Fig. 5); each returns a matplotlib figure that
carries the profile it was drawn from and the line saying which definitions are ours."""
from __future__ import annotations

from ..plotting import MAX_WIDTH

__all__ = ["COLOURS", "fig1a", "fig1b", "fig1c", "radius_sensitivity", "fig5a", "fig5b"]

COLOURS = {"mtt": "C0", "selmatch": "C1", "datm": "C2", "window": "C4", "random": "0.45"}
ORDER = ("mtt", "datm", "selmatch", "window", "random")


def _label(method: str) -> str:
    from .selmatch_fig1_fig5_coverage import LABELS
    return LABELS[method]


def _footer(fig, shown: str, ours: str) -> None:
    # a supxlabel, not fig.text: constrained layout keeps room for it below the axes' labels
    fig.supxlabel(f"{shown} — {ours}", x=0.01, ha="left", fontsize=6.5, color="0.3", wrap=True)


def _by_ratio(table, column: str, method: str):
    t = table[table["method"] == method].groupby("ratio")[column]
    mean, std = t.mean(), t.std(ddof=0).fillna(0)
    return mean.index.to_numpy(), 100 * mean.to_numpy(), 100 * std.to_numpy()


def _lines(ax, table, column: str, methods=ORDER) -> None:
    for m in methods:
        if not (table["method"] == m).any():
            continue
        x, y, s = _by_ratio(table, column, m)
        ax.errorbar(100 * x, y, yerr=s, marker="o", ms=4, capsize=2, color=COLOURS[m],
                    label=_label(m), ls="--" if m == "random" else "-")


def fig1a(cov_table, shown: str, ours: str, q: float = 0.5):
    """Coverage (overall, easy half, hard half) against the subset ratio, one line per method."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(MAX_WIDTH, 3.3), sharey=True, constrained_layout=True)
    for ax, col in zip(axes, ("overall", "easy", "hard")):
        _lines(ax, cov_table, col)
        ax.set_title(f"{col} test examples", fontsize=9)
        ax.set_xlabel("subset ratio (%)")
    axes[0].set_ylabel(f"coverage (%) at radius r({q:g})")
    axes[0].legend(fontsize=6.5, loc="upper left")
    _footer(fig, shown, ours)
    fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))
    return fig


def fig1b(traj_table, ratio: float, shown: str, ours: str, q: float = 0.5):
    """Coverage against distillation iteration at one ratio: MTT vs SelMatch; overall solid, easy
    dashed, hard dotted."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(MAX_WIDTH, 3.6), constrained_layout=True)
    for m in ("mtt", "selmatch"):
        t = traj_table[traj_table["method"] == m]
        for col, ls in (("overall", "-"), ("easy", "--"), ("hard", ":")):
            ax.plot(t["iteration"], 100 * t[col], ls=ls, marker=".", color=COLOURS[m],
                    label=f"{_label(m)}, {col}")
    ax.set_xlabel("distillation iteration")
    ax.set_ylabel(f"coverage (%) at radius r({q:g})")
    ax.set_title(f"coverage during distillation, subset ratio {ratio:.0%}", fontsize=9)
    ax.legend(fontsize=6.5, ncol=2, loc="best")
    _footer(fig, shown, ours)
    fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))
    return fig


def fig1c(acc_table, shown: str, ours: str):
    """Test accuracy on the easy and on the hard half against the ratio (mean ± std over the
    evaluation networks)."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(MAX_WIDTH, 3.3), constrained_layout=True)
    for ax, col in zip(axes, ("easy", "hard")):
        _lines(ax, acc_table, col)
        ax.set_title(f"{col} half of the test set", fontsize=9)
        ax.set_xlabel("subset ratio (%)")
        ax.set_ylabel("test accuracy (%)")
    axes[1].legend(fontsize=6.5)
    _footer(fig, shown, ours)
    fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))
    return fig


def radius_sensitivity(tables: dict, shown: str, ours: str):
    """The easy-minus-hard coverage gap against the ratio at each radius ({q: table} for the
    radii r(q), at which the whole universe covers a fraction q of the test set)."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(tables), figsize=(MAX_WIDTH, 3.1), sharey=True,
                             constrained_layout=True, squeeze=False)
    for ax, (q, t) in zip(axes[0], tables.items()):
        _lines(ax, t, "gap")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_title(f"radius r({q:g}): the universe covers {q:.0%}", fontsize=9)
        ax.set_xlabel("subset ratio (%)")
    axes[0, 0].set_ylabel("coverage gap, easy − hard (points)")
    axes[0, 0].legend(fontsize=6)
    _footer(fig, shown, ours)
    fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))
    return fig


def fig5a(result, shown: str, ours: str):
    """The t-SNE map: test images small (colour = class); left MTT's images, right SelMatch's,
    D_distill as large circles and D_select as dark crosses; the same map in both panels."""
    import matplotlib.pyplot as plt
    xy, kind, cls = (result.arrays[k] for k in ("xy", "kind", "cls"))
    classes = result.data["classes"]
    names = result.data.get("class_names", [f"class {c}" for c in classes])
    fig, axes = plt.subplots(1, 2, figsize=(MAX_WIDTH, 3.5), sharex=True, sharey=True,
                             constrained_layout=True)
    for ax, title, codes in ((axes[0], "MTT", (1,)), (axes[1], "SelMatch", (2, 3))):
        for i, c in enumerate(classes):
            col = f"C{i}"
            t = (kind == 0) & (cls == c)
            ax.scatter(xy[t, 0], xy[t, 1], s=7, color=col, alpha=0.45, lw=0,
                       label=f"test: {names[i]}" if title == "MTT" else None)
            for code in codes:
                s = (kind == code) & (cls == c)
                marker, size, edge = ("X", 42, "k") if code == 3 else ("o", 30, "k")
                ax.scatter(xy[s, 0], xy[s, 1], s=size, marker=marker, color=col, edgecolor=edge,
                           lw=0.6, label=(result.data["kinds"][code] if i == 0 else None))
        ax.set_title(f"{title}: synthetic images over the test set", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
        ax.legend(fontsize=6, loc="lower left")
    _footer(fig, shown, ours)
    fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))
    return fig


def fig5b(grad_table, shown: str, ours: str):
    """Mean per-example gradient norm on D_select (solid) and D_distill (dashed) against the
    training epoch, one colour per subset ratio (mean over networks, band: min to max)."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(MAX_WIDTH, 3.6), constrained_layout=True)
    for i, (ratio, t) in enumerate(grad_table.groupby("ratio")):
        for col, ls in (("select", "-"), ("distill", "--")):
            g = t.groupby("epoch")[col]
            e = g.mean().index.to_numpy()
            ax.plot(e, g.mean(), ls=ls, color=f"C{i}",
                    label=f"{ratio:.0%}: D_{col}")
            ax.fill_between(e, g.min(), g.max(), color=f"C{i}", alpha=0.12, lw=0)
    ax.set_xscale("log")
    ax.set_xlabel("training epoch of the evaluation network (log scale)")
    ax.set_ylabel("mean ‖∇θ loss‖₂ per image")
    ax.set_title("gradient norm on D_select and D_distill while training on SelMatch's set",
                 fontsize=9)
    ax.legend(fontsize=6.5, ncol=3)
    _footer(fig, shown, ours)
    fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))
    return fig
