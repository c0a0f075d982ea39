"""Local stand-ins for the Wikidata Query Service and Wikimedia Commons, for tests.

Real HTTP servers on 127.0.0.1 (port 0) in a thread. `SparqlStandIn` answers the harvester's
SPARQL with rows built from the shared data (`wikidata/artonwikidata_paintings.csv` for the
paintings, the films of `references/catalog.json` for the moving works); it reads the class,
the sitelinks threshold, the languages, the date properties and range, ORDER BY, LIMIT and
OFFSET and the OPTIONAL properties out of the query text, so a wrong query gets a wrong
answer. Sitelink counts and image file names are not in the data: they are made up,
deterministically, from the QID (`synthetic_sitelinks`, `synthetic_image_name`).

Both stand-ins count requests, record User-Agent headers and the highest number of requests
in flight at once, and play scripted faults queued with `fail_next` (429 with Retry-After,
5xx, a slow answer, malformed JSON, the query service's own timeout).

    with SparqlStandIn.from_shared_data(shared_data()) as wdqs:
        harvest_wikidata(WikidataConfig(endpoint=wdqs.url, contact="..."))
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import re
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from PIL import Image

ENTITY = "http://www.wikidata.org/entity/"
FILE_PATH = "http://commons.wikimedia.org/wiki/Special:FilePath/"
XSD = "http://www.w3.org/2001/XMLSchema#"

PAINTING, FRESCO, FILM = "Q3305213", "Q134194", "Q11424"
IMAGE_PROPERTIES = frozenset({"P18", "P3383", "P154"})  # values are Commons files
STRING_PROPERTIES = frozenset({"P345", "P373"})  # values are plain strings
# Every other property's values are entities, labelled by the label service.

WDQS_TIMEOUT_BODY = (
    b"SPARQL-QUERY: queryStr=...\njava.util.concurrent.TimeoutException\n"
    b"\tat java.util.concurrent.FutureTask.get(FutureTask.java:205)\n"
)


# ----------------------------------------------------------------------------------------
# Made-up but deterministic data


def _hash(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


def synthetic_sitelinks(qid: str, famous: bool = False) -> int:
    """Sitelinks for a QID: 3..102, skewed low with many ties; famous works 120..199."""
    h = _hash("sitelinks:" + qid)
    return 120 + h % 80 if famous else 3 + (h % 1000) ** 2 // 10000


def synthetic_entity(label: str) -> str:
    """A made-up QID for a creator, depicted thing or genre known only by its label."""
    return f"Q{10**10 + _hash('entity:' + label) % (9 * 10**10)}"


def synthetic_image_name(qid: str, title: str, second: bool = False) -> str:
    safe = re.sub(r"[#<>\[\]|{}/:]", "-", title)
    return f"{safe} ({qid}){' detail' if second else ''}.jpg"


def has_second_image(qid: str) -> bool:
    return _hash("second:" + qid) % 7 == 0


def commons_name(slug: str, file: str) -> str:
    """The Commons file name the stand-ins give `references/<slug>/<file>` (with spaces, as
    Commons spells names; it takes underscores for spaces)."""
    return f"{slug} {file}".replace("_", " ")


@dataclass
class Work:
    """One item as the stand-in knows it: claims map a property to its values."""

    qid: str
    classes: tuple[str, ...]
    sitelinks: int
    labels: dict[str, str]
    claims: dict[str, list[str]] = field(default_factory=dict)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(", ") if part.strip()] if text else []


def _date(year: int) -> str:
    return f"{'-' if year < 0 else ''}{abs(year):04d}-01-01T00:00:00Z"


def load_works(shared: Path) -> tuple[list[Work], dict[str, str]]:
    """The paintings of the CSV and the films of the reference catalog, and entity labels."""
    catalog = json.loads((shared / "references" / "catalog.json").read_text(encoding="utf-8"))
    by_qid = {entry["qid"]: entry for entry in catalog if entry.get("qid")}
    known_creators = {entry["creator"]: entry["creator_qid"] for entry in catalog if entry.get("creator_qid")}
    french = {}
    excerpt = shared / "wikidata" / "ashquiz_tableaux_excerpt.json"
    if excerpt.exists():
        french = {p["id"]: p["title"] for p in json.loads(excerpt.read_text(encoding="utf-8"))["paintings"]}
    labels: dict[str, str] = {}

    def entity(label: str) -> str:
        qid = known_creators.get(label) or synthetic_entity(label)
        labels[qid] = label
        return qid

    works = []
    with open(shared / "wikidata" / "artonwikidata_paintings.csv", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            qid = row["id"]
            entry = by_qid.get(qid)
            years = sorted({int(y) for y in re.findall(r"\d{1,4}", row["_creation"])})
            if entry is not None:
                files = [commons_name(entry["slug"], f) for f in entry["images"]]
                images = files[:2] if has_second_image(qid) else files[:1]
            else:
                images = [synthetic_image_name(qid, row["_title"])]
                if has_second_image(qid):
                    images.append(synthetic_image_name(qid, row["_title"], second=True))
            classes = (PAINTING, FRESCO) if entry is not None and entry["medium"] == "fresco" else (PAINTING,)
            work_labels = {"en": row["_title"]}
            if qid in french:
                work_labels["fr"] = french[qid]
            works.append(
                Work(
                    qid=qid,
                    classes=classes,
                    sitelinks=synthetic_sitelinks(qid, famous=entry is not None),
                    labels=work_labels,
                    claims={
                        "P170": [entity(name) for name in _split(row["_artist"])],
                        "P571": [_date(y) for y in sorted({years[0], years[-1]})] if years else [],
                        "P18": images,
                        "P180": [entity(name) for name in _split(row["_depicts"])],
                        "P136": [entity(name) for name in _split(row["_genre"])],
                    },
                )
            )
    for index, entry in enumerate(e for e in catalog if e["imagery"] == "dynamic"):
        qid = entry.get("qid") or f"Q{990000001 + index}"
        files = [commons_name(entry["slug"], f) for f in entry["images"]]
        works.append(
            Work(
                qid=qid,
                classes=(FILM,),
                sitelinks=synthetic_sitelinks(qid, famous=True),
                labels={"en": entry["title"]},
                claims={
                    "P57": [entity(entry["creator"])] if entry.get("creator") else [],
                    "P577": [_date(int(re.search(r"\d{4}", entry["inception"]).group()))],
                    "P18": files[:1],
                    "P3383": files[1:2],
                    "P345": [entry["imdb"]] if entry.get("imdb") else [],
                    "P373": [entry["title"]],
                },
            )
        )
    return works, labels


# ----------------------------------------------------------------------------------------
# Faults and the HTTP plumbing both stand-ins share


@dataclass(frozen=True)
class Fault:
    """A scripted answer instead of the real one."""

    status: int = 200
    body: bytes | None = None  # None: the real answer's body (after `delay_s`)
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def too_many_requests(retry_after: str | None = "1") -> Fault:
    return Fault(429, b"Too many requests. Please retry later.", {"Retry-After": retry_after} if retry_after else {})


def server_error(status: int = 500) -> Fault:
    return Fault(status, b"<html><body>upstream connect error</body></html>")


def slow(seconds: float) -> Fault:
    return Fault(delay_s=seconds)


def malformed_json() -> Fault:
    return Fault(
        200,
        b'{"head": {"vars": ["item"]}, "results": {"bindings": [{"item": {"type": "ur',
        {"Content-Type": "application/sparql-results+json"},
    )


def wdqs_timeout() -> Fault:
    """What the query service answers when a query runs over its 60 s."""
    return Fault(500, WDQS_TIMEOUT_BODY, {"Content-Type": "text/plain"})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.stand_in._serve(self, b"")

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        self.server.stand_in._serve(self, self.rfile.read(length))

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stand_in: _StandIn

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up on a slow answer closes the socket: not our failure


class _StandIn:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self.requests = 0
        self.user_agents: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay_s = 0.0  # added to every answer, so that concurrent requests overlap
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> _StandIn:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.stand_in = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True, name=type(self).__name__
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "stand-in not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # scripting
    def fail_next(self, *faults: Fault) -> None:
        """The next requests get these answers, in order; later ones are answered normally."""
        with self._lock:
            self._faults.extend(faults)

    def reset_counts(self) -> None:
        with self._lock:
            self.requests = 0
            self.user_agents.clear()
            self.max_in_flight = 0

    # serving
    def _serve(self, handler: _Handler, body: bytes) -> None:
        with self._lock:
            self.requests += 1
            self.user_agents.append(handler.headers.get("User-Agent", ""))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            fault = self._faults.popleft() if self._faults else None
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            if fault is not None and fault.delay_s:
                time.sleep(fault.delay_s)
            if fault is not None and fault.body is not None:
                status, headers, payload = fault.status, dict(fault.headers), fault.body
            else:
                status, headers, payload = self.answer(handler.command, handler.path, body)
                if fault is not None:
                    headers.update(fault.headers)
        finally:
            # Out of flight once the answer is ready: a client that has read it may ask
            # again before this thread would get past the write below.
            with self._lock:
                self.in_flight -= 1
        try:
            handler.send_response(status)
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        raise NotImplementedError


# ----------------------------------------------------------------------------------------
# The query service


@dataclass(frozen=True)
class ParsedQuery:
    """What the stand-in understood of a query: enough to answer it."""

    select: tuple[str, ...]
    class_qid: str
    min_sitelinks: int
    filter_languages: tuple[str, ...]
    date_properties: tuple[str, ...]  # of ?anyDate, the item's dates
    date_optional: bool  # whether ?anyDate is OPTIONAL
    min_date: bool  # whether ?date is the MIN of ?anyDate
    range_properties: tuple[str, ...]  # of ?dateInRange
    date_range: tuple[int, int] | None
    undated_properties: tuple[str, ...]  # FILTER NOT EXISTS on these
    ordered: bool
    limit: int | None
    offset: int
    label_vars: dict[str, str]  # variable -> language
    optional_vars: dict[str, str]  # variable -> property
    label_languages: tuple[str, ...]


class QueryNotUnderstood(ValueError):
    pass


_SELECT = re.compile(r"^\s*SELECT\s+(.+?)\s+WHERE\s*\{", re.S)
_CLASS = re.compile(r"\?item wdt:P31 wd:(Q\d+)")
_SITELINKS = re.compile(r"FILTER\(\?sitelinks >= (\d+)\)")
_LABEL_EXISTS = re.compile(
    r"FILTER EXISTS \{ \?item rdfs:label \?anyLabel \. FILTER\(LANG\(\?anyLabel\) IN \(([^)]*)\)\) \}"
)
_PATH = r"\?item ((?:wdt:P\d+\|?)+)"
_ANY_DATE = re.compile(r"(OPTIONAL \{ )?" + _PATH + r" \?anyDate \.")
_RANGE_DATE = re.compile(_PATH + r" \?dateInRange \.")
_DATE_RANGE = re.compile(
    r'FILTER\(\?dateInRange >= "(-?\d+)-01-01T00:00:00Z"\^\^xsd:dateTime && '
    r'\?dateInRange < "(-?\d+)-01-01T00:00:00Z"\^\^xsd:dateTime\)'
)
_UNDATED = re.compile(r"FILTER NOT EXISTS \{ " + _PATH + r" \[\] \. \}")
_ORDER = re.compile(r"ORDER BY DESC\(\?sitelinks\) \?item")
_LIMIT = re.compile(r"\bLIMIT (\d+)")
_OFFSET = re.compile(r"\bOFFSET (\d+)")
_LABEL_OPTIONAL = re.compile(r'OPTIONAL \{ \?item rdfs:label \?(\w+) \. FILTER\(LANG\(\?(\w+)\) = "([\w-]+)"\) \}')
_PROPERTY_OPTIONAL = re.compile(r"OPTIONAL \{ \?item wdt:(P\d+) \?(\w+) \. \}")
_LABEL_SERVICE = re.compile(r'wikibase:language "([^"]+)"')


def parse_query(text: str) -> ParsedQuery:
    select = _SELECT.match(text)
    klass = _CLASS.search(text)
    if not select or not klass:
        raise QueryNotUnderstood("no SELECT ... WHERE { or no ?item wdt:P31 wd:Q... in the query")
    inner = text.split("GROUP BY", 1)[0]
    sitelinks = _SITELINKS.search(inner)
    exists = _LABEL_EXISTS.search(inner)
    any_date = _ANY_DATE.search(inner)
    range_date = _RANGE_DATE.search(inner)
    date_range = _DATE_RANGE.search(inner)
    undated = _UNDATED.search(inner)
    limit = _LIMIT.search(text)
    offset = _OFFSET.search(text)
    labels = {}
    for var, var_again, language in _LABEL_OPTIONAL.findall(text):
        if var != var_again:
            raise QueryNotUnderstood(f"label filter on ?{var_again} for ?{var}")
        labels[var] = language
    service = _LABEL_SERVICE.search(text)
    return ParsedQuery(
        select=tuple(v.lstrip("?") for v in select.group(1).split() if v.startswith("?")),
        class_qid=klass.group(1),
        min_sitelinks=int(sitelinks.group(1)) if sitelinks else 0,
        filter_languages=tuple(re.findall(r'"([\w-]+)"', exists.group(1))) if exists else (),
        date_properties=_properties(any_date.group(2)) if any_date else (),
        date_optional=bool(any_date and any_date.group(1)),
        min_date="(MIN(?anyDate) AS ?date)" in inner,
        range_properties=_properties(range_date.group(1)) if range_date else (),
        date_range=(int(date_range.group(1)), int(date_range.group(2))) if date_range else None,
        undated_properties=_properties(undated.group(1)) if undated else (),
        ordered=bool(_ORDER.search(text)),
        limit=int(limit.group(1)) if limit else None,
        offset=int(offset.group(1)) if offset else 0,
        label_vars=labels,
        optional_vars={var: prop for prop, var in _PROPERTY_OPTIONAL.findall(text)},
        label_languages=tuple(service.group(1).split(",")) if service else (),
    )


def _properties(path: str) -> tuple[str, ...]:
    return tuple(re.findall(r"P\d+", path))


class SparqlStandIn(_StandIn):
    """A query service over `works`. `max_scan` (items matched before LIMIT) and `max_rows`
    (rows in the answer) make a query too expensive: it gets the service's timeout answer.
    `pages` records what each answered query asked for."""

    def __init__(
        self,
        works: Iterable[Work],
        labels: Mapping[str, str],
        *,
        max_scan: int | None = None,
        max_rows: int | None = None,
    ) -> None:
        super().__init__()
        self.works = list(works)
        self.by_qid = {w.qid: w for w in self.works}
        self.by_class: dict[str, list[Work]] = {}
        for work in self.works:
            for klass in work.classes:
                self.by_class.setdefault(klass, []).append(work)
        self._year_cache: dict[tuple[str, tuple[str, ...]], list[tuple[int, str]]] = {}
        self._cell_cache: dict[tuple[str, str], tuple[dict[str, str], dict[str, str] | None]] = {}
        self.labels = dict(labels)
        self.max_scan = max_scan
        self.max_rows = max_rows
        self.pages: list[ParsedQuery] = []
        self.timeouts = 0

    @classmethod
    def from_shared_data(cls, shared: Path, **options: Any) -> SparqlStandIn:
        works, labels = load_works(shared)
        return cls(works, labels, **options)

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        parts = urllib.parse.urlsplit(path)
        if parts.path != "/sparql":
            return 404, {}, b"Not Found"
        form = urllib.parse.parse_qs(body.decode() if method == "POST" else parts.query)
        if "query" not in form:
            return 400, {}, b"Missing query parameter"
        try:
            parsed = parse_query(form["query"][0])
        except QueryNotUnderstood as failure:
            return 400, {}, f"MalformedQueryException: {failure}".encode()
        matched = self._match(parsed)
        if self.max_scan is not None and len(matched) > self.max_scan:
            return self._timeout()
        page = matched[parsed.offset :]
        if parsed.limit is not None:
            page = page[: parsed.limit]
        rows = [row for work in page for row in self._rows(parsed, work)]
        if self.max_rows is not None and len(rows) > self.max_rows:
            return self._timeout()
        with self._lock:
            self.pages.append(parsed)
        payload = {"head": {"vars": list(parsed.select)}, "results": {"bindings": rows}}
        return 200, {"Content-Type": "application/sparql-results+json;charset=utf-8"}, json.dumps(payload).encode()

    def _timeout(self) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.timeouts += 1
        return 500, {"Content-Type": "text/plain"}, WDQS_TIMEOUT_BODY

    def _years(self, work: Work, properties: tuple[str, ...]) -> list[tuple[int, str]]:
        key = (work.qid, properties)
        years = self._year_cache.get(key)
        if years is None:
            years = self._year_cache[key] = [(_year(d), d) for p in properties for d in work.claims.get(p, [])]
        return years

    def _match(self, parsed: ParsedQuery) -> list[tuple[Work, str | None]]:
        """(work, MIN date) of the items the inner query selects, in its order."""
        matched = []
        for work in self.by_class.get(parsed.class_qid, []):
            if work.sitelinks < parsed.min_sitelinks:
                continue
            if parsed.filter_languages and not any(lang in work.labels for lang in parsed.filter_languages):
                continue
            if parsed.undated_properties and self._years(work, parsed.undated_properties):
                continue
            if parsed.date_range is not None:
                lo, hi = parsed.date_range
                if not any(lo <= year < hi for year, _ in self._years(work, parsed.range_properties)):
                    continue
            dates = self._years(work, parsed.date_properties)
            if parsed.date_properties and not parsed.date_optional and not dates:
                continue
            matched.append((work, min(dates)[1] if dates and parsed.min_date else None))
        if parsed.ordered:
            matched.sort(key=lambda m: (-m[0].sitelinks, ENTITY + m[0].qid))
        return matched

    def _cell(self, prop: str, value: str) -> tuple[dict[str, str], dict[str, str] | None]:
        """The JSON cell of a claim value, and the cell of its label (for entities)."""
        cell = self._cell_cache.get((prop, value))
        if cell is None:
            if prop in IMAGE_PROPERTIES:
                cell = ({"type": "uri", "value": FILE_PATH + urllib.parse.quote(value)}, None)
            elif prop in STRING_PROPERTIES:
                cell = ({"type": "literal", "value": value}, None)
            else:
                label = self.labels.get(value)
                labelled = {"xml:lang": "en", "type": "literal", "value": label} if label is not None else None
                cell = ({"type": "uri", "value": ENTITY + value}, labelled)
            self._cell_cache[(prop, value)] = cell
        return cell

    def _rows(self, parsed: ParsedQuery, matched: tuple[Work, str | None]) -> list[dict[str, Any]]:
        work, date = matched
        wanted = set(parsed.select)
        base: dict[str, Any] = {
            "item": {"type": "uri", "value": ENTITY + work.qid},
            "sitelinks": {"datatype": XSD + "integer", "type": "literal", "value": str(work.sitelinks)},
        }
        if date is not None:
            base["date"] = {"datatype": XSD + "dateTime", "type": "literal", "value": date}
        for var, language in parsed.label_vars.items():
            if language in work.labels:
                base[var] = {"xml:lang": language, "type": "literal", "value": work.labels[language]}
        english = bool({"en", "mul"} & set(parsed.label_languages))
        columns = []
        for var, prop in parsed.optional_vars.items():
            cells = []
            for value in work.claims.get(prop) or []:
                cell, label = self._cell(prop, value)
                pair = {var: cell}
                if prop not in IMAGE_PROPERTIES and prop not in STRING_PROPERTIES:
                    # the label service: the label in a language asked for, else the QID
                    pair[var + "Label"] = (
                        label if label is not None and english else {"type": "literal", "value": value}
                    )
                cells.append(pair)
            columns.append(cells or [{}])
        rows = []
        for combination in itertools.product(*columns):
            row = dict(base)
            for cells in combination:
                row.update(cells)
            rows.append({k: v for k, v in row.items() if k in wanted})
        return rows


def _year(date: str) -> int:
    return int(re.match(r"-?\d+", date).group())


# ----------------------------------------------------------------------------------------
# Commons


NOT_AN_IMAGE = "Not an image.jpg"
_MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


class CommonsStandIn(_StandIn):
    """Serves `references/<slug>/<file>` as `/wiki/Special:FilePath/<slug> <file>`; with
    `?width=N` it redirects to `/thumb/N/<name>`, a copy N pixels wide (the original when it
    is not wider). `NOT_AN_IMAGE` is an HTML page served as image/jpeg."""

    def __init__(self, references: Path) -> None:
        super().__init__()
        catalog = json.loads((references / "catalog.json").read_text(encoding="utf-8"))
        self.files = {
            commons_name(entry["slug"], name): references / entry["slug"] / name
            for entry in catalog
            for name in entry["images"]
        }

    @property
    def file_path_base(self) -> str:
        return f"{self.url}/wiki/Special:FilePath/"

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        parts = urllib.parse.urlsplit(path)
        if parts.path.startswith("/wiki/Special:FilePath/"):
            name = urllib.parse.unquote(parts.path[len("/wiki/Special:FilePath/") :]).replace("_", " ")
            width = urllib.parse.parse_qs(parts.query).get("width")
            if name != NOT_AN_IMAGE and name not in self.files:
                return 404, {}, f"No file by the name {name!r}".encode()
            if width:
                target = f"/thumb/{int(width[0])}/{urllib.parse.quote(name)}"
                return 302, {"Location": target}, b""
            return self._file(name, None)
        match = re.match(r"^/thumb/(\d+)/(.+)$", parts.path)
        if match:
            return self._file(urllib.parse.unquote(match.group(2)), int(match.group(1)))
        return 404, {}, b"Not Found"

    def _file(self, name: str, width: int | None) -> tuple[int, dict[str, str], bytes]:
        if name == NOT_AN_IMAGE:
            return (
                200,
                {"Content-Type": "image/jpeg"},
                b"<!DOCTYPE html><html><body>Error: file not found</body></html>",
            )
        path = self.files.get(name)
        if path is None:
            return 404, {}, b"Not Found"
        data = path.read_bytes()
        media_type = _MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
        if width is not None:
            with Image.open(io.BytesIO(data)) as image:
                if width < image.width:
                    height = max(1, round(image.height * width / image.width))
                    out = io.BytesIO()
                    image.convert("RGB").resize((width, height)).save(out, format="JPEG", quality=85)
                    data, media_type = out.getvalue(), "image/jpeg"
        return 200, {"Content-Type": media_type}, data
