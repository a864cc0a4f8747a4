"""Offer every notebook page as an executed ``.ipynb`` in the theme's download menu.

sphinx-book-theme 1.3.0 adds a ``.ipynb`` entry only when a launch provider (Binder, Colab,
JupyterHub, Thebe) is configured, and only for MyST-Markdown notebooks; this book has no launch
provider (it is read offline) and its notebooks are jupytext ``.py`` files, so the menu offered
just ``.py`` and ``.pdf``. This extension copies the notebook the page was rendered from (the one
papermill executed, chosen by ``executed_notebooks``) to ``_sources/<page>.ipynb`` and sets the
``ipynb_source`` context key that the theme's download menu reads (the theme adds its buttons at
priority 501; this runs at 500). The downloaded notebook carries those outputs and papermill's
record of the run.
"""
from __future__ import annotations

import shutil
from pathlib import Path

NOTEBOOK_SUFFIXES = (".py", ".ipynb")


def _offer_ipynb(app, pagename, templatename, context, doctree):
    if doctree is None or "kernelspec" not in app.env.metadata.get(pagename, {}):
        return
    if Path(app.env.doc2path(pagename)).suffix not in NOTEBOOK_SUFFIXES:
        return
    from executed_notebooks import _chosen

    executed = _chosen(Path(app.env.doc2path(pagename)).read_text())
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(executed, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app):
    app.connect("html-page-context", _offer_ipynb, priority=500)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
