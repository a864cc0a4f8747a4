"""The Difficulty page: the published scores on our copy of CIFAR-10, and our own scores.

Pieces (``results/<profile>/difficulty/...``):

- ``published-agreement``: the within-class Spearman correlation of the two published score files
  (C-score, forgetting) on our copy of CIFAR-10; a check of the mapping, seconds at any profile;
- ``our-scores``: our EL2N and forgetting scores (:mod:`ddbook.scoring`) at the profile, with their
  within-class Spearman correlation against the published C-scores (per class and mean).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..profiles import Profile
from ..results import Timer, load_result, save_result
from ._common import Loaded, as_profile, load_pieces, run_pieces

__all__ = ["NAME", "NOTEBOOK", "TITLE", "ALIASES", "plan", "run", "load", "verdicts",
           "run_scores", "run_agreement"]

NAME = "difficulty-scores"
NOTEBOOK = "difficulty_scores"
TITLE = "Difficulty scores: the published C-scores and forgetting counts, and our EL2N"
ALIASES = {"scores": "our-scores"}


def _agreement_config(ds) -> dict:
    from ..scores import load_published_scores
    return {"dataset": ds.name, "scores": [load_published_scores(ds, s).source
                                           for s in ("cscore", "forgetting")]}


def run_agreement(profile: Profile, device=None) -> Path:
    """Save the within-class Spearman ρ of the published C-score and forgetting files (ρ < 0 in
    every class when both map onto the images correctly: low C-score and high forgetting are hard)."""
    from scipy.stats import spearmanr

    from ..data import load_dataset
    from ..scores import load_published_scores

    profile = as_profile(profile)
    with Timer() as t:
        ds = load_dataset("cifar10")
        cscore, forgetting = (load_published_scores(ds, s) for s in ("cscore", "forgetting"))
        rho = {name: float(spearmanr(cscore.values[idx], forgetting.values[idx]).statistic)
               for c, name in enumerate(ds.classes) for idx in [ds.train.class_indices(c)]}
    return save_result("difficulty/published_scores_agreement", profile.name,
                       {"spearman_per_class": rho}, _agreement_config(ds), [], t.seconds)


def run_scores(profile: Profile, device=None) -> Path:
    """Compute our EL2N and forgetting scores at ``profile``; save them with their Spearman ρ
    against the published C-scores (per class and mean). Returns the results path."""
    from ..data import load_dataset
    from ..scores import load_published_scores
    from ..scoring import compute_scores, score_run_config, spearman_per_class

    profile = as_profile(profile)
    config = score_run_config(profile.name)
    ds = load_dataset("cifar10")
    with Timer() as t:
        ours = compute_scores(ds, config, device)
    cscore = load_published_scores(ds, "cscore").values[ours.indices]
    labels = ds.train.labels[ours.indices]
    rho = {name: spearman_per_class(values, cscore, labels)
           for name, values in (("el2n", ours.el2n), ("forgetting", ours.forgetting))}
    data = {"spearman_vs_cscore": {k: {"per_class": {ds.classes[c]: r for c, r in v.items()},
                                       "mean": sum(v.values()) / len(v)} for k, v in rho.items()},
            "hard_end": {"el2n": "high", "forgetting": "high", "cscore (reference)": "low"},
            "train_accuracy_per_run": ours.train_accuracy,
            "seconds_per_run": ours.seconds_per_run, "n_scored": len(ours.indices)}
    seeds = [config.seed + r for r in range(config.runs)]
    return save_result("difficulty/our_scores", profile.name, data, asdict(config), seeds,
                       t.seconds, device, arrays={"indices": ours.indices,
                                                  "el2n": ours.el2n.float(),
                                                  "forgetting": ours.forgetting.float()})


@dataclass(frozen=True)
class _Piece:
    name: str
    result: str            # results name under results/<profile>/
    compute: object        # run(profile, device) -> Path
    config: object         # config(profile) -> the expected config dict

    def load(self, profile: Profile):
        return load_result(self.result, profile.name, missing_ok=True,
                           expect_config=self.config(profile))

    def run(self, profile: Profile, device=None) -> Path:
        return self.compute(profile, device)


def _scores_config(profile: Profile) -> dict:
    from ..scoring import score_run_config
    return asdict(score_run_config(profile.name))


def _published_config(profile: Profile) -> dict:
    from ..data import load_dataset
    return _agreement_config(load_dataset("cifar10"))


def plan(profile: Profile) -> list:
    """The published-score agreement, then our scores."""
    return [_Piece("published-agreement", "difficulty/published_scores_agreement", run_agreement,
                   _published_config),
            _Piece("our-scores", "difficulty/our_scores", run_scores, _scores_config)]


def run(profile: Profile, device=None, only=None) -> list:
    """Run the missing or stale pieces; return the results paths."""
    profile = as_profile(profile)
    return run_pieces(plan(profile), profile, device, only)


def load(profile: Profile) -> Loaded:
    """Both pieces at ``profile``: found (current), missing, stale."""
    profile = as_profile(profile)
    return load_pieces(plan(profile), profile)


def _agrees(rho: dict, claim: str):
    """One-sample t on the per-class within-class ρ, signed so that > 0 means agreement (the
    C-score is low for hard images, the other scores high)."""
    from ..verdicts import one_sample
    return one_sample([-r for r in rho.values()], claim, units="(−ρ)", scale=1.0,
                      runs=f"{len(rho)} classes")


def verdicts(loaded) -> list:
    """Whether the scores rank the images alike within each class (one-sample t over the classes'
    Spearman ρ; the classes, not runs, are the replicates): the two published files, and each of
    our scores against the published C-score. ``loaded``: a Loaded or a {piece: Result} dict."""
    found = loaded.found if isinstance(loaded, Loaded) else loaded
    out = []
    if "published-agreement" in found:
        out.append(_agrees(found["published-agreement"].data["spearman_per_class"],
                           "the published C-score and forgetting counts agree on which images "
                           "are hard"))
    if "our-scores" in found:
        for name, v in found["our-scores"].data["spearman_vs_cscore"].items():
            out.append(_agrees(v["per_class"], f"our {name.upper() if name == 'el2n' else name} "
                               f"score agrees with the published C-score on which images are hard"))
    return out

