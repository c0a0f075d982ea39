"""`iconicity`: the one command-line entry to the project.

Each subcommand is a thin adapter: it parses arguments, calls the domain code, prints.
Failures exit non-zero with a one-line cause on stderr.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from services.common.images import DEFAULT_MAX_PIXELS, InvalidImage


class CliError(Exception):
    """A failure the user can fix; printed as one line."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_of(argv))
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (CliError, InvalidImage, FileNotFoundError, ValueError, KeyError, RuntimeError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"iconicity: error: {message}", file=sys.stderr)
        return 1


# Subcommands whose arguments live in their own modules: name -> (help, module, the
# function that adds its arguments, the function that runs it).
MODULE_COMMANDS = {
    "run": ("run a whole benchmark: harvest, generate, score, log to MLflow (default: the embedded default)",
            "flows.run", "add_run_arguments", "run_run"),
    "harvest": ("build or update a catalog of references: images, covariates, prompt variants",
                "services.harvester.cli", "add_harvest_arguments", "run_harvest"),
    "generate": ("generate images with a diffusion model (through the generator service and Triton)",
                 "services.generator.cli", "add_generate_arguments", "run_generate"),
    "schedule": ("register a benchmark to run on a cron schedule (Prefect deployment)",
                 "flows.schedule", "add_schedule_arguments", "run_schedule"),
    "compare": ("print benchmark runs side by side from MLflow (metrics and differences)",
                "flows.compare", "add_compare_arguments", "run_compare"),
    "report": ("write a run's self-contained HTML report (and log it to its MLflow run)",
               "flows.report", "add_report_arguments", "run_report"),
    "calibrate": ("calibrate an encoder's thresholds on real reference images",
                  "services.scorer.calibration", "add_calibrate_arguments", "run_calibrate"),
    "probe": ("score controlled edits of every reference (replicas, partial reuse, other works)",
              "services.scorer.probe", "add_probe_arguments", "run_probe"),
    "validate": ("validate CRA, VR and CRT against plain similarity on a labelled set of pairs",
                 "services.scorer.validation", "add_validate_arguments", "run_validate"),
}


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the top level has no options but -h)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; only `command`'s module is imported to describe its arguments
    (the others pull in torch, scipy or Prefect: seconds that `iconicity run` would otherwise
    spend before it starts Triton, and `iconicity --help` before it prints)."""
    parser = argparse.ArgumentParser(prog="iconicity", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_module_command(commands, "run", command)
    _add_score(commands)
    _add_serve(commands, full=command == "serve")
    for name in list(MODULE_COMMANDS)[1:]:
        _add_module_command(commands, name, command)
    return parser


def add_encoder_arguments(parser: argparse.ArgumentParser) -> None:
    """Encoder choice, shared by every command that scores."""
    parser.add_argument("--recognition-encoder", metavar="NAME",
                        help="encoder for recognition (default: clip-vit-b-16 if its weights are present, else classical)")
    parser.add_argument("--realization-encoder", metavar="NAME",
                        help="encoder for realization (default: dinov3-vitb16 or dinov2-vitb14 if present, else classical)")
    parser.add_argument("--weights", metavar="DIR", type=Path,
                        help="folder with encoder weights, one subfolder per encoder name or Hugging Face id")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="compute dtype for neural encoders (auto: bf16 where the hardware computes it natively, else fp32)")
    parser.add_argument("--cache-dir", metavar="DIR", type=Path,
                        help="where reference embeddings are cached (default: $ICONICITY_CACHE or ~/.cache/iconicity)")
    parser.add_argument("--no-cache", action="store_true", help="keep reference embeddings in memory only")


def build_scorer(args: argparse.Namespace):
    """The `Scorer` that the encoder arguments describe."""
    from services.scorer.cache import EmbeddingCache, default_cache_dir
    from services.scorer.encoders import default_encoders, load_encoder, weights_folder
    from services.scorer.scoring import Scorer

    default_recognition, default_realization = default_encoders(args.weights)
    names = (args.recognition_encoder or default_recognition, args.realization_encoder or default_realization)
    loaded = {}  # one encoder in both roles is loaded once
    for name in dict.fromkeys(names):
        loaded[name] = load_encoder(name, weights=weights_folder(name, args.weights), device=args.device, dtype=args.dtype)
    cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
    return Scorer(loaded[names[0]], loaded[names[1]], EmbeddingCache(cache_dir))


# -- score -------------------------------------------------------------------------------
def _add_score(commands) -> None:
    parser = commands.add_parser("score", help="score generated images against one reference",
                                 description="Score the images of a folder against a reference (METHOD.md).")
    parser.add_argument("--references", required=True, type=Path, metavar="DIR",
                        help="the reference's images, canonical first (natural order: 1.jpg, 2.jpg, ...)")
    parser.add_argument("--images", required=True, type=Path, metavar="DIR", help="the generated images")
    parser.add_argument("--imagery", choices=["static", "dynamic"], default="static",
                        help="static: the canonical image only; dynamic: all de-duplicated images")
    add_encoder_arguments(parser)
    parser.add_argument("--recognition-threshold", type=float, metavar="TAU",
                        help="override the encoder's calibrated recognition threshold, in (0, 1)")
    parser.add_argument("--reuse-threshold", type=float, metavar="TAU",
                        help="override the encoder's calibrated reuse threshold, in (0, 1)")
    parser.add_argument("--crt-variant", choices=["recognized_images", "all_images"], default="recognized_images",
                        help="mean VI over recognized images (METHOD.md's default) or over all images")
    parser.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--out", type=Path, metavar="FILE.parquet", help="also write per-image results as Parquet")
    parser.set_defaults(run=run_score)


def run_score(args: argparse.Namespace) -> int:
    from services.common.images import decode_image
    from services.scorer.aggregation import CrtVariant
    from services.scorer.references import Imagery, image_files, load_reference_folder
    from services.scorer.results import format_result, image_rows, write_parquet
    from services.scorer.scoring import ScoreSettings

    settings = ScoreSettings(
        imagery=Imagery(args.imagery),
        recognition_threshold=args.recognition_threshold,
        reuse_threshold=args.reuse_threshold,
        crt_variant=CrtVariant(args.crt_variant),
    )
    reference = load_reference_folder(args.references, imagery=Imagery(args.imagery), max_pixels=args.max_image_pixels)
    files = image_files(args.images)
    if not files:
        raise CliError(f"no images in {args.images}")
    images = [decode_image(p.read_bytes(), p.name, args.max_image_pixels) for p in files]
    result = build_scorer(args).score(reference, images, settings)
    if args.out is not None:
        write_parquet(image_rows(result, reference.reference_id), args.out)
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_result(result))
    return 0


# -- serve -------------------------------------------------------------------------------
def _add_serve(commands, full: bool = True) -> None:
    parser = commands.add_parser("serve", help="run a service over gRPC")
    if not full:
        return
    services = parser.add_subparsers(title="services", metavar="SERVICE", required=True)
    scorer = services.add_parser("scorer", help="the scorer service (recognition and realization)")
    from services.scorer.__main__ import add_serve_arguments, run_serve

    add_serve_arguments(scorer)
    scorer.set_defaults(run=run_serve)
    harvester = services.add_parser("harvester", help="the harvester service (the catalog of references)")
    from services.harvester.__main__ import add_serve_arguments as add_harvester_arguments
    from services.harvester.__main__ import run_serve as run_harvester

    add_harvester_arguments(harvester)
    harvester.set_defaults(run=run_harvester)
    generator = services.add_parser("generator", help="the generator service (diffusion models through Triton)")
    from services.generator.__main__ import add_serve_arguments as add_generator_arguments
    from services.generator.__main__ import run_serve as run_generator

    add_generator_arguments(generator)
    generator.set_defaults(run=run_generator)
    triton = services.add_parser("triton", help="Triton Inference Server with the generator's diffusion models")
    from services.generator.triton_server import add_serve_triton_arguments, run_serve_triton

    add_serve_triton_arguments(triton)
    triton.set_defaults(run=run_serve_triton)


def _add_module_command(commands, name: str, command: str | None) -> None:
    """A `MODULE_COMMANDS` subcommand; its module is imported only when it is the command
    being parsed."""
    import importlib

    help_text, module, add, run = MODULE_COMMANDS[name]
    parser = commands.add_parser(name, help=help_text, description=help_text)
    if name != command:
        return
    target = importlib.import_module(module)
    getattr(target, add)(parser)
    parser.set_defaults(run=getattr(target, run))


def entry(argv: Sequence[str] | None = None) -> int:
    """The `iconicity` console script: `main`, then the objects still alive are frozen out
    of the garbage collector. Python's last collections at exit otherwise walk all of them
    (millions after a run, with torch, Prefect and MLflow loaded) for about 3 s; the atexit
    handlers still run."""
    code = main(argv)
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(entry())
