"""Schema migrations (Alembic): an empty database gets the models' schema whichever way it is
made, a database of the last version before migrations (f1f4b40) upgrades in place with every
row readable, a later revision that adds a non-null datetime column keeps old rows readable,
and a database that is behind, or a missing driver, is one clear line."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import Session, select

from digest import migrations
from digest.db import Database, DatabaseUnusable, make_engine
from digest.models import Digest, DigestItem, FeedbackEvent, IngestRun, Paper, SourceState, Subscriber, SubscriberModel, UTCDateTime

from .conftest import Workdir, both_databases

DUMP = Path(__file__).parent / "data" / "f1f4b40.sql"
#: What the dump holds, per table (see its header).
ROWS = {"paper": 14, "subscriber": 4, "digest": 4, "digestitem": 10, "feedbackevent": 3, "subscribermodel": 1, "ingestrun": 1}

#: A revision after the head, as a later branch would write one: two non-null datetime columns
#: (the kind `add_missing_columns` used to add as DEFAULT 0, leaving every old row unreadable).
LATER_REVISION = '''
import sqlalchemy as sa

from digest.migrations import add_filled_column

revision = "9001"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_filled_column("digest", sa.Column("queued_at", sa.DateTime(), nullable=False), fill="created_at")
    add_filled_column("subscriber", sa.Column("checked_at", sa.DateTime(), nullable=False), fill="CURRENT_TIMESTAMP")


def downgrade() -> None:
    with __import__("alembic").op.batch_alter_table("subscriber") as batch:
        batch.drop_column("checked_at")
    with __import__("alembic").op.batch_alter_table("digest") as batch:
        batch.drop_column("queued_at")
'''


def schema_differences(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"include_object": migrations.include_object, "compare_type": True})
            return compare_metadata(context, migrations.target_metadata())
    finally:
        engine.dispose()


def f1f4b40_database(workdir: Workdir) -> None:
    """The database of `workdir` as f1f4b40 left it: the dump itself on SQLite; on PostgreSQL the
    revision-1 schema holding the dump's rows."""
    url = workdir.env["DIGEST_DATABASE_URL"]
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as connection:
            connection.executescript(DUMP.read_text(encoding="utf-8"))
        return
    scratch = workdir.path / "f1f4b40.db"
    with sqlite3.connect(scratch) as connection:
        connection.executescript(DUMP.read_text(encoding="utf-8"))
    source, target = sa.create_engine(f"sqlite:///{scratch}"), make_engine(url)
    migrations.upgrade(target, "0001")
    old = sa.MetaData()
    old.reflect(source)
    with source.connect() as reading, target.begin() as writing:
        for table in old.sorted_tables:
            rows = [dict(row) for row in reading.execute(table.select()).mappings()]
            if rows:
                writing.execute(sa.Table(table.name, sa.MetaData(), autoload_with=writing).insert(), rows)
    source.dispose()
    target.dispose()


def test_there_is_one_head_and_the_first_revision_is_f1f4b40s_schema(tmp_path: Path) -> None:
    assert migrations.head()  # raises on two heads
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as connection:
        connection.executescript(DUMP.read_text(encoding="utf-8"))
    engine = make_engine(f"sqlite:///{old}")
    with engine.connect() as connection:
        assert migrations.adopted_revision(connection) == "0001"
    engine.dispose()


@both_databases
def test_an_empty_database_made_by_the_migrations_or_at_start_has_the_models_schema(workdir: Workdir, request: pytest.FixtureRequest) -> None:
    by_start = workdir.env["DIGEST_DATABASE_URL"]
    Database(by_start).dispose()  # tables from the models, stamped at the head
    if by_start.startswith("sqlite"):
        by_migrations = f"sqlite:///{workdir.path / 'migrated.db'}"
    else:
        by_migrations = request.getfixturevalue("postgres").create_database()
    engine = make_engine(by_migrations)
    assert migrations.upgrade(engine) == (None, migrations.head())
    engine.dispose()
    assert schema_differences(by_start) == []
    assert schema_differences(by_migrations) == []
    Database(by_migrations).dispose()  # and it is accepted at start


@both_databases
def test_a_database_of_f1f4b40_upgrades_in_place_and_a_later_non_null_datetime_column_keeps_every_row_readable(workdir: Workdir, tmp_path: Path) -> None:
    f1f4b40_database(workdir)
    url = workdir.env["DIGEST_DATABASE_URL"]

    refused = workdir.cli("status")
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 2
    assert "run `digest db upgrade`" in said and "Traceback" not in said
    assert "from before schema migrations" in said or "revision 0001" in said

    upgraded = workdir.cli("db", "upgrade", check=True)
    assert f"-> {migrations.head()}" in upgraded.stdout
    assert schema_differences(url) == []
    db = Database(url)
    installation = db.installation()
    assert installation.legacy_digest_max == ROWS["digest"] and installation.legacy_item_max == ROWS["digestitem"]
    with db.session() as session:
        link_ids = [s.link_id for s in session.exec(select(Subscriber))]
    assert len(link_ids) == ROWS["subscriber"] and all(link_ids) and len(set(link_ids)) == len(link_ids)
    db.dispose()
    sent_again = workdir.cli("send", "--date", "2026-11-02", check=True)  # the old digests count: nothing twice
    assert "4 already" in sent_again.stdout or "already" in sent_again.stdout
    assert workdir.outbox() == []

    later = tmp_path / "later"
    later.mkdir()
    (later / "9001_later.py").write_text(LATER_REVISION.format(head=migrations.head()), encoding="utf-8")
    engine = make_engine(url)
    assert migrations.upgrade(engine, extra_versions=[later]) == (migrations.head(), "9001")

    with Session(engine) as session:  # every old row, through the models, and the new columns
        counts = {model.__tablename__: len(session.exec(select(model)).all()) for model in (Paper, Subscriber, Digest, DigestItem, FeedbackEvent, SubscriberModel, IngestRun)}
        assert counts == ROWS
        assert len(session.exec(select(SourceState)).all()) == 0
        emails = sorted(s.email for s in session.exec(select(Subscriber)))
        assert emails == ["ada@example.org", "kenji@example.org", "lucia@example.org", "sam@example.org"]
        digests = session.exec(select(Digest).order_by(Digest.id)).all()
        assert {d.status for d in digests} == {"sent"} and all(d.sent_at and d.window_end > d.window_start for d in digests)
        queued = session.execute(sa.select(sa.column("id"), sa.column("queued_at", UTCDateTime())).select_from(sa.table("digest")).order_by(sa.column("id"))).all()
        assert [when for _, when in queued] == [d.created_at for d in digests]
        checked = session.execute(sa.select(sa.column("checked_at", UTCDateTime())).select_from(sa.table("subscriber"))).scalars().all()
        assert len(checked) == 4 and all(when.year >= 2026 for when in checked)
    with engine.connect() as connection:  # the new columns really are NOT NULL
        columns = {c["name"]: c for c in sa.inspect(connection).get_columns("digest")}
        assert columns["queued_at"]["nullable"] is False
    engine.dispose()

    with pytest.raises(DatabaseUnusable, match="revision 9001, which this version of digest does not know"):
        Database(url)  # refused, not misread


def test_a_database_behind_is_refused_at_start_with_what_to_do(workdir: Workdir) -> None:
    f1f4b40_database(workdir)
    url = workdir.env["DIGEST_DATABASE_URL"]
    engine = make_engine(url)
    migrations.upgrade(engine, "0001")
    engine.dispose()
    with pytest.raises(DatabaseUnusable, match=r"at schema revision 0001; this version of digest needs .*: run `digest db upgrade`"):
        Database(url)
    current = workdir.cli("db", "current")
    said = " ".join(current.stdout.split())
    assert current.returncode == 1 and f"revision 0001; this version: {migrations.head()}" in said and "run `digest db upgrade`" in said


def test_a_database_changed_by_hand_is_not_adopted(tmp_path: Path) -> None:
    path = tmp_path / "odd.db"
    with sqlite3.connect(path) as connection:
        connection.executescript(DUMP.read_text(encoding="utf-8"))
        connection.execute("ALTER TABLE subscriber ADD COLUMN shoe_size INTEGER")
    engine = make_engine(f"sqlite:///{path}")
    with pytest.raises(migrations.SchemaError, match=r"match no revision.*nearest: revision 0001, unexpected subscriber.shoe_size"):
        migrations.upgrade(engine)
    with engine.connect() as connection:
        assert migrations.current(connection) is None  # nothing was stamped
    engine.dispose()


@both_databases
def test_processes_starting_at_once_on_an_empty_database_make_one_schema(workdir: Workdir) -> None:
    url, errors = workdir.env["DIGEST_DATABASE_URL"], []

    def start() -> None:
        try:
            Database(url).dispose()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    engine = make_engine(url)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
        assert connection.execute(sa.text("SELECT count(*) FROM installation")).scalar() == 1
    engine.dispose()


def test_a_postgresql_url_without_the_driver_is_one_line_naming_the_extra(workdir: Workdir) -> None:
    # The driver made unimportable, as on a machine without the `postgres` extra.
    code = "import sys; sys.modules['psycopg'] = None; from digest.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "status"], cwd=workdir.path, capture_output=True, text=True, timeout=60,
        env={**workdir.env, "PATH": "/usr/bin:/bin", "DIGEST_DATABASE_URL": "postgresql://digest@127.0.0.1:5432/digest"},
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) <= 2 and "pip install 'digest[postgres]'" in result.stderr.replace("\n", " ")
