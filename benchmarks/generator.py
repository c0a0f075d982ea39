"""Generator throughput: the generator service and Triton against plain diffusers, side by side.

Four ways to make the same N images of tiny-sd (the same prompt, seeds, steps and size; the
same weights; the same number of threads) are timed:

- **sequential**: plain diffusers, one pipeline call per image (what a simple script does);
- **batched**: plain diffusers, ONE pipeline call for all N images, one seeded
  `torch.Generator` per image (the best a single process can do with one call);
- **service, 8 in flight** and **service, 16 in flight**: one `Generate` call for N images
  through the generator service (gRPC on loopback) and Triton (the bundled tritonserver, the
  Python backend, dynamic batching), the generator keeping 8 or 16 Triton requests in flight.

It checks that the service's images are the direct ones (a uint8 pixel may differ by one
level: a batch sums in another order), and prints the figures; the last line is `key=value`
pairs: `vs_sequential=... vs_batched=...` (service with 8 in flight over sequential, and over
the batched call) then more.

    .venv/bin/python benchmarks/generator.py              # a few minutes on 2 cores
    .venv/bin/python benchmarks/generator.py --quick      # a smoke run, seconds plus Triton's start

See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.common.images import decode_image
from services.generator.models import ModelConfig, get_model

MODEL = "tiny-sd"
PROMPT = "an oil painting of a lighthouse on a cliff at dusk"
IN_FLIGHT = (8, 16)


@dataclass(frozen=True)
class Run:
    name: str
    seconds: float
    images: list[np.ndarray]  # (H, W, 3) uint8, in seed order
    batch_sizes: list[int]

    @property
    def rate(self) -> float:
        return len(self.images) / self.seconds


@contextlib.contextmanager
def stopwatch() -> Iterator[list[float]]:
    box = [0.0]
    start = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - start


# -- plain diffusers ------------------------------------------------------------------------------


def direct_call(pipe, seeds: Sequence[int], args: argparse.Namespace) -> list[np.ndarray]:
    """ONE plain diffusers call for `seeds`, one seeded CPU generator per image (the same
    noise the Triton model draws), output quantized like diffusers' `numpy_to_pil`."""
    import torch

    with torch.inference_mode():
        images = pipe(
            prompt=[args.prompt] * len(seeds),
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            height=args.size,
            width=args.size,
            generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds],
            output_type="np",
        ).images
    return list((np.clip(np.asarray(images), 0.0, 1.0) * 255).round().astype(np.uint8))


def run_sequential(pipe, seeds: Sequence[int], args: argparse.Namespace) -> Run:
    images: list[np.ndarray] = []
    with stopwatch() as seconds:
        for seed in seeds:
            images += direct_call(pipe, [seed], args)
    return Run("sequential", seconds[0], images, [1] * len(seeds))


def run_batched(pipe, seeds: Sequence[int], args: argparse.Namespace) -> Run:
    with stopwatch() as seconds:
        images = direct_call(pipe, seeds, args)
    return Run("batched", seconds[0], images, [len(seeds)])


# -- the service --------------------------------------------------------------------------------


def run_service(address: str, seeds: Sequence[int], args: argparse.Namespace, in_flight: int, model: str = MODEL) -> Run:
    """One Generate call for all `seeds` (base seed, n images), timed from the call to the
    last image; the PNGs are decoded after the clock stops."""
    from services.generator.cli import GeneratorClient
    from services.generator.service import GenerationRequest, GenerationSettings

    request = GenerationRequest(model=model, prompt=args.prompt, n_images=len(seeds), base_seed=seeds[0],
                                settings=GenerationSettings(steps=args.steps, guidance_scale=args.guidance,
                                                            height=args.size, width=args.size))
    with GeneratorClient(address) as client:
        client.wait_ready()
        with stopwatch() as seconds:
            images = list(client.generate(request, timeout_s=3600))
    images.sort(key=lambda image: image.index)
    return Run(f"service, {in_flight} in flight", seconds[0],
               [decode_image(image.png).pixels for image in images], [image.timing.batch_size for image in images])


@contextlib.contextmanager
def services(args: argparse.Namespace, config: ModelConfig | None = None, *, instance_kind: str = "KIND_CPU",
             device: str = "cpu", in_flight: Sequence[int] = IN_FLIGHT) -> Iterator[dict[int, str]]:
    """Triton serving `config` (default tiny-sd; on the CPU with `args.threads` threads) and
    one generator service per in-flight bound in front of it; yields {in_flight: address}."""
    from services.common.server import shutdown
    from services.generator.server import create_generator_server
    from services.generator.triton_server import DEFAULT_MAX_QUEUE_DELAY_US, TritonServer, build_model_repository

    config = config or get_model(MODEL)
    threads = str(args.threads)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="iconicity-bench-")))
        repository = build_model_repository([config], tmp / "repository", models_root=args.models_root,
                                            instance_kind=instance_kind, device=device,
                                            max_queue_delay_microseconds=args.queue_delay_us)
        print(f"triton: starting {config.name} on {device} (max batch 16, queue delay {args.queue_delay_us} us, "
              f"default {DEFAULT_MAX_QUEUE_DELAY_US}; {threads} CPU threads)...", flush=True)
        started = time.perf_counter()
        triton = stack.enter_context(TritonServer(
            repository, [config.name], startup_timeout=900,
            env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}))
        print(f"triton: ready in {time.perf_counter() - started:.1f} s at {triton.grpc_url}", flush=True)
        addresses = {}
        for bound in in_flight:
            server, port, servicer = create_generator_server("127.0.0.1:0", triton_url=triton.grpc_url,
                                                             models={config.name: config},
                                                             max_images=max(args.n_images, 16), max_in_flight=bound)
            server.start()
            stack.callback(servicer.generator.close)
            stack.callback(shutdown, server, 0)
            addresses[bound] = f"127.0.0.1:{port}"
        yield addresses


# -- main -------------------------------------------------------------------------------------


def compare(reference: Run, other: Run) -> tuple[int, int, int]:
    """(largest |difference| of a uint8 value, values that differ, sum of |differences|)
    between two runs."""
    largest = differing = total = 0
    for a, b in zip(reference.images, other.images):
        difference = np.abs(a.astype(int) - b.astype(int))
        largest = max(largest, int(difference.max()))
        differing += int((difference > 0).sum())
        total += int(difference.sum())
    return largest, differing, total


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-images", type=int, default=None, help="images per way (default 32; 16 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default 8; 2 with --quick)")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels, a multiple of 8 (default 128; 64 with --quick)")
    parser.add_argument("--guidance", type=float, default=7.5, help="guidance scale (default 7.5: two UNet passes per step)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads, here and in Triton's model process (default 1: on a shared 2-core machine two threads spin-wait on each other)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs of each way, interleaved; the best counts (default 2; 1 with --quick)")
    parser.add_argument("--queue-delay-us", type=int, default=None,
                        help="Triton's dynamic batching delay in microseconds (default: the repository's own)")
    parser.add_argument("--models-root", type=Path, default=None, help="where the tiny pipeline is built (default: $ICONICITY_MODELS or ~/.cache/iconicity/models)")
    parser.add_argument("--prompt", default=PROMPT, help="the prompt")
    parser.add_argument("--quick", action="store_true", help="few small images: checks that the script runs, measures nothing")
    args = parser.parse_args(argv)
    args.n_images = args.n_images or (16 if args.quick else 32)
    args.repeats = args.repeats or (1 if args.quick else 2)
    args.steps = args.steps or (2 if args.quick else 8)
    args.size = args.size or (64 if args.quick else 128)
    if min(args.n_images, args.steps, args.threads, args.repeats) < 1:
        parser.error("--n-images, --steps, --threads and --repeats must be at least 1")
    if args.queue_delay_us is None:
        from services.generator.triton_server import DEFAULT_MAX_QUEUE_DELAY_US

        args.queue_delay_us = DEFAULT_MAX_QUEUE_DELAY_US
    try:
        from services.generator.models import validate_request

        validate_request(get_model(MODEL), args.steps, args.guidance, args.size, args.size)
    except ValueError as error:
        parser.error(str(error))
    return args


def measure(pipe, addresses: dict[int, str], seeds: Sequence[int], args: argparse.Namespace,
            model: str = MODEL) -> dict[str, Run]:
    """Every way, `args.repeats` times, interleaved; the best run of each way."""
    # Warm-up, untimed: the first call of each batch shape pays one-off set-up (on this CPU
    # up to seconds: kernel selection, first allocations), here and in Triton.
    for _ in range(2):
        direct_call(pipe, seeds[:1], args)
    direct_call(pipe, seeds, args)
    for in_flight, address in addresses.items():
        run_service(address, seeds[:in_flight], args, in_flight, model)
    best: dict[str, Run] = {}
    for repeat in range(args.repeats):
        runs = [run_sequential(pipe, seeds, args), run_batched(pipe, seeds, args)]
        runs += [run_service(address, seeds, args, in_flight, model) for in_flight, address in addresses.items()]
        for run in runs:
            if run.name not in best or run.seconds < best[run.name].seconds:
                best[run.name] = run
        print(f"run {repeat + 1}: " + ", ".join(f"{run.name} {run.seconds:.2f} s" for run in runs)
              + f"; load average {os.getloadavg()[0]:.2f}", flush=True)
    return best


def report(best: dict[str, Run], args: argparse.Namespace, *, max_levels: int = 1, max_fraction: float = 1e-3,
           max_mean: float = 1.0, extra: str = "") -> int:
    """Prints the table, the check, the targets and the `key=value` line; returns the exit
    status (1 when the check fails). The check: every way's images are the sequential ones
    within `max_levels` uint8 levels, with at most `max_fraction` of the values differing
    and a mean |difference| of at most `max_mean` levels."""
    sequential, batched = best["sequential"], best["batched"]
    eight, sixteen = best[f"service, {IN_FLIGHT[0]} in flight"], best[f"service, {IN_FLIGHT[1]} in flight"]
    print()
    for run in best.values():
        sizes = sorted(set(run.batch_sizes))
        print(f"{run.name:24s} {run.seconds:8.2f} s  {run.rate:7.2f} images/s  {run.rate / sequential.rate:5.2f}x sequential  "
              f"{run.rate / batched.rate:5.2f}x batched  (batch sizes {sizes[0]}..{sizes[-1]}, "
              f"mean {np.mean(run.batch_sizes):.1f})")
    figures = {
        "vs_sequential": eight.rate / sequential.rate,
        "vs_batched": eight.rate / batched.rate,
        "vs_sequential_16": sixteen.rate / sequential.rate,
        "vs_batched_16": sixteen.rate / batched.rate,
        "batched_vs_sequential": batched.rate / sequential.rate,
        "sequential_images_per_s": sequential.rate,
        "batched_images_per_s": batched.rate,
        "service8_images_per_s": eight.rate,
        "service16_images_per_s": sixteen.rate,
    }
    largest = differing = total = values = 0
    for run in (batched, eight, sixteen):
        lg, df, tt = compare(sequential, run)
        largest, differing, total = max(largest, lg), differing + df, total + tt
        values += sum(image.size for image in run.images)
    mean = total / max(values, 1)
    check = largest <= max_levels and differing <= max_fraction * values and mean <= max_mean
    print(f"\ncheck: every way makes the sequential images: largest uint8 difference {largest} (allowed {max_levels}), "
          f"{differing} of {values} values differ (allowed {max_fraction:g} of them), mean difference {mean:.4f} "
          f"levels (allowed {max_mean:g}): {'PASS' if check else 'FAIL'}")
    met = figures["vs_sequential"] >= 2 and figures["vs_batched"] >= 0.8
    print(f"targets (service with 8 in flight >= 2x sequential, >= 0.8x batched): {'met' if met else 'MISSED'}")
    print(" ".join(f"{key}={value:.3f}" for key, value in figures.items())
          + f" check={'pass' if check else 'fail'} n_images={args.n_images} size={args.size} steps={args.steps}"
          + f" threads={args.threads} repeats={args.repeats} queue_delay_us={args.queue_delay_us}" + extra)
    return 0 if check else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from services.generator.pipelines import load_pipeline

    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    seeds = list(range(1000, 1000 + args.n_images))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"{args.threads} threads; load average {os.getloadavg()[0]:.2f}")
    print(f"work: {args.n_images} images of {MODEL} ({args.size}x{args.size}, {args.steps} steps, guidance "
          f"{args.guidance:g}), seeds {seeds[0]}..{seeds[-1]}"
          + ("; --quick: figures are not a measurement" if args.quick else ""), flush=True)
    with services(args) as addresses:
        pipe = load_pipeline(get_model(MODEL), device="cpu", models_root=args.models_root)
        best = measure(pipe, addresses, seeds, args)
    return report(best, args)


if __name__ == "__main__":
    sys.exit(main())
