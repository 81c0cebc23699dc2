"""The benchmark (`digest bench`, `make bench`): each stage's throughput, time and peak memory.

Figures are printed, never asserted: speed targets live here, not in the test suite.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import psutil
from alembic import command
from alembic.script import ScriptDirectory
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
from sqlalchemy import Integer, bindparam, insert, update
from sqlmodel import select

from digest import migrations
from digest.config import RankingConfig, load_config
from digest.db import Database, make_engine
from digest.ingest import ingest_source
from digest.ingest.readers import read
from digest.links import LinkMaker, LinkSigner
from digest.mail.compose import Composer, Outgoing
from digest.mail.render import DigestView, Renderer
from digest.mail.transports import OutboxTransport, SMTPTransport
from digest.mail.view import PaperViews, digest_view
from digest.models import Digest, DigestItem, DigestStatus, FeedbackEvent, Paper, Subscriber, utcnow
from digest.pgserver import free_port
from digest.send.ledger import Ledger
from digest.send.run import BATCH
from digest.send.select import Selection, Selector
from digest.settings import PACKAGED_TEMPLATES, Settings
from digest.training import retrain

log = logging.getLogger(__name__)
#: The benchmark's own signing key (a strong one, as every key must be).
BENCH_KEY = secrets.token_urlsafe(32)

#: Real papers for the benchmark: ../shared/data/arxiv-daily beside the checkout, or this variable.
DATA = Path(os.environ.get("DIGEST_BENCH_DATA", Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "arxiv-daily"))


@dataclass
class Stage:
    name: str
    items: int
    unit: str
    seconds: float
    peak_mb: float
    note: str = ""
    #: Which code ran the stage when not this checkout: `digest bench --compare REF`.
    code: str = ""
    #: CPU seconds of the stage's processes (user + system), where they were measured.
    cpu_seconds: float | None = None

    @property
    def per_second(self) -> float:
        return self.items / self.seconds if self.seconds else float("inf")


class PeakRSS:
    """The process's peak resident memory while a block runs, sampled every 5 ms.

    (tracemalloc would see only Python's allocations, not NumPy's or SQLite's, and slows the
    work it measures several times over.)
    """

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * self._page
        except OSError:  # not Linux: the lifetime peak is the best there is
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> "PeakRSS":
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def measure(name: str, unit: str, work: Callable[[], int], note: str = "") -> Stage:
    """Run `work` (which returns how many items it handled): its time and the peak memory meanwhile."""
    with PeakRSS() as memory:
        started = time.perf_counter()
        items = work()
        seconds = time.perf_counter() - started
    return Stage(name, items, unit, seconds, memory.peak / 2**20, note)


def daily_files(folder: Path = DATA) -> list[Path]:
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no daily listings in {folder} (set DIGEST_BENCH_DATA)")
    return files


def bench_ingest(files: list[Path], workdir: Path) -> Stage:
    """All the daily files into a fresh SQLite database: read, normalize, deduplicate, store."""
    db = Database(f"sqlite:///{workdir / 'ingest.db'}")
    entries = sum(len(read(f.read_bytes()).records) for f in files)

    def work() -> int:
        for f in files:
            result = ingest_source(db, str(f))
            if not result.ok:
                raise RuntimeError(f"{f}: {result.error}")
        return entries

    stage = measure("ingest", "papers", work, f"{len(files)} files of {files[0].parent}, into SQLite")
    db.dispose()
    return stage


#: Time zones of generated subscribers, UTC-11 to UTC+14.
ZONES = (
    "Pacific/Pago_Pago", "Pacific/Honolulu", "America/Los_Angeles", "America/Denver", "America/Chicago", "America/New_York",
    "America/Sao_Paulo", "Atlantic/Azores", "UTC", "Europe/London", "Europe/Berlin", "Europe/Athens", "Africa/Nairobi",
    "Asia/Dubai", "Asia/Kolkata", "Asia/Shanghai", "Asia/Tokyo", "Australia/Sydney", "Pacific/Auckland", "Pacific/Kiritimati",
)
_WORD = re.compile(r"[a-z][a-z-]{2,}")


@dataclass
class World:
    """A benchmark database: real papers (the newest `papers` of them first seen today), and
    generated subscribers with yesterday's digest and a history of clicks."""

    path: Path
    users: int
    papers: int
    past_papers: int
    now: dt.datetime

    #: Where the world lives when not in the SQLite file `path` (a PostgreSQL copy).
    database_url: str | None = None

    @property
    def url(self) -> str:
        return self.database_url or f"sqlite:///{self.path}"


def build_world(path: Path, files: list[Path], users: int, papers: int, seed: int = 0) -> World:
    """Ingest the daily files into a new database at `path`, make the newest `papers` today's new
    papers, and generate `users` subscribers: interests taken from the word pairs of one or two
    categories' past titles, time zones from UTC-11 to UTC+14, some following categories, authors
    or avoiding a topic, 70% with feedback on an earlier digest (1-25 opened, a few turned down,
    up to 100 shown and not opened: `bench_retrain` learns their models), every one with
    yesterday's digest already sent."""
    rng = np.random.default_rng(seed)
    now = utcnow()
    db = Database(f"sqlite:///{path}")
    try:
        for f in files:
            result = ingest_source(db, str(f), now=now - dt.timedelta(days=40))
            if not result.ok:
                raise RuntimeError(f"{f}: {result.error}")
        with db.session() as session:
            rows = session.exec(select(Paper.id, Paper.title, Paper.categories, Paper.authors).order_by(Paper.id)).all()
        if len(rows) < papers + 100:
            raise ValueError(f"{len(rows)} papers in {files[0].parent}: too few for {papers} new ones and a past")
        past, new = rows[: len(rows) - papers], rows[len(rows) - papers :]
        new_first_seen = [now - dt.timedelta(hours=float(h)) for h in rng.uniform(1, 20, len(new))]
        past_first_seen = [now - dt.timedelta(days=float(d)) for d in rng.uniform(1.2, 30, len(past))]
        table = Paper.__table__
        with db.transaction() as session:
            session.connection().execute(
                update(table).where(table.c.id == bindparam("pid")).values(first_seen=bindparam("seen")),
                [{"pid": r[0], "seen": t} for r, t in zip([*past, *new], [*past_first_seen, *new_first_seen])],
            )
        by_category: dict[str, list[int]] = {}
        for index, (_, _, categories, _) in enumerate(past):
            if categories:
                by_category.setdefault(categories[0], []).append(index)
        topics = [c for c, members in by_category.items() if len(members) >= 20]
        phrases = {c: _title_pairs([past[i][1] for i in by_category[c]]) for c in topics}
        topics = [c for c in topics if len(phrases[c]) >= 3]
        weights = np.array([len(by_category[c]) for c in topics], float)
        weights /= weights.sum()
        _insert_subscribers(db, rng, users, now, past, by_category, topics, weights, phrases)
    finally:
        db.dispose()
    return World(path, users, papers, len(past), now)


def _title_pairs(titles: list[str], keep: int = 40) -> list[str]:
    """The most frequent pairs of adjacent words in `titles` (no stop words): interest phrases."""
    counts: Counter = Counter()
    for title in titles:
        words = _WORD.findall(title.lower())
        counts.update(f"{a} {b}" for a, b in zip(words, words[1:]) if a not in ENGLISH_STOP_WORDS and b not in ENGLISH_STOP_WORDS)
    return [p for p, n in counts.most_common(keep) if n >= 2]


def _insert_subscribers(db, rng, users, now, past, by_category, topics, weights, phrases) -> None:
    """Subscribers, each with yesterday's digest; 70% also with an earlier digest they used: 1-25
    of its papers opened (5% of those turned down instead), the rest (20-100) shown and not opened,
    as click and thumbs-down events for the nightly retrain to learn from."""
    subscribers, digests, items, events = [], [], [], []
    for n in range(users):
        main = topics[rng.choice(len(topics), p=weights)]
        mine = [main] + ([topics[rng.choice(len(topics), p=weights)]] if rng.random() < 0.3 else [])
        pool = [p for c in mine for p in phrases[c]]
        chosen = rng.choice(len(pool), size=min(len(pool), int(rng.integers(2, 6))), replace=False)
        zone = ZONES[int(rng.integers(len(ZONES)))]
        own = by_category[main]
        subscribers.append({
            "id": n + 1, "email": f"reader{n:06d}@example.org", "name": f"Reader {n}" if rng.random() < 0.5 else None,
            "timezone": zone, "send_at": f"{int(rng.integers(6, 10)):02d}:00", "max_items": int(rng.choice([5, 10, 10, 10, 20])),
            "interests": [{"phrase": pool[i], "weight": float(rng.choice([1.0, 1.0, 1.5, 2.0]))} for i in chosen],
            "avoid": [phrases[topics[int(rng.integers(len(topics)))]][0]] if rng.random() < 0.1 else [],
            "authors": [past[own[int(rng.integers(len(own)))]][3][0]] if rng.random() < 0.1 and past[own[0]][3] else [],
            "categories": [main] if rng.random() < 0.2 else [],
            "active": True, "bounces": 0, "created_at": now, "updated_at": now,
        })
        yesterday = now.astimezone(ZoneInfo(zone)).date() - dt.timedelta(days=1)
        digests.append({
            "id": len(digests) + 1, "subscriber_id": n + 1, "local_date": yesterday, "status": DigestStatus.SENT, "attempts": 1,
            "window_start": now - dt.timedelta(days=2), "window_end": now - dt.timedelta(hours=21), "created_at": now, "sent_at": now,
        })
        if rng.random() < 0.7:
            opened = rng.choice(own, size=min(len(own), int(rng.integers(1, 26))), replace=False)
            shown = rng.integers(0, len(past), size=int(rng.integers(20, 101)))
            kinds = {int(past[i][0]): "shown" for i in shown}
            kinds.update({int(past[i][0]): ("down" if rng.random() < 0.05 else "click") for i in opened})
            digest_id = len(digests) + 1
            when = now - dt.timedelta(days=2)
            digests.append({
                "id": digest_id, "subscriber_id": n + 1, "local_date": yesterday - dt.timedelta(days=1), "status": DigestStatus.SENT,
                "attempts": 1, "window_start": when - dt.timedelta(days=1), "window_end": when, "created_at": when, "sent_at": when,
            })
            for rank, (paper, kind) in enumerate(kinds.items(), start=1):
                items.append({"id": len(items) + 1, "digest_id": digest_id, "paper_id": paper, "rank": rank, "score": 0.0, "reason": ""})
                if kind != "shown":
                    events.append({"subscriber_id": n + 1, "digest_id": digest_id, "digest_item_id": len(items), "paper_id": paper, "kind": kind,
                                   "repeat": False, "created_at": when + dt.timedelta(hours=2)})
    with db.transaction() as session:
        connection = session.connection()
        for table, rows in ((Subscriber.__table__, subscribers), (Digest.__table__, digests), (DigestItem.__table__, items), (FeedbackEvent.__table__, events)):
            for start in range(0, len(rows), 10_000):
                connection.execute(insert(table), rows[start : start + 10_000])


def bench_retrain(world: World) -> Stage:
    """The nightly retrain (`training.retrain`) of every subscriber with feedback: evidence read
    from the events, the text model fitted on the recent corpus, one regression each, stored."""
    db = Database(world.url)
    config = RankingConfig()
    report = None

    def work() -> int:
        nonlocal report
        report = retrain(db, now=world.now, config=config)
        return len(report.trained)

    stage = measure(f"nightly retrain, {world.users:,} subscribers", "models", work)
    stage.note = (f"{len(report.trained):,} with feedback: text model {report.seconds_fitting:.1f} s, regressions {report.seconds_learning:.1f} s "
                  f"({1e3 * report.seconds_learning / max(len(report.trained), 1):.1f} ms each), the rest reading events and storing")
    db.dispose()
    return stage


# --- the stages of a daily run, one by one ----------------------------------------------------------


def _digest_env(url: str, workdir: Path, outbox: Path) -> dict[str, str]:
    """The benchmark's settings of `digest`, as environment variables: its database, an outbox,
    its own key, no configuration file, the packaged templates."""
    return {
        "DIGEST_DATABASE_URL": url, "DIGEST_OUTBOX": str(outbox), "DIGEST_SECRET_KEY": BENCH_KEY,
        "DIGEST_CONFIG": str(workdir / "no-config.yaml"), "DIGEST_TEMPLATES": str(PACKAGED_TEMPLATES), "DIGEST_TRANSPORT": "outbox",
        "DIGEST_BASE_URL": "https://digest.example.org", "DIGEST_FROM": "Paper Digest <digest@example.org>",
    }


def _settings(world: World, workdir: Path, **extra: str) -> Settings:
    return Settings.from_env(_digest_env(world.url, workdir, workdir / "outbox") | extra, dotenv_path=None)


def bench_stages(world: World, workdir: Path, sample: int, smtp_messages: int) -> list[Stage]:
    """Fit, rank, render (both ways), compose, deliver (outbox, SMTP) and record, each on its own."""
    settings = _settings(world, workdir)
    config = load_config(settings.config_path)
    db = Database(world.url)
    stages: list[Stage] = []
    with db.session() as session:
        subscribers = list(session.exec(select(Subscriber).order_by(Subscriber.id)).all())
    selector = Selector(db, config, world.now)
    plans: list = []
    stages.append(measure("model fit", "papers", lambda: (plans.extend(selector.plan(subscribers)), len(selector.papers))[1],
                          f"text model on {world.past_papers + world.papers:,} papers, {world.papers:,} candidates vectorized, histories loaded"))
    selections: list[Selection] = []

    def rank() -> int:
        for start in range(0, len(plans), BATCH):
            selections.extend(selector.select(plans[start : start + BATCH]))
        return len(plans)

    stages.append(measure("ranking", "subscribers", rank, f"x {world.papers:,} papers, chunks of {BATCH}, top-k + MMR + reasons"))
    chosen = [s for s in selections if s.ranked][:sample]
    links = LinkMaker(settings.base_url, LinkSigner(settings.require_secret_key(), installation=db.installation().id))
    shown = PaperViews()  # as a run: what each paper shows, worked out once
    views = [_view(links, s, n, shown) for n, s in enumerate(chosen)]
    fast, slow = Renderer(PACKAGED_TEMPLATES), Renderer(PACKAGED_TEMPLATES, inline="message")
    rendered: list = []
    fast_stage = measure("render, CSS inlined per template", "emails", lambda: len([rendered.append(fast.render(v)) for v in views]), "HTML + text, one core")
    slow_views = views[: max(1, min(len(views), 500))]
    slow_stage = measure("render, premailer per message", "emails", lambda: len([slow.render(v) for v in slow_views]), "HTML + text, one core")
    same = sum(fast.render(v).html == slow.render(v).html for v in slow_views)
    fast_stage.note += f"; {fast_stage.per_second / slow_stage.per_second:.0f}x premailer per message; identical HTML {same}/{len(slow_views)}"
    stages += [fast_stage, slow_stage]
    messages: list[Outgoing] = []
    now = world.now

    composer = Composer(settings.sender, eight_bit=True)  # as a run makes them for the outbox, or a server with 8BITMIME

    def compose_all() -> int:
        for view, r in zip(views, rendered):
            messages.append(composer.compose(r, to_email=view.subscriber_email, to_name=view.subscriber_name,
                                             msg_id=f"<bench.{len(messages)}@example.org>", unsubscribe_url=view.unsubscribe_url, date=now))
        return len(messages)

    stages.append(measure("compose MIME", "emails", compose_all, "multipart/alternative, one composer a run"))
    if messages:
        eight_bit = sum(m.eight_bit for m in messages)
        stages[-1].note += f", {np.mean([len(m.data) for m in messages]) / 1024:.0f} KB each, 8bit {eight_bit:,}/{len(messages):,}"
    outbox = OutboxTransport(workdir / "outbox-stage")

    def write_outbox() -> int:
        with outbox:
            for n, message in enumerate(messages):
                outbox.send(message, f"m{n:07d}")
        return len(messages)

    stages.append(measure("deliver to the outbox", "emails", write_outbox, "one file each, renamed into place, one sync per batch"))
    for connections in (1, settings.smtp_connections):
        stages.append(bench_smtp(messages[:smtp_messages], workdir, settings, connections))
    recorder = Ledger(db)
    stages.append(measure("record digests", "digests", lambda: sum(c is not None for part in _parts(selections, BATCH) for c in recorder.claim_many(part)),
                          f"digests and their items, one transaction per {BATCH}"))
    db.dispose()
    return stages


def _parts(values: list, size: int):
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _view(links: LinkMaker, selection: Selection, n: int, shown: PaperViews) -> DigestView:
    """A selection as the email shows it, with item ids made up (nothing is stored by this stage)."""
    digest = Digest(id=n + 1, subscriber_id=selection.subscriber.id, local_date=selection.local_date, window_start=selection.window_start, window_end=selection.window_end)
    items = [DigestItem(id=n * 100 + rank, digest_id=n + 1, paper_id=p.id, rank=rank, score=r.score, reason=r.reason)
             for rank, (r, p) in enumerate(zip(selection.ranked, selection.papers), start=1)]
    return digest_view(links, digest, selection.subscriber, items, selection.papers, shown)


def bench_smtp(messages: list[Outgoing], workdir: Path, settings: Settings, connections: int) -> Stage:
    """Messages to an aiosmtpd server on loopback, in a process of its own, over `connections` connections."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", f"from digest_lab.bench import smtp_sink; smtp_sink({port})"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        if server.stdout.readline().strip() != b"ready":
            raise RuntimeError("the benchmark's SMTP server did not start")
        smtp = SMTPTransport(dataclasses.replace(settings, transport="smtp", smtp_host="127.0.0.1", smtp_port=port, smtp_connections=connections))

        def deliver() -> int:
            with smtp, ThreadPoolExecutor(connections) as pool:
                list(pool.map(lambda pair: smtp.send(pair[1], f"m{pair[0]}"), enumerate(messages)))
            return len(messages)

        stage = measure(f"deliver by SMTP, {connections} connection{'s' if connections > 1 else ''}", "emails", deliver, "aiosmtpd on loopback (its own process)")
    finally:
        server.terminate()
        server.wait(timeout=10)
    return stage


def smtp_sink(port: int, record: str | None = None) -> None:
    """An aiosmtpd server that accepts every message (run by `bench_smtp` in a process of its
    own); with `record`, it appends each message's recipients to that file, a line each."""
    from aiosmtpd.controller import Controller

    log_file = open(record, "a", buffering=1, encoding="utf-8") if record else None

    class Accept:
        async def handle_DATA(self, server, session, envelope) -> str:
            if log_file is not None:
                log_file.write("".join(f"{rcpt}\n" for rcpt in envelope.rcpt_tos))
            return "250 OK"

    controller = Controller(Accept(), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        controller.stop()



# --- the whole daily run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkout:
    """Another commit of this project, unpacked beside the benchmark: its `digest send` runs from
    there (first on PYTHONPATH) with this virtualenv's packages, on a copy of the same world, so
    that a speed-up is a ratio measured side by side in one session (`digest bench --compare`)."""

    ref: str
    commit: str
    path: Path

    @property
    def label(self) -> str:
        return f"{self.ref} ({self.commit[:8]})" if not self.commit.startswith(self.ref) else self.commit[:8]

    @property
    def templates(self) -> Path:
        return self.path / "templates" if (self.path / "templates").is_dir() else PACKAGED_TEMPLATES

    def adopt(self, url: str) -> None:
        """Bring the database at `url` (a copy of the world this checkout made) down to the
        schema of that commit, by this checkout's migrations: a commit before a migration reads
        the same rows without the columns it does not know (a commit before migrations, such
        as f1f4b40, checks no revision and reads the world as it is)."""
        folder = self.path / "digest" / "migrations"
        if not (folder / "versions").is_dir():
            return
        head = ScriptDirectory(str(folder)).get_current_head()
        engine = make_engine(url)
        try:
            with migrations.locked(engine) as connection:
                if migrations.current(connection) != head:
                    command.downgrade(migrations.config(connection), head)
        finally:
            engine.dispose()


def checkout(ref: str, into: Path) -> Checkout:
    """Unpack commit `ref` of the git checkout this code runs from into a new folder of `into`
    (`git archive`: the tree of the commit, nothing of the working copy)."""
    root = Path(__file__).resolve().parent.parent
    try:
        found = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                               capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise ValueError(f"--compare needs git to unpack {ref}: {exc}") from exc
    if found.returncode != 0:
        raise ValueError(f"--compare {ref}: not a commit of the git checkout at {root} (a clone with its history is needed)")
    commit = found.stdout.strip()
    path = into / f"ref-{commit[:12]}"
    path.mkdir()
    archive = subprocess.Popen(["git", "-C", str(root), "archive", commit], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
        tar.extractall(path, filter="data")
    if archive.wait() != 0 or not (path / "digest" / "__main__.py").is_file():
        raise ValueError(f"--compare {ref}: git archive of {commit[:12]} gave no digest package")
    return Checkout(ref, commit, path)


class TreeMemory:
    """The peak memory of a process and all its descendants together, sampled: the sum of their
    proportional set sizes (PSS), so a page that forked workers share with their parent is counted
    once, split between them, not once per process as a sum of RSS would count it."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak = 0
        self.peak_root_rss = 0

    def sample(self) -> None:
        total = 0
        for process in [self.root, *self._children()]:
            with contextlib.suppress(psutil.Error):
                memory = process.memory_full_info()
                total += memory.pss
                if process is self.root:
                    self.peak_root_rss = max(self.peak_root_rss, memory.rss)
        self.peak = max(self.peak, total)

    def _children(self) -> list[psutil.Process]:
        try:
            return self.root.children(recursive=True)
        except psutil.Error:
            return []


def bench_daily_run(world: World, workdir: Path, code: Checkout | None = None) -> Stage:
    """`digest send` as a process of its own on the world's database, to the outbox: the whole
    run (load, fit, rank, claim, render, write, record), its time, CPU and the peak memory of all
    its processes together; with `code`, the `digest send` of that other commit (on the world
    brought to its schema: `Checkout.adopt`)."""
    if code is not None:
        code.adopt(world.url)
    outbox = workdir / f"outbox-{world.users}"
    shutil.rmtree(outbox, ignore_errors=True)
    env = _send_env(world.url, workdir, outbox, **({"DIGEST_TEMPLATES": str(code.templates), "PYTHONPATH": str(code.path)} if code else {}))
    log_path = workdir / f"send-{world.users}{'-' + code.commit[:8] if code else ''}.log"
    started = time.perf_counter()
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "digest", "send"], cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_file)
        memory = TreeMemory(process.pid)
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)  # usage: the process and its reaped workers
            if pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                break
            memory.sample()
            time.sleep(0.05)
    seconds = time.perf_counter() - started
    sent = sum(1 for _ in outbox.glob("*.eml"))
    shutil.rmtree(outbox, ignore_errors=True)
    if process.returncode != 0:
        raise RuntimeError(f"digest send exited {process.returncode}; see {log_path}")
    name = f"daily run, {world.users:,} subscribers" + (f", {code.label}" if code else "")
    return Stage(name, world.users, "subscribers", seconds, memory.peak / 2**20,
                 f"x {world.papers:,} papers: {sent:,} emails to the outbox; `digest send` in its own process"
                 f"{' of commit ' + code.commit[:12] if code else ''}; peak memory = PSS of all its processes together "
                 f"(its main process alone: peak RSS {memory.peak_root_rss / 2**20:.0f} MB)",
                 code=code.label if code else "", cpu_seconds=usage.ru_utime + usage.ru_stime)


# --- PostgreSQL: one sender against SQLite, one and two senders sharing, a sender killed -------------


def copy_database(source_url: str, target_url: str) -> None:
    """Every row of `source_url` into the empty database `target_url` (made at the head schema),
    ids kept; PostgreSQL's sequences moved past them."""
    Database(target_url).dispose()
    source, target = make_engine(source_url), make_engine(target_url)
    from sqlmodel import SQLModel

    try:
        with source.connect() as reading, target.begin() as writing:
            writing.exec_driver_sql("DELETE FROM installation")
            for table in SQLModel.metadata.sorted_tables:
                result = reading.execution_options(yield_per=10_000).execute(table.select())
                for part in result.mappings().partitions(10_000):
                    writing.execute(insert(table), [dict(row) for row in part])
                if writing.dialect.name == "postgresql" and "id" in table.c and table.c.id.primary_key and isinstance(table.c.id.type, Integer):
                    writing.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), coalesce((SELECT max(id) FROM \"{table.name}\"), 0) + 1, false)")
    finally:
        source.dispose()
        target.dispose()


def _send_env(url: str, workdir: Path, outbox: Path, **extra: str) -> dict[str, str]:
    """The environment of a `digest send` process of the benchmark: this one's, without any
    setting of digest, SMTP or PYTHONPATH of its own (the code that runs is this checkout's,
    or the one `extra` names), then the benchmark's settings and `extra`."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("DIGEST_", "SMTP_", "PYTHONPATH"))} | _digest_env(url, workdir, outbox) | extra


def _senders(n: int, env: dict[str, str], workdir: Path, name: str) -> list[subprocess.Popen]:
    return [
        subprocess.Popen([sys.executable, "-m", "digest", "send"], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                         stdout=open(workdir / f"{name}-{i}.out", "wb"), stderr=open(workdir / f"{name}-{i}.log", "wb"))
        for i in range(n)
    ]


@dataclass
class Tally:
    """The day's digests of a run, counted: whether every subscriber got exactly one."""

    subscribers: int
    statuses: Counter
    handed_over_twice: int  # digests moved to `sending` more than once (a resend)
    files: int = 0

    @property
    def missing(self) -> int:
        return self.subscribers - sum(self.statuses.values())

    def words(self) -> str:
        by_status = ", ".join(f"{n:,} {s}" for s, n in self.statuses.most_common())
        return f"{by_status}; {self.missing:,} without a digest; {self.handed_over_twice} handed to the transport twice"


def tally(url: str, since: dt.datetime, outbox: Path | None = None) -> Tally:
    db = Database(url)
    try:
        with db.session() as session:
            subscribers = len(session.exec(select(Subscriber.id)).all())
            rows = session.exec(select(Digest.status, Digest.attempts).where(Digest.created_at >= since)).all()
    finally:
        db.dispose()
    files = sum(1 for _ in outbox.glob("*.eml")) if outbox is not None and outbox.exists() else 0
    return Tally(subscribers, Counter(status for status, _ in rows), sum(1 for _, attempts in rows if attempts > 1), files)


def bench_sharing(world: World, workdir: Path, make_database: Callable[..., str], lease: float = 10.0) -> list[Stage]:
    """The day's send of `world` with one render worker per process (`DIGEST_WORKERS=1`): one
    sender on SQLite, one on PostgreSQL, two at once on PostgreSQL, and two on PostgreSQL over
    SMTP with one killed (-9) mid-run, the other left to finish alone (leases of `lease` s)."""
    stages: list[Stage] = []
    (workdir / "no-config.yaml").write_text("sources: []\n")

    def timed(name: str, url: str, processes: int, note: str) -> Stage:
        outbox = workdir / f"outbox-{name}"
        since = utcnow()
        machine = machine_cpu_seconds()
        started = time.perf_counter()
        procs = _senders(processes, _send_env(url, workdir, outbox, DIGEST_WORKERS="1"), workdir, name)
        codes, cpu = zip(*(_reap(p) for p in procs))
        seconds = time.perf_counter() - started
        machine = machine_cpu_seconds() - machine
        count = tally(url, since, outbox)
        if any(codes):
            raise RuntimeError(f"{name}: digest send exited {codes}; see {workdir}/{name}-*.log")
        shutil.rmtree(outbox, ignore_errors=True)
        cpus = " + ".join(f"{c:.1f}" for c in cpu)
        return Stage(name, world.users, "subscribers", seconds, 0.0,
                     f"{note}: {count.words()}; {count.files:,} files; CPU s of each sender: {cpus}; "
                     f"of the whole machine (senders, database server, all else): {machine:.1f} of {seconds * (os.cpu_count() or 1):.1f} there were")

    sqlite_copy = workdir / "sharing-sqlite.db"
    shutil.copy(world.path, sqlite_copy)
    stages.append(timed("one sender, SQLite", f"sqlite:///{sqlite_copy}", 1, "DIGEST_WORKERS=1, outbox"))
    sqlite_copy.unlink()
    template = make_database()
    copy_database(world.url, template)  # once; each run starts from a copy of it
    template_name = template.rsplit("/", 1)[1]
    for processes in (1, 2):
        url = make_database(template=template_name)
        name = "one sender, PostgreSQL" if processes == 1 else "two senders, PostgreSQL"
        stages.append(timed(name, url, processes, "DIGEST_WORKERS=1 each, outbox"))

    url = make_database(template=template_name)
    port = free_port()
    record = workdir / "smtp-received.txt"
    sink = f"from digest_lab.bench import smtp_sink; smtp_sink({port}, {str(record)!r})"
    server = subprocess.Popen([sys.executable, "-c", sink], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        if server.stdout.readline().strip() != b"ready":
            raise RuntimeError("the benchmark's SMTP server did not start")
        env = _send_env(url, workdir, workdir / "outbox-kill", DIGEST_WORKERS="1", DIGEST_TRANSPORT="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=str(port),
                        SMTP_CONNECTIONS="2", DIGEST_SEND_LEASE=str(lease))
        since = utcnow()
        started = time.perf_counter()
        victim, survivor = _senders(2, env, workdir, "kill")
        while _lines(record) < world.users // 4 and victim.poll() is None:
            time.sleep(0.05)
        victim.kill()  # SIGKILL: no clean-up at all
        killed_at = _lines(record)
        victim.wait()
        code = survivor.wait()
        seconds = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=10)
    received = Counter(line for line in record.read_text().splitlines() if line)
    count = tally(url, since)
    duplicates = sum(n - 1 for n in received.values() if n > 1)
    stages.append(Stage("two senders, one killed -9", world.users, "subscribers", seconds, 0.0,
                        f"killed after {killed_at:,} messages; survivor exit {code}; SMTP server received {sum(received.values()):,} messages for "
                        f"{len(received):,} addresses, {duplicates} duplicates; digests: {count.words()} (lease {lease:g} s)"))
    return stages


def machine_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy so far (every process, the kernel's work
    for them included): over a run, what it took of all there was, the database server's too."""
    times = psutil.cpu_times()
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq"))


def _reap(process: subprocess.Popen) -> tuple[int, float]:
    """Wait for `process`: its exit code and the CPU seconds it used (user + system, its own)."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_utime + usage.ru_stime


def _lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 16), b""))
    except FileNotFoundError:
        return 0


# --- all of it ----------------------------------------------------------------------------------------


def run(stages: list[str] | None = None, users: int = 10_000, papers: int = 2_000, scale: Sequence[int] = (), sample: int = 10_000,
        smtp_messages: int = 2_000, on_stage: Callable[[Stage], None] | None = None, postgres: str | None = None,
        compare: str | None = None, repeat: int = 1) -> list[Stage]:
    """The benchmark: `stages` among ingest, stages (fit, rank, render, compose, deliver, record),
    daily (the whole run at `users`, then at each size of `scale`) and postgres (`bench_sharing`
    at `users`: on `postgres`, a server URL whose databases it may create, or "temp" for a
    throwaway server of its own). The daily run at `users` runs `repeat` times; with `compare`
    (a git commit, branch or tag of this checkout) that commit's `digest send` runs as often on
    copies of the same world, alternated with this checkout's, for `ratios`."""
    files = daily_files()
    wanted = set(stages or ("ingest", "stages", "daily", *(("postgres",) if postgres else ())))
    results: list[Stage] = []

    def done(stage: Stage) -> None:
        results.append(stage)
        if on_stage:
            on_stage(stage)

    with tempfile.TemporaryDirectory(prefix="digest-bench-") as folder:
        workdir = Path(folder)
        other = checkout(compare, workdir) if compare and "daily" in wanted else None
        if "ingest" in wanted:
            done(bench_ingest(files, workdir))
        if "postgres" in wanted:
            world = build_world(workdir / "world-postgres.db", files, users, papers)
            with _postgres(postgres) as make_database:
                for stage in bench_sharing(world, workdir, make_database):
                    done(stage)
            world.path.unlink()
        if "stages" in wanted or "daily" in wanted:
            for size in dict.fromkeys([users, *sorted(scale)]):
                started = time.perf_counter()
                world = build_world(workdir / f"world-{size}.db", files, size, papers)
                log.info("generated %d subscribers in %.1f s", size, time.perf_counter() - started)
                done(bench_retrain(world))  # their models, as the night before the run
                if "daily" in wanted:
                    runs = [None] if size != users else [None, other] if other else [None]
                    for turn in range(repeat if size == users else 1):
                        for code in runs if turn % 2 == 0 else runs[::-1]:  # A B, B A, ...: drift hits both alike
                            copy = World(workdir / f"run-{size}.db", size, papers, world.past_papers, world.now)
                            shutil.copy(world.path, copy.path)
                            done(bench_daily_run(copy, workdir, code))
                            copy.path.unlink()
                if "stages" in wanted and size == users:
                    for stage in bench_stages(world, workdir, sample, smtp_messages):
                        done(stage)
                world.path.unlink()
                shutil.rmtree(workdir / f"outbox-{size}", ignore_errors=True)
    return results


@contextlib.contextmanager
def _postgres(where: str | None):
    """A maker of new empty databases: on a throwaway server ("temp", or none given) or on the
    server of a URL (whose user may create databases)."""
    import uuid

    from digest.pgserver import TempPostgres

    if where in (None, "", "temp"):
        with TempPostgres(durable=True) as server:
            yield server.create_database
        return
    import psycopg

    from digest.db import database_url

    base = database_url(where)

    def create(template: str | None = None) -> str:
        name = f"digest_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(base.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return base.set(database=name).render_as_string(hide_password=False)

    yield create


def ratios(results: list[Stage]) -> list[tuple[str, int, float, float]]:
    """For each size whose daily run also ran on another commit: (that commit, subscribers, this
    checkout's mean seconds, the other's mean seconds)."""
    by: dict[tuple[str, int], list[float]] = {}
    for s in results:
        if s.name.startswith("daily run"):
            by.setdefault((s.code, s.items), []).append(s.seconds)
    return [(code, items, float(np.mean(by[("", items)])), float(np.mean(times)))
            for (code, items), times in by.items() if code and ("", items) in by]


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def as_json(results: list[Stage]) -> str:
    return json.dumps({"stages": [asdict(s) | {"per_second": s.per_second} for s in results], "max_rss_mb": max_rss_mb()}, indent=2)
