"""Reference images: perceptual hashing and the static / dynamic pools of METHOD.md."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.fft import dct

from services.common.images import DEFAULT_MAX_PIXELS, DecodedImage, decode_image

# METHOD.md: an image within Hamming distance 18 of an already kept one is a near-duplicate.
DUPLICATE_HAMMING_DISTANCE = 18


class Imagery(str, Enum):
    STATIC = "static"
    DYNAMIC = "dynamic"


def phash(pixels: np.ndarray) -> int:
    """The 64-bit perceptual hash: the sign of the 8x8 lowest DCT frequencies of a 32x32
    grayscale thumbnail against their median (the common pHash, as in the imagehash package).

    >>> phash(np.zeros((40, 40, 3), dtype=np.uint8)) == phash(np.zeros((80, 80, 3), dtype=np.uint8))
    True
    """
    gray = Image.fromarray(pixels).convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    frequencies = dct(dct(np.asarray(gray, dtype=np.float64), axis=0, norm=None), axis=1, norm=None)
    low = frequencies[:8, :8]
    bits = (low > np.median(low)).flatten()
    return int("".join("1" if bit else "0" for bit in bits), 2)


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return bin(a ^ b).count("1")


def deduplicate(images: list[DecodedImage], max_distance: int = DUPLICATE_HAMMING_DISTANCE) -> list[DecodedImage]:
    """Keeps images in order, dropping any within `max_distance` bits of one already kept."""
    kept: list[DecodedImage] = []
    kept_hashes: list[int] = []
    for image in images:
        image_hash = phash(image.pixels)
        if all(hamming(image_hash, other) > max_distance for other in kept_hashes):
            kept.append(image)
            kept_hashes.append(image_hash)
    return kept


@dataclass(frozen=True)
class Reference:
    """A cultural reference's images, canonical first."""

    reference_id: str
    images: tuple[DecodedImage, ...]
    imagery: Imagery = Imagery.STATIC

    def __post_init__(self) -> None:
        if not self.images:
            raise ValueError(f"reference {self.reference_id!r} has no images")

    def pool(self, imagery: Imagery | None = None) -> list[DecodedImage]:
        """The reference images scored against: the canonical one (static) or all
        de-duplicated ones (dynamic)."""
        imagery = imagery or self.imagery
        if imagery is Imagery.STATIC:
            return [self.images[0]]
        return deduplicate(list(self.images))


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"}


def image_files(folder: str | Path) -> list[Path]:
    """The image files of a folder in natural order (`2.jpg` before `10.jpg`), so that the
    canonical `1.*` comes first."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=_natural_key)


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def load_reference_folder(
    folder: str | Path, reference_id: str | None = None, imagery: Imagery = Imagery.STATIC,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Reference:
    """A reference from a folder of its images, canonical first."""
    folder = Path(folder)
    files = image_files(folder)
    if not files:
        raise FileNotFoundError(f"no images in {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    images = tuple(decode_image(p.read_bytes(), p.name, max_pixels) for p in files)
    return Reference(reference_id or folder.name, images, imagery)


@dataclass(frozen=True)
class CatalogEntry:
    """One work of a references catalog: ids, title and where its images are."""

    slug: str
    title: str
    imagery: Imagery
    folder: Path
    qid: str | None = None
    image_names: tuple[str, ...] = ()

    @property
    def reference_id(self) -> str:
        """The id `load` gives the work: its slug (a folder of images without one: the
        folder's name)."""
        return self.slug if self.image_names else (self.slug or self.folder.name)

    def image_paths(self) -> list[Path]:
        """Its image files in the order `load` decodes them, canonical first."""
        return [self.folder / n for n in self.image_names] if self.image_names else image_files(self.folder)

    def load(self, max_pixels: int = DEFAULT_MAX_PIXELS) -> Reference:
        if not self.image_names:
            return load_reference_folder(self.folder, self.reference_id, self.imagery, max_pixels)
        images = tuple(decode_image((self.folder / n).read_bytes(), n, max_pixels) for n in self.image_names)
        return Reference(self.reference_id, images, self.imagery)


def load_catalog(root: str | Path) -> list[CatalogEntry]:
    """The works of a references folder laid out as `../shared/data/references`:
    `catalog.json` (slug, title, imagery, qid, images) and a subfolder per slug, or of a
    harvested catalog folder (`catalog.sqlite`). Without either, every subfolder with images
    is a static work named by its folder."""
    root = Path(root)
    if (root / "catalog.sqlite").exists():
        return _harvested_catalog(root)
    catalog_file = root / "catalog.json"
    if not catalog_file.exists():
        return [CatalogEntry(p.name, p.name.replace("_", " "), Imagery.STATIC, p)
                for p in sorted(root.iterdir()) if p.is_dir() and image_files(p)]
    entries = []
    for item in json.loads(catalog_file.read_text()):
        entries.append(CatalogEntry(
            slug=item["slug"],
            title=item.get("title", item["slug"]),
            imagery=Imagery(item.get("imagery", "static")),
            folder=root / item["slug"],
            qid=item.get("qid"),
            image_names=tuple(item.get("images", ())),
        ))
    return entries


def _harvested_catalog(root: Path) -> list[CatalogEntry]:
    """The works of a catalog folder that `iconicity harvest --out` wrote, with the paths of
    their stored images (a work without images is left out: it cannot be scored)."""
    from services.harvester.catalog import Catalog

    entries = []
    with Catalog(root, create=False) as catalog:
        for record in catalog.references():
            paths = tuple(str(catalog.image_path(image)) for image in catalog.images(record.id))
            if paths:
                entries.append(CatalogEntry(record.slug, record.title, Imagery(record.imagery), root, record.qid, paths))
    return entries


def find_catalog_entry(entries: list[CatalogEntry], reference_id: str) -> CatalogEntry:
    """The entry whose slug or QID is `reference_id`; KeyError otherwise."""
    for entry in entries:
        if reference_id in (entry.slug, entry.qid):
            return entry
    raise KeyError(f"no reference {reference_id!r} in the catalog")
