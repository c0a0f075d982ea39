"""Where references and their images come from.

A source yields `ReferenceRecord`s and, for each, its images as `SourceImage`s: a name for
where the bytes come from (a URL or a path) and a way to get them. Images are fetched only
when the catalog does not already hold one from the same place, which is what lets a rerun
pick up where an interrupted harvest stopped.

- `OfflineSource`: a catalog file plus an images folder, as `../shared/data/references`.
- `FolderSource`: user-supplied images, one folder per reference (named by slug or QID).
- `UrlListSource`: user-supplied image URLs per reference, from a JSON or text file.
- `WikidataSource` (in `wikidata_source.py`): SPARQL plus Commons thumbnails.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from services.harvester.records import MOVING, STILL, ReferenceRecord, is_qid, parse_year, slugify

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".gif", ".bmp"}


@dataclass(frozen=True)
class SourceImage:
    source: str  # URL or file path: the image's identity within its reference
    load: Callable[[], bytes]


class Source(Protocol):
    name: str

    def query(self) -> str:
        """What was asked, recorded with the snapshot (a config, a path, the SPARQL)."""

    def records(self) -> Iterator[ReferenceRecord]: ...

    def images(self, record: ReferenceRecord) -> Iterator[SourceImage]: ...


def _image_files(folder: Path) -> list[Path]:
    """Image files of a folder in natural order: 1.jpg, 2.webp, ..., 10.jpg."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: (int(p.stem) if p.stem.isdigit() else float("inf"), p.name))


def _file_image(path: Path) -> SourceImage:
    return SourceImage(str(path.resolve()), path.read_bytes)


def record_from_entry(entry: dict) -> ReferenceRecord:
    """A catalog entry as `../shared/data/references/catalog.json` writes it (slug, title,
    medium, imagery, qid, creator, inception, sitelinks_lower_bound, commons_image, imdb,
    images, public_domain), or as the harvester exports it (`ReferenceRecord.to_dict`)."""
    if "title" not in entry or not str(entry["title"]).strip():
        raise ValueError(f"catalog entry {entry.get('slug') or entry.get('id') or entry!r} has no title")
    title = str(entry["title"]).strip()
    slug = entry.get("slug") or slugify(title)
    qid = entry.get("qid") if is_qid(entry.get("qid")) else None
    reference_id = entry.get("id") or qid or slug
    kind = entry.get("kind") or (MOVING if entry.get("imagery") == "dynamic" else STILL)
    inception = entry.get("inception")
    sitelinks = entry.get("sitelinks", entry.get("sitelinks_lower_bound"))
    image_urls = list(entry.get("image_urls") or [])
    if entry.get("commons_image") and entry["commons_image"] not in image_urls:
        image_urls.append(entry["commons_image"])
    return ReferenceRecord.from_dict({
        **{k: v for k, v in entry.items() if k not in ("images", "qid")},
        "id": reference_id, "slug": slug, "title": title, "kind": kind, "inception": inception,
        "year": entry.get("year") if entry.get("year") is not None else parse_year(str(inception) if inception else None),
        "sitelinks": sitelinks, "image_urls": image_urls,
    })


class OfflineSource:
    """A catalog file plus a folder with a subfolder of images per reference slug."""

    name = "offline"

    def __init__(self, catalog_file: str | Path, images_dir: str | Path | None = None) -> None:
        self.catalog_file = Path(catalog_file)
        if not self.catalog_file.is_file():
            raise FileNotFoundError(f"no catalog file {str(self.catalog_file)!r}")
        self.images_dir = Path(images_dir) if images_dir is not None else self.catalog_file.parent
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"no images folder {str(self.images_dir)!r}")
        try:
            entries = json.loads(self.catalog_file.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"catalog file {str(self.catalog_file)!r} is not valid JSON: {error}") from error
        if isinstance(entries, dict):
            entries = entries.get("references", [])
        if not isinstance(entries, list):
            raise ValueError(f"catalog file {str(self.catalog_file)!r} must hold a list of references")
        self._entries = entries

    def query(self) -> str:
        return json.dumps({"catalog": str(self.catalog_file.resolve()), "images_dir": str(self.images_dir.resolve())})

    def records(self) -> Iterator[ReferenceRecord]:
        for entry in self._entries:
            yield record_from_entry(entry)

    def images(self, record: ReferenceRecord) -> Iterator[SourceImage]:
        entry = next((e for e in self._entries if (e.get("slug") or slugify(e["title"])) == record.slug), {})
        folder = self.images_dir / record.slug
        names = entry.get("images")
        if names:
            for name in names:
                yield _file_image(folder / name)
        elif folder.is_dir():
            yield from (_file_image(path) for path in _image_files(folder))


class FolderSource:
    """User-supplied images: `DIR/<slug or QID>/*.jpg`. A folder whose name matches no
    reference becomes a new still reference titled after the folder."""

    name = "folder"

    def __init__(self, images_dir: str | Path, known: dict[str, ReferenceRecord] | None = None) -> None:
        self.images_dir = Path(images_dir)
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"no images folder {str(self.images_dir)!r}")
        self._known = known or {}

    def query(self) -> str:
        return json.dumps({"images_dir": str(self.images_dir.resolve())})

    def records(self) -> Iterator[ReferenceRecord]:
        by_slug = {r.slug: r for r in self._known.values()}
        for folder in sorted(p for p in self.images_dir.iterdir() if p.is_dir() and _image_files(p)):
            known = self._known.get(folder.name) or by_slug.get(folder.name)
            yield known or ReferenceRecord(id=folder.name, slug=folder.name, title=folder.name.replace("_", " "))

    def images(self, record: ReferenceRecord) -> Iterator[SourceImage]:
        for name in (record.id, record.slug):
            folder = self.images_dir / name
            if folder.is_dir():
                yield from (_file_image(path) for path in _image_files(folder))
                return


class UrlListSource:
    """User-supplied image URLs: a JSON object {reference id: [url, ...]} or a text file of
    `reference_id url` lines. References must already be in the catalog (`known`)."""

    name = "urls"

    def __init__(self, url_file: str | Path, known: dict[str, ReferenceRecord], fetch: Callable[[str], bytes]) -> None:
        self.url_file = Path(url_file)
        text = self.url_file.read_text()
        if self.url_file.suffix == ".json":
            self._urls = {k: list(v) for k, v in json.loads(text).items()}
        else:
            self._urls = {}
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip() and not line.lstrip().startswith("#"):
                    parts = line.split()
                    if len(parts) != 2:
                        raise ValueError(f"{self.url_file}:{number}: expected `reference_id url`, got {line.strip()!r}")
                    self._urls.setdefault(parts[0], []).append(parts[1])
        by_slug = {r.slug: r for r in known.values()}
        missing = [rid for rid in self._urls if rid not in known and rid not in by_slug]
        if missing:
            raise KeyError(f"{self.url_file}: references not in the catalog: {', '.join(sorted(missing))}")
        self._records = [known.get(rid) or by_slug[rid] for rid in self._urls]
        self._fetch = fetch

    def query(self) -> str:
        return json.dumps({"url_file": str(self.url_file.resolve())})

    def records(self) -> Iterator[ReferenceRecord]:
        yield from self._records

    def images(self, record: ReferenceRecord) -> Iterator[SourceImage]:
        for url in self._urls.get(record.id, self._urls.get(record.slug, [])):
            yield SourceImage(url, lambda url=url: self._fetch(url))
