"""arXiv: the API's Atom, the RSS 2.0 and Atom listings (feedparser), and OAI-PMH (lxml).

In the listings, `arxiv:announce_type` says what an entry is: `new` and `cross` are papers new
to the reader; `replace` and `replace-cross` are new versions of older papers, which update a
paper already known and are never "new".
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import feedparser
from lxml import etree
from lxml import html as lxml_html

from .records import OAI, PaperRecord, ReadResult, SourceError, parse_arxiv_id, parse_datetime, split_names

#: Errors feedparser reports that leave the document fully read.
_BENIGN = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)
_ANNOUNCE = re.compile(r"^\s*arXiv:\S+\s+Announce Type:\s*[\w-]+\s*(?:Abstract:\s*)?", re.I)
NEW_TYPES = {"new", "cross"}
UPDATE_TYPES = {"replace", "replace-cross"}


def read_feed(data: bytes) -> ReadResult:
    """An RSS 2.0 or Atom feed: the arXiv API's answer or an arXiv listing."""
    parsed = feedparser.parse(data, sanitize_html=False, resolve_relative_uris=False)
    if parsed.bozo and not isinstance(parsed.bozo_exception, _BENIGN):
        raise SourceError(f"not a well-formed feed ({_first_line(parsed.bozo_exception)})")
    feed = parsed.feed
    api = "opensearch_totalresults" in feed
    result = ReadResult("arxiv-api" if api else ("rss" if parsed.version.startswith("rss") else "atom"))
    entries = parsed.entries
    if api and len(entries) == 1 and "api/errors" in entries[0].get("id", ""):
        raise SourceError(f"the arXiv API answered with an error: {_clean(entries[0].get('summary', ''))}")
    if not entries:
        result.notes.append("the feed has no entries")
    for number, entry in enumerate(entries, start=1):
        where = f"entry {number}"
        announce = (entry.get("arxiv_announce_type") or "").strip().lower()
        if announce and announce not in NEW_TYPES | UPDATE_TYPES:
            result.skip(where, f"unknown announce type {announce!r}")
            continue
        result.add(where, _feed_record, entry, announce)
    if api:
        result.next_query = _next_api_page(feed, len(entries))
    return result


def _feed_record(entry: Any, announce: str) -> PaperRecord:
    ids = [entry.get("id"), entry.get("link")] + [link.get("href") for link in entry.get("links", [])]
    arxiv = next((p for p in map(parse_arxiv_id, ids) if p), None)
    summary = entry.get("summary", "")
    if entry.get("summary_detail", {}).get("type") == "text/html" and "<" in summary:
        summary = lxml_html.fromstring(f"<div>{summary}</div>").text_content()
    summary = _ANNOUNCE.sub("", summary)
    authors: list[str] = []
    for author in entry.get("authors", []) or []:
        name = author.get("name", "")
        # arXiv listings put all authors in one dc:creator, comma-separated.
        authors.extend(split_names(name) if "," in name or " and " in name else [name])
    primary = (entry.get("arxiv_primary_category") or {}).get("term")
    categories = [primary] if primary else []
    categories += [t.get("term") for t in entry.get("tags", []) or [] if t.get("term")]
    pdf = next((link.get("href") for link in entry.get("links", []) if link.get("type") == "application/pdf" or link.get("title") == "pdf"), None)
    published = _date(entry, "published")
    updated = _date(entry, "updated")
    if announce:
        # A listing's date is the announcement: the paper's publication only for a first version.
        updated = published
        if announce != "new":
            published = None
    return PaperRecord(
        title=entry.get("title", ""),
        abstract=summary,
        arxiv_id=arxiv[0] if arxiv else None,
        version=arxiv[1] if arxiv else None,
        authors=authors,
        categories=categories,
        published=published,
        updated=updated,
        url=None if arxiv else entry.get("link"),
        pdf_url=None if arxiv else pdf,
        update_only=announce in UPDATE_TYPES,
    )


def _date(entry: Any, key: str) -> dt.datetime | None:
    # dict.get: feedparser would answer "updated" with "published" when a feed has no update time.
    value = dict.get(entry, key)
    if not value:
        return None
    try:
        return parse_datetime(value)
    except ValueError:
        parsed = dict.get(entry, f"{key}_parsed")
        return dt.datetime(*parsed[:6], tzinfo=dt.timezone.utc) if parsed else None


def _next_api_page(feed: Any, count: int) -> dict[str, str] | None:
    try:
        total = int(feed.get("opensearch_totalresults", 0))
        start = int(feed.get("opensearch_startindex", 0))
    except (TypeError, ValueError):
        return None
    following = start + count
    return {"start": str(following)} if count and following < total else None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__


def _clean(value: str) -> str:
    return " ".join(value.split())[:200]


# --- OAI-PMH -------------------------------------------------------------------------------------

ARXIV_OAI = "{http://arxiv.org/OAI/arXiv/}"
OAI_DC = "{http://www.openarchives.org/OAI/2.0/oai_dc/}"
DC = "{http://purl.org/dc/elements/1.1/}"


def read_oai_pmh(data: bytes) -> ReadResult:
    """One page of `ListRecords` (metadataPrefix `arXiv` or `oai_dc`); `next_query` resumes."""
    result = ReadResult("arxiv-oai")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise SourceError(f"not well-formed XML ({exc.msg})") from None
    for error in root.iter(f"{OAI}error"):
        code = error.get("code", "")
        if code == "noRecordsMatch":
            result.notes.append("no records match this request")
            return result
        raise SourceError(f"the OAI-PMH server answered {code}: {_clean(error.text or '')}")
    records = root.findall(f"{OAI}ListRecords/{OAI}record")
    if root.find(f"{OAI}ListRecords") is None:
        raise SourceError("an OAI-PMH answer without ListRecords")
    for number, record in enumerate(records, start=1):
        where = f"record {number}"
        header = record.find(f"{OAI}header")
        if header is not None and header.get("status") == "deleted":
            result.skip(where, "deleted from the archive", warn=False)
            continue
        metadata = record.find(f"{OAI}metadata")
        arxiv = metadata.find(f"{ARXIV_OAI}arXiv") if metadata is not None else None
        dc = metadata.find(f"{OAI_DC}dc") if metadata is not None else None
        if arxiv is not None:
            result.add(where, _arxiv_record, arxiv, header)
        elif dc is not None:
            result.add(where, _dc_record, dc, header)
        else:
            result.skip(where, "no arXiv or Dublin Core metadata")
    token = root.find(f"{OAI}ListRecords/{OAI}resumptionToken")
    if token is not None and (token.text or "").strip():
        result.next_query = {"verb": "ListRecords", "resumptionToken": token.text.strip()}
        result.replace_query = True
    return result


def _text(element: Any, path: str) -> str:
    found = element.find(path)
    return found.text or "" if found is not None else ""


def _arxiv_record(meta: Any, header: Any) -> PaperRecord:
    ns = ARXIV_OAI
    identifier = _text(meta, f"{ns}id") or (_text(header, f"{OAI}identifier") if header is not None else "")
    parsed = parse_arxiv_id(identifier)
    authors = []
    for author in meta.iterfind(f"{ns}authors/{ns}author"):
        parts = [_text(author, f"{ns}forenames"), _text(author, f"{ns}keyname"), _text(author, f"{ns}suffix")]
        authors.append(" ".join(p.strip() for p in parts if p.strip()))
    created = _text(meta, f"{ns}created")
    updated = _text(meta, f"{ns}updated")
    return PaperRecord(
        title=_text(meta, f"{ns}title"),
        abstract=_text(meta, f"{ns}abstract"),
        arxiv_id=parsed[0] if parsed else None,
        authors=authors,
        categories=_text(meta, f"{ns}categories").split(),
        published=parse_datetime(created) if created else None,
        updated=parse_datetime(updated) if updated else None,
    )


def _dc_record(meta: Any, header: Any) -> PaperRecord:
    identifiers = [e.text for e in meta.iterfind(f"{DC}identifier")]
    if header is not None:
        identifiers.append(_text(header, f"{OAI}identifier"))
    parsed = next((p for p in map(parse_arxiv_id, identifiers) if p), None)
    dates = sorted(e.text.strip() for e in meta.iterfind(f"{DC}date") if e.text)
    authors = []
    for creator in meta.iterfind(f"{DC}creator"):
        name = (creator.text or "").strip()
        # Dublin Core writes "Keyname, Forenames".
        if name.count(",") == 1:
            last, first = (p.strip() for p in name.split(","))
            name = f"{first} {last}"
        authors.append(name)
    return PaperRecord(
        title=_text(meta, f"{DC}title"),
        abstract=_text(meta, f"{DC}description"),
        arxiv_id=parsed[0] if parsed else None,
        version=parsed[1] if parsed else None,
        authors=authors,
        published=parse_datetime(dates[0]) if dates else None,
        updated=parse_datetime(dates[-1]) if len(dates) > 1 else None,
    )

