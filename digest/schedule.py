"""When things are due: a subscriber's send instant on a local date, in their own time zone.

Wall-clock times are turned into instants with zoneinfo. On a day when the clocks jump forward,
a time that does not exist (02:30 in Berlin on the last Sunday of March) is taken with the
offset before the jump, i.e. it falls an hour later in the new time (03:30); on a day when they
fall back, an ambiguous time is its first occurrence. Either way each local date has exactly
one send instant, and the digest is unique per local date whatever the clocks do.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo


def parse_clock(text: str) -> dt.time:
    hours, minutes = text.split(":")
    return dt.time(int(hours), int(minutes))


def local_instant(local_date: dt.date, clock: str, zone: str) -> dt.datetime:
    """The UTC instant of wall-clock `clock` on `local_date` in `zone` (see the module docstring)."""
    # fold=0: a time in a gap takes the offset before the jump (so it lands after it), and an
    # ambiguous time is its first occurrence (PEP 495).
    wall = dt.datetime.combine(local_date, parse_clock(clock)).replace(tzinfo=ZoneInfo(zone), fold=0)
    return wall.astimezone(dt.timezone.utc)


def local_date(now: dt.datetime, zone: str) -> dt.date:
    return now.astimezone(ZoneInfo(zone)).date()


def send_instant(send_at: str, zone: str, on: dt.date) -> dt.datetime:
    """When a subscriber's digest for local date `on` is due."""
    return local_instant(on, send_at, zone)


def is_due(send_at: str, zone: str, now: dt.datetime) -> bool:
    """Whether today's digest (today in the subscriber's zone) is due at `now`."""
    return now >= send_instant(send_at, zone, local_date(now, zone))


def next_send(send_at: str, zone: str, after: dt.datetime) -> dt.datetime:
    """The first send instant strictly after `after`."""
    day = local_date(after, zone)
    for offset in (0, 1, 2):
        instant = send_instant(send_at, zone, day + dt.timedelta(days=offset))
        if instant > after:
            return instant
    raise AssertionError("a send instant exists every day")
