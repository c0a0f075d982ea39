"""`iconicity report`: one self-contained HTML file that shows what a benchmark run found.

    iconicity report RUN [--out FILE.html] [--tracking-uri URI] [--validation FILE.json] [--no-mlflow]

RUN is a results folder (`iconicity run --out DIR`) or a benchmark's MLflow parent run id.
For a run id the folder named by the run's `iconicity.out_dir` tag is used when it exists
on this machine; otherwise the parent's and the children's artifacts are downloaded into a
temporary folder laid out the same way. The generated images are not MLflow artifacts, so
the contact sheets then fall back to the PNG sheets logged with each child run.

The file embeds everything (inline CSS, plots and thumbnails as `data:` URIs, a few lines of
inline JavaScript), so it opens offline in any browser and prints. Its sections, each a
`<section>` with a stable id (`SECTIONS`): the summary table per model with a plain-language
reading, the recognition-realization map, per-model bars, perturbation deltas and survival,
correlates, validation, contact sheets with the reused crops tinted, and provenance.

The numbers come from `flows.analysis.analyze` (and, when given, the JSON of
`iconicity validate ... --json FILE`); this module only lays them out. `write_report` writes
the file (default `<folder>/report.html`) and logs it to the parent run when the store is
reachable; a failure to log is a warning, not a failure.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import html
import importlib.metadata
import io
import json
import numbers
import os
import platform
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.common.files import write_atomically

SECTIONS = ("summary", "map", "bars", "perturbations", "correlates", "validation", "contact-sheets", "provenance")
METRICS = ("cra", "vr", "vi", "crt")
IMAGERIES = ("static", "dynamic", "all")
THUMB = 160  # px, the longer side of a contact-sheet thumbnail
MAX_CONTACT_REFERENCES = 40  # beyond this the contact sheets would make the file unwieldy
TINT = (230, 60, 20)  # the reused crops' colour
TINT_ALPHA = 0.4
VERSIONED = ("iconicity", "torch", "diffusers", "transformers", "prefect", "mlflow", "numpy", "matplotlib")
VALIDATE_COMMAND = "iconicity validate --references DIR --json FILE.json"
VALIDATION_FILE = "validation.json"  # where the analyze flow leaves a run's validation
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


class ReportError(RuntimeError):
    """No such folder or run, or nothing to report: one line for the CLI."""


class ReportWarning(UserWarning):
    """Something the report could not do but could do without (logging it to MLflow)."""


# -- loading a run ------------------------------------------------------------------------------

@dataclass
class RunResults:
    """What a benchmark run left, read back: the rows of every cell, the references and the
    resolved benchmark file, and where the images are."""

    folder: Path
    name: str
    references: list[dict[str, Any]]  # references.json: id, slug, title, imagery, covariates, image_file, ...
    image_rows: list[dict[str, Any]]  # store.IMAGE_COLUMNS rows of every cell
    reference_rows: list[dict[str, Any]]  # store.REFERENCE_COLUMNS rows of every cell
    cells: list[dict[str, Any]]  # model, perturbation, status, run_id, error
    benchmark_yaml: str = ""
    parent_run_id: str | None = None
    tracking_uri: str | None = None
    source: str = "folder"  # folder | mlflow (artifacts downloaded: no generated images)
    temporary: bool = False  # the folder is a download to delete once reported
    notes: list[str] = field(default_factory=list)

    def generated_image(self, sha256: str) -> Path | None:
        """A generated image's file in the run's result store, or None where it is not here."""
        from flows.store import ResultStore

        path = ResultStore.image_path(_StoreRoot(self.folder / "results"), sha256)
        return path if path.is_file() else None

    def contact_sheet(self, model: str, perturbation: str) -> Path | None:
        path = self.folder / "cells" / model / perturbation / "contact_sheet.png"
        return path if path.is_file() else None

    def reference_image(self, reference: Mapping[str, Any]) -> Path | None:
        name = reference.get("image_file")
        path = self.folder / name if name else None
        return path if path is not None and path.is_file() else None


@dataclass(frozen=True)
class _StoreRoot:
    """Enough of a `ResultStore` for its `image_path` (opening one would create its database)."""

    root: Path


def load_results(run: str | os.PathLike[str], tracking_uri: str | None = None) -> RunResults:
    """The results of RUN: a results folder, or an MLflow parent run id (looked up in
    `tracking_uri`, else `$MLFLOW_TRACKING_URI`).

    >>> load_results("/no/such/folder")
    Traceback (most recent call last):
    ...
    flows.report.ReportError: no results folder /no/such/folder
    """
    text = str(run)
    if Path(text).is_dir():
        return _load_folder(Path(text))
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if _RUN_ID.fullmatch(text):
        if not uri:
            raise ReportError(f"{text} is no folder here; to read it as an MLflow run id pass --tracking-uri URI "
                              "or set MLFLOW_TRACKING_URI")
        return _load_mlflow(text, uri)
    raise ReportError(f"no results folder {text}")


def _load_folder(folder: Path, parent_run_id: str | None = None, tracking_uri: str | None = None) -> RunResults:
    from flows.store import read_parquet

    summary = _read_json(folder / "summary.json", {})
    if not summary and not (folder / "cells").is_dir():
        raise ReportError(f"{folder} is not a results folder (no summary.json and no cells/)")
    cells = [dict(c) for c in summary.get("cells", [])] or [
        {"model": p.parent.parent.name, "perturbation": p.parent.name, "status": "completed", "run_id": None}
        for p in sorted((folder / "cells").glob("*/*/references.parquet"))]
    image_rows: list[dict[str, Any]] = []
    reference_rows: list[dict[str, Any]] = []
    notes = []
    for cell in cells:
        where = folder / "cells" / cell["model"] / cell["perturbation"]
        if (where / "references.parquet").is_file() and (where / "images.parquet").is_file():
            reference_rows += read_parquet(where / "references.parquet")
            image_rows += read_parquet(where / "images.parquet")
        elif cell.get("status") == "completed":
            notes.append(f"{cell['model']}/{cell['perturbation']}: its result files are missing from {where}.")
    spec_file = folder / "benchmark.yaml"
    return RunResults(
        folder=folder, name=summary.get("name") or folder.name, references=_read_json(folder / "references.json", []),
        image_rows=image_rows, reference_rows=reference_rows, cells=cells,
        benchmark_yaml=spec_file.read_text() if spec_file.is_file() else "",
        parent_run_id=parent_run_id or summary.get("parent_run_id") or None,
        tracking_uri=tracking_uri or summary.get("tracking_uri") or None, notes=notes)


def _read_json(path: Path, default: Any) -> Any:
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ReportError(f"{path} is not JSON: {error}") from None


def _load_mlflow(run_id: str, uri: str) -> RunResults:
    """The folder named by the parent's `iconicity.out_dir` tag when it is here, else its
    artifacts and its children's, downloaded."""
    from flows.compare import RunSource
    from flows.tracking import TAG_KIND, TAG_OUT_DIR, TAG_PARENT, quick_http, sqlite_database

    database = sqlite_database(uri)
    if database is not None and not database.is_file():
        raise ReportError(f"no MLflow store at {uri} (no such database file)")
    with quick_http():
        source = RunSource(uri)
        run = source.run(run_id)
        if run.data.tags.get(TAG_KIND) == "child" and run.data.tags.get(TAG_PARENT):
            run_id = run.data.tags[TAG_PARENT]
            run = source.run(run_id)
        out_dir = run.data.tags.get(TAG_OUT_DIR)
        if out_dir and (Path(out_dir) / "summary.json").is_file():
            return _load_folder(Path(out_dir), run_id, uri)
        cells = source.cells_of(run_id)
        folder = Path(tempfile.mkdtemp(prefix=f"iconicity-report-{run_id[:8]}-"))
        try:
            for name in ("references.json", "benchmark.yaml"):
                _download(run_id, name, folder, uri)
            summary_cells = []
            for cell in cells:
                where = folder / "cells" / cell.model / cell.perturbation
                got = [_download(cell.run_id, f"results/{name}", where, uri)
                       for name in ("images.parquet", "references.parquet")]
                sheets = _download(cell.run_id, "contact_sheets", where, uri)
                if sheets is not None:
                    found = sorted(sheets.glob("*.png"))
                    if found:
                        shutil.copyfile(found[0], where / "contact_sheet.png")
                for path in got:
                    if path is not None:
                        shutil.move(str(path), where / path.name)
                summary_cells.append({"model": cell.model, "perturbation": cell.perturbation, "run_id": cell.run_id,
                                      "status": "completed" if all(got) else "no results logged"})
            summary = {"name": run.data.tags.get("iconicity.benchmark") or run.info.run_name or run_id,
                       "parent_run_id": run_id, "tracking_uri": uri, "cells": summary_cells}
            (folder / "summary.json").write_text(json.dumps(summary, indent=2))
            results = _load_folder(folder, run_id, uri)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    results.source, results.temporary = "mlflow", True
    where = f" (its results folder {out_dir} is not on this machine)" if out_dir else ""
    results.notes.insert(0, f"Read from MLflow run {run_id} at {uri}{where}: the generated images are not "
                            "MLflow artifacts, so the contact sheets are the ones logged with each cell.")
    return results


def _download(run_id: str, artifact: str, dst: Path, uri: str) -> Path | None:
    """An artifact of a run into `dst`, or None when the run has no such artifact."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    dst.mkdir(parents=True, exist_ok=True)
    try:
        return Path(download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=str(dst), tracking_uri=uri))
    except (MlflowException, OSError):
        return None


# -- the plain-language reading ----------------------------------------------------------------

def _by_model(rows: Iterable[Mapping[str, Any]], imagery: str = "all") -> dict[str, dict[str, Mapping[str, Any]]]:
    table: dict[str, dict[str, Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("imagery", "all") == imagery:
            table.setdefault(row["model"], {})[row["metric"]] = row
    return table


def _value(table: Mapping[str, Mapping[str, Any]], metric: str) -> float | None:
    row = table.get(metric)
    return None if row is None or row.get("value") is None else float(row["value"])


def reading(model_comparison: Sequence[Mapping[str, Any]], crt_variant: str = "recognized_images") -> list[str]:
    """Sentences that read the per-model table (imagery "all"): who recognizes most, who
    replicates (recognized and reused) and who transforms (high CRT). Says so, and nothing
    more, when nothing is recognized. CRT / CRA is the mean VI over recognized images (over
    all images for the `all_images` variant).

    >>> rows = [{"model": m, "imagery": "all", "metric": k, "value": v, "ci_low": v, "ci_high": v}
    ...         for m, values in {"a": (0.0, 0.1, 0.9, 0.0), "b": (0.0, 0.2, 0.8, 0.0)}.items()
    ...         for k, v in zip(("cra", "vr", "vi", "crt"), values)]
    >>> reading(rows)[0]
    'Nothing is recognized: CRA is 0 for both models, so no generated image evokes its reference and this run says nothing about replication or transformation.'
    """
    table = _by_model(model_comparison)
    cra = {m: v for m, v in ((m, _value(t, "cra")) for m, t in table.items()) if v is not None}
    if not cra:
        return ["No model has a CRA to read."]
    if all(v == 0 for v in cra.values()):
        who = "the model" if len(cra) == 1 else ("both models" if len(cra) == 2 else f"all {len(cra)} models")
        return [f"Nothing is recognized: CRA is 0 for {who}, so no generated image evokes its reference and this run "
                "says nothing about replication or transformation."]
    ranked = sorted(cra, key=lambda m: -cra[m])
    best = ranked[0]
    sentences = [_recognition_sentence(table, ranked)]
    silent = [m for m in ranked if cra[m] == 0]
    if silent:
        sentences.append(f"{_names(silent)} recognize{'s' if len(silent) == 1 else ''} nothing (CRA 0).")
    recognizers = [m for m in ranked if cra[m] > 0]
    for model in recognizers:
        crt = _value(table[model], "crt")
        if crt is None:
            continue
        transformed = min(1.0, crt / cra[model])
        verb = "transforms" if transformed >= 0.5 else "replicates"
        over = "of what it recognizes" if crt_variant == "recognized_images" else "over all its images"
        sentences.append(f"{model} mostly {verb}: {over}, {transformed:.0%} is transformed "
                         f"(CRT {crt:.2f} of CRA {cra[model]:.2f}) and {1 - transformed:.0%} reused.")
    crts = {m: _value(table[m], "crt") for m in recognizers if _value(table[m], "crt") is not None}
    if len(crts) > 1:
        replication = {m: cra[m] - crts[m] for m in crts}
        most_reuse = max(replication, key=lambda m: replication[m])
        most_transform = max(crts, key=lambda m: crts[m])
        if crts[most_transform] > 0:
            sentences.append(f"{most_transform} transforms most (highest CRT, {crts[most_transform]:.2f}); "
                             f"{most_reuse} replicates most (recognized and reused, CRA − CRT = "
                             f"{replication[most_reuse]:.2f}).")
        else:
            sentences.append("No recognized image is transformed (CRT 0 for every model): what is recognized is reused.")
    elif best in crts and crts[best] == 0:
        sentences.append("No recognized image is transformed (CRT 0): what is recognized is reused.")
    return sentences


def _recognition_sentence(table: Mapping[str, Mapping[str, Mapping[str, Any]]], ranked: Sequence[str]) -> str:
    best = ranked[0]
    row = table[best]["cra"]
    text = f"{best} recognizes {'most' if len(ranked) > 1 else 'its references'}: CRA {_interval(row)}"
    if len(ranked) > 1:
        others = ", ".join(f"{m} {float(table[m]['cra']['value']):.2f}" for m in ranked[1:])
        text += f", then {others}"
        second = table[ranked[1]]["cra"]
        if _overlap(row, second):
            text += f"; its interval overlaps {ranked[1]}'s, so the lead is not certain"
    return text + "."


def _overlap(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if None in (a.get("ci_low"), a.get("ci_high"), b.get("ci_low"), b.get("ci_high")):
        return True
    return float(a["ci_low"]) <= float(b["ci_high"]) and float(b["ci_low"]) <= float(a["ci_high"])


def _names(models: Sequence[str]) -> str:
    return models[0] if len(models) == 1 else ", ".join(models[:-1]) + " and " + models[-1]


# -- formatting --------------------------------------------------------------------------------

def _number(value: Any, digits: int = 2) -> str:
    """A number for a table cell; a dash for a missing one.

    >>> _number(0.5), _number(None), _number(3), _number(float("nan"))
    ('0.50', '–', '3', '–')
    """
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    return f"{float(value):.{digits}f}"


def _interval(row: Mapping[str, Any], key: str = "value") -> str:
    """A value with its 95% interval.

    >>> _interval({"value": 0.5, "ci_low": 0.4, "ci_high": 0.61})
    '0.50 [0.40, 0.61]'
    """
    if row.get(key) is None:
        return "–"
    if row.get("ci_low") is None or row.get("ci_high") is None:
        return _number(row[key])
    return f"{_number(row[key])} [{_number(row['ci_low'])}, {_number(row['ci_high'])}]"


def _bounds(row: Mapping[str, Any]) -> str:
    """An interval's bounds; a dash when it has none.

    >>> _bounds({"ci_low": -0.1, "ci_high": 0.3}), _bounds({"ci_low": None, "ci_high": None})
    ('[-0.10, 0.30]', '–')
    """
    if row.get("ci_low") is None and row.get("ci_high") is None:
        return "–"
    return f"[{_number(row.get('ci_low'))}, {_number(row.get('ci_high'))}]"


def _p_value(value: Any) -> str:
    if value is None:
        return "–"
    return f"{float(value):.2g}" if float(value) < 0.01 else f"{float(value):.3f}"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], css: str = "") -> str:
    """An HTML table of already formatted cells (escaped here).

    >>> _table(["a"], [["<b>"]])
    '<table><thead><tr><th>a</th></tr></thead><tbody><tr><td>&lt;b&gt;</td></tr></tbody></table>'
    """
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    klass = f' class="{css}"' if css else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _data_uri(data: bytes, media_type: str) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def _img(data: bytes, media_type: str, alt: str, css: str) -> str:
    return f'<img class="{css}" alt="{_e(alt)}" src="{_data_uri(data, media_type)}">'


# -- plots -------------------------------------------------------------------------------------

def _figure(width: float, height: float):
    # A Figure on an Agg canvas: no display needed, and no global pyplot state shared between threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _plot(figure, alt: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return f"<figure>{_img(buffer.getvalue(), 'image/png', alt, 'plot')}<figcaption>{_e(alt)}</figcaption></figure>"


def _colour(models: Sequence[str], model: str) -> str:
    return _COLOURS[list(models).index(model) % len(_COLOURS)]


def _baseline_rows(results: RunResults, baseline: str) -> list[dict[str, Any]]:
    return [r for r in results.reference_rows if r["perturbation"] == baseline]


def _legend_above(figure, axes) -> None:
    handles, labels = axes.get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside upper center", ncols=len(handles), fontsize=9, frameon=False)


def map_plot(results: RunResults, baseline: str) -> str:
    """CRA (x) against VI (y) per reference and model on the baseline prompts, with the
    quadrants of METHOD.md's reading."""
    rows = _baseline_rows(results, baseline)
    models = sorted({r["model"] for r in rows})
    figure = _figure(8.8, 5.2)
    axes = figure.subplots()
    for model in models:
        # References at the same point (all at CRA 0 with tiny models) are one larger marker with their count.
        points: dict[tuple[float, float], int] = {}
        for r in rows:
            if r["model"] == model and r["cra"] is not None and r["vi"] is not None:
                point = (round(float(r["cra"]), 3), round(float(r["vi"]), 3))
                points[point] = points.get(point, 0) + 1
        axes.scatter([x for x, _ in points], [y for _, y in points], s=[40 + 14 * (n - 1) for n in points.values()],
                     alpha=0.7, label=model, color=_colour(models, model), edgecolors="white", linewidths=0.6)
        for (x, y), n in points.items():
            if n > 1:
                axes.annotate(str(n), (x, y), xytext=(6, 4), textcoords="offset points", fontsize=8,
                              color=_colour(models, model))
    axes.axvline(0.5, color="#777", lw=1, ls="--")
    axes.axhline(0.5, color="#777", lw=1, ls="--")
    style = {"fontsize": 11, "color": "#555", "ha": "center", "va": "center", "alpha": 0.9}
    axes.text(0.25, 0.5, "not recognized", rotation=90, **style)
    axes.text(0.75, 0.25, "replicated", **style)
    axes.text(0.75, 0.75, "transformed", **style)
    axes.set(xlim=(-0.04, 1.04), ylim=(-0.04, 1.04), xlabel="CRA (recognition)", ylabel="VI (visual independence)")
    if models:  # outside the axes: the corners are where the points gather
        axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9, framealpha=0.8)
    return _plot(figure, f"Recognition-realization map: each point a reference and a model ({baseline} prompts)")


def bars_plot(model_comparison: Sequence[Mapping[str, Any]]) -> str:
    """Per model and metric: static, dynamic and all references, with interval error bars."""

    models = list(dict.fromkeys(r["model"] for r in model_comparison))
    imageries = [i for i in IMAGERIES if any(r.get("imagery") == i for r in model_comparison)]
    figure = _figure(10, 3.4)
    grid = figure.subplots(1, len(METRICS), sharey=True)
    width = 0.8 / max(1, len(imageries))
    shades = {"static": "#4c72b0", "dynamic": "#dd8452", "all": "#55a868"}
    for axes, metric in zip(grid, METRICS):
        for j, imagery in enumerate(imageries):
            table = _by_model(model_comparison, imagery)
            xs, values, errors = _bar_series([table.get(model, {}).get(metric) for model in models], "value",
                                             (j - (len(imageries) - 1) / 2) * width)
            axes.bar(xs, values, width, yerr=errors, capsize=3, color=shades[imagery], label=imagery)
        axes.set_title(metric.upper())
        axes.set_xticks(range(len(models)), models, rotation=20, fontsize=8)
        axes.set_ylim(0, 1.05)
    _legend_above(figure, grid[0])
    return _plot(figure, "Per model: CRA, VR, VI, CRT over static, dynamic and all references (95% intervals)")


def _bar_series(rows: Sequence[Mapping[str, Any] | None], key: str, offset: float):
    """x positions (model i + offset), values and (2, n) error bar lengths of one bar series;
    models without a value are left out."""
    import numpy as np

    xs, values, low, high = [], [], [], []
    for i, row in enumerate(rows):
        if row is None or row.get(key) is None:
            continue
        value = float(row[key])
        xs.append(i + offset)
        values.append(value)
        low.append(value - float(row["ci_low"]) if row.get("ci_low") is not None else 0.0)
        high.append(float(row["ci_high"]) - value if row.get("ci_high") is not None else 0.0)
    return xs, values, np.array([low, high]).reshape(2, -1)


def deltas_plot(sensitivity: Sequence[Mapping[str, Any]]) -> str:
    """The change from the original prompt per model x perturbation x metric, with intervals."""
    import numpy as np

    metrics = list(dict.fromkeys(r["metric"] for r in sensitivity))
    models = list(dict.fromkeys(r["model"] for r in sensitivity))
    perturbations = list(dict.fromkeys(r["perturbation"] for r in sensitivity))
    figure = _figure(10, 3.4)
    grid = np.atleast_1d(figure.subplots(1, max(1, len(metrics)), sharey=True))
    width = 0.8 / max(1, len(perturbations))
    for axes, metric in zip(grid, metrics):
        for j, perturbation in enumerate(perturbations):
            rows = [next((r for r in sensitivity if (r["model"], r["perturbation"], r["metric"]) ==
                          (model, perturbation, metric)), None) for model in models]
            xs, values, errors = _bar_series(rows, "delta", (j - (len(perturbations) - 1) / 2) * width)
            axes.bar(xs, values, width, yerr=errors, capsize=3, color=_COLOURS[(j + 3) % len(_COLOURS)],
                     label=perturbation)
        axes.axhline(0, color="#333", lw=0.8)
        axes.set_title(f"Δ{metric.upper()}")
        axes.set_xticks(range(len(models)), models, rotation=20, fontsize=8)
        axes.set_ylim(-1.05, 1.05)
    _legend_above(figure, grid[0])
    return _plot(figure, "Change against the original title, paired by reference (95% paired bootstrap intervals)")


def covariate_plot(results: RunResults, covariates: Mapping[str, Mapping[str, Any]], baseline: str) -> str | None:
    """Per-reference CRA against each covariate that has values; None when none has."""
    rows = _baseline_rows(results, baseline)
    present = [covariates.get(r["reference_id"]) or {} for r in rows]
    names = [c for c in dict.fromkeys(k for values in covariates.values() for k in values)
             if any(v.get(c) is not None for v in present)]
    if not names:
        return None
    models = sorted({r["model"] for r in rows})
    figure = _figure(min(12.0, 3.2 * len(names)), 3.2)
    grid = figure.subplots(1, len(names), sharey=True, squeeze=False)[0]
    for axes, name in zip(grid, names):
        for model in models:
            points = [(covariates.get(r["reference_id"], {}).get(name), r["cra"]) for r in rows if r["model"] == model]
            points = [(float(x), float(y)) for x, y in points if x is not None]
            if points:
                axes.scatter(*zip(*points), s=30, alpha=0.7, color=_colour(models, model), label=model)
        values = [float(v[name]) for v in present if v.get(name) is not None]
        if min(values) >= 0 and max(values) > 100 * max(1.0, min(values)):
            axes.set_xscale("symlog")  # counts span orders of magnitude
        axes.set_xlabel(name.replace("_", " "))
        axes.set_ylim(-0.04, 1.04)
    grid[0].set_ylabel(f"CRA ({baseline} prompts)")
    grid[0].legend(fontsize=8)
    return _plot(figure, "Per-reference CRA against each covariate with values")


def roc_plot(validation: Mapping[str, Any]) -> str:
    """ROC curves per validation task, one curve per metric (one colour per metric throughout)."""
    tasks = list(validation.get("tasks", {}))
    metrics = list(dict.fromkeys(m for t in tasks for m in validation["tasks"][t].get("metrics", {})))
    figure = _figure(min(12.0, 3.6 * max(1, len(tasks))), 4.2)
    grid = figure.subplots(1, max(1, len(tasks)), squeeze=False, sharey=True)[0]
    for axes, task in zip(grid, tasks):
        for metric, curve in validation["tasks"][task].get("metrics", {}).items():
            if curve.get("fpr") and curve.get("tpr"):
                axes.plot(curve["fpr"], curve["tpr"], lw=1.5, label=metric,
                          color=_COLOURS[metrics.index(metric) % len(_COLOURS)])
        axes.plot([0, 1], [0, 1], color="#999", lw=0.8, ls=":")
        axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", title=task.replace("_", " "))
    grid[0].set_ylabel("true positive rate")
    handles = {label: handle for axes in grid for handle, label in zip(*axes.get_legend_handles_labels())}
    if handles:
        figure.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(4, len(handles)),
                      fontsize=8, frameon=False)
    return _plot(figure, "Validation: ROC curves per task (AUC in the table below)")


def partial_plot(partial: Sequence[Mapping[str, Any]]) -> str:
    """Mean VR of partial-reuse composites against the share k/16 of cells taken from the work."""
    figure = _figure(4.6, 3.6)
    axes = figure.subplots()
    points = [(float(p["vr_expected"]), float(p["vr_mean"])) for p in partial
              if p.get("vr_expected") is not None and p.get("vr_mean") is not None]
    if points:
        axes.plot(*zip(*points), "o-", color=_COLOURS[0], label="mean VR")
    axes.plot([0, 1], [0, 1], color="#999", lw=0.8, ls=":", label="VR = k/16")
    axes.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="k/16 (cells from the work)", ylabel="VR")
    axes.legend(fontsize=8)
    return _plot(figure, "Partial reuse: VR of composites against k/16")


# -- contact sheets ----------------------------------------------------------------------------

def tinted_thumbnail(picture, reuse_map: Sequence[int], size: int = THUMB):
    """The image with the cells whose `reuse_map` is 1 tinted (`TINT` at `TINT_ALPHA`, cell
    bounds from `grid_bounds` at the image's own size, as the scorer cut them), then scaled
    so that its longer side is `size`.

    >>> from PIL import Image
    >>> grey = Image.new("RGB", (8, 8), (100, 100, 100))
    >>> out = tinted_thumbnail(grey, [1] + [0] * 15, size=8)
    >>> out.getpixel((0, 0)), out.getpixel((7, 7))
    ((152, 84, 68), (100, 100, 100))
    """
    import numpy as np
    from PIL import Image

    from services.scorer.crops import GRID, grid_bounds

    pixels = np.asarray(picture.convert("RGB"), dtype=np.float64).copy()
    cells = list(reuse_map)
    bounds = grid_bounds(pixels.shape[0], pixels.shape[1])
    if len(cells) != len(bounds):
        raise ValueError(f"a reuse map has {len(bounds)} cells ({GRID[0]}x{GRID[1]}), got {len(cells)}")
    for flag, (top, bottom, left, right) in zip(cells, bounds):
        if flag:
            pixels[top:bottom, left:right] = (1 - TINT_ALPHA) * pixels[top:bottom, left:right] + TINT_ALPHA * np.array(TINT)
    return _fit(Image.fromarray(np.round(pixels).astype(np.uint8)), size)


def _fit(picture, size: int):
    from PIL import Image

    scale = size / max(picture.size)
    target = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    method = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS  # small images stay crisp
    return picture.resize(target, method)


def _jpeg(picture) -> bytes:
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _thumbnail_html(path: Path | None, alt: str, caption: str, reuse_map: Sequence[int] | None = None,
                    css: str = "thumb") -> str:
    from PIL import Image

    if path is None:
        return f'<figure class="tile"><div class="missing">image not here</div><figcaption>{_e(caption)}</figcaption></figure>'
    with Image.open(path) as opened:
        if reuse_map is None:
            # A JPEG (a reference image, often thousands of pixels wide) decodes at 1/2 to 1/8 of
            # its size where that still leaves twice the thumbnail's: a fraction of the work of
            # decoding and resampling every pixel, for the same thumbnail to the eye. (Not a
            # generated image: its reuse cells are cut at its own size.)
            opened.draft("RGB", (2 * THUMB, 2 * THUMB))
        opened.load()
        picture = tinted_thumbnail(opened, reuse_map) if reuse_map is not None else _fit(opened.convert("RGB"), THUMB)
    return f'<figure class="tile">{_img(_jpeg(picture), "image/jpeg", alt, css)}<figcaption>{_e(caption)}</figcaption></figure>'


def contact_sheets_html(results: RunResults, limit: int = MAX_CONTACT_REFERENCES) -> str:
    """Per reference: its canonical image, then per (model, perturbation) its generated
    images with the reused crops tinted; the logged sheets where the images are not here."""
    if not results.image_rows:
        return "<p>No scored images.</p>"
    have_images = any(results.generated_image(r["image_sha256"]) for r in results.image_rows)
    if not have_images:
        return _logged_sheets_html(results)
    by_reference: dict[str, list[Mapping[str, Any]]] = {}
    for row in results.image_rows:
        by_reference.setdefault(row["reference_id"], []).append(row)
    known = {r["id"]: r for r in results.references}
    order = [r["id"] for r in results.references if r["id"] in by_reference]
    order += [i for i in by_reference if i not in order]
    cells = [(c["model"], c["perturbation"]) for c in results.cells]
    parts = ['<p class="legend">Tinted cells: crops of the generated image whose best match among the '
             "reference's crops passes the reuse threshold (r<sub>ik</sub> = 1). s = recognition similarity "
             "s<sub>i</sub>; a ✓ marks a recognized image.</p>"]
    if len(order) > limit:
        parts.append(f"<p class=\"note\">Showing the first {limit} of {len(order)} references.</p>")
    parts += [_reference_sheet(results, known.get(i, {"id": i}), by_reference[i], cells) for i in order[:limit]]
    return "".join(parts)


def _reference_sheet(results: RunResults, reference: Mapping[str, Any], rows: Sequence[Mapping[str, Any]],
                     cells: Sequence[tuple[str, str]]) -> str:
    """One reference: its canonical image beside a grid of models (rows) x perturbations
    (columns), each grid cell the prompt's images in seed order."""
    title = reference.get("title") or reference["id"]
    order = {cell: i for i, cell in enumerate(cells)}
    present = sorted(dict.fromkeys((r["model"], r["perturbation"]) for r in rows), key=lambda k: order.get(k, len(order)))
    models = list(dict.fromkeys(m for m, _ in present))
    perturbations = list(dict.fromkeys(p for _, p in present))
    prompts = {r["perturbation"]: r["prompt"] for r in rows}
    head = "".join(f'<th>{_e(p)}<br><span class="muted">“{_e(prompts[p])}”</span></th>' for p in perturbations)
    body = []
    for model in models:
        tiles = []
        for perturbation in perturbations:
            mine = sorted((r for r in rows if (r["model"], r["perturbation"]) == (model, perturbation)),
                          key=lambda r: r["image_index"])
            tiles.append('<td><div class="strip">' + "".join(_thumbnail_html(
                results.generated_image(r["image_sha256"]), f"{title}: {model} {perturbation} seed {r['seed']}",
                f"{'✓ ' if r['recognized'] else ''}s={float(r['recognition_similarity']):.2f} VR={float(r['vr']):.2f}",
                reuse_map=r["reuse_map"]) for r in mine) + "</div></td>")
        body.append(f"<tr><th>{_e(model)}</th>{''.join(tiles)}</tr>")
    canonical = _thumbnail_html(results.reference_image(reference), f"{title}: reference image", "reference",
                                css="thumb reference-image")
    return (f'<div class="reference"><h3>{_e(title)} <span class="muted">({_e(reference["id"])}, '
            f'{_e(rows[0]["imagery"])})</span></h3><div class="pair"><div class="canonical">{canonical}</div>'
            f'<table class="sheet-grid"><thead><tr><th></th>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
            "</table></div></div>")


def _logged_sheets_html(results: RunResults) -> str:
    from PIL import Image

    parts = ['<p class="note">The generated images are not here; these are the contact sheets logged with each '
             "model x perturbation run (reference in a blue frame, recognized images in green; no reuse tint).</p>"]
    for cell in results.cells:
        path = results.contact_sheet(cell["model"], cell["perturbation"])
        if path is None:
            continue
        with Image.open(path) as sheet:
            sheet.load()
            picture = sheet.convert("RGB")
        if picture.width > 1100:
            picture = _fit(picture, 1100)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", optimize=True)
        label = f"{cell['model']} / {cell['perturbation']}"
        parts.append(f"<figure>{_img(buffer.getvalue(), 'image/png', f'contact sheet {label}', 'sheet')}"
                     f"<figcaption>{_e(label)}</figcaption></figure>")
    if len(parts) == 1:
        parts.append("<p>No contact sheet was logged either.</p>")
    return "".join(parts)


# -- sections ----------------------------------------------------------------------------------

def _section(section_id: str, title: str, body: str) -> str:
    return f'<section id="{section_id}"><h2>{_e(title)}</h2>{body}</section>'


def _summary_section(results: RunResults, analysis: Mapping[str, Any]) -> str:
    rows = analysis.get("model_comparison") or []
    table = _by_model(rows)
    body = [_table(["model", *(m.upper() for m in METRICS), "references"],
                   [[model, *(_interval(t[m]) if m in t else "–" for m in METRICS),
                     _number(next(iter(t.values())).get("n_references"))] for model, t in table.items()])]
    baseline = (analysis.get("settings") or {}).get("baseline", "original")
    variant = next((r.get("crt_variant") for r in results.reference_rows if r.get("crt_variant")), "recognized_images")
    among = "recognized images" if variant == "recognized_images" else "all images"
    body.append(f'<p class="muted">Means over references ({_e(baseline)} prompts) with bootstrap 95% intervals '
                "over references. CRA: recognition; VR/VI: reuse and independence of the pixels; "
                f"CRT = CRA × mean VI over {among}.</p>")
    body.append('<div class="reading">' + "".join(f"<p>{_e(s)}</p>" for s in reading(rows, variant)) + "</div>")
    failed = [c for c in results.cells if c.get("status") != "completed"]
    if failed:
        body.append("<p class=\"note\">Cells without results: " + _e("; ".join(
            f"{c['model']}/{c['perturbation']} ({c.get('error') or c.get('status')})" for c in failed)) + "</p>")
    notes = [*results.notes, *(analysis.get("notes") or [])]
    if notes:
        body.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    return _section("summary", "Summary", "".join(body))


def _perturbations_section(analysis: Mapping[str, Any]) -> str:
    sensitivity = analysis.get("perturbation_sensitivity") or []
    survival = analysis.get("iconic_survival") or []
    if not sensitivity:
        return _section("perturbations", "Prompt perturbations",
                        "<p>No perturbation besides the original title was run.</p>")
    body = [deltas_plot(sensitivity)]
    body.append(_table(["model", "perturbation", "metric", "Δ", "95% interval", "pairs", "unpaired"],
                       [[r["model"], r["perturbation"], r["metric"].upper(), _number(r.get("delta")),
                         _bounds(r), _number(r.get("n_pairs")),
                         _number(r.get("n_unpaired"))] for r in sensitivity]))
    body.append("<h3>Does the iconic structure survive?</h3><p class=\"muted\">Among references recognized and "
                "reused with the original title (eligible), the share still recognized and reused with the "
                "changed prompt.</p>")
    body.append(_table(["model", "perturbation", "eligible", "survived", "share", "pairs"],
                       [[r["model"], r["perturbation"], _number(r.get("eligible")), _number(r.get("survived")),
                         _number(r.get("share")), _number(r.get("n_pairs"))] for r in survival]))
    return _section("perturbations", "Prompt perturbations", "".join(body))


def _correlates_section(results: RunResults, analysis: Mapping[str, Any], covariates: Mapping[str, Any]) -> str:
    rows = analysis.get("correlates") or []
    baseline = (analysis.get("settings") or {}).get("baseline", "original")
    body = [_table(["scope", "metric", "covariate", "ρ", "95% interval", "p", "p (BH)", "n", "note"],
                   [[r["scope"], r["metric"].upper(), r["covariate"].replace("_", " "), _number(r.get("rho")),
                     _bounds(r), _p_value(r.get("p_value")),
                     _p_value(r.get("p_adjusted")), _number(r.get("n")), r.get("note") or ""] for r in rows])]
    body.insert(0, "<p class=\"muted\">Spearman's ρ of per-reference CRA and CRT with each covariate, per model "
                   "and pooled; p-values adjusted for multiple comparisons (Benjamini-Hochberg).</p>")
    plot = covariate_plot(results, covariates, baseline)
    body.append(plot if plot else "<p>No covariate has values for these references.</p>")
    return _section("correlates", "What recognition correlates with", "".join(body))


def _validation_section(validation: Mapping[str, Any] | None, note: str | None = None) -> str:
    if validation is None:
        why = f" ({_e(note)})" if note else ""
        return _section("validation", "Validation against plain similarity", (
            f'<p class="note">Validation not computed for this report{why}. It is computed by '
            f"<code>{_e(VALIDATE_COMMAND)}</code> (labelled replicas, partial reuse, transformations and "
            "unrelated works built from the reference images); pass the file with "
            "<code>iconicity report RUN --validation FILE.json</code>.</p>"))
    tasks = validation.get("tasks") or {}
    encoders = validation.get("encoders") or {}
    body = [f'<p class="muted">Encoders: recognition {_e(encoders.get("recognition", "?"))}, realization '
            f'{_e(encoders.get("realization", "?"))}; pairs: '
            + _e(", ".join(f"{k} {v}" for k, v in (validation.get("n_pairs") or {}).items())) + "."
            + _cache_note(validation.get("cache")) + "</p>"]
    body.append(roc_plot(validation))
    metrics = list(dict.fromkeys(m for t in tasks.values() for m in t.get("metrics", {})))
    body.append("<h3>ROC AUC per metric</h3>" + _table(
        ["metric", *(t.replace("_", " ") for t in tasks)],
        [[m, *(_number(tasks[t].get("metrics", {}).get(m, {}).get("auc")) for t in tasks)] for m in metrics]))
    classes = {t: f"{' + '.join(v.get('positive', []))} vs {' + '.join(v.get('negative', []))}" for t, v in tasks.items()}
    unnamed = [f"{t.replace('_', ' ')}: {c}" for t, c in classes.items() if c != t.replace("_", " ")]
    if unnamed:
        body.append(f'<p class="muted">Positives vs negatives: {_e("; ".join(unnamed))}.</p>')
    confusion = validation.get("confusion") or {}
    if confusion.get("counts"):
        body.append("<h3>Confusion at the calibrated thresholds</h3>" + _table(
            ["true \\ predicted", *confusion.get("predicted", [])],
            [[label, *counts] for label, counts in zip(confusion.get("labels", []), confusion["counts"])],
            css="confusion"))
    if validation.get("partial"):
        tracking = validation.get("partial_tracking") or {}
        body.append(partial_plot(validation["partial"]))
        body.append(f'<p class="muted">Mean absolute error of VR against k/16: '
                    f'{_number(tracking.get("mean_abs_error"))}; Spearman ρ {_number(tracking.get("spearman"))}.</p>')
    return _section("validation", "Validation against plain similarity", "".join(body))


def _cache_note(cache: Mapping[str, Any] | None) -> str:
    """Whether the validation was computed for this run or reused (`flows.analyze`'s cache)."""
    if not cache:
        return ""
    how = "reused from an earlier run with the same provenance" if cache.get("hit") else "computed for this run"
    return f" Validation {how} (key {_e(str(cache.get('key', '?'))[:12])})."


def versions() -> dict[str, str]:
    """Versions of Python and the packages that made the numbers ("not installed" where absent)."""
    from flows.tracking import project_version

    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = project_version() if name == "iconicity" else importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _provenance_section(results: RunResults, analysis: Mapping[str, Any]) -> str:
    import yaml

    try:
        spec = yaml.safe_load(results.benchmark_yaml) or {}
    except yaml.YAMLError:
        spec = {}
    seeds = spec.get("seeds") if isinstance(spec, dict) else None
    used = sorted({int(r["seed"]) for r in results.image_rows})
    settings = analysis.get("settings") or {}
    written = results.folder / "summary.json"
    facts = [
        ("benchmark", results.name),
        ("source", f"MLflow run {results.parent_run_id} at {results.tracking_uri}" if results.source == "mlflow"
         else str(results.folder)),
        ("parent run", results.parent_run_id or "–"),
        ("tracking URI", results.tracking_uri or "–"),
        ("generation seeds", ", ".join(str(s) for s in (seeds or used)) or "–"),
        ("analysis", ", ".join(f"{k}={v}" for k, v in settings.items() if isinstance(v, (int, float, str))
                               and len(str(v)) < 40) or "–"),
        ("results written", datetime.datetime.fromtimestamp(written.stat().st_mtime, datetime.timezone.utc)
         .strftime("%Y-%m-%d %H:%M UTC") if written.is_file() else "–"),
        ("report made", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
    ]
    body = [_table(["", ""], facts, css="facts").replace("<thead><tr><th></th><th></th></tr></thead>", "")]
    body.append("<h3>Runs</h3>" + _table(["model", "perturbation", "status", "MLflow run"],
                                         [[c["model"], c["perturbation"], c.get("status", "–"), c.get("run_id") or "–"]
                                          for c in results.cells]))
    body.append("<h3>Versions</h3>" + _table(["package", "version"], list(versions().items())))
    yaml_text = results.benchmark_yaml or "(benchmark.yaml not found)"
    body.append(f"<h3>The resolved benchmark file</h3><pre>{_e(yaml_text)}</pre>")
    return _section("provenance", "How this report was made", "".join(body))


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:0 auto;max-width:1180px;padding:0 20px 40px}
h1{font-size:1.6em;margin:.8em 0 .2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #eee;padding:6px 0;z-index:1}
nav a{margin-right:14px;color:#1f5fa8;text-decoration:none;font-size:.92em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left}
th{background:#f4f4f4}td{font-variant-numeric:tabular-nums}
figure{margin:.8em 0}figure img.plot,figure img.sheet{max-width:100%;height:auto}
figcaption{font-size:.85em;color:#555}.muted{color:#666;font-size:.9em}
.note{background:#fff6e0;border-left:4px solid #e0a800;padding:6px 10px}
.reading{background:#eef5ff;border-left:4px solid #1f5fa8;padding:4px 12px}
.reference{border-top:1px solid #eee;padding-top:4px;break-inside:avoid}.reference h3{margin:.4em 0}
.pair{display:flex;gap:12px;align-items:flex-start}.canonical .tile{width:164px}
table.sheet-grid td,table.sheet-grid th{border:none;background:none;padding:2px 6px;vertical-align:top;font-weight:normal}
table.sheet-grid thead th{font-size:.85em;max-width:260px}table.sheet-grid tbody th{font-size:.85em;text-align:right}
.strip{display:flex;flex-wrap:wrap;align-items:flex-start;gap:4px}
.tile{margin:0;width:116px}.tile img{display:block;width:112px;height:auto;border:2px solid #ccc}
.canonical .tile img{width:160px}.tile img.reference-image{border-color:#2855c8}
.tile figcaption{font-size:.72em;white-space:nowrap}
.missing{width:112px;height:90px;background:#eee;color:#888;display:flex;align-items:center;justify-content:center}
pre{background:#f7f7f7;padding:10px;overflow-x:auto;font-size:.8em}
@media print{nav{display:none}body{max-width:none}figure,table,.reference{break-inside:avoid}h2,h3{break-after:avoid}}
"""

# Marks the page once loaded: how many images failed to decode (a headless check reads it).
_SCRIPT = """
window.addEventListener("load", function () {
  var broken = Array.prototype.filter.call(document.images, function (i) { return !i.complete || i.naturalWidth === 0; });
  document.body.dataset.brokenImages = String(broken.length);
  document.body.dataset.ready = "1";
});
"""


def build_report(results: RunResults, analysis: Mapping[str, Any], validation: Mapping[str, Any] | None = None, *,
                 covariates: Mapping[str, Mapping[str, Any]] | None = None,
                 contact_limit: int = MAX_CONTACT_REFERENCES, validation_note: str | None = None) -> str:
    """The report as one self-contained HTML document. `analysis` is `flows.analysis.analyze`'s
    result; `validation` the JSON of a validation (None: a "not computed" note, with
    `validation_note` saying why where given); `covariates` per reference (default: from the
    references' summaries)."""
    if not isinstance(analysis, Mapping):
        raise ValueError(f"analysis must be a dict (flows.analysis.analyze), got {type(analysis).__name__}")
    if validation is not None and not isinstance(validation.get("tasks"), Mapping):
        raise ValueError("validation: not a validation result (no 'tasks'); use the JSON of `iconicity validate --json`")
    if covariates is None:
        from flows.analysis import covariates_from_summaries

        covariates = covariates_from_summaries(results.references)
    baseline = (analysis.get("settings") or {}).get("baseline", "original")
    has_baseline = bool(_baseline_rows(results, baseline))
    map_body = map_plot(results, baseline) if has_baseline else f"<p>No {_e(baseline)} prompts were run.</p>"
    comparison = analysis.get("model_comparison") or []
    sections = [
        _summary_section(results, analysis),
        _section("map", "Recognition and realization per reference", map_body),
        _section("bars", "Per model, static and dynamic references",
                 bars_plot(comparison) if comparison else "<p>No model results.</p>"),
        _perturbations_section(analysis),
        _correlates_section(results, analysis, covariates),
        _validation_section(validation, validation_note),
        _section("contact-sheets", "Contact sheets: what was generated, what was reused",
                 contact_sheets_html(results, contact_limit)),
        _provenance_section(results, analysis),
    ]
    nav = "".join(f'<a href="#{s}">{_e(s.replace("-", " "))}</a>' for s in SECTIONS)
    title = f"iconicity report: {results.name}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body data-ready=\"0\">"
            f"<h1>{_e(title)}</h1><p class=\"muted\">How the models recognize and realize cultural references "
            f"(METHOD.md): {len({r['reference_id'] for r in results.reference_rows})} references, "
            f"{len({r['model'] for r in results.reference_rows})} models, {len(results.image_rows)} images.</p>"
            f"<nav>{nav}</nav>{''.join(sections)}<script>{_SCRIPT}</script></body></html>\n")


# -- writing and logging -----------------------------------------------------------------------

def read_validation(source: Mapping[str, Any] | str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """A validation result: a dict as it is, or the JSON file at a path; None stays None."""
    if source is None or isinstance(source, Mapping):
        return dict(source) if source is not None else None
    path = Path(source)
    if not path.is_file():
        raise ReportError(f"no validation file {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ReportError(f"validation file {path} is not JSON: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
        raise ReportError(f"validation file {path} is not a validation result (no 'tasks')")
    return data


def write_report(run: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
                 tracking_uri: str | None = None, validation: Mapping[str, Any] | str | os.PathLike[str] | None = None,
                 log_to_mlflow: bool = True, validation_note: str | None = None) -> Path:
    """Writes the report of RUN (a results folder or an MLflow parent run id) to `out`
    (default: `<folder>/report.html`; for a run read from MLflow, `report-<run id>.html`
    here) and, unless told not to, logs it to the parent run. Without `validation`, the
    folder's `validation.json` (the analyze flow's) is shown where there is one;
    `validation_note` says why there is none."""
    from flows.analysis import analyze, covariates_from_summaries

    validation_data = read_validation(validation)
    results = load_results(run, tracking_uri)
    try:
        if validation_data is None and (results.folder / VALIDATION_FILE).is_file():
            validation_data = read_validation(results.folder / VALIDATION_FILE)
        if not results.reference_rows:
            raise ReportError(f"{run}: no cell has results, nothing to report")
        covariates = covariates_from_summaries(results.references)
        analysis = analyze(results.reference_rows, covariates)
        text = build_report(results, analysis, validation_data, covariates=covariates, validation_note=validation_note)
        if out is not None:
            path = Path(out)
        elif results.temporary:
            path = Path.cwd() / f"report-{results.parent_run_id}.html"
        else:
            path = results.folder / "report.html"
        write_atomically(path, text.encode("utf-8"))
        if log_to_mlflow:
            log_report(path, results.parent_run_id, tracking_uri or results.tracking_uri)
        return path
    finally:
        if results.temporary:
            shutil.rmtree(results.folder, ignore_errors=True)


def log_report(path: Path, run_id: str | None, tracking_uri: str | None) -> bool:
    """Logs the report to the parent run; where that cannot be done, a `ReportWarning`
    saying why, and False."""
    if not run_id or not tracking_uri:
        return False
    from flows.tracking import first_line, quick_http, sqlite_database

    database = sqlite_database(tracking_uri)
    if database is not None and not database.is_file():
        warnings.warn(f"report not logged to MLflow: no store at {tracking_uri}", ReportWarning, stacklevel=2)
        return False

    try:
        with quick_http():
            from mlflow.tracking import MlflowClient

            MlflowClient(tracking_uri=tracking_uri).log_artifact(run_id, str(path))
    except Exception as error:  # any failure to log leaves the written report standing
        warnings.warn(f"report not logged to MLflow run {run_id}: {first_line(error)}", ReportWarning, stacklevel=2)
        return False
    return True


# -- command line ------------------------------------------------------------------------------

def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="RUN", help="a results folder (iconicity run --out DIR) or a parent MLflow run id")
    parser.add_argument("--out", metavar="FILE.html", type=Path, help="where to write (default: report.html in the results folder; for a run "
                             "read from MLflow, report-<run id>.html here)")
    parser.add_argument("--tracking-uri", metavar="URI", default=None,
                        help="MLflow tracking URI, for a run id (default: $MLFLOW_TRACKING_URI, or the run's own)")
    parser.add_argument("--validation", metavar="FILE.json", type=Path,
                        help=f"a validation result to show (from `{VALIDATE_COMMAND}`)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the report to the run's MLflow parent run")


def run_report(args: argparse.Namespace) -> int:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ReportWarning)
        path = write_report(args.target, args.out, tracking_uri=args.tracking_uri, validation=args.validation,
                            log_to_mlflow=not args.no_mlflow)
    for warning in caught:
        if issubclass(warning.category, ReportWarning):
            print(f"iconicity: warning: {warning.message}", file=sys.stderr)
    print(path)
    return 0
