"""The book renders notebooks that papermill executed; it executes none itself.

``make book`` first runs ``python -m ddbook notebook --all --profile ci``: papermill executes
every ``notebooks/<page>.py`` through its parameters cell and writes
``_build/executed/<page>.ci.ipynb`` with a record of the source's SHA-256 (``ddbook.rerun``).
The book is then built with ``execute_notebooks: off`` and this module as the reader of ``.py``
notebooks (``nb_custom_formats`` in ``_config.yml``): for the text of a page it returns the newest
executed notebook in ``$DDBOOK_EXECUTED`` (default ``_build/executed``) recorded for that exact
text. A page with none (never executed, or edited since) stops the build with a message naming
the page and the command that fixes it; nothing is rendered from outdated outputs.

``{executed-notebooks}`` draws the execution-statistics table: for each notebook page, the
profile and parameters it ran with, when, and for how long (from the same records).
"""
from __future__ import annotations

import json

import nbformat
from results_inventory import _table
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective

COLUMNS = ("page", "profile", "parameters", "executed (UTC)", "seconds", "source SHA-256")


def _chosen(text: str):
    from ddbook.rerun import executed_for

    try:
        return executed_for(text)
    except LookupError as e:
        raise ExtensionError(str(e)) from None


def reads(text: str, **kwargs) -> nbformat.NotebookNode:
    """The reader myst-nb calls for a ``.py`` page: its executed notebook, outputs included."""
    return nbformat.read(_chosen(text), as_version=4)


class ExecutedNotebooks(SphinxDirective):
    """A table of every notebook page's execution, read from the executed notebooks' records."""

    has_content = False

    def run(self):
        from ddbook.rerun import notebooks

        rows = []
        for stem, path in notebooks().items():
            executed = _chosen(path.read_text())
            self.env.note_dependency(str(executed))
            meta = json.loads(executed.read_text())["metadata"]["ddbook"]
            params = ", ".join(f"{k}: {v}" for k, v in meta.get("parameters", {}).items())
            rows.append((str(meta.get("source", stem)), str(meta["profile"]),
                         params or "(defaults)",
                         str(meta["executed"]).replace("T", " ").replace("+00:00", ""),
                         f"{float(meta['seconds']):.1f}", str(meta["source_sha256"])[:12]))
        return [_table(rows, COLUMNS, "executed-notebooks")]


def setup(app):
    app.add_directive("executed-notebooks", ExecutedNotebooks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
