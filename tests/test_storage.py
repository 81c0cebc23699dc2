"""The database: tables made on first use, columns a newer version added, SQLite tuned for
a writer and readers at once."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import text

from digest.db import Database


def test_an_older_database_gains_the_new_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as connection:  # the subscriber table of an earlier version
        connection.execute(
            "CREATE TABLE subscriber (id INTEGER PRIMARY KEY, email VARCHAR(320) NOT NULL UNIQUE, name VARCHAR, timezone VARCHAR NOT NULL,"
            " send_at VARCHAR NOT NULL, max_items INTEGER NOT NULL, interests JSON NOT NULL, avoid JSON NOT NULL, authors JSON NOT NULL,"
            " categories JSON NOT NULL, active BOOLEAN NOT NULL, unsubscribed_at DATETIME, profile_file VARCHAR,"
            " created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL)"
        )
        connection.execute(
            "INSERT INTO subscriber VALUES (1, 'old@example.org', NULL, 'UTC', '07:00', 10, '[]', '[]', '[]', '[]', 1, NULL, NULL,"
            " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
        )
    db = Database(f"sqlite:///{path}")
    with db.engine.connect() as connection:
        columns = {row[1] for row in connection.execute(text("PRAGMA table_info(subscriber)"))}
        row = connection.execute(text("SELECT email, bounces, disabled_reason, paused_until, link_id FROM subscriber")).one()
    assert {"bounces", "disabled_reason", "paused_until", "link_id"} <= columns
    assert tuple(row)[:4] == ("old@example.org", 0, None, None)
    assert len(row.link_id) == 16  # filled in for the row that had none
    installation = db.installation()
    Database(f"sqlite:///{path}")  # a second start changes nothing and does not fail
    assert Database(f"sqlite:///{path}").installation() == installation
    with db.engine.connect() as connection:
        assert connection.execute(text("SELECT link_id FROM subscriber")).scalar() == row.link_id


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'var' / 'digest.db'}")
    with db.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() >= 10_000
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    assert (tmp_path / "var" / "digest.db").exists()  # its folder was made
