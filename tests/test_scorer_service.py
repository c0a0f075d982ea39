"""The scorer service over real gRPC on loopback: a server on port 0, real channels, tiny
encoders, and a deliberately slow test encoder for cancellation and deadlines."""

from __future__ import annotations

import io
import json
import struct
import threading
import time
import zlib

import grpc
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from iconicity.v1 import common_pb2, scorer_pb2, scorer_pb2_grpc
from PIL import Image

from services.common.images import decode_image, encode_png
from services.scorer import encoders as encoders_module
from services.scorer.encoders import (
    PAPER_THRESHOLDS,
    Encoder,
    EncoderInfo,
    EncoderUnavailable,
    load_encoder,
    register_encoder,
)
from services.scorer.references import Imagery, Reference
from services.scorer.scoring import Scorer, ScoreSettings
from services.scorer.server import create_scorer_server

BATCH_SIZE = 4
MAX_MESSAGE_BYTES = 1 << 20
SERVICE = "iconicity.v1.ScorerService"
CALL_TIMEOUT = 60  # seconds; only so that a broken server fails the test instead of hanging it


# -- a slow encoder that counts its batches ------------------------------------------------


class SlowEncoder(Encoder):
    """Embeds one image per batch, sleeping in each, and counts the batches it ran."""

    name = "test-slow"
    batch_size = 1

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay
        self._batches = 0
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        return "test-slow:v1"

    @property
    def batches(self) -> int:
        with self._lock:
            return self._batches

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        return F.interpolate(image[None].float(), size=(8, 8), mode="area")[0].flatten() + 1.0

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay)
        with self._lock:
            self._batches += 1
        return batch


SLOW = SlowEncoder()


def _unavailable(**_kwargs) -> Encoder:
    raise EncoderUnavailable("encoder 'test-unavailable' needs weights that are not on this machine")


@pytest.fixture(scope="module", autouse=True)
def test_encoders():
    infos = [
        EncoderInfo("test-slow", "sleeps in every batch", True, PAPER_THRESHOLDS, "none"),
        EncoderInfo("test-unavailable", "never has its weights", False, PAPER_THRESHOLDS, "none"),
    ]
    register_encoder(infos[0], lambda **_kwargs: SLOW)
    register_encoder(infos[1], _unavailable)
    yield
    for info in infos:
        encoders_module.unregister_encoder(info.name)


# -- images -----------------------------------------------------------------------------------


def random_pixels(seed: int, size: tuple[int, int] = (48, 40)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Smooth blobs rather than noise, so that images differ in structure.
    small = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def png(seed: int, size: tuple[int, int] = (48, 40)) -> bytes:
    return encode_png(random_pixels(seed, size))


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header declares `width` x `height` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def image(name: str, data: bytes) -> common_pb2.Image:
    return common_pb2.Image(name=name, data=data)


GENERATED = [image(f"gen{i}.png", png(100 + i)) for i in range(6)]
REFERENCE = [image("ref1.png", png(1)), image("ref2.png", png(2, (40, 56)))]


# -- the server -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("references")
    (root / "tiny_work").mkdir()
    for item in REFERENCE:
        (root / "tiny_work" / item.name).write_bytes(item.data)
    (root / "catalog.json").write_text(json.dumps([
        {"slug": "tiny_work", "title": "Tiny Work", "imagery": "dynamic", "qid": "Q424242",
         "images": [item.name for item in REFERENCE]},
    ]))
    return root


@pytest.fixture(scope="module")
def server(catalog_dir):
    server, port, servicer = create_scorer_server(
        "127.0.0.1:0",
        catalog=catalog_dir,
        recognition_encoder="tiny-clip",
        realization_encoder="tiny-dinov2",
        dtype="float32",
        batch_size=BATCH_SIZE,
        max_message_bytes=MAX_MESSAGE_BYTES,
        max_workers=4,
    )
    server.start()
    yield port, servicer
    server.stop(None)


@pytest.fixture(scope="module")
def channel(server):
    port, _ = server
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT)
        yield channel


@pytest.fixture(scope="module")
def stub(channel):
    return scorer_pb2_grpc.ScorerServiceStub(channel)


def register(stub, images=REFERENCE, imagery=common_pb2.IMAGERY_DYNAMIC, reference_id="tiny") -> scorer_pb2.RegisterReferenceResponse:
    request = scorer_pb2.RegisterReferenceRequest(
        images=scorer_pb2.ReferenceImages(reference_id=reference_id, images=images), imagery=imagery)
    return stub.RegisterReference(request, timeout=CALL_TIMEOUT)


@pytest.fixture(scope="module")
def handle(stub) -> str:
    return register(stub).handle


def score(stub, handle, images=GENERATED, timeout=CALL_TIMEOUT, **settings) -> scorer_pb2.ScoreImagesResponse:
    request = scorer_pb2.ScoreImagesRequest(
        settings=scorer_pb2.ScoreSettings(reference_handle=handle, **settings), images=images)
    return stub.ScoreImages(request, timeout=timeout)


def stream_requests(handle, images=GENERATED, **settings):
    yield scorer_pb2.StreamScoreImagesRequest(settings=scorer_pb2.ScoreSettings(reference_handle=handle, **settings))
    for item in images:
        yield scorer_pb2.StreamScoreImagesRequest(image=item)


def assert_still_serving(stub, handle):
    response = score(stub, handle, GENERATED[:1])
    assert response.summary.n_images == 1


def expect_error(code: grpc.StatusCode, match: str, call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = call(*args, **kwargs)
        if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
            list(result)
    assert info.value.code() == code, info.value.details()
    assert match.lower() in info.value.details().lower(), info.value.details()
    return info.value


# -- scoring ------------------------------------------------------------------------------------


def test_unary_scores_equal_in_process_scoring(stub, handle):
    response = score(stub, handle)

    scorer = Scorer(load_encoder("tiny-clip", dtype="float32"), load_encoder("tiny-dinov2", dtype="float32"))
    reference = Reference("tiny", tuple(decode_image(i.data, i.name) for i in REFERENCE), Imagery.DYNAMIC)
    expected = scorer.score(reference, [decode_image(i.data, i.name) for i in GENERATED], ScoreSettings(), BATCH_SIZE)

    assert [s.name for s in response.images] == [i.name for i in GENERATED]
    for got, want in zip(response.images, expected.images):
        assert got.index == want.index
        assert got.recognition_similarity == pytest.approx(want.recognition_similarity, abs=1e-6)
        assert got.recognized == want.recognized
        assert got.vr == pytest.approx(want.vr) and got.vi == pytest.approx(want.vi)
        assert (got.grid_rows, got.grid_cols) == (4, 4)
        assert list(got.reuse_map) == [bool(v) for row in want.reuse_map for v in row]
        assert got.crop_similarity_max == pytest.approx(want.crop_similarity_max, abs=1e-6)
        assert got.crop_similarity_mean == pytest.approx(want.crop_similarity_mean, abs=1e-6)
        assert got.crop_similarity_p90 == pytest.approx(want.crop_similarity_p90, abs=1e-6)
    s, w = response.summary, expected.summary
    assert s.n_images == w.n_images == len(GENERATED)
    assert s.n_references_kept == w.n_references_kept
    for field in ("cra", "vr", "vi", "crt", "crt_recognized_images", "crt_all_images",
                  "recognition_threshold", "reuse_threshold"):
        assert getattr(s, field) == pytest.approx(getattr(w, field), abs=1e-6), field
    assert s.imagery == common_pb2.IMAGERY_DYNAMIC
    assert s.crt_variant == common_pb2.CRT_VARIANT_RECOGNIZED_IMAGES
    assert (s.recognition_encoder, s.realization_encoder) == ("tiny-clip", "tiny-dinov2")


def test_settings_reach_the_scorer(stub, handle):
    response = score(stub, handle, recognition_threshold=0.25, reuse_threshold=0.5,
                     crt_variant=common_pb2.CRT_VARIANT_ALL_IMAGES, imagery=common_pb2.IMAGERY_STATIC)
    s = response.summary
    assert (s.recognition_threshold, s.reuse_threshold) == (0.25, 0.5)
    assert s.crt_variant == common_pb2.CRT_VARIANT_ALL_IMAGES and s.crt == s.crt_all_images
    assert s.imagery == common_pb2.IMAGERY_STATIC and s.n_references_kept == 1


def test_stream_returns_one_result_per_image_then_the_summary_equal_to_unary(stub, handle):
    unary = score(stub, handle)
    responses = list(stub.StreamScoreImages(stream_requests(handle), timeout=CALL_TIMEOUT))

    kinds = [r.WhichOneof("item") for r in responses]
    assert kinds == ["image"] * len(GENERATED) + ["summary"]
    assert [r.image for r in responses[:-1]] == list(unary.images)
    assert responses[-1].summary == unary.summary


def test_stream_answers_each_batch_before_the_stream_ends(stub, handle):
    first_result = threading.Event()

    def requests():
        yield from stream_requests(handle, GENERATED[:BATCH_SIZE])
        # The client holds the rest back until the first batch's results arrive.
        assert first_result.wait(CALL_TIMEOUT), "no result before the stream ended"
        for item in GENERATED[BATCH_SIZE:]:
            yield scorer_pb2.StreamScoreImagesRequest(image=item)

    kinds = []
    for response in stub.StreamScoreImages(requests(), timeout=CALL_TIMEOUT):
        kinds.append(response.WhichOneof("item"))
        first_result.set()
    assert kinds == ["image"] * len(GENERATED) + ["summary"]


# -- references ---------------------------------------------------------------------------------


def test_registering_the_same_images_again_returns_the_same_handle(stub, handle):
    again = register(stub)
    assert again.handle == handle
    assert (again.reference_id, again.n_images) == ("tiny", 2)
    assert list(again.kept_images) == ["ref1.png", "ref2.png"]
    assert again.imagery == common_pb2.IMAGERY_DYNAMIC
    static = register(stub, imagery=common_pb2.IMAGERY_STATIC)
    assert static.handle != handle and list(static.kept_images) == ["ref1.png"]
    other = register(stub, images=REFERENCE[::-1])
    assert other.handle not in (handle, static.handle)


def test_register_by_reference_id_from_the_catalog(stub, handle):
    by_slug = stub.RegisterReference(scorer_pb2.RegisterReferenceRequest(reference_id="tiny_work"), timeout=CALL_TIMEOUT)
    by_qid = stub.RegisterReference(scorer_pb2.RegisterReferenceRequest(reference_id="Q424242"), timeout=CALL_TIMEOUT)
    assert by_slug.handle == by_qid.handle == handle  # same images and imagery as the upload
    assert by_slug.imagery == common_pb2.IMAGERY_DYNAMIC  # the catalog's
    assert by_slug.n_images == 2
    as_static = stub.RegisterReference(scorer_pb2.RegisterReferenceRequest(
        reference_id="tiny_work", imagery=common_pb2.IMAGERY_STATIC), timeout=CALL_TIMEOUT)
    assert as_static.imagery == common_pb2.IMAGERY_STATIC and as_static.handle != handle
    assert score(stub, by_slug.handle).summary.n_images == len(GENERATED)


def test_unknown_reference_id_is_not_found(stub, handle):
    expect_error(grpc.StatusCode.NOT_FOUND, "no reference 'Q0'", stub.RegisterReference,
                 scorer_pb2.RegisterReferenceRequest(reference_id="Q0"), timeout=CALL_TIMEOUT)
    assert_still_serving(stub, handle)


def test_reference_id_without_a_catalog_is_not_found():
    server, port, _ = create_scorer_server(recognition_encoder="tiny-clip", realization_encoder="tiny-dinov2")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = scorer_pb2_grpc.ScorerServiceStub(channel)
            expect_error(grpc.StatusCode.NOT_FOUND, "no catalog", stub.RegisterReference,
                         scorer_pb2.RegisterReferenceRequest(reference_id="tiny_work"), timeout=CALL_TIMEOUT)
    finally:
        server.stop(None)


def test_register_without_images_is_invalid(stub, handle):
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, "no reference images", register, stub, images=[])
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, "no reference", stub.RegisterReference,
                 scorer_pb2.RegisterReferenceRequest(), timeout=CALL_TIMEOUT)
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, "'broken.png'", register, stub,
                 images=[image("broken.png", b"not an image")])
    assert_still_serving(stub, handle)


# -- encoders -----------------------------------------------------------------------------------


def test_list_encoders_returns_thresholds(stub):
    encoders = {e.name: e for e in stub.ListEncoders(scorer_pb2.ListEncodersRequest(), timeout=CALL_TIMEOUT).encoders}
    tiny = encoders["tiny-clip"]
    assert tiny.available and tiny.description and tiny.weights
    assert (tiny.recognition_threshold_static, tiny.recognition_threshold_dynamic, tiny.reuse_threshold) == (0.70, 0.75, 0.6)
    assert {"tiny-dinov2", "test-slow"} <= set(encoders)
    assert not encoders["test-unavailable"].available


def test_unknown_encoder_is_not_found(stub, handle):
    expect_error(grpc.StatusCode.NOT_FOUND, "no-such-encoder", score, stub, handle, recognition_encoder="no-such-encoder")
    assert_still_serving(stub, handle)


def test_encoder_without_weights_is_failed_precondition(stub, handle):
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, "test-unavailable", score, stub, handle,
                 realization_encoder="test-unavailable")
    assert_still_serving(stub, handle)


# -- bad input ------------------------------------------------------------------------------------


BAD_IMAGES = {
    "corrupt": (b"this is not an image", "could not be decoded"),
    "empty": (b"", "empty"),
    "truncated": (png(7)[:60], "'truncated.png'"),
    "huge": (png_claiming(100_000, 100_000), "limit"),
    "tiny": (png(8, (2, 3)), "too small"),
}


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_bad_image_is_invalid_argument_naming_it(stub, handle, kind):
    data, match = BAD_IMAGES[kind]
    name = f"{kind}.png"
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, match, score, stub, handle,
                         [GENERATED[0], image(name, data)])
    assert name in error.details()
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, match, stub.StreamScoreImages,
                 stream_requests(handle, [GENERATED[0], image(name, data)]), timeout=CALL_TIMEOUT)
    assert_still_serving(stub, handle)


def test_an_unnamed_bad_image_is_named_by_its_position(stub, handle):
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, "#1", score, stub, handle,
                         [GENERATED[0], common_pb2.Image(data=b"junk")])
    assert "could not be decoded" in error.details()


def test_unusual_modes_are_converted_not_refused(stub, handle):
    rgb = Image.fromarray(random_pixels(3))
    sixteen_bit = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).convert("I;16")
    palette_alpha = rgb.convert("P")
    palette_alpha.info["transparency"] = 0
    images = [
        image("cmyk.jpg", encoded(rgb.convert("CMYK"), "JPEG")),
        image("palette.png", encoded(rgb.convert("P"))),
        image("palette-alpha.png", encoded(palette_alpha)),
        image("16bit.png", encoded(sixteen_bit)),
        image("rgba.png", encoded(rgb.convert("RGBA"))),
        image("la.png", encoded(rgb.convert("LA"))),
        image("gray.tiff", encoded(rgb.convert("L"), "TIFF")),
    ]
    response = score(stub, handle, images)
    assert [s.name for s in response.images] == [i.name for i in images]
    assert response.summary.n_images == len(images)


def test_unknown_handle_is_not_found(stub, handle):
    expect_error(grpc.StatusCode.NOT_FOUND, "unknown reference handle", score, stub, "ref-0000")
    expect_error(grpc.StatusCode.NOT_FOUND, "unknown reference handle", stub.StreamScoreImages,
                 stream_requests("ref-0000"), timeout=CALL_TIMEOUT)
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, "reference_handle is empty", score, stub, "")
    assert_still_serving(stub, handle)


def test_no_images_is_invalid_argument(stub, handle):
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, "no images", score, stub, handle, [])
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, "no images", stub.StreamScoreImages,
                 stream_requests(handle, []), timeout=CALL_TIMEOUT)
    assert_still_serving(stub, handle)


@pytest.mark.parametrize("field", ["recognition_threshold", "reuse_threshold"])
@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, -0.1, float("nan")])
def test_threshold_outside_the_open_unit_interval_is_invalid(stub, handle, field, value):
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, "must lie in (0, 1)", score, stub, handle, **{field: value})
    assert_still_serving(stub, handle)


def test_stream_must_start_with_settings_and_carry_them_once(stub, handle):
    images_first = iter([scorer_pb2.StreamScoreImagesRequest(image=GENERATED[0])])
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, "first message", stub.StreamScoreImages, images_first,
                 timeout=CALL_TIMEOUT)
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, "first message", stub.StreamScoreImages, iter([]),
                 timeout=CALL_TIMEOUT)
    twice = [*stream_requests(handle, GENERATED[:1]), next(stream_requests(handle))]
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, "settings again", stub.StreamScoreImages, iter(twice),
                 timeout=CALL_TIMEOUT)
    assert_still_serving(stub, handle)


def test_message_over_the_limit_is_resource_exhausted(stub, handle):
    big = image("big.png", bytes(MAX_MESSAGE_BYTES + 1024))
    expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "", score, stub, handle, [big])
    assert_still_serving(stub, handle)


# -- deadlines and cancellation -----------------------------------------------------------------


SLOW_SETTINGS = {"recognition_encoder": "test-slow", "realization_encoder": "test-slow"}
# Every image is 1 recognition batch and 16 crop batches of the slow encoder.
SLOW_IMAGES = [image(f"slow{i}.png", png(200 + i)) for i in range(10)]
SLOW_BATCHES = 17 * len(SLOW_IMAGES)


def settled_batches() -> int:
    """The slow encoder's batch count once it has stopped growing."""
    deadline = time.monotonic() + CALL_TIMEOUT
    last = SLOW.batches
    while time.monotonic() < deadline:
        time.sleep(10 * SLOW.delay)
        now = SLOW.batches
        if now == last:
            return now
        last = now
    raise AssertionError("the slow encoder never stopped")


def wait_for_batches(count: int) -> None:
    deadline = time.monotonic() + CALL_TIMEOUT
    while SLOW.batches < count:
        assert time.monotonic() < deadline, "the slow encoder never started"
        time.sleep(SLOW.delay / 2)


def test_deadline_that_expires_stops_the_work(stub, handle):
    start = settled_batches()
    expect_error(grpc.StatusCode.DEADLINE_EXCEEDED, "", score, stub, handle, SLOW_IMAGES, timeout=1.0, **SLOW_SETTINGS)
    done = settled_batches() - start
    assert done < SLOW_BATCHES, f"{done} of {SLOW_BATCHES} batches ran: the work did not stop with the call"
    assert_still_serving(stub, handle)


def test_cancelled_unary_call_stops_the_work(stub, handle):
    start = settled_batches()
    request = scorer_pb2.ScoreImagesRequest(
        settings=scorer_pb2.ScoreSettings(reference_handle=handle, **SLOW_SETTINGS), images=SLOW_IMAGES)
    future = stub.ScoreImages.future(request, timeout=CALL_TIMEOUT)
    wait_for_batches(start + 3)
    assert future.cancel()
    done = settled_batches() - start
    assert done < SLOW_BATCHES, f"{done} of {SLOW_BATCHES} batches ran: the work did not stop with the call"
    assert_still_serving(stub, handle)


def test_cancelled_stream_stops_the_work(stub, handle):
    start = settled_batches()
    call = stub.StreamScoreImages(stream_requests(handle, SLOW_IMAGES, **SLOW_SETTINGS), timeout=CALL_TIMEOUT)
    wait_for_batches(start + 3)
    call.cancel()
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    assert info.value.code() == grpc.StatusCode.CANCELLED
    done = settled_batches() - start
    assert done < SLOW_BATCHES, f"{done} of {SLOW_BATCHES} batches ran: the work did not stop with the call"
    assert_still_serving(stub, handle)


# -- health and reflection -------------------------------------------------------------------------


def test_health_is_serving(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in (SERVICE, ""):
        response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_describes_the_service(channel):
    database = ProtoReflectionDescriptorDatabase(channel)
    assert SERVICE in database.get_services()
    descriptor = database.FindFileContainingSymbol(SERVICE)
    assert descriptor.package == "iconicity.v1"
    assert "ScorerService" in [service.name for service in descriptor.service]
