"""The database: SQLite tuned for a writer and readers at once (schema versions and upgrades:
test_migrations.py)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from digest.db import Database


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'var' / 'digest.db'}")
    with db.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() >= 10_000
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    assert (tmp_path / "var" / "digest.db").exists()  # its folder was made
