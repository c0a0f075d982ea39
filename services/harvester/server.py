"""The harvester's gRPC server: `create_harvester_server` wires `HarvesterServicer` into the
shared bootstrap (health, reflection, limits, logging)."""

from __future__ import annotations

from pathlib import Path

import grpc
from iconicity.v1 import harvester_pb2_grpc

from services.common.server import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_WORKERS, create_server
from services.harvester.catalog import Catalog
from services.harvester.plan import source_for_request
from services.harvester.servicer import SERVICE_NAME, HarvesterServicer


def create_harvester_server(
    address: str = "127.0.0.1:0",
    *,
    catalog: str | Path,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_workers: int = DEFAULT_MAX_WORKERS,
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.Server, int, HarvesterServicer]:
    """A harvester server over the catalog folder `catalog` (created when absent, so that
    StartHarvest can fill it), bound to `address` and not started; its port; its servicer."""
    servicer = HarvesterServicer(Catalog(catalog), source_for_request)

    def add_servicers(server: grpc.Server) -> list[str]:
        harvester_pb2_grpc.add_HarvesterServiceServicer_to_server(servicer, server)
        return [SERVICE_NAME]

    server, port = create_server(address, add_servicers, max_message_bytes=max_message_bytes,
                                 max_workers=max_workers, credentials=credentials)
    return server, port, servicer
