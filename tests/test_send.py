"""The daily send on real SQLite and a real outbox: one digest per subscriber per local date."""

from __future__ import annotations

import datetime as dt
import json
from email import message_from_bytes, policy
from pathlib import Path

from lxml import html as lxml_html
from sqlmodel import select

from digest.config import load_config
from digest.delivery import OutboxTransport
from digest.ingest import ingest_source
from digest.models import Digest, DigestItem, DigestStatus, Paper, Subscriber
from digest.profiles import load_profiles, sync_profiles
from digest.render import Renderer
from digest.send import DigestSender

from .conftest import Workdir

DESIGN_HEADERS = ("From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe", "List-Unsubscribe-Post")


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def parse(path: Path):
    return message_from_bytes(path.read_bytes(), policy=policy.default)


def make_sender(workdir: Workdir, clock: Clock) -> DigestSender:
    settings = workdir.settings()
    return DigestSender(workdir.db(), settings, load_config(settings.config_path), Renderer(settings.templates_dir), OutboxTransport(settings.outbox), clock)


def profile(workdir: Workdir, name: str, text: str) -> None:
    (workdir.path / "config" / "subscribers" / name).write_text(text, encoding="utf-8")


def test_make_run_leaves_one_complete_email_per_active_profile_and_nothing_more_the_second_time(workdir: Workdir) -> None:
    profile(workdir, "zz-paused.yaml", "email: paused@example.org\ninterests: [weather forecasting]\nactive: false\n")
    env_file = workdir.path / ".env"
    assert workdir.cli("init", check=True)
    key = env_file.read_text()
    assert key.startswith("DIGEST_SECRET_KEY=") and len(key.strip()) > 40
    workdir.cli("init", check=True)
    assert env_file.read_text() == key  # a key that exists is kept

    first = workdir.cli("run", DIGEST_SECRET_KEY="", check=True)  # the key comes from .env
    active = [p for p in load_profiles(workdir.path / "config" / "subscribers").profiles.values() if p.active]
    files = workdir.outbox()
    assert len(files) == len(active) == 4
    assert "var/preview/" in first.stdout and "sent" in first.stdout
    tops = set()
    for path in files:
        message = parse(path)
        for header in DESIGN_HEADERS:
            assert message[header], f"{header} missing in {path.name}"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
        page = lxml_html.fromstring(message.get_body(("html",)).get_content())
        assert page.xpath("//a[contains(@href, '/c/')]/@style"), "CSS is inlined on the title links"
        assert message["To"].addresses[0].addr_spec != "paused@example.org"
        tops.add(message["Subject"].split(": ", 1)[1])
    assert len(tops) == 4  # visibly different digests
    with workdir.db().session() as session:
        recorded = {d.message_id for d in session.exec(select(Digest))}
    assert recorded == {parse(path)["Message-ID"] for path in files}  # each digest knows the Message-ID it went out with

    second = workdir.cli("run", check=True)
    assert workdir.outbox() == files
    assert "Nothing new to send" in second.stdout


def test_each_profile_gets_its_own_topics_first(workdir: Workdir) -> None:
    workdir.cli("run", check=True)
    by_person = {parse(p)["To"].addresses[0].addr_spec: parse(p) for p in workdir.outbox()}
    interests = {p.email: [i.phrase for i in p.interests] for p in load_profiles(workdir.path / "config" / "subscribers").profiles.values()}
    for email, message in by_person.items():
        text = message.get_body(("plain",)).get_content()
        whys = [line.strip() for line in text.splitlines() if line.strip().startswith("Why:")]
        assert whys, email
        # The first paper is there for one of this subscriber's own interests or followed authors.
        assert any(phrase in whys[0] for phrase in interests[email]) or "(followed)" in whys[0], (email, whys[0])


def test_a_paper_is_never_sent_twice_and_the_next_day_brings_only_new_ones(workdir: Workdir, tmp_path: Path) -> None:
    db = workdir.db()
    day1 = dt.datetime(2026, 11, 22, 6, 0, tzinfo=dt.timezone.utc)
    ingest_source(db, "config/sample-feed.jsonl", now=day1 - dt.timedelta(hours=1))
    profile(workdir, "many.yaml", "email: many@example.org\ninterests: [quantum error correction, variational quantum algorithms]\nmax_items: 3\n")
    sync_profiles(db, workdir.path / "config" / "subscribers")

    clock = Clock(day1)
    report = make_sender(workdir, clock).run(only="many@example.org")
    assert [o.status for o in report.outcomes] == ["sent"]
    # The day before, never sent: its window covers the same papers, but those already sent are out.
    make_sender(workdir, clock).run(date=dt.date(2026, 11, 21), only="many@example.org")

    extra = tmp_path / "next.jsonl"
    extra.write_text(json.dumps({"title": "Lattice surgery for quantum error correction on small devices",
                                 "abstract": "Quantum error correction with lattice surgery and surface codes."}) + "\n")
    clock.now = day1 + dt.timedelta(days=1)
    ingest_source(db, str(extra), now=clock.now - dt.timedelta(hours=1))
    make_sender(workdir, clock).run(only="many@example.org")
    with db.session() as session:
        digests = session.exec(select(Digest).order_by(Digest.local_date)).all()
        items = {
            d.local_date: [session.get(Paper, i.paper_id).title for i in session.exec(select(DigestItem).where(DigestItem.digest_id == d.id).order_by(DigestItem.rank))]
            for d in digests
        }
    assert [d.local_date for d in digests] == [dt.date(2026, 11, 21), dt.date(2026, 11, 22), dt.date(2026, 11, 23)]
    sent = [t for titles in items.values() for t in titles]
    assert len(sent) == len(set(sent)) == 3 + 3 + 1
    assert items[dt.date(2026, 11, 23)] == ["Lattice surgery for quantum error correction on small devices"]


def test_no_match_means_no_email_and_a_recorded_reason(workdir: Workdir) -> None:
    db = workdir.db()
    ingest_source(db, "config/sample-feed.jsonl")
    for name in ("ada.yaml", "kenji.yaml", "lucia.yaml", "sam.yaml"):
        (workdir.path / "config" / "subscribers" / name).unlink()
    profile(workdir, "none.yaml", "email: none@example.org\ninterests: [medieval poetry]\n")
    profile(workdir, "few.yaml", "email: few@example.org\ninterests: [trapped ions]\nmax_items: 10\n")
    sync_profiles(db, workdir.path / "config" / "subscribers")
    report = make_sender(workdir, Clock(dt.datetime.now(dt.timezone.utc))).run()
    outcomes = {o.email: o for o in report.outcomes}
    assert outcomes["none@example.org"].status == "empty"
    assert "none of 72 new papers matched" in outcomes["none@example.org"].detail
    assert outcomes["few@example.org"].status == "sent" and 1 <= outcomes["few@example.org"].items < 10
    assert [parse(p)["To"].addresses[0].addr_spec for p in workdir.outbox()] == ["few@example.org"]
    with db.session() as session:
        empty = session.exec(select(Digest).where(Digest.status == DigestStatus.EMPTY.value)).one()
        assert "matched" in empty.reason


def test_a_digest_interrupted_before_or_during_delivery_is_finished_once(workdir: Workdir) -> None:
    db = workdir.db()
    ingest_source(db, "config/sample-feed.jsonl")
    sync_profiles(db, workdir.path / "config" / "subscribers")
    clock = Clock(dt.datetime.now(dt.timezone.utc))
    make_sender(workdir, clock).run()
    # In the order of the digests (a file is named date_id_recipient, and the dates differ by time zone).
    files = sorted(workdir.outbox(), key=lambda path: path.name.split("_")[1])
    with db.transaction() as session:
        digests = session.exec(select(Digest).order_by(Digest.id)).all()
        # As if a crash hit: the first before delivery (its file never written), the second after it.
        files[0].unlink()
        digests[0].status = DigestStatus.PENDING.value
        digests[1].status = DigestStatus.SENDING.value
        session.add_all(digests[:2])
    report = make_sender(workdir, clock).run()
    assert sorted(o.status for o in report.outcomes) == ["already", "already", "sent", "sent"]
    assert workdir.outbox() == sorted(files)
    with db.session() as session:
        assert {d.status for d in session.exec(select(Digest))} == {DigestStatus.SENT.value}


def test_a_broken_profile_is_named_and_the_others_still_get_their_email(workdir: Workdir) -> None:
    profile(workdir, "broken.yaml", "email: broken@example.org\ninterests:\n  - robots\ntimezone: Europe/Berln\n")
    result = workdir.cli("run")
    assert result.returncode == 1
    assert "broken.yaml:4: timezone: unknown time zone 'Europe/Berln'" in result.stderr
    assert len(workdir.outbox()) == 4
    with workdir.db().session() as session:
        assert session.exec(select(Subscriber).where(Subscriber.email == "broken@example.org")).first() is None
