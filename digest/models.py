"""The tables: papers, subscribers, digests, digest items and feedback events, and this
installation's identity.

Times are stored as naive UTC and always handed back as aware UTC (`UTCDateTime`), so that
SQLite (which keeps no zone) and PostgreSQL behave the same.
"""

from __future__ import annotations

import datetime as dt
import enum
import secrets
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, UniqueConstraint
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def new_link_id() -> str:
    """A subscriber's random link id (see `Subscriber.link_id`)."""
    return secrets.token_hex(8)


class UTCDateTime(TypeDecorator):
    """A timestamp stored as naive UTC, returned as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.timezone.utc)


def _utc(**kw: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kw)


def _json_list() -> Any:
    return Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class Paper(SQLModel, table=True):
    """One research paper, whatever source or day it was met on."""

    id: int | None = Field(default=None, primary_key=True)
    arxiv_id: str | None = Field(default=None, unique=True, index=True, max_length=64)
    #: Normalized title: the identity of a paper whose arXiv id is not known.
    title_key: str = Field(index=True, max_length=512)
    title: str
    abstract: str = ""
    authors: list[str] = _json_list()
    categories: list[str] = _json_list()
    published: dt.datetime | None = _utc(default=None)
    updated: dt.datetime | None = _utc(default=None)
    version: int | None = None
    url: str | None = None
    pdf_url: str | None = None
    source: str = Field(max_length=64)
    #: When this service first met the paper; it never moves, so a paper is "new" once.
    first_seen: dt.datetime = _utc(default_factory=utcnow, index=True)
    popularity: float | None = None
    #: The abstract's one-sentence TL;DR (`tldr`), worked out when the abstract is stored, not
    #: again by every run that shows the paper; None for a paper stored before it was (worked
    #: out when shown).
    tldr: str | None = None
    #: The paper's words as the text model reads them (`textmodel.stored_tokens`), worked out when
    #: its text is stored: every daily run and nightly retrain fits a text model on the recent
    #: corpus. None (stored before) or of another tokenizer: worked out when needed.
    terms: str | None = None


class Subscriber(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(unique=True, index=True, max_length=320)
    name: str | None = None
    timezone: str = "UTC"
    send_at: str = "07:00"
    max_items: int = 10
    #: [{"phrase": ..., "weight": ...}]
    interests: list[dict] = _json_list()
    avoid: list[str] = _json_list()
    authors: list[str] = _json_list()
    categories: list[str] = _json_list()
    active: bool = True
    #: No digest before this local date (the profile's `paused_until`).
    paused_until: dt.date | None = None
    #: Set by the unsubscribe link; final: no profile sync brings the subscriber back (only the
    #: subscriber, resubscribing on their preferences page).
    unsubscribed_at: dt.datetime | None = _utc(default=None)
    #: Digests refused for good in a row; at `BouncePolicy.limit` (`send/ledger.py`) the address is switched off.
    bounces: int = 0
    #: Why the service switched the subscriber off ("bounced"), where it did; a profile sync keeps it.
    disabled_reason: str | None = None
    profile_file: str | None = None
    created_at: dt.datetime = _utc(default_factory=utcnow)
    updated_at: dt.datetime = _utc(default_factory=utcnow)
    #: Random, made with the row: every tracked link carries it signed, so that a link opens an
    #: object only while it belongs to the subscriber it was mailed to (ids re-used after a
    #: restore from a backup do not). Nullable so that an older database gains the column;
    #: `db.ensure_link_ids` fills it in.
    link_id: str | None = Field(default_factory=new_link_id, max_length=32, sa_column_kwargs={"default": new_link_id})


class DigestStatus(enum.StrEnum):
    PENDING = "pending"  # claimed and its items chosen; not yet handed to a transport
    SENDING = "sending"  # handed to a transport; the outcome is not recorded yet
    SENT = "sent"
    FAILED = "failed"  # refused for good (SMTP 5xx): not tried again automatically
    DEFERRED = "deferred"  # still refused after the retries (4xx, timeouts): the next run tries again
    EMPTY = "empty"  # nothing matched: no email, the reason is recorded
    UNKNOWN = "unknown"  # a crash left it in `sending` and the transport cannot tell


class Digest(SQLModel, table=True):
    """One subscriber's digest for one local date: there is at most one."""

    __table_args__ = (UniqueConstraint("subscriber_id", "local_date", name="uq_digest_subscriber_date"),)

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscriber.id", index=True)
    local_date: dt.date
    status: str = Field(default=DigestStatus.PENDING, index=True, max_length=16)
    #: Why a digest is empty or failed, in words for the operator.
    reason: str | None = None
    #: Papers first seen in [window_start, window_end) were this digest's candidates.
    window_start: dt.datetime = _utc()
    window_end: dt.datetime = _utc()
    message_id: str | None = None
    attempts: int = 0
    #: The run that moved it to `sending` ("host:pid") and when: a crashed run is told from a
    #: live one by whether that process still exists, or else by the lease running out.
    claimed_by: str | None = None
    sending_since: dt.datetime | None = _utc(default=None)
    created_at: dt.datetime = _utc(default_factory=utcnow)
    sent_at: dt.datetime | None = _utc(default=None)


class DigestItem(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("digest_id", "rank", name="uq_item_digest_rank"),
        UniqueConstraint("digest_id", "paper_id", name="uq_item_digest_paper"),
    )

    id: int | None = Field(default=None, primary_key=True)
    digest_id: int = Field(foreign_key="digest.id", index=True)
    paper_id: int = Field(foreign_key="paper.id", index=True)
    rank: int
    score: float
    reason: str = ""


class FeedbackKind(enum.StrEnum):
    CLICK = "click"
    UP = "up"
    DOWN = "down"
    UNSUBSCRIBE = "unsubscribe"
    VIEW = "view"
    #: Takes back the thumbs on an item ("undo" on the confirmation page): training ignores both.
    UNDO = "undo"
    RESUBSCRIBE = "resubscribe"


class FeedbackEvent(SQLModel, table=True):
    """One thing a subscriber did with a digest: every request is kept, with its time."""

    __table_args__ = (Index("ix_feedback_subscriber_kind", "subscriber_id", "kind"),)

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscriber.id")
    digest_id: int | None = Field(default=None, foreign_key="digest.id")
    digest_item_id: int | None = Field(default=None, foreign_key="digestitem.id", index=True)
    paper_id: int | None = Field(default=None, foreign_key="paper.id")
    kind: str = Field(max_length=16)
    #: The same kind of event on the same item (or digest) was recorded before: training counts it once.
    repeat: bool = False
    created_at: dt.datetime = _utc(default_factory=utcnow, index=True)


class Installation(SQLModel, table=True):
    """This database's identity: one row, made at its first start (`db.ensure_installation`).

    Tracked links are signed with the secret key *and* this random id, so a link from an email
    of another installation sharing the key, or of this one before a database reset, opens
    nothing. Links of the first format (signed with the key alone, by versions before this
    table) are accepted for digests and items up to the ids recorded here, which existed when
    the database was upgraded, and for no later ones.
    """

    slot: int = Field(default=1, primary_key=True)
    id: str = Field(max_length=64)
    created_at: dt.datetime = _utc(default_factory=utcnow)
    legacy_digest_max: int = 0
    legacy_item_max: int = 0


class SourceState(SQLModel, table=True):
    """What a URL's server said last time, for conditional GET."""

    url: str = Field(primary_key=True, max_length=2048)
    etag: str | None = None
    last_modified: str | None = None
    checked_at: dt.datetime = _utc(default_factory=utcnow)


class IngestRun(SQLModel, table=True):
    """One ingest of one source: what it brought and how long it took."""

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(index=True, max_length=256)
    location: str
    format: str | None = None
    status: str = Field(max_length=16)  # ok | failed | not-modified
    started_at: dt.datetime = _utc(default_factory=utcnow, index=True)
    seconds: float = 0.0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    errors: int = 0
    #: The error of a failed run, or the first reasons entries were skipped.
    detail: str | None = None


class SubscriberModel(SQLModel, table=True):
    """A subscriber's learned taste: a logistic regression kept in dual form, a weight per example
    paper and one for the corpus centroid, so that it outlives any one vocabulary of the text
    model (see `training`)."""

    subscriber_id: int = Field(foreign_key="subscriber.id", primary_key=True)
    #: [[paper id, weight], ...]: positive for opened and liked papers, negative for the others.
    examples: list[list[float]] = _json_list()
    #: The weight of the corpus centroid (the typical paper), negative: what every paper says tells no taste.
    background: float = 0.0
    #: 0: raw evidence (+1 opened, -1 turned down, -0.15 skipped; before learned models); 1: learned.
    version: int = 0
    positives: int = 0
    negatives: int = 0
    #: The time of the latest feedback event this model has seen: newer events mean retraining.
    evidence_until: dt.datetime | None = _utc(default=None)
    trained_at: dt.datetime = _utc(default_factory=utcnow)


class PaperEmbedding(SQLModel, table=True):
    """A paper's sentence embedding under one model (the `semantic` extra): float16 bytes."""

    paper_id: int = Field(foreign_key="paper.id", primary_key=True)
    #: The model's name, or the resolved path of a local model folder.
    model: str = Field(primary_key=True, max_length=512)
    dim: int
    vector: bytes
    created_at: dt.datetime = _utc(default_factory=utcnow)


class PhraseEmbedding(SQLModel, table=True):
    """An interest phrase's sentence embedding under one model: embedded once, float16 bytes."""

    phrase: str = Field(primary_key=True, max_length=512)
    model: str = Field(primary_key=True, max_length=512)
    vector: bytes
class SendLease(SQLModel, table=True):
    """Which send process is working on a subscriber's digest, for which local date, until when.

    Send processes against one database split the day's subscribers by these leases
    (`coordination.SendLeases`): a batch is taken by one process, renewed while it works, given
    back when done, and taken over by another once it runs out (its process died)."""

    subscriber_id: int = Field(foreign_key="subscriber.id", primary_key=True)
    local_date: dt.date
    #: "host:pid" of the process, as in `Digest.claimed_by`.
    holder: str = Field(max_length=255)
    expires: dt.datetime = _utc()


class JobRun(SQLModel, table=True):
    """One run of a scheduled job of `digest serve` for one scheduled time (`slot`): the primary
    key lets one instance of several take it (`coordination.JobRuns`)."""

    job: str = Field(primary_key=True, max_length=255)
    slot: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=255)
    started_at: dt.datetime = _utc(default_factory=utcnow)
    finished_at: dt.datetime | None = _utc(default=None)
