"""`digest serve`: the scheduler and the web endpoints in one long-running process.

APScheduler keeps its jobs in the project database (its SQLAlchemy job store):

| job | when | does |
|---|---|---|
| `ingest:<source>:<HH:MM>` | each `poll_at` of each enabled source, in the source's zone | ingest that source (once, whichever instance) |
| `send:<zone>:<HH:MM>` | each distinct send time of the active subscribers, in their zone | send the digests that are due |
| `sweep` | every `SWEEP_MINUTES` | send whatever is due and unsent (after a downtime, a missed or skipped fire) |
| `profiles` | every `PROFILES_MINUTES` | sync the profile folder, then the send jobs |
| `retrain` | nightly, `RETRAIN_AT` UTC | rebuild the models that have new feedback (once, whichever instance) |

Several instances may run against one PostgreSQL database: their sends share the day's
subscribers (`coordination.SendLeases`), and a job that must run once per scheduled time (an
ingest poll, the retraining) is run by the instance that takes its `JobRun` row first
(`coordination.JobRuns`); the others log that it ran elsewhere.

Started after a downtime, the service first sends today's digests that are due and unsent (the
sweep runs at once); it never sends a past day's digest (that takes `digest send --date`).
Sends never overlap, and each one is exactly-once per (subscriber, local date) by itself
(`send/run.py`). On SIGTERM or SIGINT the web server stops taking requests, a send in
progress finishes the message in hand and stops, an ingest makes no further request, and the
scheduler waits for its jobs.

A job never waits on the scheduler: `scheduler.shutdown(wait=True)` holds the job store's lock
while it waits for the running jobs, so a job that then asked the scheduler anything (the
`profiles` job updating the send jobs) would wait for ever, and so would the service. The
scheduler is changed only under `_scheduling`, which `stop` takes before it shuts down and which
a job gives up on as soon as a stop has begun.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
from collections.abc import AsyncIterator, Callable
from zoneinfo import ZoneInfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlmodel import select

from .config import AppConfig, load_config
from .coordination import JobRuns, process_name
from .db import Database
from .embeddings import embed_new, last_paper
from .ingest import SourceError, SourceSpec, ingest_source
from .ingest.fetch import Fetcher, is_url
from .mail.render import Renderer
from .mail.transports import make_transport
from .models import DigestStatus, Subscriber, utcnow
from .profiles import sync_profiles
from .schedule import parse_clock
from .send.run import DigestSender
from .send.state import PROBLEMS, SendOptions
from .settings import Settings
from .training import retrain

log = logging.getLogger(__name__)

SWEEP_MINUTES = 5
PROFILES_MINUTES = 10
RETRAIN_AT = "03:00"
#: A fire missed by less than this (the service was down) still runs once when it comes back.
MISFIRE_GRACE = 6 * 3600

_service: "Service | None" = None


def run_job(kind: str, *args: str) -> None:
    """The entry point of every stored job (APScheduler keeps a reference to it by name)."""
    if _service is None:
        log.warning("job %s %s fired outside a running service; ignored", kind, args)
        return
    _service.run(kind, *args)


class Service:
    def __init__(self, settings: Settings, db: Database | None = None) -> None:
        self.settings = settings
        self.db = db or Database(settings.database_url)
        self.stopping = threading.Event()
        self._send_lock = threading.Lock()
        self.job_runs = JobRuns(self.db, process_name())
        #: Held by whoever changes the scheduler's jobs, and by `stop` while it shuts it down.
        self._scheduling = threading.Lock()
        self.scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=self.db.engine)},
            executors={"default": ThreadPoolExecutor(2)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE},
            timezone=dt.timezone.utc,
        )

    @property
    def config(self) -> AppConfig:
        return load_config(self.settings.config_path)

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        global _service
        _service = self
        self.sync_profiles()
        self.scheduler.start(paused=True)
        self.sync_jobs()
        # Catch up at once: today's due and unsent digests.
        self.scheduler.add_job(run_job, "date", args=("sweep",), id="catch-up", name="catch-up", replace_existing=True, run_date=utcnow())
        self.scheduler.resume()
        log.info("scheduler started with %d jobs", len(self.scheduler.get_jobs()))

    def stop(self) -> None:
        """Stop after the message in hand; wait for running jobs (none of which can wait on this)."""
        global _service
        self.stopping.set()
        with self._scheduling:  # a job changing the jobs finishes first; none starts after
            if self.scheduler.running:
                self.scheduler.shutdown(wait=True)
        _service = None
        log.info("scheduler stopped")

    # --- jobs ----------------------------------------------------------------------------------

    def sync_jobs(self) -> None:
        """Make the stored jobs match the configured sources and the subscribers' send times."""
        config = self.config
        wanted: dict[str, tuple[tuple, object]] = {}
        for source in config.sources:
            if not source.enabled:
                continue
            for clock in source.poll_at:
                time = parse_clock(clock)
                trigger = CronTrigger(hour=time.hour, minute=time.minute, timezone=source.timezone)
                wanted[f"ingest:{source.name}:{clock}"] = (("ingest", source.name, clock, source.timezone), trigger)
        with self.db.session() as session:
            groups = session.exec(
                select(Subscriber.timezone, Subscriber.send_at).where(Subscriber.active == True).distinct()  # noqa: E712
            ).all()
        for zone, clock in groups:
            time = parse_clock(clock)
            wanted[f"send:{zone}:{clock}"] = (("send",), CronTrigger(hour=time.hour, minute=time.minute, timezone=zone))
        wanted["sweep"] = (("sweep",), IntervalTrigger(minutes=SWEEP_MINUTES))
        wanted["profiles"] = (("profiles",), IntervalTrigger(minutes=PROFILES_MINUTES))
        time = parse_clock(RETRAIN_AT)
        wanted["retrain"] = (("retrain", RETRAIN_AT, "UTC"), CronTrigger(hour=time.hour, minute=time.minute, timezone=dt.timezone.utc))
        existing = {job.id: job for job in self.scheduler.get_jobs()}
        for job_id in existing:
            if job_id not in wanted and job_id != "catch-up":
                self.scheduler.remove_job(job_id)
        for job_id, (args, trigger) in wanted.items():
            job = existing.get(job_id)
            # A job already stored keeps its next run time, so a fire missed while the service
            # was down still happens (once) when it comes back.
            if job is None or str(job.trigger) != str(trigger) or tuple(job.args) != args:
                self.scheduler.add_job(run_job, trigger, args=args, id=job_id, name=job_id, replace_existing=True)

    def run(self, kind: str, *args: str) -> None:
        if self.stopping.is_set():
            return
        try:
            if kind in ("send", "sweep"):
                self.send_due()
            elif kind == "ingest":
                self.once(f"ingest:{args[0]}", args[1:], lambda: self.ingest(args[0]))
            elif kind == "profiles":
                self.sync_profiles()
                self._sync_jobs_unless_stopping()
            elif kind == "retrain":
                self.once("retrain", args, lambda: retrain(self.db, config=self.config.ranking))
            else:
                log.error("unknown job %s", kind)
        except Exception:
            log.exception("job %s %s failed", kind, args)

    def once(self, job: str, when: tuple[str, ...], work: Callable[[], object]) -> bool:
        """Run `work` unless another instance already ran `job` for this scheduled time (`when`:
        its clock and zone; a job stored by an older version has none and always runs): True if
        it ran here."""
        if len(when) < 2:
            work()
            return True
        slot = scheduled_slot(when[0], when[1], utcnow())
        holder = self.job_runs.claim(job, slot)
        if holder is not None:
            log.info("%s of %s ran on %s already", job, slot, holder)
            return False
        try:
            work()
        finally:
            self.job_runs.finish(job, slot)
        return True

    def _sync_jobs_unless_stopping(self) -> None:
        """`sync_jobs` from a job: given up on when a stop has begun (see the module docstring)."""
        while not self._scheduling.acquire(timeout=0.2):
            if self.stopping.is_set():
                return
        try:
            if not self.stopping.is_set():
                self.sync_jobs()
        finally:
            self._scheduling.release()

    def send_due(self) -> None:
        with self._send_lock:  # sends never overlap
            sender = DigestSender(self.db, self.settings, self.config, Renderer(self.settings.templates_dir), make_transport(self.settings))
            report = sender.run(options=SendOptions(due_only=True), should_stop=self.stopping.is_set)
        done = {s: report.count(s) for s in (DigestStatus.SENT, DigestStatus.EMPTY, *PROBLEMS) if report.count(s)}
        if done:
            log.info("send: %s%s", ", ".join(f"{n} {s}" for s, n in done.items()), f", {report.retries} retried" if report.retries else "")
        if report.halted:
            log.error("send stopped: %s; %d digests left for the next run", report.halted, report.left)

    def ingest(self, name: str) -> None:
        source = next((s for s in self.config.sources if s.name == name), None)
        if source is None:
            log.warning("source %r is no longer configured", name)
            return
        fetcher = Fetcher(sleep=self._pause) if is_url(source.url) else None
        before = last_paper(self.db) if self.settings.embedding_model else 0
        try:
            result = ingest_source(self.db, SourceSpec(source.url, source.name, source.max_papers), fetcher=fetcher)
        finally:
            if fetcher is not None:
                fetcher.close()
        if result.new and self.settings.embedding_model:
            embed_new(self.db, self.settings.embedding_model, before)

    def _pause(self, seconds: float) -> None:
        """The ingest's waits (politeness, backoff): cut short by a stop, which ends the ingest."""
        if self.stopping.wait(seconds):
            raise SourceError("the service is stopping")

    def sync_profiles(self) -> None:
        report = sync_profiles(self.db, self.settings.profiles_dir)
        for error in report.errors:
            log.error("invalid profile %s", error)


def scheduled_slot(clock: str, zone: str, now: dt.datetime) -> str:
    """The scheduled time a daily job at `clock` in `zone` is running for: today's, or
    yesterday's when today's is still ahead (a late run after a downtime). Instances whose
    clocks differ by a few minutes name the same slot."""
    time = parse_clock(clock)
    local = now.astimezone(ZoneInfo(zone) if zone != "UTC" else dt.timezone.utc)
    fire = local.replace(hour=time.hour, minute=time.minute, second=0, microsecond=0)
    if fire > local + dt.timedelta(minutes=30):
        fire -= dt.timedelta(days=1)
    return fire.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Run the scheduler and the web endpoints until SIGTERM or SIGINT."""
    from . import web

    db = Database(settings.database_url)
    service = Service(settings, db)

    @contextlib.asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        await asyncio.to_thread(service.start)
        try:
            yield
        finally:
            await asyncio.to_thread(service.stop)

    web.serve(settings, host, port, lifespan=lifespan, db=db)
