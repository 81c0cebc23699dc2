"""`digest preview`, `digest send`, `digest retrain` and `digest run` (one whole cycle now), with
the summary table of a send."""

from __future__ import annotations

import datetime as dt
import sys
from email import message_from_bytes, policy
from pathlib import Path

import click
from rich.table import Table

from ..models import DigestStatus
from ..send.state import PROBLEMS, SendOptions, SendReport, Untouched
from .app import BAD_INPUT, FAILED, OK, App, console, errors, fail, parse_date, progress
from .ingest import print_ingest, run_ingest
from .profiles import run_sync


@click.command()
@click.argument("email")
@click.option("--date", "date_text", metavar="YYYY-MM-DD", help="The subscriber's local date (default: today there).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write here; .txt for the text part (default var/preview/…html).")
@click.pass_obj
def preview(app: App, email: str, date_text: str | None, out: Path | None) -> None:
    """Render EMAIL's digest without sending it."""
    from ..send.preview import preview_digest  # imported by the commands that send (see `App.sender`)

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


@click.command()
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
    active = sender.count(only)
    if only and not active:
        fail(f"no active subscriber {only!r}", BAD_INPUT)
    with progress() as bar:
        task = bar.add_task("sending", total=active)
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
        order = (DigestStatus.SENT, DigestStatus.EMPTY, Untouched.ALREADY, Untouched.PAUSED, Untouched.LEFT, *PROBLEMS, Untouched.DRY_RUN)
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


@click.command()
@click.option("--all", "everyone", is_flag=True, help="Rebuild every model, not only those with new feedback.")
@click.pass_obj
def retrain(app: App, everyone: bool) -> None:
    """Rebuild the subscribers' models from their feedback (clicks, thumbs, papers shown)."""
    report = run_retrain(app, everyone)
    sys.exit(OK if report is not None else FAILED)


def run_retrain(app: App, everyone: bool = False):
    from ..training import retrain as rebuild

    report = rebuild(app.db, force=everyone, config=app.config.ranking)
    console.print(f"Models: {len(report.trained)} retrained, {report.unchanged} unchanged.")
    return report


@click.command()
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
