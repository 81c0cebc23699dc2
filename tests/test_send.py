"""The daily send on real SQLite and a real outbox: one digest per subscriber per local date."""

from __future__ import annotations

import datetime as dt
import gc
import json
from collections import Counter
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from lxml import html as lxml_html
from sqlmodel import select

from digest.config import load_config
from digest.db import Database
from digest.ingest import ingest_source
from digest.mail.render import Renderer
from digest.mail.transports import OutboxTransport
from digest.models import Digest, DigestItem, DigestStatus, Paper, Subscriber, utcnow
from digest.profiles import load_profiles, sync_profiles
from digest.send.pool import outbox_key
from digest.send.preview import preview_digest
from digest.send.run import DigestSender

from .conftest import Workdir, both_databases

DESIGN_HEADERS = ("From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe", "List-Unsubscribe-Post")


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def parse(path: Path):
    return message_from_bytes(path.read_bytes(), policy=policy.default)


def make_sender(workdir: Workdir, clock: Clock, db: Database | None = None, **settings_overrides: str) -> DigestSender:
    settings = workdir.settings(**settings_overrides)
    return DigestSender(db or workdir.db(), settings, load_config(settings.config_path), Renderer(settings.templates_dir), OutboxTransport(settings.outbox), clock)


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


#: The first day of the tests that follow one reader over several days.
DAY1 = dt.datetime(2026, 11, 22, 6, 0, tzinfo=dt.timezone.utc)


def first_digest(workdir: Workdir, name: str, interests: str) -> tuple[Database, Clock]:
    """The sample feed ingested just before `DAY1`, one reader `name`@example.org of `interests`
    (at most 3 items), and their digest of `DAY1` sent."""
    db = workdir.db()
    ingest_source(db, "config/sample-feed.jsonl", now=DAY1 - dt.timedelta(hours=1))
    profile(workdir, f"{name}.yaml", f"email: {name}@example.org\ninterests: [{interests}]\nmax_items: 3\n")
    sync_profiles(db, workdir.path / "config" / "subscribers")
    clock = Clock(DAY1)
    report = make_sender(workdir, clock).run(only=f"{name}@example.org")
    assert [o.status for o in report.outcomes] == ["sent"]
    return db, clock


def ingest_paper(db: Database, path: Path, title: str, abstract: str, now: dt.datetime) -> None:
    path.write_text(json.dumps({"title": title, "abstract": abstract}) + "\n")
    ingest_source(db, str(path), now=now)


@both_databases
def test_a_paper_is_never_sent_twice_and_the_next_day_brings_only_new_ones(workdir: Workdir, tmp_path: Path) -> None:
    db, clock = first_digest(workdir, "many", "quantum error correction, variational quantum algorithms")
    # The day before, never sent: its window covers the same papers, but those already sent are out.
    make_sender(workdir, clock).run(date=dt.date(2026, 11, 21), only="many@example.org")

    clock.now = DAY1 + dt.timedelta(days=1)
    ingest_paper(db, tmp_path / "next.jsonl", "Lattice surgery for quantum error correction on small devices",
                 "Quantum error correction with lattice surgery and surface codes.", clock.now - dt.timedelta(hours=1))
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


@pytest.mark.parametrize(("away", "expected"), [
    (25, "Neural decoders for quantum error correction with surface codes"),  # the last digest older than the digests the plan reads
    (15, "Lattice surgery for quantum error correction on small devices"),  # ... among them
])
def test_a_digest_after_a_long_pause_looks_back_at_most_max_window_days(workdir: Workdir, tmp_path: Path, away: int, expected: str) -> None:
    """Back after weeks without a digest: the papers of the last `max_window_days` (14) are the
    candidates, not all since the last digest (which would make the whole run rank weeks of papers)."""
    db, clock = first_digest(workdir, "back", "quantum error correction")
    for days, title in ((2, "Lattice surgery for quantum error correction on small devices"), (20, "Neural decoders for quantum error correction with surface codes")):
        ingest_paper(db, tmp_path / f"day-{days}.jsonl", title, "Quantum error correction with surface codes and lattice surgery.", DAY1 + dt.timedelta(days=days))
    clock.now = DAY1 + dt.timedelta(days=away)
    report = make_sender(workdir, clock).run(only="back@example.org")
    assert [o.status for o in report.outcomes] == ["sent"]
    with db.session() as session:
        digest = session.exec(select(Digest).where(Digest.local_date == clock.now.date())).one()
        titles = [session.get(Paper, i.paper_id).title for i in session.exec(select(DigestItem).where(DigestItem.digest_id == digest.id))]
    assert digest.window_start.replace(tzinfo=dt.timezone.utc) == clock.now - dt.timedelta(days=14)
    assert titles == [expected]  # 15 days away: the paper first seen on day 20 is not in yet


def test_no_match_means_no_email_and_a_recorded_reason(workdir: Workdir) -> None:
    now = dt.datetime(2026, 11, 24, 12, tzinfo=dt.timezone.utc)
    db = workdir.db()
    ingest_source(db, "config/sample-feed.jsonl", now=now - dt.timedelta(hours=1))
    for name in ("ada.yaml", "kenji.yaml", "lucia.yaml", "sam.yaml"):
        (workdir.path / "config" / "subscribers" / name).unlink()
    profile(workdir, "none.yaml", "email: none@example.org\ninterests: [medieval poetry]\n")
    profile(workdir, "few.yaml", "email: few@example.org\ninterests: [trapped ions]\nmax_items: 10\n")
    sync_profiles(db, workdir.path / "config" / "subscribers")
    report = make_sender(workdir, Clock(now)).run()
    outcomes = {o.email: o for o in report.outcomes}
    assert outcomes["none@example.org"].status == "empty"
    assert "none of 72 new papers matched" in outcomes["none@example.org"].detail
    assert outcomes["few@example.org"].status == "sent" and 1 <= outcomes["few@example.org"].items < 10
    assert [parse(p)["To"].addresses[0].addr_spec for p in workdir.outbox()] == ["few@example.org"]
    with db.session() as session:
        empty = session.exec(select(Digest).where(Digest.status == DigestStatus.EMPTY)).one()
        assert "matched" in empty.reason


@both_databases
def test_a_digest_interrupted_before_or_during_delivery_is_finished_once(workdir: Workdir) -> None:
    # 02:05 UTC, when it failed on the real clock: the example subscribers' local dates differ
    # (the 24th in London and Tokyo, still the 23rd in Buenos Aires and Los Angeles), so the
    # outbox's file names, which start with the local date, are not in the order of the digests.
    now = dt.datetime(2026, 11, 24, 2, 5, tzinfo=dt.timezone.utc)
    db = workdir.db()
    ingest_source(db, "config/sample-feed.jsonl", now=now - dt.timedelta(hours=1))
    sync_profiles(db, workdir.path / "config" / "subscribers")
    clock = Clock(now)
    make_sender(workdir, clock).run()
    files = workdir.outbox()
    with db.transaction() as session:
        digests = session.exec(select(Digest).order_by(Digest.id)).all()
        assert len({d.local_date for d in digests}) == 2
        owners = {s.id: s for s in session.exec(select(Subscriber))}
        # As if a crash hit: the first before delivery (its file never written), the second after it.
        (workdir.path / "var" / "outbox" / f"{outbox_key(digests[0].id, digests[0].local_date, owners[digests[0].subscriber_id].email)}.eml").unlink()
        digests[0].status = DigestStatus.PENDING
        digests[1].status = DigestStatus.SENDING
        session.add_all(digests[:2])
    report = make_sender(workdir, clock).run()
    assert sorted(o.status for o in report.outcomes) == ["already", "already", "sent", "sent"]
    assert workdir.outbox() == files
    with db.session() as session:
        assert {d.status for d in session.exec(select(Digest))} == {DigestStatus.SENT}


def test_a_broken_profile_is_named_and_the_others_still_get_their_email(workdir: Workdir) -> None:
    profile(workdir, "broken.yaml", "email: broken@example.org\ninterests:\n  - robots\ntimezone: Europe/Berln\n")
    result = workdir.cli("run")
    assert result.returncode == 1
    assert "broken.yaml:4: timezone: unknown time zone 'Europe/Berln'" in result.stderr
    assert len(workdir.outbox()) == 4
    with workdir.db().session() as session:
        assert session.exec(select(Subscriber).where(Subscriber.email == "broken@example.org")).first() is None


@both_databases
def test_papers_an_ingest_holds_uncommitted_while_a_send_starts_still_reach_their_subscribers(workdir: Workdir, monkeypatch) -> None:
    """An ingest's transaction stays open across the start of a send (as `digest serve` polls and
    sends independently): its papers must reach every subscriber they match, in this digest or
    the next, never fall between the two."""
    import threading
    import time

    import time_machine

    from digest import ingest as ingest_module

    db = workdir.db()
    sync_profiles(db, workdir.path / "config" / "subscribers")
    start = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc)
    real_store = ingest_module.store_records
    stored, release = threading.Event(), threading.Event()

    def store_and_hold(*args, **kwargs):  # the real store, its transaction left open for a while
        stats = real_store(*args, **kwargs)
        stored.set()
        release.wait(20)
        return stats

    monkeypatch.setattr(ingest_module, "store_records", store_and_hold)
    reports = []
    with time_machine.travel(start, tick=True):
        ingest = threading.Thread(target=ingest_source, args=(db, "config/sample-feed.jsonl"))
        ingest.start()
        assert stored.wait(20)
        send = threading.Thread(target=lambda: reports.append(make_sender(workdir, utcnow).run()))
        send.start()
        time.sleep(1.0)  # the send has started meanwhile (and before this change, read its window)
        release.set()
        ingest.join(30)
        send.join(60)
        assert not ingest.is_alive() and not send.is_alive() and reports
    reports.append(make_sender(workdir, Clock(start + dt.timedelta(days=1))).run())  # the next day's send
    with db.session() as session:
        items = Counter(session.exec(
            select(Subscriber.email).join(Digest, Digest.subscriber_id == Subscriber.id).join(DigestItem, DigestItem.digest_id == Digest.id)
        ).all())
        everyone = set(session.exec(select(Subscriber.email)).all())
    assert set(items) == everyone and len(everyone) == 4, items  # before: nothing for anyone ("no new papers" both days)
    assert sum(o.status == "sent" for report in reports for o in report.outcomes) == 4


# --- the smaller defects of the audit ------------------------------------------------------------------------


def test_init_makes_env_private_from_the_start_and_warns_about_a_readable_one(workdir: Workdir) -> None:
    import os
    import resource
    import signal
    import stat
    import subprocess
    import sys

    from digest.links import key_bits

    env_file = workdir.path / ".env"

    def cramped() -> None:  # umask 022, and no byte may be written to any file: a write fails half-way
        os.umask(0o022)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    def init_cut_short() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "digest", "init"], cwd=workdir.path, env={**os.environ, **workdir.env, "PYTHONDONTWRITEBYTECODE": "1"},
                              capture_output=True, text=True, preexec_fn=cramped, timeout=60)

    def env_files() -> list:
        return sorted(p for p in workdir.path.iterdir() if p.name.startswith(".env"))

    # No .env yet: a file made and then narrowed to 0600 would be left readable by all (0644).
    failed = init_cut_short()
    assert [(p.name, oct(stat.S_IMODE(p.stat().st_mode))) for p in env_files() if p.stat().st_mode & 0o077] == []
    assert env_files() == []  # nothing half-made is left behind
    assert failed.returncode == 1 and "cannot write .env" in failed.stderr and "Traceback" not in failed.stderr, failed.stderr
    # A .env with settings but no key: cut short, it is left as it was.
    env_file.write_text("SMTP_HOST=mail.example.org\n")
    env_file.chmod(0o644)
    failed = init_cut_short()
    assert failed.returncode == 1 and "cannot write .env" in failed.stderr, failed.stderr
    assert env_files() == [env_file] and env_file.read_text() == "SMTP_HOST=mail.example.org\n"

    workdir.cli("init", check=True)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600  # holding the key, readable by its owner alone
    assert env_file.read_text().startswith("SMTP_HOST=mail.example.org\nDIGEST_SECRET_KEY=")
    assert key_bits(env_file.read_text().split("DIGEST_SECRET_KEY=", 1)[1].strip()) >= 256  # and a strong one
    assert "other users can read it" not in workdir.cli("send", "--dry-run", DIGEST_SECRET_KEY="", check=True).stderr

    env_file.chmod(0o644)  # made readable by hand (or by an older version)
    again = workdir.cli("init", check=True)
    assert "other users can read it" in again.stderr and "chmod 600" in again.stderr
    assert "other users can read it" in workdir.cli("send", "--dry-run", DIGEST_SECRET_KEY="", check=True).stderr


def test_control_characters_in_a_title_reach_no_header(workdir: Workdir) -> None:
    feed = workdir.path / "controls.jsonl"
    feed.write_text(json.dumps({"title": "Speculative\x00 decoding\x07 with\x1b[31m KV cache", "abstract": "KV cache and speculative decoding\x00."}) + "\n")
    now = dt.datetime(2026, 11, 24, 12, tzinfo=dt.timezone.utc)
    workdir.prepare(str(feed), now=now - dt.timedelta(hours=1))
    with workdir.db().session() as session:
        title = session.exec(select(Paper.title)).one()
    assert title == "Speculative decoding with[31m KV cache"
    make_sender(workdir, Clock(now)).run(only="ada@example.org")
    [path] = workdir.outbox()
    head = path.read_bytes().split(b"\r\n\r\n", 1)[0]
    assert not [c for c in head if c < 0x20 and c not in (0x0D, 0x0A, 0x09)]
    assert parse(path)["Subject"].endswith("Speculative decoding with[31m KV cache")


def test_an_outbox_that_cannot_be_made_is_one_clear_error_and_nothing_is_lost(workdir: Workdir) -> None:
    profile(workdir, "zz-resting.yaml", "email: resting@example.org\ninterests: [robots]\npaused_until: 2099-01-01\n")
    workdir.prepare()  # a paused subscriber has an outcome but no digest: not one of those left
    (workdir.path / "var" / "taken").write_text("a file where the folder should go")
    result = workdir.cli("send", DIGEST_OUTBOX=str(workdir.path / "var" / "taken" / "outbox"))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "error: delivery stopped: cannot create the outbox folder" in result.stderr and "4 digests left for the next run" in result.stderr
    report = make_sender(workdir, utcnow).run()  # the next run, with a folder it can make
    assert report.count("sent") == 4 and report.count("paused") == 1 and len(workdir.outbox()) == 4


def test_a_full_disk_while_writing_previews_is_a_warning_not_a_failure(workdir: Workdir) -> None:
    import os

    if not os.path.exists("/dev/full"):
        import pytest

        pytest.skip("no /dev/full here")
    workdir.prepare()
    previews = workdir.path / "var" / "preview"
    previews.mkdir(parents=True)
    (previews / "2026-11-25_00000001_ada_example.org.html").symlink_to("/dev/full")  # writing the first preview: ENOSPC
    result = workdir.cli("send", "--date", "2026-11-25")
    assert result.returncode == 0, result.stderr  # every message was sent and recorded
    assert "warning: the HTML previews could not be written" in result.stderr and "No space left on device" in result.stderr
    assert "Traceback" not in result.stderr and "4 sent" in result.stdout
    with workdir.db().session() as session:
        assert {d.status for d in session.exec(select(Digest))} == {DigestStatus.SENT}


def test_a_full_disk_in_the_outbox_stops_the_run_and_the_next_run_finishes_without_duplicates(workdir: Workdir) -> None:
    import os

    import pytest

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    now = dt.datetime(2026, 11, 24, 12, tzinfo=dt.timezone.utc)
    workdir.prepare(now=now - dt.timedelta(hours=1))
    outbox = workdir.path / "var" / "outbox"
    outbox.mkdir(parents=True)
    # Digests are claimed in the order of the addresses: kenji's is the second. Writing it, the disk is full.
    drafts = outbox / f".drafts.{os.getpid()}"
    drafts.mkdir()
    (drafts / "2026-11-24_00000002_kenji_example.org.tmp").symlink_to("/dev/full")
    report = make_sender(workdir, Clock(now)).run(date=dt.date(2026, 11, 24))
    assert [(o.email, o.status) for o in report.outcomes] == [("ada@example.org", "sent"), ("kenji@example.org", "deferred")]  # and no further
    assert report.halted and "No space left on device" in report.halted and report.failed
    assert report.left == 2
    with workdir.db().session() as session:
        assert sorted(session.exec(select(Digest.status))) == ["deferred", "pending", "pending", "sent"]
        assert all(s.bounces == 0 for s in session.exec(select(Subscriber)))
    assert not list(outbox.rglob("*.tmp")) and not drafts.exists()  # nothing half-written left behind
    again = make_sender(workdir, Clock(now)).run(date=dt.date(2026, 11, 24))
    assert sorted(o.status for o in again.outcomes) == ["already", "sent", "sent", "sent"]
    assert len(workdir.outbox()) == 4


def test_preview_writes_no_link_a_click_could_not_follow(workdir: Workdir) -> None:
    feed = workdir.path / "bad-links.jsonl"
    feed.write_text("".join(json.dumps(p) + "\n" for p in [
        {"title": "Speculative decoding with a scripted link", "abstract": "Speculative decoding.", "url": "javascript:alert(document.cookie)",
         "pdf": "javascript:alert(2)"},  # its PDF button is left out, not linked
        {"title": "KV cache with a protocol-relative link", "abstract": "KV cache compression.", "url": "//evil.example/x", "pdf": "https://arxiv.org/pdf/2601.00001"},
        {"title": "Mixture of experts with a data link", "abstract": "Mixture of experts.", "url": "data:text/html,<script>alert(1)</script>"},
    ]))
    workdir.prepare(str(feed))
    out = workdir.path / "preview.html"
    workdir.cli("preview", "ada@example.org", "--out", str(out), check=True)
    hrefs = lxml_html.fromstring(out.read_text()).xpath("//a/@href")
    assert hrefs and not [h for h in hrefs if not (h.startswith(("http://", "https://")) or h.startswith("#"))], hrefs
    assert "https://arxiv.org/pdf/2601.00001" in hrefs  # the safe link of the same paper instead
    assert "https://huggingface.co/papers?q=Speculative+decoding+with+a+scripted+link" in hrefs  # no link of its own: a search


def test_a_corpus_of_stop_words_means_no_matches_not_a_crash(workdir: Workdir) -> None:
    (workdir.path / "a.jsonl").write_text(json.dumps({"title": "A", "abstract": ""}) + "\n")
    profile(workdir, "zz-the.yaml", "email: the@example.org\ninterests: [the, a]\n")  # whose phrases are stop words too
    now = dt.datetime(2026, 11, 24, 12, tzinfo=dt.timezone.utc)
    workdir.prepare("a.jsonl", now=now - dt.timedelta(hours=1))
    sender = make_sender(workdir, Clock(now))
    for subscriber in sender.subscribers():
        preview = preview_digest(sender, subscriber)
        assert preview.rendered is None and preview.reason == "none of 1 new papers matched the interests"
    report = sender.run()
    assert [o.status for o in report.outcomes] == ["empty"] * 5 and not report.failed
    shown = workdir.cli("preview", "ada@example.org", "--date", "2026-11-24")  # and the command says so, as it did not
    assert shown.returncode == 0 and "none of" in shown.stdout and "Traceback" not in shown.stderr, shown.stderr


def test_a_run_holds_the_profiles_of_the_batches_in_hand_only(workdir: Workdir) -> None:
    """At 100,000 subscribers their profiles alone are hundreds of megabytes: a run reads them
    batch by batch and lets each batch's go once it is delivered."""
    for n in range(8):
        profile(workdir, f"zz-{n}.yaml", f"email: reader{n}@example.org\ninterests: [speculative decoding, graph neural networks]\n")
    now = dt.datetime(2026, 11, 24, 12, tzinfo=dt.timezone.utc)
    workdir.prepare(now=now - dt.timedelta(hours=1))
    sender = make_sender(workdir, Clock(now), DIGEST_SEND_BATCH="2")
    alive: list[int] = []
    report = sender.run(on_progress=lambda outcome: alive.append(sum(isinstance(o, Subscriber) for o in gc.get_objects())))
    assert Counter(o.status for o in report.outcomes) == {DigestStatus.SENT: 12}
    assert len(workdir.outbox()) == 12
    assert max(alive) <= 3 * 2  # three batches in hand (ranked, made, delivered), two subscribers each


def test_a_subscriber_who_unsubscribes_while_a_run_goes_on_gets_nothing_more(workdir: Workdir) -> None:
    """Profiles are read with their batch: one who unsubscribes (by the one-click link) after the
    run began and before their batch is read gets no digest, and the run says so."""
    for n in range(6):
        profile(workdir, f"zz-{n}.yaml", f"email: reader{n}@example.org\ninterests: [speculative decoding, graph neural networks]\n")
    now = dt.datetime(2026, 11, 24, 12, tzinfo=dt.timezone.utc)
    workdir.prepare(now=now - dt.timedelta(hours=1))
    db = workdir.db()
    sender = make_sender(workdir, Clock(now), db, DIGEST_SEND_BATCH="2")
    last = sender.members()[-1].email  # in the last batch (by address)

    def unsubscribe_once(_outcome) -> None:
        with db.transaction() as session:
            subscriber = session.exec(select(Subscriber).where(Subscriber.email == last)).one()
            if subscriber.unsubscribed_at is None:
                subscriber.unsubscribed_at = now
                session.add(subscriber)

    report = sender.run(on_progress=unsubscribe_once)
    by_email = {o.email: o.status for o in report.outcomes}
    assert by_email.pop(last) == "unsubscribed"
    assert set(by_email.values()) == {DigestStatus.SENT} and len(by_email) == 9
    sent_to = {parse(path)["To"].addresses[0].addr_spec for path in workdir.outbox()}
    assert last not in sent_to and len(sent_to) == 9
    assert report.left == 0 and not report.stopped


def test_heap_trim_gives_back_freed_memory_below_a_live_block() -> None:
    """What a batch frees goes back to the system between batches (`send.heap`), even where a
    block still in use lies above it in the heap (which plain `free` never returns)."""
    import psutil

    from digest.send import heap

    if heap._malloc_trim() is None:
        pytest.skip("not glibc: nothing to trim")
    process = psutil.Process()
    blocks = [bytearray(2000) for _ in range(60_000)]  # 120 MB of small blocks, from the heap
    keep = bytearray(2000)  # allocated last: above them
    del blocks
    before = process.memory_info().rss
    assert heap.trim()
    after = process.memory_info().rss
    assert before - after > 60 * 2**20, (before, after)
    assert len(keep) == 2000


def test_a_run_collects_garbage_less_often_and_gives_the_setting_back_even_when_it_fails() -> None:
    from digest.send import heap

    before = gc.get_threshold()
    with pytest.raises(RuntimeError), heap.fewer_collections():
        assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, *before[1:])
        raise RuntimeError("the run failed")
    assert gc.get_threshold() == before
