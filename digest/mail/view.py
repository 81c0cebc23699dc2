"""The view of a digest: what an email shows of each of its papers, from the stored rows.

The send, the preview and the web's "view in browser" page all build the same `DigestView`
here, so that an email and its web copy cannot differ. What an item shows of its paper (byline,
arXiv id, chips, TL;DR) is worked out once per paper for all the digests of a run (`PaperViews`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from urllib.parse import urlsplit

from sqlmodel import col, select

from ..db import Database
from ..links import LinkMaker, safe_url
from ..models import Digest, DigestItem, Paper, Subscriber
from ..tldr import tldr
from .render import DigestView, ItemView, author_line, byline

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


#: Category chips shown per item (the primary category first).
MAX_CHIPS = 4


def paper_fields(paper: Paper) -> dict:
    """What an item shows of its paper: byline (authors, date, source), arXiv id, chips, TL;DR."""
    return {
        "title": paper.title,
        "byline": byline(author_line(paper.authors), date_label(paper.published), source_label(paper)),
        "arxiv_id": paper.arxiv_id or "",
        "categories": tuple(paper.categories[:MAX_CHIPS]),
        "tldr": paper.tldr if paper.tldr is not None else tldr(paper.abstract),
    }


class PaperViews:
    """`paper_fields` of each paper worked out once for a run and shared by all the digests it is
    in (the same for every subscriber of the day), and whether it has a PDF link to offer. The
    TL;DR is stored at ingest; a paper stored before that has it worked out here (some 0.4 ms).

    Made per run, by whoever makes the run's messages, and dropped with it: within a run a paper
    does not change, so its id is its key.
    """

    def __init__(self) -> None:
        self._shown: dict[int, tuple[dict, bool]] = {}

    def shown(self, paper: Paper) -> tuple[dict, bool]:
        """The paper's `paper_fields`, and whether its PDF URL may be linked (`safe_url`)."""
        shown = self._shown.get(paper.id)
        if shown is None:
            shown = (paper_fields(paper), bool(safe_url(paper.pdf_url)))
            if paper.id is not None:
                self._shown[paper.id] = shown
        return shown

    def fields(self, paper: Paper) -> dict:
        return self.shown(paper)[0]


def digest_view(links: LinkMaker, digest: Digest, subscriber: Subscriber, items: Sequence[DigestItem], papers: Sequence[Paper],
                shown: PaperViews | None = None) -> DigestView:
    """What the email of `digest` shows; `shown`: the run's `PaperViews` (else one for this digest)."""
    shown = shown if shown is not None else PaperViews()
    owner = subscriber.link_id
    views = []
    for item, paper in zip(items, papers):
        fields, has_pdf = shown.shown(paper)
        item_id = item.id
        more, less = links.more_and_less(item_id, owner)
        views.append(ItemView(rank=item.rank, click_url=links.click(item_id, owner), more_url=more, less_url=less,
                              pdf_url=links.pdf(item_id, owner) if has_pdf else "", reason=item.reason, **fields))
    return DigestView(
        subscriber_email=subscriber.email,
        subscriber_name=subscriber.name,
        local_date=digest.local_date,
        interests=[i["phrase"] for i in subscriber.interests],
        items=views,
        view_url=links.view(digest.id, owner),
        unsubscribe_url=links.unsubscribe(digest.id, owner),
        preferences_url=links.preferences(digest.subscriber_id, owner),
    )
