"""End to end: the CLI in a temporary folder, real SQLite, a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import re

from lxml import html as lxml_html
from sqlmodel import select

from digest.models import Digest, DigestStatus

from .conftest import SMTPSink, Workdir, shared

TOPIC_WORDS = {
    "moe@example.org": re.compile(r"mixture[- ]of[- ]experts|\bmoe\b", re.I),
    "rag@example.org": re.compile(r"retrieval[- ]augmented|\brag\b", re.I),
}


def smtp_env(sink: SMTPSink) -> dict[str, str]:
    return {"DIGEST_TRANSPORT": "smtp", "SMTP_HOST": sink.host, "SMTP_PORT": str(sink.port)}


def test_cli_ingest_sync_send_over_smtp_and_parse_what_arrived(workdir: Workdir, smtp_sink: SMTPSink) -> None:
    env = smtp_env(smtp_sink)
    workdir.cli("ingest", "config/sample-feed.jsonl", check=True, **env)
    workdir.cli("profiles", "sync", check=True, **env)
    result = workdir.cli("send", check=True, **env)
    assert "4 sent" in result.stdout
    received = smtp_sink.by_recipient()
    assert sorted(received) == ["ada@example.org", "kenji@example.org", "lucia@example.org", "sam@example.org"]
    assert smtp_sink.connections <= 4  # SMTP_CONNECTIONS (4) connections at most, each reused
    for messages in received.values():
        [message] = messages
        # A long header is folded; unfolded, it is the tracked /u/ link in angle brackets.
        assert re.fullmatch(r"<http://127\.0\.0\.1:8000/u/u[0-9a-z]+\.[0-9a-f]{16}\.[\w-]+>", message["List-Unsubscribe"].strip())
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert message["Message-ID"].endswith("@example.net>") and message["List-Id"] == "Paper Digest <digest.example.net>"
        html = message.get_body(("html",)).get_content()
        text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
        tree = lxml_html.fromstring(html)
        clicks = tree.xpath("//a[contains(@href, '/c/')]")
        assert clicks and all(a.get("style") for a in clicks)
        # The same papers, in the same order, in both parts.
        assert [a.text_content() for a in clicks] == re.findall(r"^\d+\. (.+)$", text, re.M)
    kenji = received["kenji@example.org"][0].get_body(("plain",)).get_content()
    assert "robot" in kenji.lower() and "quantum" not in kenji.lower()

    again = workdir.cli("send", check=True, **env)
    assert "Nothing new to send" in again.stdout
    assert sum(len(m) for m in smtp_sink.by_recipient().values()) == 4


def test_a_failing_smtp_server_fails_the_send_with_exit_1(workdir: Workdir) -> None:
    from .conftest import free_port

    workdir.cli("ingest", "config/sample-feed.jsonl", check=True)
    workdir.cli("profiles", "sync", check=True)
    result = workdir.cli(
        "send", "--only", "ada@example.org", DIGEST_TRANSPORT="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=str(free_port()),
        SMTP_TIMEOUT="2", SMTP_RETRIES="1", SMTP_RETRY_BACKOFF="0.01",
    )
    assert result.returncode == 1
    assert "deferred" in result.stdout and "Connection refused (after 2 tries)" in result.stdout
    with workdir.db().session() as session:
        assert session.exec(select(Digest)).one().status == DigestStatus.DEFERRED


def test_trending_pages_and_new_profiles_with_a_broken_one(workdir: Workdir, smtp_sink: SMTPSink) -> None:
    pages = sorted(str(p) for p in shared("hf-trending").glob("*.txt"))
    folder = workdir.path / "people"
    folder.mkdir()
    (folder / "moe.yaml").write_text("email: moe@example.org\ntimezone: Asia/Kolkata\nmax_items: 5\ninterests:\n  - mixture of experts\n")
    (folder / "rag.yaml").write_text(
        "email: rag@example.org\ntimezone: America/Chicago\nmax_items: 5\n"
        "interests:\n  - retrieval-augmented generation\n  - {phrase: code generation, weight: 0.5}\n"
    )
    (folder / "broken.yaml").write_text("email: broken@example.org\ninterests:\n  - agents\nmax_items: lots\n")
    env = {**smtp_env(smtp_sink), "DIGEST_PROFILES": str(folder)}

    ingest = workdir.cli("ingest", *pages, check=True, **env)
    assert ingest.stdout.count("│ hf-trending │") == 5
    sync = workdir.cli("profiles", "sync", **env)
    assert sync.returncode == 2
    assert "broken.yaml:4: max_items:" in sync.stderr
    workdir.cli("send", check=True, **env)

    received = smtp_sink.by_recipient()
    assert sorted(received) == ["moe@example.org", "rag@example.org"]
    for address, pattern in TOPIC_WORDS.items():
        text = received[address][0].get_body(("plain",)).get_content()
        items = re.split(r"\n(?=\d+\. )", text)[1:]
        assert len(items) == 5
        # That topic's papers come first, each saying which interest it matched.
        for item in items[:3]:
            assert pattern.search(item), item[:300]
        assert "Why: matches mixture of experts" in items[0] if address == "moe@example.org" else "Why: matches retrieval-augmented generation" in items[0]
