"""The harvester's records: a cultural reference as the catalog keeps it, and its images.

Plain data, no storage and no network: the Wikidata source, the offline import, the
covariates and the prompt variants all produce or read these.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field, fields
from typing import Any

STILL, MOVING = "still", "moving"
KINDS = (STILL, MOVING)

_QID = re.compile(r"^Q[1-9][0-9]*$")
_YEAR = re.compile(r"(-?\d{1,4})")


def is_qid(value: str | None) -> bool:
    """
    >>> is_qid("Q45585"), is_qid("the_starry_night"), is_qid(None)
    (True, False, False)
    """
    return bool(value) and bool(_QID.match(value))


def slugify(title: str) -> str:
    """A stable ASCII id from a title, as the shared catalog spells its slugs.

    >>> slugify("The Third of May 1808"), slugify("Bal du moulin de la Galette"), slugify("Udnie (Young American Girl)")
    ('the_third_of_may_1808', 'bal_du_moulin_de_la_galette', 'udnie_young_american_girl')
    """
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "_", ascii_title.lower()).strip("_") or "untitled"


def parse_year(inception: str | None) -> int | None:
    """The first year in an inception or publication date: '1889', 'c. 1831',
    '1503-1519', '+1889-01-01T00:00:00Z' (Wikidata's form); None when there is none.

    >>> parse_year("c. 1831"), parse_year("+1889-01-01T00:00:00Z"), parse_year("1503-1519"), parse_year(None)
    (1831, 1889, 1503, None)
    """
    if not inception:
        return None
    match = _YEAR.search(inception.lstrip("+"))
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class ReferenceRecord:
    """A work as harvested. `id` is its Wikidata QID where it has one, its slug otherwise;
    `image_urls` lists the canonical image (Wikidata P18) first, then the extra ones."""

    id: str
    slug: str
    title: str
    kind: str = STILL
    medium: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # language -> label
    creator: str | None = None
    creator_qid: str | None = None
    inception: str | None = None
    year: int | None = None
    sitelinks: int | None = None
    imdb: str | None = None
    image_urls: tuple[str, ...] = ()
    depicts: tuple[str, ...] = ()
    genres: tuple[str, ...] = ()
    description: str | None = None  # a literal description supplied with the catalog
    public_domain: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"reference {self.id!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not self.title.strip():
            raise ValueError(f"reference {self.id!r} has an empty title")

    @property
    def qid(self) -> str | None:
        return self.id if is_qid(self.id) else None

    @property
    def imagery(self) -> str:
        """The scorer's default setting for this kind: one image for still works, the pool
        for moving ones (METHOD.md)."""
        return "static" if self.kind == STILL else "dynamic"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("image_urls", "depicts", "genres"):
            data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReferenceRecord:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("image_urls", "depicts", "genres"):
            values[name] = tuple(values.get(name) or ())
        values["labels"] = dict(values.get("labels") or {})
        return cls(**values)

    def merged(self, newer: ReferenceRecord) -> ReferenceRecord:
        """This record updated by a newer harvest of the same work: the newer values win
        where they are present; labels, images, depicts and genres are united in order."""
        if newer.id != self.id:
            raise ValueError(f"cannot merge {newer.id!r} into {self.id!r}")
        values = self.to_dict()
        for key, value in newer.to_dict().items():
            if key in ("image_urls", "depicts", "genres"):
                values[key] = list(dict.fromkeys([*values[key], *value]))
            elif key == "labels":
                values[key] = {**values[key], **value}
            elif value not in (None, "", [], {}):
                values[key] = value
        return ReferenceRecord.from_dict(values)


@dataclass(frozen=True)
class ImageRecord:
    """One stored reference image, addressed by the SHA-256 of its bytes."""

    reference_id: str
    position: int  # 0 = canonical
    sha256: str
    source: str  # URL, or path of the file it was imported from
    media_type: str
    width: int
    height: int
    size_bytes: int
