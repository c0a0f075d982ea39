"""The scorer's gRPC server: `create_scorer_server` wires `ScorerServicer` into the shared
bootstrap (health, reflection, limits, logging)."""

from __future__ import annotations

from pathlib import Path

import grpc
from iconicity.v1 import scorer_pb2_grpc

from services.common.images import DEFAULT_MAX_PIXELS
from services.common.server import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_WORKERS,
    create_server,
)
from services.scorer.cache import EmbeddingCache
from services.scorer.encoders import UnknownEncoder, default_encoders, encoder_names
from services.scorer.references import load_catalog
from services.scorer.servicer import SERVICE_NAME, EncoderPool, ScorerServicer


def create_scorer_server(
    address: str = "127.0.0.1:0",
    *,
    catalog: str | Path | None = None,
    recognition_encoder: str | None = None,
    realization_encoder: str | None = None,
    cache_dir: str | Path | None = None,
    max_image_pixels: int = DEFAULT_MAX_PIXELS,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    batch_size: int = 32,
    device: str | None = None,
    dtype: str | None = None,
    weights: str | Path | None = None,
    max_workers: int = DEFAULT_MAX_WORKERS,
    preload: bool = False,
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.Server, int, ScorerServicer]:
    """A scorer server bound to `address` (not started), its port, and its servicer.

    Encoders default to `default_encoders()` (the paper's where their weights are here, else
    `classical`) and load on first use, or now with `preload`. `catalog` is a references
    folder (`load_catalog`) that `RegisterReference` resolves ids in; `cache_dir` keeps
    reference embeddings on disk across restarts. Raises `UnknownEncoder` for an encoder
    name that does not exist and `FileNotFoundError` for a missing catalog folder, so that a
    misconfigured server fails at startup rather than on its first call."""
    defaults = default_encoders(weights) if recognition_encoder is None or realization_encoder is None else ("", "")
    recognition_encoder = recognition_encoder or defaults[0]
    realization_encoder = realization_encoder or defaults[1]
    for name in (recognition_encoder, realization_encoder):
        if name not in encoder_names():
            raise UnknownEncoder(f"unknown encoder {name!r}; known encoders: {', '.join(encoder_names())}")
    entries = None
    if catalog is not None:
        if not Path(catalog).is_dir():
            raise FileNotFoundError(f"no catalog folder {str(catalog)!r}")
        entries = load_catalog(catalog)
    servicer = ScorerServicer(
        recognition_encoder=recognition_encoder,
        realization_encoder=realization_encoder,
        encoders=EncoderPool(device=device, dtype=dtype, weights=weights),
        cache=EmbeddingCache(cache_dir),
        catalog=entries,
        max_image_pixels=max_image_pixels,
        batch_size=batch_size,
    )
    if preload:
        servicer.preload()

    def add_servicers(server: grpc.Server) -> list[str]:
        scorer_pb2_grpc.add_ScorerServiceServicer_to_server(servicer, server)
        return [SERVICE_NAME]

    server, port = create_server(address, add_servicers, max_message_bytes=max_message_bytes,
                                 max_workers=max_workers, credentials=credentials)
    return server, port, servicer
