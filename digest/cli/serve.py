"""`digest web` and `digest serve`: the long-running processes, and where they listen."""

from __future__ import annotations

import click

from ..settings import Settings, SettingsError
from .app import BAD_INPUT, App, console, fail


@click.command()
@click.option("--host", help="Address to listen on (default: the host of DIGEST_BASE_URL).")
@click.option("--port", type=int, help="Port to listen on (default: the port of DIGEST_BASE_URL).")
@click.pass_obj
def web(app: App, host: str | None, port: int | None) -> None:
    """Serve the web endpoints (tracked links /c/ /d/ /f/ /u/ /v/, preferences /p/, /healthz) with uvicorn."""
    from ..web import serve

    try:
        app.settings.require_secret_key()
    except SettingsError as exc:
        fail(str(exc), BAD_INPUT)
    say_listening(app.settings, host, port, "the web endpoints")
    serve(app.settings, host, port)


def say_listening(settings: Settings, host: str | None, port: int | None, what: str) -> None:
    """Where a long-running command listens and how to stop it, printed before it starts."""
    from ..web import listen_address

    host, port = listen_address(settings, host, port)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"Serving {what} on http://{shown}:{port} (links in emails point to {settings.base_url}).", highlight=False)
    console.print("Press Ctrl+C (or send SIGTERM) to stop.", highlight=False)


@click.command()
@click.option("--host", help="Address to listen on (default: the host of DIGEST_BASE_URL).")
@click.option("--port", type=int, help="Port to listen on (default: the port of DIGEST_BASE_URL).")
@click.pass_obj
def serve(app: App, host: str | None, port: int | None) -> None:
    """The long-running service: the scheduler (ingest, send at each subscriber's local time,
    nightly retraining) and the web endpoints, until SIGTERM or SIGINT."""
    from ..service import serve as run_service

    try:
        app.settings.require_secret_key()
    except SettingsError as exc:
        fail(str(exc), BAD_INPUT)
    _ = app.config  # a broken config/digest.yaml stops here, with its file and line
    say_listening(app.settings, host, port, "the scheduler and the web endpoints")
    run_service(app.settings, host, port)
