"""The analyses of a benchmark's results against values worked out by hand on small tables,
scipy's Spearman and false discovery control, and exact enumerations of the bootstrap."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from flows import analysis
from flows.store import REFERENCE_COLUMNS, write_reference_parquet


def ref_row(model: str, perturbation: str, reference_id: str, cra: float = 0.0, vr: float = 0.0, crt: float = 0.0,
            imagery: str = "static") -> dict:
    return {"model": model, "perturbation": perturbation, "reference_id": reference_id, "imagery": imagery,
            "cra": cra, "vr": vr, "vi": 1.0 - vr, "crt": crt}


def pick(rows: list[dict], **where) -> dict:
    found = [r for r in rows if all(r[k] == v for k, v in where.items())]
    assert len(found) == 1, (where, found)
    return found[0]


# -- model comparison ----------------------------------------------------------------------------

COMPARISON_ROWS = [
    ref_row("a", "original", "Q1", cra=0.2, vr=0.5, crt=0.1),
    ref_row("a", "original", "Q2", cra=0.6, vr=0.1, crt=0.5),
    ref_row("a", "original", "Q3", cra=1.0, vr=0.3, crt=0.6, imagery="dynamic"),
    ref_row("b", "original", "Q1", cra=0.5, vr=0.2, crt=0.4),
    ref_row("b", "original", "Q2", cra=0.5, vr=0.2, crt=0.4),
    ref_row("a", "synonym", "Q1", cra=0.9, vr=0.9, crt=0.9),  # another prompt: not compared here
]


def test_model_comparison_means_by_imagery_against_hand_values():
    out = analysis.model_comparison(COMPARISON_ROWS, resamples=2000)
    # a: all = (0.2 + 0.6 + 1.0) / 3, static = (0.2 + 0.6) / 2, dynamic = 1.0; b: static only.
    assert pick(out, model="a", imagery="all", metric="cra")["value"] == pytest.approx(0.6)
    assert pick(out, model="a", imagery="static", metric="cra")["value"] == pytest.approx(0.4)
    assert pick(out, model="a", imagery="dynamic", metric="cra")["value"] == pytest.approx(1.0)
    assert pick(out, model="a", imagery="all", metric="vi")["value"] == pytest.approx(1 - 0.3)
    assert pick(out, model="a", imagery="static", metric="crt")["n_references"] == 2
    assert not [r for r in out if r["model"] == "b" and r["imagery"] == "dynamic"]  # no dynamic references
    assert {(r["model"], r["imagery"]) for r in out} == {("a", "all"), ("a", "static"), ("a", "dynamic"),
                                                          ("b", "all"), ("b", "static")}
    assert all(set(r) == {"model", "imagery", "metric", "value", "ci_low", "ci_high", "n_references"} for r in out)
    for r in out:
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
    # Equal values: nothing to resample, the interval is the value.
    b = pick(out, model="b", imagery="all", metric="cra")
    assert (b["value"], b["ci_low"], b["ci_high"]) == (0.5, 0.5, 0.5)
    dynamic = pick(out, model="a", imagery="dynamic", metric="crt")
    assert (dynamic["ci_low"], dynamic["ci_high"], dynamic["n_references"]) == (0.6, 0.6, 1)


def test_model_comparison_interval_is_the_exact_bootstrap_quantile():
    # Two references, CRA 0 and 1: a resample's mean is 0, 0.5 or 1 with chances 1/4, 1/2, 1/4,
    # so the 95% percentile interval is [0, 1] and the 40% one (quantiles 0.3, 0.7) is [0.5, 0.5].
    rows = [ref_row("a", "original", "Q1", cra=0.0), ref_row("a", "original", "Q2", cra=1.0)]
    wide = pick(analysis.model_comparison(rows, resamples=4000), imagery="all", metric="cra")
    narrow = pick(analysis.model_comparison(rows, confidence=0.4, resamples=4000), imagery="all", metric="cra")
    assert (wide["value"], wide["ci_low"], wide["ci_high"]) == (0.5, 0.0, 1.0)
    assert (narrow["ci_low"], narrow["ci_high"]) == (0.5, 0.5)


def test_model_comparison_leaves_out_missing_values_and_other_perturbations():
    rows = [ref_row("a", "original", "Q1", cra=0.4), {**ref_row("a", "original", "Q2", cra=0.8), "crt": float("nan")}]
    out = analysis.model_comparison(rows, resamples=100)
    assert pick(out, imagery="all", metric="crt")["n_references"] == 1
    assert pick(out, imagery="all", metric="cra")["n_references"] == 2
    synonym = analysis.model_comparison(COMPARISON_ROWS, perturbation="synonym", resamples=100)
    assert pick(synonym, imagery="all", metric="cra")["value"] == 0.9
    assert analysis.model_comparison(COMPARISON_ROWS, perturbation="literal") == []


# -- perturbation sensitivity and survival -------------------------------------------------------

SENSITIVITY_ROWS = [
    ref_row("a", "original", "Q1", cra=0.1, vr=0.5, crt=0.0),
    ref_row("a", "original", "Q2", cra=0.9, vr=0.2, crt=0.8),
    ref_row("a", "original", "Q3", cra=0.5, vr=0.4, crt=0.3),  # no synonym prompt: unpaired
    # listed in another order than the baseline: pairing goes by reference id
    ref_row("a", "synonym", "Q2", cra=1.0, vr=0.1, crt=0.7),
    ref_row("a", "synonym", "Q1", cra=0.2, vr=0.3, crt=0.1),
]


def test_perturbation_sensitivity_pairs_by_reference_against_hand_deltas():
    out = analysis.perturbation_sensitivity(SENSITIVITY_ROWS, resamples=2000)
    assert [(r["model"], r["perturbation"], r["metric"]) for r in out] == [
        ("a", "synonym", "cra"), ("a", "synonym", "vr"), ("a", "synonym", "crt")]
    # Q1: cra +0.1, vr -0.2, crt +0.1; Q2: cra +0.1, vr -0.1, crt -0.1; Q3 has no pair.
    cra, vr, crt = out
    assert (cra["n_pairs"], cra["n_unpaired"]) == (2, 1)
    assert cra["delta"] == pytest.approx(0.1)
    assert vr["delta"] == pytest.approx(-0.15)
    assert crt["delta"] == pytest.approx(0.0)
    # Paired: both references gained 0.1, so every resample's mean change is 0.1 although the
    # baseline values themselves are far apart (0.1 and 0.9).
    assert (cra["ci_low"], cra["ci_high"]) == pytest.approx((0.1, 0.1))
    # Two deltas -0.2 and -0.1: a resample's mean is one of -0.2, -0.15, -0.1.
    assert (vr["ci_low"], vr["ci_high"]) == pytest.approx((-0.2, -0.1))
    assert all(set(r) == {"model", "perturbation", "metric", "delta", "ci_low", "ci_high", "n_pairs", "n_unpaired"}
               for r in out)


def test_perturbation_sensitivity_counts_missing_values_and_models_without_baseline():
    rows = [*SENSITIVITY_ROWS[:3], {**SENSITIVITY_ROWS[3], "crt": None}, SENSITIVITY_ROWS[4],
            ref_row("b", "synonym", "Q1", cra=0.5)]  # b has no original cell: nothing to pair
    out = analysis.perturbation_sensitivity(rows, resamples=100)
    crt = pick(out, model="a", metric="crt")
    assert (crt["delta"], crt["n_pairs"], crt["n_unpaired"]) == (pytest.approx(0.1), 1, 2)
    assert not [r for r in out if r["model"] == "b"]
    assert analysis.perturbation_sensitivity(SENSITIVITY_ROWS[:3]) == []


def test_iconic_survival_counts_by_hand():
    rows = [
        ref_row("a", "original", "Q1", cra=0.5, vr=0.2),  # eligible, survives
        ref_row("a", "original", "Q2", cra=0.5, vr=0.0),  # not reused: not eligible
        ref_row("a", "original", "Q3", cra=0.0, vr=0.5),  # not recognized: not eligible
        ref_row("a", "original", "Q4", cra=0.3, vr=0.1),  # eligible, loses recognition
        ref_row("a", "original", "Q5", cra=1.0, vr=1.0),  # eligible, no literal prompt
        ref_row("a", "literal", "Q1", cra=0.1, vr=0.1),
        ref_row("a", "literal", "Q2", cra=1.0, vr=1.0),
        ref_row("a", "literal", "Q3", cra=1.0, vr=1.0),
        ref_row("a", "literal", "Q4", cra=0.0, vr=0.4),
        ref_row("b", "original", "Q1", cra=0.0, vr=0.0),
        ref_row("b", "literal", "Q1", cra=1.0, vr=1.0),
    ]
    out = analysis.iconic_survival(rows)
    assert pick(out, model="a") == {"model": "a", "perturbation": "literal", "eligible": 2, "survived": 1,
                                    "share": 0.5, "n_pairs": 4}
    assert pick(out, model="b")["share"] is None  # nothing eligible
    # Stricter thresholds: of the paired references only Q1 (cra 0.5, vr 0.2) is eligible (Q4's
    # VR 0.1 is too low; Q5 has no pair), and its literal cell (0.1, 0.1) does not pass.
    strict = pick(analysis.iconic_survival(rows, min_cra=0.2, min_vr=0.15), model="a")
    assert (strict["eligible"], strict["survived"], strict["share"]) == (1, 0, 0.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"min_cra": 1.0}, "min_cra must lie in"),
    ({"min_vr": -0.1}, "min_vr must lie in"),
    ({"min_cra": "0"}, "min_cra"),
])
def test_iconic_survival_rejects_bad_thresholds(kwargs, match):
    with pytest.raises(ValueError, match=match):
        analysis.iconic_survival(SENSITIVITY_ROWS, **kwargs)


# -- Spearman and Benjamini-Hochberg -------------------------------------------------------------

@pytest.mark.parametrize("x, y", [
    ([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]),
    ([1, 1, 2, 2, 3, 3, 4], [3, 1, 4, 1, 5, 9, 2]),  # ties in both
    ([0.0, 0.5, 0.5, 0.5, 1.0, 1.0], [10, 20, 20, 30, 30, 40]),
    ([3, 1, 2], [1, 2, 3]),
    ([1, 2, 3, 4], [4, 3, 2, 1]),
])
def test_spearman_matches_scipy_with_ties(x, y):
    rho, p_value = analysis.spearman(x, y)
    expected = stats.spearmanr(x, y)
    assert rho == pytest.approx(expected.statistic, abs=1e-12)
    assert p_value == pytest.approx(expected.pvalue, abs=1e-12)


def test_spearman_by_hand_and_undefined_cases():
    # No ties: rho = 1 - 6 sum d^2 / (n (n^2 - 1)); ranks of y are 2, 1, 4, 3, 5: sum d^2 = 4.
    rho, _ = analysis.spearman([1, 2, 3, 4, 5], [20, 10, 40, 30, 50])
    assert rho == pytest.approx(1 - 6 * 4 / (5 * 24))
    assert analysis.spearman([1, 2, 3], [7, 7, 7]) == (None, None)
    assert analysis.spearman([1, 1, 1], [1, 2, 3]) == (None, None)
    assert analysis.spearman([1, 2], [1, 2]) == (None, None)
    with pytest.raises(ValueError, match="equal length"):
        analysis.spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        analysis.spearman([1, 2, float("nan")], [1, 2, 3])


def test_spearman_interval_matches_the_exact_bootstrap_distribution():
    x, y = [1, 2, 3, 4, 5], [2, 1, 4, 3, 5]
    # Every one of the 5^5 equally likely resamples of the pairs, without the ones where rho is undefined.
    exact = []
    for picks in itertools.product(range(5), repeat=5):
        xs, ys = [x[i] for i in picks], [y[i] for i in picks]
        if len(set(xs)) > 1 and len(set(ys)) > 1:
            exact.append(stats.spearmanr(xs, ys).statistic)
    exact = np.array(exact)
    low, high = analysis.spearman_interval(x, y, 0.9, resamples=10_000, seed=3)
    # A percentile interval: at most ~5% of the bootstrap distribution lies beyond each end.
    assert np.mean(exact < low - 1e-9) <= 0.05 + 0.01
    assert np.mean(exact > high + 1e-9) <= 0.05 + 0.01
    assert np.mean(exact <= low + 1e-9) >= 0.05 - 0.01
    assert np.mean(exact >= high - 1e-9) >= 0.05 - 0.01
    assert low < analysis.spearman(x, y)[0] < high


def test_spearman_interval_degenerate_and_seeded():
    assert analysis.spearman_interval([1, 2, 3, 4], [1, 2, 3, 4], resamples=500) == (1.0, 1.0)
    assert analysis.spearman_interval([1, 2, 3, 4], [8, 6, 4, 2], resamples=500) == (-1.0, -1.0)
    assert analysis.spearman_interval([1, 2, 3], [5, 5, 5], resamples=500) == (None, None)
    x, y = [1, 5, 2, 4, 3, 6], [2, 3, 1, 6, 5, 4]
    assert analysis.spearman_interval(x, y, resamples=500, seed=1) == analysis.spearman_interval(
        x, y, resamples=500, seed=1)


def test_benjamini_hochberg_against_hand_values_and_scipy():
    p = [0.04, 0.01, 0.039, None, 0.5]
    # m = 4; sorted 0.01, 0.039, 0.04, 0.5 -> x4/1, x4/2, x4/3, x4/4 = 0.04, 0.078, 0.0533, 0.5;
    # step-up from the largest: 0.078 falls to 0.0533; back in the input's order, None kept.
    adjusted = analysis.benjamini_hochberg(p)
    assert adjusted == pytest.approx([0.04 * 4 / 3, 0.04, 0.04 * 4 / 3, None, 0.5])
    assert adjusted[3] is None
    present = [q for q in p if q is not None]
    assert [q for q in adjusted if q is not None] == pytest.approx(list(stats.false_discovery_control(present)))
    random_p = list(np.random.default_rng(0).uniform(0, 0.2, 9))
    assert analysis.benjamini_hochberg(random_p) == pytest.approx(list(stats.false_discovery_control(random_p)))
    assert analysis.benjamini_hochberg([0.9, 0.95, float("nan")]) == pytest.approx([0.95, 0.95, None])
    assert analysis.benjamini_hochberg([]) == []
    with pytest.raises(ValueError, match=r"p-values must lie in \[0, 1\]"):
        analysis.benjamini_hochberg([0.5, 1.5])


# -- correlates ----------------------------------------------------------------------------------

CORRELATE_ROWS = [
    ref_row("a", "original", "Q1", cra=0.1, crt=0.2),
    ref_row("a", "original", "Q2", cra=0.4, crt=0.2),
    ref_row("a", "original", "Q3", cra=0.4, crt=0.2),
    ref_row("a", "original", "Q4", cra=0.9, crt=0.2),
    ref_row("b", "original", "Q1", cra=0.3, crt=0.1),
    ref_row("b", "original", "Q2", cra=0.1, crt=0.5),
    ref_row("b", "original", "Q3", cra=0.8, crt=0.3),
    ref_row("b", "original", "Q4", cra=0.6, crt=0.0),
    ref_row("b", "synonym", "Q1", cra=1.0, crt=1.0),
]
CORRELATE_COVARIATES = {
    "Q1": {"training_frequency": 5, "title_ambiguity": 0, "popularity": 10, "creation_year": 1889},
    "Q2": {"training_frequency": 50, "title_ambiguity": 0, "popularity": 30, "creation_year": 1503},
    "Q3": {"training_frequency": 7, "title_ambiguity": 0, "popularity": 20, "creation_year": None},
    "Q4": {"training_frequency": 900, "title_ambiguity": 0, "popularity": 40},
}


def test_correlates_per_model_and_pooled_against_scipy():
    out = analysis.correlates(CORRELATE_ROWS, CORRELATE_COVARIATES, resamples=500)
    assert {r["scope"] for r in out} == {"a", "b", "pooled"}
    assert len(out) == 3 * 2 * 4
    a = pick(out, scope="a", metric="cra", covariate="popularity")
    assert a["rho"] == pytest.approx(stats.spearmanr([0.1, 0.4, 0.4, 0.9], [10, 30, 20, 40]).statistic)
    assert a["p_value"] == pytest.approx(stats.spearmanr([0.1, 0.4, 0.4, 0.9], [10, 30, 20, 40]).pvalue)
    assert (a["n"], a["note"]) == (4, None)
    assert a["ci_low"] <= a["rho"] <= a["ci_high"]
    # pooled: per reference the mean of a and b: 0.2, 0.25, 0.6, 0.75
    pooled = pick(out, scope="pooled", metric="cra", covariate="training_frequency")
    assert pooled["rho"] == pytest.approx(stats.spearmanr([0.2, 0.25, 0.6, 0.75], [5, 50, 7, 900]).statistic)
    # creation_year known for Q1, Q2 only; title_ambiguity 0 everywhere; a's CRT constant.
    assert pick(out, scope="a", metric="cra", covariate="creation_year")["note"] == (
        "fewer than 3 references with both cra and creation_year")
    assert pick(out, scope="a", metric="cra", covariate="creation_year")["n"] == 2
    assert pick(out, scope="b", metric="cra", covariate="title_ambiguity")["note"] == "constant title_ambiguity"
    constant = pick(out, scope="a", metric="crt", covariate="popularity")
    assert (constant["note"], constant["rho"], constant["p_value"], constant["p_adjusted"]) == (
        "constant crt", None, None, None)
    # BH over every row that has a p-value, in table order.
    tested = [r for r in out if r["p_value"] is not None]
    assert len(tested) == 3 * 2 * 2 - 2  # two covariates testable per scope and metric, less a's constant CRT
    assert [r["p_adjusted"] for r in tested] == pytest.approx(
        list(stats.false_discovery_control([r["p_value"] for r in tested])))
    assert all(set(r) == {"scope", "metric", "covariate", "rho", "ci_low", "ci_high", "p_value", "p_adjusted",
                          "n", "note"} for r in out)


def test_correlates_never_crash_on_degenerate_tables():
    single = analysis.correlates([ref_row("a", "original", "Q1", cra=0.5)], CORRELATE_COVARIATES, resamples=50)
    assert [r["scope"] for r in single] == ["a"] * 8  # one model: no pooled copy of it
    assert pick(single, metric="cra", covariate="popularity")["note"] == (
        "fewer than 3 references with both cra and popularity")
    missing = analysis.correlates(CORRELATE_ROWS, {}, resamples=50)
    assert {r["note"] for r in missing} == {f"no values of {c}" for c in analysis.COVARIATES}
    assert all(r["rho"] is None and r["p_adjusted"] is None and r["n"] == 0 for r in missing)
    assert analysis.correlates(CORRELATE_ROWS, CORRELATE_COVARIATES, perturbation="literal") == []
    with pytest.raises(ValueError, match="metrics must be some of"):
        analysis.correlates(CORRELATE_ROWS, {}, metrics=("clip",))
    with pytest.raises(ValueError, match="covariates must map"):
        analysis.correlates(CORRELATE_ROWS, [1, 2])
    with pytest.raises(ValueError, match="covariate popularity of Q1 is 'many', not a number"):
        analysis.correlates(CORRELATE_ROWS, {"Q1": {"popularity": "many"}}, resamples=50)


def test_covariates_from_summaries():
    summaries = [
        {"id": "Q1", "title": "The Starry Night", "sitelinks": 70, "year": 1889, "caption_count": 1200,
         "near_title_catalog": 1, "near_title_export": 12, "same_title_catalog": 0},
        {"id": "Q2", "sitelinks": 3, "covariates": {"sitelinks": 5, "near_title_catalog": 2, "year": None}},
        {"id": "Q3"},
    ]
    assert analysis.covariates_from_summaries(summaries) == {
        "Q1": {"training_frequency": 1200.0, "title_ambiguity": 12.0, "popularity": 70.0, "creation_year": 1889.0},
        "Q2": {"training_frequency": None, "title_ambiguity": 2.0, "popularity": 5.0, "creation_year": None},
        "Q3": {"training_frequency": None, "title_ambiguity": None, "popularity": None, "creation_year": None},
    }
    with pytest.raises(ValueError, match="reference summary 1 has no 'id'"):
        analysis.covariates_from_summaries([{"id": "Q1"}, {"sitelinks": 3}])
    with pytest.raises(ValueError, match="reference Q1: sitelinks is 'a lot', not a number"):
        analysis.covariates_from_summaries([{"id": "Q1", "sitelinks": "a lot"}])
    with pytest.raises(ValueError, match="listed twice"):
        analysis.covariates_from_summaries([{"id": "Q1"}, {"id": "Q1"}])


# -- analyze, bad input, a results folder --------------------------------------------------------

ANALYZE_ROWS = [*SENSITIVITY_ROWS, ref_row("b", "original", "Q1", cra=0.3, vr=0.3),
                ref_row("b", "original", "Q2", cra=0.6, vr=0.1), ref_row("b", "original", "Q3", cra=0.2, vr=0.5),
                ref_row("c", "synonym", "Q1", cra=0.2)]


def test_analyze_is_json_able_with_notes_and_settings():
    covariates = {"Q1": {"popularity": 10}, "Q2": {"popularity": 30}, "Q3": {"popularity": 20}}
    result = analysis.analyze(ANALYZE_ROWS, covariates, resamples=300, seed=4)
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text) == result
    assert set(result) == {"model_comparison", "perturbation_sensitivity", "iconic_survival", "correlates",
                           "notes", "settings"}
    assert {r["model"] for r in result["model_comparison"]} == {"a", "b"}
    notes = " | ".join(result["notes"])
    assert "c has no 'original' prompt cell" in notes
    assert "a/synonym: 1 reference(s) without a pair in 'original'" in notes
    assert "training_frequency: no reference has a value (no caption corpus was counted)" in notes
    assert "popularity: no reference" not in notes
    assert "higher means a less unique title" in notes
    settings = result["settings"]
    assert (settings["resamples"], settings["seed"], settings["baseline"], settings["confidence"]) == (
        300, 4, "original", 0.95)
    assert (settings["survival_min_cra"], settings["survival_min_vr"]) == (0.0, 0.0)
    assert analysis.analyze([], {})["notes"] == ["no reference rows: nothing to analyze"]
    only_original = analysis.analyze(ANALYZE_ROWS[:3], {}, resamples=50)["notes"]
    assert "only the 'original' prompt was run: no perturbation sensitivity or survival" in only_original


def test_analyze_is_deterministic_with_the_seed_whatever_the_row_order():
    rng = np.random.default_rng(5)
    rows = [ref_row(m, p, f"Q{i}", *rng.uniform(0, 1, 3), imagery=("static", "dynamic")[i % 2])
            for m in ("a", "b") for p in ("original", "literal") for i in range(12)]
    covariates = {f"Q{i}": {"popularity": float(v)} for i, v in enumerate(rng.uniform(0, 100, 12))}
    first = analysis.analyze(rows, covariates, resamples=300, seed=7)
    shuffled = list(rows)
    random.Random(1).shuffle(shuffled)
    again = analysis.analyze(shuffled, covariates, resamples=300, seed=7)
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    for table in ("model_comparison", "perturbation_sensitivity", "iconic_survival", "correlates"):
        # Tables list models in order of first appearance; the numbers do not depend on it.
        assert sorted(map(key, first[table])) == sorted(map(key, again[table]))
    assert first == analysis.analyze(rows, covariates, resamples=300, seed=7)
    other = analysis.analyze(rows, covariates, resamples=300, seed=8)
    for table in ("model_comparison", "perturbation_sensitivity", "correlates"):
        assert [r["ci_low"] for r in first[table]] != [r["ci_low"] for r in other[table]]
        assert [r.get("value", r.get("delta", r.get("rho"))) for r in first[table]] == [
            r.get("value", r.get("delta", r.get("rho"))) for r in other[table]]


@pytest.mark.parametrize("rows, match", [
    ([{"model": "a", "perturbation": "original"}], "reference row 0 lacks reference_id"),
    ([ref_row("a", "original", "Q1"), ref_row("a", "original", "Q1")], "reference Q1 appears twice in a/original"),
    ([ref_row("a", "original", "Q1", imagery="moving")], "imagery is 'moving', not 'static' or 'dynamic'"),
    ([{**ref_row("a", "original", "Q1"), "cra": "high"}], "a/original/Q1: cra is 'high', not a number"),
    ([{k: v for k, v in ref_row("a", "original", "Q1").items() if k != "vi"}], "a/original/Q1 lacks 'vi'"),
    (["a row"], "reference row 0 is a str, not a mapping"),
])
def test_bad_rows_give_one_line_errors(rows, match):
    with pytest.raises(ValueError, match=match):
        analysis.model_comparison(rows, resamples=10)


@pytest.mark.parametrize("kwargs, match", [
    ({"confidence": 1.0}, r"confidence must lie in \(0, 1\)"),
    ({"resamples": 0}, "resamples must be a positive integer"),
    ({"resamples": 2.5}, "resamples must be a positive integer"),
])
def test_bad_bootstrap_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        analysis.perturbation_sensitivity(SENSITIVITY_ROWS, **kwargs)


def full_row(row: dict) -> dict:
    """A `REFERENCE_COLUMNS` row around the analysis columns."""
    filler = {"string": "", "int64": 4, "float64": 0.0}
    full = {name: filler[kind] for name, kind, _ in REFERENCE_COLUMNS}
    return {**full, **row, "n_recognized": round(4 * row["cra"])}


def test_load_run_rows_reads_a_results_folder(tmp_path):
    for model, perturbation in (("a", "original"), ("a", "synonym")):
        rows = [full_row(r) for r in SENSITIVITY_ROWS if (r["model"], r["perturbation"]) == (model, perturbation)]
        write_reference_parquet(rows, tmp_path / "cells" / model / perturbation / "references.parquet")
    summaries = [{"id": "Q1", "sitelinks": 10}, {"id": "Q2", "sitelinks": 30}, {"id": "Q3", "sitelinks": 20}]
    (tmp_path / "references.json").write_text(json.dumps(summaries))
    rows, loaded = analysis.load_run_rows(tmp_path)
    assert loaded == summaries
    assert sorted((r["perturbation"], r["reference_id"], r["cra"]) for r in rows) == sorted(
        (r["perturbation"], r["reference_id"], r["cra"]) for r in SENSITIVITY_ROWS)
    result = analysis.analyze(rows, analysis.covariates_from_summaries(loaded), resamples=200)
    assert pick(result["perturbation_sensitivity"], metric="cra")["delta"] == pytest.approx(0.1)
    assert pick(result["correlates"], metric="cra", covariate="popularity")["rho"] == pytest.approx(
        stats.spearmanr([0.1, 0.9, 0.5], [10, 30, 20]).statistic)

    (tmp_path / "references.json").unlink()
    assert analysis.load_run_rows(tmp_path)[1] == []
    (tmp_path / "references.json").write_text("{}")
    with pytest.raises(ValueError, match="not a list of references"):
        analysis.load_run_rows(tmp_path)
    with pytest.raises(ValueError, match="no results folder"):
        analysis.load_run_rows(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no cell completed"):
        analysis.load_run_rows(tmp_path / "empty")


def test_average_ranks_are_scipys_rankdata_on_ties_and_rows():
    from services.scorer.aggregation import average_ranks

    rng = np.random.default_rng(7)
    for shape in [(1,), (9,), (200, 6), (40, 767)]:
        tied = rng.integers(0, 4, size=shape).astype(float)
        spread = rng.normal(size=shape)
        for values in (tied, spread, -tied):
            np.testing.assert_array_equal(average_ranks(values), stats.rankdata(values, axis=-1))


def test_the_analysis_and_a_reused_validation_do_not_import_scipy_stats():
    """scipy.stats takes about a second to import; the analysis needs only ranks and Student's
    t, and a reused validation no statistic at all."""
    import subprocess
    import sys

    code = ("import sys, flows.analysis, flows.analyze, services.scorer.validation, services.scorer.calibration; "
            "print('scipy.stats' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parents[1]))
    assert out.stdout.strip() == "False"
