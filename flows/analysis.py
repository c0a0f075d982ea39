"""The analyses of a benchmark's results (issue 6, "Analyses"; METHOD.md).

Input: the per-reference rows of a run (`flows.store.REFERENCE_COLUMNS`, one per model x
perturbation x reference; `load_run_rows` reads them from a results folder) and, per
reference, its covariates (`covariates_from_summaries`). Output: lists of flat dicts that the
report reads, JSON-able:

- `model_comparison`: CRA, VR, VI and CRT per model, for all, static and dynamic references:
  the mean over references with a percentile bootstrap interval over references;
- `perturbation_sensitivity`: per model and prompt variant, the change against the baseline
  prompt, paired by reference, with a paired bootstrap interval;
- `iconic_survival`: of the references recognized and reused under the baseline, how many
  still are under the variant;
- `correlates`: Spearman's rho of CRA and CRT with the covariates, per model and pooled, with
  a bootstrap interval and Benjamini-Hochberg adjusted p-values;
- `analyze`: all of them, with notes in plain words and the settings used.

Intervals resample references, the unit a benchmark samples. Rows are taken in the order of
their reference ids, so the same rows and seed give the same numbers whatever the rows' order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import stdtr

from services.scorer.aggregation import average_ranks, bootstrap_mean_interval

BASELINE = "original"
IMAGERY_GROUPS = ("all", "static", "dynamic")
COMPARISON_METRICS = ("cra", "vr", "vi", "crt")
SENSITIVITY_METRICS = ("cra", "vr", "crt")
CORRELATE_METRICS = ("cra", "crt")
POOLED = "pooled"

# Survival of iconic structure: a reference counts as recognized and reused under a prompt when
# CRA > SURVIVAL_MIN_CRA and VR > SURVIVAL_MIN_VR (by default: any image recognized, any crop
# reused).
SURVIVAL_MIN_CRA = 0.0
SURVIVAL_MIN_VR = 0.0

# METHOD.md's four covariates and the `references.json` fields they come from, first known
# one wins. title_ambiguity counts other works with a near-identical title: higher = less
# unique; the Wikidata export is the wider index, so it goes first.
COVARIATE_SOURCES: dict[str, tuple[str, ...]] = {
    "training_frequency": ("caption_count",),
    "title_ambiguity": ("near_title_export", "near_title_catalog"),
    "popularity": ("sitelinks",),
    "creation_year": ("year",),
}
COVARIATES = tuple(COVARIATE_SOURCES)
_MISSING_COVARIATE_HINTS = {
    "training_frequency": "no caption corpus was counted",
    "title_ambiguity": "no title index was built",
    "popularity": "no sitelinks were harvested",
    "creation_year": "no inception year is known",
}

# Fewer pairs leave Spearman's rho without a p-value (n - 2 degrees of freedom).
MIN_CORRELATION_REFERENCES = 3
TITLE_AMBIGUITY_NOTE = (
    "title_ambiguity counts other works with a near-identical title (in the Wikidata export where "
    "given, else in the catalog): higher means a less unique title, so a negative rho means that "
    "unique titles go with higher values."
)
_BOOTSTRAP_CHUNK = 1000  # resamples ranked at once: bounds memory at ~8 MB per 1,000 references


# -- rows --------------------------------------------------------------------------------------

def _cells(reference_rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, Mapping[str, Any]]]:
    """The rows by (model, perturbation), in order of first appearance, then by reference id."""
    cells: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = {}
    for index, row in enumerate(reference_rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"reference row {index} is a {type(row).__name__}, not a mapping")
        missing = [k for k in ("model", "perturbation", "reference_id") if row.get(k) in (None, "")]
        if missing:
            raise ValueError(f"reference row {index} lacks {', '.join(missing)}")
        model, perturbation, reference_id = str(row["model"]), str(row["perturbation"]), str(row["reference_id"])
        cell = cells.setdefault((model, perturbation), {})
        if reference_id in cell:
            raise ValueError(f"reference {reference_id} appears twice in {model}/{perturbation}")
        cell[reference_id] = row
    return cells


def _by_id(cell: Mapping[str, Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [cell[reference_id] for reference_id in sorted(cell)]


def _where(row: Mapping[str, Any]) -> str:
    return f"{row.get('model')}/{row.get('perturbation')}/{row.get('reference_id')}"


def _metric(row: Mapping[str, Any], name: str) -> float | None:
    """A row's `name` as a float; None where it is missing (None or NaN)."""
    if name not in row:
        raise ValueError(f"reference row {_where(row)} lacks {name!r}")
    return _number(row[name], f"reference row {_where(row)}: {name}")


def _number(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, (bool, str)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} is {value!r}, not a number")
    value = float(value)
    return value if math.isfinite(value) else None


def _imagery(row: Mapping[str, Any]) -> str:
    imagery = row.get("imagery")
    if imagery not in ("static", "dynamic"):
        raise ValueError(f"reference row {_where(row)}: imagery is {imagery!r}, not 'static' or 'dynamic'")
    return imagery


def _check_bootstrap(confidence: float, resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ValueError(f"resamples must be a positive integer, got {resamples!r}")


# -- model comparison --------------------------------------------------------------------------

def model_comparison(reference_rows: Iterable[Mapping[str, Any]], *, perturbation: str = BASELINE,
                     confidence: float = 0.95, resamples: int = 10_000, seed: int = 0) -> list[dict[str, Any]]:
    """CRA, VR, VI and CRT per model under `perturbation`, for all, static and dynamic
    references (a group without references is left out): the mean over references with a
    percentile bootstrap interval, resampling references.

    >>> rows = [{"model": "m", "perturbation": "original", "reference_id": r, "imagery": "static",
    ...          "cra": c, "vr": 0.5, "vi": 0.5, "crt": 0.0} for r, c in (("Q1", 0.2), ("Q2", 0.4))]
    >>> [(r["imagery"], r["metric"], round(r["value"], 2), r["n_references"]) for r in model_comparison(rows)][:2]
    [('all', 'cra', 0.3, 2), ('all', 'vr', 0.5, 2)]
    """
    _check_bootstrap(confidence, resamples)
    out = []
    for (model, cell_perturbation), cell in _cells(reference_rows).items():
        if cell_perturbation != perturbation:
            continue
        rows = _by_id(cell)
        for imagery in IMAGERY_GROUPS:
            group = [r for r in rows if imagery == "all" or _imagery(r) == imagery]
            for metric in COMPARISON_METRICS:
                values = [v for v in (_metric(r, metric) for r in group) if v is not None]
                if not values:
                    continue
                value, low, high = bootstrap_mean_interval(np.array(values), confidence, resamples, seed)
                out.append({"model": model, "imagery": imagery, "metric": metric, "value": value, "ci_low": low,
                            "ci_high": high, "n_references": len(values)})
    return out


# -- perturbations -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Pairing:
    """A model's variant cell beside its baseline cell: the rows of the references both hold
    (baseline row, variant row), by reference id, and how many only one of them holds."""

    model: str
    perturbation: str
    pairs: tuple[tuple[Mapping[str, Any], Mapping[str, Any]], ...]
    n_unpaired: int


def pairings(reference_rows: Iterable[Mapping[str, Any]], baseline: str = BASELINE) -> list[Pairing]:
    """Every (model, perturbation other than `baseline`) cell paired by reference id with the
    model's `baseline` cell (none there: no pairs, every reference unpaired).

    >>> rows = [{"model": "m", "perturbation": p, "reference_id": r} for p, r in
    ...         (("original", "Q1"), ("original", "Q2"), ("synonym", "Q2"), ("synonym", "Q3"))]
    >>> [(p.perturbation, len(p.pairs), p.n_unpaired) for p in pairings(rows)]
    [('synonym', 1, 2)]
    """
    cells = _cells(reference_rows)
    out = []
    for (model, perturbation), variant in cells.items():
        if perturbation == baseline:
            continue
        base = cells.get((model, baseline), {})
        common = sorted(set(base) & set(variant))
        out.append(Pairing(model, perturbation, tuple((base[r], variant[r]) for r in common),
                           len(set(base) ^ set(variant))))
    return out


def perturbation_sensitivity(reference_rows: Iterable[Mapping[str, Any]], *, baseline: str = BASELINE,
                             confidence: float = 0.95, resamples: int = 10_000,
                             seed: int = 0) -> list[dict[str, Any]]:
    """Per model and prompt variant, the change in CRA, VR and CRT against `baseline`: the mean
    over references of (variant - baseline), paired by reference id, with a paired percentile
    bootstrap interval (the same resampled references on both sides, which is resampling the
    differences). References missing on either side, or missing the metric, are left out and
    counted in `n_unpaired`; a variant without any pair is left out.

    >>> rows = [{"model": "m", "perturbation": p, "reference_id": r, "cra": c, "vr": 0.0, "crt": 0.0}
    ...         for p, r, c in (("original", "Q1", 0.5), ("synonym", "Q1", 0.25), ("synonym", "Q2", 1.0))]
    >>> row = perturbation_sensitivity(rows)[0]
    >>> row["metric"], row["delta"], row["ci_low"], row["n_pairs"], row["n_unpaired"]
    ('cra', -0.25, -0.25, 1, 1)
    """
    _check_bootstrap(confidence, resamples)
    out = []
    for pairing in pairings(reference_rows, baseline):
        for metric in SENSITIVITY_METRICS:
            deltas = [v - b for b, v in ((_metric(base, metric), _metric(variant, metric))
                                         for base, variant in pairing.pairs) if b is not None and v is not None]
            if not deltas:
                continue
            delta, low, high = bootstrap_mean_interval(np.array(deltas), confidence, resamples, seed)
            out.append({"model": pairing.model, "perturbation": pairing.perturbation, "metric": metric,
                        "delta": delta, "ci_low": low, "ci_high": high, "n_pairs": len(deltas),
                        "n_unpaired": pairing.n_unpaired + len(pairing.pairs) - len(deltas)})
    return out


def _iconic(row: Mapping[str, Any], min_cra: float, min_vr: float) -> bool:
    cra, vr = _metric(row, "cra"), _metric(row, "vr")
    return cra is not None and vr is not None and cra > min_cra and vr > min_vr


def iconic_survival(reference_rows: Iterable[Mapping[str, Any]], *, baseline: str = BASELINE,
                    min_cra: float = SURVIVAL_MIN_CRA, min_vr: float = SURVIVAL_MIN_VR) -> list[dict[str, Any]]:
    """Per model and prompt variant, whether the iconic structure survives the change of
    words: `eligible` references are recognized and reused under `baseline` (CRA > min_cra and
    VR > min_vr), `survived` are those of them still recognized and reused under the variant,
    `share` = survived / eligible (None when nothing is eligible). Pairs by reference id; a
    variant without any pair is left out.

    >>> rows = [{"model": "m", "perturbation": p, "reference_id": r, "cra": c, "vr": v}
    ...         for p, r, c, v in (("original", "Q1", 0.5, 0.2), ("original", "Q2", 0.5, 0.1),
    ...                            ("literal", "Q1", 0.25, 0.1), ("literal", "Q2", 0.0, 0.3))]
    >>> iconic_survival(rows)
    [{'model': 'm', 'perturbation': 'literal', 'eligible': 2, 'survived': 1, 'share': 0.5, 'n_pairs': 2}]
    """
    for name, value in (("min_cra", min_cra), ("min_vr", min_vr)):
        if _number(value, name) is None or not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
    out = []
    for pairing in pairings(reference_rows, baseline):
        if not pairing.pairs:
            continue
        eligible = [variant for base, variant in pairing.pairs if _iconic(base, min_cra, min_vr)]
        survived = sum(_iconic(variant, min_cra, min_vr) for variant in eligible)
        out.append({"model": pairing.model, "perturbation": pairing.perturbation, "eligible": len(eligible),
                    "survived": survived, "share": survived / len(eligible) if eligible else None,
                    "n_pairs": len(pairing.pairs)})
    return out


# -- Spearman, its interval, Benjamini-Hochberg ------------------------------------------------

def _columns(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"need two columns of equal length, got shapes {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("the columns hold NaN or infinite values; leave those references out first")
    return x, y


def _constant(values: np.ndarray) -> bool:
    return bool((values == values[0]).all())


def _rank_correlations(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of (r, n) arrays: Pearson's r of average ranks; NaN
    where a row is constant."""
    rx, ry = average_ranks(x), average_ranks(y)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    spread = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(spread > 0, (rx * ry).sum(axis=1) / spread, np.nan)
    return np.clip(rho, -1.0, 1.0)


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float | None, float | None]:
    """Spearman's rho (Pearson's r of average ranks, so ties share their rank) and its
    two-sided p-value from Student's t with n - 2 degrees of freedom (scipy's asymptotic
    one). (None, None) where rho is undefined: a constant column, or fewer than 3 pairs.

    >>> rho, p_value = spearman([1, 2, 3, 4], [10, 30, 20, 40])
    >>> round(rho, 6), round(p_value, 6)
    (0.8, 0.2)
    >>> spearman([1, 2, 3], [5, 5, 5])
    (None, None)
    """
    x, y = _columns(x, y)
    if x.size < MIN_CORRELATION_REFERENCES or _constant(x) or _constant(y):
        return None, None
    rho = float(_rank_correlations(x[None], y[None])[0])
    dof = x.size - 2
    if abs(rho) == 1.0:
        return rho, 0.0
    t = rho * math.sqrt(dof / ((1.0 + rho) * (1.0 - rho)))
    return rho, float(2.0 * stdtr(dof, -abs(t)))  # Student's t survival function at |t|, both tails


def spearman_interval(x: Sequence[float], y: Sequence[float], confidence: float = 0.95, resamples: int = 10_000,
                      seed: int = 0) -> tuple[float | None, float | None]:
    """A percentile bootstrap interval of Spearman's rho, resampling references (pairs).
    Chosen over Fisher's z, which assumes bivariate normal data and breaks down with ties and
    few references; resamples in which a column comes out constant have no rho and are left
    out. (None, None) where rho itself is undefined (see `spearman`).

    >>> spearman_interval([1, 2, 3, 4, 5], [2, 4, 6, 8, 10], resamples=200)
    (1.0, 1.0)
    """
    x, y = _columns(x, y)
    _check_bootstrap(confidence, resamples)
    if x.size < MIN_CORRELATION_REFERENCES or _constant(x) or _constant(y):
        return None, None
    rng = np.random.default_rng(seed)
    rhos = []
    for start in range(0, resamples, _BOOTSTRAP_CHUNK):
        picks = rng.integers(0, x.size, size=(min(_BOOTSTRAP_CHUNK, resamples - start), x.size))
        rhos.append(_rank_correlations(x[picks], y[picks]))
    rhos = np.concatenate(rhos)
    rhos = rhos[np.isfinite(rhos)]
    if rhos.size == 0:
        return None, None
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(rhos, [alpha, 1.0 - alpha])
    return float(low), float(high)


def benjamini_hochberg(p_values: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg adjusted p-values (the false discovery rate step-up), in the input's
    order: p_(i) * m / i for the i-th smallest of the m p-values, made monotone from the
    largest down and capped at 1. None (or NaN) stays None and does not count in m.

    >>> benjamini_hochberg([0.04, 0.01, None, 0.5])
    [0.06, 0.03, None, 0.5]
    """
    values = [_number(p, f"p-value {i}") for i, p in enumerate(p_values)]
    bad = [p for p in values if p is not None and not 0.0 <= p <= 1.0]
    if bad:
        raise ValueError(f"p-values must lie in [0, 1], got {bad[0]}")
    order = sorted((i for i, p in enumerate(values) if p is not None), key=lambda i: values[i])
    adjusted: list[float | None] = [None] * len(values)
    running = 1.0
    for rank in range(len(order), 0, -1):
        i = order[rank - 1]
        running = min(running, values[i] * len(order) / rank)
        adjusted[i] = running
    return adjusted


# -- correlates --------------------------------------------------------------------------------

def covariates_from_summaries(summaries: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Per reference id, METHOD.md's four covariates from a run's `references.json` entries
    (fields at the top level or in a nested "covariates" dict, which wins): training_frequency
    (caption_count), title_ambiguity (near_title_export, else near_title_catalog: other works
    with a near-identical title; higher = less unique), popularity (sitelinks) and
    creation_year (year). None where unknown.

    >>> covariates_from_summaries([{"id": "Q1", "sitelinks": 70, "covariates": {"year": 1889, "near_title_catalog": 1}}])
    {'Q1': {'training_frequency': None, 'title_ambiguity': 1.0, 'popularity': 70.0, 'creation_year': 1889.0}}
    """
    out: dict[str, dict[str, float | None]] = {}
    for index, summary in enumerate(summaries):
        if not isinstance(summary, Mapping) or summary.get("id") in (None, ""):
            raise ValueError(f"reference summary {index} has no 'id'")
        nested = summary.get("covariates") or {}
        if not isinstance(nested, Mapping):
            raise ValueError(f"reference {summary['id']}: 'covariates' is a {type(nested).__name__}, not a mapping")
        reference_id = str(summary["id"])
        if reference_id in out:
            raise ValueError(f"reference {reference_id} is listed twice")
        fields = {**summary, **{k: v for k, v in nested.items() if v is not None}}
        out[reference_id] = {name: _first_number(fields, sources, reference_id)
                             for name, sources in COVARIATE_SOURCES.items()}
    return out


def _first_number(fields: Mapping[str, Any], sources: Sequence[str], reference_id: str) -> float | None:
    for source in sources:
        value = _number(fields.get(source), f"reference {reference_id}: {source}")
        if value is not None:
            return value
    return None


def _covariate(covariates: Mapping[str, Any], reference_id: str, name: str) -> float | None:
    values = covariates.get(reference_id) or {}
    if not isinstance(values, Mapping):
        raise ValueError(f"covariates of {reference_id} are a {type(values).__name__}, not a mapping")
    return _number(values.get(name), f"covariate {name} of {reference_id}")


def _scopes(reference_rows: Iterable[Mapping[str, Any]], perturbation: str,
            metrics: Sequence[str]) -> list[tuple[str, dict[str, dict[str, float | None]]]]:
    """Per model, and pooled when there are two or more models (with one it would repeat the
    model), each reference's metric values under `perturbation`. Pooled: per reference, the
    mean over the models that have a value."""
    scopes = []
    for (model, cell_perturbation), cell in _cells(reference_rows).items():
        if cell_perturbation == perturbation:
            scopes.append((model, {r: {m: _metric(row, m) for m in metrics} for r, row in cell.items()}))
    if len(scopes) < 2:
        return scopes
    pooled: dict[str, dict[str, float | None]] = {}
    for reference_id in sorted({r for _, values in scopes for r in values}):
        pooled[reference_id] = {}
        for metric in metrics:
            known = [v[reference_id][metric] for _, v in scopes
                     if reference_id in v and v[reference_id][metric] is not None]
            pooled[reference_id][metric] = float(np.mean(known)) if known else None
    return [*scopes, (POOLED, pooled)]


def _correlate(scope: str, values: Mapping[str, Mapping[str, float | None]], covariates: Mapping[str, Any],
               metric: str, covariate: str, confidence: float, resamples: int, seed: int) -> dict[str, Any]:
    by_reference = [(values[r][metric], _covariate(covariates, r, covariate)) for r in sorted(values)]
    pairs = [(m, c) for m, c in by_reference if m is not None and c is not None]
    x, y = np.array([m for m, _ in pairs]), np.array([c for _, c in pairs])
    note = None
    if all(c is None for _, c in by_reference):
        note = f"no values of {covariate}"
    elif len(pairs) < MIN_CORRELATION_REFERENCES:
        note = f"fewer than {MIN_CORRELATION_REFERENCES} references with both {metric} and {covariate}"
    elif _constant(x):
        note = f"constant {metric}"
    elif _constant(y):
        note = f"constant {covariate}"
    rho = p_value = low = high = None
    if note is None:
        rho, p_value = spearman(x, y)
        low, high = spearman_interval(x, y, confidence, resamples, seed)
    return {"scope": scope, "metric": metric, "covariate": covariate, "rho": rho, "ci_low": low, "ci_high": high,
            "p_value": p_value, "p_adjusted": None, "n": len(pairs), "note": note}


def correlates(reference_rows: Iterable[Mapping[str, Any]], covariates: Mapping[str, Mapping[str, Any]], *,
               metrics: Sequence[str] = CORRELATE_METRICS, perturbation: str = BASELINE, confidence: float = 0.95,
               resamples: int = 10_000, seed: int = 0) -> list[dict[str, Any]]:
    """Spearman's rho of each metric with each covariate (`COVARIATES`) over references under
    `perturbation`, per model and "pooled" (per reference the mean over models; only with two
    or more models), with a bootstrap interval (`spearman_interval`), its p-value and the
    Benjamini-Hochberg adjusted one over every test of the table. A test that cannot be run
    (no covariate values, fewer than 3 references, a constant column) is a row with None and
    a `note` saying why.

    >>> rows = [{"model": "m", "perturbation": "original", "reference_id": f"Q{i}", "cra": c, "crt": 0.0}
    ...         for i, c in enumerate((0.1, 0.4, 0.3, 0.9))]
    >>> covariates = {f"Q{i}": {"popularity": s} for i, s in enumerate((5, 20, 10, 50))}
    >>> [(r["metric"], r["covariate"], r["rho"], r["note"]) for r in correlates(rows, covariates, resamples=100)][2:5]
    [('cra', 'popularity', 1.0, None), ('cra', 'creation_year', None, 'no values of creation_year'), ('crt', 'training_frequency', None, 'no values of training_frequency')]
    """
    _check_bootstrap(confidence, resamples)
    if not isinstance(covariates, Mapping):
        raise ValueError(f"covariates must map reference ids to covariates, got a {type(covariates).__name__}")
    unknown = [m for m in metrics if m not in COMPARISON_METRICS]
    if not metrics or unknown:
        raise ValueError(f"metrics must be some of {', '.join(COMPARISON_METRICS)}, got {list(metrics)}")
    out = [_correlate(scope, values, covariates, metric, covariate, confidence, resamples, seed)
           for scope, values in _scopes(reference_rows, perturbation, metrics)
           for metric in metrics for covariate in COVARIATES]
    for row, adjusted in zip(out, benjamini_hochberg([row["p_value"] for row in out])):
        row["p_adjusted"] = adjusted
    return out


# -- everything --------------------------------------------------------------------------------

def analyze(reference_rows: Iterable[Mapping[str, Any]], covariates: Mapping[str, Mapping[str, Any]], *,
            baseline: str = BASELINE, confidence: float = 0.95, seed: int = 0,
            resamples: int = 10_000) -> dict[str, Any]:
    """Every analysis of a run's reference rows, with notes in plain words (what was left
    out and why) and the settings used; JSON-able (`json.dumps` takes it as it is).

    >>> rows = [{"model": "m", "perturbation": "original", "reference_id": "Q1", "imagery": "static",
    ...          "cra": 0.5, "vr": 0.25, "vi": 0.75, "crt": 0.25}]
    >>> result = analyze(rows, {}, resamples=10)
    >>> sorted(result), len(result["model_comparison"]), result["correlates"][0]["note"]
    (['correlates', 'iconic_survival', 'model_comparison', 'notes', 'perturbation_sensitivity', 'settings'], 8, 'no values of training_frequency')
    """
    rows = list(reference_rows)
    result = {
        "model_comparison": model_comparison(rows, perturbation=baseline, confidence=confidence,
                                             resamples=resamples, seed=seed),
        "perturbation_sensitivity": perturbation_sensitivity(rows, baseline=baseline, confidence=confidence,
                                                             resamples=resamples, seed=seed),
        "iconic_survival": iconic_survival(rows, baseline=baseline),
        "correlates": correlates(rows, covariates, perturbation=baseline, confidence=confidence,
                                 resamples=resamples, seed=seed),
        "notes": _notes(rows, covariates, baseline),
        "settings": {
            "baseline": baseline, "confidence": confidence, "resamples": int(resamples), "seed": int(seed),
            "survival_min_cra": SURVIVAL_MIN_CRA, "survival_min_vr": SURVIVAL_MIN_VR,
            "interval": "percentile bootstrap over references (paired for perturbation deltas)",
            "correlation": "Spearman's rho (average ranks), percentile bootstrap interval over references, "
                           "two-sided t p-value, Benjamini-Hochberg over the correlates table",
            "pooled": "per reference, the mean over models (with two or more models)",
            "covariate_sources": {name: list(sources) for name, sources in COVARIATE_SOURCES.items()},
        },
    }
    return _json_ready(result)


def _notes(rows: Sequence[Mapping[str, Any]], covariates: Mapping[str, Any], baseline: str) -> list[str]:
    cells = _cells(rows)
    if not cells:
        return ["no reference rows: nothing to analyze"]
    models = list(dict.fromkeys(model for model, _ in cells))
    notes = [f"{model} has no {baseline!r} prompt cell: it is left out of the model comparison, the correlates "
             "and the perturbation analyses" for model in models if (model, baseline) not in cells]
    variants = [p for p in pairings(rows, baseline) if (p.model, baseline) in cells]
    if not variants:
        notes.append(f"only the {baseline!r} prompt was run: no perturbation sensitivity or survival")
    notes += [f"{p.model}/{p.perturbation}: {p.n_unpaired} reference(s) without a pair in {baseline!r} left out "
              "of the paired comparison" for p in variants if p.n_unpaired]
    reference_ids = sorted({r for (_, perturbation), cell in cells.items() if perturbation == baseline for r in cell})
    for name in COVARIATES:
        if reference_ids and all(_covariate(covariates, r, name) is None for r in reference_ids):
            notes.append(f"{name}: no reference has a value ({_MISSING_COVARIATE_HINTS[name]}), so it is not correlated")
    notes.append(TITLE_AMBIGUITY_NOTE)
    return notes


def _json_ready(value: Any) -> Any:
    """Plain Python values for json.dumps: numpy scalars to int/float, NaN and infinities to None."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


# -- a results folder --------------------------------------------------------------------------

def load_run_rows(run_folder: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A results folder's reference rows (every `cells/<model>/<perturbation>/references.parquet`,
    in path order) and its `references.json` entries ([] where the run wrote none)."""
    from flows.store import read_parquet

    folder = Path(run_folder)
    if not folder.is_dir():
        raise ValueError(f"no results folder at {folder}")
    files = sorted(folder.glob("cells/*/*/references.parquet"))
    if not files:
        raise ValueError(f"no cells/<model>/<perturbation>/references.parquet under {folder}: no cell completed")
    rows = [row for path in files for row in read_parquet(path)]
    summaries_file = folder / "references.json"
    if not summaries_file.is_file():
        return rows, []
    try:
        summaries = json.loads(summaries_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{summaries_file} is not JSON: {error}") from None
    if not isinstance(summaries, list):
        raise ValueError(f"{summaries_file} holds a {type(summaries).__name__}, not a list of references")
    return rows, summaries
