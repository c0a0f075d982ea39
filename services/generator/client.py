"""The generator's client of Triton: one asynchronous gRPC request per image.

`TritonClient` wraps `tritonclient.grpc.aio`. It keeps up to `max_in_flight` requests in
flight at once (the rest wait their turn), so that Triton's dynamic batcher has requests to
batch; it gives every request a deadline; and it sends a request again, with exponential
backoff, while Triton answers UNAVAILABLE (down, restarting, or its connection not yet back).
The gRPC channel reconnects by itself with a short backoff, so the client recovers when Triton
comes back without being made again.

The Triton side of the contract (services/generator/triton): one model per registry entry,
inputs PROMPT, NEGATIVE_PROMPT (BYTES), SEED (INT64), STEPS (INT32), GUIDANCE_SCALE (FP32),
HEIGHT, WIDTH (INT32), each of shape [1] per request; outputs IMAGE (UINT8, H x W x 3),
ELAPSED_MS (FP32 [1]) and BATCH_SIZE (INT32 [1]).

Every coroutine of a client must run on one event loop (tritonclient's aio client is bound to
the loop it was made on); the client makes its channel on first use, on that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("iconicity.generator.triton")

DEFAULT_MAX_IN_FLIGHT = 16
DEFAULT_REQUEST_TIMEOUT_S = 600.0
# gRPC's default reconnect backoff grows to 120 s: a Triton that restarted would stay
# unreachable for up to that long. Ours stays under a second.
RECONNECT_BACKOFF_MS = (100, 1000)
MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class TritonError(RuntimeError):
    """Triton refused or failed a request for a reason that sending it again will not fix."""

    def __init__(self, message: str, status: str = "") -> None:
        super().__init__(message)
        self.status = status


class TritonUnavailable(TritonError):
    """Triton cannot be reached, or answers UNAVAILABLE, after every retry."""


class TritonModelNotServed(TritonError):
    """Triton does not serve (or has not loaded) the model a request names."""


class TritonDeadlineExceeded(TritonError):
    """The request's deadline passed before Triton answered."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of a request that Triton answered UNAVAILABLE: up to `attempts` tries in all,
    waiting `initial_backoff_s`, then `multiplier` times longer each time up to
    `max_backoff_s` (with +-20% jitter), and never past the request's deadline. The waits
    together should outlast the channel's longest reconnect backoff (`RECONNECT_BACKOFF_MS`):
    until the channel tries again, every call fails at once.

    >>> [round(RetryPolicy().backoff(i, jitter=False), 2) for i in range(5)]
    [0.25, 0.5, 1.0, 2.0, 2.0]
    """

    attempts: int = 5
    initial_backoff_s: float = 0.25
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {self.attempts}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and the multiplier >= 1")

    def backoff(self, retry: int, jitter: bool = True) -> float:
        """Seconds to wait before retry number `retry` (0 for the first retry)."""
        delay = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**retry)
        return delay * random.uniform(0.8, 1.2) if jitter else delay


@dataclass(frozen=True)
class ImageRequest:
    """One image for Triton: everything the model's inputs take."""

    model: str
    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    guidance_scale: float
    height: int
    width: int


@dataclass(frozen=True)
class ImageResult:
    pixels: np.ndarray  # (H, W, 3) uint8 RGB
    model_ms: float  # inside the model, for the whole batch
    batch_size: int  # requests in the batch Triton ran
    request_ms: float  # from sending (the try that succeeded) to the answer, Triton's queue included
    retries: int


class TritonClient:
    """An asynchronous client of one Triton server at `url` ("host:port").

    `max_in_flight` bounds the requests sent and not yet answered, over all callers;
    `request_timeout_s` is the longest one request may take (a caller's own deadline, when
    sooner, wins); `retry` says how UNAVAILABLE is retried."""

    def __init__(
        self,
        url: str,
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        retry: RetryPolicy | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        if request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be positive, got {request_timeout_s}")
        self.url = url.removeprefix("grpc://")
        self.max_in_flight = max_in_flight
        self.request_timeout_s = request_timeout_s
        self.retry = retry or RetryPolicy()
        self._client = None
        self._slots: asyncio.Semaphore | None = None
        self._in_flight = 0
        self._sent = 0

    # -- state ------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Requests sent to Triton and not yet answered (or given up)."""
        return self._in_flight

    @property
    def sent(self) -> int:
        """Requests sent to Triton since the client was made, retries included."""
        return self._sent

    def _connection(self):
        if self._client is None:
            import tritonclient.grpc.aio as triton_aio

            self._client = triton_aio.InferenceServerClient(self.url, channel_args=[
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
                ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
                ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[1]),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
            ])
            self._slots = asyncio.Semaphore(self.max_in_flight)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    # -- health -----------------------------------------------------------------------------

    async def ready_models(self, timeout_s: float = 2.0) -> set[str] | None:
        """The models Triton has loaded and ready, or None when Triton cannot be reached."""
        client = self._connection()
        try:
            index = await asyncio.wait_for(client.get_model_repository_index(as_json=True), timeout_s)
        except Exception as error:  # noqa: BLE001 - unreachable, whatever the reason
            log.debug("triton_index_failed", extra={"url": self.url, "error": str(error)})
            return None
        return {entry["name"] for entry in index.get("models", []) if entry.get("state") == "READY"}

    async def wait_ready(self, timeout_s: float = 60.0) -> bool:
        """Whether Triton became ready within `timeout_s`."""
        client = self._connection()
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            try:
                if await asyncio.wait_for(client.is_server_ready(), max(0.1, end - time.monotonic())):
                    return True
            except Exception:  # noqa: BLE001 - not yet
                pass
            await asyncio.sleep(0.2)
        return False

    # -- inference --------------------------------------------------------------------------

    async def infer(self, request: ImageRequest, *, deadline: float | None = None) -> ImageResult:
        """Runs one request; `deadline` is a `time.monotonic()` time after which it fails with
        `TritonDeadlineExceeded`. Raises `TritonUnavailable` when Triton stays unavailable
        through every retry, `TritonModelNotServed` for a model Triton does not serve, and
        `TritonError` for any other refusal. Cancelling the coroutine cancels the gRPC call
        (Triton drops a cancelled request it has not run yet)."""
        inputs = _inputs(request)
        sent = [0.0]

        async def call(client, timeout_s: float):
            sent[0] = time.monotonic()
            return await client.infer(request.model, inputs, client_timeout=timeout_s)

        result, retries = await self._retrying(call, request.model, "inference", deadline, slot=True)
        return _result(result, (time.monotonic() - sent[0]) * 1000, retries)

    async def served_model(self, name: str, *, deadline: float | None = None) -> ServedModel:
        """How Triton serves model `name`: its configuration (instance kind, parameters).
        Raises like `infer`."""

        async def call(client, timeout_s: float):
            return await client.get_model_config(name, as_json=True, client_timeout=timeout_s)

        answer, _ = await self._retrying(call, name, "model configuration", deadline, slot=False)
        config = answer.get("config", answer)
        parameters = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        kinds = {group.get("kind", "KIND_AUTO") for group in config.get("instance_group", [])} or {"KIND_AUTO"}
        return ServedModel(name=name, instance_kinds=tuple(sorted(kinds)), parameters=parameters,
                           max_batch_size=int(config.get("max_batch_size", 0)))

    async def _retrying(self, call, model: str, what: str, deadline: float | None, *, slot: bool):
        """`await call(client, timeout_s)`, sent again with backoff while Triton answers
        UNAVAILABLE; returns (its answer, the number of retries)."""
        client = self._connection()
        assert self._slots is not None
        end = time.monotonic() + self.request_timeout_s
        if deadline is not None:
            end = min(end, deadline)
        started = time.monotonic()
        last_error = ""
        for attempt in range(self.retry.attempts):
            if end - time.monotonic() <= 0:
                break
            async with self._slots if slot else contextlib.nullcontext():
                remaining = end - time.monotonic()
                if remaining <= 0:
                    break
                self._in_flight += slot
                self._sent += slot
                try:
                    return await call(client, remaining), attempt
                except Exception as error:  # noqa: BLE001 - sorted below
                    status, message = _status(error)
                    if status == "UNAVAILABLE":
                        last_error = message
                    elif status == "DEADLINE_EXCEEDED":
                        break
                    elif _model_in_transition(message):
                        # Loading or unloading (Triton starting or stopping): it may come back.
                        last_error = message
                    elif status == "INTERNAL" and "not healthy" in message:
                        # A Python backend stub that died or stalled: Triton restarts it.
                        last_error = message
                    elif status == "CANCELLED":
                        # Our own cancellation raises CancelledError, not this: the server went
                        # away mid-call (Triton stopping cancels its calls), like UNAVAILABLE.
                        last_error = message
                    elif _is_unknown_model(status, message):
                        raise TritonModelNotServed(
                            f"Triton at {self.url} does not serve model {model!r}: {message}", status) from None
                    else:
                        raise TritonError(f"Triton at {self.url} failed the {what} request for model {model!r} "
                                          f"({status or type(error).__name__}): {message}", status) from None
                finally:
                    self._in_flight -= slot
            if attempt + 1 < self.retry.attempts:
                delay = min(self.retry.backoff(attempt), max(0.0, end - time.monotonic()))
                log.info("triton_retry", extra={"url": self.url, "model": model, "what": what, "attempt": attempt + 1,
                                                "backoff_s": round(delay, 3), "error": last_error})
                await asyncio.sleep(delay)
        waited = time.monotonic() - started
        if last_error and time.monotonic() < end:
            raise TritonUnavailable(
                f"Triton at {self.url} is unavailable (down or restarting); {self.retry.attempts} tries over "
                f"{waited:.1f} s failed, last error: {last_error}", "UNAVAILABLE")
        raise TritonDeadlineExceeded(
            f"no answer from Triton at {self.url} for the {what} request of model {model!r} within {waited:.1f} s"
            + (f" (it was unavailable: {last_error})" if last_error else ""), "DEADLINE_EXCEEDED")


@dataclass(frozen=True)
class ServedModel:
    """A model as Triton serves it: instance kinds (KIND_CPU, KIND_GPU, KIND_AUTO), its
    string parameters, its max batch size."""

    name: str
    instance_kinds: tuple[str, ...]
    parameters: dict[str, str]
    max_batch_size: int


def _inputs(request: ImageRequest) -> list:
    from tritonclient.grpc import InferInput

    values = [
        ("PROMPT", "BYTES", np.array([[request.prompt.encode("utf-8")]], dtype=np.object_)),
        ("NEGATIVE_PROMPT", "BYTES", np.array([[request.negative_prompt.encode("utf-8")]], dtype=np.object_)),
        ("SEED", "INT64", np.array([[request.seed]], dtype=np.int64)),
        ("STEPS", "INT32", np.array([[request.steps]], dtype=np.int32)),
        ("GUIDANCE_SCALE", "FP32", np.array([[request.guidance_scale]], dtype=np.float32)),
        ("HEIGHT", "INT32", np.array([[request.height]], dtype=np.int32)),
        ("WIDTH", "INT32", np.array([[request.width]], dtype=np.int32)),
    ]
    inputs = []
    for name, datatype, array in values:
        item = InferInput(name, list(array.shape), datatype)
        item.set_data_from_numpy(array)
        inputs.append(item)
    return inputs


def _result(result, request_ms: float, retries: int) -> ImageResult:
    image = result.as_numpy("IMAGE")
    if image is None:
        raise TritonError("Triton's answer has no IMAGE output")
    pixels = np.ascontiguousarray(image.reshape(image.shape[-3:]), dtype=np.uint8)
    elapsed = result.as_numpy("ELAPSED_MS")
    batch = result.as_numpy("BATCH_SIZE")
    return ImageResult(
        pixels=pixels,
        model_ms=float(elapsed.reshape(-1)[0]) if elapsed is not None else 0.0,
        batch_size=int(batch.reshape(-1)[0]) if batch is not None else 0,
        request_ms=request_ms,
        retries=retries,
    )


def _status(error: Exception) -> tuple[str, str]:
    """("UNAVAILABLE", "the message") from a tritonclient or grpc error."""
    status = ""
    message = str(error)
    get_status = getattr(error, "status", None)
    if callable(get_status):
        status = str(get_status() or "")
        get_message = getattr(error, "message", None)
        message = str(get_message() if callable(get_message) else error) or message
    elif hasattr(error, "code") and callable(error.code):
        status = str(error.code())
        message = error.details() if hasattr(error, "details") else message
    return status.removeprefix("StatusCode."), message


def _model_in_transition(message: str) -> bool:
    """Triton knows the model but has no version of it loaded now (loading or unloading)."""
    text = message.lower()
    return "has no available versions" in text or "is not ready" in text


def _is_unknown_model(status: str, message: str) -> bool:
    text = message.lower()
    return status == "NOT_FOUND" or "unknown model" in text or "is not found" in text
