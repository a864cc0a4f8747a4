"""papermill reruns a notebook with overridden parameters; bad values fail with readable messages."""
from __future__ import annotations

import os
from pathlib import Path

import jupytext
import papermill as pm
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "difficulty_scores.py"


def _run(tmp_path, **parameters):
    os.environ["TQDM_DISABLE"] = "1"
    nb = jupytext.read(NOTEBOOK)
    out = tmp_path / "out.ipynb"
    return pm.execute_notebook(nb, str(out), parameters=parameters, cwd=str(NOTEBOOK.parent),
                               kernel_name="python3", progress_bar=False)


def _text(nb) -> str:
    chunks = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            chunks.append(output.get("text", ""))
            chunks += [v for k, v in output.get("data", {}).items() if k.startswith("text/")]
    return "\n".join(c if isinstance(c, str) else "".join(c) for c in chunks)


def test_override_is_reflected_in_the_output(tmp_path):
    nb = _run(tmp_path, n_show=3, score="forgetting")
    text = _text(nb)
    assert "showing the 3 easiest and 3 hardest" in text, "the n_show override must show in the output"
    assert "by forgetting" in text and "forgetting_CIFAR10.npy" in text, "score override ignored"
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert ["injected-parameters"] in tags, "papermill injects its parameters cell"


def test_wrong_type_fails_readably(tmp_path):
    with pytest.raises(pm.PapermillExecutionError) as err:
        _run(tmp_path, n_show="many")
    assert "parameter 'n_show' must be an integer, got str 'many'" in str(err.value)


def test_unknown_profile_fails_readably(tmp_path):
    with pytest.raises(pm.PapermillExecutionError) as err:
        _run(tmp_path, profile="huge")
    assert "unknown profile 'huge'" in str(err.value) and "ci, quick, gpu, paper" in str(err.value)
