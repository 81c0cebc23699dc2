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
import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from sqlalchemy import bindparam, event, func, insert, inspect, select, text, update
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, create_engine

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


def make_engine(url: str) -> Engine:
    """An engine for `url`, with the SQLite file's folder created and its pragmas set."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        # WAL lets the web endpoints read and write while a send is running; NORMAL sync is
        # durable across process crashes (only an OS crash can lose the last commits).
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT * 1000}")
        cursor.close()

    return engine


def init_db(engine: Engine) -> None:
    """Create the tables that do not exist yet, and the columns a newer version added to old ones;
    then this installation's identity and each subscriber's link id, where still missing."""
    SQLModel.metadata.create_all(engine)
    add_missing_columns(engine)
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


def add_missing_columns(engine: Engine) -> None:
    """`ALTER TABLE ... ADD COLUMN` for each model column an existing table lacks.

    Enough for a young schema that only grows (new columns are nullable or have a scalar
    default); a change of type or a dropped column would need a real migration tool.
    """
    inspector = inspect(engine)
    existing_tables = set(inspector.get_table_names())
    statements = []
    for table in SQLModel.metadata.sorted_tables:
        if table.name not in existing_tables:
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            kind = column.type.compile(dialect=engine.dialect)
            default = column.default.arg if column.default is not None and column.default.is_scalar else None
            clause = ""
            if default is not None:
                clause = f" DEFAULT {int(default) if isinstance(default, bool) else repr(default)}"
            elif not column.nullable:
                clause = " DEFAULT ''" if kind.upper().startswith(("VARCHAR", "TEXT")) else " DEFAULT 0"
            statements.append(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}{clause}')
    if statements:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement))


class Database:
    """The engine plus the two ways code uses it: a read session and a one-commit transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        init_db(self.engine)
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
