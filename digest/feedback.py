"""Feedback: what subscribers do with their digests, recorded, and read back as training evidence.

Events are clicks, thumbs up and down, unsubscribes and views of a digest in the browser. Every
request is stored with its time; a repeat of the same kind on the same item is flagged (decided
atomically with the insert, however many requests arrive at once), so that training counts it once. An unsubscribe is final: the subscriber is switched off and no later
profile sync switches them on again.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlmodel import Session, col, select

from .db import Database, chunks
from .models import Digest, DigestItem, DigestStatus, FeedbackEvent, FeedbackKind, Paper, Subscriber, utcnow

log = logging.getLogger(__name__)


@dataclass
class ItemContext:
    """A digest item with everything a link needs to answer."""

    item: DigestItem
    digest: Digest
    subscriber: Subscriber
    paper: Paper


def load_item(db: Database, item_id: int) -> ItemContext | None:
    with db.session() as session:
        row = session.exec(
            select(DigestItem, Digest, Subscriber, Paper)
            .join(Digest, col(Digest.id) == DigestItem.digest_id)
            .join(Subscriber, col(Subscriber.id) == Digest.subscriber_id)
            .join(Paper, col(Paper.id) == DigestItem.paper_id)
            .where(DigestItem.id == item_id)
        ).first()
    return ItemContext(*row) if row else None


def load_digest(db: Database, digest_id: int) -> tuple[Digest, Subscriber] | None:
    with db.session() as session:
        row = session.exec(
            select(Digest, Subscriber).join(Subscriber, col(Subscriber.id) == Digest.subscriber_id).where(Digest.id == digest_id)
        ).first()
    return (row[0], row[1]) if row else None


def _record(session: Session, kind: FeedbackKind, subscriber_id: int, digest_id: int, item_id: int | None, paper_id: int | None, now: dt.datetime) -> FeedbackEvent:
    """Store an event, flagged `repeat` when one of its kind on the same item (or digest) exists.

    The check and the insert are one atomic step: the caller's transaction holds SQLite's write
    lock from its start (`transaction(immediate=True)`), and on PostgreSQL the item's (or the
    digest's) row is locked first, so two requests at once never both count as the first."""
    parent = select(DigestItem.id).where(DigestItem.id == item_id) if item_id is not None else select(Digest.id).where(Digest.id == digest_id)
    session.exec(parent.with_for_update()).first()
    query = select(FeedbackEvent.id).where(FeedbackEvent.kind == kind.value, FeedbackEvent.subscriber_id == subscriber_id)
    query = query.where(FeedbackEvent.digest_item_id == item_id) if item_id is not None else query.where(FeedbackEvent.digest_id == digest_id)
    repeat = session.exec(query.limit(1)).first() is not None
    event = FeedbackEvent(
        subscriber_id=subscriber_id, digest_id=digest_id, digest_item_id=item_id, paper_id=paper_id,
        kind=kind.value, repeat=repeat, created_at=now,
    )
    session.add(event)
    return event


def record_item_event(db: Database, context: ItemContext, kind: FeedbackKind, now: dt.datetime | None = None) -> FeedbackEvent:
    """A click, thumbs up or thumbs down on one item of a digest."""
    with db.transaction(immediate=True) as session:
        event = _record(session, kind, context.subscriber.id, context.digest.id, context.item.id, context.paper.id, now or utcnow())
    log.info("%s on item %d (%s)%s", kind.value, context.item.id, context.subscriber.email, " again" if event.repeat else "")
    return event


def record_view(db: Database, digest: Digest, now: dt.datetime | None = None) -> FeedbackEvent:
    with db.transaction(immediate=True) as session:
        return _record(session, FeedbackKind.VIEW, digest.subscriber_id, digest.id, None, None, now or utcnow())


def unsubscribe(db: Database, digest: Digest, now: dt.datetime | None = None) -> bool:
    """End the subscription of the digest's subscriber; False when it had ended already."""
    now = now or utcnow()
    with db.transaction(immediate=True) as session:
        subscriber = session.get(Subscriber, digest.subscriber_id, with_for_update=True)
        if subscriber.unsubscribed_at is not None:
            return False
        subscriber.unsubscribed_at = now
        subscriber.active = False
        subscriber.updated_at = now
        session.add(subscriber)
        _record(session, FeedbackKind.UNSUBSCRIBE, subscriber.id, digest.id, None, None, now)
    log.info("%s unsubscribed", subscriber.email)
    return True


# --- training evidence ---------------------------------------------------------------------------

POSITIVE = {FeedbackKind.CLICK.value, FeedbackKind.UP.value}


@dataclass
class Evidence:
    """What one subscriber's feedback says about papers, for training their model."""

    positive: list[int] = field(default_factory=list)  # paper ids opened or liked
    negative: list[int] = field(default_factory=list)  # paper ids marked "less like this"
    shown: list[int] = field(default_factory=list)  # shown in a digest they used, not opened
    last_event: dt.datetime | None = None

    @property
    def size(self) -> int:
        return len(self.positive) + len(self.negative)


def gather_evidence(db: Database, subscriber_ids: Iterable[int] | None = None) -> dict[int, Evidence]:
    """Each subscriber's evidence. A thumbs down outweighs a click on the same paper; the latest
    thumb wins. Items count as shown-but-not-opened only in digests where the subscriber acted on
    some item, since a digest never looked at says nothing about its papers."""
    wanted = sorted(set(subscriber_ids)) if subscriber_ids is not None else None
    query = select(FeedbackEvent).where(col(FeedbackEvent.digest_item_id).is_not(None))
    with db.session() as session:
        if wanted is None:
            events = list(session.exec(query))
        else:
            events = [e for part in chunks(wanted) for e in session.exec(query.where(col(FeedbackEvent.subscriber_id).in_(part)))]
        events.sort(key=lambda e: (e.created_at, e.id))
        engaged = sorted({e.digest_id for e in events})
        shown_rows = [
            row
            for part in chunks(engaged)
            for row in session.exec(
                select(Digest.subscriber_id, DigestItem.paper_id)
                .join(DigestItem, col(DigestItem.digest_id) == Digest.id)
                .where(col(Digest.id).in_(part), Digest.status == DigestStatus.SENT.value)
            )
        ]
    verdict: dict[int, dict[int, str]] = defaultdict(dict)
    last: dict[int, dt.datetime] = {}
    for event in events:
        papers = verdict[event.subscriber_id]
        if event.kind == FeedbackKind.DOWN.value or (event.kind == FeedbackKind.UP.value):
            papers[event.paper_id] = event.kind  # the latest thumb wins
        elif event.kind == FeedbackKind.CLICK.value and papers.get(event.paper_id) != FeedbackKind.DOWN.value:
            papers.setdefault(event.paper_id, event.kind)
        last[event.subscriber_id] = event.created_at
    evidence: dict[int, Evidence] = {}
    for subscriber_id, papers in verdict.items():
        evidence[subscriber_id] = Evidence(
            positive=[p for p, kind in papers.items() if kind in POSITIVE],
            negative=[p for p, kind in papers.items() if kind == FeedbackKind.DOWN.value],
            last_event=last.get(subscriber_id),
        )
    for subscriber_id, paper_id in shown_rows:
        if paper_id not in verdict[subscriber_id]:
            evidence[subscriber_id].shown.append(paper_id)
    return evidence
