"""The email as a reader meets it, judged in headless Chromium: every item's fields, buttons a
thumb can hit at 390 px, text contrast of at least 4.5:1 in light and dark, and a layout that holds
where a mail client drops the `<style>` block."""

from __future__ import annotations

import json
import re
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from lxml import html as lxml_html
from sqlmodel import select

from digest.config import load_config
from digest.ingest import ingest_source
from digest.mail.render import Renderer
from digest.mail.transports import OutboxTransport
from digest.models import Subscriber
from digest.profiles import sync_profiles
from digest.send.run import DigestSender

from .browser import CONTRAST_SCRIPT, Browser
from .conftest import Workdir
from .test_fidelity import paper_line

# Papers written for these tests: one day's listing, dated by its file name.
LISTING = [
    paper_line("2604.10001", "Routers That Abstain: Skipping Experts in Sparse Transformers",
               "Sparse mixture-of-experts models route every token to a fixed number of experts. This wastes compute on easy tokens. "
               "We propose AbstainMoE, a router that learns when to skip experts entirely. It saves 31% of expert compute at equal quality."),
    paper_line("2604.10002", "Cache Budgets for Long Context: A KV Cache That Forgets Gracefully",
               "Long prompts make the KV cache the bottleneck of inference. Existing eviction policies ignore future queries. "
               "In this paper, we introduce a KV cache eviction policy that predicts which keys later queries need. Memory drops 4x."),
    paper_line("2604.10003", "Draft Less, Accept More: Speculative Decoding with Adaptive Trees",
               "Speculative decoding drafts tokens with a small model. We present a draft tree whose shape adapts to acceptance rates, "
               "which raises accepted tokens per step from 2.9 to 4.1."),
]


def sent_email(workdir: Workdir, tmp_path: Path, base: str = "https://digest.example.net") -> tuple[str, str]:
    """Ada's email (HTML, text) made by a real send from the listing above."""
    listing = tmp_path / "2026-04-10.jsonl"
    listing.write_text("\n".join(LISTING) + "\n")
    settings = workdir.settings(DIGEST_BASE_URL=base)
    db = workdir.db()
    ingest_source(db, str(listing))
    sync_profiles(db, settings.profiles_dir)
    report = DigestSender(db, settings, load_config(settings.config_path), Renderer(settings.templates_dir), OutboxTransport(settings.outbox)).run(only="ada@example.org")
    assert report.count("sent") == 1
    [path] = workdir.outbox()
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    return message.get_body(("html",)).get_content(), message.get_body(("plain",)).get_content().replace("\r\n", "\n")


def test_every_item_shows_its_paper_and_its_tracked_links(workdir: Workdir, tmp_path: Path) -> None:
    html, text = sent_email(workdir, tmp_path)
    with workdir.db().session() as session:
        owner = session.exec(select(Subscriber.link_id).where(Subscriber.email == "ada@example.org")).one()

    def tracked(action: str) -> str:  # a link signed for ada (`links`: action, id, her link id, signature)
        return rf"https://digest\.example\.net/{action}/{action}[0-9a-z]+\.{owner}\.[\w-]+"

    tree = lxml_html.fromstring(html)
    items = tree.xpath("//td[contains(@class, 'item')]")
    assert len(items) == 3
    for item in items:
        title = item.xpath(".//a[contains(@class, 'title-link')]")[0]
        assert re.fullmatch(tracked("c"), title.get("href"))
        kicker = item.xpath(".//p[contains(@class, 'kicker')]")[0].text_content()
        assert re.search(r"#\d · arXiv:2604\.1000\d cs\.LG cs\.CL", " ".join(kicker.split()))
        assert [c.text_content() for c in item.xpath(".//span[contains(@class, 'chip')]")] == ["cs.LG", "cs.CL"]
        assert item.xpath(".//p[contains(@class, 'meta')]")[0].text_content() == "Ann Lee, Bo Chen · 10 Apr 2026 · arXiv"
        tldr = item.xpath(".//p[contains(@class, 'tldr')]")[0].text_content()
        assert tldr.startswith("TL;DR ") and re.search(r"\b(We propose|we introduce|We present)\b", tldr)
        assert item.xpath(".//p[contains(@class, 'reason')]")[0].text_content().startswith("Why: matches")
        buttons = {a.text_content(): a.get("href") for a in item.xpath(".//a[contains(@class, 'button')]")}
        assert list(buttons) == ["PDF", "More like this", "Less like this"]
        assert re.fullmatch(tracked("d"), buttons["PDF"])
        assert buttons["More like this"].endswith("?v=up") and buttons["Less like this"].endswith("?v=down")
    footer = {a.text_content(): a.get("href") for a in tree.xpath("//td[contains(@class, 'footer')]//a")}
    assert re.fullmatch(tracked("p"), footer["Preferences: interests, send time, pause"])
    assert "TL;DR: We propose AbstainMoE, a router that learns when to skip experts entirely." in text.replace("\n   ", " ")
    assert "arXiv:2604.10001 [cs.LG, cs.CL]" in text and "PDF: https://digest.example.net/d/" in text
    assert "Preferences (interests, send time, pause): https://digest.example.net/p/" in text
    assert "mixture-of-experts models route every token" not in html  # the TL;DR, not the abstract cut short


# --- in a browser ---------------------------------------------------------------------------------------

BOXES = """[...document.querySelectorAll('a.button')].map(a => { const r = a.getBoundingClientRect();
  return {text: a.textContent, item: a.closest('td').querySelector('.title-link').textContent, left: r.left, top: r.top, right: r.right, bottom: r.bottom}; })"""
OVERFLOW = "document.documentElement.scrollWidth - document.documentElement.clientWidth"


def gaps(boxes: list[dict]) -> list[float]:
    """The space between each pair of buttons of one item (0 where they touch or overlap)."""
    found = []
    for n, a in enumerate(boxes):
        for b in boxes[n + 1:]:
            if a["item"] != b["item"]:
                continue
            dx = max(b["left"] - a["right"], a["left"] - b["right"], 0)
            dy = max(b["top"] - a["bottom"], a["top"] - b["bottom"], 0)
            found.append(max(dx, dy))
    return found


def test_feedback_buttons_are_thumb_sized_and_apart_on_a_phone(workdir: Workdir, tmp_path: Path) -> None:
    html, _ = sent_email(workdir, tmp_path)
    with Browser() as browser:
        browser.viewport(390, 844)
        browser.show(html)
        assert browser.evaluate("document.documentElement.clientWidth") == 390
        assert browser.evaluate(OVERFLOW) <= 0  # no sideways scrolling
        boxes = browser.evaluate(BOXES)
    assert len(boxes) == 9
    for box in boxes:
        width, height = box["right"] - box["left"], box["bottom"] - box["top"]
        assert width >= 44 and height >= 44, box
        assert box["right"] <= 390
    assert min(gaps(boxes)) >= 8, gaps(boxes)
    report = {b["text"]: (round(b["right"] - b["left"], 1), round(b["bottom"] - b["top"], 1)) for b in boxes}
    print("tap targets at 390 px (width, height):", json.dumps(report), "smallest gap:", min(gaps(boxes)))


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_contrast_is_at_least_4_5_to_1(workdir: Workdir, tmp_path: Path, scheme: str) -> None:
    html, _ = sent_email(workdir, tmp_path)
    with Browser() as browser:
        browser.viewport(390, 844)
        browser.color_scheme(scheme)
        browser.show(html)
        assert browser.evaluate(f"matchMedia('(prefers-color-scheme: {scheme})').matches")
        found = browser.evaluate(CONTRAST_SCRIPT)
        body = browser.evaluate("getComputedStyle(document.querySelector('table.container')).backgroundColor")
    assert len(found) > 30
    low = [f for f in found if f["ratio"] < 4.5]
    assert not low, low[:5]
    assert body == ("rgb(255, 255, 255)" if scheme == "light" else "rgb(22, 27, 34)")  # the dark styles apply
    print(f"{scheme}: lowest contrast {min(f['ratio'] for f in found):.2f}:1 ({min(found, key=lambda f: f['ratio'])['cls']})")


def test_the_layout_holds_without_the_style_block(workdir: Workdir, tmp_path: Path) -> None:
    html, _ = sent_email(workdir, tmp_path)
    bare = re.sub(r"<style>.*?</style>", "", html, flags=re.S)
    assert "<style" not in bare and "@media" not in bare
    with Browser() as browser:
        browser.viewport(390, 844)
        browser.show(bare)
        phone = browser.evaluate(f"({{overflow: {OVERFLOW}, container: document.querySelector('table.container').getBoundingClientRect().width, "
                                 f"font: parseFloat(getComputedStyle(document.querySelector('p.tldr')).fontSize), boxes: {BOXES}}})")
        browser.viewport(1280, 900)
        browser.show(bare)
        desktop = browser.evaluate("document.querySelector('table.container').getBoundingClientRect().width")
        chips = browser.evaluate("getComputedStyle(document.querySelector('span.chip')).backgroundColor")
    assert phone["overflow"] <= 0 and phone["container"] <= 390 and phone["font"] >= 14
    assert all(b["right"] - b["left"] >= 44 and b["bottom"] - b["top"] >= 44 for b in phone["boxes"])
    assert min(gaps(phone["boxes"])) >= 8
    assert desktop == 600
    assert chips == "rgb(230, 238, 248)"  # inline styles carry the look as well
