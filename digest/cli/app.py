"""What every command shares: the settings, database and configuration made on first use
(App), the consoles, exit codes, errors and progress bars."""

from __future__ import annotations

import datetime as dt
import sys
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..config import AppConfig, load_config
from ..db import Database
from ..settings import Settings, SettingsError
from ..yamlfile import FileError

if TYPE_CHECKING:
    from ..send.run import DigestSender

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
        # Imported here, by the commands that send: the ranking's libraries (scikit-learn, which
        # pulls in scipy.stats) take about 2 s and 90 MB to import, which `digest web`,
        # `profiles sync`, `init`, `status` and `db` never need.
        from ..mail.render import Renderer
        from ..mail.transports import make_transport
        from ..send.run import DigestSender

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


def parse_date(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date written YYYY-MM-DD") from None
