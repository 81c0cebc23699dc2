"""The web endpoints of tracked links (DESIGN.md § Web endpoints), an ASGI app for uvicorn.

| request | effect |
|---|---|
| `GET /c/{token}` | records a click, redirects to the paper's stored URL (never one from the request) |
| `GET /f/{token}?v=up|down` | records more / less like this, answers a short page |
| `GET /u/{token}` | a confirmation page with a button; `POST` unsubscribes (RFC 8058 one-click) |
| `GET /v/{token}` | the digest in the browser |
| `GET /healthz` | 200 when the database answers |

A forged, altered or truncated token records nothing and answers 404. `HEAD`, as mail scanners
send, records nothing and never unsubscribes; nor does a `GET` of `/u/`.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from .db import Database
from .feedback import load_digest, load_item, record_item_event, record_view, unsubscribe
from .links import LinkMaker, LinkSigner
from .models import DigestStatus, FeedbackKind
from .render import Renderer
from .send import digest_view, load_items
from .settings import Settings

log = logging.getLogger(__name__)

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def safe_url(url: str | None) -> str | None:
    """`url` when it is an absolute http(s) URL, the only kind a click may lead to."""
    if not url:
        return None
    parts = urlsplit(url.strip())
    return url.strip() if parts.scheme in ("http", "https") and parts.netloc else None


class Pages:
    """The few pages the endpoints answer with, from `templates/web/`."""

    def __init__(self, templates_dir: str) -> None:
        self.env = Environment(loader=FileSystemLoader(templates_dir), autoescape=select_autoescape(default=True))

    def page(self, template: str, status: int = 200, **context: object) -> HTMLResponse:
        return HTMLResponse(self.env.get_template(template).render(**context), status_code=status, headers=HEADERS)

    def message(self, heading: str, *lines: str, status: int = 200, link: dict | None = None) -> HTMLResponse:
        return self.page("web/message.html", status, heading=heading, lines=lines, link=link)

    def not_found(self) -> HTMLResponse:
        return self.message("This link does not work", "It may have been mistyped or cut short.", status=404)


def create_app(settings: Settings, db: Database | None = None, lifespan: Callable | None = None) -> Starlette:
    db = db or Database(settings.database_url)
    signer = LinkSigner(settings.require_secret_key(), settings.old_secret_keys)
    links = LinkMaker(settings.base_url, signer)
    pages = Pages(str(settings.templates_dir))
    renderer = Renderer(settings.templates_dir)

    def item_of(request: Request, action: str):
        """The digest item a valid token of `action` names, else None."""
        item_id = signer.parse(request.path_params["token"], action)
        return load_item(db, item_id) if item_id is not None else None

    def digest_of(request: Request, action: str):
        """The (digest, subscriber) a valid token of `action` names, else None."""
        digest_id = signer.parse(request.path_params["token"], action)
        return load_digest(db, digest_id) if digest_id is not None else None

    def click(request: Request) -> Response:
        context = item_of(request, "c")
        if context is None:
            return pages.not_found()
        target = safe_url(context.paper.url) or safe_url(context.paper.pdf_url)
        if request.method == "GET":
            record_item_event(db, context, FeedbackKind.CLICK)
        if target is None:
            return pages.message(context.paper.title, "This paper has no link of its own.", link={"url": links.view(context.digest.id), "text": "Back to the digest"})
        return RedirectResponse(target, status_code=302, headers=HEADERS)

    def feedback(request: Request) -> Response:
        context = item_of(request, "f")
        if context is None:
            return pages.not_found()
        vote = request.query_params.get("v")
        if vote not in ("up", "down"):
            return pages.message("Which way?", "This link should end in ?v=up or ?v=down.", status=400)
        if request.method == "GET":
            record_item_event(db, context, FeedbackKind.UP if vote == "up" else FeedbackKind.DOWN)
        heading = "More like this, then" if vote == "up" else "Less like this, then"
        line = f"Noted for “{context.paper.title}”. Your next digests will " + ("lean towards papers like it." if vote == "up" else "show fewer papers like it.")
        return pages.message(heading, line, link={"url": links.view(context.digest.id), "text": "Back to the digest"})

    def unsubscribe_page(request: Request) -> Response:
        found = digest_of(request, "u")
        if found is None:
            return pages.not_found()
        digest, subscriber = found
        if request.method == "POST":
            unsubscribe(db, digest)
            return pages.message("You are unsubscribed", f"{subscriber.email} will get no more digests.")
        if subscriber.unsubscribed_at is not None:
            return pages.message("You are unsubscribed", f"{subscriber.email} gets no more digests.")
        return pages.page("web/unsubscribe.html", email=subscriber.email, action=str(request.url.path))

    def view(request: Request) -> Response:
        found = digest_of(request, "v")
        if found is None:
            return pages.not_found()
        digest, subscriber = found
        if digest.status == DigestStatus.EMPTY.value:
            return pages.message("No papers that day", digest.reason or "Nothing new matched your interests.")
        if request.method == "GET":
            record_view(db, digest)
        items, papers = load_items(db, digest.id)
        html = renderer.render(digest_view(links, digest, subscriber, items, papers)).html
        return HTMLResponse(html, headers=HEADERS)

    def healthz(request: Request) -> Response:
        try:
            with db.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:
            log.error("health check failed: %s", exc)
            return PlainTextResponse("database unavailable", status_code=503)
        return PlainTextResponse("ok")

    routes = [
        Route("/c/{token}", click, methods=["GET", "HEAD"]),
        Route("/f/{token}", feedback, methods=["GET", "HEAD"]),
        Route("/u/{token}", unsubscribe_page, methods=["GET", "HEAD", "POST"]),
        Route("/v/{token}", view, methods=["GET", "HEAD"]),
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.db = db
    return app


def listen_address(settings: Settings, host: str | None = None, port: int | None = None) -> tuple[str, int]:
    """Where the endpoints listen: `host` and `port`, by default those of `DIGEST_BASE_URL`."""
    base = urlsplit(settings.base_url)
    return host or base.hostname or "127.0.0.1", port or base.port or (443 if base.scheme == "https" else 80)


def serve(settings: Settings, host: str | None = None, port: int | None = None, lifespan: Callable | None = None, db: Database | None = None) -> None:
    """Run the endpoints with uvicorn until SIGTERM or SIGINT, then stop gracefully and return."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            # A stop on SIGTERM or SIGINT is a normal end (exit 0), not one re-raised as a signal.
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    host, port = listen_address(settings, host, port)
    log.info("serving on http://%s:%d (public base %s)", host, port, settings.base_url)
    app = create_app(settings, db, lifespan=lifespan)
    Server(uvicorn.Config(app, host=host, port=port, access_log=False, log_level="warning", proxy_headers=True)).run()
