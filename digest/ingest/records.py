"""What every reader shares, and nothing imports back: the one normalized paper they produce
(`PaperRecord`), what a read returns (`ReadResult`, `SourceError`), the identity rules for
papers, and the helpers that read a field of any format (text, numbers, dates, names).

A paper's identity is its arXiv id without version where known, else its normalized title.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import functools
import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# New-style ids (2603.28800, 0704.0001) and old-style ones (hep-th/9901001, math.GT/0309136),
# each with an optional version; found bare, after "arXiv:", in abs/pdf URLs or OAI identifiers.
_NEW_ID = r"\d{4}\.\d{4,5}"
_OLD_ID = r"[a-z][a-z\-]*(?:\.[A-Z]{2})?/\d{7}"
ARXIV_ID = re.compile(rf"(?<![\w.\-/])(?P<id>{_NEW_ID}|{_OLD_ID})(?:v(?P<version>\d+))?(?![\w.])")
_ARXIV_PREFIXES = re.compile(r"^(?:arxiv:|oai:arxiv\.org:|https?://(?:www\.|export\.)?arxiv\.org/(?:abs|pdf|html)/)", re.I)


def parse_arxiv_id(text: str | None) -> tuple[str, int | None] | None:
    """`(id, version)` of an arXiv id, URL or OAI identifier; None when `text` names no arXiv paper."""
    if not text:
        return None
    text = text.strip()
    rest = _ARXIV_PREFIXES.sub("", text)
    rest = rest.removesuffix(".pdf")
    match = ARXIV_ID.fullmatch(rest)
    if not match:
        return None
    version = match.group("version")
    return match.group("id"), int(version) if version else None


def title_key(title: str) -> str:
    """A title reduced to lowercase ASCII words: the identity of a paper without an arXiv id."""
    text = title.lower()
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text)
        text = "".join(c for c in text if not unicodedata.combining(c))
    words = re.findall(r"[a-z0-9]+", text)
    return " ".join(words)[:512]


#: Longest text kept from a source; a longer field is cut (an abstract) or rejected (a title).
MAX_TITLE = 1_000
MAX_ABSTRACT = 20_000
MAX_AUTHORS = 500


#: C0 and C1 control characters that are not whitespace (NUL, BEL, ESC, DEL...): never part of a
#: title or an abstract, and raw in a `Subject:` header they break the message or the terminal.
_CONTROL = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")


def clean_text(text: str | None) -> str:
    """Control characters dropped, whitespace collapsed to single spaces; None becomes the empty string."""
    if not text:
        return ""
    return " ".join(_CONTROL.sub("", text).split())


# --- simple LaTeX, as arXiv titles and abstracts carry it ----------------------------------------
# Math ($...$) is kept as written: it reads well enough and a wrong rewrite is worse. Outside math,
# accents become letters, font commands their argument, escaped specials the character.
# (pylatexenc, the general converter, rewrites math and fails on some real abstracts.)

_ACCENTS = {"\"": "\u0308", "'": "\u0301", "`": "\u0300", "^": "\u0302", "~": "\u0303", "=": "\u0304",
            ".": "\u0307", "u": "\u0306", "v": "\u030c", "H": "\u030b", "c": "\u0327", "k": "\u0328", "r": "\u030a"}
_ACCENT = re.compile(r"""\{?\\(["'`^~=.]|[uvHckr](?![a-zA-Z]))\s*(?:\{\s*(\\?[a-zA-Z])\s*\}|(\\?[a-zA-Z]))\}?""")
_SYMBOLS = {r"\ss": "ß", r"\o": "ø", r"\O": "Ø", r"\ae": "æ", r"\AE": "Æ", r"\aa": "å", r"\AA": "Å", r"\l": "ł", r"\L": "Ł", r"\i": "ı"}
_SYMBOL = re.compile(r"\{?(\\(?:ss|o|O|ae|AE|aa|AA|l|L|i))(?![a-zA-Z])\}?")
_FONT_ARG = re.compile(r"\\(?:emph|textit|textbf|textsc|texttt|textrm|textsf|textnormal|underline|mbox|text)\s*\{([^{}]*)\}")
_FONT_GROUP = re.compile(r"\{\\(?:em|it|bf|sc|tt|rm|sf|sl)\s+([^{}]*)\}")
_HREF = re.compile(r"\\href\s*\{[^{}]*\}\s*\{([^{}]*)\}")
_URL = re.compile(r"\\url\s*\{([^{}]*)\}")
_ESCAPED = re.compile(r"\\([%&_#${}])")
_MATH = re.compile(r"(?<!\\)(\$\$?)(?:\\.|[^$\\])+?(?<!\\)\1")


def _text_mode(part: str) -> str:
    part = _HREF.sub(r"\1", part)
    part = _URL.sub(r"\1", part)
    for _ in range(2):  # nested \emph{\textbf{x}}
        part = _FONT_ARG.sub(r"\1", part)
        part = _FONT_GROUP.sub(r"\1", part)
    part = _ACCENT.sub(_accent, part)
    part = _SYMBOL.sub(lambda m: _SYMBOLS[m.group(1)], part)
    part = _ESCAPED.sub(r"\1", part)
    part = part.replace("---", "\u2014").replace("--", "\u2013").replace("``", "\u201c").replace("''", "\u201d")
    part = re.sub(r"(?<!\\)~", " ", part).replace("\\\\", " ")
    return part


def _accent(match: re.Match[str]) -> str:
    letter = (match.group(2) or match.group(3)).lstrip("\\")
    letter = {"i": "i", "j": "j"}.get(letter, letter)
    return unicodedata.normalize("NFC", letter + _ACCENTS[match.group(1)])


def clean_latex(text: str | None) -> str:
    """`text` with simple LaTeX made readable and whitespace collapsed; math kept as written."""
    text = clean_text(text)
    if "\\" not in text and "~" not in text and "--" not in text and "``" not in text:
        return text
    pieces, last = [], 0
    for math in _MATH.finditer(text):
        pieces.append(_text_mode(text[last : math.start()]))
        pieces.append(math.group(0))
        last = math.end()
    pieces.append(_text_mode(text[last:]))
    return clean_text("".join(pieces))


def parse_datetime(value: object) -> dt.datetime:
    """An ISO 8601 or RFC 822 date or time as aware UTC; a date alone means midnight UTC."""
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            try:
                parsed = email.utils.parsedate_to_datetime(text)
            except (TypeError, ValueError):
                raise ValueError(f"{text[:40]!r} is not a date") from None
    else:
        raise ValueError(f"expected a date, not {value!r}"[:80])
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc)


@dataclass
class PaperRecord:
    """A paper as one reader saw it, before it meets the database."""

    title: str
    abstract: str = ""
    arxiv_id: str | None = None
    version: int | None = None
    authors: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    published: dt.datetime | None = None
    updated: dt.datetime | None = None
    url: str | None = None
    pdf_url: str | None = None
    popularity: float | None = None
    #: A new version of an older paper (arXiv's "replace"): it updates a known paper, and is
    #: not stored when the paper is unknown, since it is not new.
    update_only: bool = False

    def __post_init__(self) -> None:
        """Normalize: LaTeX and whitespace cleaned, sizes bounded, categories unique (primary first)."""
        self.title = clean_latex(self.title)
        if not self.title:
            raise ValueError("no title")
        if len(self.title) > MAX_TITLE:
            raise ValueError(f"a title of {len(self.title):,} characters")
        if len(self.abstract or "") > MAX_ABSTRACT:
            self.abstract = self.abstract[:MAX_ABSTRACT].rsplit(" ", 1)[0] + " …"
        self.abstract = clean_latex(self.abstract)
        self.authors = [a for a in (clean_latex(a) for a in self.authors[:MAX_AUTHORS]) if a and len(a) <= 300]
        self.categories = list(dict.fromkeys(c for c in (clean_text(c) for c in self.categories if c) if c and len(c) < 64))
        if self.arxiv_id:
            self.url = self.url or f"https://arxiv.org/abs/{self.arxiv_id}"
            self.pdf_url = self.pdf_url or f"https://arxiv.org/pdf/{self.arxiv_id}"

    @functools.cached_property
    def title_key(self) -> str:
        return title_key(self.title)

    @property
    def key(self) -> str:
        return f"arxiv:{self.arxiv_id}" if self.arxiv_id else f"title:{self.title_key}"


# --- what a read returns -------------------------------------------------------------------------


class SourceError(Exception):
    """The source as a whole cannot be read; the message says why."""


@dataclass
class ReadResult:
    format: str
    records: list[PaperRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: Things worth saying that are not errors ("the feed has no entries today").
    notes: list[str] = field(default_factory=list)
    #: Query parameters that fetch the next page of a paged source, or None on the last page.
    next_query: dict[str, str] | None = None
    #: Whether `next_query` replaces the query (OAI-PMH resumption) or updates it (arXiv API `start`).
    replace_query: bool = False

    def skip(self, where: str, why: str, warn: bool = True) -> None:
        message = f"{where}: {why}"
        if warn:
            log.warning("skipped %s", message)
        else:
            log.info("skipped %s", message)
        self.skipped.append(message)

    def add(self, where: str, make: Callable[..., PaperRecord], *args: object) -> None:
        """Add the record `make(*args)` builds, or skip the entry with the reason it could not be built."""
        try:
            self.records.append(make(*args))
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            self.skip(where, str(exc) or type(exc).__name__)


def decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(f"not UTF-8 text (byte {exc.start}); is it a feed at all?") from None


ATOM = "{http://www.w3.org/2005/Atom}"
OAI = "{http://www.openarchives.org/OAI/2.0/}"


# --- fields, in whatever format -------------------------------------------------------------------


def text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def optional_date(value: Any, where: str):
    """A date, or None (with a warning) when the value is there but is not a date."""
    if value in (None, ""):
        return None
    try:
        return parse_datetime(value)
    except ValueError as exc:
        log.warning("%s: date ignored: %s", where, exc)
        return None


def names(value: Any) -> list[str]:
    """Authors as a list of names, of {"name": ...} objects, or one "A, B and C" string."""
    if value is None:
        return []
    if isinstance(value, str):
        return split_names(value)
    if isinstance(value, list):
        result = []
        for entry in value:
            if isinstance(entry, str):
                result.append(entry)
            elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
                result.append(entry["name"])
            else:
                raise ValueError("an author is neither a name nor an object with a name")
        return result
    raise ValueError("authors are neither a list nor a string")


def split_names(value: str) -> list[str]:
    """"A, B and C" (or "A; B") as three names."""
    return [n.strip() for n in re.split(r",|;|\band\b", value) if n.strip()]


def words(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.replace(",", " ").split()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ValueError("categories are neither a list of names nor a string")
