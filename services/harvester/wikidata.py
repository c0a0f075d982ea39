"""Harvesting cultural references from Wikidata through its SPARQL query service.

Three layers: `build_query` writes the SPARQL text of one page of one class (pure);
`SparqlClient` asks an endpoint politely (a User-Agent with a contact, a bounded number of
concurrent queries, `Retry-After` and exponential backoff with jitter, raw answers cached on
disk); `harvest_wikidata` walks the pages (year ranges, LIMIT/OFFSET, splitting a page that
runs into the service's 60 s limit), groups the rows of each item into one
`ReferenceRecord`, and keeps the top N of each kind by sitelinks.

The paper's catalog is one `WikidataConfig`: its kinds, its sitelinks threshold and its
top N per kind (a mapping, for example ``{"still": ..., "moving": ...}`` summing to 767).

>>> config = WikidataConfig(contact="someone@example.org", kinds=("still",), min_sitelinks=20)
>>> page = first_pages(config)[0]
>>> page.kind, page.medium, page.class_qid, page.years, page.offset, page.limit
('still', 'painting', 'Q3305213', None, 0, 500)
>>> "FILTER(?sitelinks >= 20)" in build_query(config, page)
True
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import os
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from services.common.files import write_atomically

from .records import KINDS, MOVING, STILL, ReferenceRecord, is_qid, parse_year, slugify

DEFAULT_ENDPOINT = "https://query.wikidata.org/sparql"
DEFAULT_USER_AGENT = "iconicity-harvester/0.1"
COMMONS_FILE_PATH = "https://commons.wikimedia.org/wiki/Special:FilePath/"
ENTITY_PREFIX = "http://www.wikidata.org/entity/"

STILL_CLASSES = {"painting": "Q3305213", "print": "Q11060274", "fresco": "Q134194", "photograph": "Q125191"}
MOVING_CLASSES = {"film": "Q11424", "television series": "Q5398426"}
CREATOR_PROPERTIES = {STILL: "P170", MOVING: "P57"}  # creator; director
DATE_PROPERTIES = ("P571", "P577")  # inception, publication date

UNDATED = "undated"  # a page of the items that have none of the date properties
ALL_YEARS = (-10000, 10000)  # what an unbounded page is split into (with UNDATED) when it times out

_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]+)*$")
_PROPERTY = re.compile(r"^P[1-9][0-9]*$")

T = TypeVar("T")


# ----------------------------------------------------------------------------------------
# Errors


class HarvestError(RuntimeError):
    """A harvest step failed; the message is one line naming the endpoint and what happened."""


class QueryFailed(HarvestError):
    """A SPARQL query could not be answered: no network, a 429 storm or 5xx beyond the
    retries, a refused query, an answer that is not SPARQL JSON."""


class QueryTimeout(QueryFailed):
    """A query ran into a time limit: the service's own (60 s on WDQS) or the client's.
    The harvester answers it by splitting the page; alone, it is a `QueryFailed`."""


class _Retry(Exception):
    """Raised by an answer parser: this answer is bad in a way that may pass on a retry."""


# ----------------------------------------------------------------------------------------
# Configuration


def split_years(start: int, stop: int, step: int) -> tuple[tuple[int, int], ...]:
    """Half-open year ranges covering [start, stop) in steps of `step`.

    >>> split_years(1400, 1700, 100)
    ((1400, 1500), (1500, 1600), (1600, 1700))
    """
    if step < 1 or stop <= start:
        raise ValueError(f"split_years: need start < stop and step >= 1, got {start}, {stop}, {step}")
    return tuple((lo, min(lo + step, stop)) for lo in range(start, stop, step))


@dataclass(frozen=True)
class WikidataConfig:
    """What to harvest from Wikidata and how politely. Read from YAML with `from_dict`.

    `top_n` is an int (the same N for each kind) or a mapping kind -> N; `year_ranges` are
    half-open [start, stop) inception-year ranges queried separately (None: one unbounded
    query per class, split only if it times out); `include_undated` adds a query for the
    items with no date when `year_ranges` is given.
    """

    contact: str = ""  # an e-mail or URL; Wikimedia's User-Agent policy requires one
    endpoint: str = DEFAULT_ENDPOINT
    user_agent: str = DEFAULT_USER_AGENT
    languages: tuple[str, ...] = ("en",)
    kinds: tuple[str, ...] = KINDS
    still_classes: Mapping[str, str] = field(default_factory=lambda: dict(STILL_CLASSES))
    moving_classes: Mapping[str, str] = field(default_factory=lambda: dict(MOVING_CLASSES))
    creator_properties: Mapping[str, str] = field(default_factory=lambda: dict(CREATOR_PROPERTIES))
    date_properties: tuple[str, ...] = DATE_PROPERTIES
    min_sitelinks: int = 3
    top_n: int | Mapping[str, int] | None = None
    year_ranges: tuple[tuple[int, int], ...] | None = None
    include_undated: bool = True
    page_size: int = 500
    max_concurrency: int = 2
    timeout_s: float = 65.0  # a little over WDQS's 60 s, so that the service's own timeout answers first
    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 120.0
    max_retry_after_s: float = 900.0
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "languages", tuple(self.languages))
        set_(self, "kinds", tuple(self.kinds))
        set_(self, "date_properties", tuple(self.date_properties))
        set_(self, "still_classes", dict(self.still_classes))
        set_(self, "moving_classes", dict(self.moving_classes))
        set_(self, "creator_properties", {**CREATOR_PROPERTIES, **dict(self.creator_properties)})
        if isinstance(self.top_n, Mapping):
            set_(self, "top_n", dict(self.top_n))
        if self.year_ranges is not None:
            set_(self, "year_ranges", tuple(_year_range(r) for r in self.year_ranges))
        if self.cache_dir is not None:
            set_(self, "cache_dir", os.fspath(self.cache_dir))
        self._validate()

    def _validate(self) -> None:
        def fail(message: str) -> None:
            raise ValueError(f"wikidata config: {message}")

        if not isinstance(self.contact, str) or not self.contact.strip():
            fail("contact is required (an e-mail address or URL for the User-Agent, as Wikimedia's policy asks)")
        if not self.user_agent.strip():
            fail("user_agent must not be empty")
        if not self.endpoint.startswith(("http://", "https://")):
            fail(f"endpoint {self.endpoint!r} is not an http(s) URL")
        if not self.languages or not all(isinstance(x, str) and _LANGUAGE.match(x) for x in self.languages):
            fail(f"languages {list(self.languages)!r} must be a non-empty list of language codes like 'en', 'zh-hans'")
        if not self.kinds or any(k not in KINDS for k in self.kinds) or len(set(self.kinds)) != len(self.kinds):
            fail(f"kinds {list(self.kinds)!r} must be distinct values among {', '.join(KINDS)}")
        for name in ("still_classes", "moving_classes"):
            classes = getattr(self, name)
            for medium, qid in classes.items():
                if not isinstance(medium, str) or not medium.strip() or not is_qid(qid):
                    fail(f"{name}: {medium!r}: {qid!r} must map a medium name to a QID like 'Q3305213'")
        for kind in self.kinds:
            if not self.classes(kind):
                fail(f"kind {kind!r} is selected but {kind}_classes is empty")
        for kind, prop in self.creator_properties.items():
            if kind not in KINDS or not isinstance(prop, str) or not _PROPERTY.match(prop):
                fail(f"creator_properties: {kind!r}: {prop!r} must map a kind to a property like 'P170'")
        if not self.date_properties or not all(isinstance(p, str) and _PROPERTY.match(p) for p in self.date_properties):
            fail(f"date_properties {list(self.date_properties)!r} must be properties like 'P571'")
        _check_int(self.min_sitelinks, "min_sitelinks", 0, fail)
        _check_int(self.page_size, "page_size", 1, fail)
        _check_int(self.max_concurrency, "max_concurrency", 1, fail)
        _check_int(self.max_retries, "max_retries", 0, fail)
        if self.max_concurrency > 5:
            fail(f"max_concurrency {self.max_concurrency} is over 5, the query service's per-client limit")
        if self.top_n is not None:
            values = self.top_n if isinstance(self.top_n, dict) else {"top_n": self.top_n}
            for kind, n in values.items():
                if isinstance(self.top_n, dict) and kind not in KINDS:
                    fail(f"top_n: unknown kind {kind!r}; kinds are {', '.join(KINDS)}")
                _check_int(n, f"top_n[{kind}]" if isinstance(self.top_n, dict) else "top_n", 1, fail)
        for name in ("timeout_s", "backoff_s", "max_backoff_s", "max_retry_after_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                fail(f"{name} must be a positive number, got {value!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WikidataConfig:
        """A config from a parsed YAML mapping; unknown keys are an error naming the allowed ones.

        >>> WikidataConfig.from_dict({"contact": "a@b.org", "top_n": {"still": 700, "moving": 67}}).top_n
        {'still': 700, 'moving': 67}
        >>> WikidataConfig.from_dict({"contact": "a@b.org", "sitelinks": 3})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: wikidata config: unknown key 'sitelinks'; allowed: contact, endpoint, ...
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"wikidata config must be a mapping, got {type(data).__name__}")
        allowed = [f.name for f in fields(cls)]
        unknown = [key for key in data if key not in allowed]
        if unknown:
            raise ValueError(
                f"wikidata config: unknown key{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(k) for k in unknown)}; allowed: {', '.join(allowed)}"
            )
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML- and JSON-ready values; `from_dict(to_dict())` gives an equal config."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            elif isinstance(value, dict):
                value = dict(value)
            out[f.name] = value
        return out

    def classes(self, kind: str) -> dict[str, str]:
        return dict(self.still_classes if kind == STILL else self.moving_classes)

    def top_n_for(self, kind: str) -> int | None:
        if isinstance(self.top_n, dict):
            return self.top_n.get(kind)
        return self.top_n

    @property
    def title_languages(self) -> tuple[str, ...]:
        """The languages asked for, then Wikidata's language-neutral "mul" labels as a last resort."""
        return tuple(dict.fromkeys([*self.languages, "mul"]))

    @property
    def full_user_agent(self) -> str:
        return user_agent_string(self.user_agent, self.contact)


def _check_int(value: Any, name: str, minimum: int, fail: Callable[[str], None]) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        fail(f"{name} must be an integer >= {minimum}, got {value!r}")


def _year_range(value: Any) -> tuple[int, int]:
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise ValueError(f"wikidata config: year range {value!r} must be a pair [start, stop]") from None
    if isinstance(lo, bool) or isinstance(hi, bool) or not isinstance(lo, int) or not isinstance(hi, int) or lo >= hi:
        raise ValueError(f"wikidata config: year range {value!r} must be two integers with start < stop")
    return (lo, hi)


def user_agent_string(user_agent: str, contact: str) -> str:
    """The User-Agent header Wikimedia asks for: client/version (contact) library/version.

    >>> user_agent_string("iconicity-harvester/0.1", "me@example.org").startswith("iconicity-harvester/0.1 (me@example.org) Python-urllib/")
    True
    """
    if not contact or not contact.strip():
        raise ValueError("a User-Agent needs a contact (an e-mail address or URL)")
    library = f"Python-urllib/{sys.version_info[0]}.{sys.version_info[1]}"
    if contact in user_agent:
        return f"{user_agent} {library}"
    return f"{user_agent} ({contact.strip()}) {library}"


# ----------------------------------------------------------------------------------------
# HTTP with retries (shared with the Commons client)


@dataclass(frozen=True)
class RetryPolicy:
    """When to ask again: `max_retries` more tries after the first; 429 waits `Retry-After`
    (seconds or an HTTP date; over `max_retry_after_s` gives up at once), 5xx, timeouts and
    broken connections wait `backoff_s * 2**n` (at most `max_backoff_s`) times a jitter in
    [0.5, 1)."""

    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 120.0
    max_retry_after_s: float = 900.0

    def backoff(self, retry: int, rng: random.Random) -> float:
        nominal = min(self.max_backoff_s, self.backoff_s * (2**retry))
        return nominal * (0.5 + 0.5 * rng.random())


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str  # after redirects


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date.

    >>> parse_retry_after("7"), parse_retry_after(None), parse_retry_after("soon")
    (7.0, None, None)
    >>> parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=90.0)
    10.0
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _one_line(text: str | bytes, limit: int = 200) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read(response: Any, max_bytes: int | None) -> bytes:
    if max_bytes is None:
        return response.read()
    body = response.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise _TooLarge(max_bytes)
    return body


class _TooLarge(Exception):
    pass


def request_with_retries(
    request: urllib.request.Request,
    parse: Callable[[HttpAnswer], T],
    *,
    what: str,
    timeout_s: float,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    error: type[HarvestError] = HarvestError,
    timeout_error: type[HarvestError] | None = None,
    is_timeout: Callable[[int, bytes], bool] | None = None,
    max_bytes: int | None = None,
    on_request: Callable[[], None] | None = None,
    gate: threading.Semaphore | None = None,
) -> T:
    """Sends `request` until `parse` accepts an answer or the policy gives up.

    `parse` may raise `_Retry` (a bad answer worth another try) or a `HarvestError` (final).
    `is_timeout(status, body)` recognises a server that says it stopped at its time limit:
    raised at once as `timeout_error`, since asking the same again would time out again.
    `gate` bounds how many exchanges are in flight (held for the exchange, not the waits).
    """
    rng = rng or random.Random()
    timeout_error = timeout_error or error
    opener = urllib.request.build_opener()
    tries = policy.max_retries + 1
    waited = 0.0
    last = ""
    last_was_timeout = False
    for attempt in range(tries):
        delay: float | None = None
        last_was_timeout = False
        try:
            if gate is not None:
                gate.acquire()
            try:
                if on_request is not None:
                    on_request()
                with opener.open(request, timeout=timeout_s) as response:
                    answer = HttpAnswer(
                        response.status, response.headers, _read(response, max_bytes), response.geturl()
                    )
            finally:
                if gate is not None:
                    gate.release()
            return parse(answer)
        except urllib.error.HTTPError as failure:
            try:
                body = failure.read() or b""
            except (OSError, http.client.HTTPException):
                body = b""
            status = failure.code
            reason = failure.reason or http.client.responses.get(status, "")
            if is_timeout is not None and is_timeout(status, body):
                raise timeout_error(
                    f"{what}: the server stopped the query at its time limit (HTTP {status}: {_one_line(body, 120)})"
                ) from None
            if status == 429 or (status == 503 and failure.headers.get("Retry-After")):
                header = failure.headers.get("Retry-After")
                delay = parse_retry_after(header)
                last = f"HTTP {status} {reason}" + (f" (Retry-After {header.strip()})" if header else "")
                if delay is not None and delay > policy.max_retry_after_s:
                    raise error(
                        f"{what}: HTTP {status} {reason} asks to wait {delay:.0f} s (Retry-After {header.strip()}), "
                        f"over the limit of {policy.max_retry_after_s:g} s; giving up"
                    ) from None
            elif 500 <= status < 600 or status == 408:
                last = f"HTTP {status} {reason}: {_one_line(body, 120)}" if body.strip() else f"HTTP {status} {reason}"
            else:
                raise error(f"{what}: HTTP {status} {reason}: {_one_line(body) or 'no details'}") from None
        except _Retry as bad:
            last = str(bad)
        except _TooLarge as large:
            raise error(f"{what}: the answer is over the limit of {large.args[0]:,} bytes") from None
        except TimeoutError:  # socket.timeout is an alias
            last, last_was_timeout = f"no answer within {timeout_s:g} s", True
        except urllib.error.URLError as failure:
            if isinstance(failure.reason, TimeoutError):
                last, last_was_timeout = f"no answer within {timeout_s:g} s", True
            else:
                last = f"cannot connect ({failure.reason})"
        except (http.client.HTTPException, ConnectionError) as failure:
            last = f"connection broken ({type(failure).__name__}: {failure})"
        except OSError as failure:
            last = f"network error ({failure})"
        if attempt + 1 == tries:
            break
        if delay is None:
            delay = policy.backoff(attempt, rng)
        sleep(delay)
        waited += delay
    cls = timeout_error if last_was_timeout else error
    raise cls(
        f"{what}: {_one_line(last)} on all {tries} tr{'y' if tries == 1 else 'ies'} "
        f"(waited {waited:.1f} s between them); giving up"
    )


# ----------------------------------------------------------------------------------------
# The SPARQL client


def _is_sparql_timeout(status: int, body: bytes) -> bool:
    return status >= 500 and b"TimeoutException" in body


class SparqlClient:
    """A polite client of one SPARQL endpoint. Thread-safe; `requests` counts HTTP requests
    sent (cached answers send none)."""

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        *,
        user_agent: str,
        max_concurrency: int = 2,
        timeout_s: float = 65.0,
        policy: RetryPolicy | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not user_agent or not user_agent.strip():
            raise ValueError("SparqlClient needs a descriptive User-Agent with a contact")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.endpoint = endpoint
        self.user_agent = user_agent
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.policy = policy or RetryPolicy()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.sleep = sleep
        self.rng = rng or random.Random()
        self._gate = threading.BoundedSemaphore(max_concurrency)
        self._lock = threading.Lock()
        self.requests = 0
        self.cache_hits = 0

    @classmethod
    def from_config(cls, config: WikidataConfig, **overrides: Any) -> SparqlClient:
        options: dict[str, Any] = dict(
            user_agent=config.full_user_agent,
            max_concurrency=config.max_concurrency,
            timeout_s=config.timeout_s,
            policy=RetryPolicy(config.max_retries, config.backoff_s, config.max_backoff_s, config.max_retry_after_s),
            cache_dir=config.cache_dir,
        )
        options.update(overrides)
        return cls(config.endpoint, **options)

    def cache_key(self, text: str) -> str:
        return hashlib.sha256(f"{self.endpoint}\n{text}".encode()).hexdigest()

    def query(self, text: str) -> dict[str, Any]:
        """The SPARQL JSON answer to `text` (from the cache when it is there)."""
        cached = self._cached(text)
        if cached is not None:
            return cached
        body = urllib.parse.urlencode({"query": text, "format": "json"}).encode()
        request = urllib.request.Request(
            self.endpoint,
            data=body,
            method="POST",
            headers={
                "User-Agent": self.user_agent,
                "Accept": "application/sparql-results+json",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        raw: list[bytes] = []

        def parse(answer: HttpAnswer) -> dict[str, Any]:
            result = _parse_sparql_json(answer.body, self.endpoint)
            raw.append(answer.body)
            return result

        result = request_with_retries(
            request,
            parse,
            what=f"SPARQL endpoint {self.endpoint}",
            timeout_s=self.timeout_s,
            policy=self.policy,
            sleep=self.sleep,
            rng=self.rng,
            error=QueryFailed,
            timeout_error=QueryTimeout,
            is_timeout=_is_sparql_timeout,
            on_request=self._count,
            gate=self._gate,
        )
        self._store(text, raw[-1])
        return result

    def _count(self) -> None:
        with self._lock:
            self.requests += 1

    def _cache_path(self, text: str) -> Path | None:
        if self.cache_dir is None:
            return None
        key = self.cache_key(text)
        return self.cache_dir / key[:2] / f"{key}.json"

    def _cached(self, text: str) -> dict[str, Any] | None:
        path = self._cache_path(text)
        if path is None or not path.is_file():
            return None
        try:
            result = _parse_sparql_json(path.read_bytes(), self.endpoint)
        except (_Retry, QueryFailed, OSError):
            return None  # a damaged cache entry is asked again and overwritten
        with self._lock:
            self.cache_hits += 1
        return result

    def _store(self, text: str, body: bytes) -> None:
        path = self._cache_path(text)
        if path is None:
            return
        write_atomically(path, body)


def _parse_sparql_json(body: bytes, endpoint: str) -> dict[str, Any]:
    try:
        result = json.loads(body)
    except (UnicodeDecodeError, ValueError) as failure:
        if b"TimeoutException" in body:
            raise QueryTimeout(
                f"SPARQL endpoint {endpoint}: the answer broke off at the server's time limit "
                f"({_one_line(body[-160:], 120)})"
            ) from None
        raise _Retry(f"malformed JSON answer ({failure}; starts {_one_line(body[:60], 60)!r})") from None
    bindings = result.get("results", {}).get("bindings") if isinstance(result, dict) else None
    if not isinstance(bindings, list) or not all(isinstance(b, dict) for b in bindings):
        raise _Retry("JSON answer without results.bindings (not SPARQL JSON results)")
    return result


# ----------------------------------------------------------------------------------------
# Queries


@dataclass(frozen=True)
class QueryPage:
    """One query: the items of one class, in a year range, ordered by sitelinks, one page."""

    kind: str
    medium: str
    class_qid: str
    years: tuple[int, int] | str | None  # (start, stop), UNDATED, or None for all
    offset: int
    limit: int
    paging: bool = True  # whether a full page is followed by the next one

    def order(self, config: WikidataConfig) -> tuple[Any, ...]:
        """A sort key that does not depend on when the answer arrived: kinds and classes in
        the config's order, then years, then offset."""
        kind = config.kinds.index(self.kind) if self.kind in config.kinds else len(config.kinds)
        classes = list(config.classes(self.kind).items())
        rank = (
            classes.index((self.medium, self.class_qid)) if (self.medium, self.class_qid) in classes else len(classes)
        )
        years = (0, 0, 0) if self.years is None else (1, 0, 0) if self.years == UNDATED else (2, *self.years)
        return (kind, rank, self.medium, self.class_qid, years, self.offset, self.limit)

    def describe(self) -> str:
        if self.years is None or self.years == UNDATED:
            years = self.years or "all years"
        else:
            years = f"{self.years[0]}..{self.years[1]}"
        return f"{self.kind} {self.medium} ({self.class_qid}), {years}, items {self.offset}..{self.offset + self.limit}"


def first_pages(config: WikidataConfig) -> list[QueryPage]:
    """The first page of every (kind, class, year range) the config asks for."""
    pages = []
    ranges: list[tuple[int, int] | str | None]
    if config.year_ranges is None:
        ranges = [None]
    else:
        ranges = [*config.year_ranges, *([UNDATED] if config.include_undated else [])]
    for kind in config.kinds:
        cap = config.top_n_for(kind)
        limit = min(config.page_size, cap) if cap else config.page_size
        for medium, qid in config.classes(kind).items():
            pages.extend(QueryPage(kind, medium, qid, years, 0, limit) for years in ranges)
    return pages


def _date_literal(year: int) -> str:
    sign = "-" if year < 0 else ""
    return f'"{sign}{abs(year):04d}-01-01T00:00:00Z"^^xsd:dateTime'


def _label_var(language: str) -> str:
    return "label_" + language.replace("-", "_")


def build_query(config: WikidataConfig, page: QueryPage) -> str:
    """The SPARQL text of one page: an inner query picks the page's items (class, sitelinks
    threshold, year range, ordered by sitelinks then IRI, LIMIT/OFFSET) and the outer part
    fetches their labels, creators, dates, images, IMDb id, depicts and genres, one row per
    combination of values (grouped into one record per item afterwards)."""
    dates = "|".join(f"wdt:{p}" for p in config.date_properties)
    creator = config.creator_properties[page.kind]
    moving = page.kind == MOVING
    title_languages = config.title_languages
    label_vars = [f"?{_label_var(lang)}" for lang in title_languages]
    quoted = ", ".join(f'"{lang}"' for lang in title_languages)
    select = ["?item", "?sitelinks", *label_vars]
    inner = [
        f"      ?item wdt:P31 wd:{page.class_qid} ;",
        "            wikibase:sitelinks ?sitelinks .",
        f"      FILTER(?sitelinks >= {config.min_sitelinks})",
        f"      FILTER EXISTS {{ ?item rdfs:label ?anyLabel . FILTER(LANG(?anyLabel) IN ({quoted})) }}",
    ]
    if page.years == UNDATED:
        inner.append(f"      FILTER NOT EXISTS {{ ?item {dates} [] . }}")
        inner_select = "?item ?sitelinks"
    else:
        select.append("?date")
        inner_select = "?item ?sitelinks (MIN(?anyDate) AS ?date)"
        if page.years is None:
            inner.append(f"      OPTIONAL {{ ?item {dates} ?anyDate . }}")
        else:
            # in the range by any of its dates; dated by the earliest of all of them
            lo, hi = page.years
            inner.append(f"      ?item {dates} ?dateInRange .")
            inner.append(f"      FILTER(?dateInRange >= {_date_literal(lo)} && ?dateInRange < {_date_literal(hi)})")
            inner.append(f"      ?item {dates} ?anyDate .")
    select += ["?creator", "?creatorLabel", "?image", "?imdb", "?depictsLabel", "?genreLabel"]
    outer = [
        *(
            f'  OPTIONAL {{ ?item rdfs:label ?{_label_var(lang)} . FILTER(LANG(?{_label_var(lang)}) = "{lang}") }}'
            for lang in title_languages
        ),
        f"  OPTIONAL {{ ?item wdt:{creator} ?creator . }}",
        "  OPTIONAL { ?item wdt:P18 ?image . }",
        "  OPTIONAL { ?item wdt:P345 ?imdb . }",
        "  OPTIONAL { ?item wdt:P180 ?depicts . }",
        "  OPTIONAL { ?item wdt:P136 ?genre . }",
    ]
    if moving:
        select += ["?poster", "?logo", "?commonsCategory"]
        outer += [
            "  OPTIONAL { ?item wdt:P3383 ?poster . }",
            "  OPTIONAL { ?item wdt:P154 ?logo . }",
            "  OPTIONAL { ?item wdt:P373 ?commonsCategory . }",
        ]
    languages = ",".join(dict.fromkeys([*config.languages, "mul", "en"]))
    return "\n".join(
        [
            f"SELECT {' '.join(select)} WHERE {{",
            "  {",
            f"    SELECT {inner_select} WHERE {{",
            *inner,
            "    }",
            "    GROUP BY ?item ?sitelinks",
            "    ORDER BY DESC(?sitelinks) ?item",
            f"    LIMIT {page.limit}",
            f"    OFFSET {page.offset}",
            "  }",
            *outer,
            f'  SERVICE wikibase:label {{ bd:serviceParam wikibase:language "{languages}". }}',
            "}",
        ]
    )


def split_page(page: QueryPage) -> list[QueryPage]:
    """What to ask instead of a page that timed out: its year range in halves (an unbounded
    page becomes the undated items plus `ALL_YEARS`), else the page in halves; [] when it is
    one item of one year already.

    >>> [p.years for p in split_page(QueryPage("still", "painting", "Q3305213", (1800, 1900), 0, 500))]
    [(1800, 1850), (1850, 1900)]
    >>> [(p.offset, p.limit, p.paging) for p in split_page(QueryPage("still", "painting", "Q3305213", (1889, 1890), 0, 500))]
    [(0, 250, False), (250, 250, True)]
    """
    if page.years is None:
        return [replace(page, years=UNDATED, offset=0), replace(page, years=ALL_YEARS, offset=0)]
    if page.years != UNDATED:
        lo, hi = page.years  # type: ignore[misc]
        if hi - lo > 1:
            mid = lo + (hi - lo) // 2
            return [replace(page, years=(lo, mid), offset=0), replace(page, years=(mid, hi), offset=0)]
    if page.limit > 1:
        half = page.limit // 2
        return [
            replace(page, limit=half, paging=False),
            replace(page, offset=page.offset + half, limit=page.limit - half),
        ]
    return []


# ----------------------------------------------------------------------------------------
# Harvest


@dataclass(frozen=True)
class HarvestProgress:
    """Reported after every answered query."""

    queries_done: int
    queries_pending: int
    items_seen: int
    last: str


@dataclass(frozen=True)
class WikidataWork:
    """A harvested record with what the record has no field for."""

    record: ReferenceRecord
    commons_category: str | None = None


@dataclass
class _Item:
    qid: str
    kind: str
    medium: str
    sitelinks: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    creators: dict[str, str | None] = field(default_factory=dict)  # qid -> label
    dates: set[str] = field(default_factory=set)
    imdb: str | None = None
    images: dict[str, dict[str, None]] = field(default_factory=lambda: {"image": {}, "poster": {}, "logo": {}})
    depicts: dict[str, None] = field(default_factory=dict)
    genres: dict[str, None] = field(default_factory=dict)
    commons_category: str | None = None


def entity_id(uri: Any) -> str | None:
    """The QID of an entity URI.

    >>> entity_id("http://www.wikidata.org/entity/Q45585"), entity_id("http://example.org/x")
    ('Q45585', None)
    """
    if not isinstance(uri, str) or not uri.startswith(ENTITY_PREFIX):
        return None
    qid = uri[len(ENTITY_PREFIX) :]
    return qid if is_qid(qid) else None


def commons_file_url(value: str) -> str:
    """A Commons `Special:FilePath` URL for a P18-style value (the URI WDQS gives, or a file name).

    >>> commons_file_url("http://commons.wikimedia.org/wiki/Special:FilePath/Van%20Gogh%20-%20Starry%20Night.jpg")
    'https://commons.wikimedia.org/wiki/Special:FilePath/Van%20Gogh%20-%20Starry%20Night.jpg'
    >>> commons_file_url("Mona Lisa, by Leonardo da Vinci.jpg")
    'https://commons.wikimedia.org/wiki/Special:FilePath/Mona%20Lisa%2C%20by%20Leonardo%20da%20Vinci.jpg'
    """
    marker = "Special:FilePath/"
    name = urllib.parse.unquote(value.split(marker, 1)[1]) if marker in value else value
    if name.startswith("File:"):
        name = name[len("File:") :]
    return COMMONS_FILE_PATH + urllib.parse.quote(name.replace("_", " "), safe="")


def _accumulate(
    items: dict[str, _Item], page: QueryPage, bindings: Iterable[Mapping[str, Any]], languages: tuple[str, ...]
) -> None:
    label_vars = [(language, _label_var(language)) for language in languages]
    urls: dict[str, str] = {}  # answers repeat the same image on many rows
    for binding in bindings:
        row = {name: cell.get("value") for name, cell in binding.items() if isinstance(cell, dict)}
        qid = entity_id(row.get("item"))
        if qid is None:
            continue
        item = items.get(qid)
        if item is None:
            item = items[qid] = _Item(qid, page.kind, page.medium)
        sitelinks = row.get("sitelinks")
        if isinstance(sitelinks, str) and sitelinks.isdigit():
            item.sitelinks = max(item.sitelinks, int(sitelinks))
        for language, var in label_vars:
            label = row.get(var)
            if label and language not in item.labels:
                item.labels[language] = label
        creator = entity_id(row.get("creator"))
        if creator is not None and item.creators.get(creator) is None:
            label = row.get("creatorLabel")
            item.creators[creator] = label if label and not is_qid(label) else None
        date = row.get("date")
        if date and date not in item.dates and parse_year(date) is not None:
            item.dates.add(date)
        if item.imdb is None and row.get("imdb"):
            item.imdb = row["imdb"]
        for role in ("image", "poster", "logo"):
            image = row.get(role)
            if image:
                url = urls.get(image)
                if url is None:
                    url = urls[image] = commons_file_url(image)
                item.images[role][url] = None
        for name, bucket in (("depictsLabel", item.depicts), ("genreLabel", item.genres)):
            label = row.get(name)
            if label and label not in bucket and not is_qid(label):  # the label service falls back to the QID
                bucket[label] = None
        if item.commons_category is None and row.get("commonsCategory"):
            item.commons_category = row["commonsCategory"]


def _earliest(dates: set[str]) -> str | None:
    if not dates:
        return None
    return min(dates, key=lambda d: (parse_year(d), d))


def _to_work(item: _Item, languages: tuple[str, ...]) -> WikidataWork | None:
    title = next((item.labels[lang] for lang in languages if item.labels.get(lang, "").strip()), None)
    if title is None:
        return None
    named = [label for label in item.creators.values() if label]
    inception = _earliest(item.dates)
    images = [*item.images["image"], *item.images["poster"], *item.images["logo"]]
    record = ReferenceRecord(
        id=item.qid,
        slug=slugify(title),
        title=title,
        kind=item.kind,
        medium=item.medium,
        labels=dict(item.labels),
        creator=", ".join(named) or None,
        creator_qid=next(iter(item.creators), None),
        inception=inception,
        year=parse_year(inception),
        sitelinks=item.sitelinks,
        imdb=item.imdb,
        image_urls=tuple(dict.fromkeys(images)),
        depicts=tuple(item.depicts),
        genres=tuple(item.genres),
    )
    return WikidataWork(record, item.commons_category)


def select_top(works: Iterable[WikidataWork], config: WikidataConfig) -> list[WikidataWork]:
    """Per kind (in the config's order): sitelinks descending, then QID as the query service
    orders IRIs (as strings), cut at the kind's top N."""
    chosen: list[WikidataWork] = []
    works = list(works)
    for kind in config.kinds:
        ranked = sorted(
            (w for w in works if w.record.kind == kind), key=lambda w: (-(w.record.sitelinks or 0), w.record.id)
        )
        cap = config.top_n_for(kind)
        chosen.extend(ranked[:cap] if cap else ranked)
    return chosen


def _item_uris(bindings: list[Mapping[str, Any]]) -> set[str]:
    uris = {cell.get("value") for cell in (b.get("item") for b in bindings) if isinstance(cell, dict)}
    return {u for u in uris if isinstance(u, str)}


def harvest_works(
    config: WikidataConfig,
    client: SparqlClient | None = None,
    on_progress: Callable[[HarvestProgress], None] | None = None,
) -> list[WikidataWork]:
    """`harvest_wikidata`, keeping the Commons category of each work beside its record."""
    client = client or SparqlClient.from_config(config)
    answers: list[tuple[QueryPage, list[Mapping[str, Any]]]] = []
    seen: set[str] = set()
    done = 0
    with ThreadPoolExecutor(max_workers=config.max_concurrency, thread_name_prefix="wikidata") as pool:
        pending: dict[Future[dict[str, Any]], QueryPage] = {}

        def submit(page: QueryPage) -> None:
            pending[pool.submit(client.query, build_query(config, page))] = page

        for page in first_pages(config):
            submit(page)
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(finished, key=lambda f: pending[f].order(config)):
                    page = pending.pop(future)
                    try:
                        answer = future.result()
                    except QueryTimeout as failure:
                        smaller = split_page(page)
                        if not smaller:
                            raise QueryTimeout(
                                f"{failure} (for {page.describe()}, which cannot be split further)"
                            ) from None
                        for part in smaller:
                            submit(part)
                        continue
                    bindings = answer["results"]["bindings"]
                    answers.append((page, bindings))
                    uris = _item_uris(bindings)
                    seen.update(uris)
                    done += 1
                    following = _next_page(page, len(uris), config.top_n_for(page.kind))
                    if following is not None:
                        submit(following)
                    if on_progress is not None:
                        on_progress(HarvestProgress(done, len(pending), len(seen), page.describe()))
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    items: dict[str, _Item] = {}
    for page, bindings in sorted(answers, key=lambda a: a[0].order(config)):
        _accumulate(items, page, bindings, config.title_languages)
    works = [w for w in (_to_work(item, config.title_languages) for item in items.values()) if w is not None]
    return select_top(works, config)


def _next_page(page: QueryPage, items: int, cap: int | None) -> QueryPage | None:
    if not page.paging or items < page.limit:
        return None
    offset = page.offset + page.limit
    if cap is not None and offset >= cap:
        return None
    return replace(page, offset=offset, limit=page.limit if cap is None else min(page.limit, cap - offset))


def harvest_wikidata(
    config: WikidataConfig,
    client: SparqlClient | None = None,
    on_progress: Callable[[HarvestProgress], None] | None = None,
) -> list[ReferenceRecord]:
    """The references the config selects, per kind (config order), sitelinks descending.

    The title is the label in the first of `config.languages` that has one, else the
    language-neutral ("mul") label; items with neither are not asked for. `client` defaults
    to one built from the config; `on_progress` is called after every answered query.
    """
    return [work.record for work in harvest_works(config, client, on_progress)]
