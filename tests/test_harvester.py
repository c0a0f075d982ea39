"""The harvester end to end: offline import and Wikidata (against loopback stand-ins) into a
catalog folder, merging, resumption, bad input, covariates, prompts, the CLI, and the
service over real gRPC."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harvester_standins import CommonsStandIn, SparqlStandIn, server_error, too_many_requests
from iconicity.v1 import harvester_pb2, harvester_pb2_grpc
from shared_data import shared_data

from services.cli import main as cli_main
from services.harvester.catalog import Catalog
from services.harvester.config import ConfigError, HarvestConfig
from services.harvester.harvest import HarvestFailed, harvest
from services.harvester.plan import WikidataSource, enrich_for, run_config
from services.harvester.records import ReferenceRecord
from services.harvester.server import create_harvester_server
from services.harvester.sources import OfflineSource, SourceImage

ROOT = Path(__file__).resolve().parent.parent
CONTACT = "iconicity-tests@example.org"


@pytest.fixture(scope="module", autouse=True)
def own_cache(tmp_path_factory):
    """The harvests here keep what they cache (`run_config`: the export's title index, image
    sizes) in a folder of their own, not in the user's $ICONICITY_CACHE."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ICONICITY_CACHE", str(tmp_path_factory.mktemp("iconicity-cache")))
        yield


@pytest.fixture(scope="module")
def data() -> Path:
    root = shared_data()
    if not (root / "references" / "catalog.json").exists():
        pytest.skip(f"shared reference catalog not found under {root} (set ICONICITY_SHARED_DATA)")
    return root


@pytest.fixture(scope="module")
def entries(data) -> list[dict]:
    return json.loads((data / "references" / "catalog.json").read_text())


def offline_config(data: Path, **changes) -> HarvestConfig:
    return HarvestConfig(source="offline", catalog_file=data / "references" / "catalog.json", **changes)


@pytest.fixture(scope="module")
def harvested(data, tmp_path_factory) -> Path:
    """The shared references harvested once, offline (covariates against the export beside them)."""
    out = tmp_path_factory.mktemp("catalog")
    with Catalog(out) as catalog:
        run_config(offline_config(data), catalog)
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- offline import -------------------------------------------------------------------------
def test_offline_harvest_holds_every_work_and_image(harvested, data, entries):
    with Catalog(harvested, create=False) as catalog:
        records = {r.id: r for r in catalog.references()}
        assert len(records) == len(entries) == 30
        for entry in entries:
            reference_id = entry["qid"] or entry["slug"]
            record = records[reference_id]
            assert (record.slug, record.title) == (entry["slug"], entry["title"])
            assert record.kind == ("moving" if entry["imagery"] == "dynamic" else "still")
            stored = catalog.images(reference_id)
            want = [_sha(data / "references" / entry["slug"] / name) for name in entry["images"]]
            assert [image.sha256 for image in stored] == want, entry["slug"]
            assert stored[0].position == 0
            for image in stored:
                assert hashlib.sha256(catalog.read_image(image)).hexdigest() == image.sha256
        snapshot = catalog.snapshots()[-1]
        assert snapshot.status == "complete" and snapshot.source == "offline"
        assert "catalog.json" in snapshot.query


def test_reharvest_merges_without_duplicates_and_keeps_versions(data, tmp_path):
    source = OfflineSource(data / "references" / "catalog.json")
    with Catalog(tmp_path) as catalog:
        first = harvest(source, catalog)
        second = harvest(source, catalog)
        assert (first.images_stored, first.images_reused) == (70, 0)
        assert (second.images_stored, second.images_reused) == (0, 70)
        assert len(catalog.references()) == 30
        assert sum(len(catalog.images(r.id)) for r in catalog.references()) == 70
        assert len(list((tmp_path / "images").rglob("*.*"))) == len({i.sha256 for r in catalog.references() for i in catalog.images(r.id)})
        assert [s.id for s in catalog.snapshots()] == [first.snapshot_id, second.snapshot_id]
        assert len(catalog.snapshot_references(first.snapshot_id)) == 30
        # A newer harvest's values win; older ones stay readable as of their snapshot.
        record = catalog.reference("Q45585")
        catalog.put_reference(second.snapshot_id, ReferenceRecord.from_dict({**record.to_dict(), "sitelinks": 999}))
        assert catalog.reference("Q45585").sitelinks == 999
        assert {r.id: r for r in catalog.references(first.snapshot_id)}["Q45585"].sitelinks == record.sitelinks


def test_reference_found_by_slug_and_same_title_gets_distinct_slug(tmp_path):
    with Catalog(tmp_path) as catalog:
        snapshot = catalog.begin_snapshot("test", "{}")
        catalog.put_reference(snapshot, ReferenceRecord("Q1", "the_kiss", "The Kiss"))
        other = catalog.put_reference(snapshot, ReferenceRecord("Q2", "the_kiss", "The Kiss"))
        assert other.slug == "the_kiss_q2"
        assert catalog.reference("the_kiss").id == "Q1"
        assert catalog.reference("the_kiss_q2").id == "Q2"
        with pytest.raises(KeyError):
            catalog.reference("nope")


class FlakySource(OfflineSource):
    """The shared catalog, whose source dies at the `fail_at`-th reference (a network gone)."""

    def __init__(self, catalog_file: Path, fail_at: int | None) -> None:
        super().__init__(catalog_file)
        self.fail_at, self.loads = fail_at, 0

    def records(self):
        for index, record in enumerate(super().records()):
            if index == self.fail_at:
                raise ConnectionError("network unreachable")
            yield record

    def images(self, record):
        for image in super().images(record):
            def load(image=image):
                self.loads += 1
                return image.load()
            yield SourceImage(image.source, load)


def test_interrupted_harvest_keeps_its_work_and_a_rerun_finishes(data, tmp_path):
    catalog_file = data / "references" / "catalog.json"
    with Catalog(tmp_path) as catalog:
        broken = FlakySource(catalog_file, fail_at=12)
        with pytest.raises(HarvestFailed, match="network unreachable") as failure:
            harvest(broken, catalog)
        assert failure.value.summary.status == "failed"
        assert catalog.snapshots()[-1].status == "failed"
        kept = catalog.references()
        assert len(kept) == 12 and all(catalog.images(r.id) for r in kept)
        held = sum(len(catalog.images(r.id)) for r in kept)

        rerun = FlakySource(catalog_file, fail_at=None)
        summary = harvest(rerun, catalog)
        assert summary.status == "complete"
        assert summary.images_reused == held and rerun.loads == 70 - held  # nothing fetched twice
        assert len(catalog.references()) == 30
        assert sum(len(catalog.images(r.id)) for r in catalog.references()) == 70


def test_bad_images_are_recorded_and_the_harvest_goes_on(data, tmp_path):
    folder = tmp_path / "refs"
    (folder / "good").mkdir(parents=True)
    (folder / "good" / "1.jpg").write_bytes((data / "references" / "mona_lisa" / "1.jpg").read_bytes())
    (folder / "broken").mkdir()
    (folder / "broken" / "1.jpg").write_bytes(b"<html>not an image</html>")
    (folder / "empty").mkdir()
    (folder / "catalog.json").write_text(json.dumps([
        {"slug": "good", "title": "Good Work", "images": ["1.jpg"]},
        {"slug": "broken", "title": "Broken Work", "images": ["1.jpg"]},
        {"slug": "empty", "title": "Empty Work"},
    ]))
    with Catalog(tmp_path / "out") as catalog:
        summary = harvest(OfflineSource(folder / "catalog.json"), catalog)
        assert summary.status == "complete"
        assert len(catalog.references()) == 3 and len(catalog.images("good")) == 1
        reasons = {(r, stage): why for r, stage, why in catalog.failures(summary.snapshot_id)}
        assert "could not be decoded" in reasons[("broken", "image")]
        assert "no image" in reasons[("empty", "reference")] and "no image" in reasons[("broken", "reference")]


def test_offline_source_rejects_bad_catalog_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no catalog file"):
        OfflineSource(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        OfflineSource(tmp_path / "bad.json")
    (tmp_path / "untitled.json").write_text(json.dumps([{"slug": "x"}]))
    with pytest.raises(ValueError, match="has no title"):
        list(OfflineSource(tmp_path / "untitled.json").records())


# -- what harvests keep between runs ---------------------------------------------------------
def _jpeg(size=(6, 4), orientation=None) -> bytes:
    import io

    from PIL import Image

    image = Image.new("RGB", size, (200, 30, 10))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def test_decoded_size_kept_by_content_equals_a_decode(data, tmp_path, monkeypatch):
    import services.harvester.harvest as harvest_module
    from services.common.images import InvalidImage, decode_image
    from services.harvester.harvest import decoded_size

    images = [_jpeg(), _jpeg(orientation=6), _jpeg(orientation=8), _jpeg(orientation=3)]
    images += [(data / "references" / "mona_lisa" / "1.jpg").read_bytes()]
    for image in images:
        decoded = decode_image(image)
        first = decoded_size(image, "x", folder=tmp_path)
        assert first == (decoded.width, decoded.height) == decoded_size(image, "x")
    assert decoded_size(images[1], "rotated", folder=tmp_path) == (4, 6)  # EXIF orientation applied
    assert len(list(tmp_path.rglob("*.json"))) == len(images)

    def no_decode(*args, **kwargs):
        raise AssertionError("kept sizes are not decoded again")

    monkeypatch.setattr(harvest_module, "decode_image", no_decode)
    assert [decoded_size(image, "x", folder=tmp_path) for image in images] == [
        (decode_image(image).width, decode_image(image).height) for image in images]
    monkeypatch.undo()
    # Another pixel limit is another question: decoded again, and refused.
    with pytest.raises(InvalidImage, match="over the limit"):
        decoded_size(images[-1], "big", max_pixels=100, folder=tmp_path)
    # Bytes that fail are never kept: they fail again, every time.
    for bad in (b"", b"<html>not an image</html>", images[0][: len(images[0]) // 2]):
        for _ in range(2):
            with pytest.raises(InvalidImage):
                decoded_size(bad, "bad", folder=tmp_path)
    assert len(list(tmp_path.rglob("*.json"))) == len(images) and not list(tmp_path.rglob(".*.tmp"))
    # A damaged entry is decoded again and rewritten.
    for damage in (b'[0, "x"]', b"[0, 5]", b"[6, 4, 1]", b"[6", b'{"6": 4}', b"[true, true]"):
        for entry in tmp_path.rglob("*.json"):
            entry.write_bytes(damage)
        assert [decoded_size(image, "x", folder=tmp_path) for image in images] == [
            (decode_image(image).width, decode_image(image).height) for image in images]
        assert damage not in {entry.read_bytes() for entry in tmp_path.rglob("*.json")}
    # A cache folder that cannot be written leaves the size uncached.
    (tmp_path / "file").write_text("")
    assert decoded_size(images[1], "x", folder=tmp_path / "file" / "sizes") == (4, 6)


def _catalog_state(folder: Path) -> dict:
    with Catalog(folder, create=False) as catalog:
        records = catalog.references()
        return {
            "references": [r.to_dict() for r in records],
            "images": {r.id: catalog.images(r.id) for r in records},
            "covariates": catalog.covariates(),
            "prompts": catalog.prompts(),
            "failures": catalog.failures(catalog.snapshots()[-1].id),
        }


def test_a_harvest_from_kept_sizes_and_index_stores_the_same(harvested, data, tmp_path, monkeypatch):
    """`harvested` ran with an empty cache (computed and kept everything); harvests into new
    folders read it back and store the same, byte for byte; so does one with no cache."""
    import services.harvester.covariates as covariates
    import services.harvester.harvest as harvest_module
    from services.harvester.plan import image_size_cache, title_index_cache

    assert list(image_size_cache().rglob("*.json")) and list(title_index_cache().glob("*.json"))
    expected = _catalog_state(harvested)
    assert sum(len(images) for images in expected["images"].values()) == 70
    with monkeypatch.context() as patch:
        patch.setattr(harvest_module, "decode_image", lambda *a, **k: pytest.fail("decoded a kept image"))
        patch.setattr(covariates.TitleIndex, "_from_csv", lambda *a: pytest.fail("read a kept export again"))
        with Catalog(tmp_path / "warm") as catalog:
            run_config(offline_config(data), catalog)
    assert _catalog_state(tmp_path / "warm") == expected
    monkeypatch.setenv("ICONICITY_CACHE", str(tmp_path / "empty-cache"))
    with Catalog(tmp_path / "cold") as catalog:
        run_config(offline_config(data), catalog)
    assert _catalog_state(tmp_path / "cold") == _catalog_state(harvested)
    for name in ("warm", "cold"):
        stored = sorted(p.relative_to(tmp_path / name) for p in (tmp_path / name / "images").rglob("*.*"))
        assert stored == sorted(p.relative_to(harvested) for p in (harvested / "images").rglob("*.*"))


def test_read_export_of_some_qids_is_the_whole_export_narrowed(data):
    from services.harvester.export import read_export

    path = data / "wikidata" / "artonwikidata_paintings.csv"
    every = read_export(path)
    wanted = {"Q45585", "Q471379", "Q12418", "", "Q0", "not a qid"}
    assert read_export(path, wanted) == {qid: p for qid, p in every.items() if qid in wanted}
    assert set(read_export(path, wanted)) == {"Q45585", "Q471379", "Q12418"}
    assert read_export(path, ()) == {}


# -- covariates and prompts over the harvested catalog ---------------------------------------
def _normalized(title: str) -> str:
    """An independent spelling of 'same title': lower case, letters and digits only, no
    leading article."""
    words = re.findall(r"[a-z0-9]+", title.lower())
    return " ".join(words[1:] if words and words[0] in ("the", "a", "an") else words)


def test_covariates_match_an_independent_count(harvested, data):
    import csv

    with open(data / "wikidata" / "artonwikidata_paintings.csv", encoding="utf-8", newline="") as handle:
        export = [(row["id"], _normalized(row["_title"])) for row in csv.DictReader(handle)]
    with Catalog(harvested, create=False) as catalog:
        rows = catalog.covariates()
        for record in catalog.references():
            row = rows[record.id]
            assert row["sitelinks"] == record.sitelinks and row["year"] == record.year
            others = [qid for qid, title in export if title == _normalized(record.title) and qid != record.qid]
            assert row["same_title_export"] == len(others), record.title
    # Known namesakes: van Gogh's is not the only "Starry Night" in the export.
    assert rows["Q45585"]["same_title_export"] >= 1


def test_prompt_variants_are_stored_with_how_they_were_made(harvested, entries):
    with Catalog(harvested, create=False) as catalog:
        prompts = {(p.reference_id, p.perturbation): p for p in catalog.prompts()}
        for record in catalog.references():
            original = prompts[(record.id, "original")]
            assert original.text == record.title and original.method
            synonym = prompts.get((record.id, "synonym"))
            if synonym is not None:
                assert synonym.text != record.title and "wordnet" in synonym.method
            literal = prompts.get((record.id, "literal"))
            if literal is not None:
                words = set(re.findall(r"\w+", literal.text.casefold()))
                stop = {"the", "a", "an", "of", "in", "at", "and", "on", "with", "to", "by"}
                title_words = set(re.findall(r"\w+", record.title.casefold())) - stop
                creator_words = set(re.findall(r"\w+", (record.creator or "").casefold())) - stop
                assert not words & (title_words | creator_words), (record.title, literal.text)
        # The shared catalog carries no depicts; the export beside it gives literal prompts.
        assert prompts[("Q45585", "literal")].text.startswith("a landscape painting of")
        assert sum(1 for key in prompts if key[1] == "literal") >= 20


# -- Wikidata, end to end through the stand-ins ----------------------------------------------
def test_wikidata_harvest_into_the_catalog(data, tmp_path):
    waits: list[float] = []
    with SparqlStandIn.from_shared_data(data) as wdqs, CommonsStandIn(data / "references") as commons:
        settings = {"contact": CONTACT, "endpoint": wdqs.url + "/sparql", "kinds": ["still"],
                    "still_classes": {"painting": "Q3305213"}, "top_n": 6, "cache_dir": str(tmp_path / "cache"),
                    "year_ranges": [[0, 2100]], "page_size": 3}
        config = HarvestConfig(source="wikidata", wikidata=settings, thumbnail_width=128,
                               commons_base=commons.file_path_base)
        wdqs.fail_next(too_many_requests("2"), server_error(503))
        source = WikidataSource(settings, 128, commons.file_path_base, sleep=waits.append)
        with Catalog(tmp_path / "out") as catalog:
            summary = harvest(source, catalog, enrich=enrich_for(config))
            assert summary.status == "complete" and not [f for f in summary.failures if f[1] == "image"]
            records = catalog.references()
            assert len(records) == 6 and all(r.id.startswith("Q") for r in records)
            assert 2 in waits and len(waits) >= 2  # Retry-After honoured (429), backoff after the 503
            for record in records:
                (image,) = catalog.images(record.id)[:1]
                assert image.width <= 128 and image.source == record.image_urls[0]
            asked = wdqs.requests
            assert all(CONTACT in agent for agent in wdqs.user_agents)
            # A rerun answers from the cache and holds the images already: nothing is asked.
            again = harvest(WikidataSource(settings, 128, commons.file_path_base, sleep=waits.append), catalog)
            assert wdqs.requests == asked and again.images_stored == 0
            assert len(catalog.references()) == 6


def test_harvest_config_names_a_wrong_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'perturbation' \(allowed: perturbations, custom\)"):
        HarvestConfig.from_yaml("source: offline\noffline: {catalog: x.json}\nprompts: {perturbation: [original]}")
    with pytest.raises(ConfigError, match="source: 'web' is not one of offline, wikidata"):
        HarvestConfig.from_yaml("source: web")
    with pytest.raises(ValueError, match="contact"):
        HarvestConfig.from_yaml("source: wikidata\nwikidata: {endpoint: http://127.0.0.1:1/sparql}")


# -- the CLI ----------------------------------------------------------------------------------
def test_cli_harvest_prints_a_summary_and_errors_in_one_line(data, tmp_path, capsys):
    out = tmp_path / "catalog"
    code = cli_main(["harvest", "--catalog", str(data / "references" / "catalog.json"),
                     "--images-dir", str(data / "references"), "--out", str(out), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0
    assert summary["references"] == 30 and summary["images"] == 70
    assert summary["references_by_kind"] == {"still": 26, "moving": 4}
    assert summary["prompts_by_perturbation"]["original"] == 30
    assert summary["covariates_filled"]["same_title_export"] == 30
    assert not [f for f in summary["failures"] if not f["stage"].startswith("prompt:")]

    config = tmp_path / "bad.yaml"
    config.write_text("source: offline\nofline: {}\n")
    assert cli_main(["harvest", "--config", str(config), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("iconicity: error: harvest config: unknown key 'ofline'") and "\n" not in err


# -- the service ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def harvester(harvested):
    server, port, servicer = create_harvester_server("127.0.0.1:0", catalog=harvested)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield harvester_pb2_grpc.HarvesterServiceStub(channel), channel, servicer
    channel.close()
    server.stop(0)


def test_service_lists_and_gets_references(harvester, entries):
    stub, _, _ = harvester
    every = [m.reference for m in stub.ListReferences(harvester_pb2.ListReferencesRequest())]
    assert len(every) == 30 and [r.id for r in every] == sorted(r.id for r in every)
    moving = [m.reference for m in stub.ListReferences(harvester_pb2.ListReferencesRequest(kind=harvester_pb2.REFERENCE_KIND_MOVING))]
    assert {r.slug for r in moving} == {e["slug"] for e in entries if e["imagery"] == "dynamic"}
    starry = [m.reference for m in stub.ListReferences(harvester_pb2.ListReferencesRequest(title_contains="starry"))]
    assert [r.id for r in starry] == ["Q45585"]
    top = [m.reference for m in stub.ListReferences(harvester_pb2.ListReferencesRequest(top_n=3))]
    linked = sorted((e for e in entries if e["sitelinks_lower_bound"]), key=lambda e: -e["sitelinks_lower_bound"])
    assert len(top) == 3 and top[0].covariates.sitelinks == linked[0]["sitelinks_lower_bound"]

    reference = stub.GetReference(harvester_pb2.GetReferenceRequest(reference_id="the_starry_night")).reference
    assert (reference.id, reference.title, reference.n_images) == ("Q45585", "The Starry Night", 5)
    assert reference.covariates.year == 1889 and reference.covariates.HasField("same_title_export")
    assert reference.kind == harvester_pb2.REFERENCE_KIND_STILL


def test_service_streams_images_and_prompts(harvester, data):
    stub, _, _ = harvester
    images = [m.image for m in stub.StreamReferenceImages(harvester_pb2.StreamReferenceImagesRequest(reference_id="nosferatu"))]
    files = sorted((data / "references" / "nosferatu").iterdir())
    assert [i.position for i in images] == list(range(len(images)))
    assert {hashlib.sha256(i.data).hexdigest() for i in images} == {_sha(f) for f in files if f.suffix != ".json"}
    variants = stub.ListPromptVariants(harvester_pb2.ListPromptVariantsRequest(reference_id="Q45585")).variants
    assert {v.perturbation for v in variants} >= {"original", "literal"}
    originals = stub.ListPromptVariants(harvester_pb2.ListPromptVariantsRequest(perturbation="original")).variants
    assert len(originals) == 30


def test_service_bad_requests_get_the_right_status(harvester):
    stub, _, _ = harvester
    cases = [
        (lambda: stub.GetReference(harvester_pb2.GetReferenceRequest(reference_id="Q0")), grpc.StatusCode.NOT_FOUND),
        (lambda: stub.GetReference(harvester_pb2.GetReferenceRequest()), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: list(stub.StreamReferenceImages(harvester_pb2.StreamReferenceImagesRequest(reference_id="nope"))),
         grpc.StatusCode.NOT_FOUND),
        (lambda: list(stub.ListReferences(harvester_pb2.ListReferencesRequest(top_n=-1))), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: stub.GetHarvest(harvester_pb2.GetHarvestRequest(harvest_id=999)), grpc.StatusCode.NOT_FOUND),
        (lambda: stub.StartHarvest(harvester_pb2.StartHarvestRequest()), grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: stub.StartHarvest(harvester_pb2.StartHarvestRequest(config_yaml="source: offline\nnope: 1")),
         grpc.StatusCode.INVALID_ARGUMENT),
        (lambda: stub.StartHarvest(harvester_pb2.StartHarvestRequest(
            offline=harvester_pb2.OfflineHarvest(catalog_file="/no/such/catalog.json"))), grpc.StatusCode.NOT_FOUND),
    ]
    for call, code in cases:
        with pytest.raises(grpc.RpcError) as error:
            call()
        assert error.value.code() == code, error.value.details()
        assert error.value.details()
    assert len(list(stub.ListReferences(harvester_pb2.ListReferencesRequest()))) == 30  # still serving


def test_service_starts_a_harvest_and_reports_on_it(data, tmp_path):
    server, port, servicer = create_harvester_server("127.0.0.1:0", catalog=tmp_path / "new")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = harvester_pb2_grpc.HarvesterServiceStub(channel)
            request = harvester_pb2.StartHarvestRequest(offline=harvester_pb2.OfflineHarvest(
                catalog_file=str(data / "references" / "catalog.json")))
            started = stub.StartHarvest(request).harvest
            assert started.harvest_id >= 1
            deadline = time.monotonic() + 120
            state = started.state
            while state == harvester_pb2.HARVEST_STATE_RUNNING and time.monotonic() < deadline:
                time.sleep(0.2)
                status = stub.GetHarvest(harvester_pb2.GetHarvestRequest(harvest_id=started.harvest_id)).harvest
                state = status.state
            assert state == harvester_pb2.HARVEST_STATE_COMPLETE
            assert (status.references, status.images_stored) == (30, 70)
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="iconicity.v1.HarvesterService"))
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(0)


def test_serve_harvester_command_serves_what_harvest_wrote(harvested):
    process = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "harvester", "--catalog", str(harvested),
                                "--port", "0"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in process.stderr:
            if '"serving"' in line:
                port = json.loads(line)["port"]
                break
        assert port, "the server never said it was serving"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = harvester_pb2_grpc.HarvesterServiceStub(channel)
            reference = stub.GetReference(harvester_pb2.GetReferenceRequest(reference_id="Q12418"), timeout=10).reference
            assert reference.title == "Mona Lisa"
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


def test_scorer_registers_references_of_a_harvested_catalog(harvested, data):
    from iconicity.v1 import scorer_pb2, scorer_pb2_grpc

    from services.scorer.server import create_scorer_server

    server, port, _ = create_scorer_server(catalog=harvested, recognition_encoder="tiny-clip",
                                           realization_encoder="tiny-dinov2")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = scorer_pb2_grpc.ScorerServiceStub(channel)
            by_qid = stub.RegisterReference(scorer_pb2.RegisterReferenceRequest(reference_id="Q45585"), timeout=60)
            by_slug = stub.RegisterReference(scorer_pb2.RegisterReferenceRequest(reference_id="the_starry_night"), timeout=60)
            assert by_qid.handle == by_slug.handle and by_qid.n_images == 5
    finally:
        server.stop(0)


def test_cli_counts_titles_in_a_caption_corpus(data, tmp_path, capsys):
    corpus = tmp_path / "captions.txt"
    corpus.write_text("\n".join([
        "a poster of The Starry Night by van gogh",
        "THE STARRY NIGHT, again: the starry night",  # one caption, counted once
        "starry nights over the sea",  # not the title
        "Mona Lisa smiling", "mona lisa's smile",
    ]) + "\n")
    out = tmp_path / "catalog"
    assert cli_main(["harvest", "--catalog", str(data / "references" / "catalog.json"), "--captions", str(corpus),
                     "--perturbations", "original", "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    with Catalog(out, create=False) as catalog:
        rows = catalog.covariates()
        assert rows["Q45585"]["caption_count"] == 2
        assert rows["Q12418"]["caption_count"] == 2
        assert rows["Q471379"]["caption_count"] == 0
        assert {p.perturbation for p in catalog.prompts()} == {"original"}


def test_user_supplied_folders_and_url_lists_add_images(data, tmp_path):
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(data / "references"))
    handler.log_message = lambda *args: None
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        folder = tmp_path / "mine"
        (folder / "Q45585").mkdir(parents=True)  # by QID
        (folder / "Q45585" / "a.png").write_bytes((data / "references" / "the_scream" / "1.jpg").read_bytes())
        (folder / "my_new_work").mkdir()  # unknown: becomes a reference of its own
        (folder / "my_new_work" / "1.jpg").write_bytes((data / "references" / "udnie" / "1.jpg").read_bytes())
        urls = tmp_path / "urls.txt"
        urls.write_text(f"# reference url\nmona_lisa http://127.0.0.1:{web.server_port}/the_scream/1.jpg\n"
                        f"mona_lisa http://127.0.0.1:{web.server_port}/nope.jpg\n")
        config = offline_config(data, image_folders=(folder,), url_lists=(urls,))
        with Catalog(tmp_path / "out") as catalog:
            summaries = run_config(config, catalog)
            assert [s.source for s in summaries] == ["offline", "folder", "urls"]
            assert len(catalog.images("Q45585")) == 6 and catalog.images("Q45585")[-1].position == 5
            assert catalog.reference("my_new_work").title == "my new work"
            mona = catalog.images("Q12418")
            assert mona[-1].source.endswith("/the_scream/1.jpg") and len(mona) == 5
            failures = catalog.failures(summaries[-1].snapshot_id)
            assert any(r == "Q12418" and "nope.jpg" in why for r, _, why in failures)
    finally:
        web.shutdown()


def test_paper_sized_harvest_config_is_one_valid_file():
    from services.harvester.wikidata import WikidataConfig

    config = HarvestConfig.from_file(ROOT / "services" / "harvester" / "configs" / "paper.yaml")
    wikidata = WikidataConfig.from_dict(config.wikidata)
    assert config.source == "wikidata" and set(wikidata.kinds) == {"still", "moving"}
    assert sum(wikidata.top_n_for(kind) for kind in wikidata.kinds) == 767
