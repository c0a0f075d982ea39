"""`python -m services.harvester --catalog DIR --port N` (and `iconicity serve harvester`):
serves a catalog folder until SIGTERM or SIGINT, then drains gracefully.

It logs JSON lines on stderr; when it is ready it logs `{"event": "serving", "port": N, ...}`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from services.common.logs import configure_logging
from services.common.server import add_listen_arguments

DEFAULT_PORT = 50051  # harvester 50051, generator 50052, scorer 50053

log = logging.getLogger("iconicity.harvester")


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--catalog", metavar="DIR", required=True,
                        help="catalog folder that `iconicity harvest --out DIR` wrote (created empty when absent)")
    add_listen_arguments(parser, DEFAULT_PORT)
    return parser


def run_serve(args: argparse.Namespace) -> int:
    configure_logging(args.log_level, json=args.log_format == "json")
    from services.common.server import serve_forever
    from services.harvester.server import create_harvester_server

    address = f"{args.host}:{args.port}"
    try:
        server, port, servicer = create_harvester_server(
            address, catalog=args.catalog, max_message_bytes=int(args.max_message_mb * 2**20), max_workers=args.workers)
    except Exception as error:  # noqa: BLE001 - one line with the cause, exit code 1
        log.error("startup_failed", extra={"error": f"{type(error).__name__}: {error}", "address": address})
        return 1
    server.start()
    log.info("serving", extra={"service": "harvester", "port": port, "address": f"{args.host}:{port}",
                               "catalog": args.catalog, "references": len(servicer.catalog.references())})
    serve_forever(server, args.grace)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.harvester", description=__doc__.splitlines()[0])
    return run_serve(add_serve_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
