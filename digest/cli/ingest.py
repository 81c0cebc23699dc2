"""`digest ingest` and `digest embed`: papers in, and their sentence embeddings."""

from __future__ import annotations

import datetime as dt
import sys
from typing import TYPE_CHECKING

import click
from rich.table import Table

from .app import BAD_INPUT, FAILED, OK, App, console, fail, parse_date, progress

if TYPE_CHECKING:
    from ..ingest import IngestResult


@click.command()
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
    from ..embeddings import embed_new, last_paper

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
    from ..ingest import SourceSpec, ingest_sources  # imported by the commands that ingest (see `App.sender`)

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


@click.command()
@click.option("--days", type=click.FloatRange(min=0, min_open=True), help="Papers first seen in the last DAYS days (default: the ranking's fit_days).")
@click.option("--all", "everything", is_flag=True, help="Every paper in the database.")
@click.pass_obj
def embed(app: App, days: float | None, everything: bool) -> None:
    """Compute the sentence embeddings that papers lack (semantic extra, DIGEST_EMBEDDING_MODEL):
    for papers met before the model was set. New papers are embedded at ingest."""
    from ..embeddings import Embedder, EmbeddingUnavailable, embed_papers, missing_papers, papers_since

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
