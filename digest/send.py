"""The daily send: for each subscriber, choose the day's papers, record them, render and deliver.

Each digest is claimed for (subscriber, local date) in one transaction, together with its items,
before it is rendered: the unique constraint makes a second claim fail, so however often `send`
runs, a subscriber gets one digest per local date, and a paper is never sent to them twice.

Several send processes against one database share the day: each batch of subscribers is leased
by one of them before it is ranked (`coordination.SendLeases`), so each process ranks, renders
and delivers only what it took, and takes over the batches of a process that died.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
from sqlalchemy import bindparam, func, insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from .config import AppConfig
from .coordination import SendLeases
from .db import Database, chunks
from .embeddings import Embedder, embed_missing, from_settings, load_vectors, phrase_vectors
from .links import LinkMaker, LinkSigner, paper_link, safe_url
from .mail.compose import Composer, DkimKey, Outgoing, message_id
from .mail.render import DigestView, RenderedDigest, Renderer
from .mail.transports import Delivered, DeliveryError, Transport
from .mail.view import PaperViews, digest_view, item_view, load_items
from .models import Digest, DigestItem, DigestStatus, Paper, Subscriber, utcnow
from .ranking import Candidates, Community, Examples, History, Interests, Pool, Ranked, Ranker, Reader, TextModel, paper_text
from .schedule import is_due, local_date, local_instant
from .settings import Settings
from .training import community_clicks, history_papers, load_histories, recent_corpus

log = logging.getLogger(__name__)

def is_paused(subscriber: Subscriber, day: dt.date) -> bool:
    """Whether `subscriber` asked for no digest on local date `day` (`paused_until` is the first day back)."""
    return subscriber.paused_until is not None and day < subscriber.paused_until


@dataclass
class Outcome:
    """What happened to one subscriber's digest in this run."""

    email: str
    local_date: dt.date
    status: str  # sent | empty | already | failed | deferred | unknown | dry-run | paused
    items: int = 0
    top: str = ""
    detail: str = ""
    retries: int = 0


@dataclass
class SendReport:
    outcomes: list[Outcome] = field(default_factory=list)
    #: The run was asked to stop before it was through.
    stopped: bool = False
    #: Why delivery stopped early when the server (or the outbox) failed, not a recipient.
    halted: str | None = None
    #: Digests this run did not get to (claimed and left pending, or not claimed yet).
    left: int = 0
    #: What other send processes did, during this run, with digests of this run's subscribers: {status: count}.
    others: dict[str, int] = field(default_factory=dict)
    #: Other processes this run waited for, and for how many subscribers each (at most).
    waited_for: dict[str, int] = field(default_factory=dict)
    #: Subscribers this run took over from each process whose lease ran out (it died, or stalled).
    taken_over: dict[str, int] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def retries(self) -> int:
        return sum(o.retries for o in self.outcomes)

    @property
    def failed(self) -> bool:
        """Something this run tried did not arrive (or may not have), or delivery stopped early."""
        return self.halted is not None or any(o.status in ("failed", "deferred", "unknown") for o in self.outcomes)


@dataclass
class Selection:
    """A subscriber's chosen papers for one date, before anything is stored."""

    subscriber: Subscriber
    local_date: dt.date
    window_start: dt.datetime
    window_end: dt.datetime
    papers: list[Paper]
    ranked: list[Ranked]
    candidates: int

    @property
    def empty_reason(self) -> str:
        if self.candidates == 0:
            return "no new papers since the last digest"
        return f"none of {self.candidates} new papers matched the interests"


def local_today(subscriber: Subscriber, now: dt.datetime) -> dt.date:
    return local_date(now, subscriber.timezone)


def end_of_day(day: dt.date, zone: str) -> dt.datetime:
    """The UTC instant local date `day` ends in `zone`."""
    return local_instant(day + dt.timedelta(days=1), "00:00", zone)


def announced(paper: Paper) -> dt.datetime:
    """When a paper became available: its announcement where known, else when it was first seen."""
    return paper.published or paper.first_seen


@dataclass
class Plan:
    """A subscriber's digest to make for one local date, and what is already known of it.

    No paper announced after the end of that date (`cutoff`, in the subscriber's zone) is a
    candidate. A digest of a past date (`past`: a backfill, a missed day) takes its candidates by
    announcement, in (`window_start`, `cutoff`], since when the service first saw a paper says
    nothing about that day; today's takes the papers first seen since `window_start`."""

    subscriber: Subscriber
    local_date: dt.date
    existing: Digest | None
    window_start: dt.datetime
    cutoff: dt.datetime = dt.datetime.max.replace(tzinfo=dt.timezone.utc)
    past: bool = False

    @property
    def window_end(self) -> dt.datetime | None:
        """Where the window of the next digest begins: the cutoff of a past date, else the run's time."""
        return self.cutoff if self.past else None


class Selector:
    """Chooses each subscriber's papers: candidates since their last digest, ranked by interest.

    The database is read in a few batched queries for all subscribers, the text model is fitted
    once per run, and every candidate paper is vectorized once.
    """

    def __init__(self, db: Database, config: AppConfig, now: dt.datetime, embedder: Embedder | None = None) -> None:
        self.db = db
        self.config = config
        self.now = now
        #: With the semantic extra: papers and phrases are embedded too (their vectors loaded in batch).
        self.embedder = embedder
        self.model: TextModel | None = None
        self.papers: list[Paper] = []
        self._sent: dict[int, set[int]] = {}

    def plan(self, subscribers: Sequence[Subscriber], date: dt.date | None = None) -> list[Plan]:
        """Each subscriber's local date, existing digest and candidate window, then the corpus loaded."""
        dates = {s.id: date or local_today(s, self.now) for s in subscribers}
        lookback = dt.timedelta(days=self.config.ranking.lookback_days)
        existing: dict[tuple[int, dt.date], Digest] = {}
        last_end: dict[tuple[int, dt.date], dt.datetime] = {}
        with self.db.session() as session:
            for day in set(dates.values()):
                for digest in session.exec(select(Digest).where(Digest.local_date == day)):
                    existing[(digest.subscriber_id, day)] = digest
                latest = (
                    select(Digest.subscriber_id, func.max(Digest.local_date).label("latest"))
                    .where(col(Digest.local_date) < day, Digest.status != DigestStatus.FAILED.value)
                    .group_by(Digest.subscriber_id)
                    .subquery()
                )
                rows = session.exec(
                    select(Digest.subscriber_id, Digest.window_end).join(
                        latest, (Digest.subscriber_id == latest.c.subscriber_id) & (Digest.local_date == latest.c.latest)
                    )
                )
                for subscriber_id, window_end in rows:
                    last_end[(subscriber_id, day)] = window_end
        plans = []
        for s in subscribers:
            day = dates[s.id]
            cutoff = end_of_day(day, s.timezone)
            past = day < local_today(s, self.now)
            start = last_end.get((s.id, day)) or (cutoff if past else self.now) - lookback
            plans.append(Plan(s, day, existing.get((s.id, day)), start, cutoff, past))
        todo = [p for p in plans if p.existing is None]
        if todo:
            self._load(todo)
        return plans

    def _load(self, plans: Sequence[Plan]) -> None:
        """Fit the text model on the recent corpus and the subscribers' example papers; vectorize
        the candidates of every plan (papers first seen since its window began, or for a past
        date announced in its window) once for everyone."""
        cfg = self.config.ranking
        live = [p.window_start for p in plans if not p.past]
        since = min(live) if live else None
        backfill = (min(p.window_start for p in plans if p.past), max(p.cutoff for p in plans if p.past)) if len(live) < len(plans) else None
        fit_since = min(since or self.now, self.now - dt.timedelta(days=cfg.fit_days))
        history_ids = history_papers(self.db, [p.subscriber.id for p in plans])
        corpus = recent_corpus(self.db, fit_since, self.now, history_ids, announced=backfill)
        fresh = [
            i for i, p in enumerate(corpus)
            if p.first_seen <= self.now and ((since is not None and p.first_seen >= since) or (backfill is not None and backfill[0] < announced(p) <= backfill[1]))
        ]
        oldest = min((corpus[i].first_seen for i in fresh), default=self.now)
        with self.db.session() as session:
            sent = session.exec(
                select(Digest.subscriber_id, DigestItem.paper_id)
                .join(Digest, col(Digest.id) == DigestItem.digest_id)
                .join(Paper, col(Paper.id) == DigestItem.paper_id)
                .where(col(Paper.first_seen) >= oldest, Digest.status != DigestStatus.FAILED.value)
            ).all()
        for subscriber_id, paper_id in sent:
            self._sent.setdefault(subscriber_id, set()).add(paper_id)
        self.papers = [corpus[i] for i in fresh]
        if not self.papers:
            return
        subscribers = [p.subscriber for p in plans]
        phrases = {phrase for s in subscribers for phrase in Interests.from_subscriber(s).all_phrases()}
        self.model = TextModel()
        counts = self.model.fit_counts((paper_text(p.title, p.abstract, p.authors) for p in corpus), keep=phrases)
        row = {p.id: i for i, p in enumerate(corpus)}
        example_ids = sorted(p for p in history_ids if p in row)
        recent = sorted((i for i, p in enumerate(corpus) if p.first_seen >= fit_since), key=lambda i: corpus[i].first_seen)[-cfg.prf_pool :] if cfg.prf_pool else []
        vectors = self._embeddings(corpus, fresh, [row[p] for p in example_ids], recent, subscribers)
        self.candidates = Candidates.build(
            self.model, [p.id for p in self.papers], counts[fresh], [p.authors for p in self.papers], [p.categories for p in self.papers],
            vectors[fresh] if vectors is not None else None, texts=[paper_text(p.title, p.abstract, p.authors) for p in self.papers], phrases=phrases,
        )
        examples = Examples.build(self.model, [(p, corpus[row[p]].title) for p in example_ids], counts[[row[p] for p in example_ids]],
                                  vectors[[row[p] for p in example_ids]] if vectors is not None else None)
        pool = Pool.build(self.model, counts[recent], vectors[recent] if vectors is not None else None) if recent else None
        community = Community(community_clicks(self.db), cfg.neighbours)
        semantic = self.embedder.phrases if vectors is not None else None
        self.ranker = Ranker(self.model, cfg, examples, community, pool=pool, phrase_embedder=semantic)
        self._first_seen = np.array([p.first_seen.timestamp() for p in self.papers])
        self._announced = np.array([announced(p).timestamp() for p in self.papers])
        self._ids = np.array([p.id for p in self.papers])

    def _embeddings(self, corpus: Sequence[Paper], fresh: Sequence[int], examples: Sequence[int], recent: Sequence[int], subscribers: Sequence[Subscriber]) -> np.ndarray | None:
        """The corpus' embeddings (rows of zeros where a paper has none), loaded in batch: the
        candidates' and the examples' are computed now if they are missing (papers met before
        the model was set); the older pool's are left to `digest embed`. The subscribers'
        phrases are embedded once and kept. None without the semantic extra."""
        if self.embedder is None:
            return None
        needed = sorted({corpus[i].id for i in (*fresh, *examples)})
        made = embed_missing(self.db, self.embedder, needed)
        if made:
            log.info("embedded %d papers that had no vector for %s", made, self.embedder.key)
        vectors, found = load_vectors(self.db, self.embedder.key, [p.id for p in corpus], self.embedder.dim)
        lacking = len(recent) - int(found[list(recent)].sum()) if len(recent) else 0
        if lacking:
            log.info("%d recent papers have no embedding (run `digest embed` to compute them)", lacking)
        phrase_vectors(self.db, self.embedder, {p for s in subscribers for p in Interests.from_subscriber(s).all_phrases()})
        return vectors

    def select(self, plans: Sequence[Plan]) -> list[Selection]:
        """The chosen papers of each plan: ranked for all subscribers together."""
        if self.model is None or not plans:
            return [Selection(p.subscriber, p.local_date, p.window_start, p.window_end or self.now, [], [], 0) for p in plans]
        readers, allowed = [], []
        histories = load_histories(self.db, [plan.subscriber.id for plan in plans])
        for plan in plans:
            subscriber = plan.subscriber
            start, cutoff = plan.window_start.timestamp(), plan.cutoff.timestamp()
            if plan.past:
                mask = (self._announced > start) & (self._announced <= cutoff)
            else:
                mask = (self._first_seen >= start) & (self._announced <= cutoff)
            sent = self._sent.get(subscriber.id)
            if sent:
                mask &= ~np.isin(self._ids, list(sent))
            allowed.append(mask)
            readers.append(Reader(subscriber.id, Interests.from_subscriber(subscriber), histories.get(subscriber.id, History()), subscriber.max_items))
        ranked = self.ranker.rank(readers, self.candidates, allowed)
        return [
            Selection(plan.subscriber, plan.local_date, plan.window_start, plan.window_end or self.now, [self.papers[r.index] for r in chosen], chosen, int(mask.sum()))
            for plan, chosen, mask in zip(plans, ranked, allowed)
        ]


#: Subscribers ranked, claimed (one transaction), leased and delivered together (`DIGEST_SEND_BATCH`).
BATCH = 500
#: Digests to make in a run from which worker processes render and compose them (`workers`).
WORKERS_FROM = 1000
#: What forked worker processes make messages with: (the sender, the run's candidate papers).
_WORKER_STATE: tuple | None = None
#: Digests refused for good (SMTP 5xx) in a row after which an address is switched off.
BOUNCE_LIMIT = 3
#: A digest left `sending` longer than this by a run on another machine counts as interrupted.
SENDING_LEASE = dt.timedelta(minutes=30)
ME = f"{socket.gethostname()}:{os.getpid()}"
#: Digests this process is handing to a transport right now.
IN_FLIGHT: set[int] = set()


@dataclass
class SendOptions:
    """What a run may do beyond the default (which never sends anything twice)."""

    dry_run: bool = False
    #: Only subscribers whose send time has come today (the scheduler's runs).
    due_only: bool = False
    #: Try again digests refused for good (5xx); by default they wait for an operator.
    retry_failed: bool = False
    #: Send again digests whose delivery was interrupted and cannot be checked (may duplicate).
    resend_unknown: bool = False


class DigestSender:
    """Runs the daily send for every active subscriber (or one), on their own local date.

    A digest goes pending -> sending -> sent, or failed (refused for good), or deferred (still
    refused after the retries; the next run tries again). The move to `sending` is a
    compare-and-set in the database, so two runs never deliver the same digest; a run that finds a
    digest left `sending` by a run that died checks the outbox for its file, or marks it unknown,
    and never sends it twice unless told to.
    """

    def __init__(
        self,
        db: Database,
        settings: Settings,
        config: AppConfig,
        renderer: Renderer,
        transport: Transport,
        clock: Callable[[], dt.datetime] = utcnow,
        workers: int = 1,
    ) -> None:
        """`workers` > 1: a run with many digests renders and composes them in that many processes
        (forked: only for a process with no other threads, such as `digest send`)."""
        self.workers = workers
        self._workers = None
        self.db = db
        self.settings = settings
        self.config = config
        self.renderer = renderer
        self.transport = transport
        self.clock = clock
        self.links = LinkMaker(settings.base_url, LinkSigner(settings.require_secret_key(), settings.old_secret_keys, installation=db.installation().id))
        self.dkim = DkimKey.load(settings.dkim_key, settings.dkim_selector, settings.dkim_domain) if settings.dkim_key else None
        #: What messages are made with: made again for each run (`_worker_processes`).
        self.composer, self.shown = Composer(settings.sender, dkim_key=self.dkim), PaperViews()
        #: Why delivery stopped in this run: a fault of the server or the outbox (see `_failed`).
        self._halted: str | None = None
        #: This process's leases on the subscribers it works on (`coordination`).
        self.leases = SendLeases(db, ME, dt.timedelta(seconds=settings.send_lease))  # the real clock (see `coordination`)
        #: Holders whose leases ran out when this run took them over: their `sending` digests were interrupted.
        self._gone: set[str] = set()

    def subscribers(self, only: str | None = None) -> list[Subscriber]:
        with self.db.session() as session:
            query = select(Subscriber).where(Subscriber.active == True, col(Subscriber.unsubscribed_at).is_(None))  # noqa: E712
            if only:
                query = query.where(Subscriber.email == only.strip().lower())
            return list(session.exec(query.order_by(Subscriber.email)).all())

    def run(
        self,
        date: dt.date | None = None,
        only: str | None = None,
        dry_run: bool = False,
        on_progress: Callable[[Outcome], None] | None = None,
        options: SendOptions | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> SendReport:
        """Send (or resume) the digest of `date`, or of each subscriber's today. `should_stop` is
        asked before each message: a stop finishes the messages in hand and leaves the rest
        (digests claimed but not sent stay `pending` for the next run). A fault of the server or
        the outbox (not of a recipient) stops the run the same way (`SendReport.halted`).

        The candidate window ends at an instant taken when no ingest transaction is open
        (`Database.settled_instant`): every paper stamped before it is visible to this run, and
        every paper stamped after it falls in the next digest's window."""
        options = options or SendOptions(dry_run=dry_run)
        now = self.db.settled_instant(self.clock)
        subscribers = self.subscribers(only)
        if options.due_only and date is None:
            subscribers = [s for s in subscribers if is_due(s.send_at, s.timezone, now)]
        report = SendReport()
        for subscriber in [s for s in subscribers if is_paused(s, date or local_today(s, now))]:
            report.outcomes.append(Outcome(subscriber.email, date or local_today(subscriber, now), "paused", detail=f"paused until {subscriber.paused_until}"))
        subscribers = [s for s in subscribers if not is_paused(s, date or local_today(s, now))]
        if not subscribers:
            return report
        selector = Selector(self.db, self.config, now, from_settings(self.settings.embedding_model))
        plans = selector.plan(subscribers, date)
        parallel = not self.transport.verifiable and self.transport.connections > 1
        fresh = sum(1 for p in plans if p.existing is None)
        workers = self.workers if self.workers > 1 and fresh >= WORKERS_FROM and not options.dry_run else 0
        self._halted = None
        asked_to_stop = should_stop

        def should_stop() -> bool:
            return self._halted is not None or asked_to_stop()

        try:
            self._run_batches(plans, selector, options, now, report, on_progress, should_stop, parallel, workers)
        except DeliveryError as exc:  # the transport could not be opened (an outbox folder that cannot be made)
            if not exc.server:
                raise
            self._halted = str(exc)
        report.halted = self._halted
        report.left = _left(plans, report)
        if report.halted:  # the caller says so (the CLI as an error, the service in its log)
            log.info("delivery stopped: %s; %d digests left for the next run", report.halted, report.left)
        return report

    def _run_batches(self, plans: list[Plan], selector: Selector, options: SendOptions, now: dt.datetime, report: SendReport,
                     on_progress: Callable[[Outcome], None] | None, should_stop: Callable[[], bool], parallel: bool, workers: int) -> None:
        leasing = not options.dry_run
        with (self.transport, (ThreadPoolExecutor(self.transport.connections, "smtp") if parallel else contextlib.nullcontext()) as pool,
              self._worker_processes(workers, selector, options.dry_run), self.leases.heartbeat() if leasing else contextlib.nullcontext()):
            # Batch after batch: while the worker processes (if any) make the messages of one
            # batch, this process ranks and claims the next, then delivers the one before.
            size = self.settings.send_batch
            batches = self._leased_batches(plans, options, report, should_stop) if leasing else (plans[i : i + size] for i in range(0, len(plans), size))
            waiting: _Prepared | None = None
            try:
                while True:
                    stopped = should_stop()  # what was claimed and not sent stays pending for the next run
                    batch: list[Plan] | None = None
                    if not stopped:
                        batch = next(batches, None)  # [] while waiting for other processes
                        prepared = self._prepare(batch, selector, options, now) if batch else None
                        if waiting is not None:
                            stopped = self._deliver_many(waiting.jobs, waiting.messages, now, should_stop, pool)
                            outcomes = waiting.outcomes()
                            report.outcomes.extend(outcomes)
                            if on_progress:
                                for outcome in outcomes:
                                    on_progress(outcome)
                            if leasing:
                                self.leases.release(p.subscriber.id for p in waiting.plans)
                            waiting = None
                    if stopped:
                        report.stopped = True
                        log.info("stopping: %d digests left for the next run", _left(plans, report))
                        break
                    if batch is None:
                        break
                    waiting = prepared
            finally:
                if leasing:  # whatever this run did not finish is free for another process at once
                    self.leases.release(p.subscriber.id for p in plans)

    def _leased_batches(self, plans: list[Plan], options: SendOptions, report: SendReport, should_stop: Callable[[], bool]) -> Iterator[list[Plan]]:
        """The batches of plans this process works on: each taken under lease (`coordination`).

        First, the plans in order, BATCH at a time: of each batch, the subscribers no other process
        holds, their digests read again once leased (another process may have moved them since
        this run began). Then, until every plan is settled, what other processes left: batches
        whose leases ran out (their process died) are taken over; while others still hold leases,
        this run waits for them, and reports what they did (`SendReport.others`)."""
        resumable = {DigestStatus.PENDING.value, DigestStatus.DEFERRED.value, DigestStatus.SENDING.value}
        if options.retry_failed:
            resumable.add(DigestStatus.FAILED.value)
        if options.resend_unknown:
            resumable.add(DigestStatus.UNKNOWN.value)
        unsettled = {DigestStatus.PENDING.value, DigestStatus.SENDING.value}  # still in someone's hands
        given: set[int] = set()

        def taken(wanted: list[Plan]) -> list[Plan]:
            got = self.leases.take((p.subscriber.id, p.local_date) for p in wanted)
            self._gone.update(got.expired_holders)
            for holder, count in got.taken_over.items():
                report.taken_over[holder] = report.taken_over.get(holder, 0) + count
                log.warning("took over %d subscribers from %s, whose send lease ran out", count, holder)
            return [p for p in wanted if p.subscriber.id in got.subscribers]

        size = self.settings.send_batch
        for start in range(0, len(plans), size):
            if should_stop():
                return
            chunk = plans[start : start + size]
            settled = [p for p in chunk if p.existing is not None and p.existing.status not in resumable]
            before = {id(p): p.existing.status if p.existing else None for p in chunk}
            mine = taken([p for p in chunk if p.existing is None or p.existing.status in resumable])
            self._refresh(mine)
            batch = list(settled)
            for plan in mine:
                status = plan.existing.status if plan.existing else None
                if status != before[id(plan)] and status not in unsettled:  # another process finished it meanwhile
                    self._by_others(plan, report)
                else:
                    batch.append(plan)
            given.update(id(p) for p in settled)
            given.update(id(p) for p in mine)
            if batch:
                yield batch

        pause = min(2.0, self.leases.duration.total_seconds() / 4)
        while not should_stop():
            rest = [p for p in plans if id(p) not in given]
            if not rest:
                return
            self._refresh(rest)
            for plan in rest:
                if plan.existing is not None and plan.existing.status not in unsettled:
                    self._by_others(plan, report)
                    given.add(id(plan))
            rest = [p for p in rest if id(p) not in given]
            if not rest:
                return
            mine = taken(rest)
            if mine:
                self._refresh(mine)
                given.update(id(p) for p in mine)
                for start in range(0, len(mine), size):
                    yield mine[start : start + size]
                continue
            for holder, count in self.leases.held_by_others(p.subscriber.id for p in rest).items():
                report.waited_for[holder] = max(report.waited_for.get(holder, 0), count)
            log.info("waiting for %s", ", ".join(f"{holder} ({count} subscribers)" for holder, count in report.waited_for.items()) or "other processes")
            yield []  # deliver what is in hand before waiting
            deadline = time.monotonic() + pause
            while time.monotonic() < deadline and not should_stop():
                time.sleep(0.1)

    def _refresh(self, plans: Sequence[Plan]) -> None:
        """Read again the digests of `plans` (another process may have made or moved them)."""
        if not plans:
            return
        by_key = {(p.subscriber.id, p.local_date): p for p in plans}
        found: dict[tuple[int, dt.date], Digest] = {}
        with self.db.session() as session:
            for day in {p.local_date for p in plans}:
                ids = [p.subscriber.id for p in plans if p.local_date == day]
                for part in chunks(ids):
                    for digest in session.exec(select(Digest).where(Digest.local_date == day, col(Digest.subscriber_id).in_(part))):
                        found[(digest.subscriber_id, day)] = digest
        for key, plan in by_key.items():
            plan.existing = found.get(key)

    @staticmethod
    def _by_others(plan: Plan, report: SendReport) -> None:
        status = plan.existing.status
        report.others[status] = report.others.get(status, 0) + 1

    @contextlib.contextmanager
    def _worker_processes(self, workers: int, selector: Selector, dry_run: bool = False) -> Iterator[None]:
        """Processes that render and compose messages while this one ranks, stores and delivers.

        They are forked once the candidates are loaded, so they know every paper without being
        sent any; a task is a digest's ids, its subscriber's name and the rows of its papers.
        The run's composer (8bit where the open transport carries it) and `PaperViews` are made
        first, so that the workers share them."""
        global _WORKER_STATE
        self.composer = Composer(self.settings.sender, dkim_key=self.dkim, eight_bit=not dry_run and self.transport.eight_bit_mime())
        self.shown = PaperViews()
        if workers < 2:
            yield
            return
        self.db.engine.dispose()  # no database connection crosses the fork
        _WORKER_STATE = (self, selector.papers)
        pool = multiprocessing.get_context("fork").Pool(workers, initializer=_warm_worker)
        self._workers = pool
        try:
            yield
        finally:
            self._workers = None
            _WORKER_STATE = None
            pool.terminate()
            pool.join()

    def _prepare(self, plans: Sequence[Plan], selector: Selector, options: SendOptions, now: dt.datetime) -> _Prepared:
        """One batch of subscribers ranked together and claimed in one transaction; their
        messages begun (by the worker processes, if any)."""
        done: dict[int, Outcome] = {}
        jobs: list[_Job] = []
        fresh = [p for p in plans if p.existing is None]
        for plan in plans:
            if plan.existing is not None:
                outcome, job = self._resume(plan, options, now)
                if job is None:
                    done[id(plan)] = outcome
                else:
                    jobs.append(job)
        if fresh:
            selections = selector.select(fresh)
            if options.dry_run:
                for plan, selection in zip(fresh, selections):
                    done[id(plan)] = _dry_run(selection)
            else:
                for plan, selection, claim in zip(fresh, selections, self.claim_many(selections)):
                    outcome = Outcome(plan.subscriber.email, plan.local_date, "already")
                    if claim is None:
                        outcome.detail = "claimed by another run"
                        done[id(plan)] = outcome
                    elif not selection.ranked:
                        outcome.status, outcome.detail = "empty", selection.empty_reason
                        done[id(plan)] = outcome
                    else:
                        digest, items = claim
                        rows = [ranked.index for ranked in selection.ranked]
                        jobs.append(_Job(plan, digest, plan.subscriber, items, selection.papers, outcome, DigestStatus.PENDING, rows))
        return _Prepared(plans, done, jobs, self._messages(jobs, now))

    def _resume(self, plan: Plan, options: SendOptions, now: dt.datetime) -> tuple[Outcome, _Job | None]:
        """A digest that exists already: left alone, recovered, or (as a job) delivered now."""
        outcome = Outcome(plan.subscriber.email, plan.local_date, "already")
        digest = plan.existing
        status = digest.status
        if status == DigestStatus.SENDING.value:
            return self._recover(digest, plan, outcome, options, now)
        resumable = {DigestStatus.PENDING.value, DigestStatus.DEFERRED.value}
        if options.retry_failed:
            resumable.add(DigestStatus.FAILED.value)
        if options.resend_unknown:
            resumable.add(DigestStatus.UNKNOWN.value)
        if status not in resumable:
            outcome.detail = status if status != DigestStatus.FAILED.value else f"failed: {digest.reason}"
            return outcome, None
        if options.dry_run:
            outcome.detail = f"{status}, would resume"
            return outcome, None
        return outcome, self._job(plan, digest, outcome, DigestStatus(status))

    def _job(self, plan: Plan, digest: Digest, outcome: Outcome, expected: DigestStatus) -> _Job:
        items, papers = load_items(self.db, digest.id)
        return _Job(plan, digest, plan.subscriber, items, papers, outcome, expected)

    def claim_many(self, selections: Sequence[Selection]) -> list[tuple[ClaimedDigest, list[ClaimedItem]] | None]:
        """Record the digests of a batch and their items in one transaction; None for a digest
        that exists already (another run claimed it first)."""
        now = self.clock()
        rows = [
            {
                "subscriber_id": s.subscriber.id, "local_date": s.local_date, "window_start": s.window_start, "window_end": s.window_end,
                "status": (DigestStatus.PENDING if s.ranked else DigestStatus.EMPTY).value,
                "reason": None if s.ranked else s.empty_reason, "attempts": 0, "created_at": now,
            }
            for s in selections
        ]
        with self.db.transaction() as session:
            ids = _insert_new_digests(session, rows)
            item_rows = [
                {"digest_id": ids[s.subscriber.id], "paper_id": paper.id, "rank": rank, "score": ranked.score, "reason": ranked.reason}
                for s in selections if s.subscriber.id in ids
                for rank, (ranked, paper) in enumerate(zip(s.ranked, s.papers), start=1)
            ]
            item_ids: dict[tuple[int, int], int] = {}
            if item_rows:
                table = DigestItem.__table__
                result = session.connection().execute(insert(table).returning(table.c.id, table.c.digest_id, table.c.rank), item_rows)
                item_ids = {(digest_id, rank): item_id for item_id, digest_id, rank in result}
        claims: list[tuple[ClaimedDigest, list[ClaimedItem]] | None] = []
        for selection, row in zip(selections, rows):
            digest_id = ids.get(selection.subscriber.id)
            if digest_id is None:
                log.info("digest of %s for %s was claimed by another run", selection.subscriber.email, selection.local_date)
                claims.append(None)
                continue
            if not selection.ranked:
                log.info("no digest for %s on %s: %s", selection.subscriber.email, selection.local_date, row["reason"])
            items = [ClaimedItem(item_ids[(digest_id, rank)], rank, ranked.reason) for rank, ranked in enumerate(selection.ranked, start=1)]
            claims.append((ClaimedDigest(digest_id, row["subscriber_id"], row["local_date"], row["status"]), items))
        return claims

    def _recover(self, digest: Digest, plan: Plan, outcome: Outcome, options: SendOptions, now: dt.datetime) -> tuple[Outcome, _Job | None]:
        """A digest found `sending`: in flight in a live run (left alone), or interrupted."""
        subscriber = plan.subscriber
        if not _interrupted(digest, now, self._gone):
            outcome.detail = f"being sent by {digest.claimed_by}"
            return outcome, None
        delivered = self.transport.delivered(outbox_key(digest, subscriber))
        if delivered:
            self._finish(digest, subscriber, DigestStatus.SENT, sent_at=digest.sending_since or now)
            outcome.status, outcome.detail = "sent", "found in the outbox after an interruption"
            return outcome, None
        if delivered is False or options.resend_unknown:
            # The outbox has no (whole) file: the write never completed, so sending is safe.
            if not self._transition(digest, DigestStatus.SENDING, DigestStatus.PENDING):
                outcome.detail = "taken by another run"
                return outcome, None
            return outcome, self._job(plan, digest, outcome, DigestStatus.PENDING)
        self._finish(digest, subscriber, DigestStatus.UNKNOWN, "interrupted while sending; the SMTP server may or may not have it")
        log.warning("digest %d of %s was interrupted while sending: reported unknown, not sent again", digest.id, subscriber.email)
        outcome.status, outcome.detail = "unknown", "interrupted while sending"
        return outcome, None

    def _deliver_many(self, jobs: Sequence[_Job], messages: Iterator[Outgoing], now: dt.datetime, should_stop: Callable[[], bool], pool: ThreadPoolExecutor | None) -> bool:
        """Deliver `jobs` (their `messages` in the same order); True when asked to stop before the end.

        To a transport that can tell afterwards what it delivered (the outbox), the batch is
        marked `sending` in one statement, written, made durable with one sync and marked `sent`
        in one more: a crash in between is resolved by looking. To one that cannot (SMTP), each
        message is marked `sending` on its own just before it is handed over, so that a crash
        leaves only the messages in hand (one per connection) in doubt.
        """
        if not jobs:
            return False
        if pool is not None:
            return self._deliver_parallel(jobs, messages, should_stop, pool)
        if not self.transport.verifiable:
            for job, message in zip(jobs, messages):
                if should_stop():
                    return True
                self._deliver_one(job, message)
            return False
        started = self._start_many(jobs)
        IN_FLIGHT.update(job.digest.id for job in started)
        sent: list[_Job] = []
        stopped = False
        try:
            for position, (job, message) in enumerate(zip(jobs, messages)):
                if job.finished:  # not started: another run has it
                    continue
                if should_stop():
                    self._stop_many([j for j in jobs[position:] if not j.finished])
                    stopped = True
                    break
                if isinstance(message, Unmade):
                    self._unmade(job, message)
                    continue
                try:
                    delivered = self.transport.send(message, outbox_key(job.digest, job.subscriber))
                except DeliveryError as exc:
                    self._failed(job, exc)
                    if self._halted:
                        self._stop_many([j for j in jobs[position + 1 :] if not j.finished])
                        stopped = True
                        break
                    continue
                job.delivered(delivered)
                sent.append(job)
            self.transport.flush()
            self._finish_many(sent)
        finally:
            IN_FLIGHT.difference_update(job.digest.id for job in started)
        return stopped

    def _deliver_parallel(self, jobs: Sequence[_Job], messages: Iterator[Outgoing], should_stop: Callable[[], bool], pool: ThreadPoolExecutor) -> bool:
        """Messages rendered here and handed to the pool's threads, each with its own connection;
        at most two per thread wait, so memory stays flat however long the list."""
        window = threading.BoundedSemaphore(2 * self.transport.connections)
        futures = []
        stopped = False
        try:
            for job, message in zip(jobs, messages):
                if should_stop():
                    stopped = True
                    break
                if isinstance(message, Unmade):
                    self._unmade(job, message)
                    continue
                window.acquire()
                future = pool.submit(self._deliver_one, job, message, should_stop)
                future.add_done_callback(lambda _: window.release())
                futures.append(future)
        finally:
            for future in futures:
                future.result()
        return stopped

    def _deliver_one(self, job: _Job, message: Outgoing | Unmade, should_stop: Callable[[], bool] = lambda: False) -> None:
        """One message: marked `sending`, handed over, recorded. One waiting for a thread when a
        stop comes is left `pending` for the next run."""
        digest = job.digest
        if should_stop():
            return
        if isinstance(message, Unmade):
            self._unmade(job, message)
            return
        if not self._transition(digest, job.expected, DigestStatus.SENDING, message_id=message.message_id):
            job.outcome.detail = "taken by another run"
            job.finished = True
            return
        IN_FLIGHT.add(digest.id)
        try:
            delivered = self.transport.send(message, outbox_key(digest, job.subscriber))
        except DeliveryError as exc:
            self._failed(job, exc)
            return
        finally:
            IN_FLIGHT.discard(digest.id)
        self._finish(digest, job.subscriber, DigestStatus.SENT, sent_at=self.clock())
        job.delivered(delivered)

    def _failed(self, job: _Job, exc: DeliveryError) -> None:
        """Record a message that did not go: failed (refused for good), or deferred.

        Only a refusal that blames the address counts as a bounce. A fault of the server, the
        session or the outbox is nobody's bounce: it stops the run (`_halted`), the message
        tried is deferred, and one never tried (the circuit breaker was open already) goes back
        to `pending`; both are sent by the next run."""
        if exc.server:
            if self._halted is None:
                self._halted = str(exc)
            if not exc.tried:
                self._transition(job.digest, DigestStatus.SENDING, DigestStatus.PENDING)
                return  # not an outcome of this run: left for the next one
        status = DigestStatus.FAILED if exc.permanent and not exc.server else DigestStatus.DEFERRED
        self._finish(job.digest, job.subscriber, status, str(exc), bounced=exc.bounce and not exc.server)
        if not exc.server:
            log.error("digest for %s not delivered (%s): %s", job.subscriber.email, status.value, exc)
        job.outcome.status, job.outcome.detail, job.outcome.retries = status.value, str(exc), exc.retries
        job.finished = True

    def _unmade(self, job: _Job, unmade: Unmade) -> None:
        """A message that could not be made (a value its headers cannot carry, a template that
        fails on its data): that digest fails, with the reason; no bounce, nothing else stops.
        Once the cause is fixed, `digest send --retry-failed --date D` sends it."""
        reason = f"the message could not be made: {unmade.reason}"
        self._finish(job.digest, job.subscriber, DigestStatus.FAILED, reason)
        log.error("digest for %s failed: %s", job.subscriber.email, reason)
        job.outcome.status, job.outcome.detail = DigestStatus.FAILED.value, reason
        job.finished = True

    def _start_many(self, jobs: Sequence[_Job]) -> list[_Job]:
        """Mark `jobs` sending, each only if still in the state it was read in: those that were."""
        started: set[int] = set()
        values = self._sending_values()
        with self.db.transaction() as session:
            for expected in {job.expected for job in jobs}:
                for part in chunks([job.digest.id for job in jobs if job.expected == expected]):
                    statement = update(Digest).where(col(Digest.id).in_(part), Digest.status == expected.value).values(**values).returning(Digest.id)
                    started.update(session.execute(statement).scalars())
            if started:  # as `_transition` records it for a message sent on its own
                table = Digest.__table__
                session.connection().execute(
                    update(table).where(table.c.id == bindparam("digest")).values(message_id=bindparam("message")),
                    [{"digest": job.digest.id, "message": message_id(job.digest.id, job.digest.local_date, self.settings.sender)}
                     for job in jobs if job.digest.id in started],
                )
        for job in jobs:
            if job.digest.id in started:
                job.digest.status = DigestStatus.SENDING.value
            else:
                log.info("digest %d moved on in another run", job.digest.id)
                job.outcome.detail = "taken by another run"
                job.finished = True
        return [job for job in jobs if job.digest.id in started]

    def _stop_many(self, jobs: Sequence[_Job]) -> None:
        """Give back digests marked `sending` but not begun: the next run sends them."""
        with self.db.transaction() as session:
            for part in chunks([job.digest.id for job in jobs]):
                session.execute(update(Digest).where(col(Digest.id).in_(part), Digest.status == DigestStatus.SENDING.value).values(status=DigestStatus.PENDING.value))

    def _finish_many(self, jobs: Sequence[_Job]) -> None:
        """Record a batch as sent, and the good news for addresses that had bounced, in one transaction."""
        if not jobs:
            return
        sent_at = self.clock()
        with self.db.transaction() as session:
            for part in chunks([job.digest.id for job in jobs]):
                session.execute(update(Digest).where(col(Digest.id).in_(part)).values(status=DigestStatus.SENT.value, sent_at=sent_at))
            recovered = [job.subscriber.id for job in jobs if job.subscriber.bounces]
            if recovered:
                session.execute(update(Subscriber).where(col(Subscriber.id).in_(recovered)).values(bounces=0))
        for job in jobs:
            job.digest.status = DigestStatus.SENT.value

    def _sending_values(self) -> dict:
        """What marks a digest `sending` by this run: the state, who, since when, one attempt more."""
        return {"status": DigestStatus.SENDING.value, "claimed_by": ME, "sending_since": self.clock(), "attempts": Digest.attempts + 1}

    def _transition(self, digest: Digest, expected: DigestStatus, status: DigestStatus, message_id: str | None = None) -> bool:
        """Move `digest` from `expected` to `status` unless another run moved it first."""
        values: dict = {"status": status.value}
        if status == DigestStatus.SENDING:
            values = self._sending_values()
            if message_id:
                values["message_id"] = message_id
        with self.db.transaction() as session:
            result = session.execute(update(Digest).where(Digest.id == digest.id, Digest.status == expected.value).values(**values))
        if result.rowcount != 1:
            log.info("digest %d moved on in another run", digest.id)
            return False
        digest.status = status.value
        return True

    def _finish(
        self, digest: Digest, subscriber: Subscriber, status: DigestStatus, reason: str | None = None, *, sent_at: dt.datetime | None = None, bounced: bool = False
    ) -> None:
        """Record the outcome of a delivery, and what it says about the address, in one transaction."""
        values: dict = {"status": status.value}
        if reason is not None:
            values["reason"] = reason
        if sent_at is not None:
            values["sent_at"] = sent_at
        with self.db.transaction() as session:
            session.execute(update(Digest).where(Digest.id == digest.id).values(**values))
            if bounced:
                row = session.get(Subscriber, digest.subscriber_id)
                row.bounces += 1
                if row.bounces >= BOUNCE_LIMIT:
                    row.active = False
                    row.disabled_reason = f"bounced {row.bounces} times in a row; last: {reason}"
                    log.warning("%s switched off: %s", row.email, row.disabled_reason)
                session.add(row)
            elif status == DigestStatus.SENT and subscriber.bounces:
                session.execute(update(Subscriber).where(Subscriber.id == digest.subscriber_id).values(bounces=0))
        digest.status = status.value

    def view(self, digest: Digest, subscriber: Subscriber, items: Sequence[DigestItem], papers: Sequence[Paper]) -> DigestView:
        return digest_view(self.links, digest, subscriber, items, papers, self.shown)

    def render(self, digest: Digest, subscriber: Subscriber, items: Sequence[DigestItem], papers: Sequence[Paper]) -> RenderedDigest:
        return self.renderer.render(self.view(digest, subscriber, items, papers))

    def _messages(self, jobs: Sequence[_Job], now: dt.datetime) -> Iterator[Outgoing | Unmade]:
        """The message of each job, in order, or why it could not be made: made by the worker
        processes of the run where there are (see `run`), else here."""
        if self._workers is None or any(job.paper_rows is None for job in jobs):
            return (_made(self.message, job.digest, job.subscriber, job.items, job.papers, now) for job in jobs)
        tasks = [
            (job.digest.id, job.digest.subscriber_id, job.digest.local_date, job.subscriber.email, job.subscriber.name,
             job.subscriber.interests, job.subscriber.link_id, [(item.id, item.rank, item.reason) for item in job.items], job.paper_rows, now)
            for job in jobs
        ]
        return self._workers.imap(_message_in_worker, tasks, chunksize=8)

    def message(self, digest: Digest | ClaimedDigest, subscriber: Subscriber, items: Sequence, papers: Sequence[Paper], now: dt.datetime) -> Outgoing:
        view = self.view(digest, subscriber, items, papers)
        return self.composer.compose(self.renderer.render(view), to_email=subscriber.email, to_name=subscriber.name,
                                     msg_id=message_id(digest.id, digest.local_date, self.settings.sender), unsubscribe_url=view.unsubscribe_url, date=now)


def _left(plans: Sequence[Plan], report: SendReport) -> int:
    """The digests of `plans` that have no outcome yet, here or in another process (a paused
    subscriber has an outcome but no plan)."""
    return len(plans) - (len(report.outcomes) - report.count("paused")) - sum(report.others.values())


@dataclass(frozen=True)
class Unmade:
    """A message that could not be made, and why (in words for the operator)."""

    reason: str


def _made(make: Callable[..., Outgoing], *args: object) -> Outgoing | Unmade:
    """`make(*args)`, or why it failed: whatever goes wrong in making one message is that
    message's failure, never the batch's (see `DigestSender._unmade`)."""
    try:
        return make(*args)
    except Exception as exc:  # any error of one message's data or template
        log.debug("making a message failed", exc_info=True)
        return Unmade(f"{type(exc).__name__}: {exc}"[:500])


@dataclass(slots=True)
class ClaimedDigest:
    """What a run needs of a digest it has just stored (cheaper than a model object per digest)."""

    id: int
    subscriber_id: int
    local_date: dt.date
    status: str


@dataclass(slots=True)
class ClaimedItem:
    id: int
    rank: int
    reason: str


@dataclass
class _Prepared:
    """A batch claimed and on its way: its plans, those settled already, and the jobs to deliver."""

    plans: Sequence[Plan]
    done: dict[int, Outcome]
    jobs: list[_Job]
    messages: Iterator[Outgoing]

    def outcomes(self) -> list[Outcome]:
        for job in self.jobs:
            if job.finished:
                self.done[id(job.plan)] = job.outcome
        return [self.done[id(p)] for p in self.plans if id(p) in self.done]


@dataclass(eq=False)
class _Job:
    """A claimed digest on its way to the transport, and what became of it."""

    plan: Plan
    digest: Digest | ClaimedDigest
    subscriber: Subscriber
    items: list[DigestItem] | list[ClaimedItem]
    papers: list[Paper]
    outcome: Outcome
    #: The state the digest was read in: it moves to `sending` only from there.
    expected: DigestStatus
    #: Where its papers are among the run's candidates (what a worker process knows them by).
    paper_rows: list[int] | None = None
    finished: bool = False

    def delivered(self, delivered: Delivered) -> None:
        self.outcome.status, self.outcome.items, self.outcome.retries = "sent", len(self.items), delivered.retries
        self.outcome.top = self.papers[0].title if self.papers else ""
        self.outcome.detail = delivered.where
        self.finished = True


def _warm_worker() -> None:
    """A new worker works out what every candidate paper shows (its TL;DR above all, some 0.4 ms a
    paper) while the parent ranks the first batch, instead of on its first messages."""
    for paper in _WORKER_STATE[1]:
        _WORKER_STATE[0].shown.fields(paper)


def _message_in_worker(task: tuple) -> Outgoing | Unmade:
    """A message made in a worker process from a task of `DigestSender._messages` (or why not)."""
    sender, papers = _WORKER_STATE
    digest_id, subscriber_id, local_date, email, name, interests, link_id, items, rows, now = task
    digest = ClaimedDigest(digest_id, subscriber_id, local_date, DigestStatus.SENDING.value)
    subscriber = SimpleNamespace(email=email, name=name, interests=interests, link_id=link_id)
    return _made(sender.message, digest, subscriber, [ClaimedItem(*item) for item in items], [papers[row] for row in rows], now)


def _dry_run(selection: Selection) -> Outcome:
    return Outcome(
        selection.subscriber.email, selection.local_date, "dry-run" if selection.ranked else "empty", len(selection.ranked),
        selection.papers[0].title if selection.papers else "", "" if selection.ranked else selection.empty_reason,
    )


def _insert_new_digests(session, rows: list[dict]) -> dict[int, int]:
    """Insert the digests of `rows` that do not exist yet: {subscriber id: new digest id}.

    SQLite and PostgreSQL skip an existing (subscriber, date) within the one statement (ON
    CONFLICT DO NOTHING); elsewhere each row is tried in a savepoint of its own."""
    table = Digest.__table__
    connection = session.connection()
    dialect = connection.dialect.name
    if dialect in ("sqlite", "postgresql"):
        from sqlalchemy.dialects import postgresql, sqlite

        statement = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(table).on_conflict_do_nothing(index_elements=["subscriber_id", "local_date"])
        result = connection.execute(statement.returning(table.c.id, table.c.subscriber_id), rows)
        return {subscriber_id: digest_id for digest_id, subscriber_id in result}
    ids = {}
    for row in rows:
        try:
            with session.begin_nested():
                ids[row["subscriber_id"]] = connection.execute(insert(table).returning(table.c.id), row).scalar_one()
        except IntegrityError:
            pass
    return ids


def _interrupted(digest: Digest, now: dt.datetime, gone: set[str] | frozenset[str] = frozenset()) -> bool:
    """Whether the run that began sending `digest` is gone: its process, on this machine, or its
    lease (`gone`: holders whose send leases ran out; else the digest's own `SENDING_LEASE`)."""
    if digest.claimed_by in gone:
        return True
    host, _, pid = (digest.claimed_by or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        if int(pid) == os.getpid():
            return digest.id not in IN_FLIGHT  # this process began it: in hand, or cut short
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
    return digest.sending_since is None or now - digest.sending_since > SENDING_LEASE


def outbox_key(digest: Digest, subscriber: Subscriber) -> str:
    """The file name (without `.eml`) of a digest: its date, its id and a readable recipient."""
    readable = "".join(c if c.isalnum() or c in "-_." else "_" for c in subscriber.email)[:80]
    return f"{digest.local_date:%Y-%m-%d}_{digest.id:08d}_{readable}"


@dataclass
class Preview:
    """A digest rendered without sending: the stored one of that date, or the one a send would make."""

    local_date: dt.date
    view: DigestView | None
    rendered: RenderedDigest | None
    reason: str = ""


def preview_digest(sender: DigestSender, subscriber: Subscriber, date: dt.date | None = None) -> Preview:
    """Render `subscriber`'s digest for `date`; nothing is stored and links go straight to the papers
    unless the digest exists already (then it is shown as it was sent, tracked links included)."""
    selector = Selector(sender.db, sender.config, sender.clock(), from_settings(sender.settings.embedding_model))
    day = date or local_today(subscriber, selector.now)
    if is_paused(subscriber, day):
        return Preview(day, None, None, f"digests are paused until {subscriber.paused_until}")
    plan = selector.plan([subscriber], date)[0]
    if plan.existing is not None:
        if plan.existing.status == DigestStatus.EMPTY.value:
            return Preview(plan.local_date, None, None, plan.existing.reason or "empty")
        items, papers = load_items(sender.db, plan.existing.id)
        view = sender.view(plan.existing, subscriber, items, papers)
        return Preview(plan.local_date, view, sender.renderer.render(view))
    [selection] = selector.select([plan])
    if not selection.ranked:
        return Preview(plan.local_date, None, None, selection.empty_reason)
    view = DigestView(
        subscriber_email=subscriber.email,
        subscriber_name=subscriber.name,
        local_date=plan.local_date,
        interests=[i["phrase"] for i in subscriber.interests],
        items=[
            item_view(paper, rank, ranked.reason, paper_link(paper), "#preview", "#preview", safe_url(paper.pdf_url) or "")
            for rank, (ranked, paper) in enumerate(zip(selection.ranked, selection.papers), start=1)
        ],
        view_url="#preview",
        unsubscribe_url="#preview",
        preferences_url="#preview",
    )
    return Preview(plan.local_date, view, sender.renderer.render(view))
