"""`iconicity compare`: benchmark runs in MLflow side by side.

    iconicity compare RUN_A RUN_B          two runs: per (model, perturbation), A, B and B - A
    iconicity compare RUN                  one parent run: its cells, with the change against `original`
    iconicity compare --experiment NAME    every cell of every execution of a benchmark
    iconicity compare --filter "params.model = 'sd15'" [--experiment NAME]

A RUN is a run id; a parent run stands for its child runs (one per model x perturbation), a
child run for itself. `--filter` is an MLflow search filter over child runs
(`params.<name>`, `metrics.<name>`, `tags.<name>`, `attributes.<name>`). Metrics default to
CRA, VR, VI and CRT (`--metrics` takes any logged ones, e.g. static_cra, crt_ci_low);
`--format csv` writes the same rows as CSV. Where several cells are listed, each non-original
perturbation also shows its change against the original prompt of the same model and
execution (METHOD.md, "Prompt perturbations").
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flows.tracking import first_line, quick_http, quote_filter_value, sqlite_database

DEFAULT_METRICS = ("cra", "vr", "vi", "crt")
ORIGINAL = "original"


class CompareError(RuntimeError):
    """An unknown run or experiment, an unreachable store: one line for the CLI."""


@dataclass(frozen=True)
class Cell:
    """One child run: a (model, perturbation) of an execution."""

    run_id: str
    execution: str  # the parent run's name (or id)
    model: str
    perturbation: str
    metrics: Mapping[str, float]


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="*", metavar="RUN",
                        help="one or two MLflow run ids (a parent run stands for its model x perturbation runs)")
    parser.add_argument("--experiment", metavar="NAME", help="every benchmark run of this experiment (benchmark name)")
    parser.add_argument("--filter", metavar="EXPR", dest="filter_string",
                        help="MLflow filter over the model x perturbation runs, e.g. \"params.model = 'sd15'\"")
    parser.add_argument("--tracking-uri", metavar="URI", default=None,
                        help="MLflow tracking URI (sqlite:///FILE or http://HOST:PORT; default: $MLFLOW_TRACKING_URI)")
    parser.add_argument("--metrics", metavar="LIST", default=",".join(DEFAULT_METRICS),
                        help=f"comma-separated metric names (default: {','.join(DEFAULT_METRICS)})")
    parser.add_argument("--format", choices=["table", "csv"], default="table", help="output format (default: table)")


def run_compare(args: argparse.Namespace, out: io.TextIOBase | None = None) -> int:
    out = out or sys.stdout
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise CompareError("no MLflow store: pass --tracking-uri URI or set MLFLOW_TRACKING_URI")
    metrics = tuple(m.strip() for m in (args.metrics or "").split(",") if m.strip())
    if not metrics:
        raise CompareError("--metrics names no metric")
    runs = list(args.runs or [])
    if len(runs) > 2:
        raise CompareError(f"compare takes at most two runs, got {len(runs)}")
    if not runs and not args.experiment and not args.filter_string:
        raise CompareError("nothing to compare: give one or two run ids, --experiment NAME or --filter EXPR")
    if runs and (args.experiment or args.filter_string):
        raise CompareError("give run ids, or --experiment/--filter, not both")
    database = sqlite_database(uri)
    if database is not None and not database.is_file():
        raise CompareError(f"no MLflow store at {uri} (no such database file)")
    with quick_http():
        source = RunSource(uri)
        if len(runs) == 2:
            headers, rows = pair_table(source.cells_of(runs[0]), source.cells_of(runs[1]), metrics)
            legend = [f"A = {source.describe(runs[0])}", f"B = {source.describe(runs[1])}"]
        else:
            cells = source.cells_of(runs[0]) if runs else source.search(args.experiment, args.filter_string)
            if not cells:
                where = f"experiment {args.experiment!r}" if args.experiment else "the store"
                matching = f" match {args.filter_string!r}" if args.filter_string else ""
                raise CompareError(f"no benchmark runs in {where}{matching}")
            headers, rows = listing_table(cells, metrics)
            legend = []
    if args.format == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
    else:
        for line in legend:
            print(line, file=out)
        print(format_table(headers, rows), file=out)
    return 0


class RunSource:
    """Reads benchmark runs from one MLflow store."""

    def __init__(self, tracking_uri: str) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri)

    def _call(self, what: str, function, *args, **kwargs):
        from mlflow.exceptions import MlflowException

        try:
            return function(*args, **kwargs)
        except MlflowException as error:
            code = getattr(error, "error_code", "")
            if code == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(error).lower():
                raise CompareError(f"no MLflow {what} at {self.uri}") from None
            raise CompareError(f"MLflow at {self.uri}: {first_line(error)}") from None
        except OSError as error:
            raise CompareError(f"MLflow at {self.uri}: {error}") from None

    def run(self, run_id: str):
        return self._call(f"run {run_id!r}", self.client.get_run, run_id)

    def describe(self, run_id: str) -> str:
        run = self.run(run_id)
        return f"{run.info.run_name or run_id} ({run_id})"

    def cells_of(self, run_id: str) -> list[Cell]:
        """A parent run's child runs, or a child run itself."""
        from flows.tracking import TAG_KIND, TAG_PARENT

        run = self.run(run_id)
        tags = run.data.tags
        if tags.get(TAG_KIND) == "child" or TAG_PARENT in tags:
            parent = self._call(f"run {tags[TAG_PARENT]!r}", self.client.get_run, tags[TAG_PARENT]) if TAG_PARENT in tags else None
            return [self._cell(run, parent.info.run_name if parent else "")]
        children = self._search([run.info.experiment_id], f"tags.`{TAG_PARENT}` = '{quote_filter_value(run_id)}'")
        if not children:
            raise CompareError(f"run {run_id!r} has no model x perturbation runs (is it a benchmark run?)")
        return [self._cell(child, run.info.run_name or run_id) for child in children]

    def search(self, experiment: str | None, filter_string: str | None) -> list[Cell]:
        from flows.tracking import TAG_KIND, TAG_PARENT

        if experiment:
            found = self._call(f"experiment {experiment!r}", self.client.get_experiment_by_name, experiment)
            if found is None:
                raise CompareError(f"no MLflow experiment {experiment!r} at {self.uri}")
            ids = [found.experiment_id]
        else:
            ids = [e.experiment_id for e in self._call("experiments", self.client.search_experiments)]
        clause = f"tags.`{TAG_KIND}` = 'child'"
        if filter_string:
            clause = f"{clause} and {filter_string}"
        children = self._search(ids, clause)
        names: dict[str, str] = {}
        cells = []
        for child in children:
            parent_id = child.data.tags.get(TAG_PARENT, "")
            if parent_id not in names:
                try:
                    names[parent_id] = self.run(parent_id).info.run_name or parent_id
                except CompareError:
                    names[parent_id] = parent_id
            cells.append(self._cell(child, names[parent_id]))
        return cells

    def _search(self, experiment_ids: Sequence[str], filter_string: str) -> list[Any]:
        runs: list[Any] = []
        token = None
        while True:
            page = self._call("runs", self.client.search_runs, list(experiment_ids), filter_string=filter_string,
                              max_results=1000, order_by=["attributes.start_time ASC"], page_token=token)
            runs.extend(page)
            token = getattr(page, "token", None)
            if not token:
                return runs

    @staticmethod
    def _cell(run: Any, execution: str) -> Cell:
        from flows.tracking import TAG_MODEL, TAG_PERTURBATION

        tags, params = run.data.tags, run.data.params
        return Cell(
            run_id=run.info.run_id,
            execution=execution,
            model=tags.get(TAG_MODEL) or params.get("model", "?"),
            perturbation=tags.get(TAG_PERTURBATION) or params.get("perturbation", "?"),
            metrics=dict(run.data.metrics),
        )


def _order(cells: Sequence[Cell]) -> list[Cell]:
    """By execution, model, then original first and the other perturbations by name."""
    return sorted(cells, key=lambda c: (c.execution, c.model, c.perturbation != ORIGINAL, c.perturbation))


def pair_table(a: Sequence[Cell], b: Sequence[Cell], metrics: Sequence[str]) -> tuple[list[str], list[list[Any]]]:
    """Per (model, perturbation) of either side: each metric in A, in B, and B - A.

    >>> a = [Cell("r1", "x", "m", "original", {"cra": 0.5})]
    >>> b = [Cell("r2", "y", "m", "original", {"cra": 0.75})]
    >>> pair_table(a, b, ["cra"])
    (['model', 'perturbation', 'cra A', 'cra B', 'Δcra'], [['m', 'original', 0.5, 0.75, 0.25]])
    """
    left = {(c.model, c.perturbation): c for c in a}
    right = {(c.model, c.perturbation): c for c in b}
    keys = list(dict.fromkeys((c.model, c.perturbation) for c in _order([*a, *b])))
    headers = ["model", "perturbation"]
    for m in metrics:
        headers += [f"{m} A", f"{m} B", f"Δ{m}"]
    rows = []
    for key in keys:
        row: list[Any] = list(key)
        for m in metrics:
            x = left[key].metrics.get(m) if key in left else None
            y = right[key].metrics.get(m) if key in right else None
            row += [x, y, (y - x) if x is not None and y is not None else None]
        rows.append(row)
    return headers, rows


def listing_table(cells: Sequence[Cell], metrics: Sequence[str]) -> tuple[list[str], list[list[Any]]]:
    """One row per cell: its metrics and, for a non-original perturbation, the change
    against the original prompt of the same model and execution."""
    originals = {(c.execution, c.model): c for c in cells if c.perturbation == ORIGINAL}
    headers = ["run", "model", "perturbation", *metrics, *(f"Δ{m} vs original" for m in metrics)]
    rows = []
    for cell in _order(cells):
        base = originals.get((cell.execution, cell.model)) if cell.perturbation != ORIGINAL else None
        values = [cell.metrics.get(m) for m in metrics]
        deltas = [
            (v - base.metrics[m]) if base is not None and v is not None and m in base.metrics else None
            for v, m in zip(values, metrics)
        ]
        rows.append([cell.execution, cell.model, cell.perturbation, *values, *deltas])
    return headers, rows


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An aligned text table: floats with 3 decimals (differences signed), blanks for
    missing values, numbers right-aligned.

    >>> print(format_table(["model", "cra", "Δcra"], [["m", 0.5, -0.25], ["n", None, None]]))
    model    cra    Δcra
    -----  -----  ------
    m      0.500  -0.250
    n
    """
    def cell(value: Any, header: str) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:+.3f}" if header.startswith("Δ") else f"{value:.3f}"
        return str(value)

    texts = [[cell(v, h) for v, h in zip(row, headers)] for row in rows]
    numeric = [all(isinstance(r[i], (int, float)) or r[i] is None for r in rows) and bool(rows) for i in range(len(headers))]
    widths = [max([len(h), *(len(t[i]) for t in texts)]) for i, h in enumerate(headers)]
    def line(items: Sequence[str]) -> str:
        return "  ".join(t.rjust(w) if numeric[i] else t.ljust(w) for i, (t, w) in enumerate(zip(items, widths))).rstrip()

    return "\n".join([line(list(headers)), line(["-" * w for w in widths]), *(line(t) for t in texts)])
