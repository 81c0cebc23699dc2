"""Delivery: whole files in the outbox, one SMTP connection reused for a batch (real aiosmtpd)."""

from __future__ import annotations

import datetime as dt
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from digest.mail.compose import compose
from digest.mail.render import RenderedDigest
from digest.mail.transports import DeliveryError, OutboxTransport, SMTPTransport

from .conftest import SMTPSink, Workdir


def message(to: str, n: int = 1):
    rendered = RenderedDigest(f"Digest {n} – ünïcode", f"<html><body><p>HTML {n}</p></body></html>", f"Text {n}\n")
    return compose(
        rendered=rendered, sender="Paper Digest <digest@example.net>", to_email=to, to_name="Zoë",
        msg_id=f"<digest.{n}@example.net>", unsubscribe_url=f"https://example.net/u/u{n}.sig",
        date=dt.datetime(2026, 11, 22, 7, tzinfo=dt.timezone.utc),
    )


def test_the_outbox_writes_whole_parseable_files_and_knows_what_it_wrote(tmp_path: Path) -> None:
    with OutboxTransport(tmp_path / "out") as outbox:
        assert outbox.delivered("k1") is False
        where = outbox.send(message("a@example.org"), "k1")
        outbox.send(message("b@example.org", 2), "k2")
    files = sorted((tmp_path / "out").iterdir())
    assert [f.name for f in files] == ["k1.eml", "k2.eml"]  # no temporary files left behind
    assert where.where == str(files[0]) and where.retries == 0
    parsed = message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert parsed["Subject"] == "Digest 1 – ünïcode" and str(parsed["To"]) == "Zoë <a@example.org>"
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert parsed["List-Unsubscribe"] == "<https://example.net/u/u1.sig>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert OutboxTransport(tmp_path / "out").delivered("k2") is True


def test_smtp_sends_a_batch_over_one_connection(workdir: Workdir, smtp_sink: SMTPSink) -> None:
    settings = workdir.settings(DIGEST_TRANSPORT="smtp", SMTP_HOST=smtp_sink.host, SMTP_PORT=str(smtp_sink.port))
    with SMTPTransport(settings) as smtp:
        for n in range(5):
            smtp.send(message(f"user{n}@example.org", n), f"k{n}")
    assert smtp_sink.connections == 1
    assert sorted(smtp_sink.by_recipient()) == [f"user{n}@example.org" for n in range(5)]
    received = smtp_sink.messages[0]
    assert received.mail_from == "digest@example.net"
    assert received.message["Message-ID"] == "<digest.0@example.net>"


def test_smtp_that_is_not_there_is_a_server_fault_after_bounded_retries(workdir: Workdir) -> None:
    from .conftest import free_port

    settings = workdir.settings(DIGEST_TRANSPORT="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=str(free_port()), SMTP_TIMEOUT="2", SMTP_RETRIES="3", SMTP_RETRY_BACKOFF="1")
    waits: list[float] = []
    with SMTPTransport(settings, sleep=waits.append) as smtp:
        with pytest.raises(DeliveryError) as caught:
            smtp.send(message("a@example.org"), "k")
        assert "Connection refused" in str(caught.value) and "stopped trying the server after 3 failures in a row" in str(caught.value)
        assert caught.value.server and caught.value.tried and not caught.value.permanent and not caught.value.bounce
        assert caught.value.retries == 2 and len(waits) == 2 and 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0  # exponential, jittered (digest.backoff)
        with pytest.raises(DeliveryError) as untried:  # the breaker is open: no further connection
            smtp.send(message("b@example.org"), "k2")
        assert untried.value.server and not untried.value.tried and len(waits) == 2
    with SMTPTransport(settings, sleep=waits.append) as smtp, pytest.raises(DeliveryError) as again:
        smtp.send(message("b@example.org"), "k2")  # a new run gives the server a fresh chance
    assert again.value.tried and len(waits) == 4
