"""The database: one engine per URL, SQLite tuned for a writer and readers at once.

SQLite is the embedded default (`var/digest.db`); any SQLAlchemy URL works, PostgreSQL being
the scale-out choice. Writes that belong together go through `transaction()`, one commit each.

Papers and the daily send meet at one instant. A send reads "the papers first seen up to now";
a paper that became visible only later with a `first_seen` before that instant would fall
between two digests' windows and reach nobody. `paper_transaction` (every writer of papers) and
`settled_instant` (the send) are the barrier that rules this out; their docstrings say how.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Integer, bindparam, event, func, insert, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, OperationalError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import Insert, operators
from sqlalchemy.sql.elements import BinaryExpression, BindParameter
from sqlmodel import Session, create_engine

from .models import Digest, DigestItem, Installation, Subscriber, new_link_id, utcnow

T = TypeVar("T")

#: Seconds a SQLite writer waits for another one before "database is locked".
SQLITE_BUSY_TIMEOUT = 30
#: Values per `IN (...)`: well under SQLite's bound-parameter limit.
IN_CHUNK = 5000


def chunks(values: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    """`values` in slices small enough for one `IN (...)` each."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


@compiles(BinaryExpression, "postgresql")
def _id_list_as_array(binary: BinaryExpression, compiler, **kw) -> str:
    """On PostgreSQL, `id IN (:1, :2, … :500)` is sent as `id = ANY(:ids)`, one array.

    psycopg parses a statement's placeholders on the client, and keeps the result only for a
    statement of at most 50 parameters and 4 kB: a batch's `IN` list of 500 ids was parsed anew
    at every query, about 1 s of a sender's CPU per 10,000 subscribers. One array parameter makes
    every such query short, parsed once, and the same text for PostgreSQL's own statement cache.
    Only lists of integers (ids) take this path; anything else compiles as SQLAlchemy would."""
    right = binary.right
    if binary.operator is operators.in_op and isinstance(right, BindParameter) and right.expanding and isinstance(binary.left.type, Integer):
        array = right._clone()
        array.expanding = False
        array.type = ARRAY(binary.left.type)
        return f"{compiler.process(binary.left, **kw)} = ANY ({compiler.process(array, **kw)})"
    return compiler.visit_binary(binary, **kw)


def upsert(connection: Connection, table) -> Insert | None:
    """The dialect's INSERT that takes ON CONFLICT (SQLite and PostgreSQL both have it), or None
    for another database, whose caller goes row by row."""
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif connection.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:
        return None
    return dialect_insert(table)


def upsert_rows(connection: Connection, table, rows: Sequence[dict]) -> tuple[Insert, Sequence[dict] | None] | None:
    """`upsert` of many `rows` (dicts of `table`'s column values, all with the same keys), and
    the parameters to execute it with; the caller adds ON CONFLICT and RETURNING.

    On PostgreSQL the rows go as `INSERT … SELECT … FROM unnest(:a, :b, …)`, one array per
    column, and no parameters. SQLAlchemy would send them as one statement of every row's values
    ("insertmanyvalues"): thousands of placeholders, which psycopg parses on the client at every
    call (46 ms for 500 digests, 1.8 s of a sender's CPU at 20,000 subscribers). A handful of
    arrays is a short statement, parsed once and cached by both ends. On SQLite the rows are the
    parameters (insertmanyvalues: its driver parses nothing)."""
    statement = upsert(connection, table)
    if statement is None or connection.dialect.name != "postgresql":
        return None if statement is None else (statement, rows)
    names = list(rows[0])
    arrays = [bindparam(f"{name}_values", [row[name] for row in rows], type_=ARRAY(table.c[name].type)) for name in names]
    source = func.unnest(*arrays).table_valued(*names).render_derived()
    return statement.from_select(names, select(*(source.c[name] for name in names))), None


class DatabaseUnusable(Exception):
    """The database cannot be used as configured (no driver, a bad URL, a schema to upgrade);
    the message says what to do, in one line."""


#: URL schemes without a driver, and the driver this project installs for them.
DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}
#: The extra that installs each backend's driver.
EXTRAS = {"postgresql": "postgres"}


def database_url(url: str) -> URL:
    """`url` parsed, a bare `postgresql://` (or `postgres://`) given psycopg 3, the driver of the
    `postgres` extra (SQLAlchemy would otherwise look for psycopg2)."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseUnusable(f"DIGEST_DATABASE_URL is not a database URL ({exc})") from None
    if parsed.drivername in DRIVERS:
        parsed = parsed.set(drivername=DRIVERS[parsed.drivername])
    return parsed


def make_engine(url: str | URL) -> Engine:
    """An engine for `url`, with the SQLite file's folder created and its pragmas set."""
    parsed = database_url(url) if isinstance(url, str) else url
    backend = parsed.get_backend_name()
    if backend != "sqlite":
        try:
            return create_engine(parsed, pool_pre_ping=True)
        except (ImportError, NoSuchModuleError) as exc:
            extra = EXTRAS.get(backend)
            hint = f"pip install 'digest[{extra}]'" if extra else "install its driver"
            if extra and parsed.drivername != DRIVERS.get(backend):
                hint += f" and use a {DRIVERS[backend].split('+')[0]}:// URL, or install the driver {parsed.drivername} names"
            raise DatabaseUnusable(f"{parsed.drivername} needs a driver that is not installed ({exc}): {hint}") from None
    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT * 1000}")
        # WAL lets the web endpoints read and write while a send is running; NORMAL sync is
        # durable across process crashes (only an OS crash can lose the last commits).
        _use_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def _use_wal(cursor) -> None:
    """Put the database file in WAL mode (once: the mode is stored in the file). Changing the
    mode needs the file to itself, and SQLite answers "database is locked" at once, without its
    busy handler, while another connection is opening it: processes that start together on a
    new database take turns here, up to the busy timeout."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01 + random.random() * 0.04)


def init_db(engine: Engine) -> None:
    """Make sure the schema is this version's (an empty database gets it; one that is behind is
    refused: `migrations.prepare`), then this installation's identity and each subscriber's link
    id, where still missing."""
    from . import migrations

    try:
        migrations.prepare(engine, engine.url.render_as_string(hide_password=True))
    except migrations.SchemaError as exc:
        raise DatabaseUnusable(str(exc)) from None
    except OperationalError as exc:
        raise DatabaseUnusable(f"cannot reach the database {engine.url.render_as_string(hide_password=True)}: {str(exc.orig).strip().splitlines()[0]}") from None
    ensure_installation(engine)
    ensure_link_ids(engine)


def ensure_installation(engine: Engine) -> Installation:
    """This database's `Installation` row, made at its first start by this version.

    A database that already holds digests (made by an earlier version, whose mailed links carry
    no installation) records its largest digest and item ids: links of that first format stay
    valid for those objects and for nothing newer (see `links`). A fresh database records none,
    so no link of the first format opens anything in it (after a reset, say).
    """
    with engine.connect() as connection:
        found = _installation(connection)
    if found is not None:
        return found
    with engine.begin() as connection:
        _begin_immediate(connection)  # two processes starting at once make one row
        found = _installation(connection)
        if found is None:
            row = {
                "slot": 1, "id": secrets.token_urlsafe(16), "created_at": utcnow(),
                "legacy_digest_max": connection.execute(select(func.max(Digest.__table__.c.id))).scalar() or 0,
                "legacy_item_max": connection.execute(select(func.max(DigestItem.__table__.c.id))).scalar() or 0,
            }
            try:
                with connection.begin_nested():
                    connection.execute(insert(Installation.__table__), row)
            except IntegrityError:  # PostgreSQL: another process was first
                pass
            found = _installation(connection)
    return found


def _installation(connection: Connection) -> Installation | None:
    table = Installation.__table__
    row = connection.execute(select(table).where(table.c.slot == 1)).mappings().first()
    return Installation.model_validate(dict(row)) if row else None


def ensure_link_ids(engine: Engine) -> None:
    """A random link id for each subscriber that has none (rows from before the column existed,
    or inserted by other means): every tracked link is bound to its subscriber's."""
    table = Subscriber.__table__
    with engine.connect() as connection:
        missing = connection.execute(select(table.c.id).where(table.c.link_id.is_(None))).scalars().all()
    if missing:
        with engine.begin() as connection:
            connection.execute(
                update(table).where(table.c.id == bindparam("subscriber"), table.c.link_id.is_(None)).values(link_id=bindparam("link")),
                [{"subscriber": subscriber_id, "link": new_link_id()} for subscriber_id in missing],
            )


def _begin_immediate(connection: Connection) -> None:
    """On SQLite, take the write lock now, before the transaction's first read (`BEGIN
    IMMEDIATE`, waiting up to the busy timeout for another writer); elsewhere nothing.

    Must be the first statement of the transaction: Python's sqlite3 module (in its default
    mode) begins a transaction only before the first write, so until then none is open."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """The engine plus the two ways code uses it: a read session and a one-commit transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        try:
            init_db(self.engine)
        except BaseException:
            self.engine.dispose()
            raise
        self._installation: Installation | None = None

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def transaction(self, immediate: bool = False) -> Iterator[Session]:
        """A session whose work is committed together at the end, or rolled back on error.

        `immediate`: on SQLite, hold the write lock from the start, so that what the transaction
        reads before it writes cannot change under it (a check-then-insert is atomic). On
        PostgreSQL lock the rows that matter instead (`SELECT ... FOR UPDATE`)."""
        with Session(self.engine, expire_on_commit=False) as session:
            with session.begin():
                if immediate:
                    _begin_immediate(session.connection())
                yield session

    @contextlib.contextmanager
    def paper_transaction(self) -> Iterator[Session]:
        """A transaction for writing papers, holding the papers' write lock from its start.

        Whoever stamps `first_seen` must do so inside this, after entering it: then between the
        stamp and the commit the lock is held, and `settled_instant` cannot pass. SQLite: `BEGIN
        IMMEDIATE` (the database's one write lock; readers are never blocked, WAL). PostgreSQL:
        `LOCK TABLE paper IN SHARE ROW EXCLUSIVE MODE`: it conflicts with the SHARE lock of
        `settled_instant` and with itself (two ingests take turns, so neither inserts a paper
        the other is inserting), but not with the ROW SHARE that the foreign keys of digest
        items and feedback take, nor with any reader: the web endpoints and a send in progress
        go on. Elsewhere: a plain transaction (no barrier; see `settled_instant`).
        """
        with Session(self.engine, expire_on_commit=False) as session:
            with session.begin():
                connection = session.connection()
                if connection.dialect.name == "postgresql":
                    connection.exec_driver_sql("LOCK TABLE paper IN SHARE ROW EXCLUSIVE MODE")
                else:
                    _begin_immediate(connection)
                yield session

    def settled_instant(self, clock: Callable[[], dt.datetime] = utcnow) -> dt.datetime:
        """`clock()` read at a moment when no `paper_transaction` is open.

        Every paper committed before this instant has a `first_seen` before it and is visible
        to any read that starts afterwards; every paper committed later is stamped later. So a
        send whose window ends here misses no paper, whenever an ingest overlaps it. The wait
        is for the papers' writers only, and the lock is let go at once: SQLite, `BEGIN
        IMMEDIATE` then commit (waiting for any writer, at most the busy timeout); PostgreSQL,
        `LOCK TABLE paper IN SHARE MODE` (waits for open writers of papers, blocks new ones for
        the moment it takes to read the clock). Other databases: no barrier, the clock alone.
        """
        with self.engine.connect() as connection:
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.exec_driver_sql("LOCK TABLE paper IN SHARE MODE")
                else:
                    _begin_immediate(connection)
                return clock()

    def installation(self) -> Installation:
        """This database's identity (see `ensure_installation`)."""
        if self._installation is None:
            self._installation = ensure_installation(self.engine)
        return self._installation

    def dispose(self) -> None:
        self.engine.dispose()
