"""JSONL: one paper a line, with keys `id`, `title`, `abstract` or `summary`, `authors`,
`categories`, `published`, `url` or `abs` (and optionally `pdf`, `updated`, `upvotes`).

A line without `published` is dated by the listing it came in (`listed`: the day's file of a
daily listing), where that is known, and is left undated otherwise."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from typing import Any

from .readers import ReadResult
from .records import PaperRecord, parse_arxiv_id, parse_datetime

log = logging.getLogger(__name__)


def read_jsonl(text: str, listed: dt.date | None = None) -> ReadResult:
    result = ReadResult("jsonl")
    announced = dt.datetime(listed.year, listed.month, listed.day, tzinfo=dt.timezone.utc) if listed else None
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
        result.add(where, _record, item, where, announced)
    return result


def _record(item: dict[str, Any], where: str, announced: dt.datetime | None = None) -> PaperRecord:
    title = item.get("title")
    if not isinstance(title, str):
        raise ValueError("no title")
    abstract = item.get("abstract", item.get("summary")) or ""
    if not isinstance(abstract, str):
        raise ValueError("the abstract is not text")
    url = text(item.get("url") or item.get("abs"))
    parsed = parse_arxiv_id(text(item.get("id"))) or parse_arxiv_id(url)
    return PaperRecord(
        title=title,
        abstract=abstract,
        arxiv_id=parsed[0] if parsed else None,
        version=parsed[1] if parsed else None,
        authors=names(item.get("authors")),
        categories=words(item.get("categories")),
        published=optional_date(item.get("published"), where) or announced,
        updated=optional_date(item.get("updated"), where),
        url=url,
        pdf_url=text(item.get("pdf")),
        popularity=number(item.get("upvotes", item.get("popularity"))),
    )


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
