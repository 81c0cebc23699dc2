"""The PDF link, what `digest web` and `digest serve` say when they start, and the pages' contrast
in light and dark."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlmodel import col, select

from digest.links import LinkMaker, LinkSigner
from digest.models import Digest, DigestItem, FeedbackEvent, Paper

from .browser import CONTRAST_SCRIPT, Browser
from .conftest import TEST_KEY, Web, Workdir, free_port
from .test_email_page import sent_email
from .test_web import events, first_format, links, subscriber


def test_the_pdf_link_records_a_click_and_redirects_to_the_stored_pdf(workdir: Workdir, tmp_path: Path) -> None:
    server = Web(workdir)
    sent_email(workdir, tmp_path, server.base)  # three arXiv papers, each with its PDF
    server.start()
    try:
        check_pdf_link(server, workdir)
    finally:
        server.stop()


def check_pdf_link(web: Web, workdir: Workdir) -> None:
    found = links(workdir)
    assert len(found["d"]) == len(found["c"]) == 3
    assert web.client.head(found["d"][0]).status_code == 302
    with workdir.db().session() as session:
        assert session.exec(select(FeedbackEvent)).first() is None  # HEAD records nothing
    response = web.client.get(found["d"][0] + "?to=https://evil.example/")
    assert response.status_code == 302
    with workdir.db().session() as session:
        [event] = session.exec(select(FeedbackEvent)).all()
        paper = session.get(Paper, event.paper_id)
    assert event.kind == "click" and event.digest_item_id is not None
    assert response.headers["location"] == paper.pdf_url and "evil" not in response.headers["location"]
    token = found["d"][0].rsplit("/", 1)[1]
    assert web.client.get(f"{web.base}/c/{token}").status_code == 404  # a PDF token is no click token


def test_pdf_and_preferences_links_open_only_for_their_subscriber_on_this_installation(workdir: Workdir, tmp_path: Path) -> None:
    server = Web(workdir)
    sent_email(workdir, tmp_path, server.base)  # ada's email: three PDF buttons and her preferences link
    mailed = links(workdir)
    ada, kenji = subscriber(workdir, "ada@example.org"), subscriber(workdir, "kenji@example.org")
    with workdir.db().session() as session:
        item = session.exec(select(DigestItem).join(Digest, col(Digest.id) == DigestItem.digest_id).where(Digest.subscriber_id == ada.id)).first()
    here = LinkMaker(server.base, LinkSigner(TEST_KEY, installation=workdir.db().installation().id))
    elsewhere = LinkMaker(server.base, LinkSigner(TEST_KEY, installation=secrets.token_hex(16)))  # another installation, same key
    server.start()
    try:
        assert server.client.get(mailed["d"][0]).status_code == 302 and server.client.get(mailed["p"][0]).status_code == 200
        assert server.client.get(here.pdf(item.id, ada.link_id)).status_code == 302
        assert server.client.get(here.preferences(ada.id, ada.link_id)).status_code == 200
        refused = [here.pdf(item.id, kenji.link_id), here.preferences(ada.id, kenji.link_id),  # made for someone else
                   elsewhere.pdf(item.id, ada.link_id), elsewhere.preferences(ada.id, ada.link_id),
                   f"{server.base}/d/{first_format('d', item.id)}", f"{server.base}/p/{first_format('p', ada.id)}"]
        for url in refused:
            assert server.client.get(url).status_code == 404, url
        unsubscribe = {"action": "unsubscribe"}
        assert server.client.post(here.preferences(ada.id, kenji.link_id), data=unsubscribe, headers={"Origin": server.base}).status_code == 404
    finally:
        server.stop()
    # The database as a version before link ids left it: first-format click links of the digests
    # it holds stay valid, but no PDF or preferences link was ever mailed in that format.
    with workdir.db().transaction() as session:
        session.execute(text("DELETE FROM installation"))
        session.execute(text("UPDATE subscriber SET link_id = NULL"))
    server.client = httpx.Client(follow_redirects=False, timeout=10)
    server.start()
    try:
        assert server.client.get(f"{server.base}/c/{first_format('c', item.id)}").status_code == 302
        assert server.client.get(f"{server.base}/d/{first_format('d', item.id)}").status_code == 404
        assert server.client.get(f"{server.base}/p/{first_format('p', ada.id)}").status_code == 404
    finally:
        server.stop()
    assert subscriber(workdir, "ada@example.org").unsubscribed_at is None
    assert [e.kind for e in events(workdir)] == ["click", "click", "click"]  # the PDF, the signed PDF link, the first-format click


def first_lines(args: list[str], workdir: Workdir, until: str, seconds: float = 30) -> tuple[list[str], subprocess.Popen]:
    process = subprocess.Popen([sys.executable, "-m", "digest", *args], cwd=workdir.path, env={**os.environ, **workdir.env},
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if until in line:
            return lines, process
    process.kill()
    raise AssertionError(f"digest {' '.join(args)} said: {lines}")


@pytest.mark.parametrize("command", ["web", "serve"])
def test_web_and_serve_say_where_they_listen_and_how_to_stop(workdir: Workdir, command: str) -> None:
    port = free_port()
    workdir.env["DIGEST_BASE_URL"] = "https://digest.example.org"
    lines, process = first_lines([command, "--host", "127.0.0.1", "--port", str(port)], workdir, "to stop")
    try:
        assert lines[0] == f"Serving {'the web endpoints' if command == 'web' else 'the scheduler and the web endpoints'} on http://127.0.0.1:{port} " \
                           "(links in emails point to https://digest.example.org)."
        assert lines[1] == "Press Ctrl+C (or send SIGTERM) to stop."
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # it listens where it said
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError(f"nothing answers on port {port}")
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_pages_read_well_in_light_and_dark(web: Web, workdir: Workdir, scheme: str) -> None:
    found = links(workdir)
    pages = {"preferences": found["p"][0], "feedback": found["f"][0], "unsubscribe": found["u"][0]}
    with Browser() as browser:
        browser.viewport(390, 900)
        browser.color_scheme(scheme)
        for name, url in pages.items():
            browser.open(url)
            texts = browser.evaluate(CONTRAST_SCRIPT)
            low = [t for t in texts if t["ratio"] < 4.5]
            assert texts and not low, (name, low[:5])
            buttons = browser.evaluate("[...document.querySelectorAll('button')].map(b => [b.getBoundingClientRect().width, b.getBoundingClientRect().height])")
            assert buttons and all(w >= 44 and h >= 44 for w, h in buttons), (name, buttons)
            assert browser.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth"), name
