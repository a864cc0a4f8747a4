"""``{results-inventory}``: a table of the committed result files behind a page, made at build time.

The reproducibility chapters say which runs exist at which scale without typing a single number:
this directive reads the result files (``ddbook.results`` format) under the results root
(``ddbook.paths.results_root()``: ``$DDBOOK_RESULTS`` or ``<repo>/results``) and lists, for each,
its name, profile, device, wall time, creation date and the commit it ran from — all read from the
file's own provenance record. Usage, in MyST::

    ```{results-inventory} quick/distill
    :match: mtt-cifar10-*
    ```

The argument is a folder below the results root; ``:match:`` is a glob on the file name (without
``.json``; default ``*``); ``:summarise:`` folds many files (a sweep) into one row with their count,
total wall time, date range and distinct commits. No matching file gives a sentence saying so, never an empty table;
a folder that exists under no profile (a typo) stops the build, naming the folders that exist.
A file that is not a result file (no provenance) stops the build with its path.
"""
from __future__ import annotations

import fnmatch
import json
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective

COLUMNS = ("result", "profile", "device", "wall time (min)", "created", "commit")


def _row(path: Path) -> tuple[tuple[str, ...], float | None]:
    """(the table row, the wall time in seconds or None) of one result file."""
    record = json.loads(path.read_text())
    prov = record.get("provenance") if isinstance(record, dict) else None
    if not isinstance(prov, dict) or "profile" not in prov:
        raise ExtensionError(f"results-inventory: {path} is not a ddbook result file (no provenance)")
    wall = prov.get("wall_time_s")
    wall = float(wall) if isinstance(wall, (int, float)) else None
    return (record.get("name", path.stem), str(prov["profile"]), str(prov.get("device", "")),
            f"{wall / 60:.1f}" if wall is not None else "not recorded",
            str(prov.get("created", ""))[:10], str(prov.get("sha", ""))[:8]
            + (" (lib modified)" if prov.get("dirty_lib") else "")), wall


def _summary(rows: list[tuple[str, ...]], walls: list[float | None], where: str) -> tuple[str, ...]:
    """One row for many files: joined profiles and devices, summed wall time, date range, commits."""
    def joined(i):
        return ", ".join(sorted({r[i] for r in rows}))
    walls = [w for w in walls if w is not None]
    wall = f"{sum(walls) / 60:.1f} in all" + ("" if len(walls) == len(rows) else
                                         f" ({len(rows) - len(walls)} not recorded)")
    dates = sorted(r[4] for r in rows)
    return (f"{len(rows)} files: {where}", joined(1), joined(2), wall,
            dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}", joined(5))


def _table(rows: list[tuple[str, ...]], columns: tuple[str, ...] = COLUMNS,
           cls: str = "results-inventory") -> nodes.table:
    """A docutils table: a header of ``columns``, then one row of text cells per ``rows`` item."""
    table = nodes.table(classes=[cls])
    group = nodes.tgroup(cols=len(columns))
    table += group
    group += [nodes.colspec(colwidth=1) for _ in columns]
    head, body = nodes.thead(), nodes.tbody()
    group += [head, body]
    for cells, parent in [(columns, head)] + [(r, body) for r in rows]:
        row = nodes.row()
        for text in cells:
            entry = nodes.entry()
            entry += nodes.paragraph(text=text)
            row += entry
        parent += row
    return table


PROFILES = ("ci", "quick", "gpu", "paper")


def check_folder(root: Path, argument: str) -> None:
    """Stop the build on a folder argument that names no kind of result: ``<profile>/<folder>``
    with a known profile and a folder that exists under *some* profile of ``root`` (a ``gpu``
    folder may be empty in this build, but ``quick/dasm`` for ``quick/dasm_fig1`` is a typo that
    would otherwise print "no result files" and hide every run)."""
    profile, _, folder = argument.partition("/")
    if profile not in PROFILES or not folder:
        raise ExtensionError(f"results-inventory {argument!r}: write <profile>/<folder>, "
                             f"the profile one of {', '.join(PROFILES)}")
    if not any((root / p / folder).is_dir() for p in PROFILES):
        known = sorted({d.name for p in PROFILES if (root / p).is_dir()
                        for d in (root / p).iterdir() if d.is_dir()})
        raise ExtensionError(f"results-inventory {argument!r}: no results folder {folder!r} under "
                             f"any profile of {root}; the folders there: {', '.join(known)}")


class ResultsInventory(SphinxDirective):
    required_arguments = 1
    option_spec = {"match": directives.unchanged, "summarise": directives.flag}

    def run(self):
        from ddbook.paths import results_root

        check_folder(results_root(), self.arguments[0])
        folder = results_root() / self.arguments[0]
        pattern = self.options.get("match", "*")
        files = sorted(p for p in folder.glob("*.json") if fnmatch.fnmatch(p.stem, pattern))
        for p in files:
            self.env.note_dependency(str(p))
        where = f"results/{self.arguments[0]}/{pattern}.json"
        if not files:
            para = nodes.paragraph(text=f"No result files match {where} in this build, "
                                        "so no run of this kind is reported here.")
            return [para]
        rows, walls = zip(*[_row(p) for p in files])
        rows = list(rows)
        if "summarise" in self.options:
            rows = [_summary(rows, list(walls), where)]
        caption = nodes.paragraph(text=f"{len(files)} result files ({where}), read when this page was built.")
        return [caption, _table(rows)]


def setup(app):
    app.add_directive("results-inventory", ResultsInventory)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
