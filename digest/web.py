"""The web endpoints of tracked links (README § Feedback), an ASGI app for uvicorn.

| request | effect |
|---|---|
| `GET /c/{token}` | records a click, redirects to the paper's stored URL (never one from the request) |
| `GET /d/{token}` | records a click on the PDF link, redirects to the paper's stored PDF URL |
| `GET /f/{token}?v=up|down` | records more / less like this, answers a page that offers undo; `POST` undoes |
| `GET /u/{token}` | a confirmation page with a button; `POST` unsubscribes (RFC 8058 one-click) |
| `GET /v/{token}` | the digest in the browser |
| `GET /p/{token}` | the preferences page; `POST` saves it into the profile file, pauses, (re)subscribes |
| `GET /healthz` | 200 when the database answers |

A forged, altered or truncated token records nothing and answers 404, and so does a valid one
whose object is gone or belongs to another subscriber now (see `links`). `HEAD`, as mail
scanners send, records nothing and never unsubscribes; nor does a `GET` of `/u/`. The forms of
`/f/` and `/p/` are refused from any other origin, and `/p/`'s carry a signed per-form token too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import signal
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from . import preferences as prefs
from .db import Database
from .feedback import load_digest, load_item, load_subscriber, record_item_event, record_view, resubscribe, undo_thumb, unsubscribe, unsubscribe_subscriber
from .links import LinkMaker, LinkSigner, paper_link, safe_url
from .mail.render import Renderer
from .mail.view import digest_view, load_items
from .models import DigestStatus, FeedbackKind, Paper, Subscriber, utcnow
from .profiles import sync_profile
from .schedule import local_date, zone_names
from .settings import Settings
from .yamlfile import FileError

log = logging.getLogger(__name__)

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


class Pages:
    """The few pages the endpoints answer with, from `templates/web/`."""

    def __init__(self, templates_dir: str) -> None:
        self.env = Environment(loader=FileSystemLoader(templates_dir), autoescape=select_autoescape(default=True))

    def page(self, template: str, status: int = 200, headers: dict | None = None, **context: object) -> HTMLResponse:
        return HTMLResponse(self.env.get_template(template).render(**context), status_code=status, headers=headers or HEADERS)

    def message(self, heading: str, *lines: str, status: int = 200, link: dict | None = None) -> HTMLResponse:
        return self.page("web/message.html", status, heading=heading, lines=lines, link=link)

    def not_found(self) -> HTMLResponse:
        return self.message("This link does not work", "It may have been mistyped or cut short.", status=404)


#: Pages with forms: a POST of theirs must carry its `Origin`, which `no-referrer` would blank.
FORM_HEADERS = {**HEADERS, "Referrer-Policy": "same-origin"}
CHANGED_MEANWHILE = "Your profile was changed elsewhere while this page was open; nothing was saved. Here it is as it is now."


def create_app(settings: Settings, db: Database | None = None, lifespan: Callable | None = None) -> Starlette:
    db = db or Database(settings.database_url)
    installation = db.installation()
    signer = LinkSigner(settings.require_secret_key(), settings.old_secret_keys, installation=installation.id)
    links = LinkMaker(settings.base_url, signer)
    pages = Pages(str(settings.templates_dir))
    renderer = Renderer(settings.templates_dir)
    forms = prefs.FormTokens(settings.require_secret_key(), settings.old_secret_keys)
    # The largest id a token of the first format (`links`) may name, by action: such links were
    # mailed for clicks, thumbs, unsubscribes and views only, never for PDFs or preferences.
    legacy = {"c": installation.legacy_item_max, "f": installation.legacy_item_max, "d": 0,
              "u": installation.legacy_digest_max, "v": installation.legacy_digest_max, "p": 0}

    def foreign(request: Request) -> Response | None:
        """A refusal for a form sent from another site, else None."""
        if prefs.same_origin(request.headers, settings.base_url):
            return None
        return pages.message("This form was not sent from its own page", "Nothing has changed. Open the link from your email again.", status=403)

    def item_of(request: Request, action: str):
        """The digest item a valid token of `action` names, while it is its subscriber's; else None."""
        ref = signer.parse(request.path_params["token"], action)
        context = load_item(db, ref.id) if ref is not None else None
        if context is None or not ref.opens(context.subscriber.link_id, legacy[action]):
            return None
        return context

    def digest_of(request: Request, action: str):
        """The (digest, subscriber) a valid token of `action` names, while it is theirs; else None."""
        ref = signer.parse(request.path_params["token"], action)
        found = load_digest(db, ref.id) if ref is not None else None
        if found is None or not ref.opens(found[1].link_id, legacy[action]):
            return None
        return found

    def follow(request: Request, action: str, target: Callable[[Paper], str]) -> Response:
        """Record a click (not for HEAD) and redirect to where the stored paper says, never to a
        URL from the request."""
        context = item_of(request, action)
        if context is None:
            return pages.not_found()
        if request.method == "GET":
            record_item_event(db, context, FeedbackKind.CLICK)
        return RedirectResponse(target(context.paper), status_code=302, headers=HEADERS)

    def click(request: Request) -> Response:
        # Its page, else its PDF, else a search for its title: a paper always leads somewhere.
        return follow(request, "c", paper_link)

    def pdf(request: Request) -> Response:
        return follow(request, "d", lambda paper: safe_url(paper.pdf_url) or paper_link(paper))

    def feedback(request: Request) -> Response:
        context = item_of(request, "f")
        if context is None:
            return pages.not_found()
        vote = request.query_params.get("v")
        if vote not in ("up", "down"):
            return pages.message("Which way?", "This link should end in ?v=up or ?v=down.", status=400)
        back = {"url": links.view(context.digest.id, context.subscriber.link_id), "text": "Back to the digest"}
        if request.method == "POST":
            refused = foreign(request)
            if refused is not None:
                return refused
            undo_thumb(db, context)
            line = f"Your “{'more' if vote == 'up' else 'less'} like this” on “{context.paper.title}” is taken back: your digests will not count it."
            return pages.message("Undone", line, link=back)
        if request.method == "GET":
            record_item_event(db, context, FeedbackKind.UP if vote == "up" else FeedbackKind.DOWN)
        heading = "More like this, then" if vote == "up" else "Less like this, then"
        line = f"Noted for “{context.paper.title}”. Your next digests will " + ("lean towards papers like it." if vote == "up" else "show fewer papers like it.")
        return pages.page("web/feedback.html", headers=FORM_HEADERS, heading=heading, line=line, action=str(request.url.path) + f"?v={vote}",
                          link=back, preferences=links.preferences(context.subscriber.id, context.subscriber.link_id))

    def unsubscribe_page(request: Request) -> Response:
        found = digest_of(request, "u")
        if found is None:
            return pages.not_found()
        digest, subscriber = found
        preferences_url = links.preferences(subscriber.id, subscriber.link_id)
        back = {"url": preferences_url, "text": "Changed your mind? Resubscribe on your preferences page"}
        if request.method == "POST":
            unsubscribe(db, digest)
            return pages.message("You are unsubscribed", f"{subscriber.email} will get no more digests.", link=back)
        if subscriber.unsubscribed_at is not None:
            return pages.message("You are unsubscribed", f"{subscriber.email} gets no more digests.", link=back)
        return pages.page("web/unsubscribe.html", email=subscriber.email, action=str(request.url.path), preferences=preferences_url)

    def view(request: Request) -> Response:
        found = digest_of(request, "v")
        if found is None:
            return pages.not_found()
        digest, subscriber = found
        if digest.status == DigestStatus.EMPTY:
            return pages.message("No papers that day", digest.reason or "Nothing new matched your interests.")
        if request.method == "GET":
            record_view(db, digest)
        items, papers = load_items(db, digest.id)
        html = renderer.render(digest_view(links, digest, subscriber, items, papers)).html
        return HTMLResponse(html, headers=HEADERS)

    async def preferences(request: Request) -> Response:
        token = request.path_params["token"]
        ref = signer.parse(token, "p")
        subscriber = await run_in_threadpool(load_subscriber, db, ref.id) if ref is not None else None
        if subscriber is None or not ref.opens(subscriber.link_id, legacy["p"]):
            return pages.not_found()
        if request.method != "POST":
            return await run_in_threadpool(preferences_page, subscriber, token)
        refused = foreign(request)
        if refused is not None:
            return refused
        form = await form_fields(request)
        if not forms.check(form.get("csrf"), token):
            expired = "This page was open too long (or did not come from here): nothing was saved. Please try again."
            return await run_in_threadpool(preferences_page, subscriber, token, None, {}, expired, 403)
        return await run_in_threadpool(save_preferences, subscriber, token, form)

    def preferences_page(subscriber: Subscriber, token: str, edit: prefs.Edit | None = None, errors: dict | None = None,
                         notice: str = "", status: int = 200, version: str | None = None) -> Response:
        """The page: the profile file's values (or what was just submitted, when it had errors)."""
        path = prefs.resolve(subscriber.profile_file, settings.profiles_dir)
        problem = None
        profile = None
        if path is None:
            problem = "Your profile file is not found on the server: ask the operator of this service."
        else:
            try:
                profile_file = prefs.ProfileFile(path)
                version = version or profile_file.version
                profile = profile_file.profile()
            except (FileError, OSError, ValueError) as exc:
                problem = f"Your profile file has a problem the operator of this service must fix: {getattr(exc, 'field', None) or ''} {getattr(exc, 'message', exc)}".strip()
        if edit is None and profile is not None:
            edit = prefs.Edit(
                interests=[prefs.InterestRow(i.phrase, f"{i.weight:g}") for i in profile.interests],
                avoid=profile.avoid, authors=profile.authors, categories=profile.categories,
                send_at=profile.send_at, timezone=profile.timezone, max_items=str(profile.max_items),
            )
        rows = list(edit.interests) if edit else []
        rows += [prefs.InterestRow() for _ in range(prefs.NEW_ROWS)]
        today = local_date(utcnow(), subscriber.timezone)
        paused = profile.paused_until if profile and profile.paused_until and profile.paused_until > today else None
        return pages.page(
            "web/preferences.html", status, headers=FORM_HEADERS, subscriber=subscriber, edit=edit, rows=rows, errors=errors or {},
            notice=notice, problem=problem, csrf=forms.make(token), version=version or "", zones=sorted(zone_names()), paused_until=paused,
            unsubscribed=subscriber.unsubscribed_at is not None, action=f"/p/{token}", max_pause=prefs.MAX_PAUSE_DAYS,
        )

    def save_preferences(subscriber: Subscriber, token: str, form: dict) -> Response:
        action = form.get("action", "save")
        if action == "unsubscribe":
            unsubscribe_subscriber(db, subscriber.id)
            done = f"Unsubscribed: {subscriber.email} will get no more digests. You can resubscribe here at any time."
            return preferences_page(load_subscriber(db, subscriber.id), token, notice=done)
        path = prefs.resolve(subscriber.profile_file, settings.profiles_dir)
        if path is None:
            return preferences_page(subscriber, token, status=409)
        try:
            profile_file = prefs.ProfileFile(path)
            current = profile_file.profile()
        except (FileError, OSError, ValueError):
            return preferences_page(subscriber, token, status=409)
        if action == "resubscribe":
            resubscribe(db, subscriber.id, current.active)
            return preferences_page(load_subscriber(db, subscriber.id), token, notice=f"Welcome back: {subscriber.email} is subscribed again.")
        if form.get("version") != profile_file.version:
            return preferences_page(subscriber, token, notice=CHANGED_MEANWHILE, status=409)
        edit = prefs.parse_form(form)
        if action == "pause":
            days = prefs.parse_days(form.get("pause_days", ""))
            if days is None:
                return preferences_page(subscriber, token, errors={"pause_days": f"pause for 1 to {prefs.MAX_PAUSE_DAYS} days"}, notice="Not paused.", status=400)
            until = local_date(utcnow(), current.timezone) + dt.timedelta(days=days)
            profile_file.pause(until)
            done = f"Paused: your digests resume on {until:%A}, {until.day} {until:%B %Y}."
        elif action == "resume":
            profile_file.pause(None)
            done = "Digests resume with the next one."
        else:
            profile_file.apply(edit, current)
            done = "Saved. Your next digest follows these settings."
        try:
            profile_file.save()
        except FileError as exc:
            errors = prefs.form_errors(exc, edit)
            return preferences_page(subscriber, token, edit, errors, "Not saved: " + "; ".join(errors.values()), 400, version=profile_file.version)
        except prefs.Conflict:
            return preferences_page(subscriber, token, notice=CHANGED_MEANWHILE, status=409)
        report = sync_profile(db, path)
        if report.errors:
            log.error("profile %s saved but not synced: %s", path, report.errors[0])
        log.info("%s updated their preferences (%s)", subscriber.email, action)
        return preferences_page(load_subscriber(db, subscriber.id), token, notice=done)

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
        Route("/d/{token}", pdf, methods=["GET", "HEAD"]),
        Route("/f/{token}", feedback, methods=["GET", "HEAD", "POST"]),
        Route("/u/{token}", unsubscribe_page, methods=["GET", "HEAD", "POST"]),
        Route("/v/{token}", view, methods=["GET", "HEAD"]),
        Route("/p/{token}", preferences, methods=["GET", "HEAD", "POST"]),
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.db = db
    return app


#: The largest form body read: a preferences form is a few kilobytes.
MAX_FORM_BYTES = 64 * 1024


async def form_fields(request: Request) -> dict[str, str]:
    """An HTML form's fields (`application/x-www-form-urlencoded`, what the pages send), read with
    the standard library; any other body, or one too large, reads as no fields."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        return {}
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=500))


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
