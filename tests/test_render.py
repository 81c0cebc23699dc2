"""Rendering: escaped, CSS inlined, at most 600 px wide, readable on a phone; a text part too."""

from __future__ import annotations

import datetime as dt
import re

from lxml import html as lxml_html

from digest.mail.render import DigestView, ItemView, Renderer

from .browser import measure
from .conftest import ROOT

LONG_WORD = "Supercalifragilistic" * 6


def view(items: int = 3) -> DigestView:
    entries = [
        ItemView(
            rank=n,
            title=f"Paper {n}: sparse routing for experts" if n > 1 else "<script>alert('x')</script> & <b>bold</b> claims",
            click_url=f"http://127.0.0.1:8000/c/c{n}.sig",
            more_url=f"http://127.0.0.1:8000/f/f{n}.sig?v=up",
            less_url=f"http://127.0.0.1:8000/f/f{n}.sig?v=down",
            pdf_url=f"http://127.0.0.1:8000/d/d{n}.sig",
            byline="Ann Lee, Bo Chen et al. · 20 Nov 2026 · arXiv",
            arxiv_id=f"2611.0000{n}",
            categories=("cs.CL", "cs.LG") if n > 1 else ("cs.CL",),
            tldr="We route tokens to experts with a recurrent router, which halves the cost of routing " + LONG_WORD,
            reason="matches mixture of experts",
        )
        for n in range(1, items + 1)
    ]
    return DigestView(
        subscriber_email="ada@example.org", subscriber_name="Ada", local_date=dt.date(2026, 11, 22),
        interests=["mixture of experts", "routing"], items=entries,
        view_url="http://127.0.0.1:8000/v/v1.sig", unsubscribe_url="http://127.0.0.1:8000/u/u1.sig",
        preferences_url="http://127.0.0.1:8000/p/p1.sig",
    )


def test_a_title_holding_markup_arrives_as_text() -> None:
    rendered = Renderer(ROOT / "templates").render(view())
    assert "<script>" not in rendered.html and "<b>bold</b>" not in rendered.html
    tree = lxml_html.fromstring(rendered.html)
    titles = [a.text_content() for a in tree.xpath("//a[contains(@href, '/c/')]")]
    assert titles[0] == "<script>alert('x')</script> & <b>bold</b> claims"
    assert "<script>alert('x')</script> & <b>bold</b> claims" in rendered.text  # plain text is not escaped


def test_css_is_inlined_and_only_media_queries_stay_in_a_style_block() -> None:
    rendered = Renderer(ROOT / "templates").render(view())
    tree = lxml_html.fromstring(rendered.html)
    title_link = tree.xpath("//a[contains(@href, '/c/')]")[0]
    assert "color:#0b5cad" in title_link.get("style").replace(" ", "")
    container = tree.xpath("//table[contains(@class, 'container')]")[0]
    assert "max-width:600px" in container.get("style").replace(" ", "")
    styles = " ".join(s.text_content() for s in tree.xpath("//style"))
    assert "@media" in styles
    assert re.sub(r"@media[^{]*\{(?:[^{}]*\{[^{}]*\})*[^{}]*\}", "", styles).strip() == ""
    assert tree.xpath("//meta[@name='viewport']")


def test_every_item_carries_its_tracked_links_and_the_footer_its_own() -> None:
    rendered = Renderer(ROOT / "templates").render(view())
    tree = lxml_html.fromstring(rendered.html)
    hrefs = tree.xpath("//a/@href")
    for n in (1, 2, 3):
        assert f"http://127.0.0.1:8000/c/c{n}.sig" in hrefs
        assert f"http://127.0.0.1:8000/f/f{n}.sig?v=up" in hrefs and f"http://127.0.0.1:8000/f/f{n}.sig?v=down" in hrefs
    assert "http://127.0.0.1:8000/u/u1.sig" in hrefs and "http://127.0.0.1:8000/v/v1.sig" in hrefs
    for part in (rendered.text,):
        assert "http://127.0.0.1:8000/c/c2.sig" in part and "Unsubscribe: http://127.0.0.1:8000/u/u1.sig" in part
        assert "Why: matches mixture of experts" in part
    assert rendered.subject.startswith("3 new papers for 22 Nov:")


def test_a_single_item_reads_in_the_singular() -> None:
    rendered = Renderer(ROOT / "templates").render(view(items=1))
    assert "here is 1 new paper picked" in rendered.text
    assert rendered.subject.startswith("1 new paper for 22 Nov")


def test_the_email_fits_a_phone_and_is_at_most_600_px_on_a_desktop() -> None:
    page = Renderer(ROOT / "templates").render(view()).html
    script = """{
      scroll: doc.documentElement.scrollWidth,
      client: doc.documentElement.clientWidth,
      container: doc.querySelector("table.container").getBoundingClientRect().width,
      fontSize: parseFloat(getComputedStyle(doc.querySelector("p.tldr")).fontSize),
      titleRight: doc.querySelector("a.title-link").getBoundingClientRect().right
    }"""
    phone = measure(page, 360, script)
    assert phone["scroll"] <= phone["client"] == 360, phone  # no sideways scrolling on a phone
    assert phone["container"] <= 360 and phone["titleRight"] <= 360
    assert phone["fontSize"] >= 14
    desktop = measure(page, 1024, script)
    assert desktop["container"] == 600, desktop
