"""The `digest` command line (also `python -m digest`): the command group, and the commands of
each concern in a module of its own (admin, ingest, profiles, send, serve; the lab's eval,
simulate and bench when `digest_lab` is installed).

Exit codes: 0 all went well, 1 some work failed, 2 bad usage or bad input.
"""

from __future__ import annotations

import importlib.metadata
import logging

import click
from rich.logging import RichHandler

from ..db import DatabaseUnusable
from . import admin, ingest, profiles, send, serve
from .app import BAD_INPUT, App, errors, fail

#: Commands of the lab (`digest_lab`), offered through the entry points `digest.commands`.
LAB_COMMANDS = {"eval": "offline evaluation", "simulate": "the click simulation", "bench": "the benchmark"}


class CommandGroup(click.Group):
    """The commands of this package, and those installed packages offer through the entry point group
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


for command in (admin.init, ingest.ingest, ingest.embed, profiles.profiles, send.preview, send.send, send.run, send.retrain,
                admin.database, serve.web, serve.serve, admin.status):
    main.add_command(command)
