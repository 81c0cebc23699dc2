"""Send times in every zone, across clock changes, and catching up after a downtime, with the
clock moved by time-machine."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import time_machine
from apscheduler.triggers.cron import CronTrigger
from sqlmodel import select

from digest.config import load_config
from digest.ingest import ingest_source
from digest.mail.render import Renderer
from digest.mail.transports import OutboxTransport
from digest.models import Digest
from digest.profiles import sync_profiles
from digest.schedule import is_due, local_date, next_send, send_instant
from digest.send.run import DigestSender
from digest.send.state import SendOptions
from digest.service import Service

from .conftest import Workdir

UTC = dt.timezone.utc


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def test_berlin_across_both_clock_changes() -> None:
    # 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET.
    assert send_instant("07:00", "Europe/Berlin", dt.date(2026, 3, 28)) == at(2026, 3, 28, 6)
    assert send_instant("07:00", "Europe/Berlin", dt.date(2026, 3, 29)) == at(2026, 3, 29, 5)
    assert send_instant("07:00", "Europe/Berlin", dt.date(2026, 10, 25)) == at(2026, 10, 25, 6)
    # 02:30 does not exist on the spring day: it is sent at 03:30 CEST, once.
    assert send_instant("02:30", "Europe/Berlin", dt.date(2026, 3, 29)) == at(2026, 3, 29, 1, 30)
    # 02:30 happens twice on the autumn day: the first one.
    assert send_instant("02:30", "Europe/Berlin", dt.date(2026, 10, 25)) == at(2026, 10, 25, 0, 30)
    assert next_send("07:00", "Europe/Berlin", at(2026, 3, 28, 6)) == at(2026, 3, 29, 5)  # 23 hours later
    assert next_send("07:00", "Europe/Berlin", at(2026, 10, 24, 5)) == at(2026, 10, 25, 6)  # 25 hours later


def test_the_schedulers_trigger_agrees_on_ordinary_and_change_days() -> None:
    for zone, clock, day in (("Europe/Berlin", "07:00", dt.date(2026, 3, 29)), ("Europe/Berlin", "02:30", dt.date(2026, 3, 29)),
                             ("Pacific/Kiritimati", "07:00", dt.date(2026, 11, 22)), ("Pacific/Pago_Pago", "07:00", dt.date(2026, 11, 22))):
        hour, minute = map(int, clock.split(":"))
        trigger = CronTrigger(hour=hour, minute=minute, timezone=zone)
        day_before = send_instant("12:00", zone, day - dt.timedelta(days=1))
        assert trigger.get_next_fire_time(None, day_before).astimezone(UTC) == send_instant(clock, zone, day)


def test_the_two_ends_of_the_clock() -> None:
    # UTC+14: the 22nd begins, and its 07:00 passes, while it is still the 21st in London.
    assert send_instant("07:00", "Pacific/Kiritimati", dt.date(2026, 11, 22)) == at(2026, 11, 21, 17)
    # UTC-11: its 07:00 on the 22nd is the evening of the 22nd in UTC.
    assert send_instant("07:00", "Pacific/Pago_Pago", dt.date(2026, 11, 22)) == at(2026, 11, 22, 18)
    with time_machine.travel(at(2026, 11, 21, 17, 30), tick=False):
        now = dt.datetime.now(UTC)
        assert local_date(now, "Pacific/Kiritimati") == dt.date(2026, 11, 22) and is_due("07:00", "Pacific/Kiritimati", now)
        assert local_date(now, "Pacific/Pago_Pago") == dt.date(2026, 11, 21) and not is_due("07:00", "Pacific/Pago_Pago", now)
    with time_machine.travel(at(2026, 11, 22, 17, 59), tick=False):
        assert not is_due("07:00", "Pacific/Pago_Pago", dt.datetime.now(UTC))
    with time_machine.travel(at(2026, 11, 22, 18, 0), tick=False):
        assert is_due("07:00", "Pacific/Pago_Pago", dt.datetime.now(UTC))


def zones(workdir: Workdir) -> None:
    folder = workdir.path / "config" / "subscribers"
    for old in folder.glob("*.yaml"):
        old.unlink()
    for name, zone, clock in (("berlin", "Europe/Berlin", "07:00"), ("kiritimati", "Pacific/Kiritimati", "07:00"),
                              ("pagopago", "Pacific/Pago_Pago", "07:00"), ("london", "Europe/London", "07:00"), ("late", "UTC", "11:00")):
        (folder / f"{name}.yaml").write_text(f"email: {name}@example.org\ntimezone: {zone}\nsend_at: \"{clock}\"\ninterests: [quantum error correction]\n")


def due_send(workdir: Workdir) -> list[str]:
    settings = workdir.settings()
    sender = DigestSender(workdir.db(), settings, load_config(settings.config_path), Renderer(settings.templates_dir), OutboxTransport(settings.outbox))
    report = sender.run(options=SendOptions(due_only=True))
    return sorted(o.email for o in report.outcomes if o.status in ("sent", "empty"))  # empty: no new papers that day


def test_each_zone_is_sent_when_its_own_morning_comes(workdir: Workdir) -> None:
    zones(workdir)
    db = workdir.db()
    with time_machine.travel(at(2026, 3, 28, 12), tick=False):
        ingest_source(db, "config/sample-feed.jsonl")
        sync_profiles(db, workdir.path / "config" / "subscribers")
    expected = [  # (UTC now, whose digest goes out then)
        (at(2026, 3, 28, 16, 59), ["berlin@example.org", "late@example.org", "london@example.org"]),  # the 28th's, due since morning
        (at(2026, 3, 28, 17, 0), ["kiritimati@example.org"]),  # 07:00 on the 29th at UTC+14
        (at(2026, 3, 28, 17, 59), []),
        (at(2026, 3, 28, 18, 0), ["pagopago@example.org"]),  # 07:00 on the 28th at UTC-11
        (at(2026, 3, 29, 4, 59), []),
        (at(2026, 3, 29, 5, 0), ["berlin@example.org"]),  # 07:00 CEST, the first morning of summer time
        (at(2026, 3, 29, 5, 59), []),
        (at(2026, 3, 29, 6, 0), ["london@example.org"]),  # 07:00 BST: London changed that night too
        (at(2026, 3, 29, 11, 0), ["late@example.org"]),
        (at(2026, 3, 29, 17, 0), ["kiritimati@example.org"]),
        (at(2026, 3, 29, 18, 0), ["pagopago@example.org"]),
        (at(2026, 3, 29, 23, 0), []),
    ]
    for now, who in expected:
        with time_machine.travel(now, tick=False):
            assert due_send(workdir) == who, now
    with db.session() as session:
        per_day = sorted((d.local_date.isoformat(), d.subscriber_id) for d in session.exec(select(Digest)))
    assert len(per_day) == len(set(per_day)) == 10  # one digest per subscriber per local date
    assert {day for day, _ in per_day} == {"2026-03-28", "2026-03-29", "2026-03-30"}


def test_started_at_ten_after_a_downtime_since_six_it_sends_the_seven_oclock_digests_once(workdir: Workdir, tmp_path: Path) -> None:
    zones(workdir)
    db = workdir.db()
    with time_machine.travel(at(2026, 11, 20, 5, 0), tick=False):
        ingest_source(db, "config/sample-feed.jsonl")
    settings = workdir.settings()

    def run_service_until_quiet() -> None:
        service = Service(settings)
        service.start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                time.sleep(0.3)
                job = service.scheduler.get_job("catch-up")
                if job is None and not service._send_lock.locked():
                    break
        finally:
            service.stop()

    # Up at 05:30 on the 21st: what is due then goes out (Pago Pago's 20th, Kiritimati's 21st).
    with time_machine.travel(at(2026, 11, 21, 5, 30), tick=True):
        run_service_until_quiet()
    assert names(workdir) == ["kiritimati 2026-11-21", "pagopago 2026-11-20"]
    # Down from 06:00, started again at 10:00: the 07:00 digests of Berlin (06:00 UTC) and London
    # (07:00 UTC) go out, once.
    with time_machine.travel(at(2026, 11, 21, 10, 0), tick=True):
        run_service_until_quiet()
    assert names(workdir) == ["berlin 2026-11-21", "kiritimati 2026-11-21", "london 2026-11-21", "pagopago 2026-11-20"]
    with time_machine.travel(at(2026, 11, 21, 10, 1), tick=True):
        run_service_until_quiet()
    assert len(names(workdir)) == 4  # a restart sends nothing again
    # Down again until 10:30 the next day (papers kept arriving): today's due digests go out;
    # those missed meanwhile (late's 11:00 of the 21st, Kiritimati's 22nd) are never sent late.
    fresh = tmp_path / "fresh.jsonl"
    fresh.write_text("".join(json.dumps({"title": f"Quantum error correction with code family {n}", "abstract": "Surface codes and decoders."}) + "\n" for n in range(3)))
    with time_machine.travel(at(2026, 11, 21, 12, 0), tick=False):
        ingest_source(db, str(fresh))
    with time_machine.travel(at(2026, 11, 22, 10, 30), tick=True):
        run_service_until_quiet()
    assert sorted(set(names(workdir)) - {"berlin 2026-11-21", "kiritimati 2026-11-21", "london 2026-11-21", "pagopago 2026-11-20"}) == [
        "berlin 2026-11-22", "london 2026-11-22", "pagopago 2026-11-21",  # Pago Pago: still the 21st there, its 07:00 passed
    ]


def names(workdir: Workdir) -> list[str]:
    """'who local-date' of each message in the outbox."""
    return sorted(f"{p.name.split('_', 2)[2].split('_')[0]} {p.name[:10]}" for p in workdir.outbox())
