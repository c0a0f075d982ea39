"""`python -m services.scorer --port N` (and `iconicity serve scorer`): serves the scorer
until SIGTERM or SIGINT, then drains gracefully.

It logs JSON lines on stderr; when it is ready it logs `{"event": "serving", "port": N, ...}`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from services.common.images import DEFAULT_MAX_PIXELS
from services.common.logs import configure_logging
from services.common.server import add_listen_arguments
from services.scorer.cache import default_cache_dir

DEFAULT_PORT = 50053  # harvester 50051, generator 50052, scorer 50053

log = logging.getLogger("iconicity.scorer")


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the scorer server's flags to `parser` (used by `iconicity serve scorer`)."""
    add_listen_arguments(parser, DEFAULT_PORT)
    parser.add_argument("--catalog", metavar="DIR", default=None, help="references folder (catalog.json and a folder per work) that RegisterReference resolves reference ids in")
    parser.add_argument("--recognition-encoder", default=None, help="default recognition encoder (default: clip-vit-b-16 when its weights are here, else classical)")
    parser.add_argument("--realization-encoder", default=None, help="default realization encoder (default: dinov3-vitb16 or dinov2-vitb14 when their weights are here, else classical)")
    parser.add_argument("--cache-dir", metavar="DIR", default=None,
                        help="folder that keeps reference embeddings across restarts (default: $ICONICITY_CACHE or ~/.cache/iconicity)")
    parser.add_argument("--no-cache", action="store_true", help="keep reference embeddings in memory only")
    parser.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="largest image accepted, in pixels (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="images scored per batch; streamed results come back a batch at a time (default: %(default)s)")
    parser.add_argument("--weights", type=Path, metavar="DIR", default=None,
                        help="folder with encoder weights, one subfolder per encoder name or Hugging Face id")
    parser.add_argument("--device", default=None, help="torch device for the encoders: cpu, cuda, cuda:1 (default: cuda when present)")
    parser.add_argument("--dtype", default=None, choices=["auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16"], help="encoder precision (default: auto)")
    parser.add_argument("--preload", action="store_true", help="load the default encoders before serving instead of on the first call")
    return parser


def run_serve(args: argparse.Namespace) -> int:
    """Serves until SIGTERM or SIGINT; returns the exit code (0 after a clean shutdown, 1
    when the server could not start, with the cause logged in one line)."""
    configure_logging(args.log_level, json=args.log_format == "json")
    # Imported here so that `--help` stays fast (torch and transformers load with these).
    from services.common.server import serve_forever
    from services.scorer.server import create_scorer_server

    address = f"{args.host}:{args.port}"
    try:
        server, port, servicer = create_scorer_server(
            address,
            catalog=args.catalog,
            recognition_encoder=args.recognition_encoder,
            realization_encoder=args.realization_encoder,
            cache_dir=None if args.no_cache else (args.cache_dir or default_cache_dir()),
            max_image_pixels=args.max_image_pixels,
            max_message_bytes=int(args.max_message_mb * 2**20),
            batch_size=args.batch_size,
            device=args.device,
            dtype=args.dtype,
            weights=args.weights,
            max_workers=args.workers,
            preload=args.preload,
        )
    except Exception as error:  # noqa: BLE001 - one line with the cause, exit code 1
        log.error("startup_failed", extra={"error": f"{type(error).__name__}: {error}", "address": address})
        return 1
    server.start()
    log.info("serving", extra={
        "service": "scorer",
        "port": port,
        "address": f"{args.host}:{port}",
        "recognition_encoder": servicer.recognition_encoder,
        "realization_encoder": servicer.realization_encoder,
        "catalog": args.catalog,
        "references_in_catalog": len(servicer.catalog) if servicer.catalog is not None else 0,
    })
    serve_forever(server, args.grace)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.scorer", description=__doc__.splitlines()[0])
    return run_serve(add_serve_arguments(parser).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
