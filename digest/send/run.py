"""The daily send: for each subscriber, choose the day's papers, record them, render and deliver.

Each digest is claimed for (subscriber, local date) in one transaction, together with its items,
before it is rendered: the unique constraint makes a second claim fail, so however often `send`
runs, a subscriber gets one digest per local date, and a paper is never sent to them twice.

`DigestSender` is what a caller configures once (database, settings, renderer, transport);
each `run` is a `Run`: the run's state (`RunState`: its instant, options, report, stop, pools)
held in one object, and its steps: batches leased (`share`), ranked (`select`, in the worker
processes where there are), claimed and moved (`ledger`), their messages made (`pool`) and
delivered (`deliver`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.sql.expression import Select
from threadpoolctl import threadpool_limits

from ..config import AppConfig
from ..coordination import SendLeases, process_name
from ..db import Database
from ..embeddings import from_settings
from ..links import LinkMaker, LinkSigner
from ..mail.compose import Outgoing
from ..mail.render import Renderer
from ..mail.transports import DeliveryError, Transport
from ..mail.view import load_items
from ..models import DigestStatus, Subscriber, utcnow
from ..schedule import is_due
from ..settings import Settings
from . import heap
from .deliver import Delivery, Job
from .ledger import Ledger, interrupted
from .pool import Addressee, Letter, Messages, Unmade, WorkerPool, made
from .select import Choice, Member, Plan, Selection, Selector, is_paused, local_today
from .share import LeasedBatches
from .state import Outcome, RunState, SendOptions, SendReport, Untouched

log = logging.getLogger(__name__)

#: Subscribers ranked, claimed (one transaction), leased and delivered together (`DIGEST_SEND_BATCH`).
BATCH = 500
#: Digests to make in a run from which worker processes render and compose them (`workers`).
WORKERS_FROM = 1000
class DigestSender:
    """Runs the daily send for every active subscriber (or one), on their own local date.

    The states a digest goes through, and who may move it, are the ledger's (`ledger.TRANSITIONS`).
    A run that finds a digest left `sending` by a run that died checks the outbox for its file,
    or marks it unknown, and never sends it twice unless told to.
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
        self.db = db
        self.settings = settings
        self.config = config
        self.transport = transport
        self.clock = clock
        self.workers = workers
        links = LinkMaker(settings.base_url, LinkSigner(settings.require_secret_key(), settings.old_secret_keys, installation=db.installation().id))
        self.messages = Messages(settings, renderer, links)
        self.ledger = Ledger(db, clock)
        #: This process's leases on the subscribers it works on (`coordination`).
        self.leases = SendLeases(db, process_name(), dt.timedelta(seconds=settings.send_lease))  # the real clock (see `coordination`)

    def subscribers(self, only: str | None = None) -> list[Subscriber]:
        with self.db.session() as session:
            return list(session.exec(_active(only).order_by(Subscriber.email)).all())

    def members(self, only: str | None = None) -> list[Member]:
        """What the plan of the day needs of each subscriber `subscribers` gives, without their profiles."""
        fields = [getattr(Subscriber, name) for name in Member.__slots__]
        with self.db.engine.connect() as connection:
            return [Member(*row) for row in connection.execute(_active(only).with_only_columns(*fields).order_by(Subscriber.email))]

    def count(self, only: str | None = None) -> int:
        """How many subscribers `subscribers` gives, counted by the database (at 100,000 a read
        of them all costs seconds)."""
        with self.db.session() as session:
            return session.exec(select(func.count()).select_from(_active(only).subquery())).one()

    def selector(self, now: dt.datetime) -> Selector:
        return Selector(self.db, self.config, now, from_settings(self.settings.embedding_model))

    def run(
        self,
        date: dt.date | None = None,
        only: str | None = None,
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
        state = RunState(self.db.settled_instant(self.clock), options or SendOptions(), asked_to_stop=should_stop)
        return Run(self, state).execute(date, only, on_progress)


def _active(only: str | None) -> Select:
    """The subscribers who get digests (or the one of them with address `only`)."""
    query = select(Subscriber).where(Subscriber.active == True, col(Subscriber.unsubscribed_at).is_(None))  # noqa: E712
    return query.where(Subscriber.email == only.strip().lower()) if only else query


@dataclass(eq=False)
class _Ranking:
    """A batch taken and being ranked: its plans, those to rank, and their choices as they come
    (from the worker processes; None: ranked here when claimed)."""

    plans: list[Plan]
    fresh: list[Plan]
    choices: Iterator[Choice] | None


@dataclass(eq=False)
class _Prepared:
    """A batch claimed and on its way: its plans, those settled already, and the jobs to deliver."""

    plans: Sequence[Plan]
    done: dict[int, Outcome]
    jobs: list[Job]
    messages: Iterator[Outgoing | Unmade]

    def outcomes(self) -> list[Outcome]:
        for job in self.jobs:
            if job.finished:
                self.done[id(job.plan)] = job.outcome
        return [self.done[id(p)] for p in self.plans if id(p) in self.done]


class Run:
    """One run of a `DigestSender`: its state, and its steps."""

    def __init__(self, sender: DigestSender, state: RunState) -> None:
        self.sender = sender
        self.state = state
        self.ledger = sender.ledger
        self.delivery = Delivery(sender.ledger, sender.transport, sender.settings.sender, state)

    def execute(self, date: dt.date | None, only: str | None, on_progress: Callable[[Outcome], None] | None) -> SendReport:
        # One BLAS thread in this process and in the workers it forks: a run already keeps every core
        # busy with a process of its own, and OpenBLAS's extra threads only spin, waiting for work
        # (10,000 subscribers, two runs each: user CPU 34.4/34.9 -> 30.7/30.0 s; wall 23.2/24.7 -> 22.2/22.2 s).
        with threadpool_limits(limits=1, user_api="blas"), heap.fewer_collections():
            return self._execute(date, only, on_progress)

    def _execute(self, date: dt.date | None, only: str | None, on_progress: Callable[[Outcome], None] | None) -> SendReport:
        state, report, now = self.state, self.state.report, self.state.now
        members = self.sender.members(only)
        if state.options.due_only and date is None:
            members = [m for m in members if is_due(m.send_at, m.timezone, now)]
        for member in [m for m in members if is_paused(m, date or local_today(m, now))]:
            report.outcomes.append(Outcome(member.email, date or local_today(member, now), Untouched.PAUSED, detail=f"paused until {member.paused_until}"))
        members = [m for m in members if not is_paused(m, date or local_today(m, now))]
        if not members:
            return report
        selector = self.sender.selector(now)
        plans = selector.plan(members, date)
        try:
            self._batches(plans, selector, on_progress)
        except DeliveryError as exc:  # the transport could not be opened (an outbox folder that cannot be made)
            if not exc.server:
                raise
            state.halt(str(exc))
        report.halted = state.halted
        report.left = self._left(plans)
        if report.halted:  # the caller says so (the CLI as an error, the service in its log)
            log.info("delivery stopped: %s; %d digests left for the next run", report.halted, report.left)
        return report

    def _pools(self, plans: Sequence[Plan], selector: Selector) -> contextlib.ExitStack:
        """The run's threads (several connections that cannot be checked afterwards) and worker
        processes (many digests to make), entered on the returned stack."""
        sender, state = self.sender, self.state
        stack = contextlib.ExitStack()
        sender.messages.prepare(eight_bit=not state.options.dry_run and sender.transport.eight_bit_mime())  # the transport is open
        if not sender.transport.verifiable and sender.transport.connections > 1:
            state.threads = stack.enter_context(ThreadPoolExecutor(sender.transport.connections, "smtp"))
        fresh = sum(1 for p in plans if p.existing is None)
        if sender.workers > 1 and fresh >= WORKERS_FROM and not state.options.dry_run and selector.papers:
            state.workers = stack.enter_context(WorkerPool(sender.messages, selector.papers, sender.workers, sender.db, selector.rank))
        return stack

    def _batches(self, plans: list[Plan], selector: Selector, on_progress: Callable[[Outcome], None] | None) -> None:
        sender, state, report = self.sender, self.state, self.state.report
        leasing = not state.options.dry_run
        size = sender.settings.send_batch
        with sender.transport, self._pools(plans, selector), sender.leases.heartbeat() if leasing else contextlib.nullcontext():
            # Batch after batch. With worker processes, three in hand: the workers rank the newest
            # and make the messages of the one before, which this process has claimed; then this
            # process delivers the one before that. Without, nothing goes on in the background, so
            # each batch is ranked, claimed and delivered before the next is taken: a process that
            # shares the day holds one batch at a time, and when the day runs out, the others are
            # not left waiting for batches it took ahead (20,000 subscribers, two senders: up to
            # 1,500 were still to do by one of them when the other found nothing left).
            background = state.workers is not None
            batches = LeasedBatches(sender.leases, self.ledger, state, size)(plans) if leasing else (plans[i : i + size] for i in range(0, len(plans), size))
            ranking: _Ranking | None = None
            waiting: _Prepared | None = None
            try:
                while True:
                    stopped = state.should_stop()  # what was claimed and not sent stays pending for the next run
                    batch: list[Plan] | None = None
                    prepared: _Prepared | None = None
                    if not stopped:
                        batch = next(batches, None)  # [] while waiting for other processes
                        if batch:
                            batch = self._subscribed(selector, batch, on_progress)
                        begun = self._rank(batch) if batch else None
                        if not background:
                            ranking, begun = begun, None
                        prepared = self._prepare(ranking, selector) if ranking is not None else None
                        ranking = begun
                        if not background and prepared is not None:
                            waiting, prepared = prepared, None
                        if waiting is not None:
                            stopped = self.delivery.deliver(waiting.jobs, waiting.messages)
                            outcomes = waiting.outcomes()
                            report.outcomes.extend(outcomes)
                            if on_progress:
                                for outcome in outcomes:
                                    on_progress(outcome)
                            if leasing:
                                sender.leases.release(p.subscriber_id for p in waiting.plans)
                            for plan in waiting.plans:
                                plan.subscriber = None  # a run of 100,000 holds the profiles of the batches in hand only
                            waiting = None
                            heap.trim()  # the batch's matrices and messages, freed, go back to the system
                    if stopped:
                        report.stopped = True
                        log.info("stopping: %d digests left for the next run", self._left(plans))
                        break
                    if batch is None and ranking is None and prepared is None:
                        break
                    waiting = prepared
            finally:
                state.threads = state.workers = None
                if leasing:  # whatever this run did not finish is free for another process at once
                    sender.leases.release(p.subscriber_id for p in plans)

    def _subscribed(self, selector: Selector, batch: list[Plan], on_progress: Callable[[Outcome], None] | None) -> list[Plan]:
        """The plans of `batch`, their profiles read now, whose subscriber still gets digests: one
        who unsubscribed or was switched off after the run began (a run of 100,000 takes minutes)
        gets nothing more, and is reported so."""
        selector.attach(batch, _active(None))
        left = [plan for plan in batch if plan.subscriber is None]
        for plan in left:
            outcome = Outcome(plan.email, plan.local_date, Untouched.LEFT, detail="unsubscribed while this run went on")
            self.state.report.outcomes.append(outcome)
            if on_progress:
                on_progress(outcome)
        if left and not self.state.options.dry_run:
            self.sender.leases.release(p.subscriber_id for p in left)
        return [plan for plan in batch if plan.subscriber is not None]

    def _rank(self, plans: list[Plan]) -> _Ranking:
        """One batch of subscribers to rank together: handed to the worker processes now, if
        they rank, else ranked here when the batch is claimed."""
        fresh = [p for p in plans if p.existing is None]
        workers = self.state.workers
        choices = workers.rank([p.wanted() for p in fresh]) if fresh and workers is not None else None
        return _Ranking(plans, fresh, choices)

    def _prepare(self, ranking: _Ranking, selector: Selector) -> _Prepared:
        """One batch of subscribers ranked and claimed in one transaction; their messages begun
        (by the worker processes, if any)."""
        done: dict[int, Outcome] = {}
        jobs: list[Job] = []
        plans, fresh = ranking.plans, ranking.fresh
        for plan in plans:
            if plan.existing is not None:
                outcome, job = self._resume(plan)
                if job is None:
                    done[id(plan)] = outcome
                else:
                    jobs.append(job)
        if fresh:
            selections = selector.select(fresh) if ranking.choices is None else selector.selections(fresh, ranking.choices)
            if self.state.options.dry_run:
                for plan, selection in zip(fresh, selections):
                    done[id(plan)] = _dry_run(selection)
            else:
                for plan, selection, claim in zip(fresh, selections, self.ledger.claim_many(selections)):
                    outcome = Outcome(plan.email, plan.local_date, Untouched.ALREADY)
                    if claim is None:
                        outcome.detail = "claimed by another run"
                        done[id(plan)] = outcome
                    elif not selection.ranked:
                        outcome.status, outcome.detail = DigestStatus.EMPTY, selection.empty_reason
                        done[id(plan)] = outcome
                    else:
                        digest_id, items = claim
                        letter = Letter(digest_id, plan.local_date, Addressee.of(plan.profile), items, tuple(ranked.index for ranked in selection.ranked))
                        jobs.append(Job(plan, letter, selection.papers, outcome, DigestStatus.PENDING))
        return _Prepared(plans, done, jobs, self._messages(jobs))

    def _messages(self, jobs: Sequence[Job]) -> Iterator[Outgoing | Unmade]:
        """The message of each job, in order, or why it could not be made: made by the worker
        processes of the run where there are, else here (lazily, as delivery asks)."""
        now = self.state.now
        if self.state.workers is None or any(job.letter.rows is None for job in jobs):
            return (made(self.sender.messages.message, job.letter, job.papers, now) for job in jobs)
        return self.state.workers.make([job.letter for job in jobs], now)

    def _resume(self, plan: Plan) -> tuple[Outcome, Job | None]:
        """A digest that exists already: left alone, recovered, or (as a job) delivered now."""
        outcome = Outcome(plan.email, plan.local_date, Untouched.ALREADY)
        status = DigestStatus(plan.existing.status)
        if status == DigestStatus.SENDING:
            return self._recover(plan, outcome)
        if status not in self.state.options.resumable():
            outcome.detail = status if status != DigestStatus.FAILED else f"failed: {plan.existing.reason}"
            return outcome, None
        if self.state.options.dry_run:
            outcome.detail = f"{status}, would resume"
            return outcome, None
        return outcome, self._job(plan, outcome, status)

    def _job(self, plan: Plan, outcome: Outcome, state: DigestStatus) -> Job:
        items, papers = load_items(self.sender.db, plan.existing.id)
        return Job(plan, Letter.of(plan.existing, plan.profile, items), papers, outcome, state)

    def _recover(self, plan: Plan, outcome: Outcome) -> tuple[Outcome, Job | None]:
        """A digest found `sending`: in flight in a live run (left alone), or interrupted."""
        digest, subscriber, now = plan.existing, plan.profile, self.state.now
        if not interrupted(digest, now, self.state.in_flight, self.state.gone):
            outcome.detail = f"being sent by {digest.claimed_by}"
            return outcome, None
        letter = Letter.of(digest, subscriber, ())
        delivered = self.sender.transport.delivered(letter.outbox_key)
        if delivered:
            if self.ledger.move(digest.id, DigestStatus.SENDING, DigestStatus.SENT, sent_at=digest.sending_since or now, subscriber_id=subscriber.id):
                outcome.status, outcome.detail = DigestStatus.SENT, "found in the outbox after an interruption"
            else:
                outcome.detail = "taken by another run"
            return outcome, None
        if delivered is False or self.state.options.resend_unknown:
            # The outbox has no (whole) file: the write never completed, so sending is safe.
            if not self.ledger.move(digest.id, DigestStatus.SENDING, DigestStatus.PENDING):
                outcome.detail = "taken by another run"
                return outcome, None
            return outcome, self._job(plan, outcome, DigestStatus.PENDING)
        if not self.ledger.move(digest.id, DigestStatus.SENDING, DigestStatus.UNKNOWN, reason="interrupted while sending; the SMTP server may or may not have it"):
            outcome.detail = "taken by another run"
            return outcome, None
        log.warning("digest %d of %s was interrupted while sending: reported unknown, not sent again", digest.id, subscriber.email)
        outcome.status, outcome.detail = DigestStatus.UNKNOWN, "interrupted while sending"
        return outcome, None

    def _left(self, plans: Sequence[Plan]) -> int:
        """The digests of `plans` that have no outcome yet, here or in another process (a paused
        subscriber has an outcome but no plan)."""
        report = self.state.report
        return len(plans) - (len(report.outcomes) - report.count(Untouched.PAUSED)) - sum(report.others.values())


def _dry_run(selection: Selection) -> Outcome:
    return Outcome(
        selection.subscriber.email, selection.local_date, Untouched.DRY_RUN if selection.ranked else DigestStatus.EMPTY, len(selection.ranked),
        selection.papers[0].title if selection.papers else "", "" if selection.ranked else selection.empty_reason,
    )
