"""The database: one engine per URL, SQLite tuned for a writer and readers at once.

SQLite is the embedded default (`var/digest.db`); any SQLAlchemy URL works, PostgreSQL being
the scale-out choice. Writes that belong together go through `transaction()`, one commit each.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, SQLModel, create_engine

from . import models  # noqa: F401  (registers the tables on SQLModel.metadata)

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
    def _pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001
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
    """Create the tables that do not exist yet."""
    SQLModel.metadata.create_all(engine)


class Database:
    """The engine plus the two ways code uses it: a read session and a one-commit transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        init_db(self.engine)

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session whose work is committed together at the end, or rolled back on error."""
        with Session(self.engine, expire_on_commit=False) as session:
            with session.begin():
                yield session

    def dispose(self) -> None:
        self.engine.dispose()
