"""Delivery faults on real parts: an aiosmtpd server that answers 451, 550 and drops connections,
and a `digest send` killed with SIGKILL in the middle of a batch."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from sqlmodel import select

from digest.models import Digest, DigestStatus, Subscriber

from .conftest import FaultySink, Workdir, free_port

if TYPE_CHECKING:
    from digest.send.run import DigestSender

TOPICS = ["quantum error correction", "weather forecasting", "speculative decoding", "single-cell transcriptomics", "legged locomotion"]


def people(workdir: Workdir, count: int) -> list[str]:
    """`count` profiles over the sample feed's topics, replacing the examples; all due from 00:00 UTC."""
    folder = workdir.path / "config" / "subscribers"
    for old in folder.glob("*.yaml"):
        old.unlink()
    emails = []
    for n in range(count):
        email = f"reader{n:02d}@example.org"
        (folder / f"reader{n:02d}.yaml").write_text(f"email: {email}\nsend_at: \"00:00\"\ninterests: [{TOPICS[n % len(TOPICS)]}]\nmax_items: 3\n")
        emails.append(email)
    return emails


def smtp(sink: FaultySink, **extra: str) -> dict[str, str]:
    return {"DIGEST_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(sink.port), "SMTP_RETRIES": "3", "SMTP_RETRY_BACKOFF": "0.05", **extra}


def statuses(workdir: Workdir) -> dict[str, str]:
    with workdir.db().session() as session:
        rows = session.exec(select(Subscriber.email, Digest.status).join(Digest, Digest.subscriber_id == Subscriber.id)).all()
    return dict(rows)


def test_451_550_and_a_dropped_connection(workdir: Workdir, faulty: FaultySink) -> None:
    emails = people(workdir, 8)
    faulty.temporary = {emails[1]: 2, emails[4]: 1}
    faulty.permanent = {emails[6]}
    faulty.drop_once = {emails[3]}
    workdir.cli("ingest", "config/sample-feed.jsonl", check=True)
    workdir.cli("profiles", "sync", check=True)
    result = workdir.cli("send", **smtp(faulty))

    assert result.returncode == 1
    good = [e for e in emails if e != emails[6]]
    assert faulty.count() == Counter({e: 1 for e in good})  # every good recipient exactly once
    assert statuses(workdir) == {**{e: "sent" for e in good}, emails[6]: "failed"}
    assert f"failed {emails[6]}: SMTP 550 5.1.1" in result.stdout  # and it says why
    assert "7 sent, 4 retried, 1 failed" in result.stdout  # 2 + 1 for the 451s, 1 for the drop
    assert faulty.connections >= 4  # each retry on a new connection

    again = workdir.cli("send", **smtp(faulty))
    assert again.returncode == 0 and faulty.count() == Counter({e: 1 for e in good})  # a 550 waits for an operator

    shown = workdir.cli("status", check=True).stdout
    assert "sent" in shown and "failed" in shown and emails[6] in shown and "550 5.1.1" in shown
    assert "sample-feed.jsonl" in shown or "jsonl" in shown  # the last ingest


def test_repeated_hard_bounces_switch_the_address_off(workdir: Workdir, faulty: FaultySink) -> None:
    emails = people(workdir, 2)
    faulty.permanent = {emails[0]}
    workdir.cli("profiles", "sync", check=True)
    for day in range(1, 5):
        feed = workdir.path / f"day{day}.jsonl"
        feed.write_text("".join(
            json.dumps({"title": f"Day {day}: {topic} at scale", "abstract": f"New results on {topic}, day {day}."}) + "\n" for topic in TOPICS
        ))
        workdir.cli("ingest", str(feed), check=True)
        result = workdir.cli("send", "--date", f"2026-12-0{day}", **smtp(faulty))
        assert result.returncode == (1 if day <= 3 else 0)
    with workdir.db().session() as session:
        bounced = session.exec(select(Subscriber).where(Subscriber.email == emails[0])).one()
        tried = session.exec(select(Digest).where(Digest.subscriber_id == bounced.id)).all()
    assert not bounced.active and bounced.bounces == 3 and "bounced 3 times" in bounced.disabled_reason
    assert len(tried) == 3  # the fourth day was not even tried
    assert faulty.count()[emails[1]] == 4
    # A later sync of an unchanged profile does not switch it back on.
    workdir.cli("profiles", "sync", check=True)
    with workdir.db().session() as session:
        assert not session.exec(select(Subscriber).where(Subscriber.email == emails[0])).one().active


@pytest.mark.parametrize(("workdir", "connections"), [("sqlite", 1), ("sqlite", 4), ("postgresql", 4)], indirect=["workdir"])
def test_a_send_killed_mid_batch_resumes_without_duplicate_or_loss(workdir: Workdir, faulty: FaultySink, connections: int) -> None:
    emails = people(workdir, 24)
    faulty.delay = 0.15
    workdir.cli("ingest", "config/sample-feed.jsonl", check=True)
    workdir.cli("profiles", "sync", check=True)
    env = {**os.environ, **workdir.env, **smtp(faulty), "SMTP_CONNECTIONS": str(connections)}
    first = subprocess.Popen([sys.executable, "-m", "digest", "send"], cwd=workdir.path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while sum(faulty.count().values()) < 8 and time.monotonic() < deadline:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    delivered_at_kill = sum(faulty.count().values())
    assert 8 <= delivered_at_kill < 24

    second = workdir.cli("send", **smtp(faulty), SMTP_CONNECTIONS=str(connections))
    counts = faulty.count()
    assert max(counts.values()) == 1  # nobody got two
    state = statuses(workdir)
    unknown = [e for e, s in state.items() if s == DigestStatus.UNKNOWN]
    assert len(unknown) <= connections  # at most the messages in flight at the kill, one per connection
    assert all(state[e] == "sent" and counts[e] == 1 for e in emails if e not in unknown)
    assert second.returncode == (1 if unknown else 0)
    if unknown:
        assert "interrupted while sending" in second.stdout


# --- faults of the server, not of a recipient: never a bounce, the run stops early ------------------


def sender(workdir: Workdir, settings):
    """A `DigestSender` in this process, as `digest send` makes one."""
    from digest.config import load_config
    from digest.mail.render import Renderer
    from digest.mail.transports import make_transport
    from digest.send.run import DigestSender

    return DigestSender(workdir.db(), settings, load_config(settings.config_path), Renderer(settings.templates_dir), make_transport(settings))


def subscribers(workdir: Workdir) -> list[Subscriber]:
    with workdir.db().session() as session:
        return list(session.exec(select(Subscriber).order_by(Subscriber.email)))


def assert_stopped_cleanly(result: subprocess.CompletedProcess, words: str) -> None:
    """Exit 1 with one clear error that says `words`, no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.count("error:") == 1 and words in result.stderr, result.stderr
    assert "left for the next run; no address was counted as bouncing" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def assert_nobody_bounced(workdir: Workdir) -> None:
    assert all(s.active and s.bounces == 0 and s.disabled_reason is None for s in subscribers(workdir))
    assert set(statuses(workdir).values()) <= {"pending", "deferred"}


def test_a_wrong_smtp_password_stops_the_run_and_switches_nobody_off(workdir: Workdir, faulty: FaultySink) -> None:
    emails = people(workdir, 6)
    wrong = smtp(faulty, SMTP_USERNAME="digest", SMTP_PASSWORD="wrong")
    for day in range(1, 4):  # three daily runs, as the audit did: 299 of 300 were switched off
        feed = workdir.path / f"day{day}.jsonl"
        feed.write_text("".join(json.dumps({"title": f"Day {day}: {t} at scale", "abstract": f"New results on {t}."}) + "\n" for t in TOPICS))
        workdir.prepare(str(feed))
        result = workdir.cli("send", "--date", f"2026-12-0{day}", **wrong)
        assert_stopped_cleanly(result, "the SMTP server refused the login: SMTP 535 5.7.8")
    assert faulty.accepted == []
    assert faulty.logins <= 3 * 2 * 4  # a few tries a run (LOGIN and PLAIN, one per connection), not one per message and retry
    assert_nobody_bounced(workdir)
    # With the right password the same digests go out, once each.
    settings = workdir.settings(**smtp(faulty, SMTP_USERNAME="digest", SMTP_PASSWORD="right"))
    for day in range(1, 4):
        assert not sender(workdir, settings).run(date=dt.date(2026, 12, day)).failed
    assert faulty.count() == Counter({e: 3 for e in emails})


def test_a_server_that_accepts_and_never_answers_is_given_up_after_a_few_timeouts(workdir: Workdir, silent_server, faulty: FaultySink) -> None:
    emails = people(workdir, 24)
    workdir.prepare()
    # Default retries (4) and connections (4); a short timeout stands for the default 30 s.
    started = time.monotonic()
    result = workdir.cli("send", DIGEST_TRANSPORT="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=str(silent_server.port), SMTP_TIMEOUT="0.5", SMTP_RETRY_BACKOFF="0.05")
    took = time.monotonic() - started
    assert_stopped_cleanly(result, "stopped trying the server after 3 failures in a row")
    assert "TimeoutError" in result.stderr or "timed out" in result.stderr
    # One timeout per connection, not SMTP_TIMEOUT x 5 tries x 24 messages (120 connections).
    assert silent_server.accepted <= 8, silent_server.accepted
    assert took < 60  # a hang guard; what counts is the number of tries above
    assert_nobody_bounced(workdir)
    assert not sender(workdir, workdir.settings(**smtp(faulty))).run().failed
    assert faulty.count() == Counter({e: 1 for e in emails})


def test_a_server_that_times_out_on_every_message_stops_the_run_and_bounces_nobody(workdir: Workdir, faulty: FaultySink) -> None:
    emails = people(workdir, 12)
    workdir.prepare()
    faulty.delay = 1.0  # it answers each message's data a second late: after SMTP_TIMEOUT
    result = workdir.cli("send", **smtp(faulty, SMTP_TIMEOUT="0.3"))
    assert_stopped_cleanly(result, "stopped trying the server after 3 failures in a row")
    assert faulty.connections <= 2 * 4
    assert_nobody_bounced(workdir)
    time.sleep(1.5)  # what the server was given meanwhile is in its hands now
    in_doubt = set(faulty.count())  # timed out waiting for the reply: it kept them (RFC 1047)
    assert len(in_doubt) <= 4 and set(statuses(workdir).values()) == {"pending", "deferred"}
    faulty.delay = 0.0
    assert not sender(workdir, workdir.settings(**smtp(faulty))).run().failed
    counts = faulty.count()
    assert set(counts) == set(emails) and all(counts[e] == 1 for e in emails if e not in in_doubt)  # a duplicate only where in doubt


def test_a_refused_connection_or_a_failed_tls_session_stops_the_run_without_bounces(workdir: Workdir, faulty: FaultySink) -> None:
    emails = people(workdir, 8)
    workdir.prepare()
    for env, words in (
        (smtp(faulty, SMTP_PORT=str(free_port())), "Connection refused"),  # nothing listens there
        (smtp(faulty, SMTP_SECURITY="starttls"), "STARTTLS"),  # the server offers none
        (smtp(faulty, SMTP_SECURITY="ssl", SMTP_TIMEOUT="2"), "TLS with the SMTP server failed"),  # it speaks plain SMTP
    ):
        result = workdir.cli("send", **env)
        assert_stopped_cleanly(result, words)
        assert_nobody_bounced(workdir)
    assert faulty.accepted == [] and faulty.connections <= 2 * 4
    assert not sender(workdir, workdir.settings(**smtp(faulty))).run().failed
    assert faulty.count() == Counter({e: 1 for e in emails})


def test_a_refusal_for_policy_fails_that_message_but_is_no_bounce(workdir: Workdir, faulty: FaultySink) -> None:
    emails = people(workdir, 3)
    faulty.policy = {emails[1]}  # 550 5.7.1: about the sender or the server's rules, not the address
    faulty.permanent = {emails[2]}  # 550 5.1.1: no such mailbox
    workdir.prepare()
    result = workdir.cli("send", **smtp(faulty))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert statuses(workdir) == {emails[0]: "sent", emails[1]: "failed", emails[2]: "failed"}
    assert {s.email: s.bounces for s in subscribers(workdir)} == {emails[0]: 0, emails[1]: 0, emails[2]: 1}


# --- one message that cannot be made fails alone ------------------------------------------------------


@pytest.mark.parametrize(("transport", "workers"), [("outbox", 1), ("outbox", 2), ("smtp-1", 1), ("smtp-4", 2)])
def test_a_header_that_cannot_be_written_fails_that_message_only(workdir: Workdir, faulty: FaultySink, monkeypatch: pytest.MonkeyPatch, transport: str, workers: int) -> None:
    from digest.config import load_config
    from digest.ingest import ingest_source
    from digest.mail.render import Renderer
    from digest.mail.transports import OutboxTransport, SMTPTransport
    from digest.profiles import sync_profiles
    from digest.send import run

    emails = people(workdir, 6)
    db = workdir.db()
    now = dt.datetime(2026, 11, 24, 12, tzinfo=dt.timezone.utc)
    ingest_source(db, "config/sample-feed.jsonl", now=now - dt.timedelta(hours=1))
    sync_profiles(db, workdir.path / "config" / "subscribers")
    with db.transaction() as session:  # as a version that did not check names stored it
        broken = session.exec(select(Subscriber).where(Subscriber.email == emails[2])).one()
        broken.name = "Reader\r\nBcc: everyone@example.org"
        session.add(broken)
    monkeypatch.setattr(run, "WORKERS_FROM", 1)  # forked worker processes make the messages when workers > 1
    env = {} if transport == "outbox" else {**smtp(faulty), "SMTP_CONNECTIONS": transport.split("-")[1]}
    settings = workdir.settings(**env)
    made = OutboxTransport(settings.outbox) if transport == "outbox" else SMTPTransport(settings)
    sender = run.DigestSender(db, settings, load_config(settings.config_path), Renderer(settings.templates_dir), made, lambda: now, workers=workers)
    report = sender.run()
    outcomes = {o.email: o for o in report.outcomes}
    assert {e: o.status for e, o in outcomes.items()} == {**{e: "sent" for e in emails if e != emails[2]}, emails[2]: "failed"}
    assert "could not be made" in outcomes[emails[2]].detail and "control character" in outcomes[emails[2]].detail
    assert statuses(workdir) == {**{e: "sent" for e in emails if e != emails[2]}, emails[2]: "failed"}
    assert all(s.bounces == 0 and s.active for s in subscribers(workdir))
    delivered = [p.name for p in workdir.outbox()] if transport == "outbox" else list(faulty.count())
    assert len(delivered) == 5 and not any("reader02" in name for name in delivered)
    again = run.DigestSender(db, settings, load_config(settings.config_path), Renderer(settings.templates_dir), made, lambda: now, workers=workers).run()
    assert {o.status for o in again.outcomes} == {"already"}  # nothing stuck in `sending`, nothing sent twice


def day_with_workers(workdir: Workdir, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], Callable[[int], DigestSender]]:
    """Six subscribers of the sample feed, and a maker of senders of their day (to the outbox)
    whose worker processes start however few digests there are."""
    from digest.config import load_config
    from digest.ingest import ingest_source
    from digest.mail.render import Renderer
    from digest.mail.transports import OutboxTransport
    from digest.profiles import sync_profiles
    from digest.send import run

    emails = people(workdir, 6)
    db = workdir.db()
    now = dt.datetime(2026, 11, 24, 12, tzinfo=dt.timezone.utc)
    ingest_source(db, "config/sample-feed.jsonl", now=now - dt.timedelta(hours=1))
    sync_profiles(db, workdir.path / "config" / "subscribers")
    monkeypatch.setattr(run, "WORKERS_FROM", 1)
    settings = workdir.settings()
    outbox = OutboxTransport(settings.outbox)

    def sender(workers: int) -> DigestSender:
        return run.DigestSender(db, settings, load_config(settings.config_path), Renderer(settings.templates_dir), outbox, lambda: now, workers=workers)

    return emails, sender


def test_a_worker_process_that_dies_stops_the_run_and_the_next_run_sends_the_rest_once(workdir: Workdir, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed while making a message (out of memory, say) stops the run with a clear
    error instead of waiting for it for ever; the next run sends every digest, none twice."""
    from digest.mail.compose import Composer
    from digest.send import pool

    emails, sender = day_with_workers(workdir, monkeypatch)
    parent = os.getpid()
    real_compose = Composer.compose

    def compose_or_die(self, rendered, **kwargs):
        if os.getpid() != parent and kwargs["to_email"] == emails[3]:
            os._exit(9)  # as the kernel's OOM killer would end it: no exception, no goodbye
        return real_compose(self, rendered, **kwargs)

    monkeypatch.setattr(Composer, "compose", compose_or_die)
    with pytest.raises(pool.WorkerDied, match="digest-worker-"):
        sender(workers=2).run()
    left = statuses(workdir)  # what went is recorded sent, the rest given back: nothing left `sending`
    assert set(left.values()) <= {DigestStatus.PENDING, DigestStatus.SENT} and left[emails[3]] == DigestStatus.PENDING
    report = sender(workers=1).run()
    assert statuses(workdir) == dict.fromkeys(emails, DigestStatus.SENT)
    assert sorted(path.name.split("_", 2)[2] for path in workdir.outbox()) == sorted(e.replace("@", "_") + ".eml" for e in emails)
    assert report.count(DigestStatus.SENT) == list(left.values()).count(DigestStatus.PENDING)


def test_ranking_that_fails_in_a_worker_process_stops_the_run_and_claims_nothing(workdir: Workdir, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranking raises in a worker process (as a bad model file might make it): the run stops with
    that error, not a hang or a worker's traceback alone; nothing was claimed, so the next run
    sends every digest once."""
    from digest.send import pool
    from digest.send.select import Selector

    emails, sender = day_with_workers(workdir, monkeypatch)
    parent = os.getpid()
    real_rank = Selector.rank

    def rank_or_fail(self, wanted):
        if os.getpid() != parent:
            raise ValueError("the model file is damaged")
        return real_rank(self, wanted)

    monkeypatch.setattr(Selector, "rank", rank_or_fail)
    with pytest.raises(pool.WorkerFailed, match="ValueError: the model file is damaged") as failed:
        sender(workers=2).run()
    assert "rank_or_fail" in "".join(failed.value.__notes__)  # where in the worker it failed
    assert statuses(workdir) == {} and list(workdir.outbox()) == []
    report = sender(workers=1).run()
    assert statuses(workdir) == dict.fromkeys(emails, DigestStatus.SENT) and report.count(DigestStatus.SENT) == len(emails)
