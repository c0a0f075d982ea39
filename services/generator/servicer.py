"""The generator's gRPC servicer: protos in, `Generator` calls, protos out.

The `Generator` (and its Triton client, and the event loop they run on) is made once, outside
the handlers. Errors are status codes (see generator.proto): an unknown model, or one Triton
does not serve, is NOT_FOUND; a bad request is INVALID_ARGUMENT with the allowed range;
asking for URIs without an artifact store is FAILED_PRECONDITION; Triton down or restarting is
UNAVAILABLE; a passed deadline is DEADLINE_EXCEEDED. A client that cancels (or whose deadline
passes) has its images still in flight dropped at once: the call's context callback cancels
them, without waiting for the next image.
"""

from __future__ import annotations

import logging
import time

import grpc
from iconicity.v1 import generator_pb2, generator_pb2_grpc

from services.common.server import deadline_passed, status_on_error
from services.generator.client import (
    TritonDeadlineExceeded,
    TritonError,
    TritonModelNotServed,
    TritonUnavailable,
)
from services.generator.service import (
    Cancelled,
    GeneratedImage,
    GenerationRequest,
    GenerationSettings,
    Generator,
    InvalidRequest,
    ModelStatus,
    NoArtifactStore,
    Provenance,
    Timing,
    UnknownModel,
    canonical_guidance,
)

log = logging.getLogger("iconicity.generator")

SERVICE_NAME = generator_pb2.DESCRIPTOR.services_by_name["GeneratorService"].full_name


class GeneratorServicer(generator_pb2_grpc.GeneratorServiceServicer):
    """Translates GeneratorService calls to `Generator` calls and back."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator

    def ListModels(self, request: generator_pb2.ListModelsRequest, context: grpc.ServicerContext):
        with _status_on_error(context):
            return generator_pb2.ListModelsResponse(models=[_model_proto(status) for status in self.generator.list_models()])

    def Generate(self, request: generator_pb2.GenerateRequest, context: grpc.ServicerContext):
        with _status_on_error(context):
            domain = request_from_proto(request)
            started = time.monotonic()
            remaining = context.time_remaining()
            stream = self.generator.stream(domain, timeout_s=remaining if remaining is not None and remaining < 1e7 else None)
            # Runs when the call ends for any reason, from another thread: a cancelled call
            # drops its Triton requests now, not after the next image.
            if not context.add_callback(stream.cancel):
                stream.cancel()  # the call has ended already
            count = 0
            try:
                for image in stream:
                    count += 1
                    yield generator_pb2.GenerateResponse(image=image_proto(image))
            finally:
                stream.cancel()
            log.info("generated", extra={"model": domain.model, "n_images": count,
                                         "duration_ms": round((time.monotonic() - started) * 1000, 1)})


# -- protos ---------------------------------------------------------------------------------------


def request_from_proto(request: generator_pb2.GenerateRequest) -> GenerationRequest:
    """The domain request a proto carries (checked later, by the generator)."""
    settings = request.settings
    delivery = request.delivery
    if delivery not in (generator_pb2.IMAGE_DELIVERY_UNSPECIFIED, generator_pb2.IMAGE_DELIVERY_INLINE,
                        generator_pb2.IMAGE_DELIVERY_URI):
        raise InvalidRequest(f"delivery {delivery} is not a known ImageDelivery value")
    return GenerationRequest(
        model=request.model,
        prompt=request.prompt,
        n_images=request.n_images,
        seeds=tuple(request.seeds),
        base_seed=request.base_seed if request.HasField("base_seed") else None,
        settings=GenerationSettings(
            negative_prompt=settings.negative_prompt,
            steps=settings.steps if settings.HasField("steps") else None,
            guidance_scale=settings.guidance_scale if settings.HasField("guidance_scale") else None,
            height=settings.height if settings.HasField("height") else None,
            width=settings.width if settings.HasField("width") else None,
        ),
        store=delivery == generator_pb2.IMAGE_DELIVERY_URI,
    )


def image_proto(image: GeneratedImage) -> generator_pb2.GeneratedImage:
    p = image.provenance
    message = generator_pb2.GeneratedImage(
        index=image.index,
        provenance=generator_pb2.ImageProvenance(
            model=p.model, weights_id=p.weights_id, weights_revision=p.weights_revision, pipeline=p.pipeline,
            scheduler=p.scheduler, dtype=p.dtype, prompt=p.prompt, negative_prompt=p.negative_prompt, seed=p.seed,
            steps=p.steps, guidance_scale=p.guidance_scale, height=p.height, width=p.width,
        ),
        sha256=image.sha256,
        timing=generator_pb2.GenerationTiming(model_ms=image.timing.model_ms, request_ms=image.timing.request_ms,
                                              batch_size=image.timing.batch_size, retries=image.timing.retries),
    )
    if image.uri is not None:
        message.uri = image.uri
    else:
        message.png = image.png or b""
    return message


def request_to_proto(request: GenerationRequest) -> generator_pb2.GenerateRequest:
    """The proto of a domain request (what a client sends)."""
    settings = request.settings
    message = generator_pb2.GenerateRequest(
        model=request.model,
        prompt=request.prompt,
        n_images=request.n_images,
        seeds=list(request.seeds),
        settings=generator_pb2.GenerationSettings(negative_prompt=settings.negative_prompt),
        delivery=generator_pb2.IMAGE_DELIVERY_URI if request.store else generator_pb2.IMAGE_DELIVERY_INLINE,
    )
    if request.base_seed is not None:
        message.base_seed = request.base_seed
    for name, value in (("steps", settings.steps), ("guidance_scale", settings.guidance_scale),
                        ("height", settings.height), ("width", settings.width)):
        if value is not None:
            setattr(message.settings, name, value)
    return message


def image_from_proto(message: generator_pb2.GeneratedImage) -> GeneratedImage:
    """The domain image a response carries (what a client gets back)."""
    p = message.provenance
    return GeneratedImage(
        index=message.index,
        provenance=Provenance(
            model=p.model, weights_id=p.weights_id, weights_revision=p.weights_revision, pipeline=p.pipeline,
            scheduler=p.scheduler, dtype=p.dtype, prompt=p.prompt, negative_prompt=p.negative_prompt, seed=p.seed,
            steps=p.steps, guidance_scale=canonical_guidance(p.guidance_scale), height=p.height, width=p.width,
        ),
        sha256=message.sha256,
        timing=Timing(model_ms=message.timing.model_ms, request_ms=message.timing.request_ms,
                      batch_size=message.timing.batch_size, retries=message.timing.retries),
        png=message.png if message.WhichOneof("content") == "png" else None,
        uri=message.uri if message.WhichOneof("content") == "uri" else None,
    )


def _model_proto(status: ModelStatus) -> generator_pb2.ModelInfo:
    config = status.config
    return generator_pb2.ModelInfo(
        name=config.name,
        description=config.description,
        weights_id=status.weights_id,
        weights_revision=status.weights_revision,
        pipeline=config.pipeline_class or "",
        scheduler=status.scheduler,
        dtype=config.dtype,
        default_steps=config.steps,
        default_guidance_scale=config.guidance,
        default_height=config.height,
        default_width=config.width,
        min_steps=config.steps_range[0],
        max_steps=config.steps_range[1],
        min_guidance_scale=config.guidance_range[0],
        max_guidance_scale=config.guidance_range[1],
        min_size=config.min_size,
        max_size=config.max_size,
        size_multiple=config.size_multiple,
        supports_negative_prompt=config.negative_prompt,
        available=status.available,
    )


# -- status codes ---------------------------------------------------------------------------------


def _status_on_error(context: grpc.ServicerContext):
    return status_on_error(context, _status, log)


def _status(error: Exception, context: grpc.ServicerContext) -> tuple[grpc.StatusCode, str]:
    if isinstance(error, (UnknownModel, TritonModelNotServed)):
        return grpc.StatusCode.NOT_FOUND, str(error)
    if isinstance(error, InvalidRequest):
        return grpc.StatusCode.INVALID_ARGUMENT, str(error)
    if isinstance(error, NoArtifactStore):
        return grpc.StatusCode.FAILED_PRECONDITION, str(error)
    if isinstance(error, Cancelled) or not context.is_active():
        # The client has its status already; this one is for the log line.
        if deadline_passed(context):
            return grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed; images in flight were dropped"
        return grpc.StatusCode.CANCELLED, "the call was cancelled; images in flight were dropped"
    if isinstance(error, TritonUnavailable):
        return grpc.StatusCode.UNAVAILABLE, str(error)
    if isinstance(error, TritonDeadlineExceeded):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(error)
    if isinstance(error, TritonError):
        if error.status == "INVALID_ARGUMENT":  # the model refused what we passed on
            return grpc.StatusCode.INVALID_ARGUMENT, str(error)
        return grpc.StatusCode.INTERNAL, str(error)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}): {error}"
