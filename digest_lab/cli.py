"""The lab's commands, offered by the `digest` command line (entry points `digest.commands`):
`digest eval`, `digest simulate` and `digest bench`. They run the product's own code on datasets
and generated subscribers; what they need beyond the product comes with the `[lab]` extra.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import click
from rich.table import Table

from digest.cli.app import BAD_INPUT, App, console, errors, fail, progress

LAB_EXTRA = "pip install 'digest[lab]'"


def require_lab(what: str, module: str) -> None:
    """Stop with one line saying what to install when `module` of the `[lab]` extra is missing."""
    try:
        importlib.import_module(module)
    except ImportError:
        fail(f"{what} needs {module}, which comes with the lab extra: {LAB_EXTRA}", BAD_INPUT)


@click.command()
@click.option("--users", type=click.IntRange(1), default=10_000, show_default=True, help="Generated subscribers for the stages and the first daily run.")
@click.option("--papers", type=click.IntRange(1), default=2_000, show_default=True, help="Real papers first seen today (the rest of the daily files are their past).")
@click.option("--scale", default="", metavar="N,N,...", help="Also time the whole daily run at these numbers of subscribers (e.g. 1000,10000,100000).")
@click.option("--stage", "stages", multiple=True, type=click.Choice(["ingest", "stages", "daily", "postgres"]), help="Only these parts (default: all).")
@click.option("--postgres", "postgres", metavar="URL|temp", is_flag=False, flag_value="temp", default=None,
              help="Also the PostgreSQL stage: one sender on SQLite and on PostgreSQL, two sharing the day, one of two killed -9. "
                   "`temp` (or no value) starts a throwaway server; a URL names a server whose user may create databases.")
@click.option("--compare", "compare", metavar="REF",
              help="Also run the daily run at --users with the `digest send` of git commit REF of this checkout (e.g. f1f4b40, main), "
                   "on copies of the same world, alternated with this checkout's, and print the ratio.")
@click.option("--repeat", type=click.IntRange(1), default=1, show_default=True, help="Run the daily run at --users this many times (each, with --compare).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def bench(users: int, papers: int, scale: str, stages: tuple[str, ...], postgres: str | None, compare: str | None, repeat: int, as_json: bool) -> None:
    """Measure each stage of the daily run (throughput, time, peak memory) on generated subscribers
    and real papers (../shared/data/arxiv-daily, or DIGEST_BENCH_DATA), and the whole run at each size.

    The daily run's memory is the peak of all its processes together (their PSS: a page shared
    by the forked workers is counted once)."""
    require_lab("digest bench", "aiosmtpd")
    require_lab("digest bench", "psutil")
    from digest.pgserver import Unavailable

    from . import bench as benchmark

    try:
        sizes = [int(n) for n in scale.replace(" ", "").split(",") if n]
    except ValueError:
        fail(f"--scale takes numbers separated by commas, not {scale!r}", BAD_INPUT)
    with progress() as bar:
        task = bar.add_task("benchmark", total=None)
        try:
            results = benchmark.run(list(stages) or None, users=users, papers=papers, scale=sizes, postgres=postgres or ("temp" if "postgres" in stages else None),
                                    compare=compare, repeat=repeat, on_stage=lambda s: bar.update(task, description=f"benchmark: {s.name} done"))
        except (FileNotFoundError, ValueError, Unavailable) as exc:
            fail(str(exc), BAD_INPUT)
    if as_json:
        click.echo(benchmark.as_json(results))
        return
    table = Table(title=f"Benchmark ({os.cpu_count()} CPUs)")
    for column in ("stage", "items", "seconds", "CPU s", "per second", "peak MB", "note"):
        table.add_column(column, justify="left" if column in ("stage", "note") else "right", overflow="fold")
    for s in results:
        cpu = "" if s.cpu_seconds is None else f"{s.cpu_seconds:.1f}"
        table.add_row(s.name, f"{s.items:,} {s.unit}", f"{s.seconds:.2f}", cpu, f"{s.per_second:,.0f} {s.unit}/s", f"{s.peak_mb:.0f}", s.note)
    console.print(table)
    daily = sorted((s for s in results if s.name.startswith("daily run") and not s.code), key=lambda s: s.items)
    if len({s.items for s in daily}) > 1:
        console.print("Scaling: " + "; ".join(f"{s.items:,} subscribers {s.seconds:.1f} s ({1e3 * s.seconds / s.items:.2f} ms each, {s.peak_mb:.0f} MB)" for s in daily))
        first, last = daily[0], daily[-1]
        console.print(f"Each further subscriber: {1e3 * (last.seconds - first.seconds) / (last.items - first.items):.2f} ms "
                      f"(from {first.items:,} to {last.items:,} subscribers)")
    for code, items, this, other in benchmark.ratios(results):
        console.print(f"Daily run at {items:,} subscribers: this checkout {this:.1f} s, {code} {other:.1f} s: {this / other:.2f}x the time")


@click.command("eval")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--mode", "modes", multiple=True, type=click.Choice(["both", "interests", "history"]), help="Modes to run (default: all three).")
@click.option("--k", default=100, show_default=True, help="Length of each ranking written by --rankings.")
@click.option("--rankings", type=click.Path(dir_okay=False, path_type=Path), help="Write the production ranking, one JSON line per user.")
@click.option("--users", "limit_users", type=int, help="Only the first N users (a quick look).")
@click.option("--no-baselines", is_flag=True, help="Only the production ranker.")
@click.option("--split-new", "split_seed", type=int, metavar="SEED",
              help="Re-split a library dataset into the new-papers protocol (a seeded fifth of the papers new); "
                   "mode history only, since its interests were built from whole libraries.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.pass_obj
def evaluate_command(app: App, dataset: Path, modes: tuple[str, ...], k: int, rankings: Path | None, limit_users: int | None, no_baselines: bool,
                     split_seed: int | None, as_json: bool) -> None:
    """Offline evaluation on DATASET (papers.jsonl + users.jsonl): recall@10, recall@50 and nDCG@10
    of the production ranker and of the baselines, with the time each takes per user.

    Where any paper is marked "new": true (the new-papers protocol, the digest's own task) every
    method ranks only those; otherwise (library protocol) every paper not in the user's history."""
    from .evaluation import DatasetError, evaluate, load_dataset, split_new, write_rankings

    try:
        data = load_dataset(dataset, limit_users)
    except DatasetError as exc:
        fail(str(exc), BAD_INPUT)
    if split_seed is not None:
        if data.protocol == "new-papers":
            fail(f"{dataset} marks its new papers already; --split-new is for library datasets", BAD_INPUT)
        if set(modes) - {"history"}:
            fail("--split-new leaks the relevant papers' topics into the interests: use it with --mode history", BAD_INPUT)
        data = split_new(data, seed=split_seed)
    modes = modes or (("history",) if split_seed is not None else ("both", "interests", "history"))
    errors.print(f"{data.name}: {len(data.ids):,} papers ({int(data.new.sum()):,} new), {len(data.users):,} users; {data.protocol} protocol; "
                 f"modes {', '.join(modes)}.", highlight=False)
    vectors, embedder = semantic_data(app, data)
    with progress() as bar:
        task = bar.add_task("evaluating", total=None)
        results = evaluate(data, modes, k, not no_baselines, app.config.ranking, on_result=lambda r: bar.advance(task),
                           embeddings=vectors, phrase_embedder=embedder.phrases if embedder else None)
    if rankings:
        for mode in modes:
            production = next(r for r in results if r.method == "production" and r.mode == mode)
            path = rankings if len(modes) == 1 else rankings.with_name(f"{rankings.stem}.{mode}{rankings.suffix}")
            write_rankings(production, path)
            errors.print(f"Rankings ({mode}) written to {path}", highlight=False)
    if as_json:
        click.echo(json.dumps({"dataset": data.name, "protocol": data.protocol, "papers": len(data.ids), "new_papers": int(data.new.sum()),
                               "users": len(data.users), "results": [r.row() for r in results]}, indent=2))
        return
    table = Table(title=f"Evaluation on {data.name} ({len(data.users):,} users, {data.protocol} protocol)")
    for column in ("method", "mode", "recall@10", "recall@50", "nDCG@10", "ms / user"):
        table.add_column(column, justify="left" if column in ("method", "mode") else "right")
    for r in results:
        table.add_row(r.method, r.mode, f"{r.recall10:.4f}", f"{r.recall50:.4f}", f"{r.ndcg10:.4f}", f"{r.ms_per_user:.2f}")
    console.print(table)


def semantic_data(app: App, data) -> tuple:
    """With DIGEST_EMBEDDING_MODEL (and the semantic extra): the dataset's embeddings (cached in
    var/eval-embeddings) and the embedder, as production would rank with them; else (None, None)."""
    model = app.settings.embedding_model
    if not model:
        return None, None
    from digest.embeddings import Embedder, EmbeddingUnavailable

    from .evaluation import dataset_embeddings

    try:
        embedder = Embedder(model)
    except EmbeddingUnavailable as exc:
        fail(str(exc), BAD_INPUT)
    errors.print(f"Semantic: {embedder.key}", highlight=False)
    with progress() as bar:
        bar.add_task("embedding the papers (cached after the first run)", total=None)
        vectors = dataset_embeddings(data, embedder, Path("var") / "eval-embeddings")
    return vectors, embedder


@click.command()
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
    if plot_path:
        require_lab("digest simulate --plot", "matplotlib")
    from .evaluation import DatasetError, load_dataset, plot
    from .evaluation import simulate as run_simulation

    try:
        data = load_dataset(dataset, limit_users)
    except DatasetError as exc:
        fail(str(exc), BAD_INPUT)
    vectors, embedder = semantic_data(app, data)
    with progress() as bar:
        task = bar.add_task("simulating", total=2 * days)
        report = run_simulation(data, days, k, seed, app.config.ranking, log_path, on_day=lambda arm, day: bar.advance(task),
                                embeddings=vectors, phrase_embedder=embedder.phrases if embedder else None)
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
