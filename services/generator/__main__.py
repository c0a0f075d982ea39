"""`python -m services.generator --triton HOST:PORT --port N` (and `iconicity serve generator`):
serves the generator in front of a Triton server until SIGTERM or SIGINT, then drains.

It logs JSON lines on stderr; when it is ready it logs `{"event": "serving", "port": N, ...}`.
Triton need not be up: calls answer UNAVAILABLE until it is, and the generator reconnects by
itself when it comes (back) up.
"""

from __future__ import annotations

import argparse
import logging
import sys

from services.common.logs import configure_logging
from services.common.server import add_listen_arguments

DEFAULT_PORT = 50052  # harvester 50051, generator 50052, scorer 50053
DEFAULT_TRITON = "127.0.0.1:8001"

log = logging.getLogger("iconicity.generator")


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the generator server's flags to `parser` (used by `iconicity serve generator`)."""
    # Defaults written out here so that `--help` does not import the client (tritonclient).
    parser.add_argument("--triton", metavar="HOST:PORT", default=DEFAULT_TRITON,
                        help="Triton's gRPC endpoint (default: %(default)s)")
    add_listen_arguments(parser, DEFAULT_PORT)
    parser.add_argument("--max-images", type=int, default=64, metavar="N", help="most images one call may ask for (default: %(default)s)")
    parser.add_argument("--max-in-flight", type=int, default=16, metavar="N",
                        help="most Triton requests in flight at once, over all calls; at least Triton's max batch size "
                             "lets its batcher fill batches (default: %(default)s)")
    parser.add_argument("--request-timeout", type=float, default=600.0, metavar="S",
                        help="longest one Triton request may take, in seconds (a caller's deadline, when sooner, wins; default: %(default)s)")
    parser.add_argument("--artifacts", metavar="DIR", default=None,
                        help="artifact store (a folder or file:// URI) that IMAGE_DELIVERY_URI requests write PNGs to, "
                             "as <root>/<sha[:2]>/<sha>.png")
    return parser


def run_serve(args: argparse.Namespace) -> int:
    """Serves until SIGTERM or SIGINT; returns the exit code (0 after a clean shutdown, 1
    when the server could not start, with the cause logged in one line)."""
    configure_logging(args.log_level, json=args.log_format == "json")
    from services.common.server import serve_forever
    from services.generator.server import create_generator_server

    address = f"{args.host}:{args.port}"
    try:
        if args.max_images < 1 or args.max_in_flight < 1:
            raise ValueError("--max-images and --max-in-flight must be at least 1")
        server, port, servicer = create_generator_server(
            address,
            triton_url=args.triton,
            max_images=args.max_images,
            max_in_flight=args.max_in_flight,
            request_timeout_s=args.request_timeout,
            artifacts=args.artifacts,
            max_message_bytes=int(args.max_message_mb * 2**20),
            max_workers=args.workers,
        )
    except Exception as error:  # noqa: BLE001 - one line with the cause, exit code 1
        log.error("startup_failed", extra={"error": f"{type(error).__name__}: {error}", "address": address})
        return 1
    server.start()
    generator = servicer.generator
    log.info("serving", extra={
        "service": "generator",
        "port": port,
        "address": f"{args.host}:{port}",
        "triton": args.triton,
        "models": sorted(generator.models),
        "max_images": generator.max_images,
        "max_in_flight": generator.client.max_in_flight,
        "artifacts": generator.store.uri if generator.store is not None else None,
    })
    try:
        serve_forever(server, args.grace)
    finally:
        generator.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.generator", description=__doc__.splitlines()[0])
    return run_serve(add_serve_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
