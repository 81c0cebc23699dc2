"""How several processes against one database share the work: send leases and job runs.

**Send leases.** Any number of `digest send` / `digest serve` processes (on one machine or
many, against one PostgreSQL) split the day's subscribers: before a process ranks a batch it
takes the batch's leases in one statement (an upsert that takes a subscriber's row only when
it is free or its lease ran out); what it got is its work, the rest another process's. A
heartbeat renews its leases while it works, and they are given back when a batch is done. A
process killed mid-batch stops renewing, so its leases run out (`DIGEST_SEND_LEASE` seconds)
and a process still running, or the next run, takes the batch over; the digests it left
`sending` are judged interrupted because their holder's lease ran out.

Leases only share the work. Exactly-once still rests on the digest's own guarantees (the unique
claim per subscriber and local date, and the compare-and-set to `sending`), so a holder
wrongly thought dead (paused longer than its lease) cannot send anything twice; only the
message it had in hand can be in doubt, as with any interruption.

**Job runs.** A once-a-day job of `digest serve` (an ingest poll, the retraining) is run by the
instance that inserts its (job, scheduled time) row first; the others see the row and skip it.

Lease times are read from the real clock, never a sender's injected one (a run for another day
or a test's pinned clock must not make leases look fresh or stale), and come from each
machine's clock: the machines must agree on the time (NTP), which a scheduled daily service
needs anyway. A holder on this machine whose process is gone frees its leases at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from .db import Database, chunks, upsert, upsert_rows
from .models import JobRun, SendLease, utcnow

log = logging.getLogger(__name__)


#: The end a lease given back is set to (a lease that ran out has a real time).
RELEASED = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@dataclass
class Taken:
    """What one `SendLeases.take` got: the subscribers now this process's, and of those, how many
    it took over from each holder whose lease had run out (gone: the digests they left `sending`
    were interrupted). Leases given back are free, and their holders are not counted."""

    subscribers: set[int]
    taken_over: dict[str, int]

    @property
    def expired_holders(self) -> set[str]:
        return set(self.taken_over)


class SendLeases:
    """This process's leases on subscribers' digests (see the module docstring)."""

    def __init__(self, db: Database, holder: str, duration: dt.timedelta, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.db = db
        self.holder = holder
        self.duration = duration
        self.clock = clock
        self._lock = threading.Lock()

    def _others(self, connection: Connection, ids: list[int], now: dt.datetime) -> tuple[set[int], dict[int, str]]:
        """Of `ids`, those another process holds a live lease on, and those whose lease ran out
        ({subscriber: holder}), in one read. A live lease of a process of this machine that is
        gone is ended at once, and counts as run out."""
        table = SendLease.__table__
        rows = connection.execute(
            select(table.c.subscriber_id, table.c.holder, table.c.expires).where(
                table.c.subscriber_id.in_(ids), table.c.expires > RELEASED, table.c.holder != self.holder)
        ).all()
        live = {subscriber_id: holder for subscriber_id, holder, expires in rows if expires > now}
        ran_out = {subscriber_id: holder for subscriber_id, holder, expires in rows if expires <= now}
        dead = {holder for holder in set(live.values()) if not _alive_here(holder)}
        if dead:
            connection.execute(update(table).where(table.c.subscriber_id.in_(ids), table.c.holder.in_(dead)).values(expires=now))
            ran_out.update({subscriber_id: holder for subscriber_id, holder in live.items() if holder in dead})
            live = {subscriber_id: holder for subscriber_id, holder in live.items() if holder not in dead}
        return set(live), ran_out

    def take(self, wanted: Iterable[tuple[int, dt.date]]) -> Taken:
        """Lease each (subscriber, local date) that is free, ran out, or is this process's already."""
        wanted = sorted(set(wanted))  # one order for every process: no deadlock between two upserts
        taken = Taken(set(), {})
        if not wanted:
            return taken
        table = SendLease.__table__
        now = self.clock()
        expires = now + self.duration
        with self._lock, self.db.transaction() as session:
            connection = session.connection()
            for part in chunks(wanted, 1000):
                held, ran_out = self._others(connection, [subscriber_id for subscriber_id, _ in part], now)
                # What another process holds is not asked for: where it holds the whole part (two
                # senders walk the day in the same order), nothing is written at all.
                rows = [{"subscriber_id": s, "local_date": d, "holder": self.holder, "expires": expires} for s, d in part if s not in held]
                if not rows:
                    continue
                bulk = upsert_rows(connection, table, rows)
                if bulk is None:  # another database: one row at a time
                    got = self._take_one_by_one(connection, rows, now)
                else:
                    # The rows as parameters or arrays (`upsert_rows`), not as the statement's
                    # values: a statement of 500 rows' values is compiled anew at every call (30 ms
                    # of CPU a batch, 8 s of a sender's 100 at 100,000 subscribers).
                    statement, parameters = bulk
                    statement = statement.on_conflict_do_update(
                        index_elements=["subscriber_id"],
                        set_={"local_date": statement.excluded.local_date, "holder": statement.excluded.holder, "expires": statement.excluded.expires},
                        where=(table.c.expires <= now) | (table.c.holder == self.holder),
                    )
                    got = set(connection.execute(statement.returning(table.c.subscriber_id), parameters).scalars())
                taken.subscribers.update(got)
                for subscriber_id in got & set(ran_out):
                    taken.taken_over[ran_out[subscriber_id]] = taken.taken_over.get(ran_out[subscriber_id], 0) + 1
        return taken

    def _take_one_by_one(self, connection: Connection, rows: list[dict], now: dt.datetime) -> set[int]:
        table = SendLease.__table__
        got = set()
        for row in rows:
            changed = connection.execute(
                update(table).where(table.c.subscriber_id == row["subscriber_id"], (table.c.expires <= now) | (table.c.holder == self.holder)).values(**row)
            ).rowcount
            if not changed:
                try:
                    with connection.begin_nested():
                        connection.execute(insert(table).values(**row))
                except IntegrityError:
                    continue
            got.add(row["subscriber_id"])
        return got

    def release(self, subscriber_ids: Iterable[int]) -> None:
        """Give leases back (their batch is done, or left for whoever comes next)."""
        ids = sorted(set(subscriber_ids))
        if not ids:
            return
        table = SendLease.__table__
        with self._lock, self.db.transaction() as session:
            for part in chunks(ids):
                session.execute(update(table).where(table.c.subscriber_id.in_(part), table.c.holder == self.holder).values(expires=RELEASED))

    def renew(self) -> int:
        """Push back the end of every lease this process holds: how many."""
        table = SendLease.__table__
        now = self.clock()
        with self._lock, self.db.transaction() as session:
            return session.execute(update(table).where(table.c.holder == self.holder, table.c.expires > now).values(expires=now + self.duration)).rowcount

    def held_by_others(self, subscriber_ids: Iterable[int]) -> dict[str, int]:
        """{holder: how many of these subscribers it holds a live lease on}, other processes only."""
        table = SendLease.__table__
        now = self.clock()
        holders: dict[str, int] = {}
        with self.db.session() as session:
            for part in chunks(sorted(set(subscriber_ids))):
                for holder in session.execute(select(table.c.holder).where(table.c.subscriber_id.in_(part), table.c.expires > now, table.c.holder != self.holder)).scalars():
                    holders[holder] = holders.get(holder, 0) + 1
        return holders

    @contextlib.contextmanager
    def heartbeat(self) -> Iterator[None]:
        """Renew this process's leases every quarter of their length while the block runs."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.duration.total_seconds() / 4):
                try:
                    self.renew()
                except Exception:  # a database blip: the next beat tries again, well within the lease
                    log.warning("renewing the send leases failed", exc_info=True)

        thread = threading.Thread(target=beat, name="send-lease-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def process_name() -> str:
    """This process as a holder of leases, job runs and digests being sent: "host:pid"."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive_here(holder: str) -> bool:
    """False only for a holder ("host:pid") of this machine whose process no longer exists."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class JobRuns:
    """Once-a-day jobs of `digest serve` run by one instance of several (see the module docstring)."""

    #: A run begun this long ago and never finished (its instance died) may be taken again.
    STALE = dt.timedelta(hours=2)

    def __init__(self, db: Database, holder: str, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self.db = db
        self.holder = holder
        self.clock = clock

    def claim(self, job: str, slot: str) -> str | None:
        """Take (job, slot): None when this instance runs it, else the holder that took it."""
        table = JobRun.__table__
        now = self.clock()
        with self.db.transaction() as session:
            connection = session.connection()
            statement = upsert(connection, table)
            if statement is not None:
                statement = statement.values(job=job, slot=slot, holder=self.holder, started_at=now, finished_at=None)
                statement = statement.on_conflict_do_update(
                    index_elements=["job", "slot"],
                    set_={"holder": statement.excluded.holder, "started_at": statement.excluded.started_at},
                    where=table.c.finished_at.is_(None) & (table.c.started_at < now - self.STALE),
                )
                if connection.execute(statement.returning(table.c.job)).first() is not None:
                    return None
            else:
                try:
                    with connection.begin_nested():
                        connection.execute(insert(table).values(job=job, slot=slot, holder=self.holder, started_at=now))
                    return None
                except IntegrityError:
                    pass
            return connection.execute(select(table.c.holder).where(table.c.job == job, table.c.slot == slot)).scalar() or "another instance"

    def finish(self, job: str, slot: str) -> None:
        table = JobRun.__table__
        with self.db.transaction() as session:
            session.execute(update(table).where(table.c.job == job, table.c.slot == slot, table.c.holder == self.holder).values(finished_at=self.clock()))
            # a year of runs is plenty to look back on
            session.execute(delete(table).where(table.c.started_at < self.clock() - dt.timedelta(days=365)))
