"""SelMatch Fig. 1 and Fig. 5 at the scale model: the coverage gap, and what partial update keeps.

Reads the **sets** of the α page and Table 1 (:mod:`ddbook.selmatch_scale`: MTT, DATM, SelMatch at
the paper's α and β, the window alone) and the Fig. 3 sweep's random subsets of the same universe,
and measures, in the feature space of :mod:`ddbook.feature_net` (our choice: a ConvNet-BN trained
on the **full CIFAR-10 training set**, not on the universe):

- Fig. 1(a): coverage of the test set (overall, easy half, hard half; :mod:`ddbook.coverage`, our
  operationalisation) against the subset ratio, at three radii r(q), q = 0.25, 0.5, 0.75: r(q) is
  the q-quantile of the distance from a test image to its nearest same-class universe image, so
  the whole universe covers exactly a fraction q of the test set at r(q) and r = r(0.5) is the
  median radius. (Radii as multiples of r, 0.5x and 2x, were tried first and are degenerate in
  this feature space: every set covered 0.0-0.1 % of the test set at 0.5x and 100 % at 2x, since
  nearest-neighbour distances concentrate around r. The quantile radii stay inside the steep
  part of coverage against radius by construction.);
- Fig. 1(b): coverage against distillation iteration at one ratio, MTT vs SelMatch (the sets the
  distillations keep every k iterations, ``selmatch_scale.SNAPSHOTS``);
- Fig. 1(c): test accuracy on the easy and the hard half, from the per-test-example correctness
  the evaluations committed (no new training);
- Fig. 5(a): a t-SNE map of the test features of the first three classes with MTT's and SelMatch's
  images, D_select and D_distill marked apart; 5(b): the mean per-example gradient norm on
  D_select and on D_distill while networks train on SelMatch's set (``epoch_hook``), and the
  feature network's margin of each part.

Pieces (one results file each, ``results/<profile>/selmatch_coverage/<name>.json``): ``features``
(the radii and the test margins that define easy and hard), ``r<ratio>_<method>`` per set (with
each test image's distance to the set, so that any other radius is computed without the set),
``r<ratio>_<method>_iterations`` (Fig. 1b), ``r<ratio>_tsne`` (5a), ``r<ratio>_gradnorm`` (5b).
``run`` first runs any missing source set of the α page or Table 1 (their own results files),
then the pieces; a source set missing from the cache is remade there (``ensure_set``).

Cost at ``quick`` beyond the reused sets, **measured** (session 18, 2-core CPU, both cores busy):
28 pieces in 1.25 process-hours, of which the feature network 34 min (12 epochs on 50,000
images), the gradient-norm pieces 16 / 12 / 12 min at 5 / 10 / 20 %, every coverage piece under
a minute once its set is in the cache. The sets live in the cache, not in git: when the cache is
lost, ``ensure_set`` distils them again from their seeds (their distillation cost once more,
about 3 process-hours for the twelve), one process at a time per set (a file lock). The
``gpu`` plan (one command, ≤ 9 min, **not measured**: no GPU run yet) is the same pieces on the
gpu scale model's sets (width 128, which the α and Table 1 gpu commands make), the feature
network a width-128 ConvNet of 30 epochs: estimated 4 min (feature network ~1.5, the nine
gradient-norm networks ~2, the rest < 1).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .. import selmatch_scale as sc
from ..coverage import (coverage_from_distances, coverage_radii, difficulty_groups,
                        group_accuracy, margin, nearest_same_class)
from ..feature_net import feature_net_config
from ..profiles import Profile
from ..results import StaleResultError, load_result, save_result
from ._common import Loaded, load_pieces, select

NAME = "selmatch-coverage"
SOURCES = ("selmatch-alpha", "selmatch-table1")   # it reads their sets and evaluations
NOTEBOOK = "selmatch_fig1_fig5_coverage"
TITLE = "SelMatch Fig. 1 and Fig. 5: the coverage gap and what partial update keeps"
PAGE = "selmatch_coverage"
VERSION = 2      # bump when the computation of a piece changes (older results read as stale)
SET_METHODS = ("mtt", "datm", "selmatch", "window", "random")
LABELS = {"mtt": "MTT", "datm": "DATM", "selmatch": "SelMatch (paper α, β)",
          "window": "window alone (α = 0)", "random": "random subset"}

__all__ = ["NAME", "NOTEBOOK", "TITLE", "plan", "run", "load", "verdicts", "CoverageConfig",
           "COVERAGE", "coverage_config", "CovPiece", "source_piece", "groups", "feature_label",
           "coverage_table", "trajectory_table", "group_accuracy_table", "gradnorm_table",
           "set_identity_table",
           "PLANNED", "LABELS"]


@dataclass(frozen=True)
class CoverageConfig:
    """What the page measures at one profile (every piece's config holds it)."""
    radius_quantiles: tuple = (0.25, 0.5, 0.75)  # radii r(q): at r(q) the universe covers a
    #   fraction q of the test set; 0.5 (the median, r) is the page's radius
    grouping: str = "halves"        # easy / hard: halves of the test set by the feature margin
    tsne_classes: tuple = (0, 1, 2)  # Fig. 5(a): the first three classes (the paper's choice)
    tsne_test_per_class: int = 200  # test images per class drawn into the map
    grad_ratios: tuple = (0.05, 0.1, 0.2)  # Fig. 5(b): the ratios whose SelMatch set is trained
    grad_points: int | None = 40    # epochs (log-spaced) at which gradient norms are recorded;
    #   None: every epoch (at quick about 9 process-minutes more per network: 256,000
    #   per-example gradients of 2.1 ms, whatever the ratio, against about 40 x n)
    n_boot: int = 2000              # bootstrap resamples of the test examples (verdicts)
    seed: int = 0


COVERAGE = {"ci": CoverageConfig(tsne_test_per_class=15, grad_ratios=(0.1,), grad_points=4,
                                 n_boot=200),
            "quick": CoverageConfig(), "gpu": CoverageConfig(), "paper": CoverageConfig()}

# the plan's cost beyond the reused sets, in process-minutes (see the module docstring): quick
# extrapolated from measured unit CPU costs, gpu an unmeasured estimate
PLANNED = {"quick": {"feature network (12 epochs on the full training set)": 9.0,
                     "coverage of 21 sets and 2 trajectories, t-SNE": 2.0,
                     "gradient norms at 5 %, 3 networks": 13.0,
                     "gradient norms at 10 %, 3 networks": 14.0,
                     "gradient norms at 20 %, 3 networks": 16.0},   # measured: 34, <5, 16, 12, 12
           "gpu": {"everything, one command (an estimate, NOT measured: no GPU run yet)": 4.0}}


def coverage_config(profile: Profile) -> CoverageConfig:
    return COVERAGE[profile.name]


def feature_label(profile: Profile) -> str:
    """The one line every figure carries: the feature network and the definitions are ours."""
    f = feature_net_config(profile.name)
    data = "full CIFAR-10 train set" if f.train_per_class is None else \
        f"{f.train_per_class}/class of CIFAR-10 train"
    return (f"ours: features of a {f.network} w{f.width} trained on the {data}; "
            f"radius r = median test-to-universe distance; "
            f"easy/hard = margin {coverage_config(profile).grouping}")


# ------------------------------------------------------------------------------------------
# the pieces


@dataclass(frozen=True)
class CovPiece:
    """One results file of the page: ``kind`` is features, set, iterations, tsne or gradnorm."""
    name: str
    kind: str
    ratio: float | None = None
    method: str | None = None       # set and iterations pieces: one of SET_METHODS
    run_index: int | None = None    # random subsets: the Fig. 3 sweep's network

    def load(self, profile: Profile):
        return load_result(f"{PAGE}/{self.name}", profile.name, missing_ok=True,
                           expect_config=piece_config(profile, self))

    def run(self, profile: Profile, device=None, ctx=None):
        ctx = ctx or _Context(profile, device)
        return _RUNNERS[self.kind](ctx, self)


def source_piece(profile: Profile, method: str, ratio: float):
    """The α page's or Table 1's piece holding ``method``'s set at ``ratio`` (None: random)."""
    if method == "random":
        return None
    if method == "selmatch":
        return sc.paper_alpha_piece(profile, ratio)
    name = {"mtt": f"r{ratio:.2f}_mtt", "datm": f"r{ratio:.2f}_datm",
            "window": f"r{ratio:.2f}_a0.0"}[method]
    return next(p for p in sc.alpha_plan(profile) + sc.table1_plan(profile) if p.name == name)


def _random_runs(profile: Profile) -> int:
    return sc._fig3().sweep_config(profile.name).runs if sc.fig3_compatible(profile) is None else 0


def plan(profile: Profile) -> list[CovPiece]:
    """features; a set piece per (ratio, method) and per random subset; the two trajectories at
    the snapshot ratio; the t-SNE map there; a gradient-norm piece per ``grad_ratios``."""
    scale, cfg = sc.scale_config(profile), coverage_config(profile)
    snap = sc.SNAPSHOTS[profile.name][0]
    out = [CovPiece("features", "features")]
    for r in scale.ratios:
        out += [CovPiece(f"r{r:.2f}_{m}", "set", r, m) for m in SET_METHODS if m != "random"]
        out += [CovPiece(f"r{r:.2f}_random-run{k}", "set", r, "random", k)
                for k in range(_random_runs(profile))]
    out += [CovPiece(f"r{snap:.2f}_{m}_iterations", "iterations", snap, m)
            for m in ("mtt", "selmatch")]
    out.append(CovPiece(f"r{snap:.2f}_tsne", "tsne", snap))
    out += [CovPiece(f"r{r:.2f}_gradnorm", "gradnorm", r, "selmatch") for r in cfg.grad_ratios
            if any(math.isclose(r, x) for x in scale.ratios) and _both_parts(scale, r)]
    return out


def _both_parts(scale, ratio: float) -> bool:
    """Whether SelMatch's set at the paper's α holds distilled and selected images per class."""
    ipc = sc.ipc_of(scale, ratio)
    return 0 < math.floor(sc.paper_setting(ratio)["alpha"] * ipc + 1e-9) < ipc


def _sources(profile: Profile, piece: CovPiece) -> list:
    """The α-page / Table 1 pieces whose sets ``piece`` reads."""
    if piece.kind == "tsne":
        return [source_piece(profile, m, piece.ratio) for m in ("mtt", "selmatch")]
    if piece.kind in ("set", "iterations", "gradnorm") and piece.method != "random":
        return [source_piece(profile, piece.method, piece.ratio)]
    return []


# the CoverageConfig fields each kind of piece depends on (its config holds only these, so that a
# change to the radii does not call the t-SNE map or the gradient norms stale)
_FIELDS = {"features": ("radius_quantiles", "grouping"),
           "set": ("radius_quantiles", "grouping"),
           "iterations": ("radius_quantiles", "grouping"),
           "tsne": ("tsne_classes", "tsne_test_per_class", "seed"),
           "gradnorm": ("grad_points", "seed")}


def piece_config(profile: Profile, piece: CovPiece) -> dict:
    scale = sc.scale_config(profile)
    cfg = asdict(coverage_config(profile))
    config = {"version": VERSION, "piece": asdict(piece),
              "coverage": {k: cfg[k] for k in _FIELDS[piece.kind]},
              "feature_net": asdict(feature_net_config(profile.name)),
              "universe_per_class": scale.universe_per_class,
              "test_per_class": scale.test_per_class,
              "sources": [sc.piece_config(profile, s) for s in _sources(profile, piece)]}
    if piece.kind == "iterations":
        config["snapshots"] = sc.expected_snapshots(profile, _sources(profile, piece)[0])
    if piece.method == "random":
        fig3 = sc._fig3()
        config["fig3_point"] = fig3._point_config(fig3.sweep_config(profile.name), piece.ratio,
                                                  None, piece.run_index)
    return config


def run(profile: Profile, device=None, only=None) -> list:
    """Run the missing or stale pieces (and, first, any source set they need that the α page or
    Table 1 has not made yet, into those pages' results)."""
    chosen = [p for p in select(plan(profile), only) if _state(profile, p)[0] is None]
    if not chosen:
        return []
    needed = {s.name: s for p in chosen for s in _sources(profile, p)}
    written = sc.run_pieces(profile, list(needed.values()), device) if needed else []
    ctx = _Context(profile, device)
    return written + [p.run(profile, device, ctx) for p in chosen]


def _state(profile: Profile, piece: CovPiece):
    try:
        return piece.load(profile), None
    except StaleResultError as e:
        return None, str(e)


def load(profile: Profile) -> Loaded:
    return load_pieces(plan(profile), profile)


# ------------------------------------------------------------------------------------------
# computing the pieces


class _Context:
    """What the pieces of one run share: the universe, the feature network and the test set's
    embedding, radii and groups (the ``features`` piece is written the first time). The feature
    network and what is computed from it are made on first use, so that a process remaking a
    missing set distils it while another one trains the feature network, instead of waiting."""

    _FEATURE_STATE = ("model", "feature_accuracy", "test_f", "test_y", "margins", "groups",
                      "radii", "radius")

    def __init__(self, profile: Profile, device=None):
        from ..train import default_device
        self.profile, self.cfg = profile, coverage_config(profile)
        self.device = torch.device(device) if device is not None else default_device()
        self.scale = sc.scale_config(profile)
        self.data = sc.universe(self.scale)
        self._buffer = None

    def __getattr__(self, name):          # only reached while the attribute is not set yet
        if name in _Context._FEATURE_STATE:
            self._make_features()
            return self.__dict__[name]
        raise AttributeError(name)

    def _make_features(self):
        from ..feature_net import feature_network
        from ..train import predict
        import time
        t0 = time.perf_counter()
        ds, _, _, x, y, xt, yt = self.data
        self.model, self.feature_accuracy = feature_network(
            ds, feature_net_config(self.profile.name), self.device)
        self.test_f, self.test_y = self.embed(xt), yt.cpu()
        self.margins = margin(predict(self.model, xt.to(self.device)).cpu(), self.test_y)
        self.groups = difficulty_groups(self.margins, self.cfg.grouping)
        universe_f = self.embed(x)
        self.radii = coverage_radii(self.test_f, self.test_y, universe_f, y.cpu(),
                                    sorted({0.5, *self.cfg.radius_quantiles}))
        self.radius = self.radii[0.5]
        feat = CovPiece("features", "features")
        if _state(self.profile, feat)[0] is None:
            _save(self, feat, {"feature_test_accuracy": self.feature_accuracy,
                               "radius": self.radius,
                               "radii": {f"{q:g}": r for q, r in self.radii.items()},
                               "n_test": len(self.test_y),
                               "n_easy": int(self.groups["easy"].sum()),
                               "n_hard": int(self.groups["hard"].sum()),
                               "median_margin": float(self.margins.median()),
                               "label": feature_label(self.profile)},
                  {"margins": self.margins.float().numpy()}, time.perf_counter() - t0)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        from ..analysis import features
        return features(self.model, images.to(self.device)).cpu()

    def buffer(self):
        if self._buffer is None:
            self._buffer = sc.experts(self.scale, self.data, self.device)
        return self._buffer

    def set_of(self, piece: CovPiece, method: str | None = None):
        src = source_piece(self.profile, method or piece.method, piece.ratio)
        return sc.ensure_set(self.profile, src, self.data,
                             self.buffer() if src.needs_experts else None, self.device)

    def cover(self, images: torch.Tensor, classes: torch.Tensor):
        """({q: {overall, easy, hard}}, covered bits (quantiles, ceil(N/8)), each test image's
        distance to its nearest same-class image of the set (N,) float32)."""
        d = nearest_same_class(self.test_f, self.test_y, self.embed(images), classes.cpu())
        out, bits = {}, []
        for q in self.cfg.radius_quantiles:
            c = coverage_from_distances(d, self.radii[q], self.groups)
            out[f"{q:g}"] = {"overall": c.overall, **c.groups}
            bits.append(np.packbits(c.covered.numpy()))
        return out, np.stack(bits), d.float().numpy()


def _save(ctx: _Context, piece: CovPiece, data: dict, arrays: dict | None = None, wall=0.0):
    return save_result(f"{PAGE}/{piece.name}", ctx.profile.name, data,
                       piece_config(ctx.profile, piece), [ctx.cfg.seed], wall, ctx.device,
                       arrays=arrays)


def _run_features(ctx: _Context, piece: CovPiece):
    _ = ctx.radius                    # the feature state, made (and its piece written) once
    return load_result(f"{PAGE}/features", ctx.profile.name).path


def _run_set(ctx: _Context, piece: CovPiece):
    from ..results import Timer
    with Timer() as t:
        if piece.method == "random":
            idx = sc.fig3_random_subset(ctx.profile, piece.ratio, piece.run_index, ctx.data)
            images, classes, n_sel = ctx.data[3][idx], ctx.data[4][idx], len(idx)
            pixels = None
        else:
            s = ctx.set_of(piece)
            images, classes, n_sel = s.images, s.classes, s.num_selected
            # a fingerprint of the set measured here, beside the one its source page recorded
            # when it evaluated the set: a set remade on another kind of CPU is the same
            # computation from the same seed, but not bit-identical (rounding differs)
            pixels = sc.pixel_stats(s.images, s.is_selected)
        cov, bits, nearest = ctx.cover(images, classes)
    q = ctx.cfg.radius_quantiles
    return _save(ctx, piece, {"method": piece.method, "ratio": piece.ratio,
                              "run": piece.run_index, "n_images": len(images),
                              "n_selected": n_sel, "pixels": pixels,
                              "radius": ctx.radius, "coverage": cov,
                              "quantiles": list(q), "radii": [ctx.radii[x] for x in q]},
                 {"covered_bits": bits, "n_test": np.int64(len(ctx.test_y)),
                  "nearest": nearest}, t.seconds)


def _run_iterations(ctx: _Context, piece: CovPiece):
    from ..results import Timer
    src = source_piece(ctx.profile, piece.method, piece.ratio)
    with Timer() as t:
        ctx.set_of(piece)                        # remade with its snapshots when missing
        snaps = sc.snapshots(ctx.profile, src)
        expected = sc.expected_snapshots(ctx.profile, src)
        if sorted(snaps) != expected:
            raise RuntimeError(f"{src.page}/{src.name} kept the snapshots {sorted(snaps)}, not "
                               f"{expected}: delete its cache folder "
                               f"{sc.piece_folder(ctx.profile, src)} and rerun this command")
        rows = {it: ctx.cover(s.images, s.classes)[0] for it, s in snaps.items()}
    cov = {k: {g: [rows[it][k][g] for it in expected] for g in ("overall", "easy", "hard")}
           for k in rows[expected[0]]}
    return _save(ctx, piece, {"method": piece.method, "ratio": piece.ratio,
                              "iterations": expected, "coverage": cov}, None, t.seconds)


def _run_tsne(ctx: _Context, piece: CovPiece):
    from ..analysis import tsne
    from ..results import Timer
    cfg = ctx.cfg
    gen = torch.Generator().manual_seed(cfg.seed)
    with Timer() as t:
        test_idx = torch.cat([torch.nonzero(ctx.test_y == c).flatten()[torch.randperm(
            int((ctx.test_y == c).sum()), generator=gen)[:cfg.tsne_test_per_class]]
            for c in cfg.tsne_classes])
        feats, kind, cls = [ctx.test_f[test_idx]], [np.zeros(len(test_idx))], [ctx.test_y[test_idx]]
        for code, m in ((1, "mtt"), (2, "selmatch")):
            s = ctx.set_of(piece, m)
            keep = torch.isin(s.classes, torch.tensor(cfg.tsne_classes))
            feats.append(ctx.embed(s.images[keep]))
            kind.append(np.where(s.is_selected[keep].numpy(), code + 1, code) if m == "selmatch"
                        else np.full(int(keep.sum()), code))
            cls.append(s.classes[keep])
        xy = tsne(torch.cat(feats), seed=cfg.seed)
    names = [ctx.data[0].classes[c] for c in cfg.tsne_classes]
    return _save(ctx, piece, {"ratio": piece.ratio, "classes": list(cfg.tsne_classes),
                              "class_names": names,
                              "kinds": ["test", "MTT", "SelMatch D_distill", "SelMatch D_select"],
                              "n_points": len(xy)},
                 {"xy": xy.astype(np.float32), "kind": np.concatenate(kind).astype(np.int8),
                  "cls": torch.cat(cls).numpy().astype(np.int8)}, t.seconds)


def _run_gradnorm(ctx: _Context, piece: CovPiece):
    from ..analysis import GradNormRecorder, spread_epochs
    from ..evaluate import evaluate_selmatch
    from ..train import predict
    src = source_piece(ctx.profile, "selmatch", piece.ratio)
    s = ctx.set_of(piece)
    if s.num_selected in (0, len(s)):
        raise ValueError(f"{src.name} has {s.num_selected} of {len(s)} images selected: Fig. 5(b) "
                         f"needs both D_select and D_distill")
    config = sc.eval_config(ctx.scale, len(s))
    rec = GradNormRecorder(s.images, s.labels, {"select": s.is_selected,
                                                "distill": ~s.is_selected},
                           None if ctx.cfg.grad_points is None else
                           spread_epochs(config.epochs, ctx.cfg.grad_points))
    ev = evaluate_selmatch(s.images, s.labels, ctx.data[5], ctx.data[6], s.is_selected,
                           config=config, num_classes=10, device=ctx.device, epoch_hook=rec)
    traj = rec.trajectories()
    m = margin(predict(ctx.model, s.images.to(ctx.device)).cpu(), s.classes)
    source = sc.load_pieces(ctx.profile, [src]).found.get(src.name)
    source_acc = None if source is None else list(source.data["accuracies"])
    return _save(ctx, piece, {
        "ratio": piece.ratio, "alpha": src.alpha, "n_select": s.num_selected,
        "n_distill": len(s) - s.num_selected, "epochs": traj["epochs"].tolist(),
        "select": traj["select"].tolist(), "distill": traj["distill"].tolist(),
        "accuracies": list(ev.accuracies), "source_accuracies": source_acc,
        "same_as_source": source_acc == list(ev.accuracies),
        "margin_select_mean": float(m[s.is_selected].mean()),
        "margin_distill_mean": float(m[~s.is_selected].mean()), "eval_epochs": ev.epochs},
        {"margin_select": m[s.is_selected].numpy(), "margin_distill": m[~s.is_selected].numpy()},
        ev.wall_time_s)


_RUNNERS = {"features": _run_features, "set": _run_set, "iterations": _run_iterations,
            "tsne": _run_tsne, "gradnorm": _run_gradnorm}


# ------------------------------------------------------------------------------------------
# reading the results


def groups(profile: Profile) -> dict | None:
    """{"easy", "hard"}: (N_test,) bool masks from the committed ``features`` piece (None when it
    is missing or stale)."""
    res, _ = _state(profile, CovPiece("features", "features"))
    if res is None:
        return None
    g = difficulty_groups(torch.as_tensor(res.arrays["margins"]), coverage_config(profile).grouping)
    return {k: v.numpy() for k, v in g.items()}


def coverage_table(loaded, q: float = 0.5):
    """One row per set piece found: ratio, method, run, overall / easy / hard coverage (fractions)
    at the radius r(q), and gap = easy - hard."""
    import pandas as pd
    rows = []
    for r in loaded.found.values():
        if "coverage" not in r.data or "iterations" in r.data:
            continue
        c = r.data["coverage"][f"{q:g}"]
        rows.append({"ratio": r.data["ratio"], "method": r.data["method"], "run": r.data["run"],
                     **c, "gap": c["easy"] - c["hard"]})
    return pd.DataFrame(rows, columns=["ratio", "method", "run", "overall", "easy", "hard", "gap"])


def trajectory_table(loaded, q: float = 0.5):
    """One row per (method, iteration) of the Fig. 1(b) pieces found."""
    import pandas as pd
    rows = []
    for r in loaded.found.values():
        if "iterations" not in r.data:
            continue
        c = r.data["coverage"][f"{q:g}"]
        rows += [{"method": r.data["method"], "iteration": it, "overall": c["overall"][i],
                  "easy": c["easy"][i], "hard": c["hard"][i]}
                 for i, it in enumerate(r.data["iterations"])]
    return pd.DataFrame(rows, columns=["method", "iteration", "overall", "easy", "hard"])


def group_accuracy_table(profile: Profile, grp: dict | None = None):
    """One row per evaluation network of the sets at every ratio (MTT, DATM, SelMatch at the
    paper's α, the window alone, and the Fig. 3 sweep's random subsets): accuracy overall, on the
    easy and on the hard half, from the committed per-test-example correctness."""
    import pandas as pd
    from ..evaluate import load_correct
    grp = grp if grp is not None else groups(profile)
    cols = ["ratio", "method", "network", "overall", "easy", "hard"]
    if grp is None:
        return pd.DataFrame(columns=cols)
    rows = []
    for ratio in sc.scale_config(profile).ratios:
        for m in SET_METHODS[:-1]:
            src = source_piece(profile, m, ratio)
            res = sc.load_pieces(profile, [src]).found.get(src.name)
            if res is not None:
                rows += _acc_rows(ratio, m, load_correct(res), grp)
    for (ratio, beta, run), correct in sc.fig3_correct(profile).items():
        if beta is None:
            rows += [{**row, "network": run} for row in _acc_rows(ratio, "random", correct, grp)]
    return pd.DataFrame(rows, columns=cols)


def _acc_rows(ratio, method, correct, grp) -> list[dict]:
    acc = group_accuracy(correct, {"overall": np.ones(len(grp["easy"]), bool), **grp})
    return [{"ratio": ratio, "method": method, "network": k,
             **{g: float(v[k]) for g, v in acc.items()}} for k in range(len(acc["easy"]))]


def set_identity_table(loaded, profile: Profile):
    """One row per distilled set piece found: the machine and the distilled pixels' std where its
    source page evaluated the set, and where this page measured its coverage. The sets live in the
    cache; when it is lost they are remade from their seeds, and on another kind of CPU the
    remade set is the same computation but not bit-identical: this says how far apart they are."""
    import pandas as pd
    rows = []
    for r in loaded.found.values():
        d = r.data
        if "coverage" not in d or "iterations" in d or d["method"] == "random":
            continue
        src = source_piece(profile, d["method"], d["ratio"])
        res = sc.load_pieces(profile, [src]).found.get(src.name)
        here = ((d.get("pixels") or {}).get("distilled") or {}).get("std")
        there = None if res is None else \
            ((res.data.get("pixels") or {}).get("distilled") or {}).get("std")
        rows.append({"ratio": d["ratio"], "method": d["method"],
                     "evaluated on": None if res is None else res.provenance["device"],
                     "measured on": r.provenance["device"],
                     "pixel std, evaluated set": there, "pixel std, measured set": here,
                     "relative difference": None if None in (here, there) or not there
                     else abs(here - there) / there})
    return pd.DataFrame(rows).sort_values(["ratio", "method"]) if rows else pd.DataFrame()


def gradnorm_table(loaded):
    """One row per (ratio, network, recorded epoch): mean gradient norm on D_select, D_distill."""
    import pandas as pd
    rows = []
    for r in loaded.found.values():
        if "select" not in r.data:
            continue
        d = r.data
        for k, (sel, dis) in enumerate(zip(d["select"], d["distill"])):
            rows += [{"ratio": d["ratio"], "network": k, "epoch": e, "select": a, "distill": b}
                     for e, a, b in zip(d["epochs"], sel, dis)]
    return pd.DataFrame(rows, columns=["ratio", "network", "epoch", "select", "distill"])


def verdicts(loaded, profile: Profile | None = None) -> list:
    """The coverage claims (bootstrap over test examples), the hard-group accuracy claim (OLS
    interaction over networks), and D_select against D_distill (gradient norm over networks,
    feature-net margin over images); see :mod:`ddbook.figures._coverage_verdicts`."""
    from ._coverage_verdicts import page_verdicts
    return page_verdicts(loaded, profile)
