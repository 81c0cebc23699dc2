"""When things are due: a subscriber's send instant on a local date, in their own time zone;
and the two kinds of value every schedule is written in, a 24-hour "HH:MM" (`Clock`) and an IANA
zone name (`TimeZone`), checked the same way in profiles, `config/digest.yaml` and the web.

Wall-clock times are turned into instants with zoneinfo. On a day when the clocks jump forward,
a time that does not exist (02:30 in Berlin on the last Sunday of March) is taken with the
offset before the jump, i.e. it falls an hour later in the new time (03:30); on a day when they
fall back, an ambiguous time is its first occurrence. Either way each local date has exactly
one send instant, and the digest is unique per local date whatever the clocks do.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Annotated
from zoneinfo import ZoneInfo, available_timezones

from pydantic import AfterValidator, BeforeValidator

_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def clock_text(value: object) -> str:
    """A 24-hour time of day as "HH:MM" ("7:05" becomes "07:05"); a ValueError that says what is
    expected for anything else."""
    match = _CLOCK.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"expected a local time written as \"HH:MM\" (24-hour), not {value!r}")
    return f"{int(match[1]):02d}:{match[2]}"


@functools.cache
def zone_names() -> frozenset[str]:
    """IANA zone names (from tzdata); `ZoneInfo` alone would also accept odd file paths."""
    return frozenset(available_timezones())


@functools.lru_cache(maxsize=1024)
def zone_of(name: str) -> ZoneInfo:
    """The zone `name`, kept: `ZoneInfo` keeps only the last few zones used, and a daily run of
    subscribers in hundreds of zones would read each zone's file again for every subscriber."""
    return ZoneInfo(name)


def zone_name(value: str) -> str:
    if value not in zone_names():
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)")
    return value


#: A field holding a time of day, "HH:MM".
Clock = Annotated[str, BeforeValidator(clock_text)]
#: A field holding an IANA time zone name.
TimeZone = Annotated[str, AfterValidator(zone_name)]


def parse_clock(text: str) -> dt.time:
    hours, minutes = clock_text(text).split(":")
    return dt.time(int(hours), int(minutes))


def local_instant(local_date: dt.date, clock: str, zone: str) -> dt.datetime:
    """The UTC instant of wall-clock `clock` on `local_date` in `zone` (see the module docstring)."""
    # fold=0: a time in a gap takes the offset before the jump (so it lands after it), and an
    # ambiguous time is its first occurrence (PEP 495).
    wall = dt.datetime.combine(local_date, parse_clock(clock)).replace(tzinfo=zone_of(zone), fold=0)
    return wall.astimezone(dt.timezone.utc)


def local_date(now: dt.datetime, zone: str) -> dt.date:
    return now.astimezone(zone_of(zone)).date()


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
