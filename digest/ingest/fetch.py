"""Fetching a source: a path from disk, or a URL over HTTP(S) with httpx.

Over HTTP: timeouts; bounded retries with exponential backoff (honouring `Retry-After`) on 429,
5xx and network errors; an honest User-Agent; at least `ARXIV_INTERVAL` seconds between calls to
an arXiv host, as arXiv asks of API clients; and conditional GET (`ETag` / `Last-Modified`).
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from .. import __version__
from ..backoff import backoff_delay
from .records import SourceError

log = logging.getLogger(__name__)

USER_AGENT = f"digest/{__version__} (self-hosted paper digest; +https://github.com/digest-dev/digest)"
ARXIV_INTERVAL = 3.0
RETRY_STATUS = {429, 500, 502, 503, 504}
#: The most a server's `Retry-After` is allowed to make us wait, in seconds.
MAX_RETRY_AFTER = 120.0


def is_url(location: str) -> bool:
    return urlsplit(location).scheme in ("http", "https")


@dataclass
class Fetched:
    content: bytes
    not_modified: bool = False
    etag: str | None = None
    last_modified: str | None = None


def read_path(location: str) -> bytes:
    path = Path(location)
    try:
        return path.read_bytes()
    except IsADirectoryError:
        raise SourceError("is a folder; give its files") from None
    except OSError as exc:
        raise SourceError(f"cannot read: {exc.strerror or exc}") from None


def with_query(url: str, query: dict[str, str], replace: bool = False) -> str:
    """`url` with `query` merged into its query string (or replacing it)."""
    parts = urlsplit(url)
    params = {} if replace else dict(parse_qsl(parts.query, keep_blank_values=True))
    params.update(query)
    return urlunsplit(parts._replace(query=urlencode(params)))


class Fetcher:
    """HTTP GET with retries, per-host politeness and conditional requests; one per ingest run."""

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 2.0,
        max_bytes: int = 256 * 2**20,
        intervals: dict[str, float] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retries = retries
        self.backoff = backoff
        self.max_bytes = max_bytes
        #: Minimum seconds between two requests to a host, by host name suffix.
        self.intervals = {"arxiv.org": ARXIV_INTERVAL} if intervals is None else intervals
        self.sleep = sleep
        self.clock = clock
        self._last: dict[str, float] = {}
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"},
            follow_redirects=True,
            transport=transport,
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "Fetcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait_turn(self, host: str) -> None:
        interval = max((v for suffix, v in self.intervals.items() if host == suffix or host.endswith("." + suffix)), default=0.0)
        last = self._last.get(host)
        if interval and last is not None:
            wait = last + interval - self.clock()
            if wait > 0:
                log.debug("waiting %.1f s before the next request to %s", wait, host)
                self.sleep(wait)
        self._last[host] = self.clock()

    def get(self, url: str, etag: str | None = None, last_modified: str | None = None) -> Fetched:
        """The body of `url`; `not_modified` when the validators say it has not changed."""
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        host = urlsplit(url).hostname or ""
        for attempt in range(self.retries + 1):
            self._wait_turn(host)
            try:
                with self.client.stream("GET", url, headers=headers) as response:
                    status = response.status_code
                    if status == 304:
                        return Fetched(b"", not_modified=True, etag=etag, last_modified=last_modified)
                    if status in RETRY_STATUS:
                        retry_after = response.headers.get("Retry-After")
                    elif status >= 400:
                        raise SourceError(f"HTTP {status} {response.reason_phrase}")
                    else:
                        return Fetched(self._body(response), etag=response.headers.get("ETag"), last_modified=response.headers.get("Last-Modified"))
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if attempt == self.retries:
                    raise SourceError(f"no answer after {attempt + 1} tries ({problem})") from None
                self._backoff(attempt, None, problem)
                continue
            if attempt == self.retries:
                raise SourceError(f"HTTP {status} after {attempt + 1} tries")
            self._backoff(attempt, retry_after, f"HTTP {status} from {host}")
        raise AssertionError("unreachable")

    def _body(self, response: httpx.Response) -> bytes:
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > self.max_bytes:
                raise SourceError(f"the answer is larger than {self.max_bytes // 2**20} MiB")
        return bytes(body)

    def _backoff(self, attempt: int, retry_after: str | None, problem: str) -> None:
        delay = backoff_delay(self.backoff, attempt)
        if retry_after:
            delay = max(delay, min(_retry_after_seconds(retry_after), MAX_RETRY_AFTER))
        log.warning("%s; trying again in %.1f s", problem, delay)
        self.sleep(delay)


def _retry_after_seconds(value: str) -> float:
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, when.timestamp() - time.time())
