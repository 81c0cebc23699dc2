"""The daily send: for each subscriber, choose the day's papers, record them, render and deliver.

Each digest is claimed for (subscriber, local date) in one transaction, together with its items,
before it is rendered: the unique constraint makes a second claim fail, so however often `send`
runs, a subscriber gets one digest per local date, and a paper is never sent to them twice.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlalchemy import func
from sqlmodel import col, select

from .config import AppConfig
from .db import Database, chunks
from .delivery import DeliveryError, Transport
from .links import LinkMaker, LinkSigner
from .mail import compose, message_id
from .models import Digest, DigestItem, DigestStatus, Paper, Subscriber, utcnow
from .ranking import Candidates, Community, Examples, History, Interests, Ranked, Ranker, Reader, TextModel, paper_text
from .training import community_clicks, load_histories
from .render import DigestView, ItemView, RenderedDigest, Renderer, author_line, shorten
from .settings import Settings

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
    status: str  # sent | empty | already | failed | dry-run
    items: int = 0
    top: str = ""
    detail: str = ""


@dataclass
class SendReport:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def failed(self) -> bool:
        return any(o.status == "failed" for o in self.outcomes)


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
    return now.astimezone(ZoneInfo(subscriber.timezone)).date()


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


class DigestSender:
    """Runs the daily send for every active subscriber (or one), on their own local date."""

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
    ) -> SendReport:
        now = self.clock()
        selector = Selector(self.db, self.config, now)
        report = SendReport()
        plans = selector.plan(self.subscribers(only), date)
        selections = dict(zip((id(p) for p in plans if p.existing is None), selector.select([p for p in plans if p.existing is None])))
        with self.transport:
            for plan in plans:
                outcome = self._one(plan, selections.get(id(plan)), dry_run, now)
                report.outcomes.append(outcome)
                if on_progress:
                    on_progress(outcome)
        return report

    def _one(self, plan: Plan, selection: Selection | None, dry_run: bool, now: dt.datetime) -> Outcome:
        outcome = Outcome(plan.subscriber.email, plan.local_date, "already")
        digest = plan.existing
        if digest is not None:
            if digest.status in (DigestStatus.SENT.value, DigestStatus.EMPTY.value, DigestStatus.UNKNOWN.value):
                outcome.detail = digest.status
                return outcome
            if dry_run:
                outcome.detail = f"{digest.status}, would resume"
                return outcome
            return self._deliver(digest, plan.subscriber, now, outcome)
        assert selection is not None
        if dry_run:
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

    def _deliver(self, digest: Digest, subscriber: Subscriber, now: dt.datetime, outcome: Outcome) -> Outcome:
        key = outbox_key(digest, subscriber)
        if digest.status == DigestStatus.SENDING.value:
            delivered = self.transport.delivered(key)
            if delivered is None:
                self._set_status(digest, DigestStatus.UNKNOWN, "interrupted while sending; the transport cannot tell whether it arrived")
                outcome.status, outcome.detail = "unknown", "interrupted while sending"
                return outcome
            if delivered:
                self._set_status(digest, DigestStatus.SENT, sent_at=now)
                outcome.status, outcome.detail = "sent", "found in the outbox after an interruption"
                return outcome
        items, papers = load_items(self.db, digest.id)
        message = self.message(digest, subscriber, items, papers, now)
        self._set_status(digest, DigestStatus.SENDING, message_id=message["Message-ID"])
        try:
            where = self.transport.send(message, key)
        except DeliveryError as exc:
            self._set_status(digest, DigestStatus.FAILED, str(exc))
            log.error("digest for %s not delivered: %s", subscriber.email, exc)
            outcome.status, outcome.detail = "failed", str(exc)
            return outcome
        self._set_status(digest, DigestStatus.SENT, sent_at=self.clock())
        outcome.status, outcome.items = "sent", len(items)
        outcome.top = papers[0].title if papers else ""
        outcome.detail = where
        return outcome

    def _set_status(self, digest: Digest, status: DigestStatus, reason: str | None = None, *, sent_at: dt.datetime | None = None, message_id: str | None = None) -> None:
        with self.db.transaction() as session:
            row = session.get(Digest, digest.id)
            row.status = status.value
            if reason is not None:
                row.reason = reason
            if sent_at is not None:
                row.sent_at = sent_at
            if message_id is not None:
                row.message_id = message_id
            if status == DigestStatus.SENDING:
                row.attempts += 1
            session.add(row)
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
