"""Rendering: a digest's items into a subject, an HTML part (CSS inlined) and a plain-text part.

The templates live in `templates/email/`. HTML is autoescaped, so a title holding `<script>`
arrives as text; premailer moves the stylesheet into `style` attributes, which is what mail
clients honour, and keeps the `@media` rules that make the message fit a phone.

Premailer costs milliseconds a message (it parses the stylesheet and matches every selector
against every element), so it runs once per template version instead: on the template source,
with its Jinja tags shielded, and each message is rendered from the inlined template. The HTML
is the same, byte for byte, as premailer on the rendered message (tests/test_render.py checks
it): values are escaped as premailer's serializer (libxml2) writes them, and a value that
serializer would rewrite in some other way (a quote or a space in a URL, a carriage return) sends
that one message down the slow path.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, select_autoescape
from jinja2.filters import do_indent, do_wordwrap
from markupsafe import Markup
from premailer import Premailer

log = logging.getLogger(__name__)

@dataclass
class ItemView:
    """One paper as the templates show it.

    `byline` (authors · announcement date · source), `arxiv_id`, `categories` and `tldr` are the
    paper's own and the same in every digest it is in (`view.PaperViews` makes them once per
    paper); the URLs are the item's tracked links."""

    rank: int
    title: str
    click_url: str
    more_url: str
    less_url: str
    pdf_url: str = ""
    byline: str = ""
    arxiv_id: str = ""
    categories: tuple[str, ...] = ()
    tldr: str = ""
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
    preferences_url: str = ""
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


def byline(*parts: str) -> str:
    """The non-empty parts joined by middle dots: "Ann Lee, Bo Chen · 10 Apr 2026 · arXiv"."""
    return " · ".join(p for p in parts if p)


def author_line(authors: list[str], limit: int = 3) -> str:
    if len(authors) <= limit:
        return ", ".join(authors)
    return ", ".join(authors[:limit]) + " et al."


def join_phrases(phrases: list[str]) -> str:
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


class Renderer:
    """Renders digests with the templates of one folder.

    `inline="template"` (the default) renders from the template inlined once; `"message"` runs
    premailer on every rendered message, the straightforward way, kept as the reference.
    """

    HTML = "email/digest.html"

    def __init__(self, templates_dir: str | Path, inline: str = "template") -> None:
        if inline not in ("template", "message"):
            raise ValueError(f"inline must be 'template' or 'message', not {inline!r}")
        self.inline = inline
        self.env = Environment(
            loader=FileSystemLoader(str(templates_dir)),
            autoescape=select_autoescape(["html", "htm", "xml"], default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.env.filters["wrap_indented"] = lru_cache(maxsize=2**16)(partial(_wrap_indented, self.env))
        # The inlined template escapes every value itself (as libxml2 would), so it needs no autoescape.
        self.inlined_env = self.env.overlay(autoescape=False)
        self.inlined_env.filters.update(libxml2_text=_libxml2_text, libxml2_attribute=_libxml2_attribute)
        self.text_template = self.env.get_template("email/digest.txt")
        self._inlined: Template | None = None
        self._inlined_for: Template | None = None
        #: Messages of the fast path that needed the slow one (see the module's docstring).
        self.slow_renders = 0

    def inlined_template(self) -> Template:
        """The HTML template with its CSS inlined, made again when the template file changes
        (Jinja's own check: the same template object while the file is unchanged)."""
        template = self.env.get_template(self.HTML)
        if template is not self._inlined_for:
            source, _, _ = self.env.loader.get_source(self.env, self.HTML)
            self._inlined = self.inlined_env.from_string(inline_template_css(source))
            self._inlined_for = template
        return self._inlined

    def context(self, view: DigestView) -> dict:
        return {
            "subject": view.subject,
            "date_label": view.date_label,
            "subscriber_name": view.subscriber_name,
            "subscriber_email": view.subscriber_email,
            "interests": join_phrases(view.interests),
            "items": view.items,
            "view_url": view.view_url,
            "unsubscribe_url": view.unsubscribe_url,
            "preferences_url": view.preferences_url,
            **view.extra,
        }

    def render(self, view: DigestView) -> RenderedDigest:
        context = self.context(view)
        return RenderedDigest(view.subject, self.render_html(context), self.text_template.render(context))

    def render_html(self, context: dict) -> str:
        if self.inline == "template":
            try:
                return self.inlined_template().render(context)
            except _SlowPath:
                self.slow_renders += 1
        return inline_css(self.env.get_template(self.HTML).render(context))


def _wrap_indented(env: Environment, text: str, width: int, indent: int) -> str:
    """`text | wordwrap(width) | indent(indent, first=True)`, cached: a paper's abstract is
    wrapped once for all the subscribers it goes to, not once per message."""
    return do_indent(do_wordwrap(env, text, width), indent, first=True)


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
    ).transform(pretty_print=False)


# --- inlining once per template ------------------------------------------------------------------

_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_SHIELD = re.compile(r"JINJA(\d+)X")
_EXPRESSION = re.compile(r"\{\{(-?)(.*?)(-?)\}\}", re.S)
_inlined_sources: dict[str, str] = {}


def inline_template_css(source: str) -> str:
    """A Jinja HTML template with its stylesheet inlined by premailer, once per source.

    Every Jinja tag is replaced by a plain word premailer leaves alone, then put back; an
    expression gets a filter that escapes its value as premailer's serializer would write it, in
    text or in an attribute (whichever it stands in).
    """
    key = hashlib.sha256(source.encode()).hexdigest()
    if key in _inlined_sources:
        return _inlined_sources[key]
    tags: list[str] = []

    def shield(match: re.Match) -> str:
        tags.append(match.group(0))
        return f"JINJA{len(tags) - 1}X"

    shielded = _JINJA.sub(shield, source)
    if _SHIELD.search(_JINJA.sub("", source)):
        raise ValueError("the template holds a word that looks like a shielded Jinja tag (JINJA<n>X)")
    inlined = inline_css(shielded)
    in_tag = _inside_tags(inlined)

    def restore(match: re.Match) -> str:
        tag = tags[int(match.group(1))]
        expression = _EXPRESSION.fullmatch(tag)
        if expression is None:
            return tag
        left, body, right = expression.groups()
        escape = "libxml2_attribute" if in_tag[match.start()] else "libxml2_text"
        return f"{{{{{left} ({body.strip()})|{escape} {right}}}}}"

    restored = _SHIELD.sub(restore, inlined)
    if len(_SHIELD.findall(inlined)) != len(tags):
        raise ValueError("premailer dropped or repeated a Jinja tag of the template; it cannot be inlined once")
    _inlined_sources[key] = restored
    return restored


def _inside_tags(html: str) -> list[bool]:
    """For each character of `html`, whether it stands inside a tag (`<...>`), as an attribute would."""
    inside, result = False, []
    for char in html:
        if char == "<":
            inside = True
        result.append(inside)
        if char == ">":
            inside = False
    return result


class _SlowPath(Exception):
    """A value the inlined template cannot write exactly as premailer would."""


_TEXT_REWRITTEN = re.compile("[\r\x00]")  # libxml2 reads CR as LF and NUL as U+FFFD
_ATTRIBUTE_PLAIN = re.compile(r"[!#-~]*")  # printable ASCII without space and double quote


def _libxml2_text(value: object) -> str:
    if isinstance(value, Markup):
        raise _SlowPath("markup is re-serialized by premailer")
    return _escape_text(str(value))


def _libxml2_attribute(value: object) -> str:
    if isinstance(value, Markup):
        raise _SlowPath("markup is re-serialized by premailer")
    return _escape_attribute(str(value))


@lru_cache(maxsize=2**16)  # titles, authors and abstracts recur in many messages
def _escape_text(text: str) -> str:
    if _TEXT_REWRITTEN.search(text):
        raise _SlowPath(text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_attribute(text: str) -> str:
    if not _ATTRIBUTE_PLAIN.fullmatch(text):
        raise _SlowPath(text)  # libxml2 percent-escapes URLs and picks other quotes
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
