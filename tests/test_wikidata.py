"""The harvester's Wikidata and Commons clients against local stand-ins of both services.

The stand-ins (tests/harvester_standins.py) are real HTTP servers on loopback that answer
the client's actual SPARQL from the shared Wikidata export; expectations are read from the
same CSV and catalog here, independently of the client's parsing.
"""

from __future__ import annotations

import csv
import email.utils
import hashlib
import json
import random
import re
import socket
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml
from harvester_standins import (
    NOT_AN_IMAGE,
    CommonsStandIn,
    SparqlStandIn,
    commons_name,
    malformed_json,
    server_error,
    slow,
    synthetic_sitelinks,
    too_many_requests,
    wdqs_timeout,
)
from PIL import Image
from shared_data import shared_data

from services.harvester.commons import CommonsClient, ImageFetchFailed, NotAnImage
from services.harvester.records import MOVING, STILL
from services.harvester.wikidata import (
    UNDATED,
    QueryFailed,
    QueryPage,
    QueryTimeout,
    RetryPolicy,
    SparqlClient,
    WikidataConfig,
    build_query,
    first_pages,
    harvest_wikidata,
    harvest_works,
    split_page,
    split_years,
)

CONTACT = "iconicity-tests@example.org"
CENTURIES = split_years(0, 2100, 100)


# ----------------------------------------------------------------------------------------
# Fixtures: the shared data, read independently, and the stand-ins


def _data() -> Path:
    root = shared_data()
    csv_path = root / "wikidata" / "artonwikidata_paintings.csv"
    if not csv_path.exists() or not (root / "references" / "catalog.json").exists():
        pytest.skip(f"shared Wikidata export or reference catalog not found under {root} (set ICONICITY_SHARED_DATA)")
    return root


@pytest.fixture(scope="module")
def data() -> Path:
    return _data()


@pytest.fixture(scope="module")
def catalog(data) -> list[dict]:
    return json.loads((data / "references" / "catalog.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def paintings(data, catalog) -> dict[str, dict]:
    """The CSV as the expected records: qid -> fields, read without the client's code."""
    famous = {entry["qid"] for entry in catalog if entry["qid"]}
    expected = {}
    with open(data / "wikidata" / "artonwikidata_paintings.csv", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            expected[row["id"]] = {
                "title": row["_title"],
                "creator": row["_artist"] or None,
                "year": int(re.match(r"\d+", row["_creation"]).group()),
                "depicts": tuple(dict.fromkeys(x for x in row["_depicts"].split(", ") if x)),
                "genres": tuple(dict.fromkeys(x for x in row["_genre"].split(", ") if x)),
                "sitelinks": synthetic_sitelinks(row["id"], famous=row["id"] in famous),
                # "1899-1914": Wikidata would have a date in either year, so either range finds it
                "years": {int(y) for y in re.findall(r"\d+", row["_creation"])},
            }
    return expected


def select(paintings: dict[str, dict], min_sitelinks: int = 0, years: tuple[int, int] | None = None) -> dict[str, dict]:
    return {
        qid: p
        for qid, p in paintings.items()
        if p["sitelinks"] >= min_sitelinks and (years is None or any(years[0] <= y < years[1] for y in p["years"]))
    }


def ranked(expected: dict[str, dict]) -> list[str]:
    return sorted(expected, key=lambda qid: (-expected[qid]["sitelinks"], qid))


@pytest.fixture(scope="module")
def sparql_service(data):
    with SparqlStandIn.from_shared_data(data) as service:
        yield service


@pytest.fixture
def wdqs(sparql_service):
    """The module's query service, with counts, faults and limits reset for each test."""
    service = sparql_service
    service._faults.clear()
    service.reset_counts()
    service.pages.clear()
    service.timeouts = 0
    service.max_scan = service.max_rows = None
    service.delay_s = 0.0
    yield service
    service._faults.clear()


@pytest.fixture(scope="module")
def commons_service(data):
    with CommonsStandIn(data / "references") as service:
        yield service


@pytest.fixture
def commons(commons_service):
    commons_service._faults.clear()
    commons_service.reset_counts()
    return commons_service


class Waits(list):
    """A sleep that records instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def config_for(service: SparqlStandIn, **options) -> WikidataConfig:
    options.setdefault("kinds", (STILL,))
    options.setdefault("still_classes", {"painting": "Q3305213"})
    return WikidataConfig(contact=CONTACT, endpoint=service.url + "/sparql", **options)


def client_for(config: WikidataConfig, waits: Waits | None = None, **options) -> SparqlClient:
    return SparqlClient.from_config(
        config, sleep=waits if waits is not None else Waits(), rng=random.Random(0), **options
    )


def check_against_csv(records, expected: dict[str, dict]) -> None:
    ids = [r.id for r in records]
    assert len(ids) == len(set(ids)), "a work was returned twice"
    assert set(ids) == set(expected)
    for record in records:
        want = {k: v for k, v in expected[record.id].items() if k != "years"}
        got = {
            "title": record.title,
            "creator": record.creator,
            "year": record.year,
            "depicts": record.depicts,
            "genres": record.genres,
            "sitelinks": record.sitelinks,
        }
        assert got == want, record.id


# ----------------------------------------------------------------------------------------
# Configuration


def test_config_from_yaml_round_trip():
    text = """
    contact: someone@example.org
    languages: [en, fr]
    kinds: [still, moving]
    min_sitelinks: 20
    top_n: {still: 700, moving: 67}
    year_ranges: [[1400, 1800], [1800, 2100]]
    cache_dir: /tmp/wdqs
    """
    config = WikidataConfig.from_dict(yaml.safe_load(text))
    assert config.languages == ("en", "fr")
    assert config.year_ranges == ((1400, 1800), (1800, 2100))
    assert config.top_n_for(STILL) + config.top_n_for(MOVING) == 767
    assert WikidataConfig.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config
    assert CONTACT in WikidataConfig(contact=CONTACT).full_user_agent


@pytest.mark.parametrize(
    "values, match",
    [
        (
            {"contact": "a@b.org", "sitelinks": 3},
            r"unknown key 'sitelinks'; allowed: contact, endpoint, .*min_sitelinks",
        ),
        ({}, r"contact is required"),
        ({"contact": "  "}, r"contact is required"),
        ({"contact": "a@b.org", "user_agent": ""}, r"user_agent must not be empty"),
        (
            {"contact": "a@b.org", "kinds": ["paintings"]},
            r"kinds \['paintings'\] must be distinct values among still, moving",
        ),
        ({"contact": "a@b.org", "languages": ["English"]}, r"languages \['English'\] must be"),
        ({"contact": "a@b.org", "still_classes": {"painting": "3305213"}}, r"still_classes: 'painting': '3305213'"),
        (
            {"contact": "a@b.org", "kinds": ["moving"], "moving_classes": {}},
            r"kind 'moving' is selected but moving_classes is empty",
        ),
        ({"contact": "a@b.org", "top_n": 0}, r"top_n must be an integer >= 1, got 0"),
        ({"contact": "a@b.org", "top_n": {"films": 3}}, r"top_n: unknown kind 'films'"),
        ({"contact": "a@b.org", "max_concurrency": 8}, r"max_concurrency 8 is over 5"),
        ({"contact": "a@b.org", "page_size": 0}, r"page_size must be an integer >= 1, got 0"),
        (
            {"contact": "a@b.org", "year_ranges": [[1900, 1800]]},
            r"year range \[1900, 1800\] must be two integers with start < stop",
        ),
        ({"contact": "a@b.org", "endpoint": "query.wikidata.org"}, r"endpoint 'query.wikidata.org' is not an http"),
        ({"contact": "a@b.org", "timeout_s": 0}, r"timeout_s must be a positive number, got 0"),
    ],
)
def test_config_rejects(values, match):
    with pytest.raises(ValueError, match=match):
        WikidataConfig.from_dict(values)


def test_pages_and_splits():
    config = WikidataConfig(contact=CONTACT, year_ranges=[(1800, 1900)], top_n={"still": 30}, page_size=500)
    pages = first_pages(config)
    # four still classes and two moving ones, each with its range and the undated items
    assert [(p.medium, p.years) for p in pages[:2]] == [("painting", (1800, 1900)), ("painting", UNDATED)]
    assert len(pages) == 12
    assert {p.limit for p in pages if p.kind == STILL} == {30}  # a page never asks beyond the top N
    assert {p.limit for p in pages if p.kind == MOVING} == {500}
    moving = build_query(config, next(p for p in pages if p.kind == MOVING))
    for needle in ("wdt:P57 ?creator", "wdt:P3383 ?poster", "wdt:P154 ?logo", "wdt:P373 ?commonsCategory"):
        assert needle in moving
    assert "P3383" not in build_query(config, pages[0])
    one = QueryPage(STILL, "painting", "Q3305213", (1889, 1890), 10, 1)
    assert split_page(one) == []
    whole = QueryPage(STILL, "painting", "Q3305213", None, 0, 100)
    assert [p.years for p in split_page(whole)] == [UNDATED, (-10000, 10000)]


# ----------------------------------------------------------------------------------------
# Harvest contents


def test_full_catalog_equals_the_csv(wdqs, paintings, catalog):
    """All 9,336 paintings, in century pages, with the default still classes (two of the
    works are frescoes as well: asked twice, returned once)."""
    config = config_for(
        wdqs,
        still_classes={"painting": "Q3305213", "fresco": "Q134194"},
        year_ranges=split_years(0, 2100, 300),
        page_size=1000,
    )
    records = harvest_wikidata(config, client_for(config))
    check_against_csv(records, paintings)
    assert len(records) == 9336
    assert [r.id for r in records] == ranked(paintings)
    assert {r.medium for r in records} == {"painting"}
    assert len({(p.date_range, p.class_qid) for p in wdqs.pages}) >= 14 and wdqs.requests > 16
    by_id = {r.id: r for r in records}
    for entry in (e for e in catalog if e["qid"] in by_id):
        record = by_id[entry["qid"]]
        assert record.slug == entry["slug"], entry["slug"]
        assert record.image_urls[0].endswith(
            "/Special:FilePath/" + urllib.parse.quote(commons_name(entry["slug"], entry["images"][0]))
        )
        if entry["creator_qid"]:
            assert record.creator_qid == entry["creator_qid"]
    assert any(len(r.image_urls) == 2 for r in records)  # several P18 rows grouped into one record
    assert by_id["Q151047"].inception.startswith("1478") and by_id["Q151047"].year == 1478  # "1478-1485": the earliest


def test_sitelinks_threshold_and_top_n(wdqs, paintings):
    config = config_for(wdqs, min_sitelinks=40, year_ranges=split_years(0, 2100, 300), top_n=300, page_size=40)
    records = harvest_wikidata(config, client_for(config))
    expected = ranked(select(paintings, min_sitelinks=40))
    assert [r.id for r in records] == expected[:300]
    boundary = paintings[expected[299]]["sitelinks"]
    assert sum(p["sitelinks"] == boundary for p in paintings.values()) > 1, "the cut should fall inside a tie"
    check_against_csv(records, {qid: paintings[qid] for qid in expected[:300]})
    assert max(p.offset + p.limit for p in wdqs.pages) <= 300  # no range was paged beyond the top N


def test_paging_really_pages(wdqs, paintings):
    config = config_for(wdqs, min_sitelinks=80, year_ranges=[(1800, 1900)], include_undated=False, page_size=50)
    records = harvest_wikidata(config, client_for(config))
    expected = select(paintings, min_sitelinks=80, years=(1800, 1900))
    check_against_csv(records, expected)
    offsets = sorted(p.offset for p in wdqs.pages)
    assert offsets == list(range(0, 50 * (len(expected) // 50 + 1), 50))
    assert wdqs.requests == len(offsets) > 3


def test_a_page_that_times_out_is_split(wdqs, paintings):
    """The unbounded query runs over the service's limit: it is split into the undated items
    and year halves, again and again, until each part is cheap enough."""
    wdqs.max_scan = 300
    config = config_for(wdqs, min_sitelinks=60, page_size=1000)
    records = harvest_wikidata(config, client_for(config))
    check_against_csv(records, select(paintings, min_sitelinks=60))
    assert wdqs.timeouts >= 4
    answered = [p for p in wdqs.pages if not p.undated_properties]
    assert len(answered) > 8 and all(p.date_range is not None for p in answered)
    assert any(p.undated_properties for p in wdqs.pages)


def test_a_single_year_page_is_split_by_limit(wdqs, paintings):
    """One year cannot be split: the page is, into smaller LIMIT/OFFSET pages."""
    wdqs.max_rows = 120
    config = config_for(wdqs, year_ranges=[(1888, 1889)], include_undated=False, page_size=100)
    records = harvest_wikidata(config, client_for(config))
    check_against_csv(records, select(paintings, years=(1888, 1889)))
    assert wdqs.timeouts >= 1
    assert min(p.limit for p in wdqs.pages) < 100


def test_an_item_too_big_for_one_query_is_a_clear_error(wdqs):
    wdqs.max_rows = 2  # Liberty Leading the People alone has 40 depicts
    config = config_for(wdqs, year_ranges=[(1830, 1831)], include_undated=False, page_size=4)
    with pytest.raises(QueryTimeout, match=r"time limit.*1830\.\.1831.*cannot be split further") as caught:
        harvest_wikidata(config, client_for(config))
    assert "\n" not in str(caught.value)


def test_other_languages(wdqs, data):
    excerpt = json.loads((data / "wikidata" / "ashquiz_tableaux_excerpt.json").read_text(encoding="utf-8"))
    french = {p["id"]: p["title"] for p in excerpt["paintings"]}
    config = config_for(wdqs, languages=("fr",))
    records = harvest_wikidata(config, client_for(config))
    assert {r.id: r.title for r in records} == french
    assert all(r.labels == {"fr": r.title} for r in records)  # no "mul" labels in the data

    config = config_for(wdqs, languages=("en", "fr"), min_sitelinks=120)
    both = {r.id: r for r in harvest_wikidata(config, client_for(config))}
    starry = both["Q45585"]
    assert starry.title == "The Starry Night" and starry.labels == {"en": "The Starry Night", "fr": french["Q45585"]}


def test_moving_works(wdqs, catalog):
    films = [e for e in catalog if e["imagery"] == "dynamic"]
    config = config_for(wdqs, kinds=(MOVING,), moving_classes={"film": "Q11424"})
    works = harvest_works(config, client_for(config))
    assert len(works) == len(films)
    by_title = {w.record.title: w for w in works}
    for entry in films:
        work = by_title[entry["title"]]
        record = work.record
        assert (record.kind, record.medium, record.imagery) == (MOVING, "film", "dynamic")
        assert record.creator == entry["creator"]
        assert record.year == int(entry["inception"])
        assert record.imdb == entry["imdb"]
        names = [commons_name(entry["slug"], f) for f in entry["images"]]
        assert [urllib.parse.unquote(u.rsplit("/", 1)[1]) for u in record.image_urls] == names  # P18, then the poster
        assert work.commons_category == entry["title"]
    sitelinks = [w.record.sitelinks for w in works]
    assert sitelinks == sorted(sitelinks, reverse=True)


def test_progress_is_reported(wdqs):
    seen = []
    config = config_for(wdqs, min_sitelinks=100, year_ranges=split_years(1400, 2000, 200), include_undated=False)
    harvest_wikidata(config, client_for(config), on_progress=seen.append)
    assert [p.queries_done for p in seen] == [1, 2, 3]
    assert seen[-1].queries_pending == 0 and seen[-1].items_seen > 0


# ----------------------------------------------------------------------------------------
# Good citizenship


def test_user_agent_names_the_contact(wdqs):
    config = config_for(wdqs, min_sitelinks=100, user_agent="iconicity-harvester/9.9 (https://example.org/iconicity)")
    harvest_wikidata(config)  # the client the config builds
    assert wdqs.user_agents and all(
        ua.startswith("iconicity-harvester/9.9 (https://example.org/iconicity)") and CONTACT in ua
        for ua in wdqs.user_agents
    )


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_concurrency_never_exceeds_the_limit(wdqs, limit):
    wdqs.delay_s = 0.03
    config = config_for(wdqs, min_sitelinks=100, year_ranges=split_years(1300, 2000, 50), max_concurrency=limit)
    harvest_wikidata(config, client_for(config))
    assert wdqs.requests >= 15
    assert wdqs.max_in_flight == limit


def test_the_client_bounds_concurrency_across_threads(wdqs):
    """However many threads share a client, it sends at most `max_concurrency` at once."""
    wdqs.delay_s = 0.05
    config = config_for(wdqs, min_sitelinks=100, max_concurrency=2)
    client = client_for(config)
    pages = [QueryPage(STILL, "painting", "Q3305213", (y, y + 20), 0, 10) for y in range(1400, 1900, 20)]
    threads = [threading.Thread(target=client.query, args=(build_query(config, p),)) for p in pages]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.requests == wdqs.requests == len(pages)
    assert wdqs.max_in_flight == 2


def test_cached_answers_are_not_asked_again(wdqs, tmp_path):
    config = config_for(wdqs, min_sitelinks=80, year_ranges=split_years(1200, 2000, 100), cache_dir=str(tmp_path))
    first = harvest_wikidata(config, client_for(config))
    asked = wdqs.requests
    assert asked > 5 and len(list(tmp_path.rglob("*.json"))) == asked
    again = client_for(config)
    assert harvest_wikidata(config, again) == first
    assert wdqs.requests == asked and again.requests == 0 and again.cache_hits == asked
    other = config_for(wdqs, min_sitelinks=81, year_ranges=split_years(1200, 2000, 100), cache_dir=str(tmp_path))
    harvest_wikidata(other, client_for(other))
    assert wdqs.requests > asked  # another query is another key


def test_a_damaged_cache_entry_is_asked_again(wdqs, tmp_path):
    config = config_for(wdqs, min_sitelinks=150, cache_dir=str(tmp_path))
    query = build_query(config, first_pages(config)[0])
    client = client_for(config)
    answer = client.query(query)
    (entry,) = tmp_path.rglob("*.json")
    assert entry.name == hashlib.sha256(f"{wdqs.url}/sparql\n{query}".encode()).hexdigest() + ".json"
    entry.write_bytes(b'{"results": ')
    assert client_for(config).query(query) == answer
    assert wdqs.requests == 2


# ----------------------------------------------------------------------------------------
# Retries and giving up


SMALL_QUERY_OPTIONS = {"min_sitelinks": 150}


def one_query(wdqs, waits: Waits, **options):
    config = config_for(wdqs, **{**SMALL_QUERY_OPTIONS, **options})
    client = client_for(config, waits)
    return client, build_query(config, first_pages(config)[0])


def test_429_waits_as_retry_after_says(wdqs):
    waits = Waits()
    client, query = one_query(wdqs, waits)
    in_30_s = email.utils.formatdate(time.time() + 30, usegmt=True)
    wdqs.fail_next(too_many_requests("2"), too_many_requests("7"), too_many_requests(in_30_s))
    answer = client.query(query)
    assert len(answer["results"]["bindings"]) > 0
    assert waits[:2] == [2.0, 7.0] and 27 <= waits[2] <= 30
    assert wdqs.requests == 4


def test_5xx_backs_off_exponentially_with_jitter(wdqs):
    waits = Waits()
    client, query = one_query(wdqs, waits, backoff_s=1.0, max_retries=4)
    wdqs.fail_next(server_error(500), server_error(502), server_error(503), too_many_requests(None))
    client.query(query)
    assert len(waits) == 4 and wdqs.requests == 5
    for retry, wait in enumerate(waits):
        assert 0.5 * 2**retry <= wait < 2**retry, (retry, wait)
    assert len(set(waits)) == 4


def test_a_slow_answer_is_retried_then_a_timeout(wdqs):
    waits = Waits()
    client, query = one_query(wdqs, waits, timeout_s=0.2, max_retries=1)
    wdqs.fail_next(slow(1.0), slow(1.0))
    with pytest.raises(
        QueryTimeout, match=r"^SPARQL endpoint http://127\.0\.0\.1:\d+/sparql: no answer within 0\.2 s on all 2 tries"
    ):
        client.query(query)
    assert len(waits) == 1


@pytest.mark.parametrize(
    "faults, options, error, match, requests",
    [
        (
            [too_many_requests("1")] * 3,
            {"max_retries": 2},
            QueryFailed,
            r"HTTP 429 Too Many Requests \(Retry-After 1\) on all 3 tries \(waited 2\.0 s",
            3,
        ),
        (
            [too_many_requests("3600")],
            {},
            QueryFailed,
            r"asks to wait 3600 s \(Retry-After 3600\), over the limit of 900 s; giving up",
            1,
        ),
        (
            [server_error(500)] * 3,
            {"max_retries": 2},
            QueryFailed,
            r"HTTP 500 Internal Server Error: <html>.* on all 3 tries",
            3,
        ),
        ([malformed_json()] * 2, {"max_retries": 1}, QueryFailed, r"malformed JSON answer \(.*\) on all 2 tries", 2),
        (
            [wdqs_timeout()],
            {},
            QueryTimeout,
            r"the server stopped the query at its time limit \(HTTP 500: .*TimeoutException",
            1,
        ),
    ],
    ids=["429-storm", "retry-after-too-long", "500", "malformed-json", "server-timeout"],
)
def test_giving_up_is_one_clear_line(wdqs, faults, options, error, match, requests):
    waits = Waits()
    client, query = one_query(wdqs, waits, **options)
    wdqs.fail_next(*faults)
    with pytest.raises(error, match=match) as caught:
        client.query(query)
    message = str(caught.value)
    assert message.startswith(f"SPARQL endpoint {wdqs.url}/sparql: ") and "\n" not in message
    assert wdqs.requests == requests and len(waits) == requests - 1


def test_malformed_json_once_is_retried(wdqs):
    waits = Waits()
    client, query = one_query(wdqs, waits)
    wdqs.fail_next(malformed_json())
    assert client.query(query)["results"]["bindings"]
    assert wdqs.requests == 2 and len(waits) == 1


def test_a_refused_query_is_not_retried(wdqs):
    waits = Waits()
    client, _ = one_query(wdqs, waits)
    with pytest.raises(QueryFailed, match=r"HTTP 400 Bad Request: MalformedQueryException"):
        client.query("SELECT nothing")
    assert wdqs.requests == 1 and waits == []


def test_no_network_is_a_clear_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    waits = Waits()
    client = SparqlClient(
        f"http://127.0.0.1:{port}/sparql", user_agent="t (x@y.org)", policy=RetryPolicy(max_retries=2), sleep=waits
    )
    with pytest.raises(
        QueryFailed,
        match=rf"^SPARQL endpoint http://127\.0\.0\.1:{port}/sparql: cannot connect \(.*refused.*\) on all 3 tries",
    ):
        client.query("SELECT ?item WHERE {}")
    assert len(waits) == 2


def test_a_harvest_that_gives_up_says_so(wdqs):
    config = config_for(wdqs, min_sitelinks=100, year_ranges=CENTURIES, max_retries=1)
    wdqs.fail_next(*[server_error(503)] * 40)
    with pytest.raises(QueryFailed, match=r"HTTP 503 Service Unavailable.* on all 2 tries"):
        harvest_wikidata(config, client_for(config))


# ----------------------------------------------------------------------------------------
# Commons


def commons_client(commons: CommonsStandIn, waits: Waits | None = None, **options) -> CommonsClient:
    return CommonsClient(
        user_agent=WikidataConfig(contact=CONTACT).full_user_agent,
        file_path_base=commons.file_path_base,
        sleep=waits if waits is not None else Waits(),
        rng=random.Random(0),
        **options,
    )


@pytest.mark.parametrize(
    "slug, file", [("the_starry_night", "1.jpg"), ("the_starry_night", "2.webp"), ("nosferatu", "1.jpg")]
)
def test_commons_fetch_returns_the_real_bytes(commons, data, slug, file):
    path = data / "references" / slug / file
    image = commons_client(commons).fetch(commons_name(slug, file))
    assert image.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert image.data == path.read_bytes()
    with Image.open(path) as original:
        assert (image.width, image.height) == original.size
        assert image.media_type == Image.MIME[original.format]
    assert all(CONTACT in ua for ua in commons.user_agents)


def test_commons_thumbnail_of_a_width(commons):
    image = commons_client(commons).fetch(
        f"https://commons.wikimedia.org/wiki/Special:FilePath/{urllib.parse.quote(commons_name('mona_lisa', '1.jpg'))}",
        width=64,
    )
    assert image.width == 64 and image.media_type == "image/jpeg"
    assert "/thumb/64/" in image.source and image.url.endswith("?width=64")
    assert image.sha256 == hashlib.sha256(image.data).hexdigest()
    assert commons.requests == 2 and all(CONTACT in ua for ua in commons.user_agents)  # the redirect too


def test_commons_rejects_what_is_not_an_image(commons):
    with pytest.raises(
        NotAnImage,
        match=r"Special:FilePath/Not%20an%20image\.jpg: the answer \(image/jpeg, \d+ bytes\) is not an image",
    ):
        commons_client(commons).fetch(NOT_AN_IMAGE)
    assert commons.requests == 1


def test_commons_retries_then_gives_up(commons):
    waits = Waits()
    client = commons_client(commons, waits, policy=RetryPolicy(max_retries=2))
    commons.fail_next(too_many_requests("5"), server_error(503))
    assert client.fetch(commons_name("udnie", "1.jpg")).width > 0
    assert waits[0] == 5.0 and len(waits) == 2
    commons.fail_next(*[server_error(502)] * 3)
    with pytest.raises(ImageFetchFailed, match=r"HTTP 502 Bad Gateway.* on all 3 tries"):
        client.fetch(commons_name("udnie", "1.jpg"))
    with pytest.raises(
        ImageFetchFailed, match=r"Special:FilePath/No%20such%20file\.jpg: HTTP 404 Not Found: No file by the name"
    ):
        client.fetch("File:No_such_file.jpg")


def test_harvested_images_download(wdqs, commons, data, catalog):
    """End to end: the top works' canonical image URLs, fetched through the Commons stand-in,
    are the reference files."""
    config = config_for(wdqs, top_n=5, year_ranges=CENTURIES)
    records = harvest_wikidata(config, client_for(config))
    client = commons_client(commons)
    slugs = {e["qid"]: e for e in catalog}
    assert len(records) == 5
    for record in records:
        entry = slugs[record.id]
        image = client.fetch(record.image_urls[0])
        expected = (data / "references" / entry["slug"] / entry["images"][0]).read_bytes()
        assert image.sha256 == hashlib.sha256(expected).hexdigest()
