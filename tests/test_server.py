"""The shared server bootstrap (health, reflection, limits, logging, graceful shutdown) over
real gRPC on loopback, and the scorer's entry point as a real process stopped by SIGTERM."""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from services.common.logs import configure_logging, reset_logging
from services.common.server import create_server, serve_forever, shutdown

ROOT = Path(__file__).resolve().parents[1]
CALL_TIMEOUT = 60  # seconds; only so that a broken server fails the test instead of hanging it
LIMIT = 64 * 1024
SERVICE = "test.Echo"


class EchoService:
    """A service without protos: raw bytes in and out."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.blocked = threading.Event()

    def add(self, server: grpc.Server) -> list[str]:
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request),
            "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
            "Crash": grpc.unary_unary_rpc_method_handler(self.crash),
            "Big": grpc.unary_unary_rpc_method_handler(lambda request, context: bytes(2 * LIMIT)),
            "Block": grpc.unary_unary_rpc_method_handler(self.block),
            "Count": grpc.unary_stream_rpc_method_handler(lambda request, context: (bytes([i]) for i in range(3))),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        return [SERVICE]

    @staticmethod
    def fail(request, context):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad request")

    @staticmethod
    def crash(request, context):
        raise RuntimeError("boom")

    def block(self, request, context):
        self.blocked.set()
        assert self.release.wait(CALL_TIMEOUT)
        return b"released"


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def echo():
    service = EchoService()
    server, port = create_server("127.0.0.1:0", service.add, max_message_bytes=LIMIT, max_workers=4)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield service, server, port, channel
    service.release.set()
    channel.close()
    server.stop(None)


def call(channel, method: str, payload: bytes = b"hi", **kwargs):
    return channel.unary_unary(f"/{SERVICE}/{method}")(payload, timeout=CALL_TIMEOUT, **kwargs)


def error_of(function, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        function(*args, **kwargs)
    return info.value


def test_create_server_binds_port_zero_and_serves(echo):
    _, _, port, channel = echo
    assert port > 0
    assert call(channel, "Echo", b"hello") == b"hello"
    assert list(channel.unary_stream(f"/{SERVICE}/Count")(b"", timeout=CALL_TIMEOUT)) == [b"\0", b"\1", b"\2"]


def test_binding_a_port_in_use_fails(echo):
    _, _, port, _ = echo
    with pytest.raises((OSError, RuntimeError)):
        create_server(f"127.0.0.1:{port}", lambda server: [])


def test_health_is_serving_for_each_service_and_overall(echo):
    _, _, _, channel = echo
    health = health_pb2_grpc.HealthStub(channel)
    for service in (SERVICE, ""):
        response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    unknown = error_of(health.Check, health_pb2.HealthCheckRequest(service="no.Such"), timeout=CALL_TIMEOUT)
    assert unknown.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(echo):
    _, _, _, channel = echo
    services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services


def test_messages_over_the_limit_are_resource_exhausted(echo):
    _, _, _, channel = echo
    assert error_of(call, channel, "Echo", bytes(LIMIT + 1)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_of(call, channel, "Big").code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert call(channel, "Echo", bytes(LIMIT // 2)) == bytes(LIMIT // 2)


def test_every_call_logs_one_line_with_method_code_and_duration(echo):
    _, _, _, channel = echo
    records = Records()
    logger = logging.getLogger("iconicity.rpc")
    logger.addHandler(records)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        call(channel, "Echo")
        error_of(call, channel, "Fail")
        error_of(call, channel, "Crash")
        list(channel.unary_stream(f"/{SERVICE}/Count")(b"", timeout=CALL_TIMEOUT))
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    lines = [r for r in records.records if r.getMessage() == "rpc"]
    assert [(r.method, r.code) for r in lines] == [
        (f"/{SERVICE}/Echo", "OK"),
        (f"/{SERVICE}/Fail", "INVALID_ARGUMENT"),
        (f"/{SERVICE}/Crash", "UNKNOWN"),
        (f"/{SERVICE}/Count", "OK"),
    ]
    assert all(r.duration_ms >= 0 for r in lines)
    assert lines[1].details == "bad request"
    assert lines[3].responses == 3
    assert lines[2].levelno == logging.ERROR


def test_configure_logging_writes_json_lines():
    stream = io.StringIO()
    configure_logging("DEBUG", json=True, stream=stream)
    try:
        logging.getLogger("iconicity.test").info("serving", extra={"port": 1234})
        try:
            raise ValueError("oops")
        except ValueError:
            logging.getLogger("iconicity.test").exception("failed")
    finally:
        reset_logging()
    first, second = (json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{"))
    assert (first["event"], first["port"], first["level"], first["logger"]) == ("serving", 1234, "info", "iconicity.test")
    assert second["level"] == "error" and "ValueError: oops" in second["exception"]


def test_shutdown_goes_not_serving_refuses_new_calls_and_lets_calls_in_flight_finish(echo):
    service, server, _, channel = echo
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=CALL_TIMEOUT)
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    in_flight = channel.unary_unary(f"/{SERVICE}/Block").future(b"", timeout=CALL_TIMEOUT)
    assert service.blocked.wait(CALL_TIMEOUT)

    stopper = threading.Thread(target=shutdown, args=(server, CALL_TIMEOUT))
    stopper.start()
    assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()
    assert refused_call(channel).code() == grpc.StatusCode.UNAVAILABLE

    service.release.set()
    assert in_flight.result(timeout=CALL_TIMEOUT) == b"released"
    stopper.join(CALL_TIMEOUT)
    assert not stopper.is_alive()


def refused_call(channel) -> grpc.RpcError:
    """The error of the first call the server refuses (health goes NOT_SERVING a moment
    before the server stops taking calls)."""
    deadline = time.monotonic() + CALL_TIMEOUT
    while time.monotonic() < deadline:
        try:
            call(channel, "Echo")
        except grpc.RpcError as error:
            return error
        time.sleep(0.01)
    raise AssertionError("the server kept taking new calls")


def test_serve_forever_returns_after_stop(echo):
    _, server, _, _ = echo
    stop = threading.Event()
    result = []
    runner = threading.Thread(target=lambda: result.append(serve_forever(server, grace=1, stop=stop)))
    runner.start()
    stop.set()
    runner.join(CALL_TIMEOUT)
    assert result == ["stopped"]


# -- the scorer's entry point as a process ---------------------------------------------------------


class Process:
    """`python -m services.scorer ...` with its JSON log lines collected as they come."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.scorer", *args],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.events: queue.Queue[dict] = queue.Queue()
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                self.events.put(entry)

    def wait_for(self, event: str, **fields) -> dict:
        deadline = time.monotonic() + CALL_TIMEOUT
        while time.monotonic() < deadline:
            try:
                entry = self.events.get(timeout=1)
            except queue.Empty:
                assert self.process.poll() is None, f"the server exited:\n{''.join(self.lines)}"
                continue
            if entry.get("event") == event and all(entry.get(k) == v for k, v in fields.items()):
                return entry
        raise AssertionError(f"no {event!r} line:\n{''.join(self.lines)}")

    def finish(self) -> tuple[int, list[dict]]:
        """Waits for the process to exit; its exit code and every JSON line it logged."""
        code = self.process.wait(timeout=CALL_TIMEOUT)
        self._reader.join(CALL_TIMEOUT)
        events = []
        for line in self.lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                events.append(entry)
        return code, events

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def test_sigterm_lets_the_call_in_flight_finish_and_exits_zero():
    import numpy as np
    from iconicity.v1 import common_pb2, scorer_pb2, scorer_pb2_grpc

    from services.common.images import encode_png

    server = Process("--port", "0", "--no-cache", "--recognition-encoder", "tiny-clip", "--realization-encoder", "tiny-dinov2",
                     "--dtype", "float32", "--log-level", "DEBUG", "--grace", str(CALL_TIMEOUT))
    try:
        port = server.wait_for("serving")["port"]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="iconicity.v1.ScorerService"), timeout=CALL_TIMEOUT)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            stub = scorer_pb2_grpc.ScorerServiceStub(channel)
            pixels = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
            picture = common_pb2.Image(name="a.png", data=encode_png(pixels))
            handle = stub.RegisterReference(scorer_pb2.RegisterReferenceRequest(
                images=scorer_pb2.ReferenceImages(images=[picture])), timeout=CALL_TIMEOUT).handle
            # The first score loads the encoders, so the call is still running when SIGTERM comes.
            in_flight = stub.ScoreImages.future(scorer_pb2.ScoreImagesRequest(
                settings=scorer_pb2.ScoreSettings(reference_handle=handle), images=[picture]), timeout=CALL_TIMEOUT)
            server.wait_for("rpc_started", method="/iconicity.v1.ScorerService/ScoreImages")
            server.process.send_signal(signal.SIGTERM)
            server.wait_for("shutting_down", reason="SIGTERM")
            assert in_flight.result(timeout=CALL_TIMEOUT).summary.n_images == 1
        code, events = server.finish()
        assert code == 0
        assert [e["event"] for e in events if e.get("logger") == "iconicity.server"][-2:] == ["shutting_down", "stopped"]
    finally:
        server.kill()


def test_a_server_that_cannot_start_exits_one_with_the_cause(capsys):
    from services.scorer.__main__ import main

    try:
        code = main(["--port", "0", "--recognition-encoder", "no-such-encoder", "--realization-encoder", "tiny-dinov2"])
    finally:
        reset_logging()
    assert code == 1
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert [line["event"] for line in lines] == ["startup_failed"]
    assert "no-such-encoder" in lines[0]["error"]
