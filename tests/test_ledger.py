"""The ledger (`digest/send/ledger.py`): one transition table, every write a compare-and-set, the
bounce policy; on a real SQLite file and, where marked, on a real PostgreSQL server."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import text
from sqlmodel import select

from digest.db import Database
from digest.mail.transports import DeliveryError
from digest.models import Digest, DigestItem, DigestStatus, Paper, Subscriber
from digest.ranking.readers import Ranked
from digest.send.ledger import TRANSITIONS, BouncePolicy, IllegalTransition, Ledger
from digest.send.select import Selection

from .conftest import Workdir, both_databases

NOW = dt.datetime(2026, 11, 24, 12, tzinfo=dt.timezone.utc)
DAY = dt.date(2026, 11, 24)


def subscriber(db: Database, email: str = "ada@example.org") -> int:
    with db.transaction() as session:
        row = Subscriber(email=email, interests=[{"phrase": "sparse attention", "weight": 1.0}])
        session.add(row)
        session.flush()
        return row.id


def digest(db: Database, subscriber_id: int, status: DigestStatus, day: dt.date = DAY) -> int:
    with db.transaction() as session:
        row = Digest(subscriber_id=subscriber_id, local_date=day, status=status, window_start=NOW - dt.timedelta(days=1), window_end=NOW)
        session.add(row)
        session.flush()
        return row.id


def stored(db: Database, digest_id: int) -> Digest:
    with db.session() as session:
        return session.get(Digest, digest_id)


def test_every_state_has_a_row_and_the_ends_have_no_way_out() -> None:
    assert set(TRANSITIONS) == {None, *DigestStatus}
    assert all(new in DigestStatus for allowed in TRANSITIONS.values() for new in allowed)
    assert TRANSITIONS[DigestStatus.SENT] == TRANSITIONS[DigestStatus.EMPTY] == frozenset()
    assert DigestStatus.SENDING in TRANSITIONS[DigestStatus.PENDING] and DigestStatus.SENT not in TRANSITIONS[DigestStatus.PENDING]


def test_an_illegal_transition_is_refused_with_a_clear_error_and_writes_nothing(workdir: Workdir) -> None:
    db = workdir.db()
    sent = digest(db, subscriber(db), DigestStatus.SENT)
    ledger = Ledger(db, lambda: NOW)
    with pytest.raises(IllegalTransition, match=rf"digest {sent}: sent -> pending is not allowed \(from sent: nothing\)"):
        ledger.move(sent, DigestStatus.SENT, DigestStatus.PENDING)
    with pytest.raises(IllegalTransition, match=r"pending -> sent is not allowed \(from pending: failed, sending\)"):
        ledger.move_many([(sent, DigestStatus.PENDING)], DigestStatus.SENT)
    assert stored(db, sent).status == DigestStatus.SENT


@both_databases
def test_a_compare_and_set_loses_cleanly_to_a_concurrent_change(workdir: Workdir) -> None:
    """Two runs with a connection each read a digest `pending`; the second to write loses, is
    told so, and changes nothing; on PostgreSQL the status is stored as its plain value too."""
    first, second = workdir.db(), workdir.db()  # two engines: two sessions on one database
    owner = subscriber(first)
    one, two, three = (digest(first, owner, DigestStatus.PENDING, DAY - dt.timedelta(days=n)) for n in range(3))
    mine, theirs = Ledger(first, lambda: NOW, holder="here:1"), Ledger(second, lambda: NOW, holder="there:2")
    assert theirs.move(one, DigestStatus.PENDING, DigestStatus.SENDING, message_id="<theirs@example.org>")
    assert not mine.move(one, DigestStatus.PENDING, DigestStatus.SENDING, message_id="<mine@example.org>")
    won = stored(first, one)
    assert (won.status, won.claimed_by, won.message_id, won.attempts) == (DigestStatus.SENDING, "there:2", "<theirs@example.org>", 1)

    assert theirs.move(two, DigestStatus.PENDING, DigestStatus.FAILED, reason="made elsewhere")
    moved = mine.move_many([(one, DigestStatus.PENDING), (two, DigestStatus.PENDING), (three, DigestStatus.PENDING)], DigestStatus.SENDING,
                           message_ids={one: "<a>", two: "<b>", three: "<c>"})
    assert moved == {three}
    assert [stored(first, d).status for d in (one, two, three)] == [DigestStatus.SENDING, DigestStatus.FAILED, DigestStatus.SENDING]
    assert stored(first, two).message_id is None and stored(first, three).message_id == "<c>"
    with first.engine.connect() as connection:  # what another program reading the table sees
        raw = dict(connection.execute(text("SELECT id, status FROM digest")).all())
    assert raw == {one: "sending", two: "failed", three: "sending"}
    first.dispose()
    second.dispose()


@both_databases
def test_of_many_racing_runs_exactly_one_moves_a_digest(workdir: Workdir) -> None:
    databases = [workdir.db() for _ in range(2)]
    target = digest(databases[0], subscriber(databases[0]), DigestStatus.DEFERRED)
    results: list[bool] = []
    start = threading.Barrier(8)

    def race(n: int) -> None:
        ledger = Ledger(databases[n % 2], lambda: NOW, holder=f"racer:{n}")
        start.wait()
        results.append(ledger.move(target, DigestStatus.DEFERRED, DigestStatus.SENDING))

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [False] * 7 + [True]
    assert stored(databases[0], target).attempts == 1
    for db in databases:
        db.dispose()


def test_what_a_refusal_means_for_the_digest_and_the_address() -> None:
    policy = BouncePolicy()
    refused = DeliveryError("550 5.1.1 no such user", permanent=True, bounce=True)
    full = DeliveryError("552 5.2.2 mailbox full", permanent=True)
    later = DeliveryError("451 4.3.0 try again later", retries=3)
    server = DeliveryError("535 authentication failed", permanent=True, bounce=True, server=True)
    assert [policy.state_after(e) for e in (refused, full, later, server)] == [DigestStatus.FAILED, DigestStatus.FAILED, DigestStatus.DEFERRED, DigestStatus.DEFERRED]
    assert [policy.is_bounce(e) for e in (refused, full, later, server)] == [True, False, False, False]


def test_bounces_in_a_row_switch_an_address_off_and_a_delivery_forgives_them(workdir: Workdir) -> None:
    db = workdir.db()
    ledger = Ledger(db, lambda: NOW, bounces=BouncePolicy(limit=3))
    ada, bob = subscriber(db, "ada@example.org"), subscriber(db, "bob@example.org")
    days = [DAY - dt.timedelta(days=n) for n in range(4)]
    ada_digests = [digest(db, ada, DigestStatus.SENDING, day) for day in days]
    bob_digests = [digest(db, bob, DigestStatus.SENDING, day) for day in days]

    def people() -> dict[str, Subscriber]:
        with db.session() as session:
            return {s.email: s for s in session.exec(select(Subscriber))}

    for n in range(2):  # Bob: two bounces, then one delivered
        assert ledger.move(bob_digests[n], DigestStatus.SENDING, DigestStatus.FAILED, reason="550 no such user", subscriber_id=bob, bounced=True)
    assert people()["bob@example.org"].bounces == 2
    assert ledger.move(bob_digests[2], DigestStatus.SENDING, DigestStatus.SENT, sent_at=NOW, subscriber_id=bob)
    assert people()["bob@example.org"].bounces == 0 and people()["bob@example.org"].active

    for n in range(2):
        ledger.move(ada_digests[n], DigestStatus.SENDING, DigestStatus.FAILED, reason="550 no such user", subscriber_id=ada, bounced=True)
    assert people()["ada@example.org"].active
    # A move that loses counts nothing: the bounce is recorded only with the state it explains.
    assert not ledger.move(ada_digests[1], DigestStatus.SENDING, DigestStatus.FAILED, reason="550 again", subscriber_id=ada, bounced=True)
    assert people()["ada@example.org"].bounces == 2
    ledger.move(ada_digests[2], DigestStatus.SENDING, DigestStatus.FAILED, reason="550 5.1.1 no such user", subscriber_id=ada, bounced=True)
    ada_now = people()["ada@example.org"]
    assert (ada_now.bounces, ada_now.active) == (3, False)
    assert ada_now.disabled_reason == "bounced 3 times in a row; last: 550 5.1.1 no such user"

    # A batch delivered forgives only the addresses whose digests it moved.
    with db.transaction() as session:
        session.get(Subscriber, bob).bounces = 2
    assert ledger.move_many([(bob_digests[3], DigestStatus.SENDING)], DigestStatus.SENT, sent_at=NOW, subscriber_ids={bob_digests[3]: bob}) == {bob_digests[3]}
    assert people()["bob@example.org"].bounces == 0
    db.dispose()


@both_databases
def test_a_batch_is_claimed_in_one_transaction_and_a_digest_that_exists_is_left_alone(workdir: Workdir) -> None:
    """`claim_many`: one insert for the batch's digests (on PostgreSQL from arrays), one for
    their items; a (subscriber, date) that has a digest already is reported as claimed by
    another run, and its digest and items are not touched."""
    db = workdir.db()
    readers = [subscriber(db, f"reader{n}@example.org") for n in range(3)]
    with db.transaction() as session:
        papers = [Paper(title_key=f"paper {n}", title=f"Paper {n}", source="test") for n in range(3)]
        session.add_all(papers)
        session.flush()
        paper_ids = [p.id for p in papers]
    taken = digest(db, readers[1], DigestStatus.SENT)
    with db.session() as session:
        stored_papers = list(session.exec(select(Paper).order_by(Paper.id)))
        batch = [
            Selection(session.get(Subscriber, reader), DAY, NOW - dt.timedelta(days=1), NOW, stored_papers[:ranked],
                      [Ranked(i, 1.0 - i / 10, [f"why {i}"]) for i in range(ranked)], 3)
            for reader, ranked in zip(readers, (2, 3, 0))
        ]
    claims = Ledger(db, lambda: NOW, holder="test:1").claim_many(batch)
    assert claims[1] is None  # the digest that exists
    first, empty = claims[0], claims[2]
    assert first is not None and empty is not None and empty[1] == ()
    assert [(item.rank, item.reason) for item in first[1]] == [(1, "why 0"), (2, "why 1")]
    with db.session() as session:
        rows = {d.subscriber_id: d for d in session.exec(select(Digest))}
        items = session.exec(select(DigestItem).order_by(DigestItem.digest_id, DigestItem.rank)).all()
    assert rows[readers[0]].status == DigestStatus.PENDING and rows[readers[0]].window_end == NOW and rows[readers[0]].local_date == DAY
    assert rows[readers[2]].status == DigestStatus.EMPTY and rows[readers[2]].reason == "none of 3 new papers matched the interests"
    assert rows[readers[1]].id == taken and rows[readers[1]].status == DigestStatus.SENT
    assert [(i.digest_id, i.paper_id, i.rank, i.id) for i in items] == [
        (first[0], paper_ids[0], 1, first[1][0].id), (first[0], paper_ids[1], 2, first[1][1].id)]
    db.dispose()
