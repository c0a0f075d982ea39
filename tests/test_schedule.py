"""Scheduled benchmarks: deployments from `prefect.yaml` and `iconicity schedule`, registered
with a real `prefect server start` on loopback, and one run through a `process` worker.

The run is a tiny benchmark (1 reference x tiny-sd x 1 perturbation x 1 image); the flow
starts its own services on loopback (`flows.local`) in the worker's flow-run process.
Everything Prefect-side goes through subprocesses and the server's REST API, so this test
process's Prefect settings are not touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("prefect")
pytest.importorskip("mlflow")
pytest.importorskip("tritonclient.grpc")
pytest.importorskip("diffusers")

from flows.spec import default_images_dir, load_benchmark  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PREFECT = str(BIN / "prefect")
ICONICITY = str(BIN / "iconicity")
POOL = "iconicity-process"  # the pool prefect.yaml names
FLOW = "scheduled-benchmark"
REFERENCE = "the_great_wave_off_kanagawa"

pytestmark = pytest.mark.skipif(default_images_dir() is None, reason="no ../shared/data/references here")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, n: int = 4000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-n:]
    return ""


class Api:
    """The Prefect server's REST API (JSON over urllib)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def __call__(self, method: str, path: str, body: object = None, timeout: float = 10.0):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            text = answer.read()
        return json.loads(text) if text else None

    def deployment(self, name: str) -> dict:
        return self("GET", f"/deployments/name/{FLOW}/{name}")


def stop(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM to the process group (the worker's flow-run children too), then SIGKILL."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def prefect(env: dict, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess:
    return subprocess.run([PREFECT, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`prefect server start` on a free loopback port, its own PREFECT_HOME; the environment
    that points Prefect clients at it, and its REST API."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_HOME": str(home),
           "PREFECT_PROFILES_PATH": str(home / "profiles.toml"), "PREFECT_API_URL": url,
           "PREFECT_SERVER_UI_ENABLED": "false", "PREFECT_CLI_PROMPT": "false", "HF_HUB_OFFLINE": "1"}
    log = home / "server.log"
    with open(log, "w") as stream:
        process = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
                                   env=env, cwd=home, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True)
    api = Api(url)
    started = time.monotonic()
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"prefect server exited with {process.returncode}:\n{tail(log)}")
            with contextlib.suppress(OSError, ValueError):
                if api("GET", "/health", timeout=2) is True:
                    break
            if time.monotonic() - started > 120:
                pytest.fail(f"prefect server not healthy after 120 s:\n{tail(log)}")
            time.sleep(0.5)
        print(f"prefect server healthy in {time.monotonic() - started:.1f} s")
        created = prefect(env, "work-pool", "create", POOL, "--type", "process")
        assert created.returncode == 0, created.stdout + created.stderr
        yield env, api
    finally:
        stop(process)  # the worker (test's own) is stopped before this
    assert process.returncode is not None


@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory):
    """A benchmark file: 1 reference x tiny-sd x original x 1 image (absolute base_dir)."""
    spec = load_benchmark(None)
    references = {**spec.to_dict()["references"], "filter": {"ids": [REFERENCE]},
                  "catalog": str(spec.path(spec.references.catalog))}  # a file's paths are relative to it
    spec = spec.with_overrides(name="scheduled-tiny", references=references, models=["tiny-sd"],
                               perturbations=["original"], images_per_prompt=1)
    path = tmp_path_factory.mktemp("bench") / "tiny.yaml"
    path.write_text(spec.to_yaml())
    return path


def test_iconicity_schedule_registers_a_deployment(server, tiny_benchmark, tmp_path):
    env, api = server
    out = tmp_path / "out"
    done = subprocess.run([ICONICITY, "schedule", "--config", str(tiny_benchmark), "--cron", "30 4 * * 1-5",
                           "--pool", POOL, "--name", "tiny-cli", "--out", str(out)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "scheduled-benchmark/tiny-cli" in done.stdout
    deployment = api.deployment("tiny-cli")
    assert deployment["work_pool_name"] == POOL
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["30 4 * * 1-5"]
    assert deployment["entrypoint"] == "flows/schedule.py:scheduled_benchmark"
    assert deployment["parameters"]["config"] == str(tiny_benchmark.resolve())
    assert deployment["parameters"]["out"] == str(out.resolve())
    steps = json.dumps(deployment["pull_steps"])
    assert "set_working_directory" in steps and str(REPO) in steps

    # a wrong cron expression or benchmark file: a clear message, nothing registered
    bad = subprocess.run([ICONICITY, "schedule", "--config", str(tiny_benchmark), "--cron", "every night",
                          "--pool", POOL, "--name", "bad"], env=env, capture_output=True, text=True, timeout=180)
    assert bad.returncode != 0 and "not a cron expression" in bad.stderr, bad.stdout + bad.stderr
    with pytest.raises(urllib.error.HTTPError):
        api.deployment("bad")
    (tmp_path / "broken.yaml").write_text("name: broken\nmodelz: [tiny-sd]\n")
    broken = subprocess.run([ICONICITY, "schedule", "--config", str(tmp_path / "broken.yaml"), "--cron", "0 3 * * *",
                             "--pool", POOL], env=env, capture_output=True, text=True, timeout=180)
    assert broken.returncode != 0 and "modelz" in broken.stderr, broken.stdout + broken.stderr


def test_iconicity_schedule_without_a_pool_serves_the_deployment(server, tiny_benchmark, tmp_path):
    """Without --pool it serves the deployment from its own process (`flow.serve`) until stopped."""
    env, api = server
    log = tmp_path / "serve.log"
    with open(log, "w") as stream:
        serving = subprocess.Popen([ICONICITY, "schedule", "--config", str(tiny_benchmark), "--cron", "15 1 * * *",
                                    "--name", "tiny-served"], env=env, cwd=tmp_path, stdout=stream,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        started = time.monotonic()
        deployment = None
        while deployment is None:
            if serving.poll() is not None:
                pytest.fail(f"iconicity schedule exited with {serving.returncode}:\n{tail(log)}")
            with contextlib.suppress(urllib.error.HTTPError):
                deployment = api.deployment("tiny-served")
            if deployment is None:
                assert time.monotonic() - started < 120, tail(log)
                time.sleep(0.5)
        assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["15 1 * * *"]
        assert deployment["parameters"]["config"] == str(tiny_benchmark.resolve())
        assert deployment["work_pool_name"] is None  # served from the process, not a pool
    finally:
        stop(serving)  # before the server
    assert serving.returncode is not None
    assert "serving scheduled-benchmark/tiny-served" in tail(log)


def test_prefect_yaml_deployment_runs_once_through_a_worker(server, tiny_benchmark, tmp_path):
    from mlflow import MlflowClient

    from flows.tracking import TAG_PARENT

    env, api = server
    # every deployment of prefect.yaml registers as written
    done = prefect(env, "deploy", "--all", "--no-prompt")
    assert done.returncode == 0, done.stdout + done.stderr
    nightly, paper = api.deployment("default-nightly"), api.deployment("paper-weekly")
    assert nightly["work_pool_name"] == POOL and paper["work_pool_name"] == POOL
    assert [(s["schedule"]["cron"], s["active"]) for s in nightly["schedules"]] == [("0 3 * * *", True)]
    assert [(s["schedule"]["cron"], s["active"]) for s in paper["schedules"]] == [("0 2 * * 0", False)]
    assert nightly["parameters"]["config"] == "flows/benchmarks/default.yaml"
    assert str(REPO) in json.dumps(nightly["pull_steps"])

    # the nightly deployment again, on the tiny benchmark, and one run of it through a worker
    out = tmp_path / "out"
    done = prefect(env, "deploy", "--name", "default-nightly", "--no-prompt", "--params",
                   json.dumps({"config": str(tiny_benchmark), "out": str(out)}))
    assert done.returncode == 0, done.stdout + done.stderr
    deployment = api.deployment("default-nightly")
    assert deployment["parameters"]["config"] == str(tiny_benchmark)
    run = api("POST", f"/deployments/{deployment['id']}/create_flow_run", {})
    log = tmp_path / "worker.log"
    started = time.monotonic()
    with open(log, "w") as stream:
        worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", POOL, "--type", "process"], env=env,
                                  cwd=tmp_path, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        state = None
        while time.monotonic() - started < 600:
            if worker.poll() is not None:
                pytest.fail(f"worker exited with {worker.returncode}:\n{tail(log)}")
            flow_run = api("GET", f"/flow_runs/{run['id']}")
            state = flow_run["state_type"]
            if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            time.sleep(1.0)
        seconds = time.monotonic() - started
    finally:
        stop(worker)  # before the server (fixture teardown)
    print(f"flow run {run['id']}: {state} {seconds:.1f} s after the worker started")
    assert state == "COMPLETED", f"flow run {state}:\n{tail(log, 8000)}"
    assert flow_run["work_pool_name"] == POOL and flow_run["infrastructure_pid"]  # a worker ran it

    # the benchmark flow ran as its subflow, and its results and MLflow runs exist
    subflows = api("POST", "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [run["id"]]}}})
    if not subflows:  # older servers: subflows link through their parent task run
        subflows = [r for r in api("POST", "/flow_runs/filter", {}) if r["id"] != run["id"]]
    # the benchmark flow, then the analyze flow (validation and report)
    assert sorted((r["name"].startswith("analyze-"), r["state_type"]) for r in subflows) == \
        [(False, "COMPLETED"), (True, "COMPLETED")]
    assert (out / "report.html").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["name"] == "scheduled-tiny" and summary["failed"] == []
    assert summary["references"] == [REFERENCE]
    [cell] = summary["cells"]
    assert (cell["model"], cell["perturbation"], cell["status"]) == ("tiny-sd", "original", "completed")
    assert Path(cell["images_file"]).is_file() and Path(cell["references_file"]).is_file()
    assert summary["tracking_uri"] == f"sqlite:///{out.resolve() / 'mlflow.db'}"
    client = MlflowClient(summary["tracking_uri"])
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id], f"tags.`{TAG_PARENT}` = '{parent.info.run_id}'")
    assert [c.info.run_id for c in children] == [cell["run_id"]]
    assert children[0].info.status == "FINISHED" and children[0].data.metrics["n_images"] == 1
