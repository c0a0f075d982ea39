"""The benchmark file (flows/spec.py): the shipped benchmarks validate, round-trip and hash
stably; each kind of mistake is an error that says where it is and what is allowed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from flows.spec import (
    BENCHMARKS_DIR,
    KNOWN_MODELS,
    MODEL_KEYS,
    BenchmarkError,
    BenchmarkSpec,
    RetrySpec,
    load_benchmark,
)
from tests.shared_data import references_root

MINIMAL = {"name": "mini", "references": {"source": "catalog", "catalog": "refs.json"}}


def spec_of(**changes) -> BenchmarkSpec:
    return BenchmarkSpec.from_dict({**MINIMAL, **changes})


# -- the shipped benchmarks ------------------------------------------------------------------

def test_default_benchmark_is_the_offline_smoke_run():
    spec = load_benchmark()
    assert spec.name == "default" and spec.experiment == "default"
    assert [m.name for m in spec.models] == ["tiny-flux", "tiny-sd"]
    assert spec.perturbations == ("original", "synonym", "literal")
    assert 4 <= spec.images_per_prompt <= 8 and spec.seeds == tuple(range(spec.images_per_prompt))
    assert (spec.encoders.recognition, spec.encoders.realization) == ("classical", "classical")
    assert all(spec.services.is_local(s) for s in ("harvester", "generator", "scorer", "triton"))
    assert spec.references.source == "catalog"
    assert spec.path(spec.references.catalog) == BENCHMARKS_DIR / "references.json"
    configs = spec.model_configs()
    assert {c["pipeline"] for c in configs} == {"tiny:tiny-sd", "tiny:tiny-flux"}


def test_paper_benchmark_is_the_papers_setup():
    spec = load_benchmark("paper")
    assert [m.name for m in spec.models] == ["sd15", "sd21", "sdxl", "sd35-medium", "flux-schnell"]
    assert spec.references.source == "harvester"
    assert spec.references.filter.top_n == {"still": 667, "moving": 100}
    assert sum(spec.references.filter.top_n.values()) == 767
    # the same split as the shipped harvest config it names
    harvest = yaml.safe_load(spec.path(spec.references.harvest_config).read_text())
    assert harvest["wikidata"]["top_n"] == spec.references.filter.top_n
    assert spec.images_per_prompt == 50 and spec.perturbations == ("original", "synonym", "literal")
    assert (spec.encoders.recognition, spec.encoders.realization) == ("clip-vit-b-16", "dinov2-vitb14")
    assert spec.thresholds.to_dict() == {"recognition_static": 0.70, "recognition_dynamic": 0.75, "reuse": 0.6}
    assert not any(spec.services.is_local(s) for s in ("harvester", "generator", "scorer", "triton"))
    assert spec.mlflow.tracking_uri.startswith("http://")


def _carried_catalog() -> list[dict]:
    return json.loads((BENCHMARKS_DIR / "references.json").read_text())["references"]


def test_carried_catalog_matches_the_shared_one():
    """Same slugs, QIDs and metadata as ../shared/data/references/catalog.json (plus a
    literal description), so that folder serves as the offline image source."""
    root = references_root()
    shared = {e["slug"]: e for e in json.loads((root / "catalog.json").read_text())}
    carried = _carried_catalog()
    assert 5 <= len(carried) <= 6
    assert {e["imagery"] for e in carried} == {"static", "dynamic"}
    for entry in carried:
        assert {k: v for k, v in entry.items() if k != "description"} == shared[entry["slug"]]
        assert entry["public_domain"].startswith("PD")
        for name in entry["images"]:
            assert (root / entry["slug"] / name).is_file()


def test_carried_catalog_yields_every_prompt_variant():
    pytest.importorskip("wn")
    from services.harvester.prompts import prompt_variants
    from services.harvester.sources import OfflineSource

    source = OfflineSource(BENCHMARKS_DIR / "references.json", BENCHMARKS_DIR)  # images not read here
    records = list(source.records())
    assert [r.slug for r in records] == [e["slug"] for e in _carried_catalog()]
    for record in records:
        variants = {v.perturbation: v for v in prompt_variants(record, load_benchmark().perturbations)}
        assert set(variants) == {"original", "synonym", "literal"}
        assert variants["synonym"].text != variants["original"].text
        assert variants["literal"].method == "catalog description"  # nothing had to be removed


def test_model_keys_and_registry_match_the_generator():
    models = pytest.importorskip("services.generator.models")
    assert set(MODEL_KEYS) == {f.name for f in dataclasses.fields(models.ModelConfig)}
    assert set(KNOWN_MODELS) == set(models.REGISTRY)
    for name in ("default", "paper"):
        spec = load_benchmark(name)
        configs = models.resolve_models(spec.model_configs())
        assert [c.name for c in configs] == [m.name for m in spec.models]


def test_model_overrides_and_full_configurations():
    spec = spec_of(models=["tiny-sd", {"name": "tiny-flux", "steps": 2},
                           {"name": "mine", "pipeline": "org/model", "revision": "abc123", "steps": 20, "guidance": 5,
                            "height": 256, "width": 256, "dtype": "bfloat16", "scheduler": "EulerDiscreteScheduler"}])
    configs = {c["name"]: c for c in spec.model_configs()}
    assert configs["tiny-flux"]["steps"] == 2
    assert configs["mine"]["revision"] == "abc123" and configs["mine"]["scheduler"] == "EulerDiscreteScheduler"
    assert spec.to_dict()["models"][0] == "tiny-sd"


# -- round trip and content hash -------------------------------------------------------------

@pytest.mark.parametrize("name", ["default", "paper"])
def test_resolved_round_trips_with_the_same_hash(name):
    spec = load_benchmark(name)
    resolved = spec.resolved()
    again = BenchmarkSpec.from_dict(resolved)
    assert again.resolved() == resolved
    assert again.content_hash() == spec.content_hash()
    assert BenchmarkSpec.from_dict(json.loads(json.dumps(resolved))).content_hash() == spec.content_hash()
    # the recorded YAML reads back too
    assert BenchmarkSpec.from_dict(yaml.safe_load(spec.to_yaml())).content_hash() == spec.content_hash()


def test_content_hash_covers_what_changes_results_only():
    base = spec_of(images_per_prompt=3)
    same = [
        spec_of(seeds=[0, 1, 2]),
        spec_of(seeds={"base": 0}, images_per_prompt=3),
        BenchmarkSpec.from_dict(dict(reversed(list({**MINIMAL, "images_per_prompt": 3}.items())))),
        spec_of(images_per_prompt=3, services={"scorer": "scorer.example:50053"}, mlflow={"tracking_uri": "http://x:5000"},
                concurrency={"generator": 16}, retries={"attempts": 9}, description="other words"),
        spec_of(images_per_prompt=3, models=[{"name": "tiny-sd", "description": "renamed"}, "tiny-flux"]),
    ]
    for other in same:
        assert other.content_hash() == base.content_hash()
    different = [
        spec_of(images_per_prompt=4),
        spec_of(seeds=1, images_per_prompt=3),
        spec_of(images_per_prompt=3, models=[{"name": "tiny-sd", "steps": 5}, "tiny-flux"]),
        spec_of(images_per_prompt=3, perturbations=["original", "synonym"]),
        spec_of(images_per_prompt=3, thresholds={"reuse": 0.5}),
        spec_of(images_per_prompt=3, crt_variant="all_images"),
        spec_of(images_per_prompt=3, encoders={"recognition": "clip-vit-b-16"}),
        spec_of(images_per_prompt=3, references={**MINIMAL["references"], "filter": {"top_n": 3}}),
        spec_of(images_per_prompt=3, name="other"),
    ]
    hashes = {s.content_hash() for s in different}
    assert base.content_hash() not in hashes and len(hashes) == len(different)


def test_seeds_are_defined_per_image():
    assert spec_of(seeds=100, images_per_prompt=4).seeds == (100, 101, 102, 103)
    assert spec_of(seeds=[7, 3]).seeds == (7, 3) and spec_of(seeds=[7, 3]).images_per_prompt == 2
    assert spec_of().seeds == (0, 1)


def test_relative_paths_resolve_against_the_file(tmp_path):
    folder = tmp_path / "bench"
    folder.mkdir()
    (folder / "b.yaml").write_text("name: b\nreferences: {source: catalog, catalog: cat.json, images_dir: ../imgs}\n")
    spec = BenchmarkSpec.from_file(folder / "b.yaml")
    assert spec.path(spec.references.catalog) == folder / "cat.json"
    assert spec.path(spec.references.images_dir).resolve() == (tmp_path / "imgs").resolve()
    assert spec.path("/abs/x") == Path("/abs/x")


def test_with_overrides_validates_again():
    spec = load_benchmark()
    changed = spec.with_overrides(mlflow={"tracking_uri": "sqlite:///x.db"}, images_per_prompt=3)
    assert changed.mlflow.tracking_uri == "sqlite:///x.db" and changed.seeds == (0, 1, 2)
    with pytest.raises(BenchmarkError, match=r"^mlflow\.tracking_uri: must be a non-empty string"):
        spec.with_overrides(mlflow={"tracking_uri": ""})


def test_retry_delays_back_off():
    assert [RetrySpec(attempts=3, backoff_s=0.5, max_backoff_s=1.5).delay(k) for k in range(3)] == [0.5, 1.0, 1.5]


# -- errors: each names where and what is allowed ---------------------------------------------

ERRORS = [
    ({"nmae": "x"}, r"^nmae: unknown key; allowed: name, description, base_dir, references, models"),
    ({"name": "bad name!"}, r"^name: must be letters, digits, _ \. - .*; got 'bad name!'"),
    ({"models": ["tiny-sd", {"name": "tiny-flux", "stepz": 3}]},
     r"^models\[1\]\.stepz: unknown key; allowed: call_kwargs, .*steps, steps_range, variant, width$"),
    ({"models": [{"name": "tiny-sd", "steps": "four"}]}, r"^models\[0\]\.steps: must be an integer >= 1; got 'four'"),
    ({"models": [{"name": "tiny-sd", "dtype": "fp8"}]}, r"^models\[0\]\.dtype: must be one of float32, float16, bfloat16"),
    ({"models": ["sd9"]}, r"^models\[0\]: unknown model 'sd9'; registry models: .*tiny-sd"),
    ({"models": [{"name": "mine", "steps": 3}]}, r"^models\[0\]\.pipeline: is required for 'mine'"),
    ({"models": ["tiny-sd", {"name": "tiny-sd", "steps": 2}]}, r"^models: names tiny-sd more than once"),
    ({"models": []}, r"^models: must be a non-empty list"),
    ({"models": "tiny-sd"}, r"^models: must be a non-empty list"),
    ({"perturbations": ["original", "Synonym!"]}, r"^perturbations\[1\]: must be original, synonym, literal or a custom name"),
    ({"perturbations": ["original", "original"]}, r"^perturbations: repeats original"),
    ({"images_per_prompt": 0}, r"^images_per_prompt: must be an integer in \[1, 10000\]; got 0"),
    ({"images_per_prompt": 3, "seeds": [1, 2]}, r"^seeds: lists 2 seeds but images_per_prompt is 3"),
    ({"seeds": [1, 1]}, r"^seeds: repeats seed 1"),
    ({"seeds": -1}, r"^seeds: must be an integer in \[0, "),
    ({"seeds": {"start": 1}}, r"^seeds\.start: unknown key; allowed: base"),
    ({"encoders": {"recognition": ""}}, r"^encoders\.recognition: must be a non-empty string \(a scorer encoder name or auto\)"),
    ({"encoders": {"recogniton": "x"}}, r"^encoders\.recogniton: unknown key; allowed: recognition, realization"),
    ({"thresholds": {"reuse": 1.0}}, r"^thresholds\.reuse: must be a number in \(0, 1\) or null"),
    ({"thresholds": {"recognition_static": 0}}, r"^thresholds\.recognition_static: must be a number in \(0, 1\)"),
    ({"thresholds": {"recognition": 0.5}}, r"^thresholds\.recognition: unknown key; allowed: recognition_static, recognition_dynamic, reuse"),
    ({"crt_variant": "all"}, r"^crt_variant: must be one of recognized_images, all_images; got 'all'"),
    ({"imagery": "moving"}, r"^imagery: must be one of static, dynamic, by_kind; got 'moving'"),
    ({"services": {"scorer": "localhost"}}, r"^services\.scorer: must be local or host:port with a port in \[1, 65535\]"),
    ({"services": {"scorer": "h:70000"}}, r"^services\.scorer: must be local or host:port"),
    ({"services": {"mlflow": "local"}}, r"^services\.mlflow: unknown key; allowed: harvester, generator, scorer, triton"),
    ({"mlflow": "sqlite:///x.db"}, r"^mlflow: must be a mapping with keys tracking_uri, experiment"),
    ({"concurrency": {"generator": 0}}, r"^concurrency\.generator: must be an integer in \[1, 1024\]; got 0"),
    ({"retries": {"attempts": -1}}, r"^retries\.attempts: must be an integer in \[0, 100\]"),
    ({"retries": {"backoff_s": 5, "max_backoff_s": 1}}, r"^retries\.max_backoff_s: must be >= backoff_s \(5\)"),
    ({"references": {"source": "wikidata"}}, r"^references\.source: must be one of catalog, harvester; got 'wikidata'"),
    ({"references": {"source": "catalog"}}, r"^references\.catalog: is required when source is catalog"),
    ({"references": {"source": "catalog", "catalog": "c.json", "filter": {"kind": "film"}}},
     r"^references\.filter\.kind: must be one of still, moving; got 'film'"),
    ({"references": {"source": "harvester", "filter": {"top_n": {"still": 5, "films": 2}}}},
     r"^references\.filter\.top_n\.films: unknown key; allowed: still, moving"),
    ({"references": {"source": "harvester", "filter": {"top_n": 0}}}, r"^references\.filter\.top_n: must be an integer >= 1; got 0"),
    ({"references": {"source": "harvester", "filter": {"ids": "Q1"}}}, r"^references\.filter\.ids: must be a non-empty list"),
    ({"references": {"source": "harvester", "filter": {"min_sitelinks": -2}}},
     r"^references\.filter\.min_sitelinks: must be an integer >= 0; got -2"),
]


@pytest.mark.parametrize(("changes", "message"), ERRORS, ids=[m.split(":")[0].strip("^\\") for _, m in ERRORS])
def test_errors_name_where_and_what_is_allowed(changes, message):
    with pytest.raises(BenchmarkError, match=message):
        BenchmarkSpec.from_dict({**MINIMAL, **changes})


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(BenchmarkError, match=r"^no benchmark file '.*missing\.yaml'"):
        BenchmarkSpec.from_file(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nmodels: [tiny-sd\n")
    with pytest.raises(BenchmarkError, match=r"broken\.yaml:3:1: not valid YAML"):
        BenchmarkSpec.from_file(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(BenchmarkError, match=r"list\.yaml: must be a mapping of benchmark keys"):
        BenchmarkSpec.from_file(listing)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("name: x\nmodels:\n  - tiny-sd\n  - {name: tiny-flux, stepz: 3}\n")
    with pytest.raises(BenchmarkError, match=r"wrong\.yaml: models\[1\]\.stepz: unknown key; allowed: "):
        BenchmarkSpec.from_file(wrong)
