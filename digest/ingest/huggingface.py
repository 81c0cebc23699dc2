"""Hugging Face: the `api/daily_papers` JSON and the trending-papers page as plain text."""

from __future__ import annotations

import json
import re
from typing import Any

from .records import PaperRecord, ReadResult, SourceError, decode, names, number, optional_date, parse_arxiv_id, text

# --- api/daily_papers ----------------------------------------------------------------------------


def read_daily_papers(data: bytes) -> ReadResult:
    """A list of `{"paper": {...}, ...}` items (or of bare paper objects); `upvotes` is popularity."""
    result = ReadResult("hf-daily")
    try:
        items = json.loads(decode(data))
    except json.JSONDecodeError as exc:
        raise SourceError(f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(items, list):
        raise SourceError("JSON of the wrong shape: expected a list of daily papers")
    if not items:
        result.notes.append("the list of daily papers is empty")
    for number_, item in enumerate(items, start=1):
        where = f"item {number_}"
        if not isinstance(item, dict):
            result.skip(where, "not a JSON object")
            continue
        result.add(where, _daily_record, item, where)
    return result


def _daily_record(item: dict[str, Any], where: str) -> PaperRecord:
    paper = item.get("paper", item)
    if not isinstance(paper, dict):
        raise ValueError("`paper` is not an object")
    title = paper.get("title") or item.get("title")
    if not isinstance(title, str):
        raise ValueError("no title")
    abstract = paper.get("summary") or item.get("summary") or ""
    parsed = parse_arxiv_id(text(paper.get("id")))
    authors = paper.get("authors") or []
    return PaperRecord(
        title=title,
        abstract=abstract if isinstance(abstract, str) else "",
        arxiv_id=parsed[0] if parsed else None,
        version=parsed[1] if parsed else None,
        authors=names(authors),
        published=optional_date(paper.get("publishedAt") or item.get("publishedAt"), where),
        popularity=number(paper.get("upvotes")),
        url=None if parsed else text(paper.get("url")),
    )


# --- the trending-papers page --------------------------------------------------------------------

#: Lines of the page's header, which may be glued to the first title when the page has no blank lines.
_HEADER = (
    "Get trending papers in your email inbox once a day!",
    "Get trending papers in your email inbox!",
    "byAK and the research community",
    "Subscribe",
    "new",
)
_DAY = re.compile(r"^(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]* \d{1,2}$")
#: A line this long is an abstract, never a title.
TITLE_MAX = 400


def is_header_line(line: str) -> bool:
    """A line of the page's header (or the header glued to the first title)."""
    return line in _HEADER or bool(_DAY.match(line)) or any(line.startswith(h) for h in _HEADER[:4])


def read_trending(text_: str) -> ReadResult:
    """Title and abstract paragraphs after a short header, with or without blank lines between."""
    result = ReadResult("hf-trending")
    lines = [line.strip() for line in text_.splitlines() if line.strip()]
    start = 0
    while start < len(lines):
        line = lines[start]
        if line in _HEADER or _DAY.match(line):
            start += 1
            continue
        glued = next((h for h in _HEADER if line.startswith(h) and len(line) > len(h)), None)
        if glued:
            lines[start] = line[len(glued) :].strip()
        break
    index = start
    while index < len(lines):
        title = lines[index]
        where = f"paragraph {index + 1}"
        if len(title) > TITLE_MAX:
            result.skip(where, "an abstract without a title")
            index += 1
            continue
        abstract = lines[index + 1] if index + 1 < len(lines) else ""
        if len(abstract) <= TITLE_MAX and index + 2 < len(lines) and len(lines[index + 2]) > TITLE_MAX:
            # The next line starts another entry: this title came without an abstract.
            abstract = ""
            index += 1
        else:
            index += 2
        if not abstract:
            result.skip(where, f"no abstract for {title[:60]!r}")
            continue
        result.add(where, PaperRecord, title, abstract)
    if not result.records:
        raise SourceError("no title and abstract paragraphs: not a trending-papers page, nor any known format")
    return result
