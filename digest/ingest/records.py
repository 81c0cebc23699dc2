"""The one normalized paper every reader produces, and the identity rules for papers.

A paper's identity is its arXiv id without version where known, else its normalized title.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass, field

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
    text = unicodedata.normalize("NFKD", title)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    words = re.findall(r"[a-z0-9]+", text)
    return " ".join(words)[:512]


_SPACE = re.compile(r"\s+")


def clean_text(text: str | None) -> str:
    """Whitespace collapsed to single spaces; None becomes the empty string."""
    if not text:
        return ""
    return _SPACE.sub(" ", text).strip()


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

    def __post_init__(self) -> None:
        self.title = clean_text(self.title)
        self.abstract = clean_text(self.abstract)
        self.authors = [a for a in (clean_text(a) for a in self.authors) if a]
        self.categories = list(dict.fromkeys(c.strip() for c in self.categories if c and c.strip()))
        if self.arxiv_id:
            self.url = self.url or f"https://arxiv.org/abs/{self.arxiv_id}"
            self.pdf_url = self.pdf_url or f"https://arxiv.org/pdf/{self.arxiv_id}"

    @property
    def title_key(self) -> str:
        return title_key(self.title)

    @property
    def key(self) -> str:
        return f"arxiv:{self.arxiv_id}" if self.arxiv_id else f"title:{self.title_key}"
