"""The DATM page: DATM's "match early / late / all" figure (papers.md §10), as pieces at a profile.

DATM's CIFAR-10 settings with the start epochs confined to one range of the expert trajectory, at
a small and a large IPC (pieces ``datm-ranges-ipc<K>-<range>``), and the experts' own curves
(piece ``datm-experts``: each expert's test accuracy after every epoch), and the final evaluation of
each range run's set (pieces ``datm-eval-ipc<K>-<range>``: more networks than the run's own
evaluation curve, and at the large IPC enough epochs to fit the set; :class:`FinalEval`). The
ranges are **ours**
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
from ._common import (DistillRun, Loaded, as_profile, has_final_set, load_pieces,
                      run_pieces)

__all__ = ["NAME", "NOTEBOOK", "TITLE", "plan", "run", "load", "verdicts", "DATM_RANGES",
           "PROGRESS_RANGES", "SEGMENTS", "datm_range_overrides", "progress_range_overrides",
           "fit_excess", "label_entropy", "FIT_EXCESS_NATS", "FIT_TRAIN_ACCURACY", "range_runs", "by_ipc",
           "FinalEval", "FINAL_EVAL", "final_evals", "judged"]

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
# the evaluation networks fit their training set when they classify at least FIT_TRAIN_ACCURACY of
# it (no augmentation; soft labels: their argmax) or, for evaluations that did not record that,
# when their final training loss is within FIT_EXCESS_NATS of its floor, the mean entropy of the
# (soft) labels; otherwise the comparison is not testable
FIT_TRAIN_ACCURACY = 0.95
FIT_EXCESS_NATS = 0.1
EXPERTS_PIECE = "datm-experts"
# the final evaluation of every range run's set (what the verdicts use): networks per set and, per
# IPC, training epochs (absent: the run's own evaluation epochs). quick: at IPC 500 the run's curve
# trains 6 epochs (cheap, for the curve) and underfits: the late set's two curve networks reached
# 54.6 and 53.6 %, their loss 0.32 nats above the floor; one more network of it (seed 5000) reached
# 63.3 / 64.6 % at 30 / 60 epochs, its loss 0.115 / 0.104 nats above (flat: converged), so 60
FINAL_EVAL = {"ci": (3, {}), "quick": (5, {500: 60}), "gpu": (5, {}), "paper": (5, {})}


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


@dataclass(frozen=True)
class FinalEval:
    """The final evaluation of one range run's distilled set (``synset_final.pt`` in its run
    folder): the run's own protocol (DATM's: learned step size, soft cross-entropy, DSA) with
    :data:`FINAL_EVAL`'s number of networks and epochs, the networks seeded as the run's own
    (so with the same epochs its first networks repeat the run's declared evaluation). Stale when
    the run is rerun (its config hash is part of this piece's config)."""
    range_run: object           # the range run (ProgressRun or DistillRun)

    @property
    def name(self) -> str:
        return "datm-eval-" + self.range_run.name[len("datm-ranges-"):]

    def config(self, profile: Profile, source) -> dict:
        declared = source.data["result_at_declared_iteration"]["config"]
        runs, epochs = FINAL_EVAL[profile.name]
        ipc = int(self.range_run.name[len("datm-ranges-ipc"):].rsplit("-", 1)[0])
        return {"source": self.range_run.name,
                "source_config_hash": source.provenance["config_hash"],
                "eval": {**declared, "runs": runs, "epochs": epochs.get(ipc, declared["epochs"])}}

    def load(self, profile: Profile):
        source = self.range_run.load(profile)
        if source is None:
            return None
        return load_result(f"distill/{self.name}", profile.name, missing_ok=True,
                           expect_config=self.config(profile, source))

    def run(self, profile: Profile, device=None) -> Path:
        """Evaluate (the range run must be finished, its set still in the cache)."""
        import torch

        from ..evaluate import MTTEvalConfig, evaluate_mtt
        from ..presets import _data
        from ._common import final_set

        source = self.range_run.load(profile)
        if source is None:
            raise FileNotFoundError(f"{self.name} evaluates {self.range_run.name}'s final set: "
                                    f"run `python -m ddbook reproduce datm-ranges --profile "
                                    f"{profile.name} --only {self.range_run.name}` first")
        config = self.config(profile, source)
        run = self.range_run.resolved(profile) if isinstance(self.range_run, ProgressRun) \
            else self.range_run
        data = _data(resolve(run.preset, profile.name, run.overrides))
        with Timer() as t:
            synset = final_set(source)
            ev = evaluate_mtt(synset.images, synset.labels, synset.syn_lr, data[5], data[6],
                              MTTEvalConfig(**config["eval"]), num_classes=data[0].num_classes,
                              device=device)
        out = {**ev.to_dict(), "label_entropy": label_entropy(synset.labels),
               "n_images": len(synset),
               "label": "final set, final evaluation (more networks; at the large IPC, epochs "
                        "enough to fit)"}
        return save_result(f"distill/{self.name}", profile.name, out, config,
                           list(ev.seeds), t.seconds, device,
                           arrays={**ev.correct_arrays(),
                                   "labels": torch.as_tensor(synset.labels).float()})


def plan(profile: Profile) -> list:
    """The experts' curves, then three ranges x (small, large) IPC, the ranges defined as
    :data:`SEGMENTS` says for ``profile``, then the final evaluation of each range run's set."""
    runs = range_runs(profile)
    curves = ExpertCurves(runs[0])
    if SEGMENTS[profile.name] != "epochs":
        runs = [ProgressRun(r, r.name.rsplit("-", 1)[1], curves) for r in runs]
    return [curves, *runs, *(FinalEval(r) for r in runs)]


def run(profile: Profile, device=None, only=None) -> list:
    """Run every missing or stale piece (resumable); return the results paths. ``only``: the
    pieces whose name contains it (e.g. ``late``, ``ipc500``, ``datm-eval``). A finished range run
    whose final evaluation is still to be made but whose set has left the cache (a fresh machine)
    is run again first, so that there is a set to evaluate."""
    profile = as_profile(profile)
    pieces = plan(profile)
    evals = [f for f in pieces if isinstance(f, FinalEval)]
    done = load_pieces(evals, profile).found
    pending = {f.range_run.name for f in evals if f.name not in done}

    def rerun(piece, result) -> bool:
        return piece.name in pending and not has_final_set(result)

    return run_pieces(pieces, profile, device, only, rerun)


def load(profile: Profile) -> Loaded:
    """Every range run at ``profile``: found (finished and current), missing, stale."""
    profile = as_profile(profile)
    return load_pieces(plan(profile), profile)


def label_entropy(labels) -> float:
    """The floor of the soft cross-entropy a network can reach on a set: the mean entropy of its
    labels (soft label logits: their softmax; hard labels: 0), in nats."""
    import torch

    if labels is None:
        return 0.0
    labels = torch.as_tensor(labels)
    if not labels.is_floating_point() or labels.ndim != 2:
        return 0.0
    prob = labels.float().softmax(1)
    return float(-(prob * prob.clamp_min(1e-12).log()).sum(1).mean())


def fit_excess(result) -> float:
    """How far the evaluation networks are from fitting the distilled set: their mean final
    training loss minus its floor (:func:`label_entropy` of the set's saved labels), in nats."""
    loss = result.data["result_at_declared_iteration"]["train_loss"]
    return sum(loss) / len(loss) - label_entropy((result.arrays or {}).get("labels"))


def _by_ipc(found: dict, prefix: str) -> dict:
    out: dict = {}
    for name, r in found.items():
        if name.startswith(prefix):
            ipc, which = name[len(prefix):].rsplit("-", 1)
            out.setdefault(int(ipc), {})[which] = r
    return dict(sorted(out.items()))


def by_ipc(found: dict) -> dict:
    """The range runs among ``found`` as {IPC: {range: Result}}, IPCs ascending."""
    return _by_ipc(found, "datm-ranges-ipc")


def final_evals(found: dict) -> dict:
    """The final evaluations (:class:`FinalEval`) among ``found`` as {IPC: {range: Result}}."""
    return _by_ipc(found, "datm-eval-ipc")


def judged(found: dict) -> dict:
    """What the verdicts judge, per {IPC: {range: {"accuracies", "networks", "epochs", "source",
    "fit_excess", "train_accuracy", "fits", "fit"}}}: the final evaluation where it exists, else the
    run's declared one; ``fits`` whether its networks fit their training set (``fit`` says by what
    measure: training-set accuracy where recorded, else the loss above its floor)."""
    finals, out = final_evals(found), {}
    for ipc, res in by_ipc(found).items():
        for which, r in res.items():
            f = finals.get(ipc, {}).get(which)
            if f is not None:
                d, loss = f.data, f.data["train_loss"]
                row = {"source": "final evaluation",
                       "fit_excess": sum(loss) / len(loss) - d["label_entropy"]}
            else:
                d = r.data["result_at_declared_iteration"]
                row = {"source": "the run's declared evaluation", "fit_excess": fit_excess(r)}
            train = d.get("train_accuracy") or None
            row["train_accuracy"] = sum(train) / len(train) if train else None
            if train:
                row["fits"] = row["train_accuracy"] >= FIT_TRAIN_ACCURACY
                row["fit"] = (f"training-set accuracy {100 * row['train_accuracy']:.1f} % (the "
                              f"limit {100 * FIT_TRAIN_ACCURACY:g} %)")
            else:
                row["fits"] = row["fit_excess"] <= FIT_EXCESS_NATS
                row["fit"] = (f"final training loss {row['fit_excess']:.2f} nats above its floor, "
                              f"the labels' entropy (the limit {FIT_EXCESS_NATS:g})")
            out.setdefault(ipc, {})[which] = {**row, "accuracies": d["accuracies"],
                                              "epochs": d["epochs"],
                                              "networks": len(d["accuracies"])}
    return out


def verdicts(loaded) -> list:
    """DATM's claim, tested on the accuracies of the evaluation networks (Welch's t; runs =
    networks trained on one distilled set per range): at the small IPC, matching early (and all)
    beats matching late; at the large IPC, late beats early (and all). A comparison whose
    evaluation networks do not fit their training set (:func:`judged`: training-set accuracy under
    FIT_TRAIN_ACCURACY, or where that was not recorded a final loss more than FIT_EXCESS_NATS above
    its floor) is not testable at this scale: inconclusive, whatever its interval. Each set is
    judged by its final evaluation (:class:`FinalEval`) where it exists, else by its run's
    declared evaluation (:func:`judged`; the note says which)."""
    from ..verdicts import INCONCLUSIVE, NOT_TESTABLE, compare_means

    found = loaded.found if isinstance(loaded, Loaded) else loaded
    out = []
    runs = by_ipc(found)
    for ipc, res in judged(found).items():
        profile = next(iter(runs[ipc].values())).provenance["profile"]
        small = ipc == DATM_IPCS[profile][0][0]       # the profile's small IPC, else its large
        pairs = [("early", "late"), ("all", "late")] if small else [("late", "early"),
                                                                     ("late", "all")]
        for a, b in pairs:
            if a not in res or b not in res:
                continue
            acc = [res[x]["accuracies"] for x in (a, b)]
            v = compare_means(*acc, f"IPC {ipc}: matching {a} segments beats matching {b} ones")
            used = sorted({res[x]["source"] for x in (a, b)})
            notes = [f"runs = evaluation networks of one distilled set per range "
                     f"({' and '.join(used)})"]
            unfit = [f"{x}: {res[x]['fit']}" for x in (a, b) if not res[x]["fits"]]
            if unfit:
                notes.insert(0, f"{NOT_TESTABLE} at this scale: the evaluation networks do not fit "
                                f"their training set ({' and '.join(unfit)})")
                v = with_fields(v, outcome=INCONCLUSIVE)
            out.append(with_fields(v, note="; ".join(notes + ([v.note] if v.note else []))))
    return out
