"""Shared fixtures: a working folder with its own settings, real SQLite files, a real PostgreSQL
server of the tests' own, a real SMTP server."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller

from digest.config import load_config
from digest.db import Database
from digest.ingest import ingest_source
from digest.mail.render import Renderer
from digest.mail.transports import OutboxTransport
from digest.pgserver import free_port
from digest.profiles import sync_profiles
from digest.send.run import DigestSender
from digest.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("DIGEST_SHARED_DATA", ROOT.parent / "shared" / "data"))
#: A strong signing key, as every key must be (`links.key_bits`); fixed so that runs compare.
TEST_KEY = "MkpxkzdVxGSJuhhJnc7YWVWycLan35rVUgSHG4fNkg8"


def shared(*parts: str) -> Path:
    """A path under ../shared/data, or a clean skip where that data is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is not here (the shared data sits beside the checkout)")
    return path



@dataclass
class Workdir:
    """A folder that looks like a checkout (config/, .env, var/) with settings pointing into it."""

    path: Path
    env: dict[str, str]

    def settings(self, **overrides: str) -> Settings:
        return Settings.from_env({**self.env, **overrides}, dotenv_path=None)

    def db(self) -> Database:
        return Database(self.env["DIGEST_DATABASE_URL"])

    def cli(self, *args: str, check: bool = False, **env: str) -> subprocess.CompletedProcess:
        """Run `python -m digest ARGS` here, as a user would, without stdin or a terminal."""
        result = subprocess.run(
            [sys.executable, "-m", "digest", *args],
            cwd=self.path, env={**os.environ, **self.env, **env}, capture_output=True, text=True,
            stdin=subprocess.DEVNULL, timeout=300,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"digest {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def prepare(self, *feeds: str, now: dt.datetime | None = None) -> None:
        """Ingest `feeds` (default: the sample feed) and sync the profiles, in this process: quicker
        than the command line, where that is not what a test is about."""
        from digest.ingest import ingest_source
        from digest.profiles import sync_profiles

        db = self.db()
        for feed in feeds or ("config/sample-feed.jsonl",):
            ingest_source(db, feed, now=now)
        sync_profiles(db, self.path / "config" / "subscribers")
        db.dispose()

    def outbox(self) -> list[Path]:
        folder = self.path / "var" / "outbox"
        return sorted(folder.glob("*.eml")) if folder.exists() else []


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server started for this test session (`digest.pgserver`), or a clean skip
    where none can be started (no server binaries, root without a `postgres` user)."""
    from digest.pgserver import TempPostgres, Unavailable

    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (the `postgres` extra)")
    server = TempPostgres(durable=False)
    try:
        server.start()
    except Unavailable as exc:
        server.stop()
        pytest.skip(f"no PostgreSQL server for the tests: {exc}")
    try:
        yield server
    finally:
        server.stop()


#: Run a test on SQLite and on PostgreSQL: `@both_databases` over a test using `workdir`.
both_databases = pytest.mark.parametrize("workdir", ["sqlite", "postgresql"], indirect=True)


def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database of a test: a SQLite file, or a new database on the session's PostgreSQL."""
    if getattr(request, "param", "sqlite") == "postgresql":
        return request.getfixturevalue("postgres").create_database()
    return f"sqlite:///{tmp_path / 'var' / 'digest.db'}"


@pytest.fixture
def workdir(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workdir:
    """A copy of config/ in a fresh folder, the working directory for the test; its database is
    SQLite, or PostgreSQL for the `postgresql` case of `both_databases`."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    env = {
        "DIGEST_DATABASE_URL": database_url(request, tmp_path),
        "DIGEST_CONFIG": str(tmp_path / "config" / "digest.yaml"),
        "DIGEST_PROFILES": str(tmp_path / "config" / "subscribers"),
        "DIGEST_OUTBOX": str(tmp_path / "var" / "outbox"),
        "DIGEST_TEMPLATES": str(ROOT / "templates"),
        "DIGEST_TRANSPORT": "outbox",
        "DIGEST_SECRET_KEY": TEST_KEY,
        "DIGEST_BASE_URL": "http://127.0.0.1:8000",
        "DIGEST_FROM": "Paper Digest <digest@example.net>",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return Workdir(tmp_path, env)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class SMTPSink:
    """What a real aiosmtpd server on loopback received."""

    host: str
    port: int
    messages: list[Received] = field(default_factory=list)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def by_recipient(self) -> dict[str, list[EmailMessage]]:
        result: dict[str, list[EmailMessage]] = {}
        for received in self.messages:
            for rcpt in received.rcpt_tos:
                result.setdefault(rcpt, []).append(received.message)
        return result


class CountingHandler:
    """Counts connections (one EHLO each) on a sink that has `lock` and `connections`."""

    def __init__(self, sink) -> None:
        self.sink = sink

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        with self.sink.lock:
            self.sink.connections += 1
        session.host_name = hostname
        return responses


class _Handler(CountingHandler):
    async def handle_DATA(self, server, session, envelope):
        message = message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        with self.sink.lock:
            self.sink.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_sink() -> SMTPSink:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message it receives."""
    sink = SMTPSink("127.0.0.1", free_port())
    controller = Controller(_Handler(sink), hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@dataclass
class Route:
    """What the fixture server answers for one path: a list of answers, the last one repeated."""

    answers: list[tuple[int, dict[str, str], bytes]]
    delay: float = 0.0


@dataclass
class FeedServer:
    """A real HTTP server on loopback serving recorded or written fixtures, and what it was asked."""

    base: str
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def serve(self, path: str, body: bytes, status: int = 200, headers: dict[str, str] | None = None, delay: float = 0.0) -> str:
        self.routes[path] = Route([(status, headers or {}, body)], delay)
        return self.base + path

    def sequence(self, path: str, *answers: tuple[int, dict[str, str], bytes]) -> str:
        self.routes[path] = Route(list(answers))
        return self.base + path

    def asked(self, path: str) -> list[dict[str, str]]:
        return [headers for p, headers in self.requests if p.split("?")[0] == path]


@pytest.fixture
def feed_server() -> FeedServer:
    """A `http.server` on 127.0.0.1: answers by path (query included if so registered), honours
    If-None-Match and If-Modified-Since against the ETag and Last-Modified it serves."""
    import time as _time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    port = free_port()
    server_state = FeedServer(f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server_state.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            route = server_state.routes.get(self.path) or server_state.routes.get(self.path.split("?")[0])
            if route is None:
                self.send_error(404)
                return
            status, headers, body = route.answers.pop(0) if len(route.answers) > 1 else route.answers[0]
            if route.delay:
                _time.sleep(route.delay)
            etag, modified = headers.get("ETag"), headers.get("Last-Modified")
            if status == 200 and ((etag and self.headers.get("If-None-Match") == etag) or (modified and self.headers.get("If-Modified-Since") == modified)):
                self.send_response(304)
                self.end_headers()
                return
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            try:
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # a client that gave up waiting (the timeout tests), not an error of the server

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()


@dataclass
class FaultySink:
    """A real SMTP server with faults on cue, and what it accepted."""

    port: int
    temporary: dict[str, int] = field(default_factory=dict)  # recipient -> how many 451s first
    permanent: set[str] = field(default_factory=set)  # recipients always refused with 550 5.1.1 (no such mailbox)
    policy: set[str] = field(default_factory=set)  # recipients always refused with 550 5.7.1 (relaying denied)
    drop_once: set[str] = field(default_factory=set)  # drop the connection at this recipient's DATA, once
    delay: float = 0.0  # seconds before accepting each message
    #: The one password AUTH accepts (any user); any other is refused with 535 5.7.8.
    password: str = "right"
    accepted: list[str] = field(default_factory=list)
    connections: int = 0
    logins: int = 0  # AUTH attempts
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> Counter:
        with self.lock:
            return Counter(self.accepted)


class _FaultyHandler(CountingHandler):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.sink.lock:
            if address in self.sink.permanent:
                return f"550 5.1.1 <{address}>: no such mailbox"
            if address in self.sink.policy:
                return f"550 5.7.1 <{address}>: relaying denied"
            if self.sink.temporary.get(address, 0) > 0:
                self.sink.temporary[address] -= 1
                return "451 4.3.2 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        recipient = envelope.rcpt_tos[0]
        with self.sink.lock:
            drop = recipient in self.sink.drop_once
            self.sink.drop_once.discard(recipient)
        if drop:
            server.transport.close()  # the line goes dead mid-batch, no reply
            return "421 gone"
        if self.sink.delay:
            await asyncio.sleep(self.sink.delay)
        message_from_bytes(envelope.original_content or envelope.content, policy=policy.default)
        with self.sink.lock:
            self.sink.accepted.append(recipient)
        return "250 Message accepted"


@pytest.fixture
def faulty() -> FaultySink:
    """aiosmtpd with faults on cue; it offers AUTH (without TLS), which a client may skip."""
    from aiosmtpd.smtp import AuthResult, LoginPassword

    sink = FaultySink(free_port())

    def authenticate(server, session, envelope, mechanism, data) -> AuthResult:
        with sink.lock:
            sink.logins += 1
        return AuthResult(success=isinstance(data, LoginPassword) and data.password == sink.password.encode(), handled=False)

    controller = Controller(_FaultyHandler(sink), hostname="127.0.0.1", port=sink.port, auth_require_tls=False, authenticator=authenticate)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@dataclass
class SilentServer:
    """A TCP server on loopback that accepts connections and never says a word (no SMTP greeting)."""

    port: int
    accepted: int = 0


@pytest.fixture
def silent_server() -> SilentServer:
    server = SilentServer(free_port())
    listener = socket.create_server(("127.0.0.1", server.port))
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(connection)  # kept open, never answered
            server.accepted += 1

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        done.set()
        thread.join(timeout=5)
        for connection in held:
            connection.close()
        listener.close()


# --- the web endpoints ---------------------------------------------------------------------------


class Web:
    """`digest web` running in the work folder, and an HTTP client for it."""

    def __init__(self, workdir: Workdir) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        workdir.env["DIGEST_BASE_URL"] = self.base
        self.process: subprocess.Popen | None = None
        self.client = httpx.Client(follow_redirects=False, timeout=10)

    def start(self) -> "Web":
        self.process = subprocess.Popen(
            [sys.executable, "-m", "digest", "web"], cwd=self.workdir.path, env={**os.environ, **self.workdir.env},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.client.get(self.base + "/healthz").status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"digest web did not start: {self.process.stdout.read().decode()}")

    def stop(self) -> None:
        self.client.close()
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


#: The day of the digests whose links the tests follow (the clock is pinned to it).
NOW = dt.datetime(2026, 11, 24, 12, tzinfo=dt.timezone.utc)


def send_today(workdir: Workdir, now: dt.datetime = NOW) -> None:
    """Ingest the sample feed, sync the example profiles and send, in this process (it is quicker)."""
    settings = workdir.settings()
    db = workdir.db()
    ingest_source(db, "config/sample-feed.jsonl", now=now - dt.timedelta(hours=1))
    sync_profiles(db, settings.profiles_dir)
    DigestSender(db, settings, load_config(settings.config_path), Renderer(settings.templates_dir), OutboxTransport(settings.outbox), lambda: now).run()


@pytest.fixture
def web(workdir: Workdir):
    """`digest web` after today's digests of the sample feed were sent."""
    server = Web(workdir)
    send_today(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
