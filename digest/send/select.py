"""Who is due and what they get: each subscriber's plan for a local date, and the chosen papers.

A plan says which local date a subscriber's digest is for, whether it exists already, and its
candidate window (since the end of the last digest's, at most `max_window_days` long). The
selector loads the candidates of all plans once (one text model fitted per run, every candidate
vectorized once) and ranks them for a batch of subscribers at a time, through the ranker
(`digest/ranking/`). A day is planned from a few fields of each subscriber (`Member`); their
profiles are read a batch at a time.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Text, cast
from sqlmodel import col, select
from sqlmodel.sql.expression import Select

from ..config import AppConfig
from ..db import Database, chunks
from ..embeddings import Embedder, embed_missing, load_vectors, phrase_vectors
from ..models import Digest, DigestItem, DigestStatus, Paper, Subscriber
from ..ranking.community import Community
from ..ranking.papers import Candidates, Examples, Pool
from ..ranking.ranker import Ranker
from ..ranking.readers import History, Interests, Ranked, Reader
from ..ranking.store import load_histories, model_papers, recent_corpus
from ..schedule import local_date, local_instant
from ..textmodel import TextModel

log = logging.getLogger(__name__)


#: Before any window: the end of the last digest of a subscriber whose last digest is too old to matter.
EARLIEST = dt.datetime.min.replace(tzinfo=dt.timezone.utc)


@dataclass(frozen=True, slots=True)
class Member:
    """What the plan of a day needs of a subscriber, read for every subscriber at once
    (`DigestSender.members`). Their profile (`Subscriber`, some kilobytes each) is read with their
    batch (`Selector.attach`), so that a run of 100,000 never holds them all."""

    id: int
    email: str
    timezone: str
    send_at: str
    paused_until: dt.date | None


def is_paused(subscriber: Subscriber | Member, day: dt.date) -> bool:
    """Whether `subscriber` asked for no digest on local date `day` (`paused_until` is the first day back)."""
    return subscriber.paused_until is not None and day < subscriber.paused_until


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


def local_today(subscriber: Subscriber | Member, now: dt.datetime) -> dt.date:
    return local_date(now, subscriber.timezone)


def end_of_day(day: dt.date, zone: str) -> dt.datetime:
    """The UTC instant local date `day` ends in `zone`."""
    return local_instant(day + dt.timedelta(days=1), "00:00", zone)


def announced(paper: Paper) -> dt.datetime:
    """When a paper became available: its announcement where known, else when it was first seen."""
    return paper.published or paper.first_seen


#: A plan's ranked candidates (rows of the run's candidates), and how many candidates it had.
Choice = tuple[list[Ranked], int]


@dataclass
class Plan:
    """A subscriber's digest to make for one local date, and what is already known of it.

    No paper announced after the end of that date (`cutoff`, in the subscriber's zone) is a
    candidate. A digest of a past date (`past`: a backfill, a missed day) takes its candidates by
    announcement, in (`window_start`, `cutoff`], since when the service first saw a paper says
    nothing about that day; today's takes the papers first seen since `window_start`."""

    subscriber_id: int
    email: str
    local_date: dt.date
    existing: Digest | None
    window_start: dt.datetime
    cutoff: dt.datetime = dt.datetime.max.replace(tzinfo=dt.timezone.utc)
    past: bool = False
    #: The subscriber's profile: read with the plan's batch (`Selector.attach`) and let go once
    #: the batch is delivered.
    subscriber: Subscriber | None = None

    @property
    def window_end(self) -> dt.datetime | None:
        """Where the window of the next digest begins: the cutoff of a past date, else the run's time."""
        return self.cutoff if self.past else None

    @property
    def profile(self) -> Subscriber:
        """The subscriber, attached (`Selector.attach`)."""
        if self.subscriber is None:
            raise RuntimeError(f"the profile of subscriber {self.subscriber_id} was not read with its batch")
        return self.subscriber

    def wanted(self) -> Wanted:
        return Wanted(self.subscriber_id, Interests.from_subscriber(self.profile), self.profile.max_items, self.window_start, self.cutoff, self.past)


@dataclass(frozen=True, slots=True)
class Wanted:
    """What ranking needs of a plan, small and picklable: a worker process is sent these, and
    never touches the day's subscribers it inherited (each touch would copy their memory pages)."""

    subscriber_id: int
    interests: Interests
    max_items: int
    window_start: dt.datetime
    cutoff: dt.datetime
    past: bool


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

    def plan(self, subscribers: Sequence[Subscriber | Member], date: dt.date | None = None) -> list[Plan]:
        """Each subscriber's local date, existing digest and candidate window, then the corpus loaded.
        A plan of a `Subscriber` has its profile attached; one of a `Member`, not yet (`attach`)."""
        dates = {s.id: date or local_today(s, self.now) for s in subscribers}
        lookback = dt.timedelta(days=self.config.ranking.lookback_days)
        longest = dt.timedelta(days=self.config.ranking.max_window_days)
        existing, last_end = self._digests(dates, longest)
        plans = []
        for s in subscribers:
            day = dates[s.id]
            cutoff = end_of_day(day, s.timezone)
            past = day < local_today(s, self.now)
            end = cutoff if past else self.now
            start = max(last_end.get(s.id) or end - lookback, end - longest)
            plans.append(Plan(s.id, s.email, day, existing.get(s.id), start, cutoff, past, s if isinstance(s, Subscriber) else None))
        todo = [p for p in plans if p.existing is None]
        if todo:
            self._load(todo)
        return plans

    def _digests(self, dates: dict[int, dt.date], longest: dt.timedelta) -> tuple[dict[int, Digest], dict[int, dt.datetime]]:
        """Each subscriber's digest of their date, if made, and where the window of their last one
        before it ended. Only the digests of the last `longest` (and two days for the zones) are
        read, by subscriber: a window older than that cannot reach into today's, and the digests
        of a year of subscribers are never scanned. Whether an older one exists at all (a first
        digest looks back `lookback_days`; one after a pause, `max_window_days`) is one seek per
        subscriber without a recent digest."""
        existing: dict[int, Digest] = {}
        newest: dict[int, tuple[dt.date, dt.datetime]] = {}
        by_day: dict[dt.date, list[int]] = {}
        for subscriber_id, day in dates.items():
            by_day.setdefault(day, []).append(subscriber_id)
        counted = Digest.status != DigestStatus.FAILED
        with self.db.session() as session:
            for day, ids in by_day.items():
                low = day - dt.timedelta(days=math.ceil(longest / dt.timedelta(days=1)) + 2)
                for part in chunks(ids):
                    mine = col(Digest.subscriber_id).in_(part)
                    for digest in session.exec(select(Digest).where(mine, Digest.local_date == day)):
                        existing[digest.subscriber_id] = digest
                    recent = select(Digest.subscriber_id, Digest.local_date, Digest.window_end).where(mine, col(Digest.local_date) >= low, col(Digest.local_date) < day, counted)
                    for subscriber_id, local, window_end in session.exec(recent):
                        if local > newest.get(subscriber_id, (dt.date.min,))[0]:
                            newest[subscriber_id] = (local, window_end)
                    away = [i for i in part if i not in newest]
                    if away:
                        older = select(Digest.subscriber_id).where(col(Digest.subscriber_id).in_(away), col(Digest.local_date) < low, counted).distinct()
                        for subscriber_id in session.exec(older):
                            newest[subscriber_id] = (dt.date.min, EARLIEST)
        return existing, {subscriber_id: end for subscriber_id, (_, end) in newest.items()}

    def _load(self, plans: Sequence[Plan]) -> None:
        """Fit the text model on the recent corpus and the subscribers' example papers; vectorize
        the candidates of every plan (papers first seen since its window began, or for a past
        date announced in its window) once for everyone."""
        cfg = self.config.ranking
        live = [p.window_start for p in plans if not p.past]
        since = min(live) if live else None
        backfill = (min(p.window_start for p in plans if p.past), max(p.cutoff for p in plans if p.past)) if len(live) < len(plans) else None
        fit_since = min(since or self.now, self.now - dt.timedelta(days=cfg.fit_days))
        history_ids, clicks = model_papers(self.db, [p.subscriber_id for p in plans])
        corpus = recent_corpus(self.db, fit_since, self.now, history_ids, announced=backfill)
        fresh = [
            i for i, p in enumerate(corpus)
            if p.first_seen <= self.now and ((since is not None and p.first_seen >= since) or (backfill is not None and backfill[0] < announced(p) <= backfill[1]))
        ]
        self.papers = [corpus[i] for i in fresh]
        if not self.papers:
            return
        # Who was sent which of the candidates already, looked up by the candidates' ids. Joined
        # from the papers' first-seen time instead, SQLite walked every item ever sent, a table
        # that grows by a million a day at 100,000 subscribers (the benchmark's world of 100,000
        # holds 5 million: 5.9 s of a run's start, before any batch; this way, 0.01 s).
        with self.db.session() as session:
            for part in chunks([p.id for p in self.papers]):
                sent = session.exec(
                    select(Digest.subscriber_id, DigestItem.paper_id)
                    .join(Digest, col(Digest.id) == DigestItem.digest_id)
                    .where(col(DigestItem.paper_id).in_(part), Digest.status != DigestStatus.FAILED)
                )
                for subscriber_id, paper_id in sent:
                    self._sent.setdefault(subscriber_id, set()).add(paper_id)
        phrases = self._phrases(plans)
        self.model = TextModel()
        counts, tokens = self.model.fit_papers(corpus, keep=phrases)
        row = {p.id: i for i, p in enumerate(corpus)}
        example_ids = sorted(p for p in history_ids if p in row)
        recent = sorted((i for i, p in enumerate(corpus) if p.first_seen >= fit_since), key=lambda i: corpus[i].first_seen)[-cfg.prf_pool :] if cfg.prf_pool else []
        vectors = self._embeddings(corpus, fresh, [row[p] for p in example_ids], recent, phrases)
        self.candidates = Candidates.build(
            self.model, [p.id for p in self.papers], counts[fresh], [p.authors for p in self.papers], [p.categories for p in self.papers],
            vectors[fresh] if vectors is not None else None, tokens=[tokens[i] for i in fresh], phrases=phrases,
        )
        examples = Examples.build(self.model, [(p, corpus[row[p]].title) for p in example_ids], counts[[row[p] for p in example_ids]],
                                  vectors[[row[p] for p in example_ids]] if vectors is not None else None)
        pool = Pool.build(self.model, counts[recent], vectors[recent] if vectors is not None else None) if recent else None
        community = Community(clicks, cfg.neighbours)
        semantic = self.embedder.phrases if vectors is not None else None
        self.ranker = Ranker(self.model, cfg, examples, community, pool=pool, phrase_embedder=semantic)
        self.ranker.prepare(self.candidates)
        self._first_seen = np.array([p.first_seen.timestamp() for p in self.papers])
        self._announced = np.array([announced(p).timestamp() for p in self.papers])
        self._ids = np.array([p.id for p in self.papers])

    def _phrases(self, plans: Sequence[Plan]) -> set[str]:
        """Every phrase of the plans' subscribers (their interests and what they avoid): of the
        profiles attached, else read a chunk of subscribers at a time, only the two fields
        phrases come from, as stored, each distinct value decoded once (most subscribers avoid
        nothing, and many share their interests). At 100,000 subscribers, decoding their four
        lists each took more time than the rest of this."""
        phrases = {phrase for p in plans if p.subscriber is not None for phrase in Interests.from_subscriber(p.subscriber).all_phrases()}
        unread = [p.subscriber_id for p in plans if p.subscriber is None]
        stored: set[tuple[str, str]] = set()
        with self.db.session() as session:
            for part in chunks(unread):
                stored.update(session.exec(select(cast(Subscriber.interests, Text), cast(Subscriber.avoid, Text)).where(col(Subscriber.id).in_(part))))
        for interests, avoid in stored:
            phrases.update(Interests.stated(json.loads(interests), json.loads(avoid)).all_phrases())
        return phrases

    def attach(self, plans: Sequence[Plan], among: Select) -> None:
        """Read the profiles of `plans` that have none yet, of the subscribers `among` selects (a
        batch's: one query); a plan whose subscriber it does not select keeps none."""
        unread = {p.subscriber_id: p for p in plans if p.subscriber is None}
        with self.db.session() as session:
            for part in chunks(list(unread)):
                for subscriber in session.exec(among.where(col(Subscriber.id).in_(part))):
                    unread[subscriber.id].subscriber = subscriber

    def _embeddings(self, corpus: Sequence[Paper], fresh: Sequence[int], examples: Sequence[int], recent: Sequence[int], phrases: set[str]) -> np.ndarray | None:
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
        phrase_vectors(self.db, self.embedder, phrases)
        return vectors

    def select(self, plans: Sequence[Plan]) -> list[Selection]:
        """The chosen papers of each plan: ranked for all subscribers together."""
        return self.selections(plans, self.rank([plan.wanted() for plan in plans]))

    def rank(self, wanted: Sequence[Wanted]) -> list[Choice]:
        """Each plan's ranked candidates and how many it had (plans as `Plan.wanted`): the work of
        `select` without the papers themselves, small enough to come back from a worker process
        (`WorkerPool.rank`)."""
        if self.model is None or not wanted:
            return [([], 0) for _ in wanted]
        readers, allowed = [], []
        histories = load_histories(self.db, [w.subscriber_id for w in wanted])
        for w in wanted:
            start, cutoff = w.window_start.timestamp(), w.cutoff.timestamp()
            if w.past:
                mask = (self._announced > start) & (self._announced <= cutoff)
            else:
                mask = (self._first_seen >= start) & (self._announced <= cutoff)
            sent = self._sent.get(w.subscriber_id)
            if sent:
                mask &= ~np.isin(self._ids, list(sent))
            allowed.append(mask)
            readers.append(Reader(w.subscriber_id, w.interests, histories.get(w.subscriber_id, History()), w.max_items))
        ranked = self.ranker.rank(readers, self.candidates, allowed)
        return [(chosen, int(mask.sum())) for chosen, mask in zip(ranked, allowed)]

    def selections(self, plans: Sequence[Plan], choices: Iterable[Choice]) -> list[Selection]:
        """The selection of each plan from its choice (`rank`)."""
        return [
            Selection(plan.profile, plan.local_date, plan.window_start, plan.window_end or self.now, [self.papers[r.index] for r in chosen], list(chosen), count)
            for plan, (chosen, count) in zip(plans, choices, strict=True)
        ]
