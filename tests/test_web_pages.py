"""The PDF link, what `digest web` and `digest serve` say when they start, and the pages' contrast
in light and dark."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from digest.models import FeedbackEvent, Paper

from .browser import CONTRAST_SCRIPT, Browser
from .conftest import Web, Workdir, free_port
from .test_email_page import sent_email
from .test_web import links


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
