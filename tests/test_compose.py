"""MIME composition: the bytes a message goes out as, and the transfer encoding each part gets.

Whatever the encoding, parsing a message (the email package's own parser) gives back exactly
the text and the HTML that were rendered, line breaks as CRLF, the canonical form of text.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller

from digest.mail.compose import MAX_LINE, Composer, compose
from digest.mail.render import RenderedDigest
from digest.mail.transports import DeliveryError, OutboxTransport, SMTPTransport

from .conftest import CountingHandler, Workdir, free_port

WHEN = dt.datetime(2026, 11, 24, 7, tzinfo=dt.timezone.utc)
HTML = '<p class="x" style="color:#123">Schrödinger “bridges” · é 😀 &amp; a = b</p>\n<p>From here\n. a dot\n</p>\n'
TEXT = "PAPER DIGEST\n\n1. Schrödinger bridges · 24 Nov 2026\nFrom the top\n. a dot line\n=3D looks encoded\n"


def make(rendered: RenderedDigest, eight_bit: bool, to_name: str | None = "Zoë, Q.", **extra):
    return Composer("Paper Digest <digest@example.net>", eight_bit=eight_bit, **extra).compose(
        rendered, to_email="ada@example.org", to_name=to_name, msg_id="<d.1@example.net>", unsubscribe_url="https://example.net/u/" + "t" * 90, date=WHEN)


def parts(data: bytes) -> dict[str, tuple[str, str]]:
    """Each part's (transfer encoding, content as parsed) by subtype."""
    parsed = message_from_bytes(data, policy=policy.default)
    return {kind: (parsed.get_body((kind,))["Content-Transfer-Encoding"], parsed.get_body((kind,)).get_content()) for kind in ("plain", "html")}


def crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


@pytest.mark.parametrize("eight_bit", [True, False])
def test_parsing_a_message_gives_back_the_exact_text_and_html(eight_bit: bool) -> None:
    rendered = RenderedDigest("10 new papers for 24 Nov: Schrödinger bridges …", HTML * 30, TEXT * 10)
    message = make(rendered, eight_bit)
    got = parts(message.data)
    assert got["plain"][1] == crlf(rendered.text) and got["html"][1] == crlf(rendered.html)
    encoding = "8bit" if eight_bit else "quoted-printable"
    assert got["plain"][0] == got["html"][0] == encoding and message.eight_bit is eight_bit
    assert message.data.isascii() is not eight_bit
    assert all(len(line) <= MAX_LINE for line in message.data.split(b"\r\n"))
    assert b"\n" not in message.data.replace(b"\r\n", b"") and b"\r" not in message.data.replace(b"\r\n", b"")  # CRLF only
    parsed = message_from_bytes(message.data, policy=policy.default)
    assert parsed["Subject"] == rendered.subject and str(parsed["To"]) == '"Zoë, Q." <ada@example.org>'
    assert parsed["List-Unsubscribe"] == "<https://example.net/u/" + "t" * 90 + ">"  # one line, never folded inside the URL
    assert parsed["MIME-Version"] == "1.0" and parsed.get_content_type() == "multipart/alternative"
    assert not parsed.defects and not any(p.defects for p in parsed.iter_parts())


def test_plain_ascii_goes_as_7bit_on_any_transport() -> None:
    rendered = RenderedDigest("Digest", "<p>HTML</p>\n", "Text\n")
    for eight_bit in (True, False):
        message = make(rendered, eight_bit, to_name=None)
        assert parts(message.data) == {"plain": ("7bit", "Text\r\n"), "html": ("7bit", "<p>HTML</p>\r\n")}
        assert not message.eight_bit and message.data.isascii()


def test_a_part_8bit_cannot_carry_is_quoted_printable_and_still_exact() -> None:
    long_line = "é" * 600  # 1,200 octets: over the 998 a line may have
    rendered = RenderedDigest("Digest", f"<p>{long_line}</p>\n", f"a NUL \x00 here\n{long_line[:10]}\n")
    message = make(rendered, eight_bit=True)
    got = parts(message.data)
    assert got["html"] == ("quoted-printable", crlf(rendered.html))
    assert got["plain"] == ("quoted-printable", crlf(rendered.text))
    assert not message.eight_bit and all(len(line) <= 76 for line in message.data.split(b"\r\n\r\n", 1)[1].split(b"\r\n"))


def test_a_bare_carriage_return_is_written_as_the_line_break_every_reader_takes_it_for() -> None:
    rendered = RenderedDigest("Digest", "<p>a\rb\r\nc</p>\n", "a\rb\r\nc\n")
    for eight_bit in (True, False):
        got = parts(make(rendered, eight_bit).data)
        assert got["plain"][1] == got["html"][1].removeprefix("<p>").replace("</p>", "") == "a\r\nb\r\nc\r\n"


def test_a_composer_prepares_what_messages_share_once() -> None:
    composer = Composer("Paper Digest <digest@example.net>", eight_bit=True)
    rendered = RenderedDigest("10 new papers for 24 Nov: Schrödinger bridges …", HTML, TEXT)
    first = composer.compose(rendered, to_email="a@example.org", to_name=None, msg_id="<1@example.net>", unsubscribe_url="https://example.net/u/1", date=WHEN)
    second = composer.compose(rendered, to_email="b@example.org", to_name=None, msg_id="<2@example.net>", unsubscribe_url="https://example.net/u/2", date=WHEN)
    assert composer.subject(rendered.subject) is composer.subject(rendered.subject)  # encoded once for the run
    boundaries = {message_from_bytes(m.data, policy=policy.default).get_boundary() for m in (first, second)}
    assert len(boundaries) == 2  # random for each message
    one_off = compose(rendered=rendered, sender="Paper Digest <digest@example.net>", to_email="a@example.org", to_name=None, msg_id="<1@example.net>",
                      unsubscribe_url="https://example.net/u/1", date=WHEN, eight_bit=True)
    assert one_off.data.replace(message_from_bytes(one_off.data).get_boundary().encode(), b"B") == first.data.replace(
        message_from_bytes(first.data).get_boundary().encode(), b"B")


def test_headers_refuse_line_breaks_and_encode_what_is_not_ascii() -> None:
    rendered = RenderedDigest("Digest", "<p>x</p>", "x")
    with pytest.raises(ValueError, match="recipient's name"):
        make(rendered, True, to_name="Eve\r\nBcc: victim@example.org")
    with pytest.raises(ValueError, match="sender"):
        Composer("Digest <d@example.net>\nBcc: x@example.org")
    message = Composer("Dígest Ünïted <digest@example.net>").compose(RenderedDigest("Digest\x0bwith a tab\tand a vertical tab", "<p>x</p>", "x"),
                                                                   to_email="ada@example.org", to_name="Zoë", msg_id="<d@example.net>",
                                                                   unsubscribe_url="https://example.net/u/1", date=WHEN)
    head = message.data.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    parsed = message_from_bytes(message.data, policy=policy.default)
    assert str(parsed["From"]) == "Dígest Ünïted <digest@example.net>" and parsed["From"].addresses[0].addr_spec == "digest@example.net"
    assert str(parsed["To"]) == "Zoë <ada@example.org>" and parsed["Subject"] == "Digest with a tab and a vertical tab"


# --- 8bit over SMTP: only to a server that offers 8BITMIME ------------------------------------------


@dataclass
class Sink:
    host: str
    port: int
    offer_8bitmime: bool
    received: list[tuple[list[str], bytes]] = field(default_factory=list)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(CountingHandler):
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        responses = await super().handle_EHLO(server, session, envelope, hostname, responses)
        return [r for r in responses if self.sink.offer_8bitmime or "8BITMIME" not in r.upper()]

    async def handle_DATA(self, server, session, envelope):
        with self.sink.lock:
            self.sink.received.append((list(envelope.mail_options), envelope.original_content or envelope.content))
        return "250 OK"


@pytest.fixture(params=[True, False], ids=["8BITMIME", "no-8BITMIME"])
def sink(request) -> Sink:
    """aiosmtpd on loopback, offering 8BITMIME in its EHLO or not (`request.param`)."""
    server = Sink("127.0.0.1", free_port(), request.param)
    controller = Controller(_Handler(server), hostname=server.host, port=server.port)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


def test_smtp_carries_8bit_only_where_the_server_offers_8bitmime(workdir: Workdir, sink: Sink) -> None:
    settings = workdir.settings(DIGEST_TRANSPORT="smtp", SMTP_HOST=sink.host, SMTP_PORT=str(sink.port))
    rendered = RenderedDigest("Schrödinger", HTML, TEXT)
    with SMTPTransport(settings) as smtp:
        eight_bit = smtp.eight_bit_mime()
        assert eight_bit is sink.offer_8bitmime
        composer = Composer(settings.sender, eight_bit=eight_bit)
        for n in range(3):
            smtp.send(composer.compose(rendered, to_email=f"u{n}@example.org", to_name=None, msg_id=f"<{n}@example.net>",
                                       unsubscribe_url=f"https://example.net/u/{n}", date=WHEN), f"k{n}")
    assert sink.connections == 1  # the connection that asked served the messages
    assert len(sink.received) == 3
    for options, data in sink.received:
        assert ("BODY=8BITMIME" in options) is sink.offer_8bitmime
        assert data.isascii() is not sink.offer_8bitmime
        assert parts(data)["html"][1] == crlf(HTML) and parts(data)["plain"][1] == crlf(TEXT)


@pytest.mark.parametrize("sink", [False], ids=["no-8BITMIME"], indirect=True)
def test_an_8bit_message_is_never_handed_to_a_server_without_8bitmime(workdir: Workdir, sink: Sink) -> None:
    settings = workdir.settings(DIGEST_TRANSPORT="smtp", SMTP_HOST=sink.host, SMTP_PORT=str(sink.port))
    message = make(RenderedDigest("Digest", HTML, TEXT), eight_bit=True)  # made for a server that offered it
    with SMTPTransport(settings) as smtp, pytest.raises(DeliveryError, match="8BITMIME") as failed:
        smtp.send(message, "k")
    assert failed.value.server and not failed.value.tried and not sink.received


def test_the_outbox_carries_8bit_and_an_unreachable_server_gets_quoted_printable(workdir: Workdir, tmp_path) -> None:
    assert OutboxTransport(tmp_path).eight_bit_mime() is True
    settings = workdir.settings(DIGEST_TRANSPORT="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=str(free_port()), SMTP_TIMEOUT="2")
    with SMTPTransport(settings) as smtp:
        assert smtp.eight_bit_mime() is False
        assert smtp.breaker.failures == 0  # a fault trying again may mend: the messages meet it, and count it, themselves
