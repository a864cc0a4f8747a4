"""Rerun one page of the book at a profile, with its parameters: the notebook ``notebooks/<page>.py``
converted by jupytext and executed by papermill, the executed notebook written to
``_build/rerun/<notebook>.<profile>.ipynb`` (``python -m ddbook notebook PAGE --profile quick
-p NAME VALUE``, or ``make rerun PAGE=... PROFILE=...``).

- :func:`notebooks` — {notebook name: path} of every page; :func:`resolve` a page (a figure
  module's NAME or a notebook name) to its notebook;
- :func:`parameters` — the parameters of a notebook, read from its ``parameters`` cell: name,
  type, default (as written), comment;
- :func:`coerce` — ``-p NAME VALUE`` strings to the declared types; an unknown name or a value of
  the wrong type is refused before anything runs;
- :func:`execute` — run it; :func:`help_text` — every page and its parameters, for ``--help``.
"""
from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass
from pathlib import Path

from . import paths

__all__ = ["Param", "notebooks", "resolve", "parameters", "coerce", "default_output", "execute",
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


def default_output(path: Path, profile: str) -> Path:
    """``_build/rerun/<notebook>.<profile>.ipynb`` in the repository."""
    return paths.repo_root() / "_build" / "rerun" / f"{path.stem}.{profile}.ipynb"


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
    try:
        pm.execute_notebook(jupytext.read(path), str(partial), parameters=values,
                            cwd=str(path.parent), kernel_name="python3", progress_bar=False,
                            language="python")
    except pm.PapermillExecutionError as e:
        partial.replace(failed)
        raise RuntimeError(f"{path.stem} at {profile} failed in cell {e.exec_count}: {e.ename}: "
                           f"{e.evalue} (the partly executed notebook is {failed})") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(out)
    failed.unlink(missing_ok=True)
    return out


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
