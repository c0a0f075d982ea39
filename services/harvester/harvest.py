"""A harvest: one source into the catalog, as one snapshot, then covariates and prompts.

Each reference is committed with its images before the next is fetched; an image already
held from the same place is not fetched again. A failure of one image or one reference is
recorded with its reason and the harvest goes on; a failure of the source itself (the query
service gone, a 429 storm past the retries) ends the snapshot as `failed`, keeping what it
finished, and the same command run again continues from there.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.images import DEFAULT_MAX_PIXELS, InvalidImage, decode_image, media_type
from services.harvester.cachefiles import digest, read_cached, write_cached
from services.harvester.catalog import Catalog
from services.harvester.records import ReferenceRecord
from services.harvester.sources import Source

log = logging.getLogger("iconicity.harvester")

Progress = Callable[[ReferenceRecord], None]


@dataclass
class HarvestSummary:
    snapshot_id: int
    source: str
    status: str = "running"
    references_by_kind: Counter = field(default_factory=Counter)
    images_stored: int = 0
    images_reused: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # reference id, stage, reason
    covariates_filled: dict[str, int] = field(default_factory=dict)
    prompts_by_perturbation: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id, "source": self.source, "status": self.status,
            "references_by_kind": dict(self.references_by_kind), "references": sum(self.references_by_kind.values()),
            "images_stored": self.images_stored, "images_reused": self.images_reused,
            "failures": [{"reference_id": r, "stage": s, "reason": why} for r, s, why in self.failures],
            "covariates_filled": self.covariates_filled, "prompts_by_perturbation": self.prompts_by_perturbation,
            "error": self.error,
        }


class HarvestFailed(RuntimeError):
    """The source failed part way; `summary` says what was kept."""

    def __init__(self, message: str, summary: HarvestSummary) -> None:
        super().__init__(message)
        self.summary = summary


def harvest(
    source: Source,
    catalog: Catalog,
    *,
    enrich: Callable[[Catalog, HarvestSummary], None] | None = None,
    on_reference: Progress | None = None,
    on_start: Callable[[int], None] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    image_sizes: str | Path | None = None,
) -> HarvestSummary:
    """Runs `source` into `catalog` as a new snapshot and returns its summary. `enrich`
    (covariates and prompt variants) runs over the whole catalog once the references are in.
    `on_start` is told the snapshot id as soon as there is one. `image_sizes` is a folder
    that keeps the decoded size of each image by content, so that bytes decoded once, by
    any harvest, are not decoded again (`decoded_size`). Raises `HarvestFailed` when the
    source itself fails."""
    snapshot_id = catalog.begin_snapshot(source.name, source.query())
    summary = HarvestSummary(snapshot_id, source.name)
    if on_start is not None:
        on_start(snapshot_id)
    try:
        for record in source.records():
            merged = catalog.put_reference(snapshot_id, record)
            summary.references_by_kind[merged.kind] += 1
            _store_images(source, catalog, merged, summary, max_pixels, image_sizes)
            if on_reference is not None:
                on_reference(merged)
        if enrich is not None:
            enrich(catalog, summary)
    except Exception as error:
        summary.status, summary.error = "failed", f"{type(error).__name__}: {error}"
        catalog.finish_snapshot(snapshot_id, "failed", summary.to_dict())
        raise HarvestFailed(f"harvest from {source.name} stopped: {error} (what was harvested is kept; "
                            f"run the same command again to continue)", summary) from error
    summary.status = "complete"
    catalog.finish_snapshot(snapshot_id, "complete", summary.to_dict())
    return summary


def _store_images(source: Source, catalog: Catalog, record: ReferenceRecord, summary: HarvestSummary,
                  max_pixels: int, image_sizes: str | Path | None) -> None:
    held = catalog.images(record.id)
    position = len(held)
    for image in source.images(record):
        if catalog.has_image_from(record.id, image.source):
            summary.images_reused += 1
            continue
        try:
            data = image.load()
            width, height = decoded_size(data, image.source, max_pixels, image_sizes)
        except (InvalidImage, OSError, RuntimeError) as error:
            _fail(catalog, summary, record.id, "image", f"{image.source}: {error}")
            continue
        stored = catalog.put_image(record.id, position, data, image.source, media_type(data), width, height)
        summary.images_stored += 1
        position = max(position, stored.position) + 1
    if not catalog.images(record.id):
        _fail(catalog, summary, record.id, "reference", "no image could be stored for this reference")


def decoded_size(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS,
                 folder: str | Path | None = None) -> tuple[int, int]:
    """(width, height) of the image as `decode_image` gives it (EXIF orientation applied),
    raising as it does for bytes that are no image we can score. The pixels are decoded in
    full, since that is what tells a damaged file from a good one.

    With `folder`, a size found is kept there by the content of the bytes, the pixel limit,
    and the code and library versions that decode them, and read back instead of decoding
    the same bytes again; bytes that fail are decoded (and fail) every time."""
    try:
        key = digest(_IMAGE_SIZE_FORMAT, data, max_pixels, *_decoder_version()) if folder is not None else None
    except OSError:  # the decoder's source cannot be read (a zipped install): nothing to key by
        key = None
    if key is None:
        decoded = decode_image(data, name, max_pixels)
        return decoded.width, decoded.height
    entry = Path(folder) / key[:2] / f"{key}.json"
    kept = read_cached(entry)
    if kept is not None:
        try:
            width, height = json.loads(kept)
            if type(width) is int and type(height) is int and width > 0 and height > 0:
                return width, height
        except (ValueError, TypeError):
            pass  # damaged: decoded again and rewritten
    decoded = decode_image(data, name, max_pixels)
    write_cached(entry, json.dumps([decoded.width, decoded.height]).encode("ascii"))
    return decoded.width, decoded.height


_IMAGE_SIZE_FORMAT = "iconicity decoded image size 1"


@functools.lru_cache(maxsize=1)
def _decoder_version() -> tuple[bytes, str]:
    """What `decode_image` depends on besides the bytes: its module's code, Pillow and numpy."""
    import numpy
    import PIL

    from services.common import images

    return Path(images.__file__).read_bytes(), f"Pillow {PIL.__version__}, numpy {numpy.__version__}"


def _fail(catalog: Catalog, summary: HarvestSummary, reference_id: str, stage: str, reason: str) -> None:
    log.warning("harvest: %s: %s: %s", reference_id, stage, reason)
    catalog.record_failure(summary.snapshot_id, reference_id, stage, reason)
    summary.failures.append((reference_id, stage, reason))


def references_without_images(catalog: Catalog, references: Iterable[ReferenceRecord] | None = None) -> list[str]:
    return [r.id for r in (references if references is not None else catalog.references()) if not catalog.images(r.id)]
