"""What the ranking reads from the database, in batches: the stored models of the nightly
retrain (`training`) as `History`, the papers they name, every subscriber's opened papers (for
"readers like you"), and the recent corpus a text model is fitted on. One query per batch of
subscribers (`db.chunks`), never one per subscriber."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator

from sqlmodel import col, select

from ..db import Database, chunks
from ..models import Paper, SubscriberModel
from .readers import History

#: Stored models of an older kind (version 0: raw evidence, before learning) are rebuilt.
MODEL_VERSION = 1

def history_from_examples(examples: list, positives: int, background: float = 0.0, version: int = 0) -> History:
    """A stored model ([[paper id, weight], ...]) as the ranker's `History`: learned when it was
    fitted (this version, with positives), else raw evidence."""
    learned = version >= MODEL_VERSION and positives > 0
    return History(tuple(int(p) for p, _ in examples), tuple(float(w) for _, w in examples), positives, float(background or 0.0), learned)


def recent_corpus(db: Database, since: dt.datetime, until: dt.datetime, also: Iterable[int] = (),
                  announced: tuple[dt.datetime, dt.datetime] | None = None) -> list[Paper]:
    """The papers first seen in [since, until]; then, with `announced` = (low, high], the older
    papers announced in that window (a digest of a past date: an undated paper counts by when it
    was first seen); then those of `also` that are older; each part by id: what a text model is
    fitted on."""
    with db.session() as session:
        corpus = list(session.exec(
            select(Paper).where(col(Paper.first_seen) >= since, col(Paper.first_seen) <= until).order_by(Paper.id)
        ).all())
        known = {p.id for p in corpus}
        if announced is not None:
            low, high = announced
            dated = (col(Paper.published) > low) & (col(Paper.published) <= high)
            undated = col(Paper.published).is_(None) & (col(Paper.first_seen) > low) & (col(Paper.first_seen) <= high)
            older = session.exec(select(Paper).where(dated | undated, col(Paper.first_seen) < since).order_by(Paper.id)).all()
            corpus += [p for p in older if p.id not in known]
            known.update(p.id for p in older)
        wanted = sorted(set(also) - known)
        corpus += [p for part in chunks(wanted) for p in session.exec(select(Paper).where(col(Paper.id).in_(part)))]
    return corpus


def _stored_examples(db: Database, subscriber_ids: Iterable[int]) -> Iterator[tuple]:
    """(subscriber id, examples, positives, background, version) of the stored models of `subscriber_ids`, row by row."""
    table = SubscriberModel.__table__
    ids = list(subscriber_ids)
    with db.engine.connect() as connection:
        for part in chunks(ids):
            yield from connection.execute(
                select(table.c.subscriber_id, table.c.examples, table.c.positives, table.c.background, table.c.version).where(table.c.subscriber_id.in_(part))
            )


def load_histories(db: Database, subscriber_ids: Iterable[int]) -> dict[int, History]:
    return {subscriber: history_from_examples(examples, positives, background, version)
            for subscriber, examples, positives, background, version in _stored_examples(db, subscriber_ids)}


def model_papers(db: Database, subscriber_ids: Iterable[int]) -> tuple[set[int], dict[int, list[int]]]:
    """Every paper in the stored models of `subscriber_ids` (without holding their histories: a
    daily run loads those a batch at a time), and the papers each subscriber opened or liked
    ("readers like you"): one read of the stored models for both."""
    wanted = set(subscriber_ids)
    papers: set[int] = set()
    clicks: dict[int, list[int]] = {}
    table = SubscriberModel.__table__
    with db.engine.connect() as connection:
        for subscriber, examples, positives in connection.execute(select(table.c.subscriber_id, table.c.examples, table.c.positives)):
            if subscriber in wanted:
                papers.update(int(p) for p, _ in examples)
            if positives > 0:
                clicks[subscriber] = [int(p) for p, w in examples if w > 0]
    return papers, clicks
