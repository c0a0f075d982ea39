"""The generator's gRPC server: `create_generator_server` wires `GeneratorServicer` into the
shared bootstrap (health, reflection, limits, logging)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import Future

import grpc
from iconicity.v1 import generator_pb2_grpc

from services.common.server import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_WORKERS, create_server
from services.generator.client import (
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_REQUEST_TIMEOUT_S,
    RetryPolicy,
    TritonClient,
)
from services.generator.models import ModelConfig
from services.generator.service import DEFAULT_MAX_IMAGES, ArtifactStore, Generator
from services.generator.servicer import SERVICE_NAME, GeneratorServicer


def create_generator_server(
    address: str = "127.0.0.1:0",
    *,
    triton_url: str,
    models: Mapping[str, ModelConfig] | None = None,
    max_images: int = DEFAULT_MAX_IMAGES,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    retry: RetryPolicy | None = None,
    artifacts: str | os.PathLike[str] | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_workers: int = DEFAULT_MAX_WORKERS,
    credentials: grpc.ServerCredentials | None = None,
    loading: Mapping[str, Future] | None = None,
) -> tuple[grpc.Server, int, GeneratorServicer]:
    """A generator server bound to `address` (not started), its port, and its servicer.

    `triton_url` ("host:port") is Triton's gRPC endpoint; it need not be up yet (calls
    answer UNAVAILABLE until it is, and the server reconnects by itself). `models` defaults
    to the registry. `max_images` caps the images of one call; `max_in_flight` the Triton
    requests in flight over all calls. `artifacts` (a folder or file:// URI) is the store
    IMAGE_DELIVERY_URI writes to. `loading`: the models Triton is still loading, with their
    futures (`Generator`). Close `servicer.generator` after the server stops."""
    store = ArtifactStore(artifacts) if artifacts is not None else None
    client = TritonClient(triton_url, max_in_flight=max_in_flight, request_timeout_s=request_timeout_s, retry=retry)
    generator = Generator(client, models=models, max_images=max_images, store=store, loading=loading)
    servicer = GeneratorServicer(generator)

    def add_servicers(server: grpc.Server) -> list[str]:
        generator_pb2_grpc.add_GeneratorServiceServicer_to_server(servicer, server)
        return [SERVICE_NAME]

    try:
        server, port = create_server(address, add_servicers, max_message_bytes=max_message_bytes,
                                     max_workers=max_workers, credentials=credentials)
    except BaseException:
        generator.close()
        raise
    return server, port, servicer
