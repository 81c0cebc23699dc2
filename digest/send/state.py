"""What one run is asked, what it holds while it works, and what it reports.

An outcome speaks the digest's own vocabulary (`DigestStatus`: sent, empty, failed, deferred,
unknown) wherever the run left the digest in a state; the three outcomes that leave no state of
their own are `Untouched` (already settled, paused, a dry run).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..models import DigestStatus

if TYPE_CHECKING:
    from .pool import WorkerPool


class Untouched(enum.StrEnum):
    """An outcome that moved no digest."""

    ALREADY = "already"  # settled before this run, or by another run meanwhile, or in another run's hands
    PAUSED = "paused"  # the subscriber asked for no digest that day
    LEFT = "unsubscribed"  # unsubscribed (or switched off) after the run began, before their batch
    DRY_RUN = "dry-run"  # would be sent (`--dry-run`)


#: The outcomes that mean something this run tried did not arrive, or may not have.
PROBLEMS = (DigestStatus.FAILED, DigestStatus.DEFERRED, DigestStatus.UNKNOWN)


@dataclass
class SendOptions:
    """What a run may do beyond the default (which never sends anything twice)."""

    #: Choose and report, store and send nothing.
    dry_run: bool = False
    #: Only subscribers whose send time has come today (the scheduler's runs).
    due_only: bool = False
    #: Try again digests refused for good (5xx); by default they wait for an operator.
    retry_failed: bool = False
    #: Send again digests whose delivery was interrupted and cannot be checked (may duplicate).
    resend_unknown: bool = False

    def resumable(self) -> set[DigestStatus]:
        """The states of an existing digest this run delivers (once it is back from `sending`)."""
        states = {DigestStatus.PENDING, DigestStatus.DEFERRED}
        if self.retry_failed:
            states.add(DigestStatus.FAILED)
        if self.resend_unknown:
            states.add(DigestStatus.UNKNOWN)
        return states


@dataclass
class Outcome:
    """What happened to one subscriber's digest in this run."""

    email: str
    local_date: dt.date
    status: DigestStatus | Untouched
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
    others: dict[DigestStatus, int] = field(default_factory=dict)
    #: Other processes this run waited for, and for how many subscribers each (at most).
    waited_for: dict[str, int] = field(default_factory=dict)
    #: Subscribers this run took over from each process whose lease ran out (it died, or stalled).
    taken_over: dict[str, int] = field(default_factory=dict)

    def count(self, status: DigestStatus | Untouched) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def retries(self) -> int:
        return sum(o.retries for o in self.outcomes)

    @property
    def failed(self) -> bool:
        """Something this run tried did not arrive (or may not have), or delivery stopped early."""
        return self.halted is not None or any(o.status in PROBLEMS for o in self.outcomes)


@dataclass(eq=False)
class RunState:
    """What one run holds while it works: its time, its options, its report, how to stop, its pools."""

    #: The run's instant: the end of today's candidate window (`Database.settled_instant`).
    now: dt.datetime
    options: SendOptions
    report: SendReport = field(default_factory=SendReport)
    #: Asked before each message: a stop from outside (the service shutting down).
    asked_to_stop: Callable[[], bool] = lambda: False
    #: Why delivery stopped: a fault of the server or the outbox (see `Delivery.failed`).
    halted: str | None = None
    #: Holders whose leases ran out when this run took them over: their `sending` digests were interrupted.
    gone: set[str] = field(default_factory=set)
    #: Digests this run is handing to a transport right now.
    in_flight: set[int] = field(default_factory=set)
    #: Threads with a connection each (a transport with several connections that cannot be checked afterwards).
    threads: ThreadPoolExecutor | None = None
    #: Processes that make the messages (a run of many digests).
    workers: WorkerPool | None = None

    def should_stop(self) -> bool:
        return self.halted is not None or self.asked_to_stop()

    def halt(self, reason: str) -> None:
        if self.halted is None:
            self.halted = reason
