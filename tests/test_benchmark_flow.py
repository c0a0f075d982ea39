"""The benchmark flow end to end: real harvester, Triton + generator and scorer on loopback
(`flows.local.LocalServices`), Prefect's temporary local API, MLflow on a sqlite store.

One set of services serves the module; the matrix is small: 3 references (two still, one
moving) x 2 models (tiny-sd, tiny-flux) x 2 perturbations x 2 images.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import grpc
import pytest

pytest.importorskip("prefect")
pytest.importorskip("mlflow")
pytest.importorskip("tritonclient.grpc")
pytest.importorskip("diffusers")

from flows import store  # noqa: E402
from flows.spec import BenchmarkError, default_images_dir, load_benchmark  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REFERENCES = ["Q45585", "the_great_wave_off_kanagawa", "the_arrival_of_a_train_at_la_ciotat"]
MODELS = ["tiny-sd", "tiny-flux"]
PERTURBATIONS = ["original", "literal"]
N = 2

pytestmark = pytest.mark.skipif(default_images_dir() is None, reason="no ../shared/data/references here")


def small_spec(**overrides):
    spec = load_benchmark(None)
    references = {**spec.to_dict()["references"], "filter": {"ids": REFERENCES}}
    return spec.with_overrides(references=references, models=MODELS, perturbations=PERTURBATIONS,
                               images_per_prompt=N, **overrides)


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    from flows.local import LocalServices

    root = tmp_path_factory.mktemp("services")
    local = LocalServices(small_spec(), root, default_images_dir())
    with local as addresses:
        yield local, addresses
    assert local.triton is not None and not local.triton.is_alive()  # stopped on exit


@pytest.fixture(scope="module")
def first_run(services, tmp_path_factory):
    from flows.benchmark import run_benchmark

    _, addresses = services
    out = tmp_path_factory.mktemp("run")
    uri = f"sqlite:///{out / 'mlflow.db'}"
    started = time.perf_counter()
    result = run_benchmark(small_spec(), out, addresses.to_dict(), tracking_uri=uri)
    print(f"first run: {time.perf_counter() - started:.1f} s")
    return result


def triton_requests(triton_url: str) -> int:
    """Inference requests Triton has run for the benchmark's models (succeeded or failed)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(triton_url)
    try:
        total = 0
        for model in MODELS:
            stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]["inference_stats"]
            total += sum(int(stats.get(k, {}).get("count", 0)) for k in ("success", "fail"))
        return total
    finally:
        client.close()


def settled_triton_requests(triton_url: str) -> int:
    """The count once requests still in flight have finished."""
    last, stable_since = -1, time.monotonic()
    while time.monotonic() - stable_since < 2.0:
        now = triton_requests(triton_url)
        if now != last:
            last, stable_since = now, time.monotonic()
        time.sleep(0.2)
    return last


# -- end to end -------------------------------------------------------------------------------


def test_the_matrix_lands_in_mlflow_and_parquet(first_run):
    from mlflow import MlflowClient

    from flows.tracking import IMAGES_ARTIFACT, REFERENCES_ARTIFACT, SPEC_ARTIFACT, TAG_PARENT

    result = first_run
    assert not result.failed, [(c.cell, c.error) for c in result.failed]
    assert {c.cell for c in result.cells} == {f"{m}/{p}" for m in MODELS for p in PERTURBATIONS}
    assert result.references == REFERENCES
    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["n"] == str(N) and parent.data.metrics["n_failed_cells"] == 0
    children = client.search_runs([parent.info.experiment_id], f"tags.`{TAG_PARENT}` = '{result.parent_run_id}'")
    assert len(children) == len(MODELS) * len(PERTURBATIONS)
    for cell in result.cells:
        run = client.get_run(cell.run_id)
        assert run.info.status == "FINISHED" and run.data.tags[TAG_PARENT] == result.parent_run_id
        params = run.data.params
        assert (params["model"], params["perturbation"]) == (cell.model, cell.perturbation)
        assert params["steps"] == "4" and params["size"] == "64x64" and params["dtype"] == "float32"
        assert params["seeds"] == "0,1" and params["recognition_encoder"] == "classical"
        assert "applied_reuse_threshold" in params
        artifacts = {a.path for a in client.list_artifacts(cell.run_id)}
        artifacts |= {a.path for folder in ("results", "contact_sheets") for a in client.list_artifacts(cell.run_id, folder)}
        assert {IMAGES_ARTIFACT, REFERENCES_ARTIFACT, SPEC_ARTIFACT, "contact_sheets/contact_sheet.png"} <= artifacts

        # the numbers in MLflow are those of the Parquet files
        images = store.read_parquet(cell.images_file)
        references = store.read_parquet(cell.references_file)
        assert len(images) == len(REFERENCES) * N and len({r["image_key"] for r in images}) == len(images)
        assert [r["reference_id"] for r in references] == REFERENCES
        assert {r["imagery"] for r in references} == {"static", "dynamic"}
        expected = store.cell_metrics(references)
        for name in ("cra", "vr", "vi", "crt", "static_crt", "dynamic_cra", "n_images", "cra_ci_low", "crt_ci_high"):
            assert run.data.metrics[name] == pytest.approx(expected[name], abs=1e-12), name
            assert cell.metrics[name] == pytest.approx(expected[name], abs=1e-12), name
        assert run.data.metrics["n_images"] == len(REFERENCES) * N
        assert run.data.metrics["generation_images_per_s"] > 0 and run.data.metrics["scoring_images_per_s"] > 0


def test_the_analyze_flow_validates_the_encoders_and_writes_the_report(first_run, services):
    """The `analyze` flow on the run's folder: validation on the run's own reference images,
    the report with every section, both logged where the report can find them again."""
    from mlflow import MlflowClient

    from flows.analyze import VALIDATION_FILE, run_analysis
    from flows.report import SECTIONS, load_results
    from flows.tracking import TAG_OUT_DIR

    _, addresses = services
    out = Path(first_run.out_dir)
    summaries = json.loads((out / "references.json").read_text())
    assert [s["id"] for s in summaries] == REFERENCES
    for summary in summaries:  # what the report and the correlates need, from the harvester
        assert (out / summary["image_file"]).is_file()
        assert set(summary["covariates"]) >= {"sitelinks", "year", "near_title_catalog", "caption_count"}
    assert any(s["covariates"]["year"] is not None for s in summaries)

    result = run_analysis(out, small_spec(), references_dir=addresses.catalog_dir, tracking_uri=first_run.tracking_uri)
    assert result.validation_note is None
    validation = json.loads((out / VALIDATION_FILE).read_text())
    assert validation["encoders"] == {"recognition": "classical", "realization": "classical"}
    assert sorted(validation["provenance"]["references"]["works"]) == sorted(s["slug"] for s in summaries)
    report = Path(result.report)
    assert report == out / "report.html"
    text = report.read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in text, section
    assert "validation not computed" not in text.lower()
    for summary in summaries:
        assert summary["title"] in text

    client = MlflowClient(first_run.tracking_uri)
    parent = client.get_run(first_run.parent_run_id)
    assert parent.data.tags[TAG_OUT_DIR] == str(out)
    assert {"report.html", "references.json"} <= {a.path for a in client.list_artifacts(first_run.parent_run_id)}
    # the parent run id leads back to this folder, with its images
    again = load_results(first_run.parent_run_id, first_run.tracking_uri)
    assert again.folder == out and again.source == "folder" and len(again.image_rows) == len(first_run.cells) * len(REFERENCES) * N


def test_a_report_that_fails_is_said_after_where_the_results_are(first_run):
    import copy
    import io

    from flows.run import report

    result = copy.copy(first_run)
    result.analysis, result.analysis_error = None, "no space left on device"
    stream = io.StringIO()
    with pytest.raises(RuntimeError, match="^the benchmark completed but its report failed: no space left"):
        report(result, stream)
    text = stream.getvalue()
    assert f"results:        {first_run.out_dir}" in text and "MLflow:" in text
    assert "report:         not written: no space left on device" in text


def test_iconicity_run_whose_report_cannot_be_written_keeps_its_results(tmp_path):
    """The main job with a real failure of its analysis (the report's path is a folder):
    the results, the Parquet files and the MLflow runs stay; the command says where they
    are, that the report was not written and why, and exits 1."""
    spec = load_benchmark(None)
    references = {**spec.to_dict()["references"], "filter": {"ids": [REFERENCES[1]]},
                  "catalog": str(spec.path(spec.references.catalog))}
    spec = spec.with_overrides(name="report-fails", references=references, models=["tiny-sd"],
                               perturbations=["original"], images_per_prompt=1)
    config, out = tmp_path / "tiny.yaml", tmp_path / "out"
    config.write_text(spec.to_yaml())
    (out / "report.html").mkdir(parents=True)  # the report cannot be written there
    # Its own Prefect home: the command starts its own temporary API beside this session's.
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([sys.executable, "-m", "services.cli", "run", "--config", str(config), "--out", str(out),
                           "--no-progress", "--no-validation"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 1, (done.stdout[-2000:], done.stderr[-3000:])
    assert f"results:        {out}" in done.stdout
    assert "report:         not written: " in done.stdout and "report.html" in done.stdout
    assert done.stderr.strip().splitlines()[-1].startswith(
        "iconicity: error: the benchmark completed but its report failed: ")
    # Nothing of the benchmark is lost: its cell, its Parquet rows and its MLflow runs.
    summary = json.loads((out / "summary.json").read_text())
    assert [c["status"] for c in summary["cells"]] == ["completed"] and not summary["failed"]
    assert len(store.read_parquet(out / "cells" / "tiny-sd" / "original" / "images.parquet")) == 1
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("report-fails").experiment_id])
    assert sorted(r.data.tags.get("mlflow.parentRunId") is None for r in runs) == [False, True]


def test_mlflow_and_parquet_equal_what_the_scorer_returns(first_run, services):
    """Re-scores one cell's images straight through the scorer's gRPC API."""
    from iconicity.v1 import common_pb2, scorer_pb2, scorer_pb2_grpc

    _, addresses = services
    cell = next(c for c in first_run.cells if c.cell == "tiny-flux/literal")
    images = store.read_parquet(cell.images_file)
    references = {r["reference_id"]: r for r in store.read_parquet(cell.references_file)}
    results = store.ResultStore(Path(first_run.out_dir) / "results")
    with grpc.insecure_channel(addresses.scorer) as channel:
        stub = scorer_pb2_grpc.ScorerServiceStub(channel)
        for reference_id in REFERENCES:
            rows = [r for r in images if r["reference_id"] == reference_id]
            imagery = rows[0]["imagery"]
            proto_imagery = common_pb2.IMAGERY_DYNAMIC if imagery == "dynamic" else common_pb2.IMAGERY_STATIC
            handle = stub.RegisterReference(scorer_pb2.RegisterReferenceRequest(
                reference_id=reference_id, imagery=proto_imagery), timeout=120).handle
            answer = stub.ScoreImages(scorer_pb2.ScoreImagesRequest(
                settings=scorer_pb2.ScoreSettings(reference_handle=handle, imagery=proto_imagery,
                                                  recognition_encoder="classical", realization_encoder="classical"),
                images=[common_pb2.Image(name=r["image_key"], data=results.image_bytes(r["image_key"])) for r in rows]),
                timeout=300)
            for row, score in zip(rows, answer.images, strict=True):
                assert score.name == row["image_key"]
                assert score.recognition_similarity == pytest.approx(row["recognition_similarity"], abs=1e-9)
                assert (score.recognized, score.vr, score.vi) == (row["recognized"], row["vr"], row["vi"])
                assert [int(v) for v in score.reuse_map] == row["reuse_map"]
            summary = answer.summary
            assert summary.cra == pytest.approx(references[reference_id]["cra"], abs=1e-12)
            assert summary.crt == pytest.approx(references[reference_id]["crt"], abs=1e-12)
            assert summary.recognition_threshold == rows[0]["recognition_threshold"]
    results.close()
    from mlflow import MlflowClient

    metrics = MlflowClient(first_run.tracking_uri).get_run(cell.run_id).data.metrics
    assert metrics["cra"] == pytest.approx(sum(r["cra"] for r in references.values()) / len(references), abs=1e-12)


def test_running_again_computes_nothing(first_run, services):
    from flows.benchmark import run_benchmark

    local, addresses = services
    before = settled_triton_requests(local.triton.grpc_url)
    again = run_benchmark(small_spec(), first_run.out_dir, addresses.to_dict(), tracking_uri=first_run.tracking_uri)
    assert triton_requests(local.triton.grpc_url) == before
    assert again.parent_run_id == first_run.parent_run_id  # the same execution continues
    assert sum(c.generated for c in again.cells) == 0 and sum(c.scored for c in again.cells) == 0
    for old, new in zip(first_run.cells, again.cells, strict=True):
        assert new.run_id == old.run_id and new.metrics["crt"] == old.metrics["crt"]


# -- resumption after a kill --------------------------------------------------------------------

WORKER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {repo!r})
    from tests.test_benchmark_flow import small_spec
    from flows.benchmark import run_benchmark
    run_benchmark(small_spec(), {out!r}, json.loads({addresses!r}), tracking_uri={uri!r})
""")


def test_a_killed_benchmark_resumes_with_only_what_is_missing(services, tmp_path):
    from flows.benchmark import run_benchmark

    local, addresses = services
    out = tmp_path / "killed"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    planned = len(REFERENCES) * len(MODELS) * len(PERTURBATIONS) * N
    code = WORKER.format(repo=str(REPO), out=str(out), addresses=json.dumps(addresses.to_dict()), uri=uri)
    worker = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert worker.poll() is None, worker.stderr.read().decode()[-3000:]
            if (out / "results" / "results.sqlite").exists():
                with store.ResultStore(out / "results") as peek:
                    if peek.counts()["images"] >= 3:
                        break
            assert time.monotonic() < deadline, "the benchmark stored no image in 240 s"
            time.sleep(0.02)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(30)
    with store.ResultStore(out / "results") as results:
        done = results.counts()["images"]
    assert 3 <= done < planned

    # Count the images asked of the generator service from here on (its servicer calls
    # `generator.stream` per Generate call).
    generator = local.generator_servicer.generator
    asked: list[int] = []
    stream = generator.stream

    def counting(request, *args, **kwargs):
        asked.append(len(request.seeds) or request.n_images)
        return stream(request, *args, **kwargs)

    generator.stream = counting
    try:
        result = run_benchmark(small_spec(), out, addresses.to_dict(), tracking_uri=uri)
    finally:
        del generator.stream
    assert not result.failed
    assert sum(asked) == planned - done  # the generator was asked only for the missing images
    assert sum(c.generated for c in result.cells) == planned - done
    with store.ResultStore(out / "results") as results:
        assert results.counts() == {"images": planned, "scores": planned}
    keys = []
    for cell in result.cells:
        rows = store.read_parquet(cell.images_file)
        assert len(rows) == len(REFERENCES) * N
        keys += [r["score_key"] for r in rows]
    assert len(keys) == len(set(keys)) == planned  # nothing missing, nothing twice


# -- failures -----------------------------------------------------------------------------------


def test_a_broken_benchmark_file_says_what_is_wrong(tmp_path):
    from flows.run import add_run_arguments, run_run

    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nmodels:\n  - name: tiny-sd\n    stepz: 3\n")
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    with pytest.raises(BenchmarkError, match=r"broken\.yaml: models\[0\]\.stepz: unknown key; allowed: .*steps"):
        run_run(parser.parse_args(["--config", str(path), "--out", str(tmp_path / "out")]))
    path.write_text("name: broken\nperturbations: [original\n")
    with pytest.raises(BenchmarkError, match=r"broken\.yaml:\d+:\d+: not valid YAML"):
        run_run(parser.parse_args(["--config", str(path)]))
    with pytest.raises(BenchmarkError, match="no benchmark file"):
        run_run(parser.parse_args(["--config", str(tmp_path / "absent.yaml")]))
    assert not (tmp_path / "out").exists()


def test_an_unknown_model_fails_its_cells_only(services, tmp_path):
    from mlflow import MlflowClient

    from flows.benchmark import TAG_ERROR, run_benchmark
    from flows.run import report

    _, addresses = services
    ghost = {"name": "ghost", "pipeline": "tiny:ghost", "steps": 4, "guidance": 7.5, "height": 64, "width": 64,
             "dtype": "float32"}
    spec = small_spec().with_overrides(models=["tiny-sd", ghost], perturbations=["original"])
    result = run_benchmark(spec, tmp_path, addresses.to_dict(), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    by_cell = {c.cell: c for c in result.cells}
    assert by_cell["tiny-sd/original"].status == "completed"
    failed = by_cell["ghost/original"]
    assert failed.status == "failed" and "generator NOT_FOUND" in failed.error and "ghost" in failed.error
    client = MlflowClient(result.tracking_uri)
    run = client.get_run(failed.run_id)
    assert run.info.status == "FAILED" and "NOT_FOUND" in run.data.tags[TAG_ERROR]
    assert client.get_run(result.parent_run_id).data.metrics["n_failed_cells"] == 1
    assert client.get_run(by_cell["tiny-sd/original"].run_id).info.status == "FINISHED"
    with pytest.raises(RuntimeError, match=r"^1 of 2 cells failed: ghost/original: generator NOT_FOUND"):
        report(result, stream=open(os.devnull, "w"))


def test_an_unreachable_scorer_is_retried_then_reported(services, tmp_path):
    from flows.benchmark import run_benchmark
    from services.generator.triton_server import _free_port

    _, addresses = services
    spec = small_spec().with_overrides(models=["tiny-sd"], perturbations=["original"],
                                       retries={"attempts": 1, "backoff_s": 0.05, "max_backoff_s": 0.1})
    dead = {**addresses.to_dict(), "scorer": f"127.0.0.1:{_free_port('127.0.0.1')}"}
    started = time.perf_counter()
    result = run_benchmark(spec, tmp_path, dead, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert time.perf_counter() - started < 120
    (cell,) = result.cells
    assert cell.status == "failed" and "scorer UNAVAILABLE" in cell.error and "after 2 tries" in cell.error
    assert not math.isnan(result.seconds)
    with store.ResultStore(tmp_path / "results") as results:  # generation went through
        assert results.counts() == {"images": len(REFERENCES) * N, "scores": 0}


# -- against an MLflow server ----------------------------------------------------------------------

from tests.test_tracking import mlflow_server  # noqa: E402, F401  (the module fixture: a real `mlflow server`)


def test_the_flow_logs_to_an_mlflow_server_on_loopback(services, mlflow_server, tmp_path):  # noqa: F811
    from mlflow import MlflowClient

    from flows.benchmark import run_benchmark
    from flows.tracking import IMAGES_ARTIFACT, Tracker

    _, addresses = services
    spec = small_spec().with_overrides(models=["tiny-sd"], perturbations=["original"],
                                       mlflow={"tracking_uri": None, "experiment": f"server-{tmp_path.name}"})
    result = run_benchmark(spec, tmp_path / "out", addresses.to_dict(), tracking_uri=mlflow_server)
    assert not result.failed
    (cell,) = result.cells
    client = MlflowClient(mlflow_server)
    assert client.get_run(result.parent_run_id).info.status == "FINISHED"
    run = client.get_run(cell.run_id)
    downloaded = Tracker(mlflow_server, spec.experiment).download(cell.run_id, IMAGES_ARTIFACT, tmp_path / "dl")
    assert store.read_parquet(downloaded) == store.read_parquet(cell.images_file)
    expected = store.cell_metrics(store.read_parquet(cell.references_file))
    for name in ("cra", "vr", "vi", "crt", "crt_ci_low", "n_images"):
        assert run.data.metrics[name] == pytest.approx(expected[name], abs=1e-12), name
