"""The database: SQLite tuned for a writer and readers at once (schema versions and upgrades:
test_migrations.py)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import event, text
from sqlmodel import col, select

from digest.db import Database
from digest.models import Subscriber

from .conftest import Workdir, both_databases


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'var' / 'digest.db'}")
    with db.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() >= 10_000
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    assert (tmp_path / "var" / "digest.db").exists()  # its folder was made


@both_databases
def test_a_list_of_ids_is_one_array_parameter_on_postgresql_and_selects_what_in_selects(workdir: Workdir) -> None:
    """psycopg parses a statement of more than 50 parameters anew at every call; a batch's ids
    go to PostgreSQL as one array (`= ANY`), and find exactly the rows `IN` finds."""
    db = workdir.db()
    with db.transaction() as session:
        session.add_all(Subscriber(email=f"reader{n}@example.org") for n in range(600))
    with db.session() as session:
        ids = sorted(session.exec(select(Subscriber.id)).all())
    wanted = ids[::2] + [10**9]  # 300 that exist, one that does not
    sent: list[tuple[str, object]] = []

    def record(connection, cursor, statement, parameters, context, executemany) -> None:
        sent.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", record)
    with db.session() as session:
        found = session.exec(select(Subscriber.id).where(col(Subscriber.id).in_(wanted))).all()
        none = session.exec(select(Subscriber.id).where(col(Subscriber.id).in_([]))).all()
        by_email = session.exec(select(Subscriber.id).where(col(Subscriber.email).in_(["reader1@example.org", "reader3@example.org"]))).all()
    event.remove(db.engine, "before_cursor_execute", record)
    assert sorted(found) == ids[::2]
    assert none == []
    assert sorted(by_email) == [ids[1], ids[3]]
    statement, parameters = sent[0]
    if db.engine.dialect.name == "postgresql":
        assert "= ANY" in statement and len(parameters) == 1
    else:
        assert " IN (" in statement and len(parameters) == len(wanted)
    db.dispose()
