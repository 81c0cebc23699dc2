"""`digest serve` as a subprocess, on the real clock: it sends on schedule to aiosmtpd, stops on
SIGTERM, catches up when started again, and never sends twice. And the web endpoints writing
while a send writes: no "database is locked"."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import pytest
from lxml import html as lxml_html
from sqlmodel import func, select

from digest.models import Digest, FeedbackEvent

from .conftest import ROOT, SMTPSink, Workdir, both_databases, free_port
from .test_faults import people


def clock(instant: dt.datetime) -> str:
    return instant.strftime("%H:%M")


def wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


class Serve:
    def __init__(self, workdir: Workdir, env: dict[str, str]) -> None:
        self.workdir, self.env = workdir, env
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "digest", "-v", "serve"], cwd=self.workdir.path, env={**os.environ, **self.workdir.env, **self.env},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        wait_until(lambda: self._healthy(), 30, "digest serve to answer")

    def _healthy(self) -> bool:
        assert self.process.poll() is None, self.process.stdout.read()
        try:
            return httpx.get(self.workdir.env["DIGEST_BASE_URL"] + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        output, _ = self.process.communicate(timeout=60)
        return self.process.returncode, output


def test_serve_sends_on_schedule_stops_cleanly_and_catches_up_without_duplicates(workdir: Workdir, smtp_sink: SMTPSink) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    first = (now + dt.timedelta(minutes=2 if now.second > 40 else 1)).replace(second=0, microsecond=0)
    second = first + dt.timedelta(minutes=1)
    folder = workdir.path / "config" / "subscribers"
    for old in folder.glob("*.yaml"):
        old.unlink()
    groups = {"early": first, "later": second}
    for group, instant in groups.items():
        for n in range(3):
            # Half in UTC, half in Kolkata (UTC+05:30): the same instant written in two zones.
            zone, local = ("UTC", instant) if n % 2 == 0 else ("Asia/Kolkata", instant + dt.timedelta(hours=5, minutes=30))
            (folder / f"{group}{n}.yaml").write_text(
                f"email: {group}{n}@example.org\ntimezone: {zone}\nsend_at: \"{clock(local)}\"\ninterests: [quantum error correction]\n"
            )
    port = free_port()
    workdir.env["DIGEST_BASE_URL"] = f"http://127.0.0.1:{port}"
    workdir.cli("ingest", "config/sample-feed.jsonl", check=True)
    env = {"DIGEST_TRANSPORT": "smtp", "SMTP_HOST": smtp_sink.host, "SMTP_PORT": str(smtp_sink.port)}
    serve = Serve(workdir, env)

    serve.start()
    assert smtp_sink.messages == []  # nothing is due yet
    wait_until(lambda: len(smtp_sink.messages) >= 3, 100, "the early group's digests")
    received = smtp_sink.by_recipient()
    assert sorted(received) == ["early0@example.org", "early1@example.org", "early2@example.org"]
    assert dt.datetime.now(dt.timezone.utc) >= first  # not before their time
    code, output = serve.stop()
    assert code == 0, output
    assert "scheduler stopped" in output and "Traceback" not in output

    # Down while the later group's time passes; started again, it catches up at once.
    wait_until(lambda: dt.datetime.now(dt.timezone.utc) >= second + dt.timedelta(seconds=5), 130, "the later group's time")
    assert len(smtp_sink.messages) == 3
    serve.start()
    wait_until(lambda: len(smtp_sink.messages) >= 6, 60, "the catch-up")
    time.sleep(2)
    code, output = serve.stop()
    assert code == 0, output
    counts = Counter(rcpt for m in smtp_sink.messages for rcpt in m.rcpt_tos)
    assert counts == Counter({f"{g}{n}@example.org": 1 for g in groups for n in range(3)})


@both_databases
def test_the_web_and_a_send_write_at_once_without_locking_errors(workdir: Workdir, smtp_sink: SMTPSink) -> None:
    """Clicks pour in over HTTP while a send writes its digests, on one SQLite file (or PostgreSQL)."""
    port = free_port()
    workdir.env["DIGEST_BASE_URL"] = f"http://127.0.0.1:{port}"
    workdir.cli("ingest", "config/sample-feed.jsonl", check=True)
    workdir.cli("profiles", "sync", check=True)
    workdir.cli("send", check=True)  # yesterday's digests, whose links get clicked
    links = []
    for path in workdir.outbox():
        from email import message_from_bytes, policy

        body = message_from_bytes(path.read_bytes(), policy=policy.default).get_body(("html",)).get_content()
        links += lxml_html.fromstring(body).xpath("//a[contains(@href, '/c/')]/@href")
    folder = workdir.path / "config" / "subscribers"
    for n in range(40):
        (folder / f"more{n:02d}.yaml").write_text(f"email: more{n:02d}@example.org\ninterests: [weather forecasting, protein structure]\n")
    workdir.cli("profiles", "sync", check=True)

    web = subprocess.Popen([sys.executable, "-m", "digest", "web"], cwd=workdir.path, env={**os.environ, **workdir.env},
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: _answers(workdir.env["DIGEST_BASE_URL"]), 30, "digest web")
        env = {**os.environ, **workdir.env, "DIGEST_TRANSPORT": "smtp", "SMTP_HOST": smtp_sink.host, "SMTP_PORT": str(smtp_sink.port)}
        send = subprocess.Popen([sys.executable, "-m", "digest", "send", "--date", (dt.date.today() + dt.timedelta(days=1)).isoformat()],
                                cwd=workdir.path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        statuses: list[int] = []
        lock = threading.Lock()

        def click(urls: list[str]) -> None:
            with httpx.Client(timeout=30) as client:
                for url in urls:
                    code = client.get(url).status_code
                    with lock:
                        statuses.append(code)

        threads = [threading.Thread(target=click, args=(links[i::4] * 5,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        send_output, _ = send.communicate(timeout=120)
    finally:
        web.terminate()
        web_output, _ = web.communicate(timeout=30)
    assert send.returncode == 0, send_output
    assert statuses and set(statuses) == {302}, Counter(statuses)
    assert "locked" not in send_output + web_output and "Traceback" not in send_output + web_output
    with workdir.db().session() as session:
        assert session.exec(select(func.count()).select_from(FeedbackEvent)).one() == len(statuses)
    assert len(smtp_sink.messages) >= 40


def _answers(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_sigterm_in_the_middle_of_a_send_finishes_the_message_in_hand(workdir: Workdir, faulty) -> None:
    emails = people(workdir, 24)  # all due since midnight UTC: the catch-up sends them at start
    faulty.delay = 0.4
    port = free_port()
    workdir.env["DIGEST_BASE_URL"] = f"http://127.0.0.1:{port}"
    workdir.cli("ingest", "config/sample-feed.jsonl", check=True)
    env = {"DIGEST_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(faulty.port)}
    serve = Serve(workdir, env)
    serve.start()
    wait_until(lambda: sum(faulty.count().values()) >= 3, 60, "the first digests")
    seen = sum(faulty.count().values())  # read just before the signal: more may land while the poll looks away
    stopped_at = time.monotonic()
    code, output = serve.stop()
    assert code == 0, output
    assert time.monotonic() - stopped_at < 10  # it did not go on with the whole batch
    got = faulty.count()
    assert 3 <= sum(got.values()) <= seen + 2 * 4  # those in hand (one per connection) finish, the rest wait
    with workdir.db().session() as session:
        left = session.exec(select(Digest.status)).all()
    assert "sending" not in left and "unknown" not in left  # nothing half done

    serve.start()
    wait_until(lambda: sum(faulty.count().values()) >= 24, 60, "the rest")
    time.sleep(1)
    serve.stop()
    assert faulty.count() == Counter({e: 1 for e in emails})


@pytest.mark.parametrize("kind", ["profiles", "ingest", "ingest-url", "retrain", "send"])
def test_the_service_stops_within_seconds_whatever_job_is_running(workdir: Workdir, faulty, feed_server, kind: str) -> None:
    """`Service.stop` while a job of each kind runs: the process ends within seconds (the
    `profiles` job once asked the scheduler for its jobs while `shutdown` held their lock; an
    ingest waiting out a server's Retry-After went on waiting)."""
    people(workdir, 24)  # all due since midnight UTC
    faulty.delay = 0.3
    workdir.prepare()
    url = feed_server.serve("/busy", b"busy", status=503, headers={"Retry-After": "60"})
    config = workdir.path / "config" / "digest.yaml"
    config.write_text(config.read_text().replace("\nranking:", f"\n  - name: slow source\n    url: {url}\n    poll_at: \"23:59\"\n\nranking:", 1))
    folder = workdir.path / "signals"
    folder.mkdir()
    env = {**os.environ, **workdir.env, "DIGEST_TRANSPORT": "smtp", "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(faulty.port)}
    child = subprocess.Popen([sys.executable, str(ROOT / "tests" / "service_child.py"), kind, str(folder)], cwd=workdir.path, env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        running = {"send": lambda: sum(faulty.count().values()) >= 2, "ingest-url": lambda: len(feed_server.asked("/busy")) >= 1}.get(
            kind, lambda: (folder / "running").exists())
        wait_until(lambda: running() or child.poll() is not None, 60, f"a {kind} job to run")
        assert child.poll() is None, child.stdout.read()
        (folder / "stop").touch()
        stopped_at = time.monotonic()
        output, _ = child.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        child.kill()
        output, _ = child.communicate()
        raise AssertionError(f"the service did not stop while a {kind} job ran:\n{output}") from None
    assert child.returncode == 0, output
    assert "stopped in" in output and time.monotonic() - stopped_at < 10, output
    assert "Traceback" not in output
    if kind == "ingest-url":
        assert len(feed_server.asked("/busy")) == 1  # no further request after the stop
