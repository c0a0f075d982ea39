"""The gRPC server bootstrap every service shares.

`create_server` builds a server with the services a caller adds, `grpc.health.v1` health
checking (SERVING for each service and for the server as a whole, ""), server reflection (so
that `grpcurl` and Kubernetes gRPC probes work without our stubs), message size limits, and an
interceptor that logs one structured line per call. `serve_forever` runs it until SIGTERM or
SIGINT, then drains: health goes NOT_SERVING, new calls are refused, and calls in flight get
up to `grace` seconds to finish.

>>> server, port = create_server("127.0.0.1:0", lambda server: [])
>>> server.start(); port > 0
True
>>> shutdown(server, grace=0)
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

log = logging.getLogger("iconicity.server")

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_WORKERS = 8
DEFAULT_GRACE_SECONDS = 10.0

HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
REFLECTION_SERVICE_NAME = reflection.SERVICE_NAME

# `add_servicers(server)` adds a service's servicers to the server and returns the full names
# of the services it added ("iconicity.v1.ScorerService").
AddServicers = Callable[[grpc.Server], Iterable[str]]


@dataclass
class _ServerState:
    health: health.HealthServicer
    service_names: tuple[str, ...]


# What `shutdown` needs to know about a server `create_server` made.
_STATES: weakref.WeakKeyDictionary[grpc.Server, _ServerState] = weakref.WeakKeyDictionary()


def create_server(
    address: str,
    add_servicers: AddServicers,
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_workers: int = DEFAULT_MAX_WORKERS,
    maximum_concurrent_rpcs: int | None = None,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
    options: Sequence[tuple[str, Any]] = (),
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.Server, int]:
    """A server bound to `address` ("host:port"; port 0 picks a free one), not yet started,
    and the port it is bound to.

    Messages over `max_message_bytes` in either direction fail with RESOURCE_EXHAUSTED (grpc
    enforces it). `credentials` serve TLS instead of plaintext. Every service name that
    `add_servicers` returns is SERVING in health and listed by reflection, as are health and
    reflection themselves. `options` are grpc channel arguments and override ours. Raises
    `OSError` when the address cannot be bound (in use, or not valid)."""
    if max_message_bytes <= 0:
        raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes}")
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc-worker"),
        interceptors=[LoggingInterceptor(), *interceptors],
        options=list({
            "grpc.max_receive_message_length": max_message_bytes,
            "grpc.max_send_message_length": max_message_bytes,
            # A port in use is an error, not a port shared with another server.
            "grpc.so_reuseport": 0,
            **dict(options),
        }.items()),
        maximum_concurrent_rpcs=maximum_concurrent_rpcs,
    )
    service_names = tuple(add_servicers(server))

    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *service_names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection((*service_names, HEALTH_SERVICE_NAME, REFLECTION_SERVICE_NAME), server)

    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if not port:
        raise OSError(f"could not bind {address!r}: the address is in use or not valid")
    _STATES[server] = _ServerState(health_servicer, service_names)
    return server, port


def add_listen_arguments(parser: argparse.ArgumentParser, default_port: int) -> None:
    """The flags every service's `serve` command shares: where to listen, message and
    concurrency limits, the SIGTERM grace period, and logging."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 or [::] for every interface (default: %(default)s)")
    parser.add_argument("--port", type=int, default=default_port, help="port to listen on; 0 picks a free one (default: %(default)s)")
    parser.add_argument("--max-message-mb", type=float, default=DEFAULT_MAX_MESSAGE_BYTES / 2**20, help="largest gRPC message accepted or sent, in MiB (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=DEFAULT_MAX_WORKERS, help="calls served at once (default: %(default)s)")
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE_SECONDS, help="seconds calls in flight get to finish on SIGTERM (default: %(default)s)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default: %(default)s)")
    parser.add_argument("--log-format", default="json", choices=["json", "text"], help="log lines as JSON objects or text (default: %(default)s)")


def set_serving(server: grpc.Server, serving: bool, service: str | None = None) -> None:
    """Sets the health of one service of a server `create_server` made, or of all of them
    and the overall "" when `service` is None."""
    state = _STATES[server]
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", *state.service_names) if service is None else (service,):
        state.health.set(name, status)


def shutdown(server: grpc.Server, grace: float = DEFAULT_GRACE_SECONDS, drain: float = 0.0) -> None:
    """Stops a server gracefully: every service goes NOT_SERVING (and stays so), then after
    `drain` seconds (time for load balancers to notice) the server refuses new calls and
    gives calls in flight up to `grace` seconds before cancelling them. Returns when it has
    stopped."""
    state = _STATES.get(server)
    if state is not None:
        state.health.enter_graceful_shutdown()
    if drain > 0:
        time.sleep(drain)
    server.stop(grace).wait()


def serve_forever(
    server: grpc.Server,
    grace: float = DEFAULT_GRACE_SECONDS,
    *,
    drain: float = 0.0,
    stop_signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
    stop: threading.Event | None = None,
) -> str:
    """Runs a started server until one of `stop_signals` arrives (or `stop` is set), then
    shuts it down gracefully (see `shutdown`). A second signal during the grace period
    cancels the calls still in flight. Returns what stopped it ("SIGTERM", "SIGINT" or
    "stopped"). Signal handlers can only be installed from the main thread; elsewhere
    pass `stop`."""
    stop = stop or threading.Event()
    reason = ["stopped"]
    stopping = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if stopping.is_set():
            log.warning("stop_now", extra={"signal": name})
            server.stop(0)
            return
        reason[0] = name
        stop.set()

    installed = {}
    if threading.current_thread() is threading.main_thread():
        for sig in stop_signals:
            installed[sig] = signal.signal(sig, on_signal)
    try:
        while not stop.wait(0.5):
            pass
        stopping.set()
        log.info("shutting_down", extra={"reason": reason[0], "grace_s": grace})
        started = time.monotonic()
        shutdown(server, grace, drain)
        log.info("stopped", extra={"reason": reason[0], "duration_s": round(time.monotonic() - started, 3)})
    finally:
        for sig, previous in installed.items():
            signal.signal(sig, previous)
    return reason[0]


class LoggingInterceptor(grpc.ServerInterceptor):
    """Logs one line per call when it ends: method, status code, duration, peer; and one
    DEBUG line when it starts."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger("iconicity.rpc")

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method),
                handler.request_deserializer, handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(handler.stream_unary, method),
                handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method),
                handler.request_deserializer, handler.response_serializer)
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(handler.stream_stream, method),
            handler.request_deserializer, handler.response_serializer)

    def _wrap_unary(self, behavior, method: str):
        def wrapped(request, context):
            started = self._started(method, context)
            error: BaseException | None = None
            try:
                return behavior(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                self._finished(method, context, started, error)

        return wrapped

    def _wrap_stream(self, behavior, method: str):
        def wrapped(request, context) -> Iterator:
            started = self._started(method, context)
            error: BaseException | None = None
            messages = 0
            responses = None
            try:
                responses = behavior(request, context)
                for response in responses:
                    yield response
                    messages += 1
            except GeneratorExit:  # the call ended (cancelled) while a response was pending
                pass
            except BaseException as exc:
                error = exc
                raise
            finally:
                close = getattr(responses, "close", None)
                if close is not None:
                    close()  # runs the handler's own cleanup now, not whenever it is collected
                self._finished(method, context, started, error, messages)

        return wrapped

    def _started(self, method: str, context: grpc.ServicerContext) -> float:
        if self._log.isEnabledFor(logging.DEBUG):
            self._log.debug("rpc_started", extra={"method": method, "peer": _peer(context)})
        return time.monotonic()

    def _finished(self, method: str, context: grpc.ServicerContext, started: float,
                  error: BaseException | None, messages: int | None = None) -> None:
        code = _status_code(context, error)
        fields: dict[str, Any] = {
            "method": method,
            "code": code.name,
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
            "peer": _peer(context),
        }
        if messages is not None:
            fields["responses"] = messages
        details = _details(context)
        if details:
            fields["details"] = details
        level = logging.ERROR if code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL) else logging.INFO
        self._log.log(level, "rpc", extra=fields)


def _status_code(context: grpc.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    code = context.code() if hasattr(context, "code") else None
    if code is not None and code != grpc.StatusCode.OK:
        return code
    if error is not None:
        return grpc.StatusCode.UNKNOWN
    if not context.is_active():
        return grpc.StatusCode.DEADLINE_EXCEEDED if _deadline_passed(context) else grpc.StatusCode.CANCELLED
    return grpc.StatusCode.OK


StatusFor = Callable[[Exception, grpc.ServicerContext], tuple[grpc.StatusCode, str]]


@contextlib.contextmanager
def status_on_error(context: grpc.ServicerContext, status_for: StatusFor, logger: logging.Logger) -> Iterator[None]:
    """Ends the call with the status code `status_for` gives the exception; an unexpected one
    (INTERNAL) is logged with its traceback first."""
    try:
        yield
    except Exception as error:
        code, message = status_for(error, context)
        if code is grpc.StatusCode.INTERNAL:
            logger.exception("internal_error", extra={"error": type(error).__name__})
        context.abort(code, message)


def deadline_passed(context: grpc.ServicerContext) -> bool:
    """Whether the call's deadline has passed (False for a call without one)."""
    return _deadline_passed(context)


def _deadline_passed(context: grpc.ServicerContext) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


def _details(context: grpc.ServicerContext) -> str:
    details = context.details() if hasattr(context, "details") else None
    if isinstance(details, bytes):
        return details.decode("utf-8", "replace")
    return details or ""


def _peer(context: grpc.ServicerContext) -> str:
    try:
        return context.peer()
    except Exception:  # noqa: BLE001 - the peer is only for the log line
        return ""
