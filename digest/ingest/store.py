"""Write normalized records into the paper table: one row per paper, updated, never moved in time.

The same paper met again (another source, another day, a newer version) updates its row;
`first_seen` never changes, so a paper is "new" to the ranking only once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace

from sqlalchemy import insert
from sqlmodel import Session, col, select

from ..db import chunks
from ..models import Paper
from ..textmodel import stored_tokens
from ..tldr import tldr
from .records import PaperRecord


@dataclass
class StoreStats:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    #: New versions of papers this database does not know: not new, so not stored.
    ignored: int = 0


def merge_duplicates(records: Iterable[PaperRecord]) -> list[PaperRecord]:
    """One record per paper key; a later or higher version of the same paper wins, and a paper
    met as new anywhere in the batch is new."""
    merged: dict[str, PaperRecord] = {}
    for record in records:
        known = merged.get(record.key)
        if known is None or _newer(record, known):
            if known is not None and not known.update_only:
                record.update_only = False
            merged[record.key] = record
        elif not record.update_only:
            known.update_only = False
    return list(merged.values())


def _newer(record: PaperRecord, known: PaperRecord) -> bool:
    if record.version is not None and known.version is not None:
        return record.version >= known.version
    return True


def store_records(session: Session, records: Sequence[PaperRecord], source: str, now: dt.datetime) -> StoreStats:
    """Insert or update `records` within the caller's transaction."""
    stats = StoreStats()
    records = merge_duplicates(records)
    by_arxiv: dict[str, Paper | SimpleNamespace] = {}
    by_title: dict[str, Paper | SimpleNamespace] = {}
    arxiv_ids = [r.arxiv_id for r in records if r.arxiv_id]
    title_keys = list({r.title_key for r in records})
    for chunk in chunks(arxiv_ids):
        for paper in session.exec(select(Paper).where(col(Paper.arxiv_id).in_(chunk))):
            by_arxiv[paper.arxiv_id] = paper
    for chunk in chunks(title_keys):
        for paper in session.exec(select(Paper).where(col(Paper.title_key).in_(chunk)).order_by(Paper.id)):
            by_title.setdefault(paper.title_key, paper)
    fresh: list[SimpleNamespace] = []
    for record in records:
        paper = by_arxiv.get(record.arxiv_id) if record.arxiv_id else None
        if paper is None:
            candidate = by_title.get(record.title_key)
            # A title-only row is the same paper as a record with an arXiv id; two different
            # arXiv ids with the same title are two papers.
            if candidate is not None and not (record.arxiv_id and candidate.arxiv_id):
                paper = candidate
        if paper is None and record.update_only:
            stats.ignored += 1
            continue
        if paper is None:
            # New rows are plain namespaces, inserted in one batch below: building a validated
            # SQLModel object per paper would cost more than all the rest of the ingest.
            paper = SimpleNamespace(source=source, first_seen=now, **_fields(record))
            fresh.append(paper)
            stats.new += 1
        elif _update(paper, record):
            if isinstance(paper, Paper):
                session.add(paper)
                stats.updated += 1
        else:
            stats.unchanged += 1
        if paper.arxiv_id:
            by_arxiv[paper.arxiv_id] = paper
        by_title.setdefault(paper.title_key, paper)
    if fresh:
        session.execute(insert(Paper), [vars(p) for p in fresh])
    return stats


def _fields(record: PaperRecord) -> dict:
    return {
        "arxiv_id": record.arxiv_id,
        "title_key": record.title_key,
        "title": record.title,
        "abstract": record.abstract,
        "authors": record.authors,
        "categories": record.categories,
        "published": record.published,
        "updated": record.updated,
        "version": record.version,
        "url": record.url,
        "pdf_url": record.pdf_url,
        "popularity": record.popularity,
        "tldr": tldr(record.abstract),
        "terms": stored_tokens(record.title, record.abstract, record.authors),
    }


def _update(paper: Paper | SimpleNamespace, record: PaperRecord) -> bool:
    """Bring `paper` up to date with `record`; True when anything changed."""
    older = record.version is not None and paper.version is not None and record.version < paper.version
    # A title-only entry (a trending page) matched to an arXiv paper adds what it knows but does
    # not rewrite the paper's own text.
    older = older or bool(paper.arxiv_id and not record.arxiv_id)
    changes: dict = {}
    if record.arxiv_id and not paper.arxiv_id:
        changes["arxiv_id"] = record.arxiv_id
    if not older:
        if record.title and record.title != paper.title:
            changes["title"] = record.title
            changes["title_key"] = record.title_key
        if record.abstract and record.abstract != paper.abstract:
            changes["abstract"] = record.abstract
            changes["tldr"] = tldr(record.abstract)
        for name in ("authors", "categories"):
            if getattr(record, name) and getattr(record, name) != getattr(paper, name):
                changes[name] = getattr(record, name)
        if record.version is not None and record.version != paper.version:
            changes["version"] = record.version
        if record.updated and (paper.updated is None or record.updated > paper.updated):
            changes["updated"] = record.updated
    if record.published and (paper.published is None or record.published < paper.published):
        changes["published"] = record.published  # the first announcement, whichever listing was read first
    for name in ("url", "pdf_url"):
        if getattr(record, name) and not getattr(paper, name):
            changes[name] = getattr(record, name)
    if record.popularity is not None and record.popularity != paper.popularity:
        changes["popularity"] = record.popularity
    if changes.keys() & {"title", "abstract", "authors"}:
        changes["terms"] = stored_tokens(*(changes.get(name, getattr(paper, name)) for name in ("title", "abstract", "authors")))
    for name, value in changes.items():
        setattr(paper, name, value)
    return bool(changes)
