"""`iconicity generate`: images of one prompt, as PNG files with a JSON sidecar each.

With `--generator HOST:PORT` it asks a running generator service. Otherwise it starts what
it needs for the call and stops it after: a Triton server with the model (or the one at
`--triton HOST:PORT`) and a generator service on loopback; the images then come through the
same gRPC path as from a remote generator.

Files: `<out>/<model>_seed<seed>_<sha256[:10]>.png` and `.json` beside it (index, sha256,
provenance: everything that made the image, and timing).

`GeneratorClient` is the typed client of the service: `GenerationRequest` in,
`GeneratedImage`s out, the same types the generator uses in-process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

DEFAULT_TIMEOUT_S = 3600.0


class GeneratorClient:
    """A client of a GeneratorService at `address` ("host:port")."""

    def __init__(self, address: str, *, max_message_bytes: int = 256 * 1024 * 1024) -> None:
        from iconicity.v1 import generator_pb2_grpc

        self.address = address
        self._channel = grpc.insecure_channel(address, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ])
        self._stub = generator_pb2_grpc.GeneratorServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GeneratorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Waits for the channel to connect; `grpc.FutureTimeoutError` if it does not."""
        grpc.channel_ready_future(self._channel).result(timeout=timeout_s)

    def list_models(self, timeout_s: float = 30.0):
        from iconicity.v1 import generator_pb2

        return list(self._stub.ListModels(generator_pb2.ListModelsRequest(), timeout=timeout_s).models)

    def generate(self, request, *, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> Iterator:
        """`GeneratedImage`s of a `GenerationRequest`, as each finishes. Raises
        `grpc.RpcError` (its code and details say why). Closing the iterator cancels the call."""
        from services.generator.servicer import image_from_proto, request_to_proto

        call = self._stub.Generate(request_to_proto(request), timeout=timeout_s)
        try:
            for response in call:
                yield image_from_proto(response.image)
        finally:
            call.cancel()


# -- iconicity generate ------------------------------------------------------------------------


def add_generate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of `iconicity generate`."""
    parser.add_argument("--model", required=True, metavar="NAME", help="model name (tiny-sd, sd15, sdxl, ...)")
    parser.add_argument("--prompt", required=True, metavar="TEXT", help="the text to generate images of")
    parser.add_argument("-n", "--n-images", type=int, default=1, metavar="N", help="how many images (default: %(default)s)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=None, metavar="S", help="base seed: the images get S, S+1, ... (default: 0)")
    seeds.add_argument("--seeds", default=None, metavar="S,S,...", help="one seed per image, comma-separated (sets -n)")
    parser.add_argument("--negative-prompt", default="", metavar="TEXT", help="what the images should not show (default: none)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    parser.add_argument("--guidance", type=float, default=None, metavar="SCALE", help="classifier-free guidance scale (default: the model's)")
    parser.add_argument("--height", type=int, default=None, help="image height in pixels (default: the model's)")
    parser.add_argument("--width", type=int, default=None, help="image width in pixels (default: the model's)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the PNG files and their JSON sidecars")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--generator", metavar="HOST:PORT", default=None,
                       help="a running generator service (default: start one, and Triton, for this call)")
    where.add_argument("--triton", metavar="HOST:PORT", default=None,
                       help="without --generator: a running Triton to use instead of starting one")
    parser.add_argument("--device", default="auto", help="the local Triton's device: cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument("--models-root", type=Path, metavar="DIR", default=None,
                        help="where the local Triton builds tiny pipelines (default: $ICONICITY_MODELS or ~/.cache/iconicity/models)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help="give up after this many seconds (default: %(default)s)")
    parser.add_argument("--startup-timeout", type=float, default=600.0, metavar="S",
                        help="seconds the local Triton may take to load the model (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar; only the summary line")
    parser.set_defaults(run=run_generate)
    return parser


def run_generate(args: argparse.Namespace) -> int:
    """Generates the images and writes them; returns 0, or raises an error whose first line
    is the cause (the CLI prints it and exits 1)."""
    from services.generator.service import GenerationRequest, GenerationSettings

    seeds: tuple[int, ...] = ()
    if args.seeds:
        try:
            seeds = tuple(int(part) for part in args.seeds.split(",") if part.strip())
        except ValueError:
            raise _cli_error(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    request = GenerationRequest(
        model=args.model,
        prompt=args.prompt,
        n_images=len(seeds) if seeds else args.n_images,
        seeds=seeds,
        base_seed=None if seeds else args.seed,
        settings=GenerationSettings(negative_prompt=args.negative_prompt, steps=args.steps,
                                    guidance_scale=args.guidance, height=args.height, width=args.width),
    )
    if request.n_images < 1:
        raise _cli_error(f"-n must be at least 1, got {request.n_images}")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        address = args.generator or stack.enter_context(_local_generator(args, request))
        client = stack.enter_context(GeneratorClient(address))
        written = _generate_into(client, request, args)
    elapsed = time.monotonic() - started
    print(f"wrote {len(written)} images of {args.model} to {args.out} in {elapsed:.1f} s "
          f"({len(written) / elapsed:.2f} images/s)")
    return 0


def _generate_into(client: GeneratorClient, request, args: argparse.Namespace) -> list[Path]:
    progress = None
    if not args.quiet:
        from tqdm import tqdm

        progress = tqdm(total=request.n_images, desc=f"generate {request.model}", unit="image", file=sys.stderr, disable=None)
    written: list[Path] = []
    try:
        for image in client.generate(request, timeout_s=args.timeout):
            written.append(write_image(image, args.out))
            if progress is not None:
                progress.update(1)
    except grpc.RpcError as error:
        raise _cli_error(f"generator at {client.address}: {error.code().name}: {_one_line(error.details() or '')}") from None
    finally:
        if progress is not None:
            progress.close()
    return sorted(written)


def write_image(image, out: Path) -> Path:
    """Writes a `GeneratedImage` (with its PNG bytes) and its JSON sidecar into `out`;
    returns the PNG's path."""
    if image.png is None:
        raise _cli_error(f"image {image.index} came back as a URI ({image.uri}), not bytes")
    stem = f"{image.provenance.model}_seed{image.provenance.seed}_{image.sha256[:10]}"
    path = out / f"{stem}.png"
    path.write_bytes(image.png)
    sidecar = {"file": path.name, **image.sidecar()}
    (out / f"{stem}.json").write_text(json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


@contextlib.contextmanager
def _local_generator(args: argparse.Namespace, request) -> Iterator[str]:
    """A generator service on loopback for this call (and a Triton with the model unless
    `--triton`); yields its address."""
    from services.common.server import shutdown
    from services.generator.models import get_model
    from services.generator.server import create_generator_server
    from services.generator.service import InvalidRequest, plan_images

    try:
        config = get_model(args.model)
        plan_images(request, config, max_images=max(request.n_images, 1))  # before Triton takes its time
    except KeyError as error:
        raise _cli_error(str(error.args[0])) from None
    except InvalidRequest as error:
        raise _cli_error(str(error)) from None
    with contextlib.ExitStack() as stack:
        triton_url = args.triton or stack.enter_context(_local_triton(config, args))
        server, port, servicer = create_generator_server("127.0.0.1:0", triton_url=triton_url, max_images=max(request.n_images, 1))
        stack.callback(servicer.generator.close)
        server.start()
        stack.callback(shutdown, server, 1.0)
        yield f"127.0.0.1:{port}"


@contextlib.contextmanager
def _local_triton(config, args: argparse.Namespace) -> Iterator[str]:
    from services.generator.triton_server import TritonServer, TritonStartError, build_model_repository

    if not args.quiet:
        print(f"starting Triton with {config.name} (use --generator or --triton to reuse a running one)...",
              file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="iconicity-generate-") as tmp:
        repository = build_model_repository([config], tmp, models_root=args.models_root, device=args.device)
        try:
            server = TritonServer(repository, [config.name], startup_timeout=args.startup_timeout).start()
        except TritonStartError as error:
            raise _cli_error(f"Triton could not serve {config.name}: {_startup_cause(str(error))}") from None
        try:
            yield server.grpc_url
        finally:
            server.close()


def _startup_cause(message: str) -> str:
    """The most telling line of a Triton start failure: the last log line that reports an
    error, else the first line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in reversed(lines[1:]):
        lower = line.lower()
        if "error" in lower or "failed" in lower or "exception" in lower:
            return _one_line(line)
    return _one_line(lines[0] if lines else message)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cli_error(message: str) -> Exception:
    try:
        from services.cli import CliError
    except ImportError:  # pragma: no cover - the CLI module is always there
        return RuntimeError(message)
    return CliError(message)
