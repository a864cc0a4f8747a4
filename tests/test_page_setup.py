"""The start every page shares: its parameters checked, its profiles resolved, the fallback to the
live smoke run said out loud."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from ddbook import params
from ddbook.figures import Loaded, drawn_or_live
from ddbook.profiles import get_profile


def test_page_profiles_resolves_both_profiles_and_says_the_live_one(capsys):
    P, D = params.page_profiles({"profile": "ci", "draw": "quick"}, ["profile", "draw"])
    assert (P.name, D.name) == ("ci", "quick")
    assert capsys.readouterr().out.startswith("profile 'ci': ")
    P, D = params.page_profiles({"profile": "quick", "n": 1}, ["profile", "n"], announce=False)
    assert (P.name, D) == ("quick", None) and capsys.readouterr().out == ""


@pytest.mark.parametrize("namespace, error, message", [
    ({"profile": "ci", "draw": "quick", "drw": "x"}, ValueError, "unknown parameter 'drw'"),
    ({"profile": "ci", "draw": "huge"}, ValueError, "parameter 'draw' must be one of"),
    ({"profile": "huge", "draw": "quick"}, ValueError, "unknown profile 'huge'"),
    ({"profile": 3, "draw": "quick"}, TypeError, "parameter 'profile' must be a string"),
])
def test_page_profiles_refuses_bad_parameters(namespace, error, message):
    with pytest.raises(error, match=message):
        params.page_profiles(namespace, ["profile", "draw"])


def test_drawn_or_live_says_when_it_shows_the_smoke_run(capsys):
    ci, quick = get_profile("ci"), get_profile("quick")
    live = Loaded({"a": object()}, [], {})
    shown, label = drawn_or_live(Loaded({}, ["a", "b"], {}), live, ci, quick)
    out = capsys.readouterr().out
    assert shown is live and label == "ci (smoke run: numbers meaningless)"
    assert "quick: 0 of 2 pieces present" in out and "THE QUICK RUNS ARE PENDING" in out
    result = SimpleNamespace(provenance={"sha": "0123456789abcdef", "wall_time_s": 120.0})
    committed = Loaded({"a": result}, ["b"], {})
    shown, label = drawn_or_live(committed, live, ci, quick)
    out = capsys.readouterr().out
    assert shown is committed and label == "quick"
    assert "quick: 1 of 2 pieces present (git 0123456789" in out and "PENDING" not in out
