"""The DATM page: DATM's "match early / late / all" figure (papers.md §10), as pieces at a profile.

DATM's CIFAR-10 settings with the start epochs confined to one range of the expert trajectory, at
a small and a large IPC (pieces ``datm-ranges-ipc<K>-<range>``), and the experts' own curves
(piece ``datm-experts``: each expert's test accuracy after every epoch). The ranges are **ours**
(DATM does not state them), defined one of two ways (:data:`SEGMENTS` per profile):

- ``epochs``: early = [0, 20), late = [40, 60), all = [0, 60) epochs of DATM's 100-epoch experts,
  scaled with the profile's expert length (the first ``quick`` runs, replaced);
- ``progress``: by training progress, the experts' mean test-accuracy gain so far as a fraction of
  their total gain (:func:`ddbook.experts.training_progress`): early = the start epochs before half
  of the gain, late = from 80 % of the gain to the end of the usable trajectory, all = the whole
  usable trajectory (:data:`PROGRESS_RANGES`). This carries DATM's idea (early = the easy patterns
  learned first) over to short experts, where a fixed fraction of the epochs would not.

Every run writes its own results file (``results/<profile>/distill/...``) and checkpoints, so
``python -m ddbook reproduce datm-ranges --profile quick`` resumes where it stopped.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from dataclasses import replace as with_fields
from pathlib import Path

from ..presets import get_preset, resolve, scaled
from ..profiles import Profile
from ..results import Timer, load_result, save_result
from ._common import DistillRun, Loaded, as_profile, load_pieces, run_pieces

__all__ = ["NAME", "NOTEBOOK", "TITLE", "plan", "run", "load", "verdicts", "DATM_RANGES",
           "PROGRESS_RANGES", "SEGMENTS", "datm_range_overrides", "progress_range_overrides",
           "fit_excess", "FIT_EXCESS_NATS", "range_runs", "by_ipc"]

NAME = "datm-ranges"
NOTEBOOK = "datm_early_late"
TITLE = "DATM: matching early, late or all trajectory segments, at a small and a large IPC"

DATM_RANGES = {"early": (0, 20), "all": (0, 60), "late": (40, 60)}   # of 100 epochs: ours
DATM_PAPER_EPOCHS = 100
# by training progress (ours): [lo, hi) fractions of the experts' test-accuracy gain; hi = 1.0
# reaches to the end of the usable trajectory (t + M <= E)
PROGRESS_RANGES = {"early": (0.0, 0.5), "all": (0.0, 1.0), "late": (0.8, 1.0)}
# how each profile defines its ranges (every profile: by progress; "epochs" stays available, and was
# the definition of the first quick runs, in this repository's history before the progress rerun)
SEGMENTS = {"ci": "progress", "quick": "progress", "gpu": "progress", "paper": "progress"}
# the evaluation networks fit their training set when their final training loss is within this of
# its floor, the mean entropy of the (soft) labels; otherwise the large-IPC claim is not testable
FIT_EXCESS_NATS = 0.1
EXPERTS_PIECE = "datm-experts"


def datm_range_overrides(which: str, expert_epochs: int, m: int) -> dict:
    """Start epochs confined to DATM_RANGES[which], scaled from 100-epoch experts to ``expert_epochs``:
    t ~ UniformInt[floor(lo·f), floor(hi·f)), f = E/100, capped so that t + M <= E; no expansion."""
    if which not in DATM_RANGES:
        raise ValueError(f"unknown range {which!r}; choose one of {list(DATM_RANGES)}")
    lo, hi = DATM_RANGES[which]
    f = expert_epochs / DATM_PAPER_EPOCHS
    t_max = max(1, min(math.floor(hi * f), expert_epochs - m + 1))
    t_min = min(math.floor(lo * f), t_max - 1)
    return {"match.min_start_epoch": t_min, "match.max_start_epoch": t_max,
            "match.initial_max_start_epoch": None, "match.expansion_end": None}


# (small, large) IPC, the base preset of each and the evaluation epochs at the large one
DATM_IPCS = {"ci": ((10, "datm-cifar10-ipc10"), (15, "datm-cifar10-ipc1000")),
             "quick": ((10, "datm-cifar10-ipc10"), (500, "datm-cifar10-ipc1000")),
             "gpu": ((10, "datm-cifar10-ipc10"), (1000, "datm-cifar10-ipc1000")),
             "paper": ((10, "datm-cifar10-ipc10"), (1000, "datm-cifar10-ipc1000"))}
# quick: the large set's evaluation keeps the small set's number of SGD steps (about 300 epochs
# of 100 images = 30,000 images seen), not its epochs: 5,000 images x 6 epochs
DATM_LARGE_EVAL_EPOCHS = {"quick": 6}


def range_runs(profile: Profile) -> list[DistillRun]:
    """Three epoch-fraction ranges x (small, large) IPC, on DATM's CIFAR-10 settings at ``profile``
    (the ``epochs`` definition; with ``progress`` the same runs get other start epochs)."""
    runs, name = [], profile.name
    for ipc, base in DATM_IPCS[name]:
        p = scaled(get_preset(base), name)
        over = {"ipc": ipc}
        if ipc != DATM_IPCS[name][0][0] and name in DATM_LARGE_EVAL_EPOCHS:
            over["eval_epochs"] = DATM_LARGE_EVAL_EPOCHS[name]
        if name == "quick":   # share MTT's ZCA experts: no GSAM at quick (listed on the page)
            over["experts.gsam"] = False
            over["experts.epochs"] = profile.expert_epochs
        if name == "ci":      # 6-epoch experts, so that the three ranges differ at all
            over["experts.epochs"] = 6
        epochs = over.get("experts.epochs", p.experts.epochs)
        for which in DATM_RANGES:
            runs.append(DistillRun(
                f"datm-ranges-ipc{ipc}-{which}", base,
                {**over, **datm_range_overrides(which, epochs, p.match.expert_epochs)},
                None, f"IPC {ipc}, {which}"))
    return runs


def progress_range_overrides(which: str, progress, expert_epochs: int, m: int) -> dict:
    """Start epochs confined to PROGRESS_RANGES[which] of the experts' training ``progress``
    (:func:`ddbook.experts.training_progress`, one value per snapshot): t ~ UniformInt[t_lo,
    t_hi) where t_lo is the first epoch at progress lo and t_hi the first at progress hi (for
    hi = 1.0 the end of the usable trajectory), capped so that t + M <= E; no expansion."""
    from ..experts import progress_epoch

    if which not in PROGRESS_RANGES:
        raise ValueError(f"unknown range {which!r}; choose one of {list(PROGRESS_RANGES)}")
    lo, hi = PROGRESS_RANGES[which]
    last = expert_epochs - m + 1            # exclusive bound on t: t + M <= E
    t_max = last if hi >= 1.0 else progress_epoch(progress, hi)
    t_max = max(1, min(t_max, last))
    t_min = min(progress_epoch(progress, lo), t_max - 1)
    return {"match.min_start_epoch": t_min, "match.max_start_epoch": t_max,
            "match.initial_max_start_epoch": None, "match.expansion_end": None}


@dataclass(frozen=True)
class ExpertCurves:
    """The experts the range runs match (trained, or found in the cache): each one's test
    accuracy after every epoch and its training loss, and their mean training progress."""
    source: DistillRun          # any range run: they all share the experts and the data
    name: str = EXPERTS_PIECE

    def preset(self, profile: Profile):
        return resolve(self.source.preset, profile.name, self.source.overrides)

    def config(self, profile: Profile) -> dict:
        p = self.preset(profile)
        return {"experts": asdict(p.experts), "n_experts": p.n_experts, "dataset": p.dataset,
                "zca": p.zca, "train_per_class": p.train_per_class,
                "test_per_class": p.test_per_class, "seed": p.loop.seed}

    def load(self, profile: Profile):
        return load_result(f"distill/{self.name}", profile.name, missing_ok=True,
                           expect_config=self.config(profile))

    def run(self, profile: Profile, device=None) -> Path:
        from ..experts import train_experts, training_progress
        from ..presets import _data

        p = self.preset(profile)
        with Timer() as t:
            data = _data(p)
            buffer = train_experts(p.experts, data[3], data[4], p.n_experts, data[5], data[6],
                                   num_classes=data[0].num_classes, device=device)
            info = [buffer.info(i) for i in range(p.n_experts)]
        accuracy = [r["test_accuracy"] for r in info]
        return save_result(f"distill/{self.name}", profile.name,
                           {"test_accuracy": accuracy, "train_loss": [r["train_loss"] for r in info],
                            "progress": training_progress(accuracy).tolist(),
                            "epochs": p.experts.epochs},
                           self.config(profile), [p.experts.seed + i for i in range(p.n_experts)],
                           t.seconds, device)


@dataclass(frozen=True)
class ProgressRun:
    """A range run whose start epochs come from the experts' training progress (the
    ``datm-experts`` piece, which must exist first)."""
    base: DistillRun            # the run with the epoch-fraction range (replaced here)
    which: str
    curves: ExpertCurves

    @property
    def name(self) -> str:
        return self.base.name

    def resolved(self, profile: Profile) -> DistillRun | None:
        """The run with its progress-defined start epochs; None while the curves are missing."""
        curves = self.curves.load(profile)
        if curves is None:
            return None
        p = resolve(self.base.preset, profile.name, self.base.overrides)
        over = progress_range_overrides(self.which, curves.data["progress"], p.experts.epochs,
                                        p.match.expert_epochs)
        return with_fields(self.base, overrides={**self.base.overrides, **over})

    def load(self, profile: Profile):
        run = self.resolved(profile)
        return None if run is None else run.load(profile)

    def run(self, profile: Profile, device=None) -> Path:
        run = self.resolved(profile)
        if run is None:
            raise FileNotFoundError(f"{self.name} takes its start epochs from the experts' "
                                    f"progress: run `python -m ddbook reproduce datm-ranges "
                                    f"--profile {profile.name} --only {EXPERTS_PIECE}` first")
        return run.run(profile, device)


def plan(profile: Profile) -> list:
    """The experts' curves, then three ranges x (small, large) IPC, the ranges defined as
    :data:`SEGMENTS` says for ``profile``."""
    runs = range_runs(profile)
    curves = ExpertCurves(runs[0])
    if SEGMENTS[profile.name] == "epochs":
        return [curves, *runs]
    return [curves, *(ProgressRun(r, r.name.rsplit("-", 1)[1], curves) for r in runs)]


def run(profile: Profile, device=None, only=None) -> list:
    """Run every missing or stale range run (resumable); return the results paths. ``only``: the
    runs whose name contains it (e.g. ``late``, ``ipc500``)."""
    profile = as_profile(profile)
    return run_pieces(plan(profile), profile, device, only)


def load(profile: Profile) -> Loaded:
    """Every range run at ``profile``: found (finished and current), missing, stale."""
    profile = as_profile(profile)
    return load_pieces(plan(profile), profile)


def fit_excess(result) -> float:
    """How far the evaluation networks are from fitting the distilled set: their mean final
    training loss minus its floor, the mean entropy of the set's labels (soft labels: the softmax of
    the saved label logits; hard labels: 0), in nats."""
    import torch

    loss = result.data["result_at_declared_iteration"]["train_loss"]
    labels = (result.arrays or {}).get("labels")
    floor = 0.0
    if labels is not None and torch.as_tensor(labels).is_floating_point() and labels.ndim == 2:
        prob = torch.as_tensor(labels).float().softmax(1)
        floor = float(-(prob * prob.clamp_min(1e-12).log()).sum(1).mean())
    return sum(loss) / len(loss) - floor


def by_ipc(found: dict) -> dict:
    """The range runs among ``found`` as {IPC: {range: Result}}, IPCs ascending."""
    out: dict = {}
    for name, r in found.items():
        if name.startswith("datm-ranges-ipc"):
            ipc, which = name[len("datm-ranges-ipc"):].rsplit("-", 1)
            out.setdefault(int(ipc), {})[which] = r
    return dict(sorted(out.items()))


def verdicts(loaded) -> list:
    """DATM's claim, tested on the accuracies of the evaluation networks (Welch's t; runs =
    networks trained on one distilled set per range): at the small IPC, matching early (and all)
    beats matching late; at the large IPC, late beats early (and all). A comparison whose
    evaluation networks do not fit their training set (final loss more than FIT_EXCESS_NATS above
    its floor) is not testable at this scale: inconclusive, whatever its interval."""
    from ..verdicts import INCONCLUSIVE, compare_means

    found = loaded.found if isinstance(loaded, Loaded) else loaded
    out = []
    for ipc, res in by_ipc(found).items():
        profile = next(iter(res.values())).provenance["profile"]
        small = ipc == DATM_IPCS[profile][0][0]       # the profile's small IPC, else its large
        pairs = [("early", "late"), ("all", "late")] if small else [("late", "early"),
                                                                     ("late", "all")]
        for a, b in pairs:
            if a not in res or b not in res:
                continue
            acc = [res[x].data["result_at_declared_iteration"]["accuracies"] for x in (a, b)]
            v = compare_means(*acc, f"IPC {ipc}: matching {a} segments beats matching {b} ones")
            excess = max(fit_excess(res[x]) for x in (a, b))
            notes = ["runs = evaluation networks of one distilled set per range"]
            if excess > FIT_EXCESS_NATS:
                notes.insert(0, f"not testable at this scale: the evaluation networks do not fit "
                                f"their training set (final training loss {excess:.2f} nats above "
                                f"its floor, the labels' entropy; the limit is "
                                f"{FIT_EXCESS_NATS:g})")
                v = with_fields(v, outcome=INCONCLUSIVE)
            out.append(with_fields(v, note="; ".join(notes + ([v.note] if v.note else []))))
    return out
