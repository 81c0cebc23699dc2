"""A digest rendered without sending: the stored one of that date, or the one a send would make."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ..links import paper_link, safe_url
from ..mail.render import DigestView, RenderedDigest
from ..mail.view import item_view, load_items
from ..models import DigestStatus, Subscriber
from .pool import Letter
from .run import DigestSender
from .select import is_paused, local_today


@dataclass
class Preview:
    """A digest rendered without sending: the stored one of that date, or the one a send would make."""

    local_date: dt.date
    view: DigestView | None
    rendered: RenderedDigest | None
    reason: str = ""


def preview_digest(sender: DigestSender, subscriber: Subscriber, date: dt.date | None = None) -> Preview:
    """Render `subscriber`'s digest for `date`; nothing is stored and links go straight to the papers
    unless the digest exists already (then it is shown as it was sent, tracked links included)."""
    selector = sender.selector(sender.clock())
    day = date or local_today(subscriber, selector.now)
    if is_paused(subscriber, day):
        return Preview(day, None, None, f"digests are paused until {subscriber.paused_until}")
    plan = selector.plan([subscriber], date)[0]
    renderer = sender.messages.renderer
    if plan.existing is not None:
        if plan.existing.status == DigestStatus.EMPTY:
            return Preview(plan.local_date, None, None, plan.existing.reason or "empty")
        items, papers = load_items(sender.db, plan.existing.id)
        view = sender.messages.view(Letter.of(plan.existing, subscriber, items), papers)
        return Preview(plan.local_date, view, renderer.render(view))
    [selection] = selector.select([plan])
    if not selection.ranked:
        return Preview(plan.local_date, None, None, selection.empty_reason)
    view = DigestView(
        subscriber_email=subscriber.email,
        subscriber_name=subscriber.name,
        local_date=plan.local_date,
        interests=[i["phrase"] for i in subscriber.interests],
        items=[
            item_view(paper, rank, ranked.reason, paper_link(paper), "#preview", "#preview", safe_url(paper.pdf_url) or "")
            for rank, (ranked, paper) in enumerate(zip(selection.ranked, selection.papers), start=1)
        ],
        view_url="#preview",
        unsubscribe_url="#preview",
        preferences_url="#preview",
    )
    return Preview(plan.local_date, view, renderer.render(view))
