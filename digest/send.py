"""The daily send: for each subscriber, choose the day's papers, record them, render and deliver.

Each digest is claimed for (subscriber, local date) in one transaction, together with its items,
before it is rendered: the unique constraint makes a second claim fail, so however often `send`
runs, a subscriber gets one digest per local date, and a paper is never sent to them twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from .config import AppConfig
from .db import Database, chunks
from .delivery import DeliveryError, Transport
from .links import LinkMaker, LinkSigner
from .mail import compose, message_id
from .models import Digest, DigestItem, DigestStatus, Paper, Subscriber, utcnow
from .ranking import Candidates, Community, Examples, History, Interests, Ranked, Ranker, Reader, TextModel, paper_text
from .render import DigestView, ItemView, RenderedDigest, Renderer, author_line, shorten
from .schedule import is_due, local_date
from .settings import Settings
from .training import community_clicks, load_histories

log = logging.getLogger(__name__)

SOURCE_LABELS = {
    "hf-trending": "Hugging Face trending",
    "jsonl": "JSONL feed",
}


@dataclass
class Outcome:
    """What happened to one subscriber's digest in this run."""

    email: str
    local_date: dt.date
    status: str  # sent | empty | already | failed | deferred | unknown | dry-run
    items: int = 0
    top: str = ""
    detail: str = ""
    retries: int = 0


@dataclass
class SendReport:
    outcomes: list[Outcome] = field(default_factory=list)
    #: The run was asked to stop before it was through.
    stopped: bool = False

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def retries(self) -> int:
        return sum(o.retries for o in self.outcomes)

    @property
    def failed(self) -> bool:
        """Something this run tried did not arrive (or may not have)."""
        return any(o.status in ("failed", "deferred", "unknown") for o in self.outcomes)


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


@dataclass
class Plan:
    """A subscriber's digest to make for one local date, and what is already known of it."""

    subscriber: Subscriber
    local_date: dt.date
    existing: Digest | None
    window_start: dt.datetime


class Selector:
    """Chooses each subscriber's papers: candidates since their last digest, ranked by interest.

    The database is read in a few batched queries for all subscribers, the text model is fitted
    once per run, and every candidate paper is vectorized once.
    """

    def __init__(self, db: Database, config: AppConfig, now: dt.datetime) -> None:
        self.db = db
        self.config = config
        self.now = now
        self.model: TextModel | None = None
        self.papers: list[Paper] = []
        self._sent: dict[int, set[int]] = {}

    def plan(self, subscribers: Sequence[Subscriber], date: dt.date | None = None) -> list[Plan]:
        """Each subscriber's local date, existing digest and candidate window, then the corpus loaded."""
        dates = {s.id: date or local_today(s, self.now) for s in subscribers}
        lookback = self.now - dt.timedelta(days=self.config.ranking.lookback_days)
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
        plans = [
            Plan(s, dates[s.id], existing.get((s.id, dates[s.id])), last_end.get((s.id, dates[s.id]), lookback))
            for s in subscribers
        ]
        todo = [p for p in plans if p.existing is None]
        if todo:
            self._load(min(p.window_start for p in todo), [p.subscriber for p in todo])
        return plans

    def _load(self, since: dt.datetime, subscribers: Sequence[Subscriber]) -> None:
        """Fit the text model on the recent corpus and the subscribers' example papers; vectorize
        the candidates (papers first seen since `since`) once for everyone."""
        fit_since = min(since, self.now - dt.timedelta(days=self.config.ranking.fit_days))
        self.histories = load_histories(self.db, [s.id for s in subscribers])
        with self.db.session() as session:
            corpus = list(session.exec(
                select(Paper).where(col(Paper.first_seen) >= fit_since, col(Paper.first_seen) <= self.now).order_by(Paper.id)
            ).all())
            known = {p.id for p in corpus}
            wanted = {p for h in self.histories.values() for p in h.papers} - known
            corpus += [p for part in chunks(sorted(wanted)) for p in session.exec(select(Paper).where(col(Paper.id).in_(part)))]
            sent = session.exec(
                select(Digest.subscriber_id, DigestItem.paper_id)
                .join(Digest, col(Digest.id) == DigestItem.digest_id)
                .join(Paper, col(Paper.id) == DigestItem.paper_id)
                .where(col(Paper.first_seen) >= since, Digest.status != DigestStatus.FAILED.value)
            ).all()
        for subscriber_id, paper_id in sent:
            self._sent.setdefault(subscriber_id, set()).add(paper_id)
        fresh = [i for i, p in enumerate(corpus) if since <= p.first_seen <= self.now]
        self.papers = [corpus[i] for i in fresh]
        if not self.papers:
            return
        phrases = {phrase for s in subscribers for phrase in Interests.from_subscriber(s).all_phrases()}
        self.model = TextModel()
        counts = self.model.fit_counts((paper_text(p.title, p.abstract, p.authors) for p in corpus), keep=phrases)
        self.candidates = Candidates.build(
            self.model, [p.id for p in self.papers], counts[fresh], [p.authors for p in self.papers], [p.categories for p in self.papers]
        )
        row = {p.id: i for i, p in enumerate(corpus)}
        example_ids = sorted({p for h in self.histories.values() for p in h.papers if p in row})
        examples = Examples.build(self.model, [(p, corpus[row[p]].title) for p in example_ids], counts[[row[p] for p in example_ids]])
        community = Community(community_clicks(self.db), self.config.ranking.neighbours)
        self.ranker = Ranker(self.model, self.config.ranking, examples, community)
        self._first_seen = np.array([p.first_seen.timestamp() for p in self.papers])
        self._ids = np.array([p.id for p in self.papers])

    def select(self, plans: Sequence[Plan]) -> list[Selection]:
        """The chosen papers of each plan: ranked for all subscribers together."""
        if self.model is None or not plans:
            return [Selection(p.subscriber, p.local_date, p.window_start, self.now, [], [], 0) for p in plans]
        readers, allowed = [], []
        for plan in plans:
            subscriber = plan.subscriber
            mask = self._first_seen >= plan.window_start.timestamp()
            sent = self._sent.get(subscriber.id)
            if sent:
                mask &= ~np.isin(self._ids, list(sent))
            allowed.append(mask)
            readers.append(Reader(subscriber.id, Interests.from_subscriber(subscriber), self.histories.get(subscriber.id, History()), subscriber.max_items))
        ranked = self.ranker.rank(readers, self.candidates, allowed)
        return [
            Selection(plan.subscriber, plan.local_date, plan.window_start, self.now, [self.papers[r.index] for r in chosen], chosen, int(mask.sum()))
            for plan, chosen, mask in zip(plans, ranked, allowed)
        ]


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
    ) -> None:
        self.db = db
        self.settings = settings
        self.config = config
        self.renderer = renderer
        self.transport = transport
        self.clock = clock
        self.links = LinkMaker(settings.base_url, LinkSigner(settings.require_secret_key(), settings.old_secret_keys))

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
        asked before each subscriber: a stop finishes the message in hand and leaves the rest."""
        options = options or SendOptions(dry_run=dry_run)
        now = self.clock()
        subscribers = self.subscribers(only)
        if options.due_only and date is None:
            subscribers = [s for s in subscribers if is_due(s.send_at, s.timezone, now)]
        report = SendReport()
        if not subscribers:
            return report
        selector = Selector(self.db, self.config, now)
        plans = selector.plan(subscribers, date)
        fresh = [p for p in plans if p.existing is None]
        selections = dict(zip((id(p) for p in fresh), selector.select(fresh)))
        with self.transport:
            for plan in plans:
                if should_stop():
                    report.stopped = True
                    log.info("stopping: %d digests left for the next run", len(plans) - len(report.outcomes))
                    break
                outcome = self._one(plan, selections.get(id(plan)), options, now)
                report.outcomes.append(outcome)
                if on_progress:
                    on_progress(outcome)
        return report

    def _one(self, plan: Plan, selection: Selection | None, options: SendOptions, now: dt.datetime) -> Outcome:
        outcome = Outcome(plan.subscriber.email, plan.local_date, "already")
        digest = plan.existing
        if digest is not None:
            status = digest.status
            if status == DigestStatus.SENDING.value:
                return self._recover(digest, plan.subscriber, outcome, options, now)
            resumable = {DigestStatus.PENDING.value, DigestStatus.DEFERRED.value}
            if options.retry_failed:
                resumable.add(DigestStatus.FAILED.value)
            if options.resend_unknown:
                resumable.add(DigestStatus.UNKNOWN.value)
            if status not in resumable:
                outcome.detail = status if status != DigestStatus.FAILED.value else f"failed: {digest.reason}"
                return outcome
            if options.dry_run:
                outcome.detail = f"{status}, would resume"
                return outcome
            return self._deliver(digest, plan.subscriber, now, outcome)
        assert selection is not None
        if options.dry_run:
            outcome.status = "dry-run" if selection.ranked else "empty"
            outcome.items = len(selection.ranked)
            outcome.top = selection.papers[0].title if selection.papers else ""
            outcome.detail = "" if selection.ranked else selection.empty_reason
            return outcome
        digest = self._claim(selection)
        if digest is None:
            outcome.detail = "claimed by another run"
            return outcome
        if digest.status == DigestStatus.EMPTY.value:
            outcome.status, outcome.detail = "empty", digest.reason or ""
            return outcome
        return self._deliver(digest, plan.subscriber, now, outcome)

    def _claim(self, selection: Selection) -> Digest | None:
        """Record the digest and its items in one transaction; None when it exists already."""
        digest = Digest(
            subscriber_id=selection.subscriber.id,
            local_date=selection.local_date,
            window_start=selection.window_start,
            window_end=selection.window_end,
            status=DigestStatus.PENDING.value if selection.ranked else DigestStatus.EMPTY.value,
            reason=None if selection.ranked else selection.empty_reason,
        )
        try:
            with self.db.transaction() as session:
                session.add(digest)
                session.flush()
                for rank, (ranked, paper) in enumerate(zip(selection.ranked, selection.papers), start=1):
                    session.add(DigestItem(digest_id=digest.id, paper_id=paper.id, rank=rank, score=ranked.score, reason=ranked.reason))
        except IntegrityError:
            log.info("digest of %s for %s was claimed by another run", selection.subscriber.email, selection.local_date)
            return None
        if not selection.ranked:
            log.info("no digest for %s on %s: %s", selection.subscriber.email, selection.local_date, digest.reason)
        return digest

    def _recover(self, digest: Digest, subscriber: Subscriber, outcome: Outcome, options: SendOptions, now: dt.datetime) -> Outcome:
        """A digest found `sending`: in flight in a live run (left alone), or interrupted."""
        if not _interrupted(digest, now):
            outcome.detail = f"being sent by {digest.claimed_by}"
            return outcome
        delivered = self.transport.delivered(outbox_key(digest, subscriber))
        if delivered:
            self._finish(digest, DigestStatus.SENT, sent_at=digest.sending_since or now)
            outcome.status, outcome.detail = "sent", "found in the outbox after an interruption"
            return outcome
        if delivered is False or options.resend_unknown:
            # The outbox has no file: the write never completed, so sending is safe.
            if not self._transition(digest, DigestStatus.SENDING, DigestStatus.PENDING):
                outcome.detail = "taken by another run"
                return outcome
            return self._deliver(digest, subscriber, now, outcome)
        self._finish(digest, DigestStatus.UNKNOWN, "interrupted while sending; the SMTP server may or may not have it")
        log.warning("digest %d of %s was interrupted while sending: reported unknown, not sent again", digest.id, subscriber.email)
        outcome.status, outcome.detail = "unknown", "interrupted while sending"
        return outcome

    def _deliver(self, digest: Digest, subscriber: Subscriber, now: dt.datetime, outcome: Outcome) -> Outcome:
        key = outbox_key(digest, subscriber)
        items, papers = load_items(self.db, digest.id)
        message = self.message(digest, subscriber, items, papers, now)
        if not self._transition(digest, DigestStatus(digest.status), DigestStatus.SENDING, message_id=message["Message-ID"]):
            outcome.detail = "taken by another run"
            return outcome
        IN_FLIGHT.add(digest.id)
        try:
            delivered = self.transport.send(message, key)
        except DeliveryError as exc:
            outcome.retries = exc.retries
            status = DigestStatus.FAILED if exc.permanent else DigestStatus.DEFERRED
            self._finish(digest, status, str(exc), bounced=exc.permanent)
            log.error("digest for %s not delivered (%s): %s", subscriber.email, status.value, exc)
            outcome.status, outcome.detail = status.value, str(exc)
            return outcome
        finally:
            IN_FLIGHT.discard(digest.id)
        self._finish(digest, DigestStatus.SENT, sent_at=self.clock())
        outcome.status, outcome.items, outcome.retries = "sent", len(items), delivered.retries
        outcome.top = papers[0].title if papers else ""
        outcome.detail = delivered.where
        return outcome

    def _transition(self, digest: Digest, expected: DigestStatus, status: DigestStatus, message_id: str | None = None) -> bool:
        """Move `digest` from `expected` to `status` unless another run moved it first."""
        values: dict = {"status": status.value}
        if status == DigestStatus.SENDING:
            values.update(claimed_by=ME, sending_since=self.clock(), attempts=Digest.attempts + 1)
            if message_id:
                values["message_id"] = message_id
        with self.db.transaction() as session:
            result = session.execute(update(Digest).where(Digest.id == digest.id, Digest.status == expected.value).values(**values))
        if result.rowcount != 1:
            log.info("digest %d moved on in another run", digest.id)
            return False
        digest.status = status.value
        return True

    def _finish(self, digest: Digest, status: DigestStatus, reason: str | None = None, *, sent_at: dt.datetime | None = None, bounced: bool = False) -> None:
        """Record the outcome of a delivery, and what it says about the address, in one transaction."""
        with self.db.transaction() as session:
            row = session.get(Digest, digest.id)
            row.status = status.value
            row.reason = reason if reason is not None else row.reason
            if sent_at is not None:
                row.sent_at = sent_at
            session.add(row)
            subscriber = session.get(Subscriber, row.subscriber_id)
            if bounced:
                subscriber.bounces += 1
                if subscriber.bounces >= BOUNCE_LIMIT:
                    subscriber.active = False
                    subscriber.disabled_reason = f"bounced {subscriber.bounces} times in a row; last: {reason}"
                    log.warning("%s switched off: %s", subscriber.email, subscriber.disabled_reason)
                session.add(subscriber)
            elif status == DigestStatus.SENT and subscriber.bounces:
                subscriber.bounces = 0
                session.add(subscriber)
        digest.status = status.value


    def view(self, digest: Digest, subscriber: Subscriber, items: Sequence[DigestItem], papers: Sequence[Paper]) -> DigestView:
        return digest_view(self.links, digest, subscriber, items, papers)

    def render(self, digest: Digest, subscriber: Subscriber, items: Sequence[DigestItem], papers: Sequence[Paper]) -> RenderedDigest:
        return self.renderer.render(self.view(digest, subscriber, items, papers))

    def message(self, digest: Digest, subscriber: Subscriber, items: Sequence[DigestItem], papers: Sequence[Paper], now: dt.datetime):
        rendered = self.render(digest, subscriber, items, papers)
        return compose(
            rendered=rendered,
            sender=self.settings.sender,
            to_email=subscriber.email,
            to_name=subscriber.name,
            msg_id=message_id(digest.id, digest.local_date, self.settings.sender),
            unsubscribe_url=self.links.unsubscribe(digest.id),
            date=now,
        )


def _interrupted(digest: Digest, now: dt.datetime) -> bool:
    """Whether the run that began sending `digest` is gone: its process, on this machine, or its lease."""
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


def load_items(db: Database, digest_id: int) -> tuple[list[DigestItem], list[Paper]]:
    with db.session() as session:
        rows = session.exec(
            select(DigestItem, Paper).join(Paper, col(Paper.id) == DigestItem.paper_id).where(DigestItem.digest_id == digest_id).order_by(DigestItem.rank)
        ).all()
    return [item for item, _ in rows], [paper for _, paper in rows]


def item_view(paper: Paper, rank: int, reason: str, click_url: str, more_url: str, less_url: str) -> ItemView:
    when = paper.published or paper.first_seen
    return ItemView(
        rank=rank,
        title=paper.title,
        click_url=click_url,
        more_url=more_url,
        less_url=less_url,
        authors=author_line(paper.authors),
        date=f"{when.day} {when:%b %Y}",
        source=SOURCE_LABELS.get(paper.source, paper.source),
        snippet=shorten(paper.abstract, 320),
        reason=reason,
    )


def digest_view(links: LinkMaker, digest: Digest, subscriber: Subscriber, items: Sequence[DigestItem], papers: Sequence[Paper]) -> DigestView:
    return DigestView(
        subscriber_email=subscriber.email,
        subscriber_name=subscriber.name,
        local_date=digest.local_date,
        interests=[i["phrase"] for i in subscriber.interests],
        items=[
            item_view(paper, item.rank, item.reason, links.click(item.id), links.more(item.id), links.less(item.id))
            for item, paper in zip(items, papers)
        ],
        view_url=links.view(digest.id),
        unsubscribe_url=links.unsubscribe(digest.id),
    )


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
    selector = Selector(sender.db, sender.config, sender.clock())
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
            item_view(paper, rank, ranked.reason, paper.url or "#", "#preview", "#preview")
            for rank, (ranked, paper) in enumerate(zip(selection.ranked, selection.papers), start=1)
        ],
        view_url="#preview",
        unsubscribe_url="#preview",
    )
    return Preview(plan.local_date, view, sender.renderer.render(view))
