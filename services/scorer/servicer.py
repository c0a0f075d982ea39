"""The scorer's gRPC servicer: protos in, `Scorer` calls, protos out.

Everything that costs something to open is opened once, outside the handlers: encoders are
loaded on first use and kept (`EncoderPool`), one `Scorer` per pair of encoders shares one
embedding cache, the catalog is read at startup, and registered references live in memory
keyed by a handle derived from their content (`ReferenceRegistry`).

Errors are status codes (see scorer.proto): a bad image, no images, a threshold outside
(0, 1) or a malformed stream are INVALID_ARGUMENT; an unknown handle, reference id or
encoder is NOT_FOUND; an encoder without weights is FAILED_PRECONDITION; a cancelled call
or one whose deadline passed stops its work between encoder batches and ends CANCELLED or
DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import grpc
from iconicity.v1 import common_pb2, scorer_pb2, scorer_pb2_grpc

from services.common.images import (
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    InvalidImage,
    decode_image,
)
from services.common.server import deadline_passed, status_on_error
from services.scorer.aggregation import CrtVariant
from services.scorer.cache import EmbeddingCache
from services.scorer.crops import GRID
from services.scorer.encoders import (
    Cancelled,
    Encoder,
    EncoderUnavailable,
    UnknownEncoder,
    describe_encoders,
    load_encoder,
    weights_folder,
)
from services.scorer.references import (
    CatalogEntry,
    Imagery,
    Reference,
    find_catalog_entry,
)
from services.scorer.scoring import ImageScore, Scorer, ScoreSettings, ScoreSummary, check_grid

log = logging.getLogger("iconicity.scorer")

SERVICE_NAME = scorer_pb2.DESCRIPTOR.services_by_name["ScorerService"].full_name

DEFAULT_MAX_REFERENCES = 1024

_IMAGERY_FROM_PROTO = {common_pb2.IMAGERY_STATIC: Imagery.STATIC, common_pb2.IMAGERY_DYNAMIC: Imagery.DYNAMIC}
_IMAGERY_TO_PROTO = {value: key for key, value in _IMAGERY_FROM_PROTO.items()}
_CRT_FROM_PROTO = {
    common_pb2.CRT_VARIANT_UNSPECIFIED: CrtVariant.RECOGNIZED_IMAGES,
    common_pb2.CRT_VARIANT_RECOGNIZED_IMAGES: CrtVariant.RECOGNIZED_IMAGES,
    common_pb2.CRT_VARIANT_ALL_IMAGES: CrtVariant.ALL_IMAGES,
}
_CRT_TO_PROTO = {CrtVariant.RECOGNIZED_IMAGES: common_pb2.CRT_VARIANT_RECOGNIZED_IMAGES,
                 CrtVariant.ALL_IMAGES: common_pb2.CRT_VARIANT_ALL_IMAGES}


class RequestError(Exception):
    """A request the servicer refuses, with the status code to answer."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


# -- resources, opened once -------------------------------------------------------------


class EncoderPool:
    """Encoders by name, each loaded on first use (once, even when several calls ask at
    the same time) and kept for the life of the server."""

    def __init__(self, device: str | None = None, dtype: str | None = None, weights: str | Path | None = None) -> None:
        self.device = device
        self.dtype = dtype
        self.weights = weights
        self._encoders: dict[str, Encoder] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Encoder:
        """The encoder `name`; raises `UnknownEncoder` or `EncoderUnavailable` (not
        remembered: weights put in place later are found by the next call)."""
        encoder = self._encoders.get(name)
        if encoder is not None:
            return encoder
        with self._lock:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            encoder = self._encoders.get(name)
            if encoder is None:
                encoder = load_encoder(name, weights=weights_folder(name, self.weights), device=self.device, dtype=self.dtype)
                self._encoders[name] = encoder
                log.info("encoder_loaded", extra={"encoder": name, "identity": encoder.identity})
        return encoder

    @property
    def loaded(self) -> list[str]:
        return list(self._encoders)


def reference_handle(images: Sequence[DecodedImage], imagery: Imagery) -> str:
    """The handle of a reference: a hash of its images' content hashes, in order, and its
    imagery. The same images registered again get the same handle.

    >>> import numpy as np
    >>> image = DecodedImage("a.png", np.zeros((4, 4, 3), np.uint8), "ab" * 32)
    >>> reference_handle([image], Imagery.STATIC) == reference_handle([image], Imagery.STATIC)
    True
    >>> reference_handle([image], Imagery.STATIC) == reference_handle([image], Imagery.DYNAMIC)
    False
    """
    digest = hashlib.sha256(imagery.value.encode())
    for image in images:
        digest.update(b"\0" + image.content_hash.encode())
    return "ref-" + digest.hexdigest()[:40]


class ReferenceRegistry:
    """Registered references by handle, in memory, the least recently used dropped past
    `max_references` (a dropped handle is NOT_FOUND until registered again)."""

    def __init__(self, max_references: int = DEFAULT_MAX_REFERENCES) -> None:
        self.max_references = max_references
        self._references: OrderedDict[str, Reference] = OrderedDict()
        self._lock = threading.Lock()

    def register(self, handle: str, reference: Reference) -> Reference:
        """Stores `reference` under `handle` unless one is there; returns the stored one."""
        with self._lock:
            stored = self._references.setdefault(handle, reference)
            self._references.move_to_end(handle)
            while len(self._references) > self.max_references:
                self._references.popitem(last=False)
            return stored

    def get(self, handle: str) -> Reference:
        with self._lock:
            reference = self._references[handle]  # KeyError for an unknown handle
            self._references.move_to_end(handle)
            return reference

    def __len__(self) -> int:
        return len(self._references)


# -- the servicer -------------------------------------------------------------------------


class ScorerServicer(scorer_pb2_grpc.ScorerServiceServicer):
    """Translates ScorerService calls to `Scorer` calls and back."""

    def __init__(
        self,
        *,
        recognition_encoder: str,
        realization_encoder: str,
        encoders: EncoderPool | None = None,
        cache: EmbeddingCache | None = None,
        catalog: Sequence[CatalogEntry] | None = None,
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        batch_size: int = 32,
        max_references: int = DEFAULT_MAX_REFERENCES,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.recognition_encoder = recognition_encoder
        self.realization_encoder = realization_encoder
        self.encoders = encoders or EncoderPool()
        self.cache = cache if cache is not None else EmbeddingCache()
        self.catalog = list(catalog) if catalog is not None else None
        self.max_image_pixels = max_image_pixels
        self.batch_size = batch_size
        self.references = ReferenceRegistry(max_references)
        self._scorers: dict[tuple[str, str], Scorer] = {}
        self._scorers_lock = threading.Lock()

    def scorer(self, recognition_encoder: str = "", realization_encoder: str = "") -> Scorer:
        """The `Scorer` for a pair of encoders (the server's defaults for empty names),
        made once and kept; all of them share one embedding cache."""
        key = (recognition_encoder or self.recognition_encoder, realization_encoder or self.realization_encoder)
        scorer = self._scorers.get(key)
        if scorer is None:
            recognition, realization = self.encoders.get(key[0]), self.encoders.get(key[1])
            with self._scorers_lock:
                scorer = self._scorers.setdefault(key, Scorer(recognition, realization, self.cache))
        return scorer

    def preload(self) -> None:
        """Loads the default encoders now instead of on the first call."""
        self.scorer()

    # -- RPCs -----------------------------------------------------------------------------

    def RegisterReference(self, request: scorer_pb2.RegisterReferenceRequest, context: grpc.ServicerContext):
        with _status_on_error(context):
            imagery = _imagery(request.imagery, "imagery")
            source = request.WhichOneof("source")
            if source == "images":
                reference = self._reference_from_images(request.images, imagery or Imagery.STATIC)
            elif source == "reference_id":
                reference = self._reference_from_catalog(request.reference_id, imagery)
            else:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   "no reference: give either `images` or a `reference_id`")
            handle = reference_handle(reference.images, reference.imagery)
            reference = self.references.register(handle, dataclasses.replace(
                reference, reference_id=reference.reference_id or handle))
            log.info("reference_registered", extra={"handle": handle, "reference_id": reference.reference_id,
                                                    "n_images": len(reference.images)})
            return scorer_pb2.RegisterReferenceResponse(
                handle=handle,
                reference_id=reference.reference_id,
                n_images=len(reference.images),
                kept_images=[image.name for image in reference.pool()],
                imagery=_IMAGERY_TO_PROTO[reference.imagery],
            )

    def ScoreImages(self, request: scorer_pb2.ScoreImagesRequest, context: grpc.ServicerContext):
        with _status_on_error(context):
            reference, settings = self._resolve(request.settings)
            if not request.images:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "no images to score: `images` is empty")
            # Images are checked before the encoders load: a bad request costs no model time.
            images = [self._decode(image, index) for index, image in enumerate(request.images)]
            scorer = self._scorer_for(request.settings)
            result = scorer.score(reference, images, settings, self.batch_size, should_stop=_stop_check(context))
            return scorer_pb2.ScoreImagesResponse(
                images=[_image_score_proto(score) for score in result.images],
                summary=_summary_proto(result.summary),
            )

    def StreamScoreImages(self, request_iterator: Iterator[scorer_pb2.StreamScoreImagesRequest],
                          context: grpc.ServicerContext):
        with _status_on_error(context):
            first = next(request_iterator, None)
            kind = first.WhichOneof("item") if first is not None else None
            if kind != "settings":
                got = "no message" if first is None else f"an image ({first.image.name!r})" if kind == "image" else "an empty message"
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"the first message of the stream must carry the settings, got {got}")
            reference, settings = self._resolve(first.settings)
            scorer = self._scorer_for(first.settings)
            images = self._stream_images(request_iterator, scorer)
            first_image = next(images, None)
            if first_image is None:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   "no images to score: the stream carried the settings only")
            should_stop = _stop_check(context)
            prepared = scorer.prepare(reference, settings.imagery, should_stop)
            scores: list[ImageScore] = []
            for score in scorer.score_stream(prepared, itertools.chain([first_image], images), settings,
                                             self.batch_size, should_stop):
                scores.append(score)
                yield scorer_pb2.StreamScoreImagesResponse(image=_image_score_proto(score))
            summary = scorer.summarize(prepared, scores, settings)
            yield scorer_pb2.StreamScoreImagesResponse(summary=_summary_proto(summary))

    def ListEncoders(self, request: scorer_pb2.ListEncodersRequest, context: grpc.ServicerContext):
        with _status_on_error(context):
            return scorer_pb2.ListEncodersResponse(encoders=[
                scorer_pb2.EncoderInfo(
                    name=info.name,
                    description=info.description,
                    available=info.available,
                    recognition_threshold_static=info.thresholds.recognition_static,
                    recognition_threshold_dynamic=info.thresholds.recognition_dynamic,
                    reuse_threshold=info.thresholds.reuse,
                    weights=info.weights,
                )
                for info in describe_encoders()
            ])

    # -- translation helpers ----------------------------------------------------------------

    def _resolve(self, settings: scorer_pb2.ScoreSettings) -> tuple[Reference, ScoreSettings]:
        """The reference and the domain settings a request's settings name."""
        if not settings.reference_handle:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               "settings.reference_handle is empty: register the reference first")
        try:
            score_settings = ScoreSettings(
                imagery=_imagery(settings.imagery, "settings.imagery"),
                recognition_threshold=settings.recognition_threshold if settings.HasField("recognition_threshold") else None,
                reuse_threshold=settings.reuse_threshold if settings.HasField("reuse_threshold") else None,
                crt_variant=_crt_variant(settings.crt_variant),
            )
        except ValueError as error:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"settings: {error}") from error
        try:
            reference = self.references.get(settings.reference_handle)
        except KeyError:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"unknown reference handle {settings.reference_handle!r}: register the reference "
                               "with RegisterReference first (handles are kept in memory; register again after a server restart)") from None
        return reference, score_settings

    def _scorer_for(self, settings: scorer_pb2.ScoreSettings) -> Scorer:
        return self.scorer(settings.recognition_encoder, settings.realization_encoder)

    def _decode(self, image: common_pb2.Image, index: int, scorer: Scorer | None = None,
                what: str = "image") -> DecodedImage:
        name = image.name or f"{what} #{index}"
        decoded = decode_image(image.data, name, self.max_image_pixels)
        check_grid(decoded, scorer.grid if scorer is not None else GRID)
        return decoded

    def _stream_images(self, requests: Iterable[scorer_pb2.StreamScoreImagesRequest], scorer: Scorer) -> Iterator[DecodedImage]:
        for index, message in enumerate(requests):
            kind = message.WhichOneof("item")
            if kind != "image":
                got = "settings again" if kind == "settings" else "nothing"
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                                   f"message {index + 2} of the stream carries {got}; only the first message "
                                   "carries settings, every later one an image")
            yield self._decode(message.image, index, scorer)

    def _reference_from_images(self, request: scorer_pb2.ReferenceImages, imagery: Imagery) -> Reference:
        if not request.images:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "no reference images: `images.images` is empty")
        images = tuple(self._decode(image, index, what="reference image") for index, image in enumerate(request.images))
        return Reference(request.reference_id, images, imagery)

    def _reference_from_catalog(self, reference_id: str, imagery: Imagery | None) -> Reference:
        if self.catalog is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"no reference {reference_id!r}: this server has no catalog "
                               "(start it with --catalog DIR), so register the reference by its images")
        try:
            entry = find_catalog_entry(self.catalog, reference_id)
        except KeyError:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"no reference {reference_id!r} in the server's catalog ({len(self.catalog)} works; "
                               "ids are slugs or QIDs)") from None
        try:
            reference = entry.load(self.max_image_pixels)
            for image in reference.images:
                check_grid(image, GRID)
        except (OSError, InvalidImage) as error:
            # The server's own files are at fault, not the request.
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"catalog reference {entry.slug!r} cannot be loaded: {error}") from error
        return dataclasses.replace(reference, imagery=imagery or entry.imagery)


# -- protos and status codes ----------------------------------------------------------------


def _imagery(value: int, field: str) -> Imagery | None:
    if value == common_pb2.IMAGERY_UNSPECIFIED:
        return None
    try:
        return _IMAGERY_FROM_PROTO[value]
    except KeyError:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"{field} {value} is not a known Imagery value") from None


def _crt_variant(value: int) -> CrtVariant:
    try:
        return _CRT_FROM_PROTO[value]
    except KeyError:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"settings.crt_variant {value} is not a known CrtVariant value") from None


def _image_score_proto(score: ImageScore) -> scorer_pb2.ImageScore:
    return scorer_pb2.ImageScore(
        index=score.index,
        name=score.name,
        recognition_similarity=score.recognition_similarity,
        recognized=score.recognized,
        vr=score.vr,
        vi=score.vi,
        reuse_map=[bool(flag) for row in score.reuse_map for flag in row],
        grid_rows=len(score.reuse_map),
        grid_cols=len(score.reuse_map[0]) if score.reuse_map else 0,
        crop_similarity_max=score.crop_similarity_max,
        crop_similarity_mean=score.crop_similarity_mean,
        crop_similarity_p90=score.crop_similarity_p90,
    )


def _summary_proto(summary: ScoreSummary) -> scorer_pb2.ScoreSummary:
    return scorer_pb2.ScoreSummary(
        n_images=summary.n_images,
        n_references_kept=summary.n_references_kept,
        cra=summary.cra,
        vr=summary.vr,
        vi=summary.vi,
        crt=summary.crt,
        crt_recognized_images=summary.crt_recognized_images,
        crt_all_images=summary.crt_all_images,
        crt_variant=_CRT_TO_PROTO[summary.crt_variant],
        imagery=_IMAGERY_TO_PROTO[summary.imagery],
        recognition_encoder=summary.recognition_encoder,
        realization_encoder=summary.realization_encoder,
        recognition_threshold=summary.recognition_threshold,
        reuse_threshold=summary.reuse_threshold,
    )


def _stop_check(context: grpc.ServicerContext):
    """Asked between encoder batches: a cancelled call, or one past its deadline, stops."""
    return lambda: not context.is_active()


def _status_on_error(context: grpc.ServicerContext):
    return status_on_error(context, _status, log)


def _status(error: Exception, context: grpc.ServicerContext) -> tuple[grpc.StatusCode, str]:
    if isinstance(error, RequestError):
        return error.code, str(error)
    if isinstance(error, InvalidImage):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    if isinstance(error, UnknownEncoder):
        return grpc.StatusCode.NOT_FOUND, str(error)
    if isinstance(error, EncoderUnavailable):
        return grpc.StatusCode.FAILED_PRECONDITION, str(error)
    if isinstance(error, Cancelled) or not context.is_active():
        # The client has its status already; this one is for the log line.
        if deadline_passed(context):
            return grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed; scoring stopped"
        return grpc.StatusCode.CANCELLED, "the call was cancelled; scoring stopped"
    return grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}): {error}"
