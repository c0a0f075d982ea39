"""Results keyed by content (flows/store.py), MLflow runs (flows/tracking.py) and
`iconicity compare` (flows/compare.py).

- keys change with everything a result depends on, and only with that;
- a run killed mid-way (an exception, and a real SIGKILL) and started again computes only
  what is missing, and no row is duplicated or lost;
- parent and child runs with params, metrics and artifacts, in a `sqlite:///` store and in a
  real `mlflow server` on loopback; the numbers in MLflow equal those of the Parquet files;
  a restarted benchmark continues in the same runs;
- a new sqlite store is a copy of a migrated template in the cache, equal through MLflow to
  one MLflow migrates itself; a torn template is not used;
- `compare` prints two runs side by side, a whole experiment, a filter, as table or CSV, and
  one-line errors for unknown runs and experiments.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from flows import store
from flows.spec import BenchmarkSpec, load_benchmark
from flows.store import GenerationKey, ResultStore, ScoreContext, ScoreRecord, score_key

pytest.importorskip("pyarrow")
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")


# -- keys ------------------------------------------------------------------------------------

GEN = GenerationKey("tiny-sd", "tiny:tiny-sd", None, "The Scream", "", 0, 4, 7.5, 64, 64, None, "float32")
CONTEXT = ScoreContext("Q471379", ("a" * 64,), "classical@1", "classical@1", "static")


def test_generation_key_changes_with_every_field_and_only_then():
    assert GEN.key() == dataclasses.replace(GEN).key()
    assert len(GEN.key()) == 64
    changes = dict(model="tiny-flux", pipeline="tiny:other", revision="abc", prompt="The Shriek", negative_prompt="blurry",
                   seed=1, steps=5, guidance=7.0, height=32, width=128, scheduler="DDIMScheduler", dtype="bfloat16",
                   extra={"max_sequence_length": 64})
    keys = {dataclasses.replace(GEN, **{name: value}).key() for name, value in changes.items()}
    assert len(keys) == len(changes) and GEN.key() not in keys
    # an int guidance and its float are the same setting
    assert dataclasses.replace(GEN, guidance=7).key() == dataclasses.replace(GEN, guidance=7.0).key()


def test_generation_key_from_a_model_configuration():
    config = next(c for c in load_benchmark().model_configs() if c["name"] == "tiny-sd")
    key = GenerationKey.from_config(config, "The Scream", seed=3)
    assert (key.model, key.pipeline, key.steps, key.height, key.seed) == ("tiny-sd", "tiny:tiny-sd", 4, 64, 3)
    assert GenerationKey.from_config({**config, "revision": "r2"}, "The Scream", 3).key() != key.key()


def test_score_key_changes_with_every_context_field():
    base = score_key(GEN.key(), CONTEXT)
    assert base == score_key(GEN.key(), CONTEXT.key())
    changes = dict(reference_id="Q45585", reference_images=("b" * 64,), recognition_encoder="clip@2",
                   realization_encoder="dino@2", imagery="dynamic", recognition_threshold=0.7, reuse_threshold=0.6,
                   crt_variant="all_images")
    keys = {score_key(GEN.key(), dataclasses.replace(CONTEXT, **{k: v})) for k, v in changes.items()}
    assert len(keys) == len(changes) and base not in keys
    assert score_key(dataclasses.replace(GEN, seed=9).key(), CONTEXT) != base


# -- the store and resumption ------------------------------------------------------------------

def png_of(seed: int, size: int = 16) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def plan(n_prompts: int = 3, n_seeds: int = 4) -> list[GenerationKey]:
    return [dataclasses.replace(GEN, prompt=f"prompt {p}", seed=s) for p in range(n_prompts) for s in range(n_seeds)]


def score_of(key: GenerationKey) -> ScoreRecord:
    rng = np.random.default_rng(key.seed)
    return ScoreRecord.from_image_score(
        {"recognition_similarity": float(rng.random()), "recognized": bool(key.seed % 2), "vr": 0.25, "vi": 0.75,
         "reuse_map": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], "crop_similarity_max": 0.9,
         "crop_similarity_mean": 0.5, "crop_similarity_p90": 0.8},
        image_key=key.key(), context=CONTEXT, reference_id=CONTEXT.reference_id, recognition_threshold=0.7,
        reuse_threshold=0.6, recognition_encoder="classical", realization_encoder="classical", n_references_kept=1)


def test_score_record_from_the_scorers_image_score():
    pytest.importorskip("torch")
    from services.scorer.scoring import ImageScore

    grid = ((1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1))
    score = ImageScore(0, "a.png", 0.8, True, 0.25, 0.75, grid, 0.9, 0.5, 0.85)
    record = ScoreRecord.from_image_score(score, image_key=GEN.key(), context=CONTEXT, reference_id="Q471379",
                                          recognition_threshold=0.7, reuse_threshold=0.6)
    assert record.reuse_map == tuple(v for row in grid for v in row)
    assert (record.recognition_similarity, record.recognized, record.vr, record.vi) == (0.8, True, 0.25, 0.75)
    assert record.key == score_key(GEN.key(), CONTEXT) and record.context_key == CONTEXT.key()


class Counting:
    """A stand-in generator and scorer that count their calls."""

    def __init__(self, fail_after: int | None = None):
        self.generated: list[str] = []
        self.scored: list[str] = []
        self.fail_after = fail_after

    def run(self, results: ResultStore, planned: list[GenerationKey]) -> None:
        by_key = {k.key(): k for k in planned}
        for key in results.missing_images(by_key):
            if self.fail_after is not None and len(self.generated) >= self.fail_after:
                raise RuntimeError("killed")
            self.generated.append(key)
            results.put_image(key, png_of(by_key[key].seed), width=16, height=16, model="tiny-sd",
                              prompt=by_key[key].prompt, seed=by_key[key].seed, settings=by_key[key].to_dict())
        wanted = {score_key(k, CONTEXT): by_key[k] for k in by_key}
        missing = results.missing_scores(wanted)
        self.scored.extend(missing)
        results.put_scores(score_of(wanted[k]) for k in missing)


def test_a_crashed_run_resumes_with_only_what_is_missing(tmp_path):
    planned = plan()
    first = Counting(fail_after=5)
    with ResultStore(tmp_path) as results, pytest.raises(RuntimeError, match="killed"):
        first.run(results, planned)
    assert len(first.generated) == 5 and not first.scored

    second = Counting()
    with ResultStore(tmp_path) as results:  # reopened: a new process would see the same
        assert len(results.missing_images(k.key() for k in planned)) == len(planned) - 5
        second.run(results, planned)
        assert set(second.generated).isdisjoint(first.generated)
        assert len(second.generated) == len(planned) - 5 and len(second.scored) == len(planned)
        assert results.counts() == {"images": len(planned), "scores": len(planned)}

    third = Counting()
    with ResultStore(tmp_path) as results:
        third.run(results, planned)
        assert third.generated == [] and third.scored == []
        # writing the same keys again adds nothing
        key = planned[0]
        assert results.put_image(key.key(), png_of(key.seed), width=16, height=16, model="m", prompt="p", seed=0) is False
        assert results.put_scores([score_of(key)]) == 0
        assert results.counts() == {"images": len(planned), "scores": len(planned)}
        stored = results.get_image(key.key())
        assert results.image_bytes(key.key()) == png_of(key.seed)
        assert results.image_path(stored.sha256).name == f"{stored.sha256}.png"
        assert results.get_scores([score_key(key.key(), CONTEXT)])[score_key(key.key(), CONTEXT)] == dataclasses.replace(
            score_of(key), created_at=results.get_scores([score_key(key.key(), CONTEXT)])[score_key(key.key(), CONTEXT)].created_at)


def test_a_lost_image_file_is_generated_again(tmp_path):
    planned = plan(1, 2)
    with ResultStore(tmp_path) as results:
        Counting().run(results, planned)
        lost = results.get_image(planned[0].key())
        results.image_path(lost.sha256).unlink()
        assert results.missing_images(k.key() for k in planned) == [planned[0].key()]
        again = Counting()
        again.run(results, planned)
        assert again.generated == [planned[0].key()] and again.scored == []  # same bytes: scores kept
        # different bytes for a lost file replace the row and drop the old scores
        results.image_path(lost.sha256).unlink()
        assert results.put_image(planned[0].key(), png_of(99), width=16, height=16, model="m", prompt="p", seed=0)
        assert results.missing_scores([score_key(planned[0].key(), CONTEXT)]) == [score_key(planned[0].key(), CONTEXT)]
        assert results.counts()["images"] == 2


WORKER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from tests.test_tracking import plan, png_of
    from flows.store import ResultStore
    results = ResultStore({root!r})
    for key in plan(4, 5):
        if results.missing_images([key.key()]):
            results.put_image(key.key(), png_of(key.seed), width=16, height=16, model="tiny-sd", prompt=key.prompt,
                              seed=key.seed)
            time.sleep(0.05)
    print("done", flush=True)
""")


def test_a_killed_process_resumes_without_duplicates(tmp_path):
    planned = plan(4, 5)
    worker = subprocess.Popen([sys.executable, "-c", WORKER.format(repo=str(REPO), root=str(tmp_path))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (tmp_path / "results.sqlite").exists():
                with ResultStore(tmp_path) as peek:
                    if peek.counts()["images"] >= 4:
                        break
            assert worker.poll() is None, worker.stderr.read().decode()
            time.sleep(0.02)
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.wait(30)
    assert worker.returncode == -signal.SIGKILL
    with ResultStore(tmp_path) as results:
        done = results.counts()["images"]
        assert 4 <= done < len(planned)
        rerun = Counting()
        rerun.run(results, planned)
        assert len(rerun.generated) == len(planned) - done
        assert results.counts() == {"images": len(planned), "scores": len(planned)}
        for key in planned:  # every row has its complete file
            assert results.image_bytes(key.key()) == png_of(key.seed)
    assert not list(tmp_path.glob("images/*/.*.tmp"))


# -- result files ----------------------------------------------------------------------------

REFERENCES = (("Q45585", "static"), ("the_great_wave_off_kanagawa", "static"), ("the_arrival_of_a_train_at_la_ciotat", "dynamic"))


def cell_rows(model: str, perturbation: str, n: int = 3, offset: float = 0.0) -> list[dict]:
    """Image rows of one cell, from images and scores that went through a store."""
    rows = []
    rng = np.random.default_rng(abs(hash((model, perturbation))) % 2**32)
    for reference_id, imagery in REFERENCES:
        for j in range(n):
            key = GenerationKey(model, f"tiny:{model}", None, f"{reference_id} {perturbation}", "", j, 4, 7.5, 64, 64, None,
                                "float32")
            image = store.GeneratedImage(key.key(), f"{j:064x}", 64, 64, model, key.prompt, j, seconds=0.1)
            similarity = float(min(0.999, rng.random() + offset))
            context = dataclasses.replace(CONTEXT, reference_id=reference_id, imagery=imagery)
            score = ScoreRecord.from_image_score(
                {"recognition_similarity": similarity, "recognized": similarity > 0.5,
                 "vr": float(rng.integers(0, 17)) / 16, "vi": 0.0, "reuse_map": [0] * 16, "crop_similarity_max": 0.9,
                 "crop_similarity_mean": 0.5, "crop_similarity_p90": 0.8},
                image_key=key.key(), context=context, reference_id=reference_id, recognition_threshold=0.5,
                reuse_threshold=0.6, recognition_encoder="classical", realization_encoder="classical", seconds=0.05)
            score = dataclasses.replace(score, vi=1.0 - score.vr)
            rows.append(store.image_row(model=model, perturbation=perturbation, reference_id=reference_id, imagery=imagery,
                                        prompt=key.prompt, image_index=j, image=image, score=score))
    return rows


def test_parquet_files_hold_the_documented_columns(tmp_path):
    rows = cell_rows("tiny-sd", "original")
    path = store.write_image_parquet(rows, tmp_path / "images.parquet")
    back = store.read_parquet(path)
    assert list(back[0]) == [name for name, _, _ in store.IMAGE_COLUMNS]
    assert back == [{**r, "reuse_map": list(r["reuse_map"])} for r in rows]
    references = store.reference_rows(rows)
    assert list(references[0]) == [name for name, _, _ in store.REFERENCE_COLUMNS]
    assert store.read_parquet(store.write_reference_parquet(references, tmp_path / "refs.parquet")) == references
    assert store.read_parquet(store.write_image_parquet([], tmp_path / "empty.parquet")) == []


def test_reference_rows_and_cell_metrics_against_direct_computation():
    rows = cell_rows("tiny-sd", "original", n=4)
    references = {r["reference_id"]: r for r in store.reference_rows(rows)}
    for reference_id, imagery in REFERENCES:
        mine = [r for r in rows if r["reference_id"] == reference_id]
        flags = [r["recognized"] for r in mine]
        cra = sum(flags) / len(mine)
        vi_recognized = [r["vi"] for r in mine if r["recognized"]]
        expected_crt = cra * (sum(vi_recognized) / len(vi_recognized)) if vi_recognized else 0.0
        got = references[reference_id]
        assert (got["n_images"], got["n_recognized"], got["imagery"]) == (4, sum(flags), imagery)
        assert got["cra"] == pytest.approx(cra) and got["crt"] == pytest.approx(expected_crt)
        assert got["crt_all_images"] == pytest.approx(cra * sum(r["vi"] for r in mine) / 4)
        assert got["vr"] == pytest.approx(sum(r["vr"] for r in mine) / 4)
    metrics = store.cell_metrics(list(references.values()))
    assert metrics["cra"] == pytest.approx(np.mean([r["cra"] for r in references.values()]))
    assert metrics["cra_ci_low"] <= metrics["cra"] <= metrics["cra_ci_high"]
    assert metrics["static_n_references"] == 2 and metrics["dynamic_n_references"] == 1
    assert metrics["dynamic_crt"] == references["the_arrival_of_a_train_at_la_ciotat"]["crt"]
    assert metrics["n_images"] == 12


# -- MLflow ----------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on loopback: started on a free port, healthy, stopped with SIGTERM."""
    pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
           "DO_NOT_TRACK": "1"}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        cwd=root, env=env, stdout=open(root / "server.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy in 90 s: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.25)
        yield uri
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow-sqlite') / 'mlflow.db'}"
    mlflow.MlflowClient(uri).search_experiments()  # creates the database
    return uri


@pytest.fixture(params=["sqlite", "server"])
def tracking_uri(request):
    return request.getfixturevalue("sqlite_uri" if request.param == "sqlite" else "mlflow_server")


def run_benchmark(tracker, spec, execution_id: str, out: Path, offset: float = 0.0, cells=None) -> dict:
    """What the benchmark flow does with MLflow: a parent, then per cell a child with its results."""
    from flows.tracking import SheetRow, contact_sheet

    parent = tracker.parent_run(spec, execution_id)
    children = {}
    for model in spec.model_configs():
        for perturbation in spec.perturbations:
            if cells is not None and (model["name"], perturbation) not in cells:
                continue
            child = tracker.child_run(parent.run_id, spec, model, perturbation)
            rows = cell_rows(model["name"], perturbation, offset=offset)
            folder = out / execution_id / model["name"] / perturbation
            sheet = contact_sheet(
                [SheetRow(reference_id, png_of(0, 32), [png_of(j + 1, 24) for j in range(3)], captions=["a", "b", "c"],
                          recognized=[True, False, True]) for reference_id, _ in REFERENCES],
                folder / "contact_sheet.png", thumb=32, title=f"{model['name']} / {perturbation}")
            metrics = tracker.log_cell(child.run_id, rows, folder, spec.crt_variant, contact_sheets=[sheet],
                                       resamples=2000)
            tracker.finish(child.run_id)
            children[(model["name"], perturbation)] = (child, metrics)
    tracker.finish(parent.run_id)
    return {"parent": parent, "children": children}


@pytest.fixture
def small_spec():
    return load_benchmark().with_overrides(perturbations=["original", "synonym"], images_per_prompt=2)


def test_parent_and_child_runs_hold_params_metrics_and_artifacts(tracking_uri, small_spec, tmp_path):
    from flows.tracking import (
        IMAGES_ARTIFACT,
        REFERENCES_ARTIFACT,
        SPEC_ARTIFACT,
        TAG_GIT_COMMIT,
        TAG_PARENT,
        TAG_VERSION,
        Tracker,
        git_commit,
    )

    tracker = Tracker(tracking_uri, f"bench-{uuid.uuid4().hex[:8]}")
    started = time.perf_counter()
    result = run_benchmark(tracker, small_spec, "e1", tmp_path)
    elapsed = time.perf_counter() - started
    assert len(result["children"]) == 4
    client = tracker.client
    parent = client.get_run(result["parent"].run_id)
    assert parent.info.status == "FINISHED" and parent.data.params["spec_hash"] == small_spec.content_hash()
    assert parent.data.tags[TAG_VERSION] == "0.1.0"
    if git_commit() is not None:
        assert parent.data.tags[TAG_GIT_COMMIT] == git_commit()[0]
    for (model_name, perturbation), (child_run, logged) in result["children"].items():
        run = client.get_run(child_run.run_id)
        assert run.data.tags[TAG_PARENT] == parent.info.run_id
        params = run.data.params
        model = next(m for m in small_spec.model_configs() if m["name"] == model_name)
        assert params["model"] == model_name and params["perturbation"] == perturbation
        assert params["model_id"] == model["pipeline"] and params["steps"] == str(model["steps"])
        assert params["size"] == f"{model['height']}x{model['width']}" and params["dtype"] == model["dtype"]
        assert params["n"] == "2" and params["seeds"] == "0,1" and params["crt_variant"] == "recognized_images"
        assert params["recognition_encoder"] == "classical" and params["threshold_reuse"] == "calibrated"
        assert params["applied_recognition_threshold_static"] == "0.5" and params["applied_reuse_threshold"] == "0.6"
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "results")}
        assert artifacts == {IMAGES_ARTIFACT, REFERENCES_ARTIFACT}
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {SPEC_ARTIFACT, "contact_sheets", "results"}
        # The numbers in MLflow are those of the Parquet files it holds.
        folder = tracker.download(run.info.run_id, "results", tmp_path / "downloaded" / run.info.run_id)
        references = store.read_parquet(folder / "references.parquet")
        images = store.read_parquet(folder / "images.parquet")
        assert references == store.reference_rows(images)
        assert len(images) == 9 and {r["model"] for r in images} == {model_name}
        expected = store.cell_metrics(references, resamples=2000)
        metrics = run.data.metrics
        for name, value in expected.items():
            assert metrics[name] == value, name
        assert metrics == logged
        assert metrics["generation_images_per_s"] == pytest.approx(10.0)
        assert metrics["scoring_images_per_s"] == pytest.approx(20.0)
        assert {"static_cra", "dynamic_cra", "crt_ci_low", "crt_ci_high"} <= set(metrics)
        sheet = tracker.download(run.info.run_id, "contact_sheets/contact_sheet.png", tmp_path / "sheet" / run.info.run_id)
        with Image.open(sheet) as picture:
            assert picture.format == "PNG" and picture.width > 4 * 32 and picture.height > 3 * 32
    spec_text = tracker.download(parent.info.run_id, SPEC_ARTIFACT, tmp_path / "spec").read_text()
    assert BenchmarkSpec.from_dict(yaml.safe_load(spec_text)).content_hash() == small_spec.content_hash()
    assert elapsed < 60


def test_a_restarted_benchmark_continues_in_the_same_runs(tracking_uri, small_spec, tmp_path):
    from flows.tracking import Tracker

    experiment = f"resume-{uuid.uuid4().hex[:8]}"
    tracker = Tracker(tracking_uri, experiment)
    # the first attempt dies after one cell: parent and that child stay RUNNING
    parent = tracker.parent_run(small_spec, "exec")
    model = small_spec.model_configs()[0]
    first_child = tracker.child_run(parent.run_id, small_spec, model, "original")
    assert parent.created and first_child.created

    again = Tracker(tracking_uri, experiment)  # a new process: a new client
    assert again.experiment_id == tracker.experiment_id
    result = run_benchmark(again, small_spec, "exec", tmp_path)
    assert result["parent"].run_id == parent.run_id and not result["parent"].created
    assert result["children"][(model["name"], "original")][0].run_id == first_child.run_id
    assert not result["children"][(model["name"], "original")][0].created
    runs = again.client.search_runs([again.experiment_id])
    assert len(runs) == 1 + 4
    # after it finished, the same execution again finds every run; a new execution makes new ones
    rerun = run_benchmark(again, small_spec, "exec", tmp_path)
    assert rerun["parent"].status == "FINISHED" and not rerun["parent"].created
    assert all(not child.created for child, _ in rerun["children"].values())
    assert len(again.client.search_runs([again.experiment_id])) == 5
    other = again.parent_run(small_spec, "exec-2")
    assert other.created and other.run_id != parent.run_id
    assert len(again.children(parent.run_id)) == 4


def test_parallel_cells_log_safely(tracking_uri, small_spec, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from flows.tracking import Tracker

    tracker = Tracker(tracking_uri, f"parallel-{uuid.uuid4().hex[:8]}")
    parent = tracker.parent_run(small_spec, "p")
    cells = [(m, p) for m in small_spec.model_configs() for p in small_spec.perturbations]
    children = [tracker.child_run(parent.run_id, small_spec, m, p) for m, p in cells]

    def log(index: int) -> dict:
        (model, perturbation), child = cells[index], children[index]
        rows = cell_rows(model["name"], perturbation)
        metrics = tracker.log_cell(child.run_id, rows, tmp_path / str(index), resamples=500)
        tracker.finish(child.run_id)
        return metrics

    with ThreadPoolExecutor(4) as pool:
        logged = list(pool.map(log, range(len(cells))))
    for child, metrics in zip(children, logged):
        run = tracker.client.get_run(child.run_id)
        assert run.info.status == "FINISHED" and run.data.metrics == metrics
        assert run.data.params["model"] == run.data.tags["iconicity.model"]


def test_contact_sheet_lays_out_reference_and_generated_images(tmp_path):
    from flows.tracking import SheetRow, contact_sheet

    red = Image.new("RGB", (50, 40), (255, 0, 0))
    path = contact_sheet([SheetRow("one", red, [png_of(1), png_of(2)], recognized=[True, False]),
                          SheetRow("two", red, [png_of(3)])], tmp_path / "sheet.png", thumb=40)
    with Image.open(path) as sheet:
        pixels = np.asarray(sheet.convert("RGB"))
    assert sheet.size[0] >= 3 * 40 and sheet.size[1] >= 2 * 40
    assert ((pixels == [255, 0, 0]).all(axis=-1)).sum() >= 2 * 40 * 32  # both reference thumbnails are there
    assert ((pixels == [30, 160, 60]).all(axis=-1)).any() and ((pixels == [40, 90, 200]).all(axis=-1)).any()
    with pytest.raises(ValueError, match="at least one row"):
        contact_sheet([], tmp_path / "none.png")


def test_a_jpeg_reference_is_thumbnailed_from_a_reduced_decode_once_for_every_sheet(tmp_path):
    """Sheets draw a reference's JPEG from a reduced-scale decode (draft) and reuse its
    thumbnail: the picture matches a thumbnail of the full decode, and a second sheet with
    the same reference decodes nothing again."""
    from flows.tracking import SheetRow, _encoded_thumbnail, contact_sheet

    gradient = np.linspace(0, 255, 1200 * 900 * 3).reshape(900, 1200, 3).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(gradient).save(buffer, format="JPEG", quality=95)
    jpeg = buffer.getvalue()
    full = Image.open(io.BytesIO(jpeg)).convert("RGB")
    full.thumbnail((96, 96))
    _encoded_thumbnail.cache_clear()
    for name in ("a.png", "b.png"):
        contact_sheet([SheetRow("one", jpeg, [png_of(1)])], tmp_path / name, thumb=96)
    assert _encoded_thumbnail.cache_info()[:2] == (2, 2)  # (hits, misses): each image decoded once
    drawn = _encoded_thumbnail(jpeg, 96)
    assert drawn.size == full.size == (96, 72)
    assert np.abs(np.asarray(drawn, dtype=float) - np.asarray(full, dtype=float)).mean() < 2.0


# -- compare ---------------------------------------------------------------------------------

def compare(*argv: str) -> str:
    from flows.compare import add_compare_arguments, run_compare

    parser = argparse.ArgumentParser()
    add_compare_arguments(parser)
    out = io.StringIO()
    assert run_compare(parser.parse_args(list(argv)), out=out) == 0
    return out.getvalue()


def test_compare_two_runs_an_experiment_and_a_filter(tracking_uri, small_spec, tmp_path):
    from flows.tracking import Tracker

    experiment = f"cmp-{uuid.uuid4().hex[:8]}"
    tracker = Tracker(tracking_uri, experiment)
    a = run_benchmark(tracker, small_spec, "a", tmp_path)
    b = run_benchmark(tracker, small_spec, "b", tmp_path, offset=0.3)
    a_id, b_id = a["parent"].run_id, b["parent"].run_id

    table = compare(a_id, b_id, "--tracking-uri", tracking_uri)
    assert table.splitlines()[0] == f"A = default-a ({a_id})"
    assert "Δcra" in table and "tiny-flux  synonym" in table

    rows = list(csv.DictReader(io.StringIO(compare(a_id, b_id, "--tracking-uri", tracking_uri, "--format", "csv",
                                                   "--metrics", "cra,crt,static_cra"))))
    assert len(rows) == 4
    assert [(r["model"], r["perturbation"]) for r in rows] == [
        ("tiny-flux", "original"), ("tiny-flux", "synonym"), ("tiny-sd", "original"), ("tiny-sd", "synonym")]
    for row in rows:
        ma = a["children"][(row["model"], row["perturbation"])][1]
        mb = b["children"][(row["model"], row["perturbation"])][1]
        for m in ("cra", "crt", "static_cra"):
            assert float(row[f"{m} A"]) == ma[m] and float(row[f"{m} B"]) == mb[m]
            assert float(row[f"Δ{m}"]) == pytest.approx(mb[m] - ma[m])

    listing = list(csv.DictReader(io.StringIO(compare("--experiment", experiment, "--tracking-uri", tracking_uri,
                                                      "--format", "csv"))))
    assert len(listing) == 8 and {r["run"] for r in listing} == {"default-a", "default-b"}
    for row in listing:
        cell = a if row["run"] == "default-a" else b
        metrics = cell["children"][(row["model"], row["perturbation"])][1]
        assert float(row["cra"]) == metrics["cra"]
        if row["perturbation"] == "original":
            assert row["Δcra vs original"] == ""
        else:
            original = cell["children"][(row["model"], "original")][1]
            assert float(row["Δcra vs original"]) == pytest.approx(metrics["cra"] - original["cra"])

    filtered = compare("--experiment", experiment, "--filter", "params.model = 'tiny-sd'", "--tracking-uri", tracking_uri)
    lines = filtered.splitlines()
    assert len(lines) == 2 + 4 and all("tiny-sd" in line for line in lines[2:])

    one = compare(a_id, "--tracking-uri", tracking_uri)
    assert len(one.splitlines()) == 2 + 4


def test_compare_errors_are_one_line(sqlite_uri, tmp_path):
    from flows.compare import CompareError

    with pytest.raises(CompareError, match=r"^no MLflow run '0123456789abcdef0123456789abcdef' at sqlite:///"):
        compare("0123456789abcdef0123456789abcdef", "--tracking-uri", sqlite_uri)
    with pytest.raises(CompareError, match=r"^no MLflow experiment 'nope' at sqlite:///"):
        compare("--experiment", "nope", "--tracking-uri", sqlite_uri)
    with pytest.raises(CompareError, match=r"^no MLflow store at sqlite:///.*missing\.db \(no such database file\)"):
        compare("--experiment", "x", "--tracking-uri", "sqlite:///" + str(tmp_path / "missing.db"))
    started = time.monotonic()
    with pytest.raises(CompareError, match=r"^MLflow at http://127\.0\.0\.1:\d+: cannot reach the server \(connection refused\)$"):
        compare("--experiment", "x", "--tracking-uri", f"http://127.0.0.1:{_free_port()}")
    assert time.monotonic() - started < 30
    with pytest.raises(CompareError, match=r"^nothing to compare"):
        compare("--tracking-uri", sqlite_uri)
    with pytest.raises(CompareError, match=r"^compare takes at most two runs"):
        compare("a", "b", "c", "--tracking-uri", sqlite_uri)
    env = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        with pytest.raises(CompareError, match=r"^no MLflow store: pass --tracking-uri"):
            compare("--experiment", "x")
    finally:
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env


def test_a_new_sqlite_store_is_made_whole_or_not_at_all(tmp_path, monkeypatch):
    """A benchmark killed while MLflow migrates a new store's schema must not leave a store
    that the resumed run cannot open: the store appears at its path only once complete."""
    from mlflow.tracking import MlflowClient

    from flows.tracking import Tracker, create_sqlite_store

    monkeypatch.setenv("ICONICITY_CACHE", str(tmp_path / "cache"))  # no template yet: the kill hits its migration
    path = tmp_path / "run" / "mlflow.db"
    made = MlflowClient.search_experiments

    def killed_midway(self, *args, **kwargs):
        made(self, *args, **kwargs)  # the temporary store exists, migrated
        raise KeyboardInterrupt

    monkeypatch.setattr(MlflowClient, "search_experiments", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        create_sqlite_store(path)
    assert not path.exists() and list(path.parent.iterdir()) == []  # nothing half-made, nothing left over
    assert list((tmp_path / "cache" / "mlflow").iterdir()) == []  # nor a template
    monkeypatch.setattr(MlflowClient, "search_experiments", made)
    tracker = Tracker(f"sqlite:///{path}", "resumed")
    assert [p.name for p in path.parent.iterdir()] == ["mlflow.db"]
    run = tracker.client.create_run(tracker.experiment_id)
    # A store already there is opened as it is: the run is still in it.
    assert Tracker(f"sqlite:///{path}", "resumed").client.get_run(run.info.run_id).info.run_id == run.info.run_id


def _schema(database: Path) -> dict:
    """A store's schema: each object's SQL as a set of lines. MLflow's migration writes the
    CHECK constraints of a rebuilt table in an order that changes from one migration to the
    next, so two stores MLflow made itself differ in that order only."""
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    return {(kind, name, table): frozenset(line.strip().rstrip(",") for line in (sql or "").splitlines())
            for kind, name, table, sql in rows}


def _rows(database: Path, query: str) -> list[tuple]:
    with sqlite3.connect(database) as db:
        return db.execute(query).fetchall()


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory):
    """The template the first new store makes in an empty cache."""
    from flows.tracking import create_sqlite_store

    cache = tmp_path_factory.mktemp("iconicity-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ICONICITY_CACHE", str(cache))
        create_sqlite_store(tmp_path_factory.mktemp("first-store") / "mlflow.db")
    (template,) = (cache / "mlflow").iterdir()
    return template


@pytest.fixture
def template_cache(sqlite_template, tmp_path, monkeypatch):
    """A cache of this test's own holding the template; its path."""
    folder = tmp_path / "cache" / "mlflow"
    folder.mkdir(parents=True)
    shutil.copyfile(sqlite_template, folder / sqlite_template.name)
    monkeypatch.setenv("ICONICITY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("_MLFLOW_SERVER_ARTIFACT_ROOT", raising=False)
    return folder / sqlite_template.name


def _assert_usable(database: Path) -> None:
    """MLflow opens the store and keeps an experiment, a run and a metric in it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{database}")
    experiment_id = client.create_experiment(f"e-{uuid.uuid4().hex[:8]}")
    assert experiment_id == "1"  # the first after Default, as in a store MLflow made
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "cra", 0.25)
    assert client.get_run(run.info.run_id).data.metrics == {"cra": 0.25}


def test_a_store_made_from_the_template_equals_one_mlflow_makes(template_cache, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from flows.tracking import create_sqlite_store

    monkeypatch.chdir(tmp_path)  # MLflow places Default's artifacts under ./mlruns of the current folder
    before = int(time.time() * 1000)
    path = tmp_path / "copied" / "mlflow.db"
    create_sqlite_store(path)
    fresh = tmp_path / "fresh" / "mlflow.db"
    fresh.parent.mkdir()
    MlflowClient(tracking_uri=f"sqlite:///{fresh}").search_experiments()  # MLflow migrates a new store itself
    after = int(time.time() * 1000)

    assert [p.name for p in path.parent.iterdir()] == ["mlflow.db"]
    assert os.stat(path).st_ino != os.stat(template_cache).st_ino  # a copy: runs never write into the template
    assert _schema(path) == _schema(fresh)
    assert _rows(path, "SELECT version_num FROM alembic_version") == _rows(fresh, "SELECT version_num FROM alembic_version")
    assert _rows(path, "SELECT * FROM workspaces") == _rows(fresh, "SELECT * FROM workspaces")
    copied, made = (MlflowClient(tracking_uri=f"sqlite:///{p}").get_experiment("0") for p in (path, fresh))
    assert copied.artifact_location == made.artifact_location == (tmp_path / "mlruns" / "0").as_posix()
    assert (copied.name, copied.lifecycle_stage, copied.tags) == (made.name, made.lifecycle_stage, made.tags)
    assert before <= copied.creation_time == copied.last_update_time <= after
    _assert_usable(path)
    _assert_usable(fresh)


def test_later_stores_are_copies_of_the_template_made_by_the_first(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from flows.tracking import create_sqlite_store

    monkeypatch.setenv("ICONICITY_CACHE", str(tmp_path / "cache"))
    create_sqlite_store(tmp_path / "first" / "mlflow.db")
    (template,) = (tmp_path / "cache" / "mlflow").iterdir()
    made = os.stat(template)

    def migrates(self, *args, **kwargs):
        raise AssertionError("a store was migrated")

    monkeypatch.setattr(MlflowClient, "search_experiments", migrates)
    started = int(time.time() * 1000)
    second, third = tmp_path / "second" / "mlflow.db", tmp_path / "third" / "mlflow.db"
    create_sqlite_store(second)
    create_sqlite_store(third)
    now = os.stat(template)
    assert (now.st_ino, now.st_mtime_ns, now.st_size) == (made.st_ino, made.st_mtime_ns, made.st_size)
    for path in (second, third):
        # the template's very SQL, constraint order included, which no new migration repeats reliably
        assert _rows(path, "SELECT sql FROM sqlite_master") == _rows(template, "SELECT sql FROM sqlite_master")
        ((creation, update),) = _rows(path, "SELECT creation_time, last_update_time FROM experiments")
        assert creation == update >= started  # Default made now, not when the template was
    monkeypatch.undo()
    _assert_usable(second)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "another revision"])
def test_a_torn_template_is_not_used(template_cache, tmp_path, monkeypatch, damage):
    from mlflow.tracking import MlflowClient

    from flows.tracking import create_sqlite_store

    monkeypatch.chdir(tmp_path)
    if damage == "truncated":
        with open(template_cache, "r+b") as file:
            file.truncate(os.path.getsize(template_cache) // 2)
    elif damage == "garbage":
        template_cache.write_bytes(b"not a database\n" * 4096)
    else:
        with sqlite3.connect(template_cache) as db:
            db.execute("UPDATE alembic_version SET version_num = '0123456789ab'")
    path = tmp_path / "store" / "mlflow.db"
    create_sqlite_store(path)
    assert [p.name for p in path.parent.iterdir()] == ["mlflow.db"]
    assert _rows(path, "PRAGMA quick_check") == [("ok",)]
    assert _rows(path, "SELECT version_num FROM alembic_version") != [("0123456789ab",)]
    default = MlflowClient(tracking_uri=f"sqlite:///{path}").get_experiment("0")
    assert default.artifact_location == (tmp_path / "mlruns" / "0").as_posix()
    _assert_usable(path)
    assert not template_cache.exists()  # not kept for later runs: the next one makes it again
