"""Schema migrations: Alembic (SQLAlchemy's own tool), shipped in the package, configured in code.

A database records its schema version in `alembic_version`. At every start (`db.init_db`) a
database is one of:

- **empty**: the tables are made from the models and stamped at the head revision (the same
  schema as running every revision; `tests/test_migrations.py` compares the two, on SQLite and
  on PostgreSQL);
- **at the head**: used as it is;
- **behind**, or **unversioned** (made by a version before migrations): refused with one line,
  "run `digest db upgrade`";
- **ahead** (a newer version of digest upgraded it): refused.

`digest db upgrade` takes the migration lock (SQLite `BEGIN IMMEDIATE`, PostgreSQL an advisory
lock), adopts an unversioned database (the newest revision whose tables and columns it has,
exactly, is stamped: `adopted_revision`) and runs the revisions it lacks, all in one
transaction: a failure leaves the database as it was.

Adding a revision (a model in `digest/models.py` gained a column or a table):

1. change the model;
2. `digest db revision "subscriber pause"` writes `digest/migrations/versions/NNNN_subscriber_pause.py`
   with what Alembic's autogenerate finds between the revisions so far and the models, and
   `down_revision` set to the current head;
3. read it. A new **non-null** column needs a value for the rows that exist: replace its
   `add_column` by `add_filled_column("subscriber", sa.Column("paused_until", sa.DateTime(),
   nullable=False), fill="created_at")` (added nullable, filled, then made non-null; on SQLite
   by a copy of the table, foreign keys checked after). A new table needs nothing more;
4. `make test`: `tests/test_migrations.py` checks one head, that the revisions give the models'
   schema, and that an old database with rows upgrades and reads back.

Two branches that each added a revision after the same head: renumber one and set its
`down_revision` to the other's id (the tests insist on a single head).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command, op
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

HERE = Path(__file__).resolve().parent
VERSIONS = HERE / "versions"
#: Tables in the database that are not the models' (Alembic's own, APScheduler's job store).
FOREIGN_TABLES = {"alembic_version", "apscheduler_jobs"}
#: PostgreSQL advisory lock held while the schema is made or migrated ("dgst").
LOCK_KEY = 0x64677374


class SchemaError(Exception):
    """The database's schema is not the one this version works with; the message says what to do."""


def config(connection: Connection | None = None, extra_versions: Sequence[Path] = ()) -> Config:
    """Alembic's configuration, in code: the scripts are this package, wherever it is installed.

    `extra_versions`: more folders of revisions (a test's own revision after the head)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("version_locations", os.pathsep.join(str(p) for p in (VERSIONS, *extra_versions)))
    cfg.attributes["connection"] = connection
    return cfg


def target_metadata() -> sa.MetaData:
    """The models' metadata (what autogenerate and `create_all` work from)."""
    from sqlmodel import SQLModel

    from .. import models  # noqa: F401  (registers the tables)

    return SQLModel.metadata


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Autogenerate looks at the models' tables only."""
    return not (type_ == "table" and name in FOREIGN_TABLES)


def render_item(type_: str, obj: object, autogen_context: object) -> str | bool:
    """Revisions name plain SQLAlchemy types, never the models' own (a revision must not change
    when a model does): `UTCDateTime` is a DateTime, SQLModel's `AutoString` a String."""
    if type_ != "type":
        return False
    from sqlmodel.sql.sqltypes import AutoString

    from ..models import UTCDateTime

    if isinstance(obj, UTCDateTime):
        return "sa.DateTime()"
    if isinstance(obj, AutoString):
        return f"sa.String(length={obj.length})" if obj.length else "sa.String()"
    return False


def add_filled_column(table: str, column: sa.Column, fill: str | object | None) -> None:
    """In a revision: add `column` to `table`, giving the rows that exist `fill` before a
    non-null column becomes non-null. `fill` is SQL text over the row's columns (`"created_at"`,
    `"CURRENT_TIMESTAMP"`) or a Python value; None leaves them null (a nullable column only)."""
    nullable = column.nullable
    with op.batch_alter_table(table) as batch:
        batch.add_column(sa.Column(column.name, column.type, nullable=True))
    if fill is not None:
        value = sa.literal_column(fill) if isinstance(fill, str) else sa.literal(fill, column.type)
        op.execute(sa.table(table, sa.column(column.name)).update().values({column.name: value}))
    if not nullable:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column.name, existing_type=column.type, nullable=False)


@contextlib.contextmanager
def locked(engine: Engine) -> Iterator[Connection]:
    """One connection in one transaction that holds the migration lock: two processes that start
    on an empty database, or two upgrades, take turns; a failed migration changes nothing.

    SQLite: foreign keys are off while the lock is held (a batch operation copies a table and
    drops the old one, which their checks would refuse) and checked before the commit."""
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")  # outside a transaction, or it is ignored
            connection.commit()
        try:
            with connection.begin():
                if sqlite:
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                elif connection.dialect.name == "postgresql":
                    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
                yield connection
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise SchemaError(f"the migration would leave {len(broken)} rows pointing at nothing (first: {tuple(broken[0])}); nothing was changed")
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


def head(extra_versions: Sequence[Path] = ()) -> str:
    """The newest revision (there must be exactly one)."""
    heads = ScriptDirectory.from_config(config(extra_versions=extra_versions)).get_heads()
    if len(heads) != 1:
        raise SchemaError(f"the migrations have {len(heads)} heads ({', '.join(heads)}): one revision must follow the other")
    return heads[0]


def current(connection: Connection) -> str | None:
    """The revision the database is stamped with; None for an unversioned (or empty) one."""
    heads = MigrationContext.configure(connection).get_current_heads()
    return heads[0] if heads else None


def model_tables(connection: Connection) -> set[str]:
    """The models' tables that exist in this database."""
    return set(sa.inspect(connection).get_table_names()) & set(target_metadata().tables)


@dataclass(frozen=True)
class Status:
    """Where a database's schema stands against this version's migrations."""

    current: str | None
    head: str
    tables: int  # how many of the models' tables it has
    known: bool  # `current` is one of this version's revisions

    @property
    def ready(self) -> bool:
        return self.current == self.head

    @property
    def empty(self) -> bool:
        return self.current is None and self.tables == 0

    def problem(self, url: str) -> str:
        where = f"the database {url}"
        if self.current is None:
            return f"{where} was made by a version of digest from before schema migrations: run `digest db upgrade` (it keeps every row)"
        if not self.known:
            return f"{where} is at schema revision {self.current}, which this version of digest does not know (a newer version upgraded it): use that version"
        return f"{where} is at schema revision {self.current}; this version of digest needs {self.head}: run `digest db upgrade`"


def status(connection: Connection, extra_versions: Sequence[Path] = ()) -> Status:
    script = ScriptDirectory.from_config(config(extra_versions=extra_versions))
    revision = current(connection)
    known = revision is not None and revision in {r.revision for r in script.walk_revisions()}
    return Status(revision, head(extra_versions), len(model_tables(connection)) if revision is None else -1, known)


def prepare(engine: Engine, url: str) -> None:
    """At start: an empty database gets the schema at the head; one at the head is used; any
    other is refused with a `SchemaError` that says what to do."""
    with engine.connect() as connection:
        found = status(connection)
    if found.ready:
        return
    if not found.empty:
        raise SchemaError(found.problem(url))
    with locked(engine) as connection:
        found = status(connection)  # another process may have been first
        if found.empty:
            target_metadata().create_all(connection)
            command.stamp(config(connection), "head")
        elif not found.ready:
            raise SchemaError(found.problem(url))


def upgrade(engine: Engine, target: str = "head", extra_versions: Sequence[Path] = ()) -> tuple[str | None, str | None]:
    """Bring the schema to `target` in one locked transaction: (revision before, revision after).

    An empty database runs every revision; an unversioned one is first stamped with the
    revision it matches (`adopted_revision`)."""
    with locked(engine) as connection:
        cfg = config(connection, extra_versions)
        before = current(connection)
        if before is None and model_tables(connection):
            before = adopted_revision(connection, extra_versions)
            command.stamp(cfg, before)
        command.upgrade(cfg, target)
        return before, current(connection)


def columns_of(connection: Connection) -> dict[str, set[str]]:
    """{table: its column names}, for the models' tables and any other the database has."""
    inspector = sa.inspect(connection)
    return {t: {c["name"] for c in inspector.get_columns(t)} for t in inspector.get_table_names() if t not in FOREIGN_TABLES}


def adopted_revision(connection: Connection, extra_versions: Sequence[Path] = ()) -> str:
    """The newest revision whose tables and columns an unversioned database has exactly.

    Each revision's schema is made by running the migrations up to it in a scratch in-memory
    SQLite database, so this needs nothing written per revision. A database matching none
    (changed by hand, or by a development branch) is refused with the nearest difference."""
    found = columns_of(connection)
    script = ScriptDirectory.from_config(config(extra_versions=extra_versions))
    nearest: tuple[int, str, str] | None = None
    for revision in script.walk_revisions():  # newest first
        scratch = sa.create_engine("sqlite://")
        try:
            with scratch.begin() as scratch_connection:
                command.upgrade(config(scratch_connection, extra_versions), revision.revision)
                expected = columns_of(scratch_connection)
        finally:
            scratch.dispose()
        if expected == found:
            return revision.revision
        missing = sorted(f"{t}.{c}" for t, cols in expected.items() for c in cols - found.get(t, set()))
        extra = sorted(f"{t}.{c}" for t, cols in found.items() for c in cols - expected.get(t, set()))
        distance = len(missing) + len(extra)
        if nearest is None or distance < nearest[0]:
            words = "; ".join(part for part in (f"missing {', '.join(missing[:6])}" if missing else "", f"unexpected {', '.join(extra[:6])}" if extra else "") if part)
            nearest = (distance, revision.revision, words)
    detail = f" (nearest: revision {nearest[1]}, {nearest[2]})" if nearest else ""
    raise SchemaError(f"the database's tables match no revision of this version of digest{detail}; it cannot be upgraded automatically")


def new_revision(message: str) -> Path:
    """Write a revision after the head with what autogenerate finds between the revisions so
    far and the models (a scratch SQLite database is brought to the head and compared)."""
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40] or "revision"
    numbers = [int(m.group(1)) for p in VERSIONS.glob("*.py") if (m := re.match(r"(\d{4})_", p.name))]
    rev_id = f"{max(numbers, default=0) + 1:04d}"
    scratch = sa.create_engine("sqlite://")
    try:
        with scratch.begin() as connection:
            cfg = config(connection)
            cfg.set_main_option("file_template", "%%(rev)s_" + slug)
            command.upgrade(cfg, "head")
            script = command.revision(cfg, message=message, autogenerate=True, rev_id=rev_id)
    finally:
        scratch.dispose()
    return Path(script.path)
