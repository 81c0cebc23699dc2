"""The `digest` command line (also `python -m digest`).

Exit codes: 0 all went well, 1 some work failed, 2 bad usage or bad input.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import logging
import secrets
import sys
from email import message_from_bytes, policy
from pathlib import Path

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .config import AppConfig, lay_out_starter, load_config
from .db import Database, DatabaseUnusable
from .files import replace_file
from .ingest import IngestResult, SourceSpec, ingest_sources
from .mail.render import Renderer
from .mail.transports import make_transport
from .models import DigestStatus
from .profiles import load_profiles, sync_profiles
from .send.preview import preview_digest
from .send.run import DigestSender
from .send.state import PROBLEMS, SendOptions, SendReport, Untouched
from .settings import Settings, SettingsError, warn_if_readable
from .yamlfile import FileError

# Without a terminal (CI, pipes, make) tables get room instead of an 80-column wrap, and an
# error or warning stays on one line, so that a log search for it finds it whatever its paths.
console = Console(width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 160, soft_wrap=not sys.stderr.isatty())

OK, FAILED, BAD_INPUT = 0, 1, 2


class App:
    """What every command needs, made on first use so that `--help` needs no settings."""

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._db: Database | None = None
        self._config: AppConfig | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = Settings.from_env()
            except SettingsError as exc:
                fail(str(exc), BAD_INPUT)
        return self._settings

    @property
    def config(self) -> AppConfig:
        if self._config is None:
            try:
                self._config = load_config(self.settings.config_path)
            except FileError as exc:
                fail(str(exc), BAD_INPUT)
        return self._config

    @property
    def db(self) -> Database:
        if self._db is None:
            self._db = Database(self.settings.database_url)
        return self._db

    def sender(self) -> DigestSender:
        try:
            return DigestSender(self.db, self.settings, self.config, Renderer(self.settings.templates_dir), make_transport(self.settings), workers=self.settings.workers)
        except SettingsError as exc:
            fail(str(exc), BAD_INPUT)


def fail(message: str, code: int) -> None:
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False)  # a message's own [brackets] are text
    sys.exit(code)


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=errors, transient=True, disable=not errors.is_terminal,
    )


#: Commands of the lab (`digest_lab`), offered through the entry points `digest.commands`.
LAB_COMMANDS = {"eval": "offline evaluation", "simulate": "the click simulation", "bench": "the benchmark"}


class CommandGroup(click.Group):
    """This module's commands, and those installed packages offer through the entry point group
    `digest.commands` (the lab's eval, simulate and bench), each loaded only when it is used: the
    mail service never imports the lab. A database that cannot be used (no driver, a schema to
    upgrade) is one line and exit 2 from whichever command met it, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except DatabaseUnusable as exc:
            fail(str(exc), BAD_INPUT)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *(entry.name for entry in _offered())})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None:
            entry = next((e for e in _offered() if e.name == name), None)
            try:
                command = entry.load() if entry is not None else None
            except ImportError as exc:
                command = _missing(name, f"{name} could not be loaded ({exc})")
            if command is None and name in LAB_COMMANDS:
                command = _missing(name, f"{LAB_COMMANDS[name]} is part of the lab, which is not installed here")
        return command


def _missing(name: str, why: str) -> click.Command:
    """A command that only says it cannot run here, and what would make it run."""
    return click.Command(
        name, callback=lambda **_: fail(f"{why}: pip install 'digest[lab]' from a checkout of digest", BAD_INPUT),
        params=[click.Argument(["arguments"], nargs=-1, type=click.UNPROCESSED)], context_settings={"ignore_unknown_options": True},
        help=f"{LAB_COMMANDS.get(name, name).capitalize()} (needs the lab).",
    )


def _offered() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group="digest.commands"))


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debugging).")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """digest: one personalized, ranked email of new research papers a day.

    Settings come from the environment and `.env` (see config/.env.example).
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG), format="%(message)s", datefmt="[%X]",
        handlers=[RichHandler(console=errors, show_path=False, markup=False, rich_tracebacks=True)],
    )
    # The scheduler narrates every job at INFO; that is debugging detail here.
    logging.getLogger("apscheduler").setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    ctx.obj = App()


@main.command()
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


# --- ingest --------------------------------------------------------------------------------------


@main.command()
@click.argument("sources", nargs=-1)
@click.option("--date", "date_text", metavar="YYYY-MM-DD",
              help="The announcement date of a JSONL listing whose lines carry no `published` (default: a date in its file name, as in 2026-04-10.jsonl).")
@click.pass_obj
def ingest(app: App, sources: tuple[str, ...], date_text: str | None) -> None:
    """Ingest papers from the given paths, or from the sources of config/digest.yaml.

    The format (JSONL, Hugging Face trending page, ...) is found from the content; text of no
    known format (Markdown, a README) is refused. A malformed entry is skipped with a warning; a
    source that cannot be read changes nothing.
    """
    results = run_ingest(app, sources, parse_date(date_text))
    print_ingest(results)
    sys.exit(OK if all(r.ok for r in results) else FAILED)


def run_ingest(app: App, sources: tuple[str, ...], listed: dt.date | None = None) -> list[IngestResult]:
    """Ingest, then (with the semantic extra and DIGEST_EMBEDDING_MODEL) embed the new papers."""
    from .embeddings import embed_new, last_paper

    before = last_paper(app.db) if app.settings.embedding_model else 0
    results = _ingest(app, sources, listed)
    if app.settings.embedding_model and any(r.new for r in results):
        with progress() as bar:
            bar.add_task("embedding the new papers", total=None)
            made = embed_new(app.db, app.settings.embedding_model, before)
        if made:
            console.print(f"Embedded {made} new papers.")
    return results


def _ingest(app: App, sources: tuple[str, ...], listed: dt.date | None) -> list[IngestResult]:
    if sources:
        specs = [SourceSpec(s, listed=listed) for s in sources]
    else:
        specs = [SourceSpec(s.url, s.name, s.max_papers) for s in app.config.sources if s.enabled]
        if not specs:
            console.print(f"No sources given and none enabled in {app.settings.config_path}.")
    with progress() as bar:
        task = bar.add_task("ingesting", total=len(specs))
        return ingest_sources(app.db, specs, on_done=lambda _: bar.advance(task))


def print_ingest(results: list[IngestResult]) -> None:
    if not results:
        return
    table = Table(title="Ingest")
    for column in ("source", "format", "new", "updated", "unchanged", "skipped", "seconds", "result"):
        table.add_column(column, justify="right" if column in ("new", "updated", "unchanged", "skipped", "seconds") else "left")
    for r in results:
        outcome = f"[red]{r.error}[/]" if r.error else ("; ".join(r.notes) or "ok")
        table.add_row(r.source, r.format or "-", str(r.new), str(r.updated), str(r.unchanged), str(r.skipped), f"{r.seconds:.2f}", outcome)
    console.print(table)
    if len(results) > 1:
        total = sum(r.new for r in results)
        failed = sum(1 for r in results if not r.ok)
        console.print(f"{total} new papers from {len(results)} sources" + (f"; {failed} failed." if failed else "."))


# --- profiles ------------------------------------------------------------------------------------


@main.group()
def profiles() -> None:
    """Check the subscriber profiles or load them into the database."""


@profiles.command()
@click.pass_obj
def validate(app: App) -> None:
    """Check every profile file; exit 2 when any is invalid."""
    loaded = load_profiles(app.settings.profiles_dir)
    for path, profile in loaded.profiles.items():
        console.print(f"[green]ok[/]      {path} ({profile.email})", highlight=False)
    for error in loaded.errors:
        console.print(f"[red]invalid[/] {error}", highlight=False)
    console.print(f"{len(loaded.profiles)} valid, {len(loaded.errors)} invalid.")
    sys.exit(BAD_INPUT if loaded.errors else OK)


@profiles.command()
@click.pass_obj
def sync(app: App) -> None:
    """Load the valid profiles into the database; invalid files are reported and skipped (exit 2)."""
    errors_found = run_sync(app)
    sys.exit(BAD_INPUT if errors_found else OK)


def run_sync(app: App) -> int:
    report = sync_profiles(app.db, app.settings.profiles_dir)
    for error in report.errors:
        errors.print(f"[red]invalid profile[/] {error}", highlight=False)
    parts = [f"{len(report.added)} added", f"{len(report.updated)} updated", f"{len(report.unchanged)} unchanged"]
    if report.deactivated:
        parts.append(f"{len(report.deactivated)} deactivated (file removed)")
    if report.kept_unsubscribed:
        parts.append(f"{len(report.kept_unsubscribed)} kept unsubscribed")
    if report.errors:
        parts.append(f"{len(report.errors)} invalid file{'s' if len(report.errors) > 1 else ''} skipped")
    console.print("Profiles: " + ", ".join(parts) + ".")
    return len(report.errors)


# --- preview, send, run --------------------------------------------------------------------------


def parse_date(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date written YYYY-MM-DD") from None


@main.command()
@click.argument("email")
@click.option("--date", "date_text", metavar="YYYY-MM-DD", help="The subscriber's local date (default: today there).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write here; .txt for the text part (default var/preview/…html).")
@click.pass_obj
def preview(app: App, email: str, date_text: str | None, out: Path | None) -> None:
    """Render EMAIL's digest without sending it."""
    date = parse_date(date_text)
    sender = app.sender()
    subscribers = sender.subscribers(email)
    if not subscribers:
        fail(f"no active subscriber {email!r}: run `digest profiles sync` first?", BAD_INPUT)
    subscriber = subscribers[0]
    result = preview_digest(sender, subscriber, date)
    if result.rendered is None:
        console.print(f"No digest for {subscriber.email} on {result.local_date}: {result.reason}.")
        sys.exit(OK)
    out = out or Path("var/preview") / f"{subscriber.email}-{result.local_date}.html"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(result.rendered.text if out.suffix == ".txt" else result.rendered.html, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}", FAILED)
    console.print(f"[bold]{result.rendered.subject}[/]", highlight=False)
    for item in result.view.items:
        console.print(f"{item.rank:>3}. {item.title}  [dim]{item.reason}[/]", highlight=False)
    console.print(f"Written to {out}")


@main.command()
@click.option("--date", "date_text", metavar="YYYY-MM-DD", help="Send the digests of this local date (default: today, per subscriber).")
@click.option("--only", metavar="EMAIL", help="Only this subscriber.")
@click.option("--dry-run", is_flag=True, help="Choose and show the papers; store and send nothing.")
@click.option("--due", is_flag=True, help="Only subscribers whose send time has come today (what the scheduler runs).")
@click.option("--retry-failed", is_flag=True, help="Also try again digests the server refused for good (5xx).")
@click.option("--resend-unknown", is_flag=True, help="Also send again digests whose delivery was interrupted (may duplicate).")
@click.pass_obj
def send(app: App, date_text: str | None, only: str | None, dry_run: bool, due: bool, retry_failed: bool, resend_unknown: bool) -> None:
    """Send the day's digest to every subscriber (exit 1 when any delivery failed or was deferred)."""
    options = SendOptions(dry_run=dry_run, due_only=due, retry_failed=retry_failed, resend_unknown=resend_unknown)
    report = run_send(app, parse_date(date_text), only, options)
    sys.exit(FAILED if report.failed else OK)


def run_send(app: App, date: dt.date | None, only: str | None, options: SendOptions | None = None) -> SendReport:
    options = options or SendOptions()
    sender = app.sender()
    if only and not sender.subscribers(only):
        fail(f"no active subscriber {only!r}", BAD_INPUT)
    with progress() as bar:
        task = bar.add_task("sending", total=len(sender.subscribers(only)))
        report = sender.run(date=date, only=only, options=options, on_progress=lambda _: bar.advance(task))
    print_send(report)
    if app.settings.transport == "outbox" and not options.dry_run:
        folder = app.settings.outbox.parent / "preview"
        try:
            previews = write_previews(report, folder)
        except OSError as exc:  # a convenience: the messages themselves are sent and recorded
            errors.print(f"[yellow]warning:[/] the HTML previews could not be written to {folder}/: {exc.strerror or exc}", highlight=False)
            previews = []
        if previews:
            console.print(f"Messages are in {app.settings.outbox}/; their HTML, for a browser, in {previews[0].parent}/, e.g. {previews[0]}")
    return report


#: A run with more digests than this prints its problems and a count by result, not a row each.
TABLE_ROWS = 50


def print_send(report: SendReport) -> None:
    table = Table(title="Digests")
    for column in ("subscriber", "date", "result", "items", "top paper / detail"):
        table.add_column(column, justify="right" if column == "items" else "left", overflow="fold")
    shown = report.outcomes
    if len(shown) > TABLE_ROWS:
        problems = [o for o in shown if o.status in PROBLEMS]
        shown = (problems + [o for o in shown if o.status not in PROBLEMS])[:TABLE_ROWS]
        table.caption = f"the first {len(shown)} of {len(report.outcomes):,} digests, problems first"
    for o in shown:
        style = {DigestStatus.SENT: "green", DigestStatus.FAILED: "red", DigestStatus.DEFERRED: "red", DigestStatus.UNKNOWN: "yellow"}.get(o.status, "")
        status = f"[{style}]{o.status}[/]" if style else o.status
        table.add_row(o.email, str(o.local_date), status, str(o.items) if o.items else "-", o.top or o.detail)
    console.print(table)
    others = ", ".join(f"{n:,} {s}" for s, n in sorted(report.others.items(), key=lambda kv: -kv[1]))
    if not report.outcomes and not report.others:
        if not report.halted:  # else said below
            console.print("No active subscribers.")
    elif all(o.status == Untouched.ALREADY for o in report.outcomes) and not report.others:
        console.print("Nothing new to send: every digest for today was sent already.")
    elif report.outcomes and not all(o.status == Untouched.ALREADY for o in report.outcomes):
        order = (DigestStatus.SENT, DigestStatus.EMPTY, Untouched.ALREADY, Untouched.PAUSED, *PROBLEMS, Untouched.DRY_RUN)
        counts = {s: report.count(s) for s in order}
        parts = [f"{n} {s}" for s, n in counts.items() if n]
        if report.retries:
            parts.insert(1, f"{report.retries} retried")
        console.print(("This process: " if report.others else "") + ", ".join(parts) + ".")
    else:
        console.print("This process had nothing to send: other processes took every digest.")
    if report.others:
        waited = f" (waited for {', '.join(report.waited_for)})" if report.waited_for else ""
        console.print(f"Other processes sending at the same time: {others}{waited}.")
    for holder, count in report.taken_over.items():
        console.print(f"Took over {count:,} subscriber{'s' if count != 1 else ''} from {holder}, whose lease ran out (it stopped, or stopped answering).")
    for o in [o for o in report.outcomes if o.status in PROBLEMS][:TABLE_ROWS]:
        console.print(f"[red]{o.status}[/] {o.email}: {o.detail}", highlight=False)
    if report.halted:
        errors.print(f"[bold red]error:[/] delivery stopped: {report.halted}. {report.left:,} digest{'s' if report.left != 1 else ''} left "
                     "for the next run; no address was counted as bouncing.", highlight=False, soft_wrap=True)


def write_previews(report: SendReport, folder: Path, limit: int = 20) -> list[Path]:
    """The HTML part of the first `limit` messages sent to the outbox in this run, as files a browser opens."""
    paths: list[Path] = []
    for outcome in report.outcomes:
        if len(paths) >= limit:
            break
        if outcome.status != DigestStatus.SENT or not outcome.detail.endswith(".eml"):
            continue
        eml = Path(outcome.detail)
        if not eml.exists():
            continue
        message = message_from_bytes(eml.read_bytes(), policy=policy.default)
        html = message.get_body(preferencelist=("html",))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{eml.stem}.html"
        path.write_text(html.get_content(), encoding="utf-8")
        paths.append(path)
    return paths


@main.command()
@click.pass_obj
def run(app: App) -> None:
    """One whole cycle now: ingest the configured sources, sync the profiles, retrain the models
    that have new feedback, send today's digests."""
    results = run_ingest(app, ())
    print_ingest(results)
    invalid = run_sync(app)
    run_retrain(app)
    report = run_send(app, None, None)
    sys.exit(FAILED if report.failed or invalid or not all(r.ok for r in results) else OK)


@main.command()
@click.option("--days", type=click.FloatRange(min=0, min_open=True), help="Papers first seen in the last DAYS days (default: the ranking's fit_days).")
@click.option("--all", "everything", is_flag=True, help="Every paper in the database.")
@click.pass_obj
def embed(app: App, days: float | None, everything: bool) -> None:
    """Compute the sentence embeddings that papers lack (semantic extra, DIGEST_EMBEDDING_MODEL):
    for papers met before the model was set. New papers are embedded at ingest."""
    from .embeddings import Embedder, EmbeddingUnavailable, embed_papers, missing_papers, papers_since

    model = app.settings.embedding_model
    if not model:
        fail("DIGEST_EMBEDDING_MODEL is not set: name a fastembed model or a local model folder", BAD_INPUT)
    try:
        embedder = Embedder(model)
    except EmbeddingUnavailable as exc:
        fail(str(exc), BAD_INPUT)
    since = None if everything else dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days or app.config.ranking.fit_days)
    todo = missing_papers(app.db, embedder.key, None if since is None else papers_since(app.db, since))
    began = dt.datetime.now()
    with progress() as bar:
        task = bar.add_task("embedding", total=len(todo))
        done = embed_papers(app.db, embedder, todo, on_batch=lambda n: bar.advance(task, n))
    seconds = (dt.datetime.now() - began).total_seconds()
    console.print(f"Embedded {done} papers with {embedder.key} in {seconds:.1f} s" + (f" ({done / seconds:.1f} papers/s)." if done and seconds else "."))


@main.group("db")
def database() -> None:
    """The database's schema: where it stands, and upgrading it (Alembic migrations)."""


def schema_engine(app: App):
    from .db import make_engine

    return make_engine(app.settings.database_url)


@database.command("current")
@click.pass_obj
def db_current(app: App) -> None:
    """Print the database's schema revision and this version's; exit 1 when they differ."""
    from . import migrations

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
    from . import migrations

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
    from . import migrations

    path = migrations.new_revision(message)
    console.print(f"Wrote {path}: read it before you commit it (a non-null column needs `add_filled_column`).")


@main.command()
@click.option("--host", help="Address to listen on (default: the host of DIGEST_BASE_URL).")
@click.option("--port", type=int, help="Port to listen on (default: the port of DIGEST_BASE_URL).")
@click.pass_obj
def web(app: App, host: str | None, port: int | None) -> None:
    """Serve the web endpoints (tracked links /c/ /d/ /f/ /u/ /v/, preferences /p/, /healthz) with uvicorn."""
    from .web import serve

    try:
        app.settings.require_secret_key()
    except SettingsError as exc:
        fail(str(exc), BAD_INPUT)
    say_listening(app.settings, host, port, "the web endpoints")
    serve(app.settings, host, port)


def say_listening(settings: Settings, host: str | None, port: int | None, what: str) -> None:
    """Where a long-running command listens and how to stop it, printed before it starts."""
    from .web import listen_address

    host, port = listen_address(settings, host, port)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"Serving {what} on http://{shown}:{port} (links in emails point to {settings.base_url}).", highlight=False)
    console.print("Press Ctrl+C (or send SIGTERM) to stop.", highlight=False)


@main.command()
@click.option("--all", "everyone", is_flag=True, help="Rebuild every model, not only those with new feedback.")
@click.pass_obj
def retrain(app: App, everyone: bool) -> None:
    """Rebuild the subscribers' models from their feedback (clicks, thumbs, papers shown)."""
    report = run_retrain(app, everyone)
    sys.exit(OK if report is not None else FAILED)


def run_retrain(app: App, everyone: bool = False):
    from .training import retrain as rebuild

    report = rebuild(app.db, force=everyone, config=app.config.ranking)
    console.print(f"Models: {len(report.trained)} retrained, {report.unchanged} unchanged.")
    return report


@main.command()
@click.option("--host", help="Address to listen on (default: the host of DIGEST_BASE_URL).")
@click.option("--port", type=int, help="Port to listen on (default: the port of DIGEST_BASE_URL).")
@click.pass_obj
def serve(app: App, host: str | None, port: int | None) -> None:
    """The long-running service: the scheduler (ingest, send at each subscriber's local time,
    nightly retraining) and the web endpoints, until SIGTERM or SIGINT."""
    from .service import serve as run_service

    try:
        app.settings.require_secret_key()
    except SettingsError as exc:
        fail(str(exc), BAD_INPUT)
    _ = app.config  # a broken config/digest.yaml stops here, with its file and line
    say_listening(app.settings, host, port, "the scheduler and the web endpoints")
    run_service(app.settings, host, port)


@main.command()
@click.option("--days", default=7, show_default=True, help="How far back to list problems.")
@click.pass_obj
def status(app: App, days: int) -> None:
    """Today's digests by state, the last ingest of each source, and recent failures."""
    from .status import status as gather

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
