"""The view of a digest: what an email shows of each of its papers, from the stored rows.

The send, the preview and the web's "view in browser" page all build the same `DigestView`
here, so that an email and its web copy cannot differ. What an item shows of its paper (byline,
arXiv id, chips, TL;DR) is worked out once per paper for all the digests it is in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from urllib.parse import urlsplit

from sqlmodel import col, select

from ..db import Database
from ..links import LinkMaker, safe_url
from ..models import Digest, DigestItem, Paper, Subscriber
from .render import DigestView, ItemView, author_line, byline
from .tldr import tldr

#: What a reader is told a paper came from, by the format it was ingested in (`Paper.source`).
#: Others read "arXiv" for an arXiv paper, else the host of the paper's page.
SOURCE_LABELS = {
    "hf-trending": "Hugging Face trending",
    "hf-daily": "Hugging Face daily papers",
    "arxiv-api": "arXiv",
    "arxiv-oai": "arXiv",
}


def source_label(paper: Paper) -> str:
    label = SOURCE_LABELS.get(paper.source)
    if label:
        return label
    if paper.arxiv_id:
        return "arXiv"
    host = urlsplit(paper.url or "").hostname or ""
    return host.removeprefix("www.")


def date_label(when: dt.datetime | None) -> str:
    """"10 Apr 2026"; nothing for a paper whose announcement is not known (never the day it was ingested)."""
    return f"{when.day} {when:%b %Y}" if when else ""


def load_items(db: Database, digest_id: int) -> tuple[list[DigestItem], list[Paper]]:
    with db.session() as session:
        rows = session.exec(
            select(DigestItem, Paper).join(Paper, col(Paper.id) == DigestItem.paper_id).where(DigestItem.digest_id == digest_id).order_by(DigestItem.rank)
        ).all()
    return [item for item, _ in rows], [paper for _, paper in rows]


def item_view(paper: Paper, rank: int, reason: str, click_url: str, more_url: str, less_url: str, pdf_url: str = "") -> ItemView:
    return ItemView(rank=rank, click_url=click_url, more_url=more_url, less_url=less_url, pdf_url=pdf_url, reason=reason, **paper_fields(paper))


_paper_field_cache: dict[tuple, dict] = {}
#: Category chips shown per item (the primary category first).
MAX_CHIPS = 4


def paper_fields(paper: Paper) -> dict:
    """What an item shows of its paper (byline, arXiv id, chips, TL;DR), worked out once per paper
    for all the digests it is in."""
    key = (paper.id, paper.version, paper.title, paper.abstract, paper.published, paper.source)
    fields = _paper_field_cache.get(key)
    if fields is None:
        if len(_paper_field_cache) > 50_000:
            _paper_field_cache.clear()
        fields = _paper_field_cache[key] = {
            "title": paper.title,
            "byline": byline(author_line(paper.authors), date_label(paper.published), source_label(paper)),
            "arxiv_id": paper.arxiv_id or "",
            "categories": tuple(paper.categories[:MAX_CHIPS]),
            "tldr": tldr(paper.abstract),
        }
    return fields


def digest_view(links: LinkMaker, digest: Digest, subscriber: Subscriber, items: Sequence[DigestItem], papers: Sequence[Paper]) -> DigestView:
    return DigestView(
        subscriber_email=subscriber.email,
        subscriber_name=subscriber.name,
        local_date=digest.local_date,
        interests=[i["phrase"] for i in subscriber.interests],
        items=[
            item_view(
                paper, item.rank, item.reason, links.click(item.id, subscriber.link_id), links.more(item.id, subscriber.link_id),
                links.less(item.id, subscriber.link_id), links.pdf(item.id, subscriber.link_id) if safe_url(paper.pdf_url) else "",
            )
            for item, paper in zip(items, papers)
        ],
        view_url=links.view(digest.id, subscriber.link_id),
        unsubscribe_url=links.unsubscribe(digest.id, subscriber.link_id),
        preferences_url=links.preferences(digest.subscriber_id, subscriber.link_id),
    )
