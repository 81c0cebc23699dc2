"""The ledger: every change of a digest's state, through one transition table, each a compare-and-set.

A digest goes pending -> sending -> sent, or failed (refused for good), or deferred (still
refused after the retries; the next run tries again); one left `sending` by a run that died is
found sent (in the outbox), given back to `pending`, or marked unknown. `TRANSITIONS` lists every
move allowed; a move it does not list is refused with `IllegalTransition` before the database is
touched.

Every write is `UPDATE … WHERE id = … AND status = <the state the run read>`: the row count says
whether this run won. A run that loses (another process moved the digest first) is told so and
leaves the digest alone, which is what makes two runs unable to deliver the same digest. The
claim that creates a digest is an insert that skips an existing (subscriber, local date), the
unique constraint doing for a new row what the compare-and-set does for an existing one.

The bounce policy lives here because a bounce is recorded in the same transaction as the state
it explains: `BouncePolicy` says what a refusal means for the digest and for the address, and how
many refusals in a row switch an address off.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from sqlalchemy import bindparam, insert, text, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from ..coordination import process_name
from ..db import Database, chunks, upsert_rows
from ..mail.transports import DeliveryError
from ..models import Digest, DigestItem, DigestStatus, Subscriber, utcnow
from .pool import LetterItem
from .select import Selection

log = logging.getLogger(__name__)

S = DigestStatus
#: From each state (None: no digest yet), the states a digest may move to. Nothing else is written.
TRANSITIONS: Mapping[DigestStatus | None, frozenset[DigestStatus]] = MappingProxyType({
    None: frozenset({S.PENDING, S.EMPTY}),  # claimed with its items, or recorded as empty
    S.PENDING: frozenset({S.SENDING, S.FAILED}),  # handed to a transport; or its message could not be made
    S.DEFERRED: frozenset({S.SENDING, S.FAILED}),  # tried again by the next run
    S.FAILED: frozenset({S.SENDING, S.FAILED}),  # tried again only when asked (`--retry-failed`)
    S.UNKNOWN: frozenset({S.SENDING, S.FAILED}),  # sent again only when asked (`--resend-unknown`)
    S.SENDING: frozenset({S.SENT, S.FAILED, S.DEFERRED, S.UNKNOWN, S.PENDING}),  # delivered, refused, in doubt, or given back
    S.SENT: frozenset(),
    S.EMPTY: frozenset(),
})
del S

#: A digest left `sending` longer than this by a run on another machine counts as interrupted.
SENDING_LEASE = dt.timedelta(minutes=30)


class IllegalTransition(ValueError):
    """A move the transition table does not allow: a bug in the caller, never written."""

    def __init__(self, digest_id: int | None, old: DigestStatus | None, new: DigestStatus) -> None:
        allowed = ", ".join(sorted(TRANSITIONS.get(old, ()))) or "nothing"
        super().__init__(f"digest {digest_id}: {old or 'no digest'} -> {new} is not allowed (from {old or 'no digest'}: {allowed})")
        self.digest_id, self.old, self.new = digest_id, old, new


def check(old: DigestStatus | None, new: DigestStatus, digest_id: int | None = None) -> None:
    """Refuse a move `TRANSITIONS` does not list."""
    if new not in TRANSITIONS.get(old, frozenset()):
        raise IllegalTransition(digest_id, old, new)


@dataclass(frozen=True)
class BouncePolicy:
    """What a refusal means for the digest and for its address.

    Only a refusal that blames the address (SMTP 5xx on the recipient) counts as a bounce; a fault
    of the server, the session or the outbox is nobody's bounce. `limit` bounces in a row switch
    the address off; one digest delivered sets the count back to zero."""

    limit: int = 3

    @staticmethod
    def state_after(exc: DeliveryError) -> DigestStatus:
        """Failed when trying again cannot help and the recipient is to blame, else deferred."""
        return DigestStatus.FAILED if exc.permanent and not exc.server else DigestStatus.DEFERRED

    @staticmethod
    def is_bounce(exc: DeliveryError) -> bool:
        return exc.bounce and not exc.server

    def record(self, session: Session, subscriber_id: int, reason: str | None) -> None:
        """One bounce more for the address; switched off at `limit`."""
        row = session.get(Subscriber, subscriber_id)
        row.bounces += 1
        if row.bounces >= self.limit:
            row.active = False
            row.disabled_reason = f"bounced {row.bounces} times in a row; last: {reason}"
            log.warning("%s switched off: %s", row.email, row.disabled_reason)
        session.add(row)

    @staticmethod
    def forgive(session: Session, subscriber_ids: Collection[int]) -> None:
        """A digest delivered: the addresses' bounces in a row start again from zero."""
        for part in chunks(list(subscriber_ids)):
            session.execute(update(Subscriber).where(col(Subscriber.id).in_(part), Subscriber.bounces > 0).values(bounces=0))


class Ledger:
    """Reads and writes digests' states for one run (`holder` marks what it begins sending)."""

    def __init__(self, db: Database, clock: Callable[[], dt.datetime] = utcnow, holder: str | None = None, bounces: BouncePolicy | None = None) -> None:
        self.db = db
        self.clock = clock
        self.holder = holder or process_name()
        self.bounces = bounces or BouncePolicy()

    # -- reading ----------------------------------------------------------------------------

    def digests(self, keys: Iterable[tuple[int, dt.date]]) -> dict[tuple[int, dt.date], Digest]:
        """The stored digests of (subscriber id, local date) pairs, read now."""
        by_day: dict[dt.date, list[int]] = {}
        for subscriber_id, day in keys:
            by_day.setdefault(day, []).append(subscriber_id)
        found: dict[tuple[int, dt.date], Digest] = {}
        with self.db.session() as session:
            for day, ids in by_day.items():
                for part in chunks(ids):
                    for digest in session.exec(select(Digest).where(Digest.local_date == day, col(Digest.subscriber_id).in_(part))):
                        found[(digest.subscriber_id, day)] = digest
        return found

    # -- creating ---------------------------------------------------------------------------

    def claim_many(self, selections: Sequence[Selection]) -> list[tuple[int, tuple[LetterItem, ...]] | None]:
        """Record the digests of a batch (pending, or empty) and their items in one transaction:
        (digest id, items) of each, or None for one that exists already (another run claimed it)."""
        now = self.clock()
        for selection in selections:
            check(None, DigestStatus.PENDING if selection.ranked else DigestStatus.EMPTY)
        rows = [
            {
                "subscriber_id": s.subscriber.id, "local_date": s.local_date, "window_start": s.window_start, "window_end": s.window_end,
                "status": DigestStatus.PENDING if s.ranked else DigestStatus.EMPTY,
                "reason": None if s.ranked else s.empty_reason, "attempts": 0, "created_at": now,
            }
            for s in selections
        ]
        reasons = [[ranked.reason for ranked in s.ranked] for s in selections]
        with self.db.transaction() as session:
            ids = _insert_new_digests(session, rows)
            item_rows = [
                (ids[s.subscriber.id], paper.id, rank, ranked.score, reason)
                for s, said in zip(selections, reasons) if s.subscriber.id in ids
                for rank, (ranked, paper, reason) in enumerate(zip(s.ranked, s.papers, said), start=1)
            ]
            item_ids = _insert_items(session, item_rows, list(ids.values()))
        claims: list[tuple[int, tuple[LetterItem, ...]] | None] = []
        for selection, row, said in zip(selections, rows, reasons):
            digest_id = ids.get(selection.subscriber.id)
            if digest_id is None:
                log.info("digest of %s for %s was claimed by another run", selection.subscriber.email, selection.local_date)
                claims.append(None)
                continue
            if not selection.ranked:
                log.info("no digest for %s on %s: %s", selection.subscriber.email, selection.local_date, row["reason"])
            items = tuple(LetterItem(item_ids[(digest_id, rank)], rank, reason) for rank, reason in enumerate(said, start=1))
            claims.append((digest_id, items))
        return claims

    # -- moving -----------------------------------------------------------------------------

    def move(self, digest_id: int, old: DigestStatus, new: DigestStatus, *, reason: str | None = None, sent_at: dt.datetime | None = None,
             message_id: str | None = None, subscriber_id: int | None = None, bounced: bool = False) -> bool:
        """Move one digest from `old` to `new` unless another run moved it first (then False).

        To `sending`: marked as this run's, since now, one attempt more. To `sent`: the address's
        bounces forgotten. `bounced`: one bounce more for the address, in the same transaction."""
        check(old, new, digest_id)
        values = self._values(new, reason=reason, sent_at=sent_at, message_id=message_id)
        with self.db.transaction() as session:
            result = session.execute(update(Digest).where(Digest.id == digest_id, Digest.status == old).values(**values))
            if result.rowcount != 1:
                log.info("digest %d moved on in another run", digest_id)
                return False
            if subscriber_id is not None and bounced:
                self.bounces.record(session, subscriber_id, reason)
            elif subscriber_id is not None and new == DigestStatus.SENT:
                self.bounces.forgive(session, [subscriber_id])
        return True

    def move_many(self, moves: Sequence[tuple[int, DigestStatus]], new: DigestStatus, *, sent_at: dt.datetime | None = None,
                  message_ids: Mapping[int, str] | None = None, subscriber_ids: Mapping[int, int] | None = None) -> set[int]:
        """Move each (digest id, state it was read in) to `new` in one transaction: the ids that
        moved (the others were moved on by another run). `message_ids`: recorded for those that
        move; `subscriber_ids` {digest id: subscriber id}: to `sent`, their bounces forgotten."""
        for digest_id, old in moves:
            check(old, new, digest_id)
        values = self._values(new, sent_at=sent_at)
        moved: set[int] = set()
        with self.db.transaction() as session:
            for old in {old for _, old in moves}:
                for part in chunks([digest_id for digest_id, state in moves if state == old]):
                    statement = update(Digest).where(col(Digest.id).in_(part), Digest.status == old).values(**values).returning(Digest.id)
                    moved.update(session.execute(statement).scalars())
            if moved and message_ids:
                table = Digest.__table__
                session.connection().execute(
                    update(table).where(table.c.id == bindparam("digest")).values(message_id=bindparam("message")),
                    [{"digest": digest_id, "message": message_ids[digest_id]} for digest_id, _ in moves if digest_id in moved],
                )
            if moved and subscriber_ids and new == DigestStatus.SENT:
                self.bounces.forgive(session, [subscriber_ids[digest_id] for digest_id in moved if digest_id in subscriber_ids])
        for digest_id, _ in moves:
            if digest_id not in moved:
                log.info("digest %d moved on in another run", digest_id)
        return moved

    def _values(self, new: DigestStatus, *, reason: str | None = None, sent_at: dt.datetime | None = None, message_id: str | None = None) -> dict:
        values: dict = {"status": new}
        if new == DigestStatus.SENDING:  # whose, since when, one attempt more
            values.update(claimed_by=self.holder, sending_since=self.clock(), attempts=Digest.attempts + 1)
        if reason is not None:
            values["reason"] = reason
        if sent_at is not None:
            values["sent_at"] = sent_at
        if message_id is not None:
            values["message_id"] = message_id
        return values


def interrupted(digest: Digest, now: dt.datetime, in_flight: Collection[int], gone: Collection[str] = frozenset()) -> bool:
    """Whether the run that began sending `digest` is gone: its process, on this machine, or its
    lease (`gone`: holders whose send leases ran out; else the digest's own `SENDING_LEASE`).

    One process runs one send at a time (`digest send`; `digest serve` holds a lock), so a digest
    this process began and the current run does not hold (`in_flight`) was cut short."""
    if digest.claimed_by in gone:
        return True
    host, _, pid = (digest.claimed_by or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        if int(pid) == os.getpid():
            return digest.id not in in_flight
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
    return digest.sending_since is None or now - digest.sending_since > SENDING_LEASE


def _insert_items(session: Session, rows: list[tuple], digest_ids: list[int]) -> dict[tuple[int, int], int]:
    """Insert the items `rows` of the new digests `digest_ids`, each (digest id, paper id, rank,
    score, reason): {(digest id, rank): item id}.

    On PostgreSQL through psycopg 3 (the `postgres` extra) the ids are drawn from the table's
    sequence in one query and the rows go in by COPY, the server's bulk load (one sender, 20,000
    subscribers, ten items a digest: its claims took 12.4 s of wall time with an executemany of
    one INSERT a row and the ids read back after, 7.8 s this way). On SQLite the rows go to the
    driver's executemany as they are: SQLAlchemy's executemany of the same INSERT turns every row
    into a dict of bound parameters and back (at 10,000 subscribers, 100,000 items: the claims
    took 5.0-5.3 CPU s that way, 3.8-4.0 this way). Elsewhere, another driver named in the URL
    included, SQLAlchemy inserts them without RETURNING (with it, it would write a statement of a
    thousand rows' values at a time). Except with COPY, the ids are read back after."""
    if not rows:
        return {}
    table = DigestItem.__table__
    connection = session.connection()
    columns = ("digest_id", "paper_id", "rank", "score", "reason")
    dialect = connection.dialect
    if dialect.name == "postgresql" and dialect.driver == "psycopg":  # COPY as psycopg 3 offers it
        sequence = text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)")
        item_ids = connection.execute(sequence, {"table": table.name, "n": len(rows)}).scalars().all()
        with connection.connection.driver_connection.cursor() as cursor:
            with cursor.copy(f"COPY {table.name} (id, {', '.join(columns)}) FROM STDIN") as copy:
                for item_id, row in zip(item_ids, rows):
                    copy.write_row((item_id, *row))
        return {(row[0], row[2]): item_id for item_id, row in zip(item_ids, rows)}
    if dialect.name == "sqlite" and dialect.driver == "pysqlite":  # the driver's own placeholders
        connection.exec_driver_sql(f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows)
    else:
        connection.execute(insert(table), [dict(zip(columns, row)) for row in rows])
    found = {}
    for part in chunks(digest_ids):
        for item_id, digest_id, rank in connection.execute(select(table.c.id, table.c.digest_id, table.c.rank).where(table.c.digest_id.in_(part))):
            found[(digest_id, rank)] = item_id
    return found


def _insert_new_digests(session: Session, rows: list[dict]) -> dict[int, int]:
    """Insert the digests of `rows` that do not exist yet: {subscriber id: new digest id}.

    SQLite and PostgreSQL skip an existing (subscriber, date) within the one statement (ON
    CONFLICT DO NOTHING); elsewhere each row is tried in a savepoint of its own."""
    if not rows:
        return {}
    table = Digest.__table__
    connection = session.connection()
    bulk = upsert_rows(connection, table, rows)
    if bulk is not None:
        statement, parameters = bulk
        statement = statement.on_conflict_do_nothing(index_elements=["subscriber_id", "local_date"])
        result = connection.execute(statement.returning(table.c.id, table.c.subscriber_id), parameters)
        return {subscriber_id: digest_id for digest_id, subscriber_id in result}
    ids = {}
    for row in rows:
        try:
            with session.begin_nested():
                ids[row["subscriber_id"]] = connection.execute(insert(table).returning(table.c.id), row).scalar_one()
        except IntegrityError:
            pass
    return ids
