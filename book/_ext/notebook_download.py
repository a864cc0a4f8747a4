"""Offer every notebook page as an executed ``.ipynb`` in the theme's download menu.

sphinx-book-theme 1.3.0 adds a ``.ipynb`` entry only when a launch provider (Binder, Colab,
JupyterHub, Thebe) is configured, and only for MyST-Markdown notebooks; this book has no launch
provider (it is read offline) and its notebooks are jupytext ``.py`` files, so the menu offered
just ``.py`` and ``.pdf``. myst-nb writes each executed notebook to ``<build>/jupyter_execute/``;
this extension copies it to ``_sources/<page>.ipynb`` and sets the ``ipynb_source`` context key
that the theme's download menu reads (the theme adds its buttons at priority 501; this runs at 500).
The downloaded notebook carries the outputs of this build's execution.
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
    executed = Path(app.outdir).parent / "jupyter_execute" / f"{pagename}.ipynb"
    if not executed.exists():
        raise FileNotFoundError(f"{executed} is missing: myst-nb did not write the executed "
                                f"notebook of {pagename}, so its .ipynb download cannot be offered")
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(executed, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app):
    app.connect("html-page-context", _offer_ipynb, priority=500)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
