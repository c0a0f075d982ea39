"""The Wikidata paintings export (`../shared/data/wikidata/artonwikidata_paintings.csv`):
what it says about a painting, by QID, for references harvested offline.

Its list columns (`_depicts`, `_genre`, ...) separate values with ", "; a comma inside a
value is written as a full-width "，" (as in "Anthony， bastard of Burgundy").
"""

from __future__ import annotations

import csv
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

EXPORT_NAME = "artonwikidata_paintings.csv"


@dataclass(frozen=True)
class ExportedPainting:
    qid: str
    title: str
    creator: str | None
    inception: str | None
    depicts: tuple[str, ...]
    genres: tuple[str, ...]


def split_values(cell: str | None) -> tuple[str, ...]:
    """
    >>> split_values("Night, Sky, Anthony， bastard of Burgundy")
    ('Night', 'Sky', 'Anthony， bastard of Burgundy')
    >>> split_values("")
    ()
    """
    return tuple(v.strip() for v in (cell or "").split(", ") if v.strip())


def read_export(path: str | Path, qids: Collection[str] | None = None) -> dict[str, ExportedPainting]:
    """Every painting of the export, by QID; only those of `qids` when given (the rows are
    all read either way, the others not made into paintings)."""
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"id", "_title", "_depicts", "_genre"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path} is not a paintings export: no column {', '.join(sorted(missing))}")
        return {
            row["id"]: ExportedPainting(row["id"], row["_title"], row.get("_artist") or None, row.get("_creation") or None,
                                        split_values(row["_depicts"]), split_values(row["_genre"]))
            for row in reader
            if qids is None or row["id"] in qids
        }


def export_beside(folder: str | Path) -> Path | None:
    """The export where the shared data keeps it, next to a references folder
    (`data/references` -> `data/wikidata/artonwikidata_paintings.csv`), if it is there."""
    candidate = Path(folder).resolve().parent / "wikidata" / EXPORT_NAME
    return candidate if candidate.is_file() else None
