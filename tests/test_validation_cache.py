"""The analyze flow's validation, cached by its provenance (`flows.analyze.validation_for`):
reused exactly where the encoders, thresholds, set, reference images and code are the same,
computed again where any of them changed or the cached file cannot be read, and neither read
nor written with `cache=False`.

A results folder here is what `validation_for` reads: references.json naming the works and a
references folder (catalog.json and a folder per work) of two small real works of
../shared/data/references, scored with the `classical` encoder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shared_data import references_root

from flows.analyze import VALIDATION_CACHE, VALIDATION_FILE, _read_cached, _stored_reference, validation_for
from flows.spec import load_benchmark
from services.scorer import validation
from services.scorer.encoders.classical import load_classical_encoder

WORKS = ("american_gothic", "the_sleeping_gypsy")


def classical_spec(**overrides):
    return load_benchmark(None).with_overrides(encoders={"recognition": "classical", "realization": "classical"},
                                               **overrides)


def results_folder(root: Path, copy: bool = False) -> tuple[Path, Path]:
    """A results folder and its references folder under `root`: the works' folders linked
    from the shared data, or copied (`copy`) so that a test may change an image."""
    shared = references_root()
    catalog = [item for item in json.loads((shared / "catalog.json").read_text()) if item["slug"] in WORKS]
    references = root / "references"
    references.mkdir(parents=True)
    for item in catalog:
        if copy:
            shutil.copytree(shared / item["slug"], references / item["slug"], copy_function=shutil.copyfile)
            (references / item["slug"]).chmod(0o755)  # the shared folders are read-only
        else:
            (references / item["slug"]).symlink_to((shared / item["slug"]).resolve(), target_is_directory=True)
    (references / "catalog.json").write_text(json.dumps(catalog))
    run = root / "run"
    run.mkdir()
    (run / "references.json").write_text(json.dumps([{"id": item["slug"]} for item in catalog]))
    return run, references


def without_cache(data: dict) -> dict:
    return {name: value for name, value in data.items() if name != "cache"}


@pytest.fixture
def validations(monkeypatch) -> list[int]:
    """The seed of each `validate` call (the flow imports it where it calls it)."""
    seeds = []
    real = validation.validate

    def counting(*args, **kwargs):
        seeds.append(kwargs["seed"])
        return real(*args, **kwargs)

    monkeypatch.setattr(validation, "validate", counting)
    return seeds


@pytest.fixture(scope="module")
def computed(tmp_path_factory) -> tuple[dict, Path, Path, Path]:
    """The works' validation computed once into a cache: (its JSON, the results folder, the
    references folder, the cache root)."""
    root = tmp_path_factory.mktemp("computed")
    run, references = results_folder(root)
    data, note = validation_for(run, classical_spec(), references, cache_dir=root / "cache")
    assert note is None and data["cache"]["hit"] is False
    return data, run, references, root / "cache"


def cached_file(cache: Path, data: dict) -> Path:
    return cache / VALIDATION_CACHE / f"{data['cache']['key']}.json"


def test_a_second_run_reuses_the_validation_exactly_without_validating_again(tmp_path, monkeypatch, validations):
    monkeypatch.setenv("ICONICITY_CACHE", str(tmp_path / "home-cache"))
    run, references = results_folder(tmp_path)
    first, _ = validation_for(run, classical_spec(), references)
    second, _ = validation_for(run, classical_spec(), references)

    assert validations == [0]
    key = first["cache"]["key"]
    assert first["cache"] == {"key": key, "hit": False} and second["cache"] == {"key": key, "hit": True}
    assert without_cache(second) == without_cache(first)
    assert json.loads((run / VALIDATION_FILE).read_text()) == second
    assert (tmp_path / "home-cache" / VALIDATION_CACHE / f"{key}.json").is_file()  # $ICONICITY_CACHE/validation


def test_the_same_images_in_another_results_folder_are_the_same_validation(computed, tmp_path, validations):
    data, _, _, cache = computed
    run, references = results_folder(tmp_path)
    again, _ = validation_for(run, classical_spec(), references, cache_dir=cache)
    assert validations == [] and again["cache"] == {**data["cache"], "hit": True}
    # the folder is not part of the key; the JSON says where the images were read this time
    assert again["provenance"]["references"]["source"] == str(references)
    assert without_cache(again) == {**without_cache(data), "provenance": again["provenance"]}
    assert {**again["provenance"], "references": {}} == {**data["provenance"], "references": {}}


def test_a_reused_validation_decodes_no_image(computed, monkeypatch, validations):
    """The key is computed from the image files' bytes; it is the key of the decoded works
    (under which `computed` stored its validation), so the cache is found without decoding."""
    from services.scorer import references as loading

    def refuse(*args, **kwargs):
        raise AssertionError("a reference image was decoded")

    data, run, references, cache = computed
    monkeypatch.setattr(loading, "decode_image", refuse)
    again, _ = validation_for(run, classical_spec(), references, cache_dir=cache)
    assert validations == [] and again["cache"] == {**data["cache"], "hit": True}


@pytest.mark.parametrize("layout", ["catalog.json", "a folder per work"])
def test_the_key_from_the_files_is_the_key_of_the_decoded_works(tmp_path, layout):
    _, references = results_folder(tmp_path)
    if layout == "a folder per work":  # no catalog.json: every image of each folder, in natural order
        (references / "catalog.json").unlink()
    entries = validation.load_catalog(references)
    assert len(entries) == len(WORKS)
    stored, decoded = [_stored_reference(e) for e in entries], [e.load() for e in entries]
    assert ([(r.reference_id, [i.content_hash for i in r.images]) for r in stored]
            == [(r.reference_id, [i.content_hash for i in r.images]) for r in decoded])
    encoder = load_classical_encoder()
    assert (validation.validation_key(encoder, encoder, stored, encoder.thresholds)
            == validation.validation_key(encoder, encoder, decoded, encoder.thresholds))


def test_a_work_whose_images_are_missing_is_the_error_loading_it_gives(tmp_path):
    _, references = results_folder(tmp_path, copy=True)
    work = json.loads((references / "catalog.json").read_text())[0]
    (references / work["slug"] / work["images"][-1]).unlink()
    entry = next(e for e in validation.load_catalog(references) if e.slug == work["slug"])
    with pytest.raises(FileNotFoundError):
        entry.load()
    with pytest.raises(FileNotFoundError):
        _stored_reference(entry)


@pytest.mark.parametrize("change", ["seed", "threshold"])
def test_another_seed_or_threshold_is_another_key_and_validates_again(computed, validations, change):
    data, run, references, cache = computed
    seed, reuse = (1, None) if change == "seed" else (0, 0.55)
    assert data["seed"] != seed or data["thresholds"]["reuse"] != reuse
    changed, _ = validation_for(run, classical_spec(thresholds={"reuse": reuse}), references, seed, cache_dir=cache)
    assert validations == [seed]
    assert changed["cache"]["hit"] is False and changed["cache"]["key"] != data["cache"]["key"]
    assert cached_file(cache, changed).is_file() and cached_file(cache, data).is_file()
    assert changed["seed"] == seed and changed["thresholds"]["reuse"] == (reuse or data["thresholds"]["reuse"])


def test_a_changed_reference_image_is_another_key_and_validates_again(computed, tmp_path, validations):
    data, _, _, cache = computed
    run, references = results_folder(tmp_path, copy=True)
    work = json.loads((references / "catalog.json").read_text())[0]
    image = references / work["slug"] / work["images"][0]  # the canonical image, the one the edits start from
    pixels = np.array(Image.open(image).convert("RGB"))
    pixels[:40, :40] = 255 - pixels[:40, :40]
    Image.fromarray(pixels).save(image)

    changed, _ = validation_for(run, classical_spec(), references, cache_dir=cache)
    assert validations == [0]
    assert changed["cache"]["hit"] is False and changed["cache"]["key"] != data["cache"]["key"]
    digest = "content_digest"
    assert changed["provenance"]["references"][digest] != data["provenance"]["references"][digest]


def test_a_cached_file_that_cannot_be_read_is_computed_again_and_overwritten(computed, tmp_path, validations):
    data, run, references, cache = computed
    mine = tmp_path / "cache"
    path = cached_file(mine, data)
    path.parent.mkdir(parents=True)
    stored = cached_file(cache, data).read_text()
    path.write_text(stored[: len(stored) // 2])  # torn

    again, _ = validation_for(run, classical_spec(), references, cache_dir=mine)
    assert validations == [0] and again["cache"] == {**data["cache"], "hit": False}
    assert without_cache(again) == without_cache(data)
    assert json.loads(path.read_text()) == {"key": data["cache"]["key"], "validation": without_cache(data)}
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


@pytest.mark.parametrize("content", [b"", b"\xff\xfe not text", b"[]", b'{"key": "another", "validation": {"tasks": {}}}',
                                     b'{"key": "K", "validation": {"tasks": {}}}', b'{"key": "K", "validation": []}'])
def test_what_is_not_a_stored_validation_under_its_key_is_not_read(tmp_path, content):
    path = tmp_path / "K.json"
    path.write_bytes(content)
    assert _read_cached(path, "K") is None
    assert _read_cached(tmp_path / "missing.json", "K") is None


def test_without_the_cache_nothing_is_read_or_written(computed, tmp_path, monkeypatch, validations):
    data, run, references, _ = computed
    # a planted entry under the key: read, it would be returned as it is
    planted = tmp_path / "planted"
    path = cached_file(planted, data)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"key": data["cache"]["key"], "validation": {**without_cache(data), "planted": True}}))
    before = path.read_bytes()
    assert validation_for(run, classical_spec(), references, cache_dir=planted)[0].get("planted") is True
    monkeypatch.setenv("ICONICITY_CACHE", str(tmp_path / "home-cache"))

    fresh, _ = validation_for(run, classical_spec(), references, cache=False, cache_dir=planted)
    assert validations == [0]
    assert "planted" not in fresh and fresh["cache"] == {**data["cache"], "hit": False}
    assert without_cache(fresh) == without_cache(data)
    assert path.read_bytes() == before and list(path.parent.iterdir()) == [path]
    assert not (tmp_path / "home-cache").exists()


def test_the_key_follows_the_code(computed, tmp_path, monkeypatch):
    """A change in any module that computes the validation is another key."""
    data, _, references, _ = computed
    encoder = load_classical_encoder()
    works = [entry.load() for entry in validation.load_catalog(references)]
    key = validation.validation_key(encoder, encoder, works, encoder.thresholds)
    assert key == data["cache"]["key"]
    module = tmp_path / "edits.py"
    module.write_text("A = 1\n")
    files = validation._code_files()
    monkeypatch.setattr(validation, "_code_files", lambda: [*files, module])
    with_module = validation.validation_key(encoder, encoder, works, encoder.thresholds)
    module.write_text("A = 2\n")
    assert len({key, with_module, validation.validation_key(encoder, encoder, works, encoder.thresholds)}) == 3
    # every source file the validation goes through is in the fingerprint
    names = {p.name for p in files}
    assert {"validation.py", "edits.py", "baselines.py", "crops.py", "recognition.py", "realization.py", "scoring.py",
            "aggregation.py", "calibration.py", "classical.py", "classical.json", "transformer.py", "base.py"} <= names
