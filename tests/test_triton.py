"""Triton serving the tiny diffusers pipelines, for real: nvidia-pytriton's tritonserver on
loopback with the repository `build_model_repository` writes, spoken to with
`tritonclient.grpc` directly. One server per module (starting one costs ~20-30 s on two busy
cores: each model's Python backend imports torch and diffusers)."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from services.generator.models import REGISTRY, ModelConfig, get_model, resolve_models, validate_request
from services.generator.pipelines import GenerationRequest, plan_groups, to_uint8
from services.generator.tiny import ensure_tiny_pipeline

grpcclient = pytest.importorskip("tritonclient.grpc")
pytest.importorskip("pytriton", reason="nvidia-pytriton ships the tritonserver binary")
pytest.importorskip("diffusers")

from tritonclient.utils import InferenceServerException  # noqa: E402

from services.generator.triton_server import (  # noqa: E402
    TritonServer,
    TritonStartError,
    build_model_repository,
    cpu_threads_per_instance,
    model_config_pbtxt,
)

MODELS = ("tiny-sd", "tiny-flux")
CALL_TIMEOUT = 120  # seconds; only so that a broken server fails the test instead of hanging it
# Batched images equal one-at-a-time ones up to float rounding (the kernels sum in another
# order for another batch size): at most this many uint8 levels, in few pixels.
MAX_LEVEL_DIFF = 1
MAX_DIFFERING_FRACTION = 1e-3


def settings(model: str, **overrides) -> dict:
    config = get_model(model)
    return {"prompt": "a painting of a lighthouse", "negative_prompt": None, "seed": 0, "steps": 3,
            "guidance": config.guidance, "height": 64, "width": 64, **overrides}


def inputs(rows: list[dict]) -> list:
    """Triton inputs of shape [len(rows), 1] from request dicts (see `settings`)."""
    def make(name, values, dtype, triton_type):
        tensor = grpcclient.InferInput(name, [len(rows), 1], triton_type)
        tensor.set_data_from_numpy(np.array(values, dtype=dtype).reshape(len(rows), 1))
        return tensor

    out = [
        make("PROMPT", [r["prompt"].encode() for r in rows], object, "BYTES"),
        make("SEED", [r["seed"] for r in rows], np.int64, "INT64"),
        make("STEPS", [r["steps"] for r in rows], np.int32, "INT32"),
        make("GUIDANCE_SCALE", [r["guidance"] for r in rows], np.float32, "FP32"),
        make("HEIGHT", [r["height"] for r in rows], np.int32, "INT32"),
        make("WIDTH", [r["width"] for r in rows], np.int32, "INT32"),
    ]
    if any(r["negative_prompt"] is not None for r in rows):
        out.append(make("NEGATIVE_PROMPT", [(r["negative_prompt"] or "").encode() for r in rows], object, "BYTES"))
    return out


def infer(client, model: str, rows: list[dict]) -> dict[str, np.ndarray]:
    result = client.infer(model, inputs(rows), client_timeout=CALL_TIMEOUT)
    return {name: result.as_numpy(name) for name in ("IMAGE", "ELAPSED_MS", "BATCH_SIZE")}


def concurrently(url: str, model: str, requests: list[dict]) -> list[dict | Exception]:
    """Send every request at once, each on its own client, released together."""
    barrier = threading.Barrier(len(requests))

    def send(request):
        client = grpcclient.InferenceServerClient(url)
        try:
            barrier.wait(timeout=CALL_TIMEOUT)
            return infer(client, model, [request])
        except InferenceServerException as error:
            return error
        finally:
            client.close()

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


def assert_close_images(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.max() <= MAX_LEVEL_DIFF, f"max level difference {diff.max()}"
    assert (diff > 0).mean() <= MAX_DIFFERING_FRACTION, f"{(diff > 0).mean():.2%} of pixels differ"


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def server(tmp_path_factory, models_root):
    repository = build_model_repository(
        [get_model(m) for m in MODELS], tmp_path_factory.mktemp("repository"), models_root=models_root,
        # Generous, so that concurrent requests on busy cores still meet in one batch.
        max_queue_delay_microseconds=100_000, instance_kind="KIND_CPU",
    )
    with TritonServer(repository, env={"HF_HUB_OFFLINE": "1"}, startup_timeout=300) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()


# -- registry and planning (no server) ------------------------------------------------------


def test_registry_defaults_are_valid_requests():
    assert {"sd15", "sd21", "sdxl", "sd35-medium", "flux-schnell", "tiny-sd", "tiny-flux"} <= set(REGISTRY)
    for config in REGISTRY.values():
        validate_request(config, config.steps, config.guidance, config.height, config.width)
        assert ModelConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(("changes", "message"), [
    ({"steps": 0}, r"steps must be in \[1, 50\], got 0"),
    ({"steps": 51}, r"steps must be in \[1, 50\], got 51"),
    ({"guidance": -1.0}, r"guidance must be in \[0, 30\], got -1"),
    ({"guidance": float("nan")}, r"guidance must be in \[0, 30\], got nan"),
    ({"height": 60}, r"height must be a multiple of 8 in \[16, 256\], got 60"),
    ({"width": 512}, r"width must be a multiple of 8 in \[16, 256\], got 512"),
])
def test_validate_request_names_the_allowed_range(changes, message):
    config = get_model("tiny-sd")
    request = {"steps": 4, "guidance": 7.5, "height": 64, "width": 64, **changes}
    with pytest.raises(ValueError, match=message):
        validate_request(config, **request)


@pytest.mark.parametrize(("data", "message"), [
    ({"name": "x", "pipeline": "a/b", "stepz": 3}, r"unknown key 'stepz'; allowed: call_kwargs, .*steps, steps_range"),
    ({"name": "x"}, r"missing pipeline"),
    ({"name": "x", "pipeline": "a/b", "dtype": "float64"}, r"dtype must be one of float32, float16, bfloat16"),
    ({"name": "x", "pipeline": "a/b", "steps": 500}, r"steps must be in \[1, 150\], got 500"),
    ({"name": "x", "pipeline": "a/b", "steps_range": [5, 2]}, r"steps_range must be \[min, max\]"),
])
def test_model_config_from_dict_rejects(data, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_dict(data)


def test_resolve_models_extends_the_registry():
    fast, mine = resolve_models([{"name": "sd15", "steps": 20}, {"name": "mine", "pipeline": "/weights/mine"}])
    assert fast.steps == 20 and fast.pipeline == get_model("sd15").pipeline
    assert mine.pipeline == "/weights/mine" and mine.steps == 50
    with pytest.raises(KeyError, match="unknown model 'sd16'"):
        resolve_models(["sd16"])
    with pytest.raises(ValueError, match="more than once: sd15"):
        resolve_models(["sd15", "sd15"])


def test_plan_groups_splits_on_settings_and_negative_prompt_presence():
    def r(seed, steps=4, guidance=7.5, size=64, negative=""):
        return GenerationRequest("p", seed, steps, guidance, size, size, negative)

    requests = [r(0), r(1, steps=5), r(2, negative="ugly"), r(3), r(4, guidance=5.0), r(5, size=32), r(6, negative="x")]
    assert plan_groups(requests) == [[0, 3], [1], [2, 6], [4], [5]]


def test_to_uint8_matches_diffusers():
    from diffusers.utils import numpy_to_pil

    images = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    expected = np.stack([np.asarray(p) for p in numpy_to_pil(images)])
    np.testing.assert_array_equal(to_uint8(images), expected)


def test_the_instance_kind_is_torchs_answer_without_importing_torch_where_there_is_no_gpu():
    """`auto` asks whether CUDA is available before Triton is launched; where no GPU device
    node exists the answer comes without importing torch (seconds on 2 cores)."""
    import subprocess
    import sys

    code = ("import sys; from services.generator.triton_server import _cuda_available; answer = _cuda_available(); "
            "imported = 'torch' in sys.modules; import torch; print(answer, torch.cuda.is_available(), imported)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parents[1])).stdout.split()
    answer, torch_says, imported = out
    assert answer == torch_says
    if torch_says == "False" and not Path("/dev/nvidia0").exists():
        assert imported == "False"


def test_the_bundled_server_is_found_without_importing_pytriton():
    """Importing pytriton loads its client (tritonclient's HTTP client, aiohttp: most of a
    second) that nothing here uses; its folder is all `TritonServer` needs."""
    import subprocess
    import sys

    code = ("import sys; from services.generator.triton_server import _pytriton_dist; folder = _pytriton_dist(); "
            "imported = 'pytriton' in sys.modules; import pytriton, pathlib; "
            "print(imported, folder == pathlib.Path(pytriton.__file__).resolve().parent, (folder / 'tritonserver').is_dir())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parents[1])).stdout.split()
    assert out == ["False", "True", "True"]


def test_config_pbtxt_escapes_and_makes_inputs_per_request():
    config = ModelConfig.from_dict({"name": "odd", "pipeline": 'C:\\weights\\"quoted"', "description": "two\nlines"})
    text = model_config_pbtxt(config, config.pipeline, instance_kind="KIND_CPU", max_queue_delay_microseconds=1234)
    assert 'string_value: "C:\\\\weights\\\\\\"quoted\\""' in text
    assert "max_queue_delay_microseconds: 1234" in text and "max_batch_size: 16" in text
    assert "kind: KIND_CPU" in text
    for name in ("PROMPT", "NEGATIVE_PROMPT", "SEED", "STEPS", "GUIDANCE_SCALE", "HEIGHT", "WIDTH"):
        assert f'name: "{name}"' in text
    with pytest.raises(ValueError, match="instance_kind"):
        model_config_pbtxt(config, config.pipeline, instance_kind="KIND_TPU")


def _cpu_threads_parameter(repository: Path, model: str) -> str:
    text = (repository / model / "config.pbtxt").read_text()
    return re.search(r'key: "cpu_threads", value: \{ string_value: "(\d+)" \}', text).group(1)


def test_cpu_instances_share_the_usable_cpus_and_gpu_instances_keep_torchs_default(tmp_path, monkeypatch):
    import services.generator.triton_server as triton_server

    monkeypatch.setattr(triton_server, "usable_cpus", lambda: 8)
    models = [ModelConfig.from_dict({"name": name, "pipeline": str(tmp_path / name)}) for name in ("a", "b", "c")]
    cpu = build_model_repository(models, tmp_path / "cpu", instance_kind="KIND_CPU")
    assert [_cpu_threads_parameter(cpu, m.name) for m in models] == ["2", "2", "2"]  # 8 // 3
    two_each = build_model_repository(models[:2], tmp_path / "two", instance_kind="KIND_CPU", instance_count=2)
    assert _cpu_threads_parameter(two_each, "a") == "2"  # 8 // (2 models x 2 instances)
    gpu = build_model_repository(models, tmp_path / "gpu", instance_kind="KIND_GPU")
    assert _cpu_threads_parameter(gpu, "a") == "0"
    fixed = build_model_repository(models, tmp_path / "fixed", instance_kind="KIND_CPU", cpu_threads=3)
    assert _cpu_threads_parameter(fixed, "c") == "3"
    assert cpu_threads_per_instance(16, cpus=2) == 1
    with pytest.raises(ValueError, match="cpu_threads must be >= 0"):
        build_model_repository(models, tmp_path / "bad", instance_kind="KIND_CPU", cpu_threads=-1)


def test_tiny_pipeline_is_built_once(models_root):
    path = ensure_tiny_pipeline("tiny-flux", models_root)
    stamp = (path / "model_index.json").stat().st_mtime_ns
    assert ensure_tiny_pipeline("tiny-flux", models_root) == path
    assert (path / "model_index.json").stat().st_mtime_ns == stamp
    assert not [p for p in models_root.iterdir() if p.name.startswith(".")], "temporary folders left behind"
    # A folder of another builder version is rebuilt in place.
    (path / "iconicity-tiny.json").write_text('{"version": 0}')
    assert ensure_tiny_pipeline("tiny-flux", models_root) == path
    assert (path / "model_index.json").stat().st_mtime_ns != stamp
    assert '"version": 0' not in (path / "iconicity-tiny.json").read_text()
    assert not [p for p in models_root.iterdir() if p.name.startswith(".")], "temporary folders left behind"
    with pytest.raises(ValueError, match="unknown tiny pipeline 'tiny-x'; known: tiny-flux, tiny-sd"):
        ensure_tiny_pipeline("tiny-x", models_root)


# -- the server -----------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "height", "width"), [
    ("tiny-sd", 64, 64), ("tiny-sd", 48, 80), ("tiny-flux", 64, 64), ("tiny-flux", 32, 48),
])
def test_image_has_requested_size_and_dtype(client, model, height, width):
    out = infer(client, model, [settings(model, height=height, width=width)])
    assert out["IMAGE"].shape == (1, height, width, 3)
    assert out["IMAGE"].dtype == np.uint8
    assert out["IMAGE"].std() > 0, "a blank image"
    assert out["BATCH_SIZE"].tolist() == [[1]]
    assert out["ELAPSED_MS"].dtype == np.float32 and out["ELAPSED_MS"][0, 0] > 0


@pytest.mark.parametrize("model", MODELS)
def test_same_seed_same_bytes_other_seed_other_image(client, model):
    first = infer(client, model, [settings(model, seed=7)])["IMAGE"]
    again = infer(client, model, [settings(model, seed=7)])["IMAGE"]
    other = infer(client, model, [settings(model, seed=8)])["IMAGE"]
    assert first.tobytes() == again.tobytes()
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 1


def test_settings_and_negative_prompt_change_the_image(client):
    base = infer(client, "tiny-sd", [settings("tiny-sd")])["IMAGE"]
    for change in ({"steps": 4}, {"guidance": 3.0}, {"negative_prompt": "blurry"}, {"prompt": "a cat"}):
        changed = infer(client, "tiny-sd", [settings("tiny-sd", **change)])["IMAGE"]
        assert changed.tobytes() != base.tobytes(), change
    # An empty negative prompt is none.
    empty = infer(client, "tiny-sd", [settings("tiny-sd", negative_prompt="")])["IMAGE"]
    assert empty.tobytes() == base.tobytes()


@pytest.mark.parametrize("model", MODELS)
def test_concurrent_requests_are_batched_and_equal_one_at_a_time(server, client, model):
    requests = [settings(model, seed=100 + i) for i in range(6)]
    batched = concurrently(server.grpc_url, model, requests)
    sizes = [int(out["BATCH_SIZE"][0, 0]) for out in batched]
    assert max(sizes) > 1, f"no batching: batch sizes {sizes}"
    assert sum(sizes) >= len(requests)  # each call's size counts every image it made
    for request, together in zip(requests, batched):
        alone = infer(client, model, [request])
        assert alone["BATCH_SIZE"][0, 0] == 1
        assert_close_images(together["IMAGE"], alone["IMAGE"])


def test_one_request_of_several_rows(client):
    rows = [settings("tiny-flux", seed=s) for s in (11, 12, 13)]
    out = infer(client, "tiny-flux", rows)
    assert out["IMAGE"].shape == (3, 64, 64, 3)
    assert out["BATCH_SIZE"].ravel().tolist() == [3, 3, 3]
    for row, image in zip(rows, out["IMAGE"]):
        assert_close_images(image[None], infer(client, "tiny-flux", [row])["IMAGE"])
    mixed = [settings("tiny-flux", seed=1), settings("tiny-flux", seed=2, height=32)]
    with pytest.raises(InferenceServerException, match="must share HEIGHT and WIDTH"):
        infer(client, "tiny-flux", mixed)


@pytest.mark.parametrize(("model", "bad", "message"), [
    ("tiny-sd", {"steps": 0}, r"tiny-sd: steps must be in \[1, 50\], got 0"),
    ("tiny-sd", {"height": 60}, r"height must be a multiple of 8 in \[16, 256\], got 60"),
    ("tiny-sd", {"seed": -1}, r"seed must be in \[0, 9223372036854775807\], got -1"),
    ("tiny-flux", {"width": 40}, r"width must be a multiple of 16 in \[16, 256\], got 40"),
    ("tiny-flux", {"guidance": 3.5}, r"guidance must be in \[0, 0\], got 3.5"),
    ("tiny-flux", {"negative_prompt": "blurry"}, r"takes no negative prompt"),
])
def test_a_bad_request_in_a_batch_errors_alone(server, model, bad, message):
    good = [settings(model, seed=200 + i) for i in range(4)]
    results = concurrently(server.grpc_url, model, good[:2] + [settings(model, **bad)] + good[2:])
    error = results.pop(2)
    assert isinstance(error, InferenceServerException), error
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert re.search(message, error.message()), error.message()
    for result in results:
        assert isinstance(result, dict), result
        assert result["IMAGE"].shape == (1, 64, 64, 3)
    assert max(int(r["BATCH_SIZE"][0, 0]) for r in results) > 1


def test_server_metadata_matches_the_contract(client):
    for model in MODELS:
        assert client.is_model_ready(model)
        meta = client.get_model_metadata(model, as_json=True)
        assert {i["name"]: (i["datatype"], i["shape"]) for i in meta["inputs"]} == {
            "PROMPT": ("BYTES", ["-1", "1"]), "NEGATIVE_PROMPT": ("BYTES", ["-1", "1"]),
            "SEED": ("INT64", ["-1", "1"]), "STEPS": ("INT32", ["-1", "1"]),
            "GUIDANCE_SCALE": ("FP32", ["-1", "1"]), "HEIGHT": ("INT32", ["-1", "1"]),
            "WIDTH": ("INT32", ["-1", "1"]),
        }
        assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
            "IMAGE": ("UINT8", ["-1", "-1", "-1", "3"]), "ELAPSED_MS": ("FP32", ["-1", "1"]),
            "BATCH_SIZE": ("INT32", ["-1", "1"]),
        }
        config = client.get_model_config(model, as_json=True)["config"]
        assert config["max_batch_size"] == 16 and "dynamic_batching" in config


def test_each_cpu_model_runs_on_its_share_of_the_cpus(server):
    """The stubs report the thread count torch runs with once their pipeline is loaded:
    both models share the usable CPUs instead of each taking a thread per core."""
    log = server.log_path.read_text(errors="replace")
    share = cpu_threads_per_instance(len(MODELS))
    for model in MODELS:
        assert f'"{model}: ready on cpu with {share} torch threads"' in log


def test_restart_keeps_the_address_and_serves_again(server):
    """Last of the server tests: it restarts the module's server."""
    url, pid = server.grpc_url, server.pid
    server.restart()
    assert server.grpc_url == url and server.pid != pid and server.is_alive()
    client = grpcclient.InferenceServerClient(url)
    try:
        assert infer(client, "tiny-flux", [settings("tiny-flux")])["IMAGE"].shape == (1, 64, 64, 3)
    finally:
        client.close()


# -- start failures ---------------------------------------------------------------------------


def test_unknown_model_fails_before_starting(tmp_path):
    with pytest.raises(TritonStartError, match="models not in .*: tiny-nope"):
        TritonServer(tmp_path, ["tiny-nope"]).start()
    with pytest.raises(TritonStartError, match="no models to serve"):
        TritonServer(tmp_path).start()


def test_models_load_one_after_another_and_one_that_cannot_fails_alone(tmp_path, models_root):
    """`load_in_order`: the server starts with no model, tiny-sd loads (and serves) before
    the next load begins, and a model that cannot load fails its own future with the cause
    from the log; the server goes on serving tiny-sd."""
    broken = ModelConfig.from_dict({"name": "broken", "pipeline": str(tmp_path / "no-such-pipeline"),
                                    "pipeline_class": "StableDiffusionPipeline", "dtype": "float32"})
    repository = build_model_repository([get_model("tiny-sd"), broken], tmp_path / "repository",
                                        models_root=models_root, instance_kind="KIND_CPU")
    server = TritonServer(repository, ["tiny-sd", "broken"], env={"HF_HUB_OFFLINE": "1"}, startup_timeout=240)
    try:
        loading = server.load_in_order()
        assert list(loading) == ["tiny-sd", "broken"]
        assert loading["tiny-sd"].result(240) == "tiny-sd"
        with pytest.raises(TritonStartError) as caught:
            loading["broken"].result(240)
        summary = str(caught.value).partition("; log tail:")[0]
        assert summary.startswith("model 'broken' did not load: "), summary
        assert re.search(r"failed to load 'broken' version 1: .*no-such-pipeline\S* is neither a valid local path",
                         summary), summary
        assert server.is_alive()
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            assert infer(client, "tiny-sd", [settings("tiny-sd")])["IMAGE"].shape == (1, 64, 64, 3)
        finally:
            client.close()
        log = server.log_path.read_text(errors="replace")
        assert log.index("successfully loaded 'tiny-sd'") < log.index("loading: broken:1")
    finally:
        server.close()


def test_a_model_that_cannot_load_gives_a_clear_error(tmp_path):
    broken = ModelConfig.from_dict({"name": "broken", "pipeline": str(tmp_path / "no-such-pipeline"),
                                    "pipeline_class": "StableDiffusionPipeline", "dtype": "float32"})
    repository = build_model_repository([broken], tmp_path / "repository", instance_kind="KIND_CPU")
    server = TritonServer(repository, env={"HF_HUB_OFFLINE": "1"}, startup_timeout=240)
    with pytest.raises(TritonStartError) as caught:
        server.start()
    summary, _, tail = str(caught.value).partition("; log tail:")
    assert summary.startswith("tritonserver exited with code 1 before its models were ready (broken)"), summary
    # The cause comes first, from the log, then the log tail.
    assert re.search(r"failed to load 'broken' version 1: .*no-such-pipeline\S* is neither a valid local path", summary), summary
    assert tail.strip()
    assert not server.is_alive()
    server.close()
