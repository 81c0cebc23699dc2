"""Readers: bytes of one source in, normalized `PaperRecord`s out, the format found from the content.

Each reader skips a malformed entry with a warning (counted in `ReadResult.skipped`) and raises
`SourceError` only when the source as a whole cannot be read, so that nothing of it is stored.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .records import PaperRecord, parse_arxiv_id

log = logging.getLogger(__name__)


class SourceError(Exception):
    """The source as a whole cannot be read; the message says why."""


@dataclass
class ReadResult:
    format: str
    records: list[PaperRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def skip(self, where: str, why: str) -> None:
        message = f"{where}: {why}"
        log.warning("skipped %s", message)
        self.skipped.append(message)


def decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(f"not UTF-8 text (byte {exc.start})") from None


def detect_format(text: str) -> str:
    """The name of the format `text` is written in, judged from its content."""
    head = text.lstrip()[:4096]
    if not head:
        raise SourceError("the source is empty")
    if head.startswith("{"):
        return "jsonl"
    if head.startswith("<"):
        raise SourceError("an XML or HTML document, and no reader for it is installed yet")
    if head.startswith("["):
        raise SourceError("a JSON array, and no reader for it is installed yet")
    return "hf-trending"


def read(data: bytes, location: str = "<source>") -> ReadResult:
    """Detect the format of `data` and read every paper in it."""
    text = decode(data)
    fmt = detect_format(text)
    result = READERS[fmt](text)
    if not result.records and not result.skipped:
        raise SourceError(f"no papers found in this {fmt} source")
    return result


# --- JSONL: one paper a line -------------------------------------------------------------------


def read_jsonl(text: str) -> ReadResult:
    """Keys `id`, `title`, `abstract` or `summary`, `authors`, `categories`, `published`, `url` or `abs`."""
    result = ReadResult("jsonl")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            result.skip(where, f"not valid JSON ({exc.msg})")
            continue
        if not isinstance(item, dict):
            result.skip(where, "not a JSON object")
            continue
        try:
            record = _jsonl_record(item, result, where)
        except (TypeError, ValueError) as exc:
            result.skip(where, str(exc))
            continue
        result.records.append(record)
    return result


def _jsonl_record(item: dict[str, Any], result: ReadResult, where: str) -> PaperRecord:
    title = item.get("title")
    if not isinstance(title, str) or not title.strip():
        raise ValueError("no title")
    abstract = item.get("abstract", item.get("summary")) or ""
    if not isinstance(abstract, str):
        raise ValueError("the abstract is not text")
    url = _text(item.get("url") or item.get("abs"))
    parsed = parse_arxiv_id(_text(item.get("id"))) or parse_arxiv_id(url)
    published = None
    if item.get("published"):
        try:
            published = parse_datetime(item["published"])
        except ValueError as exc:
            log.warning("%s: published date ignored: %s", where, exc)
    return PaperRecord(
        title=title,
        abstract=abstract,
        arxiv_id=parsed[0] if parsed else None,
        version=parsed[1] if parsed else None,
        authors=_names(item.get("authors")),
        categories=_words(item.get("categories")),
        published=published,
        url=url,
        pdf_url=_text(item.get("pdf")),
        popularity=_number(item.get("upvotes", item.get("popularity"))),
    )


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _names(value: Any) -> list[str]:
    """Authors as a list of names, of {"name": ...} objects, or one "A, B and C" string."""
    if value is None:
        return []
    if isinstance(value, str):
        return [n for n in re.split(r",|;|\band\b", value) if n.strip()]
    if isinstance(value, list):
        names = []
        for entry in value:
            if isinstance(entry, str):
                names.append(entry)
            elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
                names.append(entry["name"])
            else:
                raise ValueError("an author is neither a name nor an object with a name")
        return names
    raise ValueError("authors are neither a list nor a string")


def _words(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.replace(",", " ").split()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ValueError("categories are neither a list of names nor a string")


def parse_datetime(value: Any) -> dt.datetime:
    """An ISO date or time as aware UTC; a date alone means midnight UTC."""
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO date, not {value!r}")
    text = value.strip()
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO date") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc)


# --- Hugging Face "trending papers" text page ---------------------------------------------------

#: Lines of the page's header, which may be glued to the first title when the page has no blank lines.
_HF_HEADER = (
    "Get trending papers in your email inbox once a day!",
    "Get trending papers in your email inbox!",
    "byAK and the research community",
    "Subscribe",
    "new",
)
_HF_DAY = re.compile(r"^(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]* \d{1,2}$")
#: A line this long is an abstract, never a title.
_TITLE_MAX = 400


def read_hf_trending(text: str) -> ReadResult:
    """Title and abstract paragraphs after a short header, with or without blank lines between."""
    result = ReadResult("hf-trending")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    start = 0
    while start < len(lines):
        line = lines[start]
        if line in _HF_HEADER or _HF_DAY.match(line):
            start += 1
            continue
        glued = next((h for h in _HF_HEADER if line.startswith(h) and len(line) > len(h)), None)
        if glued:
            lines[start] = line[len(glued):].strip()
        break
    index = start
    while index < len(lines):
        title = lines[index]
        where = f"paragraph {index + 1}"
        if len(title) > _TITLE_MAX:
            result.skip(where, "an abstract without a title")
            index += 1
            continue
        abstract = lines[index + 1] if index + 1 < len(lines) else ""
        if len(abstract) <= _TITLE_MAX and _looks_like_title_then_abstract(lines, index + 1):
            # The next line starts another entry: this title came without an abstract.
            abstract = ""
            index += 1
        else:
            index += 2
        if not abstract:
            result.skip(where, f"no abstract for {title[:60]!r}")
            continue
        result.records.append(PaperRecord(title=title, abstract=abstract))
    return result


def _looks_like_title_then_abstract(lines: list[str], index: int) -> bool:
    return index + 1 < len(lines) and len(lines[index + 1]) > _TITLE_MAX


READERS: dict[str, Callable[[str], ReadResult]] = {
    "jsonl": read_jsonl,
    "hf-trending": read_hf_trending,
}
