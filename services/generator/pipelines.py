"""Loading a diffusers pipeline for a `ModelConfig`, and the batched generation core.

Plain Python, no Triton: the Triton model (`triton/1/model.py`) is a thin adapter over
`Generator.generate`, and tests or an in-process backend can call it directly.

Batching: requests that can share one pipeline call (same height, width, steps, guidance and
negative-prompt presence) are grouped, and each group runs ONE call with one
`torch.Generator` per image. diffusers then draws each image's initial latents with its own
generator, so an image depends on its seed and not on its batch mates. On a CPU the result
equals the one-at-a-time image to about 1e-5 before quantization (the matrix kernels sum in
another order for another batch size), i.e. uint8 pixels differ by at most 1 level, in about
one pixel in ten thousand; the same batch composition repeats bit for bit.

>>> import tempfile
>>> from services.generator.models import get_model
>>> generator = Generator.load(get_model("tiny-sd"), models_root=tempfile.mkdtemp())
>>> requests = [GenerationRequest("a painting of a cat", seed=s, steps=2, guidance=7.5, height=64, width=64)
...             for s in (1, 2)]
>>> outcomes = generator.generate(requests)
>>> [(o.image.shape, o.image.dtype.name, o.batch_size) for o in outcomes]
[((64, 64, 3), 'uint8', 2), ((64, 64, 3), 'uint8', 2)]
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.generator.models import ModelConfig, validate_request

LOGGER = logging.getLogger(__name__)
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class GenerationRequest:
    """One image to make. An empty `negative_prompt` means none."""

    prompt: str
    seed: int
    steps: int
    guidance: float
    height: int
    width: int
    negative_prompt: str = ""

    def group_key(self) -> tuple[int, int, int, float, bool]:
        """Requests with equal keys can share one pipeline call."""
        return (self.height, self.width, self.steps, self.guidance, bool(self.negative_prompt))


@dataclass(frozen=True)
class GenerationResult:
    """One image (H, W, 3 uint8 RGB) and the pipeline call that made it."""

    image: np.ndarray
    elapsed_ms: float
    batch_size: int


def validate_generation(config: ModelConfig, request: GenerationRequest) -> None:
    """Raise ValueError saying what is wrong with `request` for `config`."""
    if not 0 <= request.seed <= INT64_MAX:
        raise ValueError(f"{config.name}: seed must be in [0, {INT64_MAX}], got {request.seed}")
    if request.negative_prompt and not config.negative_prompt:
        raise ValueError(f"{config.name}: this model takes no negative prompt, got {request.negative_prompt!r}")
    validate_request(config, request.steps, request.guidance, request.height, request.width)


def plan_groups(requests: Sequence[GenerationRequest]) -> list[list[int]]:
    """Indices of `requests` grouped by `group_key`, groups in order of first appearance.

    >>> r = lambda steps, neg="": GenerationRequest("p", 0, steps, 7.5, 64, 64, neg)
    >>> plan_groups([r(4), r(8), r(4, "blurry"), r(4), r(8)])
    [[0, 3], [1, 4], [2]]
    """
    groups: dict[tuple, list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(request.group_key(), []).append(index)
    return list(groups.values())


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] to uint8 the way diffusers' `numpy_to_pil` does."""
    return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)


def resolve_device(device: str = "auto") -> str:
    """`auto` is `cuda` where torch sees a GPU, else `cpu`; anything else is kept."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_dtype(name: str, device: str):
    """The torch dtype for `name`; half precision becomes float32 on a CPU (slow or
    unsupported there)."""
    import torch

    if device.startswith("cpu") and name in ("float16", "bfloat16"):
        return torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def pipeline_source(config: ModelConfig, models_root: str | Path | None = None) -> str:
    """Where `from_pretrained` reads the pipeline: the tiny pipeline's folder (built first if
    needed), else `config.pipeline` as given (a folder or a Hugging Face id)."""
    if config.tiny is not None:
        from services.generator.tiny import ensure_tiny_pipeline

        return str(ensure_tiny_pipeline(config.tiny, models_root))
    return config.pipeline


def load_pipeline(config: ModelConfig, device: str = "auto", models_root: str | Path | None = None):
    """The diffusers pipeline of `config` on `device`, progress bars off.

    Hugging Face ids load from the local cache (or the Hub where there is a network) at
    `config.revision`; the safety checker is left out unless `config.safety_checker`
    (it blacks out images, which would count as failures to realize a work).
    """
    import diffusers

    device = resolve_device(device)
    source = pipeline_source(config, models_root)
    cls = getattr(diffusers, config.pipeline_class) if config.pipeline_class else diffusers.DiffusionPipeline
    kwargs: dict[str, Any] = {"dtype": torch_dtype(config.dtype, device)}
    if not Path(source).is_dir():
        kwargs["revision"] = config.revision or "main"
    if config.variant:
        kwargs["variant"] = config.variant
    if not config.safety_checker and "safety_checker" in inspect.signature(cls.__init__).parameters:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    pipe = cls.from_pretrained(source, **kwargs)
    if config.scheduler:
        scheduler_cls = getattr(diffusers, config.scheduler)
        pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class Generator:
    """A loaded pipeline and its config: validates requests, groups them, runs one pipeline
    call per group and returns one result (or the error) per request."""

    def __init__(self, config: ModelConfig, pipe: Any, device: str, generator_device: str = "cpu"):
        self.config = config
        self.pipe = pipe
        self.device = device
        # CPU generators draw the same initial noise on any machine (diffusers moves it to
        # the device), so a seed means the same starting point on a CPU and on any GPU.
        self.generator_device = generator_device

    @classmethod
    def load(cls, config: ModelConfig, device: str = "auto", models_root: str | Path | None = None,
             generator_device: str = "cpu", cpu_threads: int | None = None) -> Generator:
        """`cpu_threads`: torch's thread count for this process where the pipeline runs on
        the CPU (None: torch's default, a thread per core)."""
        device = resolve_device(device)
        if cpu_threads is not None and device == "cpu":
            import torch

            torch.set_num_threads(cpu_threads)
        return cls(config, load_pipeline(config, device, models_root), device, generator_device)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult | Exception]:
        """One outcome per request, in order: a result, or the ValueError (invalid request)
        or other exception (failed pipeline call) of that request alone."""
        outcomes: list[GenerationResult | Exception | None] = [None] * len(requests)
        valid: list[int] = []
        for index, request in enumerate(requests):
            try:
                validate_generation(self.config, request)
                valid.append(index)
            except ValueError as error:
                outcomes[index] = error
        for group in plan_groups([requests[i] for i in valid]):
            indices = [valid[i] for i in group]
            try:
                results = self.run_group([requests[i] for i in indices])
            except Exception as error:  # the group's requests fail, the other groups go on
                LOGGER.exception("pipeline call of %d images failed", len(indices))
                results = [error] * len(indices)
            for index, result in zip(indices, results):
                outcomes[index] = result
        return outcomes  # type: ignore[return-value]

    def run_group(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """ONE pipeline call for requests that share a `group_key`."""
        import torch

        keys = {r.group_key() for r in requests}
        if len(keys) != 1:
            raise ValueError(f"requests of one pipeline call must share settings, got {sorted(keys)}")
        first = requests[0]
        kwargs: dict[str, Any] = dict(self.config.call_kwargs)
        kwargs.update(
            prompt=[r.prompt for r in requests],
            num_inference_steps=first.steps,
            guidance_scale=first.guidance,
            height=first.height,
            width=first.width,
            generator=[torch.Generator(self.generator_device).manual_seed(r.seed) for r in requests],
            output_type="np",
        )
        if first.negative_prompt:
            kwargs["negative_prompt"] = [r.negative_prompt for r in requests]
        start = time.perf_counter()
        with torch.inference_mode():
            images = self.pipe(**kwargs).images
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        images = to_uint8(np.asarray(images))
        if images.shape != (len(requests), first.height, first.width, 3):
            raise RuntimeError(f"pipeline returned images of shape {images.shape}, expected "
                               f"{(len(requests), first.height, first.width, 3)}")
        return [GenerationResult(np.ascontiguousarray(image), elapsed_ms, len(requests)) for image in images]
