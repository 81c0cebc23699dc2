"""Several processes against one database share the work: two `digest send` split the day's
subscribers (each exactly once, each process saying what it and the other did), a sender
killed -9 mid-batch has its batch taken over when its lease runs out, and a once-a-day job of
several `digest serve` instances runs once. On SQLite and on a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

from sqlalchemy import event
from sqlmodel import select

from digest.coordination import RELEASED, SendLeases
from digest.db import Database
from digest.models import DigestStatus, IngestRun, SendLease, Subscriber, utcnow

from .conftest import FaultySink, Workdir, both_databases
from .test_faults import people, smtp, statuses
from .test_send import Clock, make_sender, profile


def start_send(workdir: Workdir, host: str | None = None, **env: str) -> subprocess.Popen:
    """`digest send` in a process of its own; `host`: as if on another machine of that name (its
    process cannot be looked up from here: only its leases running out tell that it died)."""
    command = [sys.executable, "-m", "digest", "send"]
    if host:
        command[1:3] = ["-c", f"import socket; socket.gethostname = lambda: {host!r}; from digest.cli import main; main()"]
    return subprocess.Popen(command, cwd=workdir.path, env={**os.environ, **workdir.env, **env},
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def sent_by_this_process(output: str) -> int:
    words = " ".join(output.split())
    found = re.search(r"(?:This process: )?(\d+) sent", words.split("Other processes")[0])
    return int(found.group(1)) if found else 0


def holds_a_lease(db: Database, pid: int) -> bool:
    """Whether the `digest send` of process `pid` (on this machine) has taken a batch, now or before."""
    with db.session() as session:
        return session.exec(select(SendLease).where(SendLease.holder == f"{socket.gethostname()}:{pid}")).first() is not None


def unsent_in_hand(db: Database, holder: str, received: dict[str, int]) -> int:
    """How many subscribers leased by a process whose name starts with `holder` have no message yet."""
    with db.session() as session:
        held = session.exec(select(Subscriber.email).join(SendLease, SendLease.subscriber_id == Subscriber.id)
                            .where(SendLease.holder.startswith(holder), SendLease.expires > RELEASED)).all()
    return sum(1 for email in held if not received.get(email))


def dead_pid() -> int:
    """The pid of a process of this machine that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@both_databases
def test_a_lease_is_taken_when_free_ran_out_or_its_holder_is_gone_and_what_another_holds_is_not_written_to(workdir: Workdir) -> None:
    db = workdir.db()
    with db.transaction() as session:
        session.add_all(Subscriber(email=f"r{n}@example.org") for n in range(12))
    with db.session() as session:
        ids = sorted(session.exec(select(Subscriber.id)).all())
    day, minute = dt.date(2026, 4, 1), dt.timedelta(minutes=1)
    here = socket.gethostname()
    alive = SendLeases(db, "another-machine:1", minute)
    alive.take((i, day) for i in ids[:4])
    stale = SendLeases(db, "a-third-machine:2", minute, clock=lambda: utcnow() - 2 * minute)  # its leases ran out a minute ago
    stale.take((i, day) for i in ids[4:6])
    gone = SendLeases(db, f"{here}:{dead_pid()}", minute)  # of this machine, and its process is gone
    gone.take((i, day) for i in ids[6:8])
    released = SendLeases(db, "a-fourth-machine:3", minute)
    released.take((i, day) for i in ids[8:10])
    released.release(ids[8:10])

    writes: list[str] = []

    @event.listens_for(db.engine, "before_cursor_execute")
    def written(connection, cursor, statement, *rest) -> None:
        if not statement.lstrip().upper().startswith("SELECT"):
            writes.append(statement)

    me = SendLeases(db, f"{here}:{os.getpid()}", minute)
    assert me.take((i, day) for i in ids[:4]).subscribers == set()  # all another's, live
    assert writes == []  # nothing asked of the database but a read
    got = me.take((i, day) for i in ids)
    assert got.subscribers == set(ids[4:])  # ran out, holder gone, given back, never leased
    assert got.taken_over == {"a-third-machine:2": 2, f"{here}:{gone.holder.rsplit(':', 1)[1]}": 2}
    assert alive.held_by_others(ids) == {me.holder: 8}
    assert me.held_by_others(ids) == {"another-machine:1": 4}
    db.dispose()


def test_a_sender_without_worker_processes_holds_one_batch_at_a_time(workdir: Workdir) -> None:
    """With nothing ranking in the background, a batch taken early is only work the other
    senders cannot have: when the day runs out they would wait for it. So each batch is ranked,
    claimed and delivered before the next is leased."""
    for n in range(8):
        profile(workdir, f"zz-{n}.yaml", f"email: reader{n}@example.org\ninterests: [speculative decoding, graph neural networks]\n")
    now = dt.datetime(2026, 11, 24, 12, tzinfo=dt.timezone.utc)
    workdir.prepare(now=now - dt.timedelta(hours=1))
    sender = make_sender(workdir, Clock(now), DIGEST_SEND_BATCH="2", DIGEST_WORKERS="1")
    db = workdir.db()

    def leased() -> int:
        with db.session() as session:
            return len(session.exec(select(SendLease).where(SendLease.holder == sender.leases.holder, SendLease.expires > RELEASED)).all())

    held: list[int] = []
    report = sender.run(on_progress=lambda outcome: held.append(leased()))
    assert Counter(o.status for o in report.outcomes) == {DigestStatus.SENT: 12}
    assert len(held) == 12 and max(held) == 2  # the batch being delivered, and no other
    assert leased() == 0
    db.dispose()


@both_databases
def test_two_senders_split_the_day_and_each_says_what_the_other_did(workdir: Workdir, faulty: FaultySink) -> None:
    emails = people(workdir, 40)
    workdir.prepare()
    # The first process crawls until the second has taken a batch (its start-up alone takes
    # seconds on a loaded machine), then both go at the usual pace.
    faulty.delay = 1.0
    env = {**smtp(faulty), "SMTP_CONNECTIONS": "1", "DIGEST_SEND_BATCH": "4", "DIGEST_WORKERS": "1"}
    first = start_send(workdir, **env)
    wait_for(lambda: sum(faulty.count().values()) >= 2)
    second = start_send(workdir, **env)
    db = workdir.db()
    wait_for(lambda: holds_a_lease(db, second.pid) or second.poll() is not None, seconds=150)
    db.dispose()
    faulty.delay = 0.12
    outputs = [process.communicate(timeout=180) for process in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs

    counts = faulty.count()
    assert sorted(counts) == emails and max(counts.values()) == 1  # everyone, once
    assert set(statuses(workdir).values()) == {DigestStatus.SENT}
    mine = [sent_by_this_process(out) for out, _ in outputs]
    assert all(n > 0 for n in mine), outputs  # both did part of the day
    assert sum(mine) == len(emails)  # and what each says it sent adds up
    for out, _ in outputs:
        said = " ".join(out.split())
        assert "Nothing new to send" not in said
        assert "Other processes sending at the same time:" in said and " sent" in said.split("Other processes")[1]
    with workdir.db().session() as session:  # every lease given back
        leases = session.exec(select(SendLease)).all()
    assert len(leases) == len(emails) and all(lease.expires <= utcnow() for lease in leases)


@both_databases
def test_a_sender_killed_mid_batch_has_its_batch_taken_over_when_its_lease_runs_out(workdir: Workdir, faulty: FaultySink) -> None:
    emails = people(workdir, 24)
    workdir.prepare()
    faulty.delay = 0.12
    env = {**smtp(faulty), "SMTP_CONNECTIONS": "1", "DIGEST_SEND_BATCH": "6", "DIGEST_WORKERS": "1", "DIGEST_SEND_LEASE": "3"}
    victim = start_send(workdir, host="another-machine", **env)
    wait_for(lambda: sum(faulty.count().values()) >= 2)
    survivor = start_send(workdir, **env)
    db = workdir.db()
    # Mid-batch: two or more of the subscribers it holds are not sent yet (a sender holds one
    # batch at a time, and between two it holds none).
    wait_for(lambda: sum(faulty.count().values()) >= 6 and unsent_in_hand(db, "another-machine:", faulty.count()) >= 2)
    victim.send_signal(signal.SIGKILL)  # its leases are neither renewed nor given back
    db.dispose()
    victim.wait(timeout=10)
    at_kill = sum(faulty.count().values())
    out, err = survivor.communicate(timeout=180)

    counts = faulty.count()
    assert max(counts.values()) == 1, counts  # nobody got two
    state = statuses(workdir)
    unknown = [e for e, s in state.items() if s == DigestStatus.UNKNOWN]
    assert len(unknown) <= 1  # at most the message in flight at the kill (one connection)
    assert all(state.get(e) == "sent" and counts[e] == 1 for e in emails if e not in unknown), (state, out, err)
    assert survivor.returncode == (1 if unknown else 0), out + err
    said = " ".join(out.split())
    assert "another-machine" in said  # it waited for the dead one's leases, then took its batches over
    assert sum(counts.values()) > at_kill


@both_databases
def test_a_once_a_day_job_of_several_instances_runs_once(workdir: Workdir) -> None:
    from digest.service import Service

    services = [Service(workdir.settings()) for _ in range(3)]
    ran = []

    def fire(service: Service) -> None:
        ran.append(service.once("ingest:sample feed", ("06:00", "UTC"), lambda: service.ingest("sample feed")))

    threads = [threading.Thread(target=fire, args=(s,)) for s in services]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(ran) == [False, False, True]
    with workdir.db().session() as session:
        assert len(session.exec(select(IngestRun)).all()) == 1
    # the next day's run is another slot: it runs again, once
    assert services[1].job_runs.claim("ingest:sample feed", "2099-01-01T06:00Z") is None
    assert services[2].job_runs.claim("ingest:sample feed", "2099-01-01T06:00Z") is not None
