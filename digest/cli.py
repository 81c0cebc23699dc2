"""The `digest` command line (also `python -m digest`).

Exit codes: 0 all went well, 1 some work failed, 2 bad usage or bad input.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
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

from .config import AppConfig, load_config
from .db import Database, DatabaseUnusable
from .delivery import make_transport
from .ingest import IngestResult, SourceSpec, ingest_sources
from .profiles import load_profiles, sync_profiles
from .render import Renderer
from .send import DigestSender, SendOptions, SendReport, preview_digest
from .settings import Settings, SettingsError, warn_if_readable
from .yamlfile import FileError

# Without a terminal (CI, pipes, make) tables get room instead of an 80-column wrap.
console = Console(width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

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
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    sys.exit(code)


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=errors, transient=True, disable=not errors.is_terminal,
    )


class Main(click.Group):
    """The command group: a database that cannot be used (no driver, a schema to upgrade) is one
    line and exit 2 from whichever command met it, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except DatabaseUnusable as exc:
            fail(str(exc), BAD_INPUT)


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
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
    """Write a random DIGEST_SECRET_KEY into .env when it has none (the file readable by you alone)."""
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
        write_private(path, "\n".join(lines) + "\n")
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}", FAILED)
    console.print(f"Wrote a new DIGEST_SECRET_KEY to {path}.")


def write_private(path: Path, text: str) -> None:
    """Replace `path` by a file holding `text` that only its owner can read, at every moment:
    it is made 0600 by `open` itself (never wider, then narrowed), written, synced and renamed
    over `path`, so a failure half-way leaves the old file (or none) and no readable copy."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# --- ingest --------------------------------------------------------------------------------------


@main.command()
@click.argument("sources", nargs=-1)
@click.pass_obj
def ingest(app: App, sources: tuple[str, ...]) -> None:
    """Ingest papers from the given paths, or from the sources of config/digest.yaml.

    The format (JSONL, Hugging Face trending page, ...) is found from the content. A malformed
    entry is skipped with a warning; a source that cannot be read changes nothing.
    """
    results = run_ingest(app, sources)
    print_ingest(results)
    sys.exit(OK if all(r.ok for r in results) else FAILED)


def run_ingest(app: App, sources: tuple[str, ...]) -> list[IngestResult]:
    if sources:
        specs = [SourceSpec(s) for s in sources]
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
        problems = [o for o in shown if o.status in ("failed", "deferred", "unknown")]
        shown = (problems + [o for o in shown if o.status not in ("failed", "deferred", "unknown")])[:TABLE_ROWS]
        table.caption = f"the first {len(shown)} of {len(report.outcomes):,} digests, problems first"
    for o in shown:
        style = {"sent": "green", "failed": "red", "deferred": "red", "unknown": "yellow"}.get(o.status, "")
        status = f"[{style}]{o.status}[/]" if style else o.status
        table.add_row(o.email, str(o.local_date), status, str(o.items) if o.items else "-", o.top or o.detail)
    console.print(table)
    others = ", ".join(f"{n:,} {s}" for s, n in sorted(report.others.items(), key=lambda kv: -kv[1]))
    if not report.outcomes and not report.others:
        if not report.halted:  # else said below
            console.print("No active subscribers.")
    elif all(o.status == "already" for o in report.outcomes) and not report.others:
        console.print("Nothing new to send: every digest for today was sent already.")
    elif report.outcomes and not all(o.status == "already" for o in report.outcomes):
        counts = {s: report.count(s) for s in ("sent", "empty", "already", "failed", "deferred", "unknown", "dry-run")}
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
    for o in [o for o in report.outcomes if o.status in ("failed", "deferred", "unknown")][:TABLE_ROWS]:
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
        if outcome.status != "sent" or not outcome.detail.endswith(".eml"):
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
@click.option("--users", type=click.IntRange(1), default=10_000, show_default=True, help="Generated subscribers for the stages and the first daily run.")
@click.option("--papers", type=click.IntRange(1), default=2_000, show_default=True, help="Real papers first seen today (the rest of the daily files are their past).")
@click.option("--scale", default="", metavar="N,N,...", help="Also time the whole daily run at these numbers of subscribers (e.g. 1000,10000,100000).")
@click.option("--stage", "stages", multiple=True, type=click.Choice(["ingest", "stages", "daily", "postgres"]), help="Only these parts (default: all).")
@click.option("--postgres", "postgres", metavar="URL|temp", is_flag=False, flag_value="temp", default=None,
              help="Also the PostgreSQL stage: one sender on SQLite and on PostgreSQL, two sharing the day, one of two killed -9. "
                   "`temp` (or no value) starts a throwaway server; a URL names a server whose user may create databases.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def bench(users: int, papers: int, scale: str, stages: tuple[str, ...], postgres: str | None, as_json: bool) -> None:
    """Measure each stage of the daily run (throughput, time, peak memory) on generated subscribers
    and real papers (../shared/data/arxiv-daily, or DIGEST_BENCH_DATA), and the whole run at each size."""
    from . import bench as benchmark
    from .pgserver import Unavailable

    try:
        sizes = [int(n) for n in scale.replace(" ", "").split(",") if n]
    except ValueError:
        fail(f"--scale takes numbers separated by commas, not {scale!r}", BAD_INPUT)
    with progress() as bar:
        task = bar.add_task("benchmark", total=None)
        try:
            results = benchmark.run(list(stages) or None, users=users, papers=papers, scale=sizes, postgres=postgres or ("temp" if "postgres" in stages else None),
                                    on_stage=lambda s: bar.update(task, description=f"benchmark: {s.name} done"))
        except (FileNotFoundError, ValueError, Unavailable) as exc:
            fail(str(exc), BAD_INPUT)
    if as_json:
        click.echo(benchmark.as_json(results))
        return
    table = Table(title=f"Benchmark ({os.cpu_count()} CPUs)")
    for column in ("stage", "items", "seconds", "per second", "peak RSS MB", "note"):
        table.add_column(column, justify="left" if column in ("stage", "note") else "right", overflow="fold")
    for s in results:
        table.add_row(s.name, f"{s.items:,} {s.unit}", f"{s.seconds:.2f}", f"{s.per_second:,.0f} {s.unit}/s", f"{s.peak_mb:.0f}", s.note)
    console.print(table)
    daily = sorted((s for s in results if s.name.startswith("daily run")), key=lambda s: s.items)
    if len(daily) > 1:
        console.print("Scaling: " + "; ".join(f"{s.items:,} subscribers {s.seconds:.1f} s ({1e3 * s.seconds / s.items:.2f} ms each, {s.peak_mb:.0f} MB)" for s in daily))


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
    """Serve the web endpoints of tracked links (/c/ /f/ /u/ /v/ /healthz) with uvicorn."""
    from .web import serve

    try:
        app.settings.require_secret_key()
    except SettingsError as exc:
        fail(str(exc), BAD_INPUT)
    serve(app.settings, host, port)


@main.command()
@click.option("--all", "everyone", is_flag=True, help="Rebuild every model, not only those with new feedback.")
@click.pass_obj
def retrain(app: App, everyone: bool) -> None:
    """Rebuild the subscribers' models from their feedback (clicks, thumbs, papers shown)."""
    report = run_retrain(app, everyone)
    sys.exit(OK if report is not None else FAILED)


def run_retrain(app: App, everyone: bool = False):
    from .training import retrain as rebuild

    report = rebuild(app.db, force=everyone)
    console.print(f"Models: {len(report.trained)} retrained, {report.unchanged} unchanged.")
    return report


@main.command("eval")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--mode", "modes", multiple=True, type=click.Choice(["both", "interests", "history"]), help="Modes to run (default: all three).")
@click.option("--k", default=100, show_default=True, help="Length of each ranking written by --rankings.")
@click.option("--rankings", type=click.Path(dir_okay=False, path_type=Path), help="Write the production ranking, one JSON line per user.")
@click.option("--users", "limit_users", type=int, help="Only the first N users (a quick look).")
@click.option("--no-baselines", is_flag=True, help="Only the production ranker.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.pass_obj
def evaluate_command(app: App, dataset: Path, modes: tuple[str, ...], k: int, rankings: Path | None, limit_users: int | None, no_baselines: bool, as_json: bool) -> None:
    """Offline evaluation on DATASET (papers.jsonl + users.jsonl): recall@10, recall@50 and nDCG@10
    of the production ranker and of the baselines, with the time each takes per user."""
    from .evaluation import DatasetError, evaluate, load_dataset, write_rankings

    try:
        data = load_dataset(dataset, limit_users)
    except DatasetError as exc:
        fail(str(exc), BAD_INPUT)
    modes = modes or ("both", "interests", "history")
    errors.print(f"{data.name}: {len(data.ids):,} papers, {len(data.users):,} users; modes {', '.join(modes)}.", highlight=False)
    with progress() as bar:
        task = bar.add_task("evaluating", total=None)
        results = evaluate(data, modes, k, not no_baselines, app.config.ranking, on_result=lambda r: bar.advance(task))
    if rankings:
        for mode in modes:
            production = next(r for r in results if r.method == "production" and r.mode == mode)
            path = rankings if len(modes) == 1 else rankings.with_name(f"{rankings.stem}.{mode}{rankings.suffix}")
            write_rankings(production, path)
            errors.print(f"Rankings ({mode}) written to {path}", highlight=False)
    if as_json:
        click.echo(json.dumps({"dataset": data.name, "papers": len(data.ids), "users": len(data.users), "results": [r.row() for r in results]}, indent=2))
        return
    table = Table(title=f"Evaluation on {data.name} ({len(data.users):,} users)")
    for column in ("method", "mode", "recall@10", "recall@50", "nDCG@10", "ms / user"):
        table.add_column(column, justify="left" if column in ("method", "mode") else "right")
    for r in results:
        table.add_row(r.method, r.mode, f"{r.recall10:.4f}", f"{r.recall50:.4f}", f"{r.ndcg10:.4f}", f"{r.ms_per_user:.2f}")
    console.print(table)


@main.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--days", default=20, show_default=True, help="Days the candidates are replayed over.")
@click.option("--k", default=10, show_default=True, help="Papers sent to each user a day.")
@click.option("--seed", default=0, show_default=True, help="Seed of the shuffle into days (where papers have no dates).")
@click.option("--log", "log_path", type=click.Path(dir_okay=False, path_type=Path), help="Write what each user was shown and clicked, a JSON line per user a day.")
@click.option("--users", "limit_users", type=int, help="Only the first N users (a quick look).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), help="Draw click-through per day to this PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.pass_obj
def simulate(app: App, dataset: Path, days: int, k: int, seed: int, log_path: Path | None, limit_users: int | None, plot_path: Path | None, as_json: bool) -> None:
    """Replay DATASET as DAYS of new papers, send each user the top K a day through the production
    ranking and retraining, click the relevant ones, and report click-through per day."""
    from .evaluation import DatasetError, load_dataset, plot
    from .evaluation import simulate as run_simulation

    try:
        data = load_dataset(dataset, limit_users)
    except DatasetError as exc:
        fail(str(exc), BAD_INPUT)
    with progress() as bar:
        task = bar.add_task("simulating", total=2 * days)
        report = run_simulation(data, days, k, seed, app.config.ranking, log_path, on_day=lambda arm, day: bar.advance(task))
    summary = report.summary()
    if plot_path:
        plot(report, plot_path, f"{data.name}: {summary['users']:,} users, top {k} a day")
        errors.print(f"Plot written to {plot_path}", highlight=False)
    if as_json:
        click.echo(json.dumps({"dataset": data.name, **summary, "days_with_feedback": [d.__dict__ | {"ctr": d.ctr} for d in report.with_feedback],
                               "days_without_feedback": [d.__dict__ | {"ctr": d.ctr} for d in report.without_feedback]}, indent=2))
        return
    table = Table(title=f"Simulation on {data.name}: {summary['users']:,} users, top {k} a day")
    for column in ("day", "clicks (feedback)", "CTR (feedback)", "clicks (none)", "CTR (none)"):
        table.add_column(column, justify="right")
    for a, b in zip(report.with_feedback, report.without_feedback):
        table.add_row(str(a.day), str(a.clicks), f"{a.ctr:.4f}", str(b.clicks), f"{b.ctr:.4f}")
    console.print(table)
    console.print(
        f"CTR over the last 5 days: {summary['ctr_last5_with_feedback']:.4f} with feedback "
        f"({summary['lift_last5_over_day1']:.2f} x day 1), {summary['ctr_last5_without_feedback']:.4f} without. "
        f"{summary['seconds']:.0f} s."
    )


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
