"""`python -m ddbook notebook PAGE --profile P -p NAME VALUE`: a page executed by papermill at a
profile, its parameters checked before anything runs."""
from __future__ import annotations

import nbformat
import pytest

from ddbook.__main__ import main
from ddbook.rerun import coerce, parameters, resolve
from test_papermill import _text    # the text of a notebook's outputs


def test_notebook_at_ci_with_an_override(tmp_path, capsys):
    rc = main(["notebook", "results_at_a_glance", "--profile", "ci", "-p", "draw", "ci",
               "--out", str(tmp_path)])
    assert rc == 0, capsys.readouterr().err
    out = tmp_path / "results_at_a_glance.ci.ipynb"
    assert f"wrote {out}" in capsys.readouterr().out
    nb = nbformat.read(out, as_version=4)
    text = _text(nb)
    assert "reads the results committed at 'ci'" in text, "the draw override must show"
    assert "profile 'ci'" in text
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'draw = "ci"' in injected[0].source
    assert [p.name for p in tmp_path.iterdir()] == [out.name]         # no partial file left


def test_a_failing_notebook_leaves_no_executed_notebook(tmp_path, capsys):
    rc = main(["notebook", "results_at_a_glance", "--profile", "ci", "-p", "draw", "huge",
               "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "parameter 'draw' must be one of" in err and "failed in cell" in err
    assert not (tmp_path / "results_at_a_glance.ci.ipynb").exists()
    assert (tmp_path / "results_at_a_glance.ci.failed.ipynb").exists()


@pytest.mark.parametrize("argv, message", [
    (["results_at_a_glance", "-p", "bogus", "1"],
     "unknown parameter 'bogus' for results_at_a_glance; it takes profile, draw"),
    (["difficulty-scores", "-p", "n_show", "many"], "parameter 'n_show' of difficulty_scores is int"),
    (["no-such-page"], "unknown page 'no-such-page'; choose a figure (dasm,"),
    (["results_at_a_glance", "-p", "profile", "quick"], "give the profile with --profile"),
    (["results_at_a_glance", "--profile", "huge"], "unknown profile 'huge'"),
])
def test_bad_page_or_parameter_is_one_line_before_running(argv, message, tmp_path, capsys):
    assert main(["notebook", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []                             # nothing ran


def test_help_lists_every_page_and_its_typed_parameters(capsys):
    with pytest.raises(SystemExit) as done:
        main(["notebook", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "difficulty-scores (difficulty_scores)" in out and "n_show: int = 8" in out
    assert "mtt-cifar10 (mtt_cifar10)" in out and "draw: str = 'quick'" in out
    assert "results_at_a_glance" in out


def test_pages_resolve_by_figure_or_notebook_name():
    assert resolve("mtt-cifar10") == resolve("mtt_cifar10") == resolve("notebooks/mtt_cifar10.py")
    assert resolve("selmatch-fig3").stem == "selmatch_fig3_sliding_window"
    path = resolve("difficulty-scores")
    assert [(p.name, p.type) for p in parameters(path)] == [
        ("profile", "str"), ("score", "str"), ("n_show", "int")]
    assert coerce(path, [("n_show", "3"), ("score", "forgetting")]) == {
        "n_show": 3, "score": "forgetting"}
