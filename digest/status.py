"""What `digest status` shows: today's digests by state, the last ingest of each source, and what
went wrong lately (digests failed, deferred or of unknown fate; addresses switched off)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import func
from sqlmodel import col, select

from .db import Database
from .models import Digest, DigestStatus, IngestRun, Subscriber, utcnow

PROBLEMS = (DigestStatus.FAILED, DigestStatus.DEFERRED, DigestStatus.UNKNOWN, DigestStatus.SENDING)


@dataclass
class Status:
    #: (local date, state) -> how many digests; the local dates that are "today" somewhere now.
    digests: dict[tuple[dt.date, str], int] = field(default_factory=dict)
    ingests: list[IngestRun] = field(default_factory=list)
    problems: list[tuple[str, Digest]] = field(default_factory=list)
    switched_off: list[Subscriber] = field(default_factory=list)
    active: int = 0


def status(db: Database, now: dt.datetime | None = None, days: int = 7) -> Status:
    now = now or utcnow()
    today = now.date()
    # Between UTC-12 and UTC+14, "today" somewhere is yesterday, today or tomorrow in UTC.
    dates = [today - dt.timedelta(days=1), today, today + dt.timedelta(days=1)]
    result = Status()
    with db.session() as session:
        rows = session.exec(
            select(Digest.local_date, Digest.status, func.count()).where(col(Digest.local_date).in_(dates)).group_by(Digest.local_date, Digest.status)
        ).all()
        result.digests = {(d, s): n for d, s, n in rows}
        latest = select(IngestRun.source, func.max(IngestRun.id).label("last")).group_by(IngestRun.source).subquery()
        result.ingests = list(session.exec(select(IngestRun).join(latest, IngestRun.id == latest.c.last).order_by(IngestRun.source)))
        since = today - dt.timedelta(days=days)
        result.problems = list(session.exec(
            select(Subscriber.email, Digest).join(Subscriber, col(Subscriber.id) == Digest.subscriber_id)
            .where(col(Digest.status).in_(PROBLEMS), Digest.local_date >= since).order_by(col(Digest.local_date).desc())
        ).all())
        result.switched_off = list(session.exec(select(Subscriber).where(col(Subscriber.disabled_reason).is_not(None))))
        result.active = session.exec(select(func.count()).select_from(Subscriber).where(Subscriber.active == True)).one()  # noqa: E712
    return result
