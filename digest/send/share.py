"""Sharing the day with other send processes: the batches this one takes, each under lease.

Several send processes against one database share the day: each batch of subscribers is leased
by one of them before it is ranked (`coordination.SendLeases`), so each process ranks, renders
and delivers only what it took, and takes over the batches of a process that died.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence

from ..coordination import SendLeases
from ..models import DigestStatus
from .ledger import Ledger
from .select import Plan
from .state import RunState

log = logging.getLogger(__name__)

#: How often a process with nothing left to take looks again at what others hold (at most a
#: quarter of the lease).
POLL_SECONDS = 0.25

#: States of a digest still in some run's hands.
UNSETTLED = frozenset({DigestStatus.PENDING, DigestStatus.SENDING})


class LeasedBatches:
    """The batches of plans this process works on: each taken under lease.

    First, the plans in order, `size` at a time: of each batch, the subscribers no other process
    holds, their digests read again once leased (another process may have moved them since this
    run began). Then, until every plan is settled, what other processes left: batches whose
    leases ran out (their process died) are taken over; while others still hold leases, this run
    waits for them, and reports what they did (`SendReport.others`)."""

    def __init__(self, leases: SendLeases, ledger: Ledger, state: RunState, size: int) -> None:
        self.leases = leases
        self.ledger = ledger
        self.state = state
        self.size = size
        self.resumable = state.options.resumable() | {DigestStatus.SENDING}

    def __call__(self, plans: list[Plan]) -> Iterator[list[Plan]]:
        given: set[int] = set()
        for start in range(0, len(plans), self.size):
            if self.state.should_stop():
                return
            chunk = plans[start : start + self.size]
            settled = [p for p in chunk if p.existing is not None and p.existing.status not in self.resumable]
            before = {id(p): p.existing.status if p.existing else None for p in chunk}
            mine = self._take([p for p in chunk if p.existing is None or p.existing.status in self.resumable])
            refresh(self.ledger, mine)
            batch = list(settled)
            for plan in mine:
                status = plan.existing.status if plan.existing else None
                if status != before[id(plan)] and status not in UNSETTLED:  # another process finished it meanwhile
                    self._by_others(plan)
                else:
                    batch.append(plan)
            given.update(id(p) for p in settled)
            given.update(id(p) for p in mine)
            if batch:
                yield batch
        yield from self._the_rest(plans, given)

    def _the_rest(self, plans: list[Plan], given: set[int]) -> Iterator[list[Plan]]:
        # Short: what others hold at the end of the day is a batch or three each, seconds of work,
        # and this process is done only when they are (a look costs a few small queries).
        pause = min(POLL_SECONDS, self.leases.duration.total_seconds() / 4)
        report = self.state.report
        said = None
        while not self.state.should_stop():
            rest = [p for p in plans if id(p) not in given]
            if not rest:
                return
            refresh(self.ledger, rest)
            for plan in rest:
                if plan.existing is not None and plan.existing.status not in UNSETTLED:
                    self._by_others(plan)
                    given.add(id(plan))
            rest = [p for p in rest if id(p) not in given]
            if not rest:
                return
            mine = self._take(rest)
            if mine:
                refresh(self.ledger, mine)
                given.update(id(p) for p in mine)
                for start in range(0, len(mine), self.size):
                    yield mine[start : start + self.size]
                continue
            for holder, count in self.leases.held_by_others(p.subscriber_id for p in rest).items():
                report.waited_for[holder] = max(report.waited_for.get(holder, 0), count)
            if said != report.waited_for:
                said = dict(report.waited_for)
                log.info("waiting for %s", ", ".join(f"{holder} ({count} subscribers)" for holder, count in said.items()) or "other processes")
            yield []  # deliver what is in hand before waiting
            deadline = time.monotonic() + pause
            while time.monotonic() < deadline and not self.state.should_stop():
                time.sleep(0.1)

    def _take(self, wanted: list[Plan]) -> list[Plan]:
        got = self.leases.take((p.subscriber_id, p.local_date) for p in wanted)
        self.state.gone.update(got.expired_holders)
        report = self.state.report
        for holder, count in got.taken_over.items():
            report.taken_over[holder] = report.taken_over.get(holder, 0) + count
            log.warning("took over %d subscribers from %s, whose send lease ran out", count, holder)
        return [p for p in wanted if p.subscriber_id in got.subscribers]

    def _by_others(self, plan: Plan) -> None:
        status = DigestStatus(plan.existing.status)
        self.state.report.others[status] = self.state.report.others.get(status, 0) + 1


def refresh(ledger: Ledger, plans: Sequence[Plan]) -> None:
    """Read again the digests of `plans` (another process may have made or moved them)."""
    if not plans:
        return
    found = ledger.digests((p.subscriber_id, p.local_date) for p in plans)
    for plan in plans:
        plan.existing = found.get((plan.subscriber_id, plan.local_date))
