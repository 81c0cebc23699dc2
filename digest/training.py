"""Retraining: each subscriber's feedback turned into their stored model (`SubscriberModel`).

The model is Rocchio's relevance feedback: papers opened or liked are positive examples, papers
marked "less like this" negative ones, and papers shown in a digest the subscriber used but not
opened are weak negatives. The ranking turns the examples into a vector of the current text
model and blends it with the stated interests by how much evidence there is (`ranking.Ranker`),
so that a new subscriber is served by their interests alone and evidence gradually takes over.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from sqlmodel import col, select

from .db import Database, chunks
from .feedback import Evidence, gather_evidence
from .models import SubscriberModel, utcnow
from .ranking import History

log = logging.getLogger(__name__)

#: How much each kind of evidence weighs in a subscriber's model.
CLICK_WEIGHT = 1.0
NEGATIVE_WEIGHT = -1.0
SHOWN_WEIGHT = -0.15
#: The most recent shown-but-not-opened papers kept: older ones say little about today's taste.
MAX_SHOWN = 200


def history_from_evidence(evidence: Evidence) -> History:
    """Examples with weights: opened or liked +1, turned down -1, shown but not opened -0.15."""
    examples: dict[int, float] = {}
    for paper in evidence.shown[-MAX_SHOWN:]:
        examples[paper] = SHOWN_WEIGHT
    for paper in evidence.negative:
        examples[paper] = NEGATIVE_WEIGHT
    for paper in evidence.positive:
        examples[paper] = CLICK_WEIGHT
    return History(tuple(examples), tuple(examples.values()), len(evidence.positive))


def history_from_examples(examples: list, positives: int) -> History:
    """A stored model's examples ([[paper id, weight], ...]) as the ranker's `History`."""
    return History(tuple(int(p) for p, _ in examples), tuple(float(w) for _, w in examples), positives)


@dataclass
class RetrainReport:
    trained: list[int] = field(default_factory=list)
    unchanged: int = 0


def retrain(db: Database, subscriber_ids: Iterable[int] | None = None, force: bool = False, now: dt.datetime | None = None) -> RetrainReport:
    """Rebuild the models of subscribers with feedback newer than their model (or all, `force`)."""
    now = now or utcnow()
    report = RetrainReport()
    evidence = gather_evidence(db, subscriber_ids)
    with db.transaction() as session:
        existing = {
            m.subscriber_id: m
            for part in chunks(list(evidence))
            for m in session.exec(select(SubscriberModel).where(col(SubscriberModel.subscriber_id).in_(part)))
        }
        for subscriber_id, found in evidence.items():
            model = existing.get(subscriber_id)
            if model is not None and not force and model.evidence_until is not None and found.last_event is not None and found.last_event <= model.evidence_until:
                report.unchanged += 1
                continue
            history = history_from_evidence(found)
            model = model or SubscriberModel(subscriber_id=subscriber_id)
            model.examples = [[p, w] for p, w in zip(history.papers, history.weights)]
            model.positives = len(found.positive)
            model.negatives = len(found.negative)
            model.evidence_until = found.last_event
            model.trained_at = now
            session.add(model)
            report.trained.append(subscriber_id)
    log.info("retrained %d subscriber models (%d unchanged)", len(report.trained), report.unchanged)
    return report


def _stored_examples(db: Database, subscriber_ids: Iterable[int]) -> Iterator[tuple[int, list, int]]:
    """(subscriber id, examples, positives) of the stored models of `subscriber_ids`, row by row."""
    table = SubscriberModel.__table__
    ids = list(subscriber_ids)
    with db.engine.connect() as connection:
        for part in chunks(ids):
            yield from connection.execute(select(table.c.subscriber_id, table.c.examples, table.c.positives).where(table.c.subscriber_id.in_(part)))


def load_histories(db: Database, subscriber_ids: Iterable[int]) -> dict[int, History]:
    return {subscriber: history_from_examples(examples, positives) for subscriber, examples, positives in _stored_examples(db, subscriber_ids)}


def history_papers(db: Database, subscriber_ids: Iterable[int]) -> set[int]:
    """Every paper in the stored models of `subscriber_ids`, without holding their histories
    (a daily run loads those a batch at a time)."""
    return {int(p) for _, examples, _ in _stored_examples(db, subscriber_ids) for p, _ in examples}


def community_clicks(db: Database) -> dict[int, list[int]]:
    """The papers each subscriber opened or liked, from the stored models: "readers like you"."""
    with db.session() as session:
        rows = session.exec(select(SubscriberModel.subscriber_id, SubscriberModel.examples).where(SubscriberModel.positives > 0)).all()
    return {subscriber: [int(p) for p, w in examples if w > 0] for subscriber, examples in rows}
