"""The four scales every notebook and command runs at, as data.

A notebook carries one string, ``profile``; everything that scales (how many images, how wide the
networks, how many experts, iterations and evaluation runs) is read from the :class:`Profile` here.
Figure-specific settings are built on top of these by the modules that run each figure.

| profile | where                    | budget                                     |
| ------- | ------------------------ | ------------------------------------------ |
| ci      | any CPU, the book build  | ≤ 90 s per notebook; numbers not meaningful |
| quick   | this project's 2-core CPU | ≤ 60 min per figure; the committed results |
| gpu     | one H100, one command    | ≤ 9 min per figure, experts included       |
| paper   | one GPU, hours           | the papers' settings                        |
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

__all__ = ["Profile", "PROFILES", "get_profile", "default_profile_name", "ENV_VAR"]

ENV_VAR = "DDBOOK_PROFILE"


@dataclass(frozen=True)
class Profile:
    name: str
    purpose: str               # one sentence shown on every page that runs at this profile
    budget: str                # the wall-time budget it is sized for
    train_per_class: int | None  # training images per class used to train networks (None = all)
    test_per_class: int | None   # test images per class used for evaluation (None = all)
    width: int                 # ConvNet width of students and experts (papers: 128)
    n_experts: int             # expert trajectories trained (papers: 100)
    expert_epochs: int         # epochs per expert (MTT: 50)
    distill_iterations: int    # distillation iterations (papers: 5000 or more)
    eval_runs: int             # networks trained per evaluation point (papers: 5)
    meaningful: bool           # whether its numbers may be compared with a paper's at all

    def as_dict(self) -> dict:
        return asdict(self)


PROFILES = {
    "ci": Profile("ci", "proves every code path on real CIFAR-10 in seconds; its numbers mean nothing",
                  "≤ 90 s per notebook on 2 CPU cores", 20, 20, 16, 1, 2, 5, 1, False),
    "quick": Profile("quick", "the reduced-scale reproduction run on a 2-core CPU and committed",
                     "≤ 60 min per figure on 2 CPU cores", None, None, 32, 3, 15, 300, 2, True),
    "gpu": Profile("gpu", "the largest scale that fits one 9-minute command on one H100",
                   "≤ 9 min per figure on one H100, experts included", None, None, 128, 10, 20, 1000, 3,
                   True),
    "paper": Profile("paper", "the papers' own settings", "hours on one GPU", None, None, 128, 100, 50,
                     5000, 5, True),
}


def default_profile_name() -> str:
    """``$DDBOOK_PROFILE`` if set (it must name a profile), else ``ci``."""
    name = os.environ.get(ENV_VAR, "").strip() or "ci"
    if name not in PROFILES:
        raise ValueError(f"{ENV_VAR}={name!r} is not a profile: choose one of "
                         f"{', '.join(PROFILES)} (e.g. {ENV_VAR}=quick), or unset it for ci")
    return name


def get_profile(name: str | None = None) -> Profile:
    """The profile called ``name`` (default: :func:`default_profile_name`); a clear error otherwise."""
    name = default_profile_name() if name is None else name
    if not isinstance(name, str) or name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)} "
                         f"(e.g. papermill ... -p profile quick, or {ENV_VAR}=quick)")
    return PROFILES[name]
