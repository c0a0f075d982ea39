"""The generator service over real gRPC on loopback, in front of a real Triton (the bundled
tritonserver, through `TritonServer`) serving the tiny pipelines: no mocks.

One Triton serves the whole module (tiny-sd and tiny-flux); the test that stops and restarts
it runs last and leaves it running.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from iconicity.v1 import generator_pb2, generator_pb2_grpc

from services.common.images import content_hash, decode_image
from services.common.server import shutdown
from services.generator.client import RetryPolicy
from services.generator.models import get_model
from services.generator.server import create_generator_server
from services.generator.service import (
    ArtifactStore,
    GenerationRequest,
    InvalidRequest,
    plan_images,
    read_provenance,
    store_root,
)

pytest.importorskip("tritonclient.grpc.aio")
pytest.importorskip("diffusers")

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "iconicity.v1.GeneratorService"
MODELS = ("tiny-sd", "tiny-flux")
MAX_IMAGES = 16
CALL_TIMEOUT = 120  # seconds; only so that a broken server fails the test instead of hanging it
# Short retries (the down-Triton test waits them out), but longer together than the channel's
# longest reconnect backoff (client.RECONNECT_BACKOFF_MS, 1 s), as the default policy is.
RETRY = RetryPolicy(attempts=4, initial_backoff_s=0.2, max_backoff_s=1.0)


# -- fixtures: one Triton and one generator per module ----------------------------------------


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    from services.generator.triton_server import TritonServer, build_model_repository

    root = tmp_path_factory.mktemp("triton")
    repository = build_model_repository([get_model(name) for name in MODELS], root / "repository",
                                        models_root=root / "models", instance_kind="KIND_CPU", device="cpu")
    with TritonServer(repository, list(MODELS), startup_timeout=300) as server:
        yield server


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="module")
def generator_server(triton, artifacts):
    server, port, servicer = create_generator_server(
        "127.0.0.1:0", triton_url=triton.grpc_url, max_images=MAX_IMAGES, max_in_flight=16, retry=RETRY,
        artifacts=artifacts.as_uri())
    server.start()
    yield port, servicer
    shutdown(server, grace=0)
    servicer.generator.close()


@pytest.fixture(scope="module")
def channel(generator_server):
    port, _ = generator_server
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel):
    return generator_pb2_grpc.GeneratorServiceStub(channel)


def generate(stub, timeout=CALL_TIMEOUT, **fields) -> list[generator_pb2.GeneratedImage]:
    """The images of one Generate call, in request order."""
    settings = fields.pop("settings", {})
    request = generator_pb2.GenerateRequest(settings=generator_pb2.GenerationSettings(**settings), **fields)
    images = [response.image for response in stub.Generate(request, timeout=timeout)]
    return sorted(images, key=lambda image: image.index)


def pixels(image: generator_pb2.GeneratedImage) -> np.ndarray:
    return decode_image(image.png, f"image {image.index}").pixels


def triton_executions(triton, model: str) -> int:
    """Requests Triton has run for `model` (succeeded or failed)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]["inference_stats"]
    finally:
        client.close()
    return sum(int(stats.get(key, {}).get("count", 0)) for key in ("success", "fail"))


# -- health, reflection, models ---------------------------------------------------------------


def test_health_answers_serving(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_describes_the_service(channel):
    database = ProtoReflectionDescriptorDatabase(channel)
    assert SERVICE in database.get_services()
    descriptor = database.FindFileContainingSymbol(SERVICE)
    assert descriptor.name == "iconicity/v1/generator.proto"


def test_list_models_gives_configurations_and_availability(stub):
    models = {model.name: model for model in stub.ListModels(generator_pb2.ListModelsRequest(), timeout=30).models}
    assert {"sd15", "sd21", "sdxl", "sd35-medium", "flux-schnell", "tiny-sd", "tiny-flux"} <= set(models)
    tiny = models["tiny-sd"]
    assert tiny.available and models["tiny-flux"].available
    assert not models["sd15"].available  # registered, not served by this Triton
    assert (tiny.default_steps, tiny.default_height, tiny.default_width) == (4, 64, 64)
    assert (tiny.min_steps, tiny.max_steps, tiny.size_multiple, tiny.min_size, tiny.max_size) == (1, 50, 8, 16, 256)
    assert tiny.scheduler == "PNDMScheduler" and tiny.pipeline == "StableDiffusionPipeline"
    assert models["sd15"].weights_id == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert not models["flux-schnell"].supports_negative_prompt


# -- generation -------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "height", "width"), [
    ("tiny-sd", 64, 64), ("tiny-sd", 32, 96), ("tiny-sd", 48, 16), ("tiny-flux", 64, 32),
])
def test_images_have_the_requested_size_and_provenance(stub, model, height, width):
    images = generate(stub, model=model, prompt="a lighthouse at dusk", n_images=2, base_seed=11,
                      settings={"height": height, "width": width, "steps": 2})
    assert [image.index for image in images] == [0, 1]
    for image, seed in zip(images, (11, 12)):
        assert pixels(image).shape == (height, width, 3)
        assert image.sha256 == content_hash(image.png)
        p = image.provenance
        assert (p.model, p.seed, p.steps, p.height, p.width, p.prompt) == (model, seed, 2, height, width,
                                                                           "a lighthouse at dusk")
        assert p.dtype == "float32" and p.weights_revision == "tiny-v1" and p.scheduler
        assert p.guidance_scale == pytest.approx(get_model(model).guidance)
        # The PNG carries what made it, too.
        assert read_provenance(image.png)["seed"] == seed
        assert image.timing.batch_size >= 1 and image.timing.model_ms > 0 and image.timing.request_ms > 0


def test_unset_settings_take_the_model_defaults(stub):
    (image,) = generate(stub, model="tiny-sd", prompt="a red apple")
    p = image.provenance
    assert (p.seed, p.steps, p.guidance_scale, p.height, p.width, p.negative_prompt) == (0, 4, 7.5, 64, 64, "")


def test_same_request_gives_the_same_bytes_and_seeds_differ(stub):
    request = dict(model="tiny-sd", prompt="a cat on a chair", seeds=[3, 5],
                   settings={"negative_prompt": "blurry", "guidance_scale": 5.0})
    first, second = generate(stub, **request), generate(stub, **request)
    assert [i.png for i in first] == [i.png for i in second]
    assert first[0].provenance.negative_prompt == "blurry"
    assert first[0].sha256 != first[1].sha256
    assert not np.array_equal(pixels(first[0]), pixels(first[1]))
    # Explicit seeds and a base seed name the same images (alone in their batch both times:
    # in another batch a pixel may move by one level, see the batched test below).
    settings = {"negative_prompt": "blurry", "guidance_scale": 5.0}
    (by_base,) = generate(stub, model="tiny-sd", prompt="a cat on a chair", base_seed=5, settings=settings)
    (by_seed,) = generate(stub, model="tiny-sd", prompt="a cat on a chair", seeds=[5], settings=settings)
    assert by_base.png == by_seed.png and by_base.provenance == first[1].provenance
    assert np.abs(pixels(by_base).astype(int) - pixels(first[1]).astype(int)).max() <= 1


def test_batched_call_gives_the_images_of_one_at_a_time(stub):
    """n = 8 in flight at once (Triton batches them) against the same 8 requests one by one.
    diffusers draws each image's noise from its own seeded generator, so the images are the
    same; a batch sums the matrix products in another order, so a uint8 pixel may differ by
    one level (services/generator/pipelines.py)."""
    settings = {"steps": 3}
    batched = generate(stub, model="tiny-sd", prompt="a harbour with boats", n_images=8, base_seed=100,
                       settings=settings)
    assert max(image.timing.batch_size for image in batched) > 1, "Triton did not batch the 8 requests"
    alone = [generate(stub, model="tiny-sd", prompt="a harbour with boats", seeds=[100 + i], settings=settings)[0]
             for i in range(8)]
    assert all(image.timing.batch_size == 1 for image in alone)
    differing = 0
    for b, a in zip(batched, alone):
        assert b.provenance == a.provenance
        difference = np.abs(pixels(b).astype(int) - pixels(a).astype(int))
        assert difference.max() <= 1
        differing += int((difference > 0).sum())
    assert differing <= 1e-3 * 8 * 64 * 64 * 3


def test_uri_delivery_writes_the_artifact_store(stub, artifacts):
    request = dict(model="tiny-sd", prompt="a bridge in fog", n_images=2, base_seed=1)
    inline = generate(stub, **request)
    stored = generate(stub, delivery=generator_pb2.IMAGE_DELIVERY_URI, **request)
    store = ArtifactStore(artifacts)
    for a, b in zip(inline, stored):
        assert store.read(b.uri) == a.png
        assert b.WhichOneof("content") == "uri" and not b.png
        path = store_root(b.uri)
        assert path == artifacts / b.sha256[:2] / f"{b.sha256}.png"
        assert path.read_bytes() == a.png and b.sha256 == a.sha256
        assert json.loads(path.with_suffix(".json").read_text())["provenance"]["seed"] == a.provenance.seed


# -- bad input --------------------------------------------------------------------------------

BAD_REQUESTS = [
    (dict(model="no-such-model", prompt="x"), grpc.StatusCode.NOT_FOUND, "unknown model 'no-such-model'; known models:"),
    (dict(model="sd15", prompt="x"), grpc.StatusCode.NOT_FOUND, "does not serve model 'sd15'"),
    (dict(model="", prompt="x"), grpc.StatusCode.INVALID_ARGUMENT, "model is empty"),
    (dict(model="tiny-sd", prompt=""), grpc.StatusCode.INVALID_ARGUMENT, "prompt is empty"),
    (dict(model="tiny-sd", prompt="   "), grpc.StatusCode.INVALID_ARGUMENT, "prompt is empty"),
    (dict(model="tiny-sd", prompt="x", settings={"steps": 0}), grpc.StatusCode.INVALID_ARGUMENT, r"steps must be in \[1, 50\], got 0"),
    (dict(model="tiny-sd", prompt="x", settings={"steps": 51}), grpc.StatusCode.INVALID_ARGUMENT, r"steps must be in \[1, 50\], got 51"),
    (dict(model="tiny-sd", prompt="x", settings={"guidance_scale": 31}), grpc.StatusCode.INVALID_ARGUMENT, r"guidance must be in \[0, 30\], got 31"),
    (dict(model="tiny-sd", prompt="x", settings={"guidance_scale": -1}), grpc.StatusCode.INVALID_ARGUMENT, r"guidance must be in \[0, 30\]"),
    (dict(model="tiny-flux", prompt="x", settings={"guidance_scale": 2}), grpc.StatusCode.INVALID_ARGUMENT, r"guidance must be in \[0, 0\]"),
    (dict(model="tiny-sd", prompt="x", settings={"height": 60}), grpc.StatusCode.INVALID_ARGUMENT, r"height must be a multiple of 8 in \[16, 256\], got 60"),
    (dict(model="tiny-sd", prompt="x", settings={"width": 512}), grpc.StatusCode.INVALID_ARGUMENT, r"width must be a multiple of 8 in \[16, 256\], got 512"),
    (dict(model="tiny-sd", prompt="x", settings={"height": 0}), grpc.StatusCode.INVALID_ARGUMENT, r"height must be"),
    (dict(model="tiny-sd", prompt="x", n_images=MAX_IMAGES + 1), grpc.StatusCode.INVALID_ARGUMENT, rf"n_images must be in \[1, {MAX_IMAGES}\]"),
    (dict(model="tiny-sd", prompt="x", n_images=-1), grpc.StatusCode.INVALID_ARGUMENT, r"n_images must be in \[1, "),
    (dict(model="tiny-sd", prompt="x", seeds=list(range(MAX_IMAGES + 1))), grpc.StatusCode.INVALID_ARGUMENT, r"n_images must be in"),
    (dict(model="tiny-sd", prompt="x", n_images=3, seeds=[1, 2]), grpc.StatusCode.INVALID_ARGUMENT, "n_images is 3 but 2 seeds"),
    (dict(model="tiny-sd", prompt="x", seeds=[-1]), grpc.StatusCode.INVALID_ARGUMENT, r"seeds must be in \[0, 2\^63 - 1\]"),
    (dict(model="tiny-sd", prompt="x", base_seed=2**63 - 1, n_images=2), grpc.StatusCode.INVALID_ARGUMENT, "base_seed must be in"),
    (dict(model="tiny-flux", prompt="x", settings={"negative_prompt": "blur"}), grpc.StatusCode.INVALID_ARGUMENT, "takes no negative prompt"),
    (dict(model="tiny-sd", prompt="x", delivery=7), grpc.StatusCode.INVALID_ARGUMENT, "not a known ImageDelivery"),
]


@pytest.mark.parametrize(("fields", "code", "message"), BAD_REQUESTS, ids=[m for _, _, m in BAD_REQUESTS])
def test_bad_requests_get_their_status_and_the_allowed_range(stub, fields, code, message):
    with pytest.raises(grpc.RpcError) as raised:
        generate(stub, **fields)
    assert raised.value.code() == code, raised.value.details()
    assert re.search(message, raised.value.details()), raised.value.details()


def test_uri_delivery_without_a_store_is_a_failed_precondition(triton):
    server, port, servicer = create_generator_server("127.0.0.1:0", triton_url=triton.grpc_url)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.RpcError) as raised:
                generate(generator_pb2_grpc.GeneratorServiceStub(channel), model="tiny-sd", prompt="x",
                         delivery=generator_pb2.IMAGE_DELIVERY_URI)
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "--artifacts" in raised.value.details()
    finally:
        shutdown(server, grace=0)
        servicer.generator.close()


def test_requests_for_a_model_still_loading_wait_for_it_or_say_why_it_did_not_load(triton):
    """`loading` (what `TritonServer.load_in_order` returns): a request waits for its model's
    load, within its deadline, and a model that could not load is NOT_FOUND with the cause;
    a caller that gives up does not call the load off for the others."""
    from concurrent.futures import Future

    from services.generator.triton_server import TritonStartError

    loading = {name: Future() for name in ("tiny-sd", "tiny-flux", "slow")}
    for future in loading.values():
        future.set_running_or_notify_cancel()
    slow = {**get_model("tiny-sd").to_dict(), "name": "slow"}
    from services.generator.models import ModelConfig

    models = {"tiny-sd": get_model("tiny-sd"), "tiny-flux": get_model("tiny-flux"), "slow": ModelConfig.from_dict(slow)}
    server, port, servicer = create_generator_server("127.0.0.1:0", triton_url=triton.grpc_url, models=models,
                                                     loading=loading)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = generator_pb2_grpc.GeneratorServiceStub(channel)
            waiting: dict[str, object] = {}
            caller = threading.Thread(target=lambda: waiting.update(images=generate(stub, model="tiny-sd", prompt="x",
                                                                                     n_images=2)))
            caller.start()
            time.sleep(1.0)
            assert caller.is_alive() and "images" not in waiting  # held until the load is done
            loading["tiny-sd"].set_result("tiny-sd")
            caller.join(CALL_TIMEOUT)
            assert len(waiting["images"]) == 2

            loading["tiny-flux"].set_exception(TritonStartError(
                "model 'tiny-flux' did not load: out of memory; log tail:\nI1129 many lines"))
            with pytest.raises(grpc.RpcError) as failed:
                generate(stub, model="tiny-flux", prompt="x")
            assert failed.value.code() == grpc.StatusCode.NOT_FOUND
            assert failed.value.details() == ("Triton could not load model 'tiny-flux': "
                                              "model 'tiny-flux' did not load: out of memory")

            with pytest.raises(grpc.RpcError) as late:
                generate(stub, timeout=1.0, model="slow", prompt="x")
            assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert not loading["slow"].done()  # still loading for whoever asks next
    finally:
        shutdown(server, grace=0)
        servicer.generator.close()


def test_plan_checks_without_triton():
    config = get_model("tiny-sd")
    with pytest.raises(InvalidRequest, match=r"give either seeds or base_seed"):
        plan_images(GenerationRequest("tiny-sd", "x", seeds=(1,), base_seed=1), config)
    plans = plan_images(GenerationRequest("tiny-sd", "x", seeds=(9, 4)), config)
    assert [p.seed for p in plans] == [9, 4]


def test_artifact_store_takes_folders_and_file_uris_only(tmp_path):
    assert ArtifactStore(tmp_path.as_uri()).root == ArtifactStore(tmp_path).root == tmp_path.resolve()
    with pytest.raises(ValueError, match="only folders and file:// URIs"):
        ArtifactStore("s3://bucket/images")


# -- cancellation and deadlines ---------------------------------------------------------------


@pytest.fixture
def slow_generator(triton):
    """A generator that keeps only two Triton requests in flight, so that most of a large
    call is still waiting on our side when it is cancelled."""
    server, port, servicer = create_generator_server("127.0.0.1:0", triton_url=triton.grpc_url, max_images=64,
                                                     max_in_flight=2, retry=RETRY)
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield generator_pb2_grpc.GeneratorServiceStub(channel), servicer.generator
    shutdown(server, grace=0)
    servicer.generator.close()


def wait_for(condition, timeout: float = 15.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_cancel_drops_the_work_in_flight(slow_generator, triton):
    stub, generator = slow_generator
    before = triton_executions(triton, "tiny-sd")
    request = generator_pb2.GenerateRequest(model="tiny-sd", prompt="a slow field of wheat", n_images=64,
                                            settings=generator_pb2.GenerationSettings(steps=20))
    call = stub.Generate(request, timeout=CALL_TIMEOUT)
    first = next(call)
    assert first.image.png
    call.cancel()
    assert wait_for(lambda: generator.in_flight == 0), "Triton requests still in flight after the cancel"
    sent = generator.client.sent
    time.sleep(1.0)
    assert generator.client.sent == sent, "requests kept being sent after the cancel"
    assert sent < 16, f"{sent} of 64 requests were sent"
    ran = triton_executions(triton, "tiny-sd") - before
    assert ran <= sent < 64
    with pytest.raises(grpc.RpcError) as raised:
        list(call)
    assert raised.value.code() == grpc.StatusCode.CANCELLED


def test_deadline_ends_the_call_and_drops_its_work(slow_generator):
    stub, generator = slow_generator
    with pytest.raises(grpc.RpcError) as raised:
        generate(stub, timeout=1.0, model="tiny-sd", prompt="a long night", n_images=64,
                 settings={"steps": 20})
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_for(lambda: generator.in_flight == 0)
    sent = generator.client.sent
    time.sleep(1.0)
    assert generator.client.sent == sent


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_generate_with_a_running_generator_writes_pngs_and_sidecars(generator_server, tmp_path, capsys):
    from services.generator.cli import add_generate_arguments, run_generate

    port, _ = generator_server
    out = tmp_path / "out"
    args = add_generate_arguments(argparse.ArgumentParser()).parse_args(
        ["--model", "tiny-sd", "--prompt", "a windmill", "-n", "3", "--seed", "40", "--steps", "2",
         "--height", "32", "--width", "48", "--out", str(out), "--generator", f"127.0.0.1:{port}", "--quiet"])
    assert run_generate(args) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3
    seeds = set()
    for png in pngs:
        sidecar = json.loads(png.with_suffix(".json").read_text())
        assert sidecar["file"] == png.name and sidecar["sha256"] == content_hash(png.read_bytes())
        assert decode_image(png.read_bytes()).pixels.shape == (32, 48, 3)
        seeds.add(sidecar["provenance"]["seed"])
    assert seeds == {40, 41, 42}
    assert "wrote 3 images of tiny-sd" in capsys.readouterr().out


def test_cli_errors_are_one_line(generator_server, tmp_path):
    from services.generator.cli import add_generate_arguments, run_generate

    port, _ = generator_server
    parser = add_generate_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--model", "tiny-sd", "--prompt", "x", "--steps", "99", "--out", str(tmp_path),
                              "--generator", f"127.0.0.1:{port}", "--quiet"])
    with pytest.raises(Exception, match=r"^generator at 127\.0\.0\.1:\d+: INVALID_ARGUMENT: tiny-sd: steps must be in \[1, 50\], got 99$"):
        run_generate(args)
    # Without --generator, a bad request fails before any Triton is started.
    args = parser.parse_args(["--model", "tiny-sd", "--prompt", "", "--out", str(tmp_path), "--quiet"])
    started = time.monotonic()
    with pytest.raises(Exception, match="prompt is empty"):
        run_generate(args)
    assert time.monotonic() - started < 5


# -- Triton down and back (last: it restarts the module's Triton) ------------------------------


def test_triton_down_is_unavailable_and_the_generator_recovers_by_itself(stub, triton):
    (before,) = generate(stub, model="tiny-sd", prompt="a castle", seeds=[8])
    # A call in flight while Triton stops ends UNAVAILABLE (or, with luck, succeeds).
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(_try_generate(stub)))
    thread.start()
    triton.stop()
    thread.join(CALL_TIMEOUT)
    assert outcome and (outcome[0] is None or outcome[0].code() == grpc.StatusCode.UNAVAILABLE)
    try:
        with pytest.raises(grpc.RpcError) as raised:
            generate(stub, model="tiny-sd", prompt="a castle", seeds=[8])
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert f"Triton at {triton.grpc_url} is unavailable (down or restarting)" in raised.value.details()
        # Listing the models still works, and says none is available.
        models = stub.ListModels(generator_pb2.ListModelsRequest(), timeout=30).models
        assert not any(model.available for model in models)
    finally:
        triton.start()
    # The same generator (no restart) serves again, the same bytes as before.
    (after,) = generate(stub, model="tiny-sd", prompt="a castle", seeds=[8])
    assert after.png == before.png


def _try_generate(stub) -> grpc.RpcError | None:
    try:
        generate(stub, model="tiny-sd", prompt="a storm", n_images=8, settings={"steps": 10})
    except grpc.RpcError as error:
        return error
    return None


# -- the GPU benchmark says why it cannot run -------------------------------------------------


def test_gpu_benchmark_without_a_gpu_exits_with_one_clear_line():
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the benchmark would run")
    result = subprocess.run([sys.executable, "benchmarks/generator_gpu.py", "--n-images", "2"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs a CUDA GPU" in lines[0] and "--device cpu" in lines[0]
