"""The HTML report (flows/report.py) and `iconicity report`.

A real results folder is built with the real writers (the result store, the Parquet writers,
the contact sheets, `BenchmarkResult.to_dict()`, the default benchmark's resolved file) from
edits of real reference images (../shared/data/references): 2 models x 2 perturbations x 4
references x 2 images. Then:

- the report has every section, the expected plots and thumbnails, only `data:` images and no
  http(s) link; headless Chromium (Debian's `chromium`) loads it with no broken image and
  screenshots something that is not blank;
- the reading of the numbers against hand-written tables, and "nothing is recognized" when
  every CRA is 0; the reuse tint against hand-computed pixels;
- a run read back from MLflow by its parent run id (downloaded, or its folder by the
  `iconicity.out_dir` tag), and the report logged to it;
- `iconicity report` writes the file, warns (not fails) when MLflow is unreachable, and
  answers a missing folder with one line.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shared_data import references_root

from flows import report
from flows.analysis import analyze
from flows.report import SECTIONS, ReportError, ReportWarning, build_report, load_results, reading, write_report

pytest.importorskip("pyarrow")
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# (QID, slug, title, kind, imagery, sitelinks, year, near-identical titles)
WORKS = [
    ("Q45585", "the_starry_night", "The Starry Night", "still", "static", 120, 1889, 2),
    ("Q12418", "mona_lisa", "Mona Lisa", "still", "static", 180, 1503, 0),
    ("Q471379", "the_scream", "The Scream", "still", "static", 90, 1893, 5),
    ("Q151895", "nosferatu", "Nosferatu", "moving", "dynamic", 60, 1922, 1),
]
MODELS = ("model-a", "model-b")
PERTURBATIONS = ("original", "synonym")
SEEDS = (0, 1)
SIDE = 96  # generated images: small, as tiny pipelines make them


def _pixels(slug: str, max_side: int) -> np.ndarray:
    from services.scorer.edits import shrink

    with Image.open(references_root() / slug / "1.jpg") as picture:
        return shrink(np.asarray(picture.convert("RGB")), max_side)


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _generated(model: str, perturbation: str, index: int, seed: int, pixels: dict[str, np.ndarray]):
    """A 'generated' image and its score. model-a copies the work (a replica, every cell
    reused) under the original title and half of it under the synonym; model-b takes k cells
    of the work into another work (k = 2 or 6, its reuse map = those cells)."""
    from services.scorer.edits import composite, replica

    slug = WORKS[index][1]
    rng = np.random.default_rng(100 * index + 10 * seed + len(model) + len(perturbation))
    if model == "model-a" and perturbation == "original":
        image, _ = replica(pixels[slug], rng, max_side=SIDE)
        cells: tuple[int, ...] = tuple(range(16))
    else:
        k = 8 if model == "model-a" else (2 if perturbation == "original" else 6)
        other = pixels[WORKS[(index + 1) % len(WORKS)][1]]
        image, cells = composite(pixels[slug], other, k, rng)
    reuse_map = [1 if c in cells else 0 for c in range(16)]
    vr = len(cells) / 16
    recognized = model == "model-a" or (perturbation == "original" and index == 0)
    similarity = 0.9 - 0.05 * seed if recognized else 0.3 + 0.01 * index
    return image, {"recognition_similarity": similarity, "recognized": recognized, "vr": vr, "vi": 1 - vr,
                   "reuse_map": reuse_map}


def build_run_folder(folder: Path, *, tracking_uri: str | None = None, parent_run_id: str = "") -> Path:
    """A results folder as `iconicity run --out` leaves it, written by the real writers."""
    from flows import store
    from flows.benchmark import BenchmarkResult, CellResult, ReferenceInfo, cell_contact_sheet
    from flows.spec import load_benchmark

    pixels = {slug: _pixels(slug, SIDE) for _, slug, *_ in WORKS}
    folder.mkdir(parents=True, exist_ok=True)
    infos, summaries = [], []
    for qid, slug, title, kind, imagery, sitelinks, year, near in WORKS:
        canonical = _pixels(slug, 256)
        image_file = f"reference_images/{slug}.jpg"
        (folder / "reference_images").mkdir(exist_ok=True)
        Image.fromarray(canonical).save(folder / image_file, format="JPEG", quality=85)
        prompts = {"original": title, "synonym": f"{title}, in other words"}
        infos.append(ReferenceInfo(qid, slug, title, kind, imagery, prompts, image=(folder / image_file).read_bytes()))
        summaries.append({**infos[-1].summary(), "image_file": image_file, "covariates": {
            "sitelinks": sitelinks, "year": year, "same_title_catalog": None, "near_title_catalog": near,
            "same_title_export": None, "near_title_export": None, "caption_count": None}})
    (folder / "references.json").write_text(json.dumps(summaries, indent=2))
    (folder / "benchmark.yaml").write_text(load_benchmark("default").to_yaml())
    cells = []
    with store.ResultStore(folder / "results") as results:
        for model in MODELS:
            for perturbation in PERTURBATIONS:
                rows = []
                for index, info in enumerate(infos):
                    for j, seed in enumerate(SEEDS):
                        image, score = _generated(model, perturbation, index, seed, pixels)
                        png = _png(image)
                        key = hashlib.sha256(f"{model}{perturbation}{info.id}{seed}".encode()).hexdigest()
                        results.put_image(key, png, width=image.shape[1], height=image.shape[0], model=model,
                                          prompt=info.prompts[perturbation], seed=seed)
                        rows.append({
                            "model": model, "perturbation": perturbation, "reference_id": info.id,
                            "imagery": info.imagery, "prompt": info.prompts[perturbation], "image_index": j,
                            "seed": seed, "image_key": key, "image_sha256": hashlib.sha256(png).hexdigest(),
                            "score_key": "s" + key[:20], **score, "crop_similarity_max": 0.9,
                            "crop_similarity_mean": 0.5, "crop_similarity_p90": 0.8, "recognition_threshold": 0.7,
                            "reuse_threshold": 0.6, "recognition_encoder": "classical",
                            "realization_encoder": "classical", "n_references_kept": 1, "generation_seconds": 0.1,
                            "scoring_seconds": 0.1})
                where = folder / "cells" / model / perturbation
                store.write_image_parquet(rows, where / "images.parquet")
                store.write_reference_parquet(store.reference_rows(rows), where / "references.parquet")
                sheet = cell_contact_sheet(results, rows, infos, where / "contact_sheet.png", f"{model} / {perturbation}")
                cells.append(CellResult(model, perturbation, "completed", run_id=None, images_file=str(where / "images.parquet"),
                                        references_file=str(where / "references.parquet"), contact_sheet=str(sheet)))
    summary = BenchmarkResult(name="default", out_dir=str(folder), tracking_uri=tracking_uri or "",
                              experiment="default", parent_run_id=parent_run_id, references=[w[0] for w in WORKS],
                              cells=cells)
    (folder / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2))
    return folder


def validation_result() -> dict:
    """A validation result as `iconicity validate --json` writes it (the contract's shape)."""
    curve = {"fpr": [0.0, 0.0, 0.5, 1.0], "tpr": [0.0, 0.8, 1.0, 1.0], "direction": "higher"}
    return {
        "encoders": {"recognition": "classical", "realization": "classical"}, "thresholds": {"reuse": 0.6},
        "seed": 0, "n_pairs": {"replica": 30, "transformation": 30, "unrelated": 30},
        "tasks": {
            "replica_vs_unrelated": {"positive": ["replica"], "negative": ["unrelated"], "metrics": {
                "vr": {"auc": 0.98, **curve}, "cra": {"auc": 0.95, **curve}, "ssim": {"auc": 0.7, **curve}}},
            "transformation_vs_replica": {"positive": ["transformation"], "negative": ["replica"], "metrics": {
                "vr": {"auc": 0.9, **curve}, "crt": {"auc": 0.85, **curve}}},
        },
        "confusion": {"labels": ["replica", "transformation", "unrelated"],
                      "predicted": ["replicated", "transformed", "not recognized"],
                      "counts": [[27, 2, 1], [5, 20, 5], [0, 1, 29]]},
        "partial": [{"k": k, "n": 30, "vr_mean": k / 16 + 0.02, "vr_expected": k / 16} for k in (0, 4, 8, 12, 16)],
        "partial_tracking": {"mean_abs_error": 0.02, "spearman": 1.0}, "provenance": {},
    }


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    references_root()
    return build_run_folder(tmp_path_factory.mktemp("run") / "default")


@pytest.fixture(scope="module")
def rendered(run_folder, tmp_path_factory) -> tuple[Path, str]:
    validation = tmp_path_factory.mktemp("validation") / "validation.json"
    validation.write_text(json.dumps(validation_result()))
    path = write_report(run_folder, tmp_path_factory.mktemp("report") / "report.html", validation=validation,
                        log_to_mlflow=False)
    return path, path.read_text()


def _sources(text: str, css: str) -> list[str]:
    return re.findall(rf'<img class="{css}"[^>]*src="([^"]+)"', text)


# -- the document -------------------------------------------------------------------------------

def test_report_has_every_section_plot_and_thumbnail_all_embedded(rendered):
    path, text = rendered
    for section in SECTIONS:
        assert f'<section id="{section}">' in text
    # map, bars, perturbation deltas, covariate scatter, validation ROC, partial reuse
    assert len(_sources(text, "plot")) == 6
    generated = len(MODELS) * len(PERTURBATIONS) * len(WORKS) * len(SEEDS)
    assert len(_sources(text, "thumb")) == generated
    assert len(_sources(text, "thumb reference-image")) == len(WORKS)
    sources = re.findall(r'<img[^>]*src="([^"]*)"', text)
    assert len(sources) == 6 + generated + len(WORKS)
    assert all(s.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for s in sources)
    for source in sources:  # each decodes to a real image
        Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).verify()
    assert not re.search(r'(src|href)\s*=\s*"?\s*https?:', text, re.I)
    assert "<link" not in text and '<script src' not in text
    assert path.stat().st_size < 3_000_000


def test_report_tables_say_what_the_numbers_are(rendered, run_folder):
    _, text = rendered
    summary = text.split('<section id="summary">')[1].split("</section>")[0]
    # model-a recognizes every image of every reference under the original title: CRA 1.00 [1.00, 1.00]
    assert "<td>model-a</td><td>1.00 [1.00, 1.00]</td>" in summary
    assert "model-a recognizes most: CRA 1.00 [1.00, 1.00], then model-b 0.25" in summary
    # model-b recognizes only The Starry Night, where 2 of 16 cells were taken: it transforms
    assert "model-b mostly transforms: of what it recognizes, 88% is transformed" in summary
    validation = text.split('<section id="validation">')[1].split("</section>")[0]
    assert "<td>vr</td><td>0.98</td><td>0.90</td>" in validation
    assert "<td>transformation</td><td>5</td><td>20</td><td>5</td>" in validation
    provenance = text.split('<section id="provenance">')[1].split("</section>")[0]
    from flows.spec import load_benchmark

    assert report._e(load_benchmark("default").to_yaml()) in provenance
    for name in ("python", "iconicity", "torch", "diffusers", "prefect", "mlflow"):
        assert f"<td>{name}</td>" in provenance
    assert "Validation not computed" not in text


def test_contact_sheet_tint_marks_exactly_the_reused_cells(rendered, run_folder):
    _, text = rendered
    # model-b, original, The Starry Night, seed 0: a composite with 2 cells of the work
    tile = re.search(r'alt="The Starry Night: model-b original seed 0" src="data:image/jpeg;base64,([^"]+)"', text)
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(tile.group(1)))).convert("RGB"), dtype=float)
    from flows.store import read_parquet
    from services.scorer.crops import grid_bounds

    row = next(r for r in read_parquet(run_folder / "cells" / "model-b" / "original" / "images.parquet")
               if r["reference_id"] == "Q45585" and r["seed"] == 0)
    stored = run_folder / "results" / "images" / row["image_sha256"][:2] / f"{row['image_sha256']}.png"
    plain = Image.open(stored).convert("RGB").resize((shown.shape[1], shown.shape[0]), Image.Resampling.NEAREST)
    change = np.abs(shown - np.asarray(plain, dtype=float)).mean(axis=2)
    per_cell = [change[t + 3:b - 3, left + 3:r - 3].mean() for t, b, left, r in grid_bounds(*change.shape)]
    tinted = [i for i, flag in enumerate(row["reuse_map"]) if flag]
    assert len(tinted) == 2
    assert min(per_cell[i] for i in tinted) > 3 * max(per_cell[i] for i in range(16) if i not in tinted)


def test_tinted_thumbnail_against_hand_computed_pixels():
    grey = Image.new("RGB", (40, 40), (100, 100, 100))
    out = report.tinted_thumbnail(grey, [0] * 5 + [1] + [0] * 10, size=40)
    # cell 5 = row 1, column 1 = pixels 10..19; 0.6 * 100 + 0.4 * (230, 60, 20), rounded
    assert out.getpixel((10, 10)) == out.getpixel((19, 19)) == (152, 84, 68)
    assert out.getpixel((9, 10)) == out.getpixel((20, 19)) == out.getpixel((10, 20)) == (100, 100, 100)
    odd = report.tinted_thumbnail(Image.new("RGB", (42, 43), (100, 100, 100)), [0] * 15 + [1], size=43)
    assert odd.size == (42, 43)
    assert odd.getpixel((41, 42)) == odd.getpixel((30, 30)) == (152, 84, 68)  # the last cell takes the remainder
    assert odd.getpixel((29, 42)) == (100, 100, 100)
    assert report.tinted_thumbnail(grey, [0] * 16, size=80).size == (80, 80)
    with pytest.raises(ValueError, match="reuse map has 16 cells"):
        report.tinted_thumbnail(grey, [1] * 9)


# -- the reading --------------------------------------------------------------------------------

def _comparison(values: dict[str, tuple[float, float, float, float]], spread: float = 0.05) -> list[dict]:
    return [{"model": m, "imagery": "all", "metric": k, "value": v, "ci_low": max(0.0, v - spread),
             "ci_high": min(1.0, v + spread), "n_references": 10}
            for m, row in values.items() for k, v in zip(("cra", "vr", "vi", "crt"), row)]


def test_reading_names_who_recognizes_replicates_and_transforms():
    sentences = reading(_comparison({"sd": (0.8, 0.6, 0.4, 0.2), "flux": (0.4, 0.2, 0.8, 0.3), "tiny": (0.0, 0, 1, 0)}))
    assert sentences == [
        "sd recognizes most: CRA 0.80 [0.75, 0.85], then flux 0.40, tiny 0.00.",
        "tiny recognizes nothing (CRA 0).",
        "sd mostly replicates: of what it recognizes, 25% is transformed (CRT 0.20 of CRA 0.80) and 75% reused.",
        "flux mostly transforms: of what it recognizes, 75% is transformed (CRT 0.30 of CRA 0.40) and 25% reused.",
        "flux transforms most (highest CRT, 0.30); sd replicates most (recognized and reused, CRA − CRT = 0.60).",
    ]
    close = reading(_comparison({"a": (0.5, 0.5, 0.5, 0.1), "b": (0.45, 0.5, 0.5, 0.1)}, spread=0.1))
    assert close[0].endswith("its interval overlaps b's, so the lead is not certain.")


def test_reading_says_nothing_is_recognized_when_every_cra_is_0(run_folder):
    rows = [{"model": m, "perturbation": "original", "reference_id": f"Q{i}", "imagery": "static", "cra": 0.0,
             "vr": 0.1 * i, "vi": 1 - 0.1 * i, "crt": 0.0} for m in ("tiny-sd", "tiny-flux") for i in range(4)]
    analysis = analyze(rows, {}, resamples=200)
    sentences = reading(analysis["model_comparison"])
    assert sentences == ["Nothing is recognized: CRA is 0 for both models, so no generated image evokes its reference "
                         "and this run says nothing about replication or transformation."]
    results = load_results(run_folder)
    text = build_report(dataclasses.replace(results, reference_rows=rows, image_rows=[]), analysis, None)
    summary = text.split('<section id="summary">')[1].split("</section>")[0]
    assert "Nothing is recognized" in summary and "most" not in summary and "replicates" not in summary
    assert "Validation not computed" in text and "iconicity validate" in text
    noted = build_report(dataclasses.replace(results, image_rows=[]), analysis, None, validation_note="no GPU here")
    assert "Validation not computed for this report (no GPU here)." in noted


# -- headless Chromium --------------------------------------------------------------------------

def _chromium() -> str:
    found = shutil.which("chromium") or (os.path.exists("/usr/bin/chromium") and "/usr/bin/chromium")
    if not found:
        pytest.fail("Debian's chromium is not installed (the report's browser check needs it): run scripts/setup.sh")
    return found


def _browse(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([_chromium(), *flags, *args], capture_output=True, text=True, timeout=120)


def test_chromium_loads_the_report_with_no_broken_image_and_draws_it(rendered, tmp_path):
    path, _ = rendered
    dom = _browse(tmp_path, "--virtual-time-budget=5000", "--dump-dom", path.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    assert 'data-ready="1"' in body and 'data-broken-images="0"' in body, body
    shot = tmp_path / "report.png"
    result = _browse(tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", "--hide-scrollbars", path.as_uri())
    assert shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2400, 1280)
    assert pixels.std() > 20  # text, tables and plots; a blank page is 0


def test_a_broken_image_is_counted_by_the_page(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><img src="data:image/png;base64,AAAA"><script>'
                    f"{report._SCRIPT}</script></body></html>")
    dom = _browse(tmp_path, "--virtual-time-budget=3000", "--dump-dom", page.as_uri())
    assert 'data-broken-images="1"' in dom.stdout


# -- MLflow -------------------------------------------------------------------------------------

def test_a_run_read_back_from_mlflow_and_the_report_logged_to_it(run_folder, tmp_path):
    from flows.spec import load_benchmark
    from flows.store import read_parquet
    from flows.tracking import TAG_OUT_DIR, Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = load_benchmark("default")
    tracker = Tracker(uri, "report-test")
    parent = tracker.parent_run(spec, "report-test")
    tracker.log_text(parent.run_id, (run_folder / "references.json").read_text(), "references.json")
    for model in MODELS:
        config = {"name": model, "steps": 4, "guidance": 7.5, "height": SIDE, "width": SIDE, "dtype": "float32"}
        for perturbation in PERTURBATIONS:
            child = tracker.child_run(parent.run_id, spec, config, perturbation)
            where = run_folder / "cells" / model / perturbation
            tracker.log_cell(child.run_id, read_parquet(where / "images.parquet"), tmp_path / "logged" / model / perturbation,
                             contact_sheets=[where / "contact_sheet.png"], resamples=100)
            tracker.finish(child.run_id)

    downloaded = load_results(parent.run_id, uri)
    assert downloaded.source == "mlflow" and downloaded.temporary
    local = load_results(run_folder)
    key = lambda r: (r["model"], r["perturbation"], r["reference_id"], r.get("image_index", 0))  # noqa: E731
    assert sorted(downloaded.image_rows, key=key) == sorted(local.image_rows, key=key)
    assert sorted(downloaded.reference_rows, key=key) == sorted(local.reference_rows, key=key)
    assert downloaded.references == local.references and downloaded.benchmark_yaml == spec.to_yaml()
    assert downloaded.generated_image(local.image_rows[0]["image_sha256"]) is None
    text = build_report(downloaded, analyze(downloaded.reference_rows, {}, resamples=100), None)
    assert len(_sources(text, "sheet")) == len(MODELS) * len(PERTURBATIONS)
    assert not _sources(text, "thumb")
    assert "contact sheets are the ones logged with each cell" in text
    shutil.rmtree(downloaded.folder)

    tracker.client.set_tag(parent.run_id, TAG_OUT_DIR, str(run_folder))
    found = load_results(parent.run_id, uri)
    assert (found.source, found.folder, found.parent_run_id, found.temporary) == ("folder", run_folder, parent.run_id, False)

    out = write_report(parent.run_id, tmp_path / "logged-report.html", tracking_uri=uri)
    assert "logged-report.html" in [a.path for a in tracker.client.list_artifacts(parent.run_id)]
    assert out.read_text().count("<section id=") == len(SECTIONS)
    with pytest.raises(Exception, match="no MLflow run"):
        load_results("0" * 32, uri)


# -- the command --------------------------------------------------------------------------------

def test_iconicity_report_writes_the_file_and_warns_when_mlflow_is_unreachable(run_folder, tmp_path, capsys):
    from services.cli import main

    out = tmp_path / "r.html"
    assert main(["report", str(run_folder), "--no-mlflow", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_text().count("<section id=") == len(SECTIONS)
    assert "Validation not computed" in out.read_text()

    # a summary naming a store that is not there: the report is written, the log is a warning
    copy = tmp_path / "copy"
    shutil.copytree(run_folder, copy, ignore=shutil.ignore_patterns("results", "report.html"))
    summary = json.loads((copy / "summary.json").read_text())
    summary.update(parent_run_id="f" * 32, tracking_uri=f"sqlite:///{tmp_path / 'gone.db'}")
    (copy / "summary.json").write_text(json.dumps(summary))
    assert main(["report", str(copy)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(copy / "report.html") and (copy / "report.html").is_file()
    assert captured.err.strip() == f"iconicity: warning: report not logged to MLflow: no store at {summary['tracking_uri']}"
    assert 'class="sheet"' in (copy / "report.html").read_text()  # the logged sheets: the images are gone
    # the folder's own validation.json (the analyze flow's) is shown without --validation
    (copy / "validation.json").write_text(json.dumps(validation_result()))
    assert main(["report", str(copy), "--no-mlflow", "--out", str(tmp_path / "v.html")]) == 0
    assert "Validation not computed" not in (tmp_path / "v.html").read_text()
    assert "<td>vr</td><td>0.98</td><td>0.90</td>" in (tmp_path / "v.html").read_text()
    with pytest.warns(ReportWarning, match="no store at"):
        assert report.log_report(copy / "report.html", summary["parent_run_id"], summary["tracking_uri"]) is False


def test_an_unreachable_tracking_server_is_a_warning(tmp_path):
    page = tmp_path / "report.html"
    page.write_text("<html></html>")
    with pytest.warns(ReportWarning, match="cannot reach the server"):
        assert report.log_report(page, "f" * 32, "http://127.0.0.1:9") is False


@pytest.mark.parametrize(("args", "message"), [
    (["missing-folder"], "no results folder missing-folder"),
    (["0123456789abcdef0123456789abcdef"], "pass --tracking-uri URI or set MLFLOW_TRACKING_URI"),
    (["RUN", "--validation", "nope.json"], "no validation file nope.json"),
])
def test_iconicity_report_errors_are_one_line(args, message, run_folder, tmp_path, capsys, monkeypatch):
    from services.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    args = [str(run_folder) if a == "RUN" else a for a in args]
    assert main(["report", *args, "--no-mlflow"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("iconicity: error: ") and message in err


def test_bad_inputs_are_clear_errors(run_folder, tmp_path):
    results = load_results(run_folder)
    with pytest.raises(ValueError, match="not a validation result"):
        build_report(results, {}, {"auc": 1})
    with pytest.raises(ValueError, match="analysis must be a dict"):
        build_report(results, [], None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="not a results folder"):
        load_results(tmp_path / "empty")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ReportError, match="is not JSON"):
        write_report(run_folder, tmp_path / "x.html", validation=tmp_path / "bad.json", log_to_mlflow=False)


def test_a_real_validation_result_renders(run_folder):
    from services.common.images import DecodedImage
    from services.scorer.encoders.classical import ClassicalEncoder
    from services.scorer.references import Reference
    from services.scorer.validation import validate

    rng = np.random.default_rng(0)
    works = [Reference(f"w{i}", (DecodedImage("1.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), str(i)),))
             for i in range(3)]
    result = validate(ClassicalEncoder(None), ClassicalEncoder(None), works, per_class=1, partial_ks=(4, 8)).to_json()
    results = load_results(run_folder)
    text = build_report(results, analyze(results.reference_rows, {}, resamples=100), json.loads(json.dumps(result)))
    section = text.split('<section id="validation">')[1].split("</section>")[0]
    assert len(_sources(section, "plot")) == 2  # the ROC curves and the partial-reuse plot
    auc_table = section.split("ROC AUC per metric")[1].split("</table>")[0]
    for task, outcome in result["tasks"].items():
        assert f"<th>{task}</th>" in auc_table
        for metric, curve in outcome["metrics"].items():
            assert f"<td>{metric}</td><td>" in auc_table and f"{curve['auc']:.2f}" in auc_table
    confusion = section.split("Confusion at the calibrated thresholds")[1].split("</table>")[0]
    for label, counts in zip(result["confusion"]["labels"], result["confusion"]["counts"]):
        assert f"<td>{label}</td>" + "".join(f"<td>{c}</td>" for c in counts) in confusion


def test_the_report_says_whether_the_validation_was_reused(run_folder):
    results = load_results(run_folder)
    analysis = analyze(results.reference_rows, {}, resamples=100)
    base = {"tasks": {}, "encoders": {"recognition": "classical", "realization": "classical"}, "n_pairs": {}}
    sections = {}
    for hit in (True, False, None):
        validation = base if hit is None else {**base, "cache": {"key": "0123456789abcdef", "hit": hit}}
        text = build_report(results, analysis, validation)
        sections[hit] = text.split('<section id="validation">')[1].split("</section>")[0]
    assert "reused from an earlier run with the same provenance (key 0123456789ab)" in sections[True]
    assert "computed for this run (key 0123456789ab)" in sections[False]
    assert "reused" not in sections[None] and "computed for this run" not in sections[None]


def test_the_report_draws_without_loading_torch():
    """`iconicity report` needs crop grids, not tensors: importing torch cost it ~3 s."""
    import subprocess
    import sys

    code = ("import sys, numpy as np; from PIL import Image; from flows.report import tinted_thumbnail; "
            "tinted_thumbnail(Image.new('RGB', (64, 48)), [True] * 16); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parents[1]))
    assert out.stdout.strip() == "False"
