"""Execute the book's pages with papermill: one page at a profile with its parameters
(``python -m ddbook notebook PAGE --profile quick -p NAME VALUE``, or ``make rerun PAGE=...
PROFILE=...``), or every page (``python -m ddbook notebook --all --profile ci``, which ``make
book`` runs before it renders). The notebook ``notebooks/<page>.py`` is converted by jupytext and
executed by papermill; the executed notebook is written to
``_build/executed/<notebook>.<profile>.ipynb`` (``$DDBOOK_EXECUTED`` overrides the folder) with
a ``ddbook`` metadata record: the source's path and SHA-256, the profile, the parameters, when it
ran and for how long.

The book does not execute notebooks itself: it renders, for each notebook page, the newest
executed notebook in that folder whose recorded SHA-256 is that of the page's current source
(:func:`executed_for`, called by the book's reader ``book/_ext/executed_notebooks.py``). So each
page's work is done once, by papermill, through its parameters cell; a rerun at another profile
is shown by the next ``make html``; and a page edited since it ran is refused by name, never
rendered from outdated outputs.

- :func:`notebooks` — {notebook name: path} of every page; :func:`resolve` a page (a figure
  module's NAME or a notebook name) to its notebook;
- :func:`parameters` — the parameters of a notebook, read from its ``parameters`` cell: name,
  type, default (as written), comment;
- :func:`coerce` — ``-p NAME VALUE`` strings to the declared types; an unknown name or a value of
  the wrong type is refused before anything runs;
- :func:`execute` — run one; :func:`execute_all` — every page, in worker processes;
- :func:`executed_for` — the executed notebook the book renders for a page's source;
- :func:`help_text` — every page and its parameters, for ``--help``.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import paths

__all__ = ["Param", "notebooks", "resolve", "parameters", "coerce", "executed_dir",
           "default_output", "execute", "execute_all", "source_sha256", "executed_for",
           "help_text"]

_TYPES = {"str": str, "int": int, "float": float, "bool": bool}
_CELL = re.compile(r"^# %%.*\btags=\[[^\]]*[\"']parameters[\"']")


@dataclass(frozen=True)
class Param:
    """One parameter of a notebook's ``parameters`` cell (``name: type = default  # comment``)."""
    name: str
    type: str       # str | int | float | bool
    default: str    # the default as written in the notebook
    comment: str


def notebooks() -> dict[str, Path]:
    """{notebook name: path} of every notebook page (``notebooks/*.py``), sorted by name."""
    return {p.stem: p for p in sorted((paths.repo_root() / "notebooks").glob("*.py"))}


def resolve(page: str) -> Path:
    """The notebook of ``page``: a figure module's NAME (``mtt-cifar10``) or a notebook name
    (``mtt_cifar10``, ``results_at_a_glance``); a ValueError listing both otherwise."""
    from .figures import modules

    page = page.removeprefix("notebooks/").removesuffix(".py")
    nbs, mods = notebooks(), modules()
    name = mods[page].NOTEBOOK if page in mods else page
    if name not in nbs:
        raise ValueError(f"unknown page {page!r}; choose a figure ({', '.join(mods)}) or a "
                         f"notebook ({', '.join(nbs)})")
    return nbs[name]


def _parameters_cell(path: Path) -> str:
    lines, cell, inside = path.read_text().splitlines(), [], False
    for line in lines:
        if line.startswith("# %%"):
            if inside:
                break
            inside = bool(_CELL.match(line))
        elif inside:
            cell.append(line)
    if not inside and not cell:
        raise ValueError(f"{path} has no cell tagged 'parameters': papermill cannot set its "
                         "parameters (tag the cell: # %% tags=[\"parameters\"])")
    return "\n".join(cell)


def parameters(path: Path) -> list[Param]:
    """The annotated assignments of the notebook's ``parameters`` cell, in order. A parameter
    without a ``str``/``int``/``float``/``bool`` annotation is an error naming it."""
    source = _parameters_cell(path)
    lines = source.splitlines()
    out = []
    for node in ast.parse(source).body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        kind = ast.unparse(node.annotation)
        if kind not in _TYPES:
            raise ValueError(f"{path.name}: parameter {node.target.id!r} is annotated {kind!r}; "
                             f"annotate it with one of {', '.join(_TYPES)}")
        line = lines[node.lineno - 1]
        comment = line.split("#", 1)[1].strip() if "#" in line[node.end_col_offset:] else ""
        out.append(Param(node.target.id, kind, ast.unparse(node.value) if node.value else "",
                         comment))
    return out


def _value(p: Param, text: str, page: str):
    kind = _TYPES[p.type]
    if kind is str:
        return text
    if kind is bool:
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
    else:
        try:
            return kind(text)
        except ValueError:
            pass
    raise ValueError(f"parameter {p.name!r} of {page} is {p.type}: got {text!r} "
                     f"(e.g. -p {p.name} {p.default if p.type != 'str' else 'VALUE'})")


def coerce(path: Path, overrides: list[tuple[str, str]]) -> dict:
    """{name: value}: each ``-p NAME VALUE`` converted to the type its parameters cell declares;
    an unknown name, a repeated one or a value that does not convert is a ValueError."""
    declared = {p.name: p for p in parameters(path)}
    out = {}
    for name, text in overrides:
        if name not in declared:
            raise ValueError(f"unknown parameter {name!r} for {path.stem}; it takes "
                             f"{', '.join(declared) or 'none'} (see python -m ddbook notebook --help)")
        if name in out:
            raise ValueError(f"parameter {name!r} given twice")
        out[name] = _value(declared[name], text, path.stem)
    return out


def executed_dir() -> Path:
    """Where executed notebooks go and where the book reads them: ``$DDBOOK_EXECUTED``, else
    ``<repo>/_build/executed``."""
    folder = paths.env_path("DDBOOK_EXECUTED")
    return folder if folder is not None else paths.repo_root() / "_build" / "executed"


def default_output(path: Path, profile: str) -> Path:
    """``<executed_dir()>/<notebook>.<profile>.ipynb``."""
    return executed_dir() / f"{path.stem}.{profile}.ipynb"


def source_sha256(text: str) -> str:
    """The SHA-256 of a notebook's source text (what the executed notebook records)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def execute(page: str, profile: str, overrides: list[tuple[str, str]] = (),
            out_dir: Path | str | None = None) -> Path:
    """Execute ``page`` at ``profile`` with ``overrides`` (``[(name, value text)]``) and return the
    executed notebook's path. It is written whole on success; a failed run leaves the partly
    executed notebook beside it as ``<notebook>.<profile>.failed.ipynb`` and raises a
    RuntimeError naming the failing error."""
    import jupytext
    import papermill as pm

    path = resolve(page)
    values = coerce(path, list(overrides))
    if "profile" in values:
        raise ValueError("give the profile with --profile, not -p profile")
    if "profile" in {p.name for p in parameters(path)}:
        values = {"profile": profile, **values}
    out = default_output(path, profile)
    if out_dir is not None:
        out = Path(out_dir) / out.name
    out.parent.mkdir(parents=True, exist_ok=True)
    failed = out.with_name(f"{path.stem}.{profile}.failed.ipynb")
    partial = out.with_name(f".{path.stem}.{profile}.partial.ipynb")
    os.environ.setdefault("TQDM_DISABLE", "1")
    text = path.read_text()
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    try:
        pm.execute_notebook(jupytext.reads(text, fmt="py:percent"), str(partial),
                            parameters=values, cwd=str(path.parent), kernel_name="python3",
                            progress_bar=False, language="python")
    except pm.PapermillExecutionError as e:
        partial.replace(failed)
        raise RuntimeError(f"{path.stem} at {profile} failed in cell {e.exec_count}: {e.ename}: "
                           f"{e.evalue} (the partly executed notebook is {failed})") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    import nbformat

    nb = nbformat.read(partial, as_version=4)
    nb.metadata["ddbook"] = {
        "source": path.relative_to(paths.repo_root()).as_posix()
        if path.is_relative_to(paths.repo_root()) else str(path),
        "source_sha256": source_sha256(text), "profile": profile,
        "parameters": {k: v for k, v in values.items()},
        "executed": started.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t0, 1)}
    nbformat.write(nb, partial)
    partial.replace(out)
    failed.unlink(missing_ok=True)
    return out


def execute_all(profile: str, out_dir: Path | str | None = None, jobs: int = 1,
                log=print, pages: list[str] | None = None) -> list[Path]:
    """Execute every notebook page (or ``pages``) at ``profile`` (default parameters), ``jobs`` at a time,
    each in its own ``python -m ddbook notebook`` process; the longest pages (by their previous
    run in ``out_dir``, if any) start first. Every page is run even when one fails; then a
    RuntimeError lists the failures (each page's own one-line error)."""
    from .profiles import get_profile

    get_profile(profile)                                    # an unknown profile: refused first
    if jobs < 1:
        raise ValueError(f"--jobs must be a whole number >= 1, got {jobs}")
    folder = Path(out_dir) if out_dir is not None else executed_dir()
    folder.mkdir(parents=True, exist_ok=True)

    def previous(stem: str) -> float:
        try:
            return float(json.loads((folder / f"{stem}.{profile}.ipynb").read_text())
                         ["metadata"]["ddbook"]["seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0.0

    queue = sorted(notebooks() if pages is None else pages, key=previous, reverse=True)
    env = {**os.environ, "TQDM_DISABLE": "1", "DDBOOK_PROFILE": profile}
    if jobs > 1 and "OMP_NUM_THREADS" not in os.environ:   # share the cores, do not oversubscribe
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    done, failed = [], []
    while queue or running:
        while queue and len(running) < jobs:
            stem = queue.pop(0)
            cmd = [sys.executable, "-m", "ddbook", "notebook", stem, "--profile", profile,
                   "--out", str(folder)]
            running[stem] = (subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True),
                             time.perf_counter())
        time.sleep(0.2)
        for stem, (proc, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            out, err = proc.communicate()
            del running[stem]
            secs = time.perf_counter() - t0
            if proc.returncode == 0:
                done.append(folder / f"{stem}.{profile}.ipynb")
                log(f"{stem} at {profile}: executed in {secs:.0f} s")
            else:
                lines = [ln for ln in (err or out).strip().splitlines() if ln.strip()]
                failed.append(f"{stem}: {lines[-1] if lines else f'exit code {proc.returncode}'}")
                log(f"{stem} at {profile}: FAILED after {secs:.0f} s")
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(done) + len(failed)} pages failed at {profile}: "
                           + "; ".join(failed))
    return done


def _metadata(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text()).get("metadata", {}).get("ddbook", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def executed_for(text: str, folder: Path | str | None = None) -> Path:
    """The executed notebook the book renders for a page whose source is ``text``: the newest
    in ``folder`` (default :func:`executed_dir`) that records this source's SHA-256. A
    LookupError names the page, says whether it was never executed or changed since it ran,
    and gives the command that fixes it."""
    folder = Path(folder) if folder is not None else executed_dir()
    sha = source_sha256(text)
    stems = [s for s, p in notebooks().items() if source_sha256(p.read_text()) == sha]
    page = f"notebooks/{stems[0]}.py" if stems else "this notebook"
    found, other = [], []
    for path in sorted(folder.glob("*.ipynb")) if folder.is_dir() else []:
        if path.name.startswith(".") or path.name.endswith(".failed.ipynb"):
            continue
        meta = _metadata(path)
        if meta.get("source_sha256") == sha:
            found.append((str(meta.get("executed", "")), path))
        elif stems and meta.get("source") == page:
            other.append(path)
    if found:
        return max(found)[1]
    fix = ("run `make book` (papermill executes every page at ci, then the book is built), or "
           f"`python -m ddbook notebook {stems[0] if stems else 'PAGE'} --profile ci` and then "
           "`make html`")
    if other:
        raise LookupError(f"{page} changed after it was executed ({', '.join(p.name for p in other)} "
                          f"in {folder} ran an older version of it): {fix}")
    raise LookupError(f"{page} has no executed notebook in {folder}: the book renders notebooks "
                      f"executed by papermill and executes none itself; {fix}")


def help_text() -> str:
    """Every page (figure NAME, then notebook) and its parameters with their types and defaults."""
    from .figures import modules

    by_nb = {m.NOTEBOOK: name for name, m in modules().items()}
    blocks = []
    for stem, path in notebooks().items():
        head = f"{by_nb[stem]} ({stem})" if stem in by_nb else stem
        rows = [f"    {p.name}: {p.type} = {p.default}" + (f"  # {p.comment}" if p.comment else "")
                for p in parameters(path)]
        blocks.append("\n".join([f"  {head}", *rows]))
    return "pages and their parameters (-p NAME VALUE):\n" + "\n".join(blocks)
