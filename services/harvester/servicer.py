"""The harvester's gRPC servicer: protos in, `Catalog` reads and `harvest` runs, protos out.

Errors are status codes (see harvester.proto): an unknown reference or harvest is NOT_FOUND;
a bad filter or harvest request is INVALID_ARGUMENT; a second harvest while one runs is
FAILED_PRECONDITION.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import grpc
from iconicity.v1 import harvester_pb2, harvester_pb2_grpc

from services.harvester.catalog import Catalog, CatalogError
from services.harvester.harvest import HarvestFailed, harvest
from services.harvester.records import MOVING, STILL, ReferenceRecord
from services.harvester.sources import Source

log = logging.getLogger("iconicity.harvester")

SERVICE_NAME = harvester_pb2.DESCRIPTOR.services_by_name["HarvesterService"].full_name

_KINDS = {harvester_pb2.REFERENCE_KIND_STILL: STILL, harvester_pb2.REFERENCE_KIND_MOVING: MOVING}
_KIND_PROTOS = {value: key for key, value in _KINDS.items()}
_STATES = {"running": harvester_pb2.HARVEST_STATE_RUNNING, "complete": harvester_pb2.HARVEST_STATE_COMPLETE,
           "failed": harvester_pb2.HARVEST_STATE_FAILED}

_COVARIATES = ("sitelinks", "year", "same_title_catalog", "near_title_catalog", "same_title_export",
               "near_title_export", "caption_count")

# Builds the source and the enrich step of a harvest from a StartHarvest request; raises
# ValueError (INVALID_ARGUMENT) or FileNotFoundError (NOT_FOUND) for a bad request.
SourceFactory = Callable[[harvester_pb2.StartHarvestRequest, Catalog], tuple[Source, Callable | None]]


def select_references(catalog: Catalog, kind: str | None = None, min_sitelinks: int = 0, title_contains: str = "",
                      top_n: int = 0, with_images_only: bool = False) -> list[ReferenceRecord]:
    """The catalog's references that pass every filter; with `top_n`, the most linked first
    (ties by id), else ordered by id."""
    needle = title_contains.casefold()
    chosen = [
        r for r in catalog.references()
        if (kind is None or r.kind == kind)
        and (min_sitelinks <= 0 or (r.sitelinks or 0) >= min_sitelinks)
        and needle in r.title.casefold()
        and (not with_images_only or catalog.images(r.id))
    ]
    if top_n > 0:
        chosen = sorted(chosen, key=lambda r: (-(r.sitelinks or 0), r.id))[:top_n]
    return chosen


class HarvesterServicer(harvester_pb2_grpc.HarvesterServiceServicer):
    def __init__(self, catalog: Catalog, source_factory: SourceFactory) -> None:
        self.catalog = catalog
        self._source_factory = source_factory
        self._harvest_lock = threading.Lock()
        self._running: threading.Thread | None = None

    # -- reading ---------------------------------------------------------------------------
    def ListReferences(self, request, context) -> Iterator[harvester_pb2.ListReferencesResponse]:
        if request.min_sitelinks < 0 or request.top_n < 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "min_sitelinks and top_n must be 0 or more")
        kind = _KINDS.get(request.kind)
        for record in select_references(self.catalog, kind, request.min_sitelinks, request.title_contains,
                                        request.top_n, request.with_images_only):
            if not context.is_active():
                return
            yield harvester_pb2.ListReferencesResponse(reference=self._reference(record))

    def GetReference(self, request, context) -> harvester_pb2.GetReferenceResponse:
        return harvester_pb2.GetReferenceResponse(reference=self._reference(self._find(request.reference_id, context)))

    def StreamReferenceImages(self, request, context) -> Iterator[harvester_pb2.StreamReferenceImagesResponse]:
        record = self._find(request.reference_id, context)
        for image in self.catalog.images(record.id):
            try:
                data = self.catalog.read_image(image)
            except (OSError, CatalogError) as error:
                context.abort(grpc.StatusCode.DATA_LOSS, f"image {image.sha256[:12]} of {record.id}: {error}")
            yield harvester_pb2.StreamReferenceImagesResponse(image=harvester_pb2.ReferenceImage(
                reference_id=record.id, position=image.position, sha256=image.sha256, source=image.source,
                media_type=image.media_type, width=image.width, height=image.height, data=data))

    def ListPromptVariants(self, request, context) -> harvester_pb2.ListPromptVariantsResponse:
        reference_id = self._find(request.reference_id, context).id if request.reference_id else None
        prompts = self.catalog.prompts(reference_id, request.perturbation or None)
        return harvester_pb2.ListPromptVariantsResponse(variants=[
            harvester_pb2.PromptVariant(reference_id=p.reference_id, perturbation=p.perturbation, text=p.text,
                                        method=p.method) for p in prompts])

    # -- harvesting ------------------------------------------------------------------------
    def StartHarvest(self, request, context) -> harvester_pb2.StartHarvestResponse:
        if request.WhichOneof("source") is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "StartHarvest needs a source: offline or config_yaml")
        try:
            source, enrich = self._source_factory(request, self.catalog)
        except FileNotFoundError as error:
            context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        except (ValueError, KeyError) as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        if not self._harvest_lock.acquire(blocking=False):
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "a harvest is already running; poll GetHarvest")
        started = threading.Event()
        snapshot: list[int] = []

        def run() -> None:
            try:
                harvest(source, self.catalog, enrich=enrich, on_start=lambda sid: (snapshot.append(sid), started.set()))
            except HarvestFailed as error:
                log.warning("harvest_failed", extra={"error": str(error)})
            except Exception:  # noqa: BLE001 - logged; the snapshot says failed
                log.exception("harvest_crashed")
            finally:
                started.set()
                self._harvest_lock.release()

        self._running = threading.Thread(target=run, name="harvest", daemon=True)
        self._running.start()
        started.wait()
        if not snapshot:
            context.abort(grpc.StatusCode.INTERNAL, "the harvest could not start; see the server log")
        return harvester_pb2.StartHarvestResponse(harvest=self._harvest(snapshot[0]))

    def GetHarvest(self, request, context) -> harvester_pb2.GetHarvestResponse:
        try:
            return harvester_pb2.GetHarvestResponse(harvest=self._harvest(request.harvest_id))
        except KeyError as error:
            context.abort(grpc.StatusCode.NOT_FOUND, str(error.args[0]))

    def wait_for_harvest(self, timeout: float | None = None) -> None:
        if self._running is not None:
            self._running.join(timeout)

    # -- protos ----------------------------------------------------------------------------
    def _find(self, reference_id: str, context: grpc.ServicerContext) -> ReferenceRecord:
        if not reference_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "reference_id is empty")
        try:
            return self.catalog.reference(reference_id)
        except KeyError:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no reference {reference_id!r} in the catalog")

    def _reference(self, record: ReferenceRecord) -> harvester_pb2.Reference:
        row = self.catalog.covariates(record.id).get(record.id, {})
        covariates = harvester_pb2.Covariates(**{
            name: row[name] for name in _COVARIATES if row.get(name) is not None})
        if record.sitelinks is not None and not covariates.HasField("sitelinks"):
            covariates.sitelinks = record.sitelinks
        if record.year is not None and not covariates.HasField("year"):
            covariates.year = record.year
        return harvester_pb2.Reference(
            id=record.id, slug=record.slug, title=record.title, kind=_KIND_PROTOS[record.kind],
            medium=record.medium or "", creator=record.creator or "", inception=record.inception or "",
            covariates=covariates, imdb=record.imdb or "", n_images=len(self.catalog.images(record.id)),
            labels=record.labels, depicts=list(record.depicts), genres=list(record.genres))

    def _harvest(self, snapshot_id: int) -> harvester_pb2.Harvest:
        snapshot = self.catalog.snapshot(snapshot_id)
        summary = snapshot.summary or {}
        failures = [harvester_pb2.HarvestFailure(reference_id=r, stage=s, reason=why)
                    for r, s, why in self.catalog.failures(snapshot_id)]
        return harvester_pb2.Harvest(
            harvest_id=snapshot.id, state=_STATES[snapshot.status], source=snapshot.source,
            references=len(self.catalog.snapshot_references(snapshot_id)),
            images_stored=int(summary.get("images_stored", 0)), failures=failures, error=summary.get("error") or "")
