"""Delivery faults on real parts: an aiosmtpd server that answers 451, 550 and drops connections,
and a `digest send` killed with SIGKILL in the middle of a batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from sqlmodel import select

from digest.models import Digest, DigestStatus, Subscriber

from .conftest import FaultySink, Workdir

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


@pytest.mark.parametrize("connections", [1, 4])
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
    unknown = [e for e, s in state.items() if s == DigestStatus.UNKNOWN.value]
    assert len(unknown) <= connections  # at most the messages in flight at the kill, one per connection
    assert all(state[e] == "sent" and counts[e] == 1 for e in emails if e not in unknown)
    assert second.returncode == (1 if unknown else 0)
    if unknown:
        assert "interrupted while sending" in second.stdout
