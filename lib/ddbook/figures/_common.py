"""What the figure modules share: the ``Loaded`` record, pieces, running and loading them, drawing
the committed results or the live ones, and the distillation-run machinery.

A **piece** is one unit of work with its own results file: it has a unique ``.name``,
``.load(profile)`` (the current Result, None when missing or unfinished, StaleResultError when
made from another configuration) and ``.run(profile, device)`` (compute it, write its results
file, return the path). A figure module's ``plan(profile)`` lists its pieces; :func:`run_pieces`
and :func:`load_pieces` do the rest.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from ..profiles import Profile, get_profile
from ..results import StaleResultError, load_result

__all__ = ["Loaded", "as_profile", "select", "load_pieces", "run_pieces", "committed_or_live",
           "drawn_or_live",
           "DistillRun", "has_final_set", "final_set", "display_images", "mean_accuracy"]


class Loaded(NamedTuple):
    """The results of a figure at a profile: ``found`` {piece name: Result} (current ones only),
    ``missing`` [piece names never run or unfinished], ``stale`` {piece name: why it is stale}."""
    found: dict
    missing: list
    stale: dict

    def profile(self) -> Profile | None:
        """The profile the found results were made at (a page loads one profile; None: none
        found). What a page's verdicts read their plan from."""
        return get_profile(next(iter(self.found.values())).profile) if self.found else None

    def describe(self, profile: str) -> str:
        """One line: how many pieces are present, missing and stale (and which), at ``profile``."""
        n = len(self.found) + len(self.missing) + len(self.stale)
        text = f"{profile}: {len(self.found)} of {n} pieces present"
        if self.found:
            first = next(iter(self.found.values()))
            text += (f" (git {first.provenance['sha'][:10]}, "
                     f"{sum(r.provenance['wall_time_s'] for r in self.found.values()) / 60:.0f} "
                     f"process-minutes)")
        if self.missing:
            head = ", ".join(self.missing[:4]) + (", …" if len(self.missing) > 4 else "")
            text += f"; missing {len(self.missing)}: {head}"
        if self.stale:
            text += ("; stale (made from another configuration, not drawn): "
                     + "; ".join(f"{name} ({_changed(why)})" for name, why in self.stale.items()))
        return text


def as_profile(profile: Profile | str | None) -> Profile:
    """The resolved Profile: a Profile is returned as is, a name (or None: the default) is looked
    up once, here, at the entry point."""
    return profile if isinstance(profile, Profile) else get_profile(profile)


def select(pieces: list, only=None) -> list:
    """The pieces whose name contains ``only`` (a string), or whose name ``only`` accepts (a
    callable), all of them when ``only`` is None; a ValueError naming the valid pieces when none
    matches."""
    if only is None:
        return list(pieces)
    chosen = [p for p in pieces if (only(p.name) if callable(only) else only in p.name)]
    if not chosen:
        raise ValueError(f"no piece matches --only {only!r}; the pieces are: "
                         f"{', '.join(p.name for p in pieces)}")
    return chosen


def _state(piece, profile: Profile):
    """(Result or None, stale reason or None) of one piece."""
    try:
        return piece.load(profile), None
    except StaleResultError as e:
        return None, str(e)


def _changed(why: str) -> str:
    """The 'changed: ...' part of a stale reason (what differs from the recorded config)."""
    text = str(why)
    at = text.find("changed:")
    return text[at:].split(". Rerun")[0] if at >= 0 else text


def load_pieces(pieces: list, profile: Profile) -> Loaded:
    """Load every piece at ``profile``: current ones found, absent or unfinished ones missing,
    ones made from another configuration stale (with the reason)."""
    found, missing, stale = {}, [], {}
    for p in pieces:
        res, why = _state(p, profile)
        if why is not None:
            stale[p.name] = why
        elif res is None:
            missing.append(p.name)
        else:
            found[p.name] = res
    return Loaded(found, missing, stale)


def run_pieces(pieces: list, profile: Profile, device=None, only=None,
               rerun=None) -> list[Path]:
    """Run every selected piece that is missing or stale (current results are kept); return the
    paths written. ``rerun(piece, result) -> bool`` may ask for a current piece to be rerun too."""
    paths = []
    for p in select(pieces, only):
        res, _ = _state(p, profile)
        if res is None or (rerun is not None and rerun(p, res)):
            paths.append(p.run(profile, device))
    return paths


def committed_or_live(drawn: Loaded, draw: str, live: dict, live_profile: str) -> tuple[dict, str]:
    """The committed results (``drawn``, loaded at profile ``draw``) if any piece is there, else
    the live ones; prints what is present, missing and stale."""
    print(drawn.describe(draw))
    if not drawn.found:
        print(f"no committed {draw} results yet: drawing the live {live_profile} results instead")
        return live, live_profile
    return drawn.found, draw


def drawn_or_live(drawn: Loaded, live: Loaded, live_profile: Profile, draw: Profile,
                  shows: str = "figure and table") -> tuple[Loaded, str]:
    """``(drawn, its profile's name)`` when a committed piece is there, else ``(live, a label
    saying it is the smoke run)``, printing what is present, missing and stale and, for the
    fallback, that the committed runs are pending and nothing below is a number of that profile."""
    print(drawn.describe(draw.name))
    if drawn.found:
        return drawn, draw.name
    print(f"THE {draw.name.upper()} RUNS ARE PENDING: no {draw.name} results are committed yet, "
          f"so nothing below is a {draw.name} number. The {shows} show the live "
          f"{live_profile.name} smoke run, whose numbers mean nothing.")
    return live, f"{live_profile.name} (smoke run: numbers meaningless)"


def mean_accuracy(result, key: str = "result_at_declared_iteration") -> float:
    """A run's mean accuracy at ``key`` (NaN when absent)."""
    point = result.data.get(key) if result is not None else None
    return math.nan if not point else float(point["mean"])


# ------------------------------------------------------------------------------------------
# distillation runs (presets at a profile)


@dataclass(frozen=True)
class DistillRun:
    """One distillation run: a preset, overrides on top of its profile scaling, a results name
    (``results/<profile>/distill/<name>.json``), and the lr of its random-real baseline."""
    name: str
    preset: str
    overrides: dict
    baseline_lr: float | None = None
    label: str = ""

    def expected_config(self, profile: Profile) -> dict:
        from ..presets import resolve, run_config
        return run_config(resolve(self.preset, profile.name, self.overrides), self.baseline_lr)

    def load(self, profile: Profile):
        """The finished, current result; None when missing or unfinished; StaleResultError when
        made from another configuration."""
        res = load_result(f"distill/{self.name}", profile.name, missing_ok=True,
                          expect_config=self.expected_config(profile))
        return res if res is not None and res.data.get("finished") else None

    def run(self, profile: Profile, device=None) -> Path:
        from ..presets import run_preset
        return run_preset(self.preset, profile.name, device=device, overrides=self.overrides,
                          result_name=self.name, baseline_lr=self.baseline_lr)[0]


def has_final_set(result) -> bool:
    """Whether the full set of a run is still in its run folder (the cache)."""
    folder = result.data.get("run_folder")
    return bool(folder) and (Path(folder) / "synset_final.pt").exists()


def final_set(result):
    """The full-precision distilled set of a run (``synset_final.pt`` in its run folder, which
    lives in the cache, not in the repository)."""
    from ..synset import load_synset

    path = Path(result.data["run_folder"]) / "synset_final.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is gone (the cache is not kept between machines): rerun "
                                f"that distillation (`python -m ddbook reproduce ...`) to recreate it")
    return load_synset(path)


def display_images(result, which: str = "final", per_class: int | None = None) -> torch.Tensor:
    """The display copies saved with a run (``which`` = "final" or "initial"), uint8 (n, C, H, W),
    ``per_class`` = k: the first k of each class (at most DISPLAY_PER_CLASS were saved)."""
    key = f"display_{which}"
    if not result.arrays or key not in result.arrays:
        raise KeyError(f"{key!r} was not saved with {result.path}; rerun it with this version")
    x = torch.as_tensor(result.arrays[key])
    if per_class is None:
        return x
    classes = torch.as_tensor(result.arrays["classes"])[torch.as_tensor(
        result.arrays["display_index"])]
    keep = torch.cat([torch.nonzero(classes == c).flatten()[:per_class]
                      for c in range(int(classes.max()) + 1)])
    return x[keep]
