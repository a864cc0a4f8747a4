"""The ``{results-inventory}`` directive's folder check, and every use of it in the book."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytest.importorskip("sphinx")
_spec = importlib.util.spec_from_file_location("results_inventory",
                                               REPO / "book" / "_ext" / "results_inventory.py")
inv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(inv)


def test_a_folder_under_no_profile_stops_the_build_naming_the_real_ones(tmp_path):
    (tmp_path / "quick" / "dasm_fig1").mkdir(parents=True)
    inv.check_folder(tmp_path, "quick/dasm_fig1")
    inv.check_folder(tmp_path, "gpu/dasm_fig1")   # exists under another profile: an empty gpu run
    with pytest.raises(inv.ExtensionError, match="no results folder 'dasm'.*dasm_fig1"):
        inv.check_folder(tmp_path, "quick/dasm")
    with pytest.raises(inv.ExtensionError, match="<profile>/<folder>"):
        inv.check_folder(tmp_path, "fast/dasm_fig1")
    with pytest.raises(inv.ExtensionError, match="<profile>/<folder>"):
        inv.check_folder(tmp_path, "quick")


def test_every_inventory_in_the_book_names_a_committed_results_folder():
    uses = [(md.name, m.group(1)) for md in sorted((REPO / "book").glob("*.md"))
            for m in re.finditer(r"```\{results-inventory\}\s+(\S+)", md.read_text())]
    assert len(uses) >= 10, uses
    for page, argument in uses:
        inv.check_folder(REPO / "results", argument)   # raises, naming the page's typo
