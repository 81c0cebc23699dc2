"""Ingest: fetch a source (a path or URL), read its papers, store them in one transaction.

A source that cannot be read as a whole changes nothing; a malformed entry is skipped with a
warning and counted; the other sources still run. Every run of a source is recorded
(`IngestRun`): what was new, updated, unchanged or skipped, errors, and how long it took.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..db import Database
from ..models import IngestRun, SourceState, utcnow
from .fetch import Fetcher, is_url, read_path, with_query
from .readers import read
from .records import PaperRecord, ReadResult, SourceError
from .store import store_records

log = logging.getLogger(__name__)

__all__ = ["IngestResult", "PaperRecord", "SourceError", "SourceSpec", "ingest_source", "ingest_sources"]

#: At most this many pages are followed for one paged source (OAI-PMH, arXiv API) in one run.
MAX_PAGES = 50


@dataclass(frozen=True)
class SourceSpec:
    """What to ingest: a path or URL, the name it is known by, and how much of a paged source."""

    location: str
    name: str | None = None
    max_papers: int = 2000
    #: The announcement date of a listing whose entries carry none (default: a date in the file name).
    listed: dt.date | None = None


@dataclass
class IngestResult:
    source: str
    location: str
    format: str | None = None
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    error: str | None = None
    not_modified: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> str:
        return "failed" if self.error else ("not-modified" if self.not_modified else "ok")


def _read_all(spec: SourceSpec, fetcher: Fetcher | None, state: SourceState | None) -> tuple[ReadResult | None, SourceState | None]:
    """Every page of the source, read; (None, state) when the server says nothing changed."""
    if not is_url(spec.location):
        if "://" in spec.location:
            raise SourceError("only http(s) URLs and paths can be ingested")
        return read(read_path(spec.location), spec.location, spec.listed), None
    assert fetcher is not None
    first = fetcher.get(spec.location, state.etag if state else None, state.last_modified if state else None)
    new_state = SourceState(url=spec.location, etag=first.etag, last_modified=first.last_modified, checked_at=utcnow())
    if first.not_modified:
        return None, new_state
    result = read(first.content, spec.location, spec.listed)
    page = result
    pages = 1
    while page.next_query and pages < MAX_PAGES and len(result.records) < spec.max_papers:
        url = with_query(spec.location, page.next_query, replace=page.replace_query)
        page = read(fetcher.get(url).content, url, spec.listed)
        pages += 1
        result.records.extend(page.records)
        result.skipped.extend(page.skipped)
    if page.next_query:
        result.notes.append(f"stopped after {pages} pages and {len(result.records)} papers")
    del result.records[spec.max_papers :]
    return result, new_state


def ingest_source(
    db: Database, spec: SourceSpec | str, now: dt.datetime | None = None, fetcher: Fetcher | None = None
) -> IngestResult:
    """Read and store one source; a failure is reported in the result and changes no paper.

    New papers are first seen at `now` when it is given (a replay or a test that sets the
    time), else at the moment their transaction holds the papers' write lock."""
    if isinstance(spec, str):
        spec = SourceSpec(spec)
    started = time.perf_counter()
    started_at = utcnow()
    result = IngestResult(source=spec.name or spec.location, location=spec.location)
    own_fetcher = fetcher is None and is_url(spec.location)
    if own_fetcher:
        fetcher = Fetcher()
    try:
        with db.session() as session:
            state = session.get(SourceState, spec.location) if is_url(spec.location) else None
        read_result, new_state = _read_all(spec, fetcher, state)
        with db.paper_transaction() as session:
            # Stamped only now, holding the papers' write lock until the commit: a send never
            # closes its window between this stamp and the moment the papers become visible
            # (see `Database.settled_instant`), so none of them falls between two digests.
            first_seen = now or utcnow()
            if read_result is not None:
                result.format = read_result.format
                result.skipped = len(read_result.skipped)
                result.notes = read_result.notes
                # A paper's source is the format it came in (what its label in the email says:
                # "arXiv", "Hugging Face trending"); the source's own name is in its `IngestRun`.
                stats = store_records(session, read_result.records, read_result.format, first_seen)
                result.new, result.updated, result.unchanged = stats.new, stats.updated, stats.unchanged
                result.skipped += stats.ignored
                if stats.ignored:
                    result.notes.append(f"{stats.ignored} new versions of papers not in the database, not stored")
            else:
                result.not_modified = True
                result.notes.append("not modified since the last fetch")
            if new_state is not None:
                session.merge(new_state)
            session.add(_run(result, started_at, time.perf_counter() - started, read_result))
    except SourceError as exc:
        result.error = str(exc)
        log.error("source %s: %s", spec.name or spec.location, exc)
        with db.transaction() as session:
            session.add(_run(result, started_at, time.perf_counter() - started, None))
    finally:
        if own_fetcher and fetcher is not None:
            fetcher.close()
    result.seconds = time.perf_counter() - started
    log.info(
        "ingested %s: %d new, %d updated, %d unchanged, %d skipped%s",
        result.source, result.new, result.updated, result.unchanged, result.skipped, f" ({result.error})" if result.error else "",
    )
    return result


def _run(result: IngestResult, started_at: dt.datetime, seconds: float, read_result: ReadResult | None) -> IngestRun:
    detail = result.error
    if detail is None and read_result is not None and (read_result.skipped or result.notes):
        detail = json.dumps((result.notes + read_result.skipped)[:20])
    return IngestRun(
        source=result.source, location=result.location, format=result.format, status=result.status,
        started_at=started_at, seconds=seconds, new=result.new, updated=result.updated,
        unchanged=result.unchanged, skipped=result.skipped, errors=0 if result.ok else 1, detail=detail,
    )


def ingest_sources(
    db: Database,
    specs: Iterable[SourceSpec | str],
    now: dt.datetime | None = None,
    on_done: Callable[[IngestResult], None] | None = None,
    fetcher: Fetcher | None = None,
) -> list[IngestResult]:
    """Ingest each source in turn, one HTTP client for all; one failing source does not stop the others."""
    specs = list(specs)
    own = fetcher is None and any(is_url(s if isinstance(s, str) else s.location) for s in specs)
    if own:
        fetcher = Fetcher()
    try:
        results = []
        for spec in specs:
            result = ingest_source(db, spec, now, fetcher)
            results.append(result)
            if on_done:
                on_done(result)
        return results
    finally:
        if own and fetcher is not None:
            fetcher.close()
