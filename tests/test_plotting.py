"""The figure layer's layout rules: figures fit a phone's text column, the papers' values are black,
and no legend sits over the data."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from PIL import Image  # noqa: E402

from ddbook import plotting  # noqa: E402

PHONE_COLUMN_PX = 342   # the text column of the book at a 390 px wide screen
CLASSES = [f"class {i}" for i in range(10)]


@pytest.fixture(autouse=True)
def _style():
    plotting.style()
    yield
    plt.close("all")


def _shown_share(fig) -> float:
    """The share of its natural width a figure is shown at in the phone's column (as rendered by
    the notebook backend: bbox_inches='tight' at the figure's dpi)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", dpi=fig.dpi)
    buf.seek(0)
    return min(1.0, PHONE_COLUMN_PX / Image.open(buf).size[0])


def _window_table():
    g = torch.Generator().manual_seed(0)
    rows = [{"ratio": r, "beta": b, "run": k,
             "accuracy": 0.5 + 0.1 * torch.rand(1, generator=g).item()}
            for r in (0.05, 0.1, 0.2, 0.3) for b in (0.0, 0.3, 0.6, float("nan")) for k in range(2)]
    return pd.DataFrame(rows)


PEAKS = [{"subset_ratio": "5%", "method": "Window at beta=0.5", "mean": 79.3},
         {"subset_ratio": "30%", "method": "Window at beta=0.2", "mean": 90.6}]
RANDOMS = [{"subset_ratio": "5%", "mean": 73.4}, {"subset_ratio": "30%", "mean": 88.3}]


def _runs():
    curve = [{"iteration": i, "mean": 0.3 + 0.01 * i, "std": 0.01} for i in (0, 10, 20)]
    return {"IPC 1": {"loss": np.linspace(1, 0.5, 20), "eval_curve": curve},
            "IPC 10": {"loss": np.linspace(1, 0.4, 20), "eval_curve": curve}}


def _figures():
    g = torch.Generator().manual_seed(1)
    images = [torch.randint(0, 256, (16, 3, 8, 8), generator=g, dtype=torch.uint8)
              for _ in range(10)]
    rho = {c: -0.1 * i for i, c in enumerate(CLASSES)}
    return {
        "image_grid (16 columns)": plotting.image_grid(images, CLASSES,
                                                       [("easiest", 8), ("hardest", 8)]),
        "score_distributions": plotting.score_distributions(
            torch.rand(200, generator=g), torch.arange(200) % 10, CLASSES, "C-score", "low"),
        "correlation_bars": plotting.correlation_bars({"EL2N": rho, "forgetting": rho}, CLASSES),
        "window_curves": plotting.window_curves(_window_table(), PEAKS, RANDOMS),
        "distill_curves": plotting.distill_curves(_runs()),
        "versus_paper": plotting.versus_paper([{"setting": "IPC 1", "ours": 40, "paper": 46.3}]),
    }


def test_every_figure_is_legible_in_a_phone_column():
    shares = {name: _shown_share(fig) for name, fig in _figures().items()}
    assert all(s >= 0.45 for s in shares.values()), f"shown below 45 % on a phone: {shares}"


def test_image_grid_caps_its_width_but_keeps_small_grids():
    g = torch.Generator().manual_seed(2)
    wide = plotting.image_grid([torch.rand(16, 3, 4, 4, generator=g)])
    narrow = plotting.image_grid([torch.rand(3, 3, 4, 4, generator=g)])
    assert wide.get_size_inches()[0] <= plotting.MAX_WIDTH + 1e-6
    assert narrow.get_size_inches()[0] == pytest.approx(3 * 0.62 + 1.2)


def test_window_curves_draws_the_papers_values_black_and_ours_in_distinct_colours():
    fig = plotting.window_curves(_window_table(), PEAKS, RANDOMS)
    ours, paper = fig.axes
    stars = [c for c in paper.collections if len(c.get_offsets())]
    assert len(stars) == len(PEAKS)
    assert all(tuple(c.get_facecolor()[0]) == to_rgba("black") for c in stars)
    assert {t.get_text() for t in paper.texts} >= {"5%", "30%", "random 5%", "random 30%"}
    grey = [ln for ln in paper.lines if ln.get_linestyle() == "--" and len(ln.get_xdata())]
    assert len(grey) == len(RANDOMS) and all(ln.get_color() == "0.5" for ln in grey)
    colours = {ln.get_color() if isinstance(ln.get_color(), str) else tuple(ln.get_color())
               for ln in ours.lines if ln.get_marker() == "o" and ln.get_linestyle() == "-"}
    assert len(colours) == 4, "one clearly distinct colour per ratio"
    rgb = np.array([to_rgba(c)[:3] for c in colours])
    closest = min(np.abs(a - b).sum() for i, a in enumerate(rgb) for b in rgb[i + 1:])
    assert closest > 0.3, f"two ratios' colours are nearly the same: {rgb}"


def test_correlation_bars_legend_is_outside_the_axes():
    fig = plotting.correlation_bars({"EL2N": {c: -0.5 for c in CLASSES},
                                     "forgetting": {c: -0.4 for c in CLASSES}}, CLASSES)
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    axes = ax.get_window_extent()
    assert legend.y0 >= axes.y1 - 1, "the legend must not cover the bars"
