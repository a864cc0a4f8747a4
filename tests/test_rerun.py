"""`python -m ddbook notebook PAGE --profile P -p NAME VALUE`: a page executed by papermill at a
profile, its parameters checked before anything runs."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from ddbook.__main__ import main
from ddbook.rerun import coerce, parameters, resolve
from test_papermill import _text    # the text of a notebook's outputs

REPO = Path(__file__).resolve().parents[1]


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


def _fake_executed(folder, stem, text, executed, profile="ci"):
    """An executed notebook as `execute` writes it (only what `executed_for` reads)."""
    from ddbook.rerun import source_sha256

    nb = nbformat.v4.new_notebook()
    nb.metadata["ddbook"] = {"source": f"notebooks/{stem}.py", "source_sha256": source_sha256(text),
                             "profile": profile, "parameters": {"profile": profile},
                             "executed": executed, "seconds": 1.0}
    path = folder / f"{stem}.{profile}.ipynb"
    nbformat.write(nb, path)
    return path


def test_the_book_renders_the_newest_executed_notebook_of_the_current_source(tmp_path):
    from ddbook.rerun import executed_for, notebooks

    text = notebooks()["results_at_a_glance"].read_text()
    ci = _fake_executed(tmp_path, "results_at_a_glance", text, "2026-12-01T10:00:00+00:00")
    assert executed_for(text, tmp_path) == ci
    quick = _fake_executed(tmp_path, "results_at_a_glance", text, "2026-12-02T10:00:00+00:00",
                           profile="quick")
    assert executed_for(text, tmp_path) == quick                 # a later rerun is shown
    (tmp_path / ".results_at_a_glance.ci.partial.ipynb").write_bytes(quick.read_bytes())
    (tmp_path / "results_at_a_glance.gpu.failed.ipynb").write_bytes(quick.read_bytes())
    assert executed_for(text, tmp_path) == quick                 # never a partial or failed run


def test_a_page_never_executed_or_edited_since_is_refused_by_name(tmp_path, monkeypatch):
    from ddbook import rerun

    text = rerun.notebooks()["dasm_fig1"].read_text()
    with pytest.raises(LookupError, match=r"notebooks/dasm_fig1.py has no executed notebook in "
                       r".*python -m ddbook notebook dasm_fig1 --profile ci` and then `make html`"):
        rerun.executed_for(text, tmp_path)
    _fake_executed(tmp_path, "dasm_fig1", text + "\n# an older version\n", "2026-12-01T10:00:00")
    with pytest.raises(LookupError, match=r"notebooks/dasm_fig1.py changed after it was executed "
                       r"\(dasm_fig1.ci.ipynb in .* ran an older version of it\)"):
        rerun.executed_for(text, tmp_path)


def test_the_books_reader_stops_the_build_with_that_message(tmp_path, monkeypatch):
    import sys

    from sphinx.errors import ExtensionError

    from ddbook.rerun import notebooks

    monkeypatch.syspath_prepend(str(REPO / "book" / "_ext"))
    monkeypatch.setenv("DDBOOK_EXECUTED", str(tmp_path))
    sys.modules.pop("executed_notebooks", None)
    import executed_notebooks

    text = notebooks()["results_at_a_glance"].read_text()
    with pytest.raises(ExtensionError, match="results_at_a_glance.py has no executed notebook"):
        executed_notebooks.reads(text)
    _fake_executed(tmp_path, "results_at_a_glance", text, "2026-12-01T10:00:00+00:00")
    assert executed_notebooks.reads(text).metadata["ddbook"]["profile"] == "ci"


@pytest.mark.parametrize("argv, message", [
    (["--all", "--jobs", "0"], "--jobs must be a whole number >= 1, got 0"),
    (["--all", "--profile", "huge"], "unknown profile 'huge'"),
    (["results_at_a_glance", "--all"], "give either PAGE [-p NAME VALUE] or --all"),
    ([], "give a PAGE (python -m ddbook notebook --help lists them) or --all"),
])
def test_all_pages_bad_arguments_are_one_line(argv, message, tmp_path, capsys):
    assert main(["notebook", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_all_pages_runs_every_page_even_when_one_fails(tmp_path):
    from ddbook.rerun import execute_all

    said = []
    with pytest.raises(RuntimeError, match=r"^1 of 2 pages failed at ci: no-such-page: error: "
                       r"unknown page 'no-such-page'"):
        execute_all("ci", tmp_path, jobs=2, log=said.append,
                    pages=["no-such-page", "results_at_a_glance"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results_at_a_glance.ci.ipynb"]
    assert any(s.startswith("results_at_a_glance at ci: executed in") for s in said), said
    assert any(s.startswith("no-such-page at ci: FAILED") for s in said), said
    record = nbformat.read(tmp_path / "results_at_a_glance.ci.ipynb", as_version=4).metadata["ddbook"]
    assert record["profile"] == "ci" and record["parameters"] == {"profile": "ci"}
