"""Keep every page self-contained: drop sphinx-thebe's scripts (live code is off in this book).

sphinx-thebe 0.3.1 adds its inline configuration script twice to every page, which makes the browser
report "Identifier 'THEBE_JS_URL' has already been declared", and that script names an off-site
URL (unpkg.com). Thebe launch buttons are disabled here, so neither script has any use.
"""
from __future__ import annotations


def _is_thebe(js) -> bool:
    name = str(getattr(js, "filename", js) or "")
    body = getattr(js, "attributes", {}).get("body", "") or ""
    return "sphinx-thebe" in name or "thebe@" in name or "THEBE_JS_URL" in body


def _strip_thebe(app, pagename, templatename, context, doctree):
    if "script_files" in context:
        context["script_files"] = [js for js in context["script_files"] if not _is_thebe(js)]


def setup(app):
    app.connect("html-page-context", _strip_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
