"""A harvest: one source into the catalog, as one snapshot, then covariates and prompts.

Each reference is committed with its images before the next is fetched; an image already
held from the same place is not fetched again. A failure of one image or one reference is
recorded with its reason and the harvest goes on; a failure of the source itself (the query
service gone, a 429 storm past the retries) ends the snapshot as `failed`, keeping what it
finished, and the same command run again continues from there.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from services.common.images import DEFAULT_MAX_PIXELS, InvalidImage, decode_image, media_type
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
) -> HarvestSummary:
    """Runs `source` into `catalog` as a new snapshot and returns its summary. `enrich`
    (covariates and prompt variants) runs over the whole catalog once the references are in.
    `on_start` is told the snapshot id as soon as there is one. Raises `HarvestFailed` when
    the source itself fails."""
    snapshot_id = catalog.begin_snapshot(source.name, source.query())
    summary = HarvestSummary(snapshot_id, source.name)
    if on_start is not None:
        on_start(snapshot_id)
    try:
        for record in source.records():
            merged = catalog.put_reference(snapshot_id, record)
            summary.references_by_kind[merged.kind] += 1
            _store_images(source, catalog, merged, summary, max_pixels)
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
                  max_pixels: int) -> None:
    held = catalog.images(record.id)
    position = len(held)
    for image in source.images(record):
        if catalog.has_image_from(record.id, image.source):
            summary.images_reused += 1
            continue
        try:
            data = image.load()
            decoded = decode_image(data, image.source, max_pixels)
        except (InvalidImage, OSError, RuntimeError) as error:
            _fail(catalog, summary, record.id, "image", f"{image.source}: {error}")
            continue
        stored = catalog.put_image(record.id, position, data, image.source, media_type(data),
                                   decoded.width, decoded.height)
        summary.images_stored += 1
        position = max(position, stored.position) + 1
    if not catalog.images(record.id):
        _fail(catalog, summary, record.id, "reference", "no image could be stored for this reference")


def _fail(catalog: Catalog, summary: HarvestSummary, reference_id: str, stage: str, reason: str) -> None:
    log.warning("harvest: %s: %s: %s", reference_id, stage, reason)
    catalog.record_failure(summary.snapshot_id, reference_id, stage, reason)
    summary.failures.append((reference_id, stage, reason))


def references_without_images(catalog: Catalog, references: Iterable[ReferenceRecord] | None = None) -> list[str]:
    return [r.id for r in (references if references is not None else catalog.references()) if not catalog.images(r.id)]
