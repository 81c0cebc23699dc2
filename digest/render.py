"""Rendering: a digest's items into a subject, an HTML part (CSS inlined) and a plain-text part.

The templates live in `templates/email/`. HTML is autoescaped, so a title holding `<script>`
arrives as text; premailer moves the stylesheet into `style` attributes, which is what mail
clients honour, and keeps the `@media` rules that make the message fit a phone.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from premailer import Premailer

log = logging.getLogger(__name__)

SNIPPET_CHARS = 320


@dataclass
class ItemView:
    """One paper as the templates show it."""

    rank: int
    title: str
    click_url: str
    more_url: str
    less_url: str
    authors: str = ""
    date: str = ""
    source: str = ""
    snippet: str = ""
    reason: str = ""


@dataclass
class DigestView:
    """Everything a digest email shows."""

    subscriber_email: str
    subscriber_name: str | None
    local_date: dt.date
    interests: list[str]
    items: list[ItemView]
    view_url: str
    unsubscribe_url: str
    extra: dict = field(default_factory=dict)

    @property
    def date_label(self) -> str:
        return f"{self.local_date:%A}, {self.local_date.day} {self.local_date:%B %Y}"

    @property
    def subject(self) -> str:
        count = len(self.items)
        top = shorten(self.items[0].title, 70) if self.items else ""
        noun = "paper" if count == 1 else "papers"
        return f"{count} new {noun} for {self.local_date.day} {self.local_date:%b}: {top}"

    @property
    def preheader(self) -> str:
        return " · ".join(shorten(i.title, 60) for i in self.items[:3])


@dataclass(frozen=True)
class RenderedDigest:
    subject: str
    html: str
    text: str


def shorten(text: str, limit: int) -> str:
    """`text` cut at a word boundary to at most `limit` characters, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:.-")
    return cut + "…"


def author_line(authors: list[str], limit: int = 3) -> str:
    if len(authors) <= limit:
        return ", ".join(authors)
    return ", ".join(authors[:limit]) + " et al."


def join_phrases(phrases: list[str]) -> str:
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


class Renderer:
    """Renders digests with the templates of one folder."""

    def __init__(self, templates_dir: str | Path) -> None:
        self.env = Environment(
            loader=FileSystemLoader(str(templates_dir)),
            autoescape=select_autoescape(["html", "htm", "xml"], default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.html_template = self.env.get_template("email/digest.html")
        self.text_template = self.env.get_template("email/digest.txt")

    def context(self, view: DigestView) -> dict:
        return {
            "subject": view.subject,
            "preheader": view.preheader,
            "date_label": view.date_label,
            "subscriber_name": view.subscriber_name,
            "subscriber_email": view.subscriber_email,
            "interests": join_phrases(view.interests),
            "items": view.items,
            "view_url": view.view_url,
            "unsubscribe_url": view.unsubscribe_url,
            **view.extra,
        }

    def render(self, view: DigestView) -> RenderedDigest:
        context = self.context(view)
        html = inline_css(self.html_template.render(context))
        text = self.text_template.render(context)
        return RenderedDigest(view.subject, html, text)


def inline_css(html: str) -> str:
    """The stylesheet moved into `style` attributes; `@media` rules stay in a `<style>` block."""
    return Premailer(
        html,
        remove_classes=False,
        strip_important=False,
        keep_style_tags=False,
        allow_network=False,
        disable_validation=True,
        cssutils_logging_level=logging.CRITICAL,
    ).transform()
