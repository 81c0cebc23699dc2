"""Feedback: what subscribers do with their digests, recorded, and read back as training evidence.

Events are clicks, thumbs up and down (and their undo), unsubscribes, resubscribes and views of a
digest in the browser. Every request is stored with its time; a repeat of the same kind on the
same item is flagged (decided atomically with the insert, however many requests arrive at once),
so that training counts it once, and an undo takes the item's thumbs out of training altogether.
An unsubscribe is final against profile syncs: the subscriber is switched off and no later sync
switches them on again; only the subscriber can, by resubscribing.
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


def _record(session: Session, kind: FeedbackKind, subscriber_id: int, digest_id: int | None, item_id: int | None, paper_id: int | None, now: dt.datetime) -> FeedbackEvent:
    """Store an event, flagged `repeat` when one of its kind on the same item (or digest, or for a
    subscriber's own event such as a resubscribe, the subscriber) exists.

    The check and the insert are one atomic step: the caller's transaction holds SQLite's write
    lock from its start (`transaction(immediate=True)`), and on PostgreSQL the item's (or the
    digest's, or the subscriber's) row is locked first, so two requests at once never both count
    as the first."""
    if item_id is not None:
        parent = select(DigestItem.id).where(DigestItem.id == item_id)
    elif digest_id is not None:
        parent = select(Digest.id).where(Digest.id == digest_id)
    else:
        parent = select(Subscriber.id).where(Subscriber.id == subscriber_id)
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


def undo_thumb(db: Database, context: ItemContext, now: dt.datetime | None = None) -> FeedbackEvent:
    """Take back the thumbs up or down given to one item: training counts neither (`gather_evidence`)."""
    return record_item_event(db, context, FeedbackKind.UNDO, now)


def unsubscribe(db: Database, digest: Digest, now: dt.datetime | None = None) -> bool:
    """End the subscription of the digest's subscriber; False when it had ended already."""
    return unsubscribe_subscriber(db, digest.subscriber_id, digest.id, now)


def unsubscribe_subscriber(db: Database, subscriber_id: int, digest_id: int | None = None, now: dt.datetime | None = None) -> bool:
    """End a subscription (from a digest's link, or the preferences page); False when it had ended already."""
    now = now or utcnow()
    with db.transaction(immediate=True) as session:
        subscriber = session.get(Subscriber, subscriber_id, with_for_update=True)
        if subscriber.unsubscribed_at is not None:
            return False
        subscriber.unsubscribed_at = now
        subscriber.active = False
        subscriber.updated_at = now
        session.add(subscriber)
        _record(session, FeedbackKind.UNSUBSCRIBE, subscriber.id, digest_id, None, None, now)
    log.info("%s unsubscribed", subscriber.email)
    return True


def resubscribe(db: Database, subscriber_id: int, active: bool = True, now: dt.datetime | None = None) -> bool:
    """The subscriber's own undo of their unsubscribe (from the preferences page); `active` is what
    their profile says. False when they were subscribed."""
    now = now or utcnow()
    with db.transaction(immediate=True) as session:
        subscriber = session.get(Subscriber, subscriber_id, with_for_update=True)
        if subscriber.unsubscribed_at is None:
            return False
        subscriber.unsubscribed_at = None
        subscriber.active = active and subscriber.disabled_reason is None
        subscriber.updated_at = now
        session.add(subscriber)
        _record(session, FeedbackKind.RESUBSCRIBE, subscriber.id, None, None, None, now)
    log.info("%s resubscribed", subscriber.email)
    return True


def load_subscriber(db: Database, subscriber_id: int) -> Subscriber | None:
    with db.session() as session:
        return session.get(Subscriber, subscriber_id)


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
        last = {e.subscriber_id: e.created_at for e in events}  # an undo is news for the model too
        undone = _undone(events)
        events = [e for e in events if e.id not in undone]
        engaged = sorted({e.digest_id for e in events})
        shown_rows = [
            row
            for part in chunks(engaged)
            for row in session.exec(
                select(Digest.subscriber_id, DigestItem.paper_id)
                .join(DigestItem, col(DigestItem.digest_id) == Digest.id)
                .where(col(Digest.id).in_(part), Digest.status == DigestStatus.SENT)
            )
        ]
    # Everyone with events gets evidence, if only that all of it was undone.
    verdict: dict[int, dict[int, str]] = {subscriber_id: {} for subscriber_id in last}
    for event in events:
        papers = verdict[event.subscriber_id]
        if event.kind == FeedbackKind.DOWN.value or (event.kind == FeedbackKind.UP.value):
            papers[event.paper_id] = event.kind  # the latest thumb wins
        elif event.kind == FeedbackKind.CLICK.value and papers.get(event.paper_id) != FeedbackKind.DOWN.value:
            papers.setdefault(event.paper_id, event.kind)
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


def _undone(events: list[FeedbackEvent]) -> set[int]:
    """The ids of undo events and of the thumbs each takes back: every thumb on the same item
    since the item's previous undo (a reloaded confirmation page records the thumb twice)."""
    thumbs = (FeedbackKind.UP.value, FeedbackKind.DOWN.value)
    pending: dict[tuple[int, int | None], list[int]] = defaultdict(list)
    undone: set[int] = set()
    for event in events:
        key = (event.subscriber_id, event.digest_item_id)
        if event.kind in thumbs:
            pending[key].append(event.id)
        elif event.kind == FeedbackKind.UNDO.value:
            undone.add(event.id)
            undone.update(pending.pop(key, []))
    return undone
