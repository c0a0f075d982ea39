"""Downloading reference images from Wikimedia Commons.

`CommonsClient.fetch` asks for a file (a `Special:FilePath` URL, a bare file name, or any
image URL such as an upload.wikimedia.org thumbnail) at a chosen width, with the same
User-Agent, retries and backoff as the Wikidata client, and checks that the bytes decode
as an image. Where the bytes are kept is the caller's business: this returns them with
their media type and SHA-256.

>>> client = CommonsClient(user_agent="iconicity-harvester/0.1 (me@example.org)")
>>> client.file_url("Mona Lisa.jpg", width=800)
'https://commons.wikimedia.org/wiki/Special:FilePath/Mona%20Lisa.jpg?width=800'
"""

from __future__ import annotations

import random
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.common.images import (
    DEFAULT_MAX_PIXELS,
    UNKNOWN_MEDIA_TYPE,
    InvalidImage,
    content_hash,
    decode_image,
    media_type,
)

from .wikidata import (
    COMMONS_FILE_PATH,
    HarvestError,
    HttpAnswer,
    RetryPolicy,
    WikidataConfig,
    request_with_retries,
)

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
_MARKER = "Special:FilePath/"


class ImageFetchFailed(HarvestError):
    """An image could not be downloaded; the message names the URL and what happened."""


class NotAnImage(ImageFetchFailed):
    """The server answered, but the bytes are not an image we can decode."""


@dataclass(frozen=True)
class FetchedImage:
    """A downloaded image: its bytes, what they are, and where they came from."""

    url: str  # the URL asked for
    source: str  # the URL that answered, after redirects (a thumbnail's own URL)
    data: bytes
    media_type: str
    sha256: str
    width: int
    height: int

    @property
    def size_bytes(self) -> int:
        return len(self.data)


class CommonsClient:
    """A polite downloader of Commons files. `file_path_base` is where `Special:FilePath`
    requests go (Commons itself, or a mirror or stand-in); `requests` counts HTTP requests."""

    def __init__(
        self,
        *,
        user_agent: str,
        file_path_base: str = COMMONS_FILE_PATH,
        timeout_s: float = 60.0,
        policy: RetryPolicy | None = None,
        max_concurrency: int = 2,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not user_agent or not user_agent.strip():
            raise ValueError("CommonsClient needs a descriptive User-Agent with a contact")
        if not file_path_base.endswith("/"):
            file_path_base += "/"
        self.user_agent = user_agent
        self.file_path_base = file_path_base
        self.timeout_s = timeout_s
        self.policy = policy or RetryPolicy()
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.sleep = sleep
        self.rng = rng or random.Random()
        self._gate = threading.BoundedSemaphore(max_concurrency)
        self._lock = threading.Lock()
        self.requests = 0

    @classmethod
    def from_config(cls, config: WikidataConfig, **overrides: Any) -> CommonsClient:
        """A client with the Wikidata config's User-Agent, concurrency, timeout and retries."""
        options: dict[str, Any] = dict(
            user_agent=config.full_user_agent,
            timeout_s=config.timeout_s,
            policy=RetryPolicy(config.max_retries, config.backoff_s, config.max_backoff_s, config.max_retry_after_s),
            max_concurrency=config.max_concurrency,
        )
        options.update(overrides)
        return cls(**options)

    def file_url(self, name_or_url: str, width: int | None = None) -> str:
        """The URL to ask: file names and `Special:FilePath` URLs go to `file_path_base`
        (with `?width=N`); any other URL is asked as it is (its width is its own).

        >>> client = CommonsClient(user_agent="ua (me@example.org)", file_path_base="http://127.0.0.1:8000/wiki/Special:FilePath/")
        >>> client.file_url("https://commons.wikimedia.org/wiki/Special:FilePath/Van%20Gogh%20-%20Starry%20Night.jpg?width=1000", 300)
        'http://127.0.0.1:8000/wiki/Special:FilePath/Van%20Gogh%20-%20Starry%20Night.jpg?width=300'
        """
        if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 1):
            raise ValueError(f"thumbnail width must be a positive integer, got {width!r}")
        if name_or_url.startswith(("http://", "https://")) and _MARKER not in name_or_url:
            return name_or_url
        if _MARKER in name_or_url:
            name = urllib.parse.unquote(urllib.parse.urlsplit(name_or_url).path.split(_MARKER, 1)[1])
        else:
            name = name_or_url
        if name.startswith("File:"):
            name = name[len("File:") :]
        name = name.replace("_", " ").strip()
        if not name:
            raise ValueError(f"no file name in {name_or_url!r}")
        url = self.file_path_base + urllib.parse.quote(name, safe="")
        return f"{url}?width={width}" if width is not None else url

    def fetch(self, name_or_url: str, width: int | None = None) -> FetchedImage:
        """Downloads one image (a thumbnail `width` pixels wide when given) and checks it
        decodes; raises `ImageFetchFailed` (or `NotAnImage`) with a one-line cause."""
        url = self.file_url(name_or_url, width)
        request = urllib.request.Request(url, headers={"User-Agent": self.user_agent, "Accept": "image/*"})

        def parse(answer: HttpAnswer) -> FetchedImage:
            try:
                decoded = decode_image(answer.body, name=url, max_pixels=self.max_pixels)
            except InvalidImage as failure:
                kind = answer.headers.get("Content-Type", "no content type")
                raise NotAnImage(
                    f"{url}: the answer ({kind}, {len(answer.body):,} bytes) is not an image: {failure}"
                ) from None
            return FetchedImage(
                url=url,
                source=answer.url,
                data=answer.body,
                media_type=_media_type(answer),
                sha256=content_hash(answer.body),
                width=decoded.width,
                height=decoded.height,
            )

        return request_with_retries(
            request,
            parse,
            what=url,
            timeout_s=self.timeout_s,
            policy=self.policy,
            sleep=self.sleep,
            rng=self.rng,
            error=ImageFetchFailed,
            max_bytes=self.max_bytes,
            on_request=self._count,
            gate=self._gate,
        )

    def _count(self) -> None:
        with self._lock:
            self.requests += 1


def _media_type(answer: HttpAnswer) -> str:
    """The media type the bytes themselves declare (their format), else the server's."""
    found = media_type(answer.body)
    if found != UNKNOWN_MEDIA_TYPE:
        return found
    return (answer.headers.get("Content-Type") or UNKNOWN_MEDIA_TYPE).split(";")[0].strip()
