"""Ingest: read a source (a path or URL), normalize its papers, store them in one transaction.

A source that cannot be read as a whole changes nothing; a malformed entry is skipped with a
warning and counted; the other sources still run.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..db import Database
from ..models import utcnow
from .readers import SourceError, read
from .records import PaperRecord
from .store import store_records

log = logging.getLogger(__name__)

__all__ = ["IngestResult", "PaperRecord", "SourceError", "ingest_source", "ingest_sources"]


@dataclass
class IngestResult:
    source: str
    format: str | None = None
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def fetch(location: str) -> bytes:
    """The bytes of a path."""
    if "://" in location:
        raise SourceError("fetching URLs is not supported yet; give a path")
    path = Path(location)
    try:
        return path.read_bytes()
    except IsADirectoryError:
        raise SourceError("is a folder; give its files") from None
    except OSError as exc:
        raise SourceError(f"cannot read: {exc.strerror or exc}") from None


def ingest_source(db: Database, location: str, name: str | None = None, now: dt.datetime | None = None) -> IngestResult:
    """Read and store one source; failures are reported in the result, never half-written."""
    started = time.perf_counter()
    result = IngestResult(source=name or location)
    try:
        read_result = read(fetch(location), location)
        result.format = read_result.format
        result.skipped = len(read_result.skipped)
        with db.transaction() as session:
            stats = store_records(session, read_result.records, name or read_result.format, now or utcnow())
        result.new, result.updated, result.unchanged = stats.new, stats.updated, stats.unchanged
    except SourceError as exc:
        result.error = str(exc)
        log.error("source %s: %s", location, exc)
    result.seconds = time.perf_counter() - started
    log.info(
        "ingested %s: %d new, %d updated, %d unchanged, %d skipped",
        result.source, result.new, result.updated, result.unchanged, result.skipped,
    )
    return result


def ingest_sources(
    db: Database,
    sources: Iterable[tuple[str, str | None]],
    now: dt.datetime | None = None,
    on_done: Callable[[IngestResult], None] | None = None,
) -> list[IngestResult]:
    """Ingest each `(location, name)` in turn; one failing source does not stop the others."""
    results = []
    for location, name in sources:
        result = ingest_source(db, location, name, now)
        results.append(result)
        if on_done:
            on_done(result)
    return results
