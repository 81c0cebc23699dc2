"""Subscriber profiles: one YAML file per subscriber, validated, then synced into the database.

A file that fails validation is reported with file, line and field and skipped; every other
subscriber is still served. Unknown keys are errors, so a typo never passes silently. No value
may hold a control character (a CR or LF in a name would break the `To:` header of every
message to that subscriber), and a profile is bounded in size: a few dozen phrases serve anyone,
and a file of hundreds of thousands would slow every sync and every send.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator, model_validator
from sqlmodel import select

from .db import Database
from .models import Subscriber, utcnow
from .schedule import Clock, TimeZone, parse_clock
from .yamlfile import FileError, load_model

log = logging.getLogger(__name__)

PROFILE_SUFFIXES = (".yaml", ".yml")
_CATEGORY = re.compile(r"^[a-z\-]+(\.[A-Za-z\-]+)?$")
#: At most this many entries in each list of a profile (interests, avoid, authors, categories).
MAX_PHRASES = 100
#: At most this many characters in a phrase, an author or a name.
MAX_PHRASE_CHARS = 200
#: A profile file larger than this is refused before it is parsed.
MAX_PROFILE_BYTES = 256 * 1024


def _no_control_characters(value: str) -> str:
    """`value`, or an error naming its first control character (CR, LF, NUL, ESC, a Unicode line
    separator...): none has a place in a profile, and in a header it would break the message."""
    for char in value:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            raise ValueError(f"holds a control character (U+{ord(char):04X}); write it on one line, as plain text")
    return value


def _phrase(value: str) -> str:
    """A phrase with its whitespace collapsed (a YAML value may run over lines), and no control character."""
    return _no_control_characters(" ".join(value.split()))


class Interest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phrase: str = Field(min_length=1, max_length=MAX_PHRASE_CHARS)
    weight: float = Field(default=1.0, gt=0, le=10)

    @field_validator("phrase")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = _phrase(value)
        if not value:
            raise ValueError("an interest needs some words")
        return value


class Profile(BaseModel):
    """The profile format (README § Subscriber profiles)."""

    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    name: str | None = Field(default=None, max_length=MAX_PHRASE_CHARS)
    timezone: TimeZone = "UTC"
    send_at: Clock = "07:00"
    max_items: int = Field(default=10, ge=1, le=50)
    interests: list[Interest] = Field(min_length=1, max_length=MAX_PHRASES)
    avoid: list[str] = Field(default_factory=list, max_length=MAX_PHRASES)
    authors: list[str] = Field(default_factory=list, max_length=MAX_PHRASES)
    categories: list[str] = Field(default_factory=list, max_length=MAX_PHRASES)
    active: bool = True
    #: No digest before this local date ("pause for N days" on the preferences page writes it).
    paused_until: dt.date | None = None

    @model_validator(mode="before")
    @classmethod
    def _interest_shorthand(cls, data: object) -> object:
        """`- mixture of experts` is short for `- {phrase: mixture of experts}`."""
        if isinstance(data, dict) and isinstance(data.get("interests"), list):
            data = dict(data)
            data["interests"] = [{"phrase": i} if isinstance(i, str) else i for i in data["interests"]]
        return data

    @field_validator("email")
    @classmethod
    def _lower_email(cls, value: str) -> str:
        return value.strip().lower()

    @field_validator("name")
    @classmethod
    def _one_line_name(cls, value: str | None) -> str | None:
        """The name goes into the `To:` header: one line of text (surrounding blanks dropped)."""
        if value is None:
            return None
        return _no_control_characters(value.strip()) or None

    @field_validator("avoid", "authors")
    @classmethod
    def _phrases(cls, values: list[str]) -> list[str]:
        cleaned = [_phrase(v) for v in values]
        if any(not v for v in cleaned):
            raise ValueError("empty entries are not allowed")
        if any(len(v) > MAX_PHRASE_CHARS for v in cleaned):
            raise ValueError(f"an entry may have at most {MAX_PHRASE_CHARS} characters")
        return cleaned

    @field_validator("categories")
    @classmethod
    def _arxiv_categories(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _CATEGORY.match(value):
                raise ValueError(f"{value!r} is not an arXiv category such as cs.CL or hep-th")
        return values

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def send_time(self) -> dt.time:
        return parse_clock(self.send_at)


@dataclass
class ProfileSet:
    """The valid profiles of a folder and the problems of the invalid files."""

    profiles: dict[str, Profile] = field(default_factory=dict)  # file path -> profile
    errors: list[FileError] = field(default_factory=list)


def profile_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in PROFILE_SUFFIXES and not p.name.startswith("."))


def load_profiles(folder: str | Path) -> ProfileSet:
    """Validate every profile file of `folder`; invalid ones are collected, not raised."""
    folder = Path(folder)
    result = ProfileSet()
    if not folder.is_dir():
        result.errors.append(FileError(str(folder), 1, None, "no such folder of subscriber profiles"))
        return result
    owner: dict[str, str] = {}
    for path in profile_files(folder):
        try:
            profile, node = read_profile(path)
        except FileError as exc:
            # Returned, not logged: the caller reports it (the CLI prints it, the service logs it).
            result.errors.append(exc)
            continue
        if profile.email in owner:
            line = next((k.start_mark.line + 1 for k, _ in node.value if k.value == "email"), 1)
            error = FileError(str(path), line, "email", f"{profile.email} is already the subscriber of {owner[profile.email]}")
            result.errors.append(error)
            continue
        owner[profile.email] = str(path)
        result.profiles[str(path)] = profile
    return result


def check_size(path: str | Path) -> None:
    """Refuse a file over `MAX_PROFILE_BYTES` before it is read (a FileError, as validate reports
    it): parsing an oversized profile costs seconds and hundreds of megabytes."""
    size = Path(path).stat().st_size
    if size > MAX_PROFILE_BYTES:
        raise FileError(str(path), 1, None, f"the file is {size / 1024:,.0f} KB; a profile may be at most {MAX_PROFILE_BYTES // 1024} KB")


def read_profile(path: str | Path) -> tuple[Profile, yaml.Node]:
    """One profile file, validated; every reader of profile files goes through here or `check_size`."""
    check_size(path)
    return load_model(path, Profile)


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deactivated: list[str] = field(default_factory=list)
    #: Subscribers who unsubscribed by link: their file no longer switches them back on.
    kept_unsubscribed: list[str] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)


def sync_profiles(db: Database, folder: str | Path) -> SyncReport:
    """Load the valid profiles of `folder` into the database in one transaction.

    A subscriber whose file went away is deactivated (history is kept). A subscriber whose file
    is invalid keeps their last valid settings: a typo must not stop their mail.
    """
    loaded = load_profiles(folder)
    report = SyncReport(errors=loaded.errors)
    broken_files = {e.path for e in loaded.errors}
    now = utcnow()
    with db.transaction() as session:
        existing = {s.email: s for s in session.exec(select(Subscriber)).all()}
        for path, profile in loaded.profiles.items():
            _sync(session, existing.pop(profile.email, None), profile, path, now, report)
        for subscriber in existing.values():
            if subscriber.active and subscriber.profile_file not in broken_files:
                subscriber.active = False
                subscriber.updated_at = now
                session.add(subscriber)
                report.deactivated.append(subscriber.email)
    return report


def sync_profile(db: Database, path: str | Path) -> SyncReport:
    """Load one profile file into the database: what the preferences page does after writing it."""
    report = SyncReport()
    try:
        profile, _ = read_profile(path)
    except FileError as exc:
        report.errors.append(exc)
        return report
    with db.transaction() as session:
        subscriber = session.exec(select(Subscriber).where(Subscriber.email == profile.email)).first()
        _sync(session, subscriber, profile, str(path), utcnow(), report)
    return report


def _sync(session, subscriber: Subscriber | None, profile: Profile, path: str, now: dt.datetime, report: SyncReport) -> None:
    """Bring one subscriber's row in line with their valid profile."""
    values = _columns(profile, path)
    if subscriber is None:
        session.add(Subscriber(**values, created_at=now, updated_at=now))
        report.added.append(profile.email)
        return
    if subscriber.unsubscribed_at is not None:
        values["active"] = False
        report.kept_unsubscribed.append(profile.email)
    elif subscriber.disabled_reason is not None:
        # Switched off by the service (the address bounced): an edit of the profile is an
        # operator saying it is fixed; an unchanged profile keeps it off.
        if any(getattr(subscriber, k) != v for k, v in values.items() if k != "active"):
            subscriber.disabled_reason, subscriber.bounces = None, 0
        else:
            values["active"] = False
    changed = {k: v for k, v in values.items() if getattr(subscriber, k) != v}
    if changed:
        for key, value in changed.items():
            setattr(subscriber, key, value)
        subscriber.updated_at = now
        session.add(subscriber)
        report.updated.append(profile.email)
    else:
        report.unchanged.append(profile.email)


def _columns(profile: Profile, path: str) -> dict:
    return {
        "email": profile.email,
        "name": profile.name,
        "timezone": profile.timezone,
        "send_at": profile.send_at,
        "max_items": profile.max_items,
        "interests": [i.model_dump() for i in profile.interests],
        "avoid": profile.avoid,
        "authors": profile.authors,
        "categories": profile.categories,
        "active": profile.active,
        "paused_until": profile.paused_until,
        "profile_file": path,
    }
