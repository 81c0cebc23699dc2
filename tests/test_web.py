"""The web endpoints, served by a real uvicorn on loopback (`digest web` as a subprocess)."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import time
from email import message_from_bytes, policy
from urllib.parse import quote_plus, urlsplit

import httpx
import pytest
from lxml import html as lxml_html
from sqlmodel import select

from digest.config import load_config
from digest.delivery import OutboxTransport
from digest.ingest import ingest_source
from digest.models import FeedbackEvent, Paper, Subscriber
from digest.profiles import sync_profiles
from digest.render import Renderer
from digest.send import DigestSender
from digest.web import safe_url

from .browser import measure
from .conftest import Workdir, free_port


class Web:
    """`digest web` running in the work folder, and an HTTP client for it."""

    def __init__(self, workdir: Workdir) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        workdir.env["DIGEST_BASE_URL"] = self.base
        self.process: subprocess.Popen | None = None
        self.client = httpx.Client(follow_redirects=False, timeout=10)

    def start(self) -> "Web":
        import os

        self.process = subprocess.Popen(
            [sys.executable, "-m", "digest", "web"], cwd=self.workdir.path, env={**os.environ, **self.workdir.env},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.client.get(self.base + "/healthz").status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"digest web did not start: {self.process.stdout.read().decode()}")

    def stop(self) -> None:
        self.client.close()
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def send_today(workdir: Workdir) -> None:
    """Ingest the sample feed, sync the example profiles and send, in this process (it is quicker)."""
    settings = workdir.settings()
    db = workdir.db()
    ingest_source(db, "config/sample-feed.jsonl")
    sync_profiles(db, settings.profiles_dir)
    DigestSender(db, settings, load_config(settings.config_path), Renderer(settings.templates_dir), OutboxTransport(settings.outbox)).run()


@pytest.fixture
def web(workdir: Workdir):
    server = Web(workdir)
    send_today(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def links(workdir: Workdir, email: str = "ada@example.org") -> dict[str, list[str]]:
    """The tracked links of `email`'s message in the outbox, by kind."""
    path = next(p for p in workdir.outbox() if email.replace("@", "_") in p.name)
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    hrefs = lxml_html.fromstring(message.get_body(("html",)).get_content()).xpath("//a/@href")
    return {kind: [h for h in hrefs if f"/{kind}/" in h] for kind in "cdfuvp"}


def events(workdir: Workdir) -> list[FeedbackEvent]:
    with workdir.db().session() as session:
        return list(session.exec(select(FeedbackEvent).order_by(FeedbackEvent.id)))


def subscriber(workdir: Workdir, email: str) -> Subscriber:
    with workdir.db().session() as session:
        return session.exec(select(Subscriber).where(Subscriber.email == email)).one()


def test_a_click_is_recorded_and_redirects_to_the_paper(web: Web, workdir: Workdir) -> None:
    first = links(workdir)["c"][0]
    assert first.startswith(web.base + "/c/")
    response = web.client.get(first)
    assert response.status_code == 302
    with workdir.db().session() as session:
        paper = session.get(Paper, events(workdir)[0].paper_id)
    assert response.headers["location"] == paper.url
    web.client.get(first)
    recorded = events(workdir)
    assert [(e.kind, e.repeat) for e in recorded] == [("click", False), ("click", True)]
    assert recorded[0].digest_item_id is not None and recorded[0].created_at.tzinfo is not None


def test_head_records_nothing(web: Web, workdir: Workdir) -> None:
    found = links(workdir)
    assert web.client.head(found["c"][0]).status_code == 302
    assert web.client.head(found["f"][0]).status_code == 200
    assert web.client.head(found["v"][0]).status_code == 200
    assert events(workdir) == []


def test_forged_altered_and_truncated_tokens_answer_404_and_store_nothing(web: Web, workdir: Workdir) -> None:
    found = links(workdir)
    click = found["c"][0]
    token = click.rsplit("/", 1)[1]
    value, signature = token.split(".")
    forged = [
        f"{web.base}/c/{value}.{signature[:-2]}",  # truncated
        f"{web.base}/c/{value[:-1]}{'9' if value[-1] != '9' else '8'}.{signature}",  # another item, same signature
        f"{web.base}/c/c1.{'A' * len(signature)}",  # made up
        f"{web.base}/c/{value}",  # no signature
        f"{web.base}/u/{token}",  # a click token used to unsubscribe
        f"{web.base}/v/{token}",
        f"{web.base}/f/{token}?v=up",
    ]
    for url in forged:
        response = web.client.get(url)
        assert response.status_code == 404, url
        assert "does not work" in response.text
    assert web.client.post(f"{web.base}/u/{token}").status_code == 404
    assert events(workdir) == []
    assert subscriber(workdir, "ada@example.org").active


def test_open_redirects_fail(web: Web, workdir: Workdir) -> None:
    click = links(workdir)["c"][0]
    for attempt in (click + "?next=https://evil.example/", click + "?url=//evil.example", click.replace("/c/", "/c//evil.example/")):
        response = web.client.get(attempt)
        location = response.headers.get("location", "")
        assert "evil.example" not in location, attempt
        assert response.status_code in (302, 404)
        if response.status_code == 302:
            assert urlsplit(location).netloc == "example.org"
    # A stored URL that is not http(s) is never followed: the paper is looked up by its title instead.
    with workdir.db().transaction() as session:
        item_paper = session.get(Paper, events(workdir)[0].paper_id)
        item_paper.url, item_paper.pdf_url = "javascript:alert(1)", None
        session.add(item_paper)
    response = web.client.get(click)
    assert response.status_code == 302 and "javascript" not in response.headers["location"]
    assert response.headers["location"] == "https://huggingface.co/papers?q=" + quote_plus(item_paper.title)
    assert safe_url("https://arxiv.org/abs/1") and not safe_url("//evil.example") and not safe_url("data:text/html,x")


def test_thumbs_are_recorded_with_a_short_page(web: Web, workdir: Workdir) -> None:
    feedback = links(workdir)["f"]
    up, down = feedback[0], feedback[3]
    assert up.endswith("?v=up") and down.endswith("?v=down")
    assert "More like this" in web.client.get(up).text
    assert "Less like this" in web.client.get(down).text
    bad = web.client.get(up.replace("v=up", "v=sideways"))
    assert bad.status_code == 400
    assert [e.kind for e in events(workdir)] == ["up", "down"]


def test_the_digest_in_the_browser_is_the_email(web: Web, workdir: Workdir) -> None:
    found = links(workdir)
    response = web.client.get(found["v"][0])
    assert response.status_code == 200
    page = lxml_html.fromstring(response.text)
    assert page.xpath("//a[contains(@href, '/c/')]/@href") == found["c"]
    assert [e.kind for e in events(workdir)] == ["view"]
    assert response.headers["cache-control"] == "no-store"


def test_get_and_head_keep_the_subscription_post_ends_it_for_good(web: Web, workdir: Workdir) -> None:
    unsubscribe = links(workdir, "kenji@example.org")["u"][0]
    page = web.client.get(unsubscribe)
    assert page.status_code == 200
    form = lxml_html.fromstring(page.text).xpath("//form")[0]
    assert form.get("method") == "post" and form.xpath(".//button")
    web.client.head(unsubscribe)
    assert subscriber(workdir, "kenji@example.org").unsubscribed_at is None

    # RFC 8058: what a mail client sends for the List-Unsubscribe-Post header.
    done = web.client.post(unsubscribe, content="List-Unsubscribe=One-Click", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert done.status_code == 200 and "unsubscribed" in done.text
    gone = subscriber(workdir, "kenji@example.org")
    assert gone.unsubscribed_at is not None and not gone.active
    assert [e.kind for e in events(workdir)] == ["unsubscribe"]
    assert web.client.post(unsubscribe).status_code == 200  # twice is harmless

    sync = workdir.cli("profiles", "sync", check=True)
    assert "1 kept unsubscribed" in sync.stdout
    assert not subscriber(workdir, "kenji@example.org").active
    tomorrow = (dt.date.today() + dt.timedelta(days=2)).isoformat()
    before = {p.name for p in workdir.outbox()}
    workdir.cli("ingest", "config/sample-feed.jsonl", check=True)
    workdir.cli("send", "--date", tomorrow, check=True)
    new = {p.name for p in workdir.outbox()} - before
    assert not any("kenji" in name for name in new)


def test_health(web: Web) -> None:
    response = web.client.get(web.base + "/healthz")
    assert (response.status_code, response.text) == (200, "ok")


def test_the_unsubscribe_page_is_usable_on_a_phone(web: Web, workdir: Workdir) -> None:
    page = web.client.get(links(workdir)["u"][0]).text
    assert re.search(r'<html lang="en">', page)
    result = measure(page, 360, """{
      scroll: doc.documentElement.scrollWidth, client: doc.documentElement.clientWidth,
      button: doc.querySelector("form button").innerText,
      buttonHeight: doc.querySelector("form button").getBoundingClientRect().height,
      heading: doc.querySelector("h1").innerText
    }""")
    assert result["scroll"] <= result["client"]
    assert result["button"] == "Unsubscribe ada@example.org"
    assert result["buttonHeight"] >= 40  # a target a thumb can hit
    assert result["heading"].startswith("Unsubscribe")
