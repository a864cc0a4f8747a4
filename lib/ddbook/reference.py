"""The papers' reported numbers, read from ``reference/paper-numbers.csv`` (copied from
``../shared/reference``). Figures draw reference markers from here, never from numbers typed into
a notebook; every row carries its source and a confidence tag.
"""
from __future__ import annotations

import csv
from functools import lru_cache

from . import paths

__all__ = ["paper_numbers", "paper_value", "confidence"]


@lru_cache(maxsize=1)
def _rows() -> tuple[dict, ...]:
    file = paths.repo_root() / "reference" / "paper-numbers.csv"
    with open(file, newline="") as f:
        rows = []
        for row in csv.DictReader(f):
            row["mean"] = float(row["mean"]) if row["mean"] else None
            row["std"] = float(row["std"]) if row["std"] else None
            row["ipc"] = int(row["ipc"]) if row["ipc"].isdigit() else (row["ipc"] or None)  # "full"
            rows.append(row)
    return tuple(rows)


def paper_numbers(**match) -> list[dict]:
    """Rows whose fields equal every ``match`` item, e.g. ``paper="SelMatch", dataset="CIFAR-10"``.

    A string value ending in ``*`` matches as a prefix (``where="Fig. 3*"``).
    """
    def ok(row):
        for key, want in match.items():
            if key not in row:
                raise KeyError(f"paper-numbers.csv has no column {key!r}; columns: {list(row)}")
            have = row[key]
            if isinstance(want, str) and want.endswith("*"):
                if not str(have).startswith(want[:-1]):
                    return False
            elif have != want:
                return False
        return True

    return [dict(r) for r in _rows() if ok(r)]


def paper_value(**match) -> dict:
    """The single row matching ``match`` (an error if none or several match)."""
    rows = paper_numbers(**match)
    if len(rows) != 1:
        raise LookupError(f"{len(rows)} rows of paper-numbers.csv match {match}; expected exactly one")
    return rows[0]


def confidence(rows) -> str:
    """How far to trust ``rows`` (from :func:`paper_numbers`), for a caption: each distinct
    (paper, where) with its confidence tag, e.g. "MTT Table 1: paper table; SelMatch Table 1:
    table image, secondary"."""
    seen = dict.fromkeys(f"{r['paper']} {r['where']}: {r['confidence']}" for r in rows)
    if not seen:
        raise LookupError("no paper numbers given: nothing to state the confidence of")
    return "; ".join(seen)

