"""Readers: the bytes of one source in, normalized `PaperRecord`s out, the format told by the content.

| format | what | reader |
|---|---|---|
| `arxiv-api` | arXiv API Atom (`/api/query`), classic and current | `arxiv.read_feed` |
| `rss`, `atom` | arXiv RSS 2.0 and Atom listings (any RSS/Atom feed of papers) | `arxiv.read_feed` |
| `arxiv-oai` | arXiv OAI-PMH `ListRecords` (metadata `arXiv` or `oai_dc`) | `arxiv.read_oai_pmh` |
| `hf-daily` | Hugging Face `api/daily_papers` JSON | `huggingface.read_daily_papers` |
| `hf-trending` | the Hugging Face trending-papers page as text | `huggingface.read_trending` |
| `jsonl` | one paper a line | `jsonl.read_jsonl` |

A reader skips a malformed entry with a warning (counted in `ReadResult.skipped`) and raises
`SourceError` only when the source as a whole cannot be read, so that nothing of it is stored.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from lxml import etree

from .records import PaperRecord

log = logging.getLogger(__name__)


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


def detect_format(data: bytes) -> str:
    """The name of the format `data` is written in, judged from its content, not its name."""
    head = data.lstrip()[:2048]
    if not head:
        raise SourceError("the source is empty")
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:].lstrip()
    if head[:1] == b"<":
        return _xml_format(data)
    if head[:1] in (b"[", b"{"):
        return _json_format(data)
    return "hf-trending"


def _xml_format(data: bytes) -> str:
    try:
        for _, element in etree.iterparse(io.BytesIO(data), events=("start",), resolve_entities=False, no_network=True, recover=False):
            tag = element.tag if isinstance(element.tag, str) else ""
            break
        else:  # pragma: no cover - iterparse yields the root or raises
            tag = ""
    except etree.XMLSyntaxError as exc:
        if re.search(rb"<html|<!doctype html", data[:4096], re.I):
            raise SourceError(f"an HTML page where a feed was expected{_html_title(data)}") from None
        raise SourceError(f"not well-formed XML ({exc.msg})") from None
    local = tag.rsplit("}", 1)[-1].lower()
    if tag == f"{OAI}OAI-PMH":
        return "arxiv-oai"
    if tag == f"{ATOM}feed":
        return "arxiv-api" if b"opensearch" in data[:4096] else "atom"
    if local == "rss" or local == "rdf":
        return "rss"
    if local == "html":
        raise SourceError(f"an HTML page where a feed was expected{_html_title(data)}")
    raise SourceError(f"an XML document of an unknown kind (<{local}>)")


def _html_title(data: bytes) -> str:
    match = re.search(rb"<title[^>]*>(.*?)</title>", data[:20000], re.I | re.S)
    if not match:
        return ""
    title = " ".join(match.group(1).decode("utf-8", "replace").split())[:120]
    return f": {title!r}" if title else ""


def _json_format(data: bytes) -> str:
    text = decode(data)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        first = text.lstrip().split("\n", 1)[0]
        try:
            json.loads(first)
        except json.JSONDecodeError as exc:
            raise SourceError(f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return "jsonl"
    if isinstance(value, list):
        return "hf-daily"
    if isinstance(value, dict) and "title" in value:
        return "jsonl"  # one paper on one line
    if isinstance(value, dict):
        keys = ", ".join(list(value)[:5])
        raise SourceError(f"JSON of the wrong shape: an object with {keys or 'no keys'} where papers were expected")
    raise SourceError("JSON of the wrong shape: neither a list of papers nor one paper a line")


def read(data: bytes, location: str = "<source>") -> ReadResult:
    """Detect the format of `data` and read every paper in it."""
    from . import arxiv, huggingface, jsonl

    readers: dict[str, Callable[[bytes], ReadResult]] = {
        "arxiv-api": arxiv.read_feed,
        "rss": arxiv.read_feed,
        "atom": arxiv.read_feed,
        "arxiv-oai": arxiv.read_oai_pmh,
        "hf-daily": huggingface.read_daily_papers,
        "hf-trending": lambda d: huggingface.read_trending(decode(d)),
        "jsonl": lambda d: jsonl.read_jsonl(decode(d)),
    }
    fmt = detect_format(data)
    result = readers[fmt](data)
    result.format = result.format or fmt
    if not result.records and not result.skipped and not result.notes:
        result.notes.append("no papers in this source")
    return result
