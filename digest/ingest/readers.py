"""Readers: the bytes of one source in, normalized `PaperRecord`s out, the format told by the content.

| format | what | reader |
|---|---|---|
| `arxiv-api` | arXiv API Atom (`/api/query`), classic and current | `arxiv.read_feed` |
| `rss`, `atom` | arXiv RSS 2.0 and Atom listings (any RSS/Atom feed of papers) | `arxiv.read_feed` |
| `arxiv-oai` | arXiv OAI-PMH `ListRecords` (metadata `arXiv` or `oai_dc`) | `arxiv.read_oai_pmh` |
| `hf-daily` | Hugging Face `api/daily_papers` JSON | `huggingface.read_daily_papers` |
| `hf-trending` | the Hugging Face trending-papers page as text | `huggingface.read_trending` |
| `jsonl` | one paper a line | `jsonl.read_jsonl` |

Text that is none of these (Markdown, a README, an error message) is refused as a whole: read as
a trending page, its lines would become "papers".

A reader skips a malformed entry with a warning (counted in `ReadResult.skipped`) and raises
`SourceError` only when the source as a whole cannot be read, so that nothing of it is stored.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from collections.abc import Callable
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from lxml import etree

from . import arxiv, huggingface, jsonl
from .records import ATOM, OAI, ReadResult, SourceError, decode


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
    return _text_format(data)


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


#: Lines that mark Markdown (a heading, a table row, a code fence, front matter) where a trending
#: page has only titles and abstracts.
_MARKDOWN = re.compile(r"^(?:#{1,6}\s|\|.*\|$|```|~~~|---$)")
KNOWN_FORMATS = (
    "arXiv API, RSS, Atom or OAI-PMH XML, Hugging Face daily-papers JSON, JSONL (one paper a line), "
    "or a Hugging Face trending-papers page saved as text"
)


def _text_format(data: bytes) -> str:
    """`hf-trending` when the text is title / abstract paragraphs (abstracts are long lines); any
    other text is refused, so a Markdown file or a README is never read as papers."""
    from .huggingface import TITLE_MAX, is_header_line

    text = decode(data)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for number, line in enumerate(lines[:200], start=1):
        if _MARKDOWN.match(line):
            raise SourceError(f"not a known format: this looks like Markdown (line {number}: {line[:60]!r}); ingest reads {KNOWN_FORMATS}")
    body = [line for line in lines if not is_header_line(line)]
    abstracts = sum(1 for line in body if len(line) > TITLE_MAX)
    if not abstracts or 3 * abstracts < len(body):
        raise SourceError(
            f"not a trending-papers page (no title and abstract paragraphs), nor any known format "
            f"(first line: {lines[0][:60]!r}); ingest reads {KNOWN_FORMATS}"
        )
    return "hf-trending"


_FILE_DATE = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)")


def date_in_name(location: str) -> dt.date | None:
    """The YYYY-MM-DD in the file name of `location` (a path or URL), as in `2026-04-10.jsonl`."""
    name = PurePosixPath(urlsplit(location).path if "://" in location else location.replace("\\", "/")).name
    match = _FILE_DATE.search(name)
    if not match:
        return None
    try:
        return dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def read(data: bytes, location: str = "<source>", listed: dt.date | None = None) -> ReadResult:
    """Detect the format of `data` and read every paper in it.

    `listed` is the announcement date of a listing whose entries carry none (a JSONL file of one
    day's papers); by default the date in the file name, as in `2026-04-10.jsonl`. It is never
    the day of the ingest: no date is better than a wrong one."""
    readers: dict[str, Callable[[bytes], ReadResult]] = {
        "arxiv-api": arxiv.read_feed,
        "rss": arxiv.read_feed,
        "atom": arxiv.read_feed,
        "arxiv-oai": arxiv.read_oai_pmh,
        "hf-daily": huggingface.read_daily_papers,
        "hf-trending": lambda d: huggingface.read_trending(decode(d)),
        "jsonl": lambda d: jsonl.read_jsonl(decode(d), listed or date_in_name(location)),
    }
    fmt = detect_format(data)
    result = readers[fmt](data)
    result.format = result.format or fmt
    if not result.records and not result.skipped and not result.notes:
        result.notes.append("no papers in this source")
    return result
