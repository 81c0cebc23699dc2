"""Handing a batch of claimed digests to the transport, and recording what became of each.

Three ways, by what the transport can do. To one that can tell afterwards what it delivered (the
outbox), the batch is marked `sending` in one statement, written, made durable with one sync and
marked `sent` in one more: a crash in between is resolved by looking. To one that cannot (SMTP),
each message is marked `sending` on its own just before it is handed over, so that a crash leaves
only the messages in hand (one per connection) in doubt; with several connections, the messages
go to a pool of threads, one connection each.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ..mail.compose import Outgoing, message_id
from ..mail.transports import Delivered, DeliveryError, Transport
from ..models import DigestStatus, Paper
from .ledger import Ledger
from .pool import Letter, Unmade
from .select import Plan
from .state import Outcome, RunState

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Job:
    """A claimed digest on its way to the transport, and what became of it."""

    plan: Plan
    letter: Letter
    papers: list[Paper]
    outcome: Outcome
    #: The digest's state as this run last read or wrote it: the next move is from there.
    state: DigestStatus
    finished: bool = False

    def delivered(self, delivered: Delivered) -> None:
        self.outcome.status, self.outcome.items, self.outcome.retries = DigestStatus.SENT, len(self.letter.items), delivered.retries
        self.outcome.top = self.papers[0].title if self.papers else ""
        self.outcome.detail = delivered.where
        self.finished = True

    def settle(self, status: DigestStatus, detail: str, retries: int = 0) -> None:
        self.outcome.status, self.outcome.detail, self.outcome.retries = status, detail, retries
        self.finished = True

    def lost(self) -> None:
        """Another run moved the digest first: it is theirs."""
        self.outcome.detail = "taken by another run"
        self.finished = True


class Delivery:
    """Delivers the jobs of one run through its transport, recording each move in the ledger."""

    def __init__(self, ledger: Ledger, transport: Transport, sender: str, state: RunState) -> None:
        self.ledger = ledger
        self.transport = transport
        self.sender = sender
        self.state = state

    def deliver(self, jobs: Sequence[Job], messages: Iterator[Outgoing | Unmade]) -> bool:
        """Deliver `jobs` (their `messages` in the same order); True when asked to stop before the end."""
        if not jobs:
            return False
        if self.state.threads is not None:
            return self._parallel(jobs, messages)
        if not self.transport.verifiable:
            for job, message in zip(jobs, messages):
                if self.state.should_stop():
                    return True
                self._one(job, message)
            return False
        return self._batch(jobs, messages)

    def _batch(self, jobs: Sequence[Job], messages: Iterator[Outgoing | Unmade]) -> bool:
        started = self._start_many(jobs)
        in_flight = self.state.in_flight
        in_flight.update(job.letter.id for job in started)
        sent: list[Job] = []
        stopped = False
        try:
            for position, job in enumerate(jobs):
                try:
                    message = next(messages)
                except Exception:  # the messages stopped coming (a worker process died): what went is recorded, the rest given back
                    self.transport.flush()
                    self._finish_many(sent)
                    self._give_back([j for j in jobs[position:] if not j.finished])
                    raise
                if job.finished:  # not started: another run has it
                    continue
                if self.state.should_stop():
                    self._give_back([j for j in jobs[position:] if not j.finished])
                    stopped = True
                    break
                if isinstance(message, Unmade):
                    self.unmade(job, message)
                    continue
                try:
                    delivered = self.transport.send(message, job.letter.outbox_key)
                except DeliveryError as exc:
                    self.failed(job, exc)
                    if self.state.halted:
                        self._give_back([j for j in jobs[position + 1 :] if not j.finished])
                        stopped = True
                        break
                    continue
                job.delivered(delivered)
                sent.append(job)
            self.transport.flush()
            self._finish_many(sent)
        finally:
            in_flight.difference_update(job.letter.id for job in started)
        return stopped

    def _parallel(self, jobs: Sequence[Job], messages: Iterator[Outgoing | Unmade]) -> bool:
        """Messages made here and handed to the threads, each with its own connection; at most
        two per thread wait, so memory stays flat however long the list."""
        window = threading.BoundedSemaphore(2 * self.transport.connections)
        futures = []
        stopped = False
        try:
            for job, message in zip(jobs, messages):
                if self.state.should_stop():
                    stopped = True
                    break
                if isinstance(message, Unmade):
                    self.unmade(job, message)
                    continue
                window.acquire()
                future = self.state.threads.submit(self._one, job, message)
                future.add_done_callback(lambda _: window.release())
                futures.append(future)
        finally:
            for future in futures:
                future.result()
        return stopped

    def _one(self, job: Job, message: Outgoing | Unmade) -> None:
        """One message: marked `sending`, handed over, recorded. One waiting for a thread when a
        stop comes is left as it was for the next run."""
        if self.state.should_stop():
            return
        if isinstance(message, Unmade):
            self.unmade(job, message)
            return
        letter = job.letter
        if not self.ledger.move(letter.id, job.state, DigestStatus.SENDING, message_id=message.message_id):
            job.lost()
            return
        job.state = DigestStatus.SENDING
        self.state.in_flight.add(letter.id)
        try:
            delivered = self.transport.send(message, letter.outbox_key)
        except DeliveryError as exc:
            self.failed(job, exc)
            return
        finally:
            self.state.in_flight.discard(letter.id)
        self.ledger.move(letter.id, DigestStatus.SENDING, DigestStatus.SENT, sent_at=self.ledger.clock(), subscriber_id=letter.subscriber_id)
        job.state = DigestStatus.SENT
        job.delivered(delivered)

    def failed(self, job: Job, exc: DeliveryError) -> None:
        """Record a message that did not go: failed (refused for good), or deferred.

        A fault of the server, the session or the outbox stops the run (`RunState.halted`): the
        message tried is deferred, and one never tried (the circuit breaker was open already)
        goes back to `pending`; both are sent by the next run."""
        if exc.server:
            self.state.halt(str(exc))
            if not exc.tried:
                if self.ledger.move(job.letter.id, job.state, DigestStatus.PENDING):
                    job.state = DigestStatus.PENDING
                return  # not an outcome of this run: left for the next one
        policy = self.ledger.bounces
        status = policy.state_after(exc)
        self.ledger.move(job.letter.id, job.state, status, reason=str(exc), subscriber_id=job.letter.subscriber_id, bounced=policy.is_bounce(exc))
        job.state = status
        if not exc.server:
            log.error("digest for %s not delivered (%s): %s", job.letter.to.email, status, exc)
        job.settle(status, str(exc), exc.retries)

    def unmade(self, job: Job, unmade: Unmade) -> None:
        """A message that could not be made (a value its headers cannot carry, a template that
        fails on its data): that digest fails, with the reason; no bounce, nothing else stops.
        Once the cause is fixed, `digest send --retry-failed --date D` sends it."""
        reason = f"the message could not be made: {unmade.reason}"
        self.ledger.move(job.letter.id, job.state, DigestStatus.FAILED, reason=reason)
        job.state = DigestStatus.FAILED
        log.error("digest for %s failed: %s", job.letter.to.email, reason)
        job.settle(DigestStatus.FAILED, reason)

    def _start_many(self, jobs: Sequence[Job]) -> list[Job]:
        """Mark `jobs` sending, each only if still in the state it was read in: those that were."""
        ids = {job.letter.id: message_id(job.letter.id, job.letter.local_date, self.sender) for job in jobs}
        started = self.ledger.move_many([(job.letter.id, job.state) for job in jobs], DigestStatus.SENDING, message_ids=ids)
        for job in jobs:
            if job.letter.id in started:
                job.state = DigestStatus.SENDING
            else:
                job.lost()
        return [job for job in jobs if job.letter.id in started]

    def _give_back(self, jobs: Sequence[Job]) -> None:
        """Give back digests marked `sending` but not begun: the next run sends them."""
        self.ledger.move_many([(job.letter.id, DigestStatus.SENDING) for job in jobs if job.state == DigestStatus.SENDING], DigestStatus.PENDING)

    def _finish_many(self, jobs: Sequence[Job]) -> None:
        """Record a batch as sent, and the good news for addresses that had bounced, in one transaction."""
        if not jobs:
            return
        moved = self.ledger.move_many([(job.letter.id, DigestStatus.SENDING) for job in jobs], DigestStatus.SENT, sent_at=self.ledger.clock(),
                                      subscriber_ids={job.letter.id: job.letter.subscriber_id for job in jobs})
        for job in jobs:
            if job.letter.id in moved:
                job.state = DigestStatus.SENT
