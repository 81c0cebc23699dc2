"""JSONL: one paper a line, with keys `id`, `title`, `abstract` or `summary`, `authors`,
`categories`, `published`, `url` or `abs` (and optionally `pdf`, `updated`, `upvotes`).

A line without `published` is dated by the listing it came in (`listed`: the day's file of a
daily listing), where that is known, and is left undated otherwise."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from .records import PaperRecord, ReadResult, names, number, optional_date, parse_arxiv_id, text, words


def read_jsonl(source: str, listed: dt.date | None = None) -> ReadResult:
    result = ReadResult("jsonl")
    announced = dt.datetime(listed.year, listed.month, listed.day, tzinfo=dt.timezone.utc) if listed else None
    for line_number, line in enumerate(source.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {line_number}"
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
