"""`digest init`, `digest db current|upgrade|revision` and `digest status`: setting up, the
schema, and where things stand."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import click
from rich.table import Table

from ..config import lay_out_starter
from ..files import replace_file
from ..settings import warn_if_readable
from .app import FAILED, OK, App, console, fail


@click.command()
@click.option("--env-file", default=".env", show_default=True, type=click.Path(dir_okay=False), help="The file to write.")
def init(env_file: str) -> None:
    """Write a random DIGEST_SECRET_KEY into .env when it has none (the file readable by you alone).

    In a folder with no `config/digest.yaml` it also lays out the starter configuration there
    (the sample feed, four example profiles, the sources and ranking defaults), so that an
    installed digest runs at once; existing files are never touched.
    """
    starter = lay_out_starter(Path("config"))
    if starter:
        console.print(f"Wrote a starter configuration to config/ ({len(starter)} files: sources, example profiles, the sample feed).")
    path = Path(env_file)
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}", FAILED)
    if any(line.strip().startswith("DIGEST_SECRET_KEY=") and line.split("=", 1)[1].strip() for line in text.splitlines()):
        console.print(f"{path} already has a DIGEST_SECRET_KEY.")
        warn_if_readable(path)
        return
    lines = [line for line in text.splitlines() if not line.strip().startswith("DIGEST_SECRET_KEY=")]
    lines.append(f"DIGEST_SECRET_KEY={secrets.token_urlsafe(32)}")
    try:
        replace_file(path, "\n".join(lines) + "\n", 0o600)  # readable by its owner alone, from the start
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}", FAILED)
    console.print(f"Wrote a new DIGEST_SECRET_KEY to {path}.")


@click.group("db")
def database() -> None:
    """The database's schema: where it stands, and upgrading it (Alembic migrations)."""


def schema_engine(app: App):
    from ..db import make_engine

    return make_engine(app.settings.database_url)


@database.command("current")
@click.pass_obj
def db_current(app: App) -> None:
    """Print the database's schema revision and this version's; exit 1 when they differ."""
    from .. import migrations

    engine = schema_engine(app)
    try:
        with engine.connect() as connection:
            found = migrations.status(connection)
    finally:
        engine.dispose()
    where = engine.url.render_as_string(hide_password=True)
    if found.empty:
        console.print(f"{where}: empty (the schema is made at the first start); this version: {found.head}")
    else:
        console.print(f"{where}: revision {found.current or 'none (from before migrations)'}; this version: {found.head}")
    if not found.ready and not found.empty:
        console.print(found.problem(where))
    sys.exit(OK if found.ready or found.empty else FAILED)


@database.command("upgrade")
@click.option("--to", "target", default="head", show_default=True, help="The revision to stop at.")
@click.pass_obj
def db_upgrade(app: App, target: str) -> None:
    """Bring the database's schema to this version, keeping every row (one transaction: a failure
    changes nothing). A database made before migrations is first matched to its revision."""
    from .. import migrations

    engine = schema_engine(app)
    try:
        before, after = migrations.upgrade(engine, target)
    except migrations.SchemaError as exc:
        fail(str(exc), FAILED)
    finally:
        engine.dispose()
    if before == after:
        console.print(f"The schema is at revision {after} already.")
    else:
        console.print(f"Schema upgraded: {before or 'empty'} -> {after}.")


@database.command("revision")
@click.argument("message")
def db_revision(message: str) -> None:
    """(For developers, in a checkout.) Write a new revision after the head with the changes of
    the models that the revisions lack; see `digest.migrations` for what to check in it."""
    from .. import migrations

    path = migrations.new_revision(message)
    console.print(f"Wrote {path}: read it before you commit it (a non-null column needs `add_filled_column`).")


@click.command()
@click.option("--days", default=7, show_default=True, help="How far back to list problems.")
@click.pass_obj
def status(app: App, days: int) -> None:
    """Today's digests by state, the last ingest of each source, and recent failures."""
    from ..status import status as gather

    found = gather(app.db, days=days)
    table = Table(title=f"Digests ({found.active} active subscribers)")
    states = sorted({s for _, s in found.digests})
    table.add_column("local date")
    for state in states:
        table.add_column(state, justify="right")
    for day in sorted({d for d, _ in found.digests}):
        table.add_row(str(day), *[str(found.digests.get((day, s), 0)) for s in states])
    console.print(table if found.digests else "No digests for the days that are today somewhere.")
    runs = Table(title="Last ingest of each source")
    for column in ("source", "when (UTC)", "result", "new", "updated", "skipped", "seconds", "detail"):
        runs.add_column(column, justify="right" if column in ("new", "updated", "skipped", "seconds") else "left", overflow="fold")
    for run in found.ingests:
        style = "red" if run.status == "failed" else ""
        runs.add_row(run.source, f"{run.started_at:%Y-%m-%d %H:%M}", f"[{style}]{run.status}[/]" if style else run.status,
                     str(run.new), str(run.updated), str(run.skipped), f"{run.seconds:.1f}", (run.detail or "")[:120])
    console.print(runs if found.ingests else "No ingest has run yet.")
    if found.problems or found.switched_off:
        problems = Table(title=f"Problems in the last {days} days")
        for column in ("subscriber", "date", "state", "why"):
            problems.add_column(column, overflow="fold")
        for email, digest in found.problems:
            problems.add_row(email, str(digest.local_date), digest.status, digest.reason or "")
        for subscriber in found.switched_off:
            problems.add_row(subscriber.email, "-", "switched off", subscriber.disabled_reason or "")
        console.print(problems)
    else:
        console.print("No failures.")
