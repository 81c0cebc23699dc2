"""The email itself: `multipart/alternative` (text, then HTML) with the headers of README § Email.

Messages are built with the standard library's MIME classes under the `compat32` policy and
their bodies quoted-printable encoded by `binascii` (C): the `EmailMessage` API parses every
header into an object and encodes bodies in Python, which made composing a digest cost ten times
as much as rendering it (2.7 ms against 0.25 ms, see `digest bench`).

With `DIGEST_DKIM_KEY`, `DIGEST_DKIM_SELECTOR` and `DIGEST_DKIM_DOMAIN` set, every message is
DKIM-signed (dkimpy, RSA-SHA256, relaxed/relaxed), its List-Unsubscribe headers included as RFC
8058 asks, so that receivers can trust the one-click unsubscribe.
"""

from __future__ import annotations

import binascii
import datetime as dt
import re
import secrets
from dataclasses import dataclass, field
from email.charset import BASE64, Charset
from email.generator import NLCRE, BytesGenerator
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.policy import Compat32
from email.utils import format_datetime, formataddr, parseaddr
from io import BytesIO
from pathlib import Path

import dkim

from ..settings import SettingsError
from .render import RenderedDigest

#: The headers a DKIM signature covers (RFC 8058 § 4: List-Unsubscribe and List-Unsubscribe-Post
#: must be among them); From is listed twice so that no second From can be added unnoticed.
DKIM_HEADERS = (b"From", b"From", b"To", b"Subject", b"Date", b"Message-ID", b"List-Id", b"List-Unsubscribe",
                b"List-Unsubscribe-Post", b"MIME-Version", b"Content-Type")


class DkimError(SettingsError):
    """The DKIM key cannot sign; the message names the setting."""


@dataclass(frozen=True)
class DkimKey:
    """A private key and where its public half is published (`selector._domainkey.domain`)."""

    selector: str
    domain: str
    private_key: bytes = field(repr=False)

    @classmethod
    def load(cls, path: str | Path, selector: str, domain: str) -> "DkimKey":
        """Read and try the key now, so that a bad one stops a run before its first message."""
        try:
            key = Path(path).read_bytes()
        except OSError as exc:
            raise DkimError(f"DIGEST_DKIM_KEY: cannot read {path}: {exc.strerror or exc}") from None
        signer = cls(selector, domain, key)
        try:
            signer.sign(b"From: a@example.org\r\nSubject: test\r\n\r\ntest\r\n")
        except (dkim.DKIMException, ValueError, IndexError, TypeError) as exc:  # dkimpy's parser raises all of these for junk
            raise DkimError(f"DIGEST_DKIM_KEY: {path} is not a usable RSA private key in PEM ({exc})") from None
        return signer

    def sign(self, data: bytes) -> bytes:
        """`data` with its DKIM-Signature header in front."""
        header = dkim.sign(data, self.selector.encode("ascii"), self.domain.encode("ascii"), self.private_key,
                           canonicalize=(b"relaxed", b"relaxed"), include_headers=list(DKIM_HEADERS))
        return header + data


class _Wire(Compat32):
    """compat32 with CRLF line ends, where a plain ASCII header stays on one line up to RFC 5322's
    limit (a folded List-Unsubscribe URL trips up some readers of it) and is written as it is
    rather than through `Header` (the slowest part of writing a message)."""

    def _fold(self, name: str, value: object, sanitize: bool) -> str:
        if isinstance(value, str) and value.isascii() and "\n" not in value and "\r" not in value and len(name) + len(value) + 2 <= self.max_line_length:
            return f"{name}: {value}{self.linesep}"
        return super()._fold(name, value, sanitize)


WIRE = _Wire(linesep="\r\n", max_line_length=998)


class _Generator(BytesGenerator):
    """A body written in one piece rather than line by line: the same bytes, several times sooner."""

    def _write_lines(self, lines: str) -> None:
        if lines:
            self.write(NLCRE.sub(self._NL, lines))


@dataclass(frozen=True)
class Outgoing:
    """A finished message: its envelope recipient, its id and its bytes as they go on the wire."""

    recipient: str
    message_id: str
    data: bytes


def sender_domain(sender: str) -> str:
    address = parseaddr(sender)[1]
    return address.rpartition("@")[2] or "localhost"


def message_id(digest_id: int, local_date: dt.date, sender: str) -> str:
    """Stable for a digest, so a message re-sent after a crash is recognisably the same one."""
    return f"<digest.{local_date:%Y%m%d}.{digest_id}@{sender_domain(sender)}>"


class _EncodedWords(Header):
    """RFC 2047 encoded words, folded at 78 columns whatever the policy's limit for plain headers."""

    def encode(self, splitchars: str = ";, \t", maxlinelen: int | None = None, linesep: str = "\n") -> str:
        return super().encode(splitchars, 78, linesep)


#: UTF-8 headers in base64 encoded words: `Header` measures a quoted-printable word character by
#: character in Python, a base64 one by arithmetic (1 ms against 0.1 ms for a long subject).
_UTF8_BASE64 = Charset("utf-8")
_UTF8_BASE64.header_encoding = BASE64


def _header(value: str) -> str | Header:
    """ASCII as it is; anything else as RFC 2047 encoded words."""
    return value if value.isascii() else _EncodedWords(value, _UTF8_BASE64)


#: Characters no header value may carry raw: C0 and C1 controls (CR and LF among them) and the
#: Unicode line and paragraph separators (a header would end, or be folded wrongly, there).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(value: str) -> str:
    """`value` with control characters turned to spaces and whitespace collapsed: for a header
    made of data (a subject from paper titles, which ingest cleans, but perhaps stored earlier)."""
    return " ".join(_CONTROL.sub(" ", value).split())


def _refuse_control(value: str, what: str) -> str:
    found = _CONTROL.search(value)
    if found:
        raise ValueError(f"{what} holds a control character (U+{ord(found.group()):04X}), which no header may carry")
    return value


def _text_part(text: str, subtype: str) -> MIMENonMultipart:
    part = MIMENonMultipart("text", subtype, charset="utf-8")
    part["Content-Transfer-Encoding"] = "quoted-printable"
    part.set_payload(binascii.b2a_qp(text.encode("utf-8"), istext=True).decode("ascii"))
    return part


def compose(
    *,
    rendered: RenderedDigest,
    sender: str,
    to_email: str,
    to_name: str | None,
    msg_id: str,
    unsubscribe_url: str,
    date: dt.datetime,
    dkim_key: DkimKey | None = None,
) -> Outgoing:
    """The message, or a ValueError when a value meant for a header cannot go into one (a
    recipient's name or address with a line break: that message fails, not the run)."""
    _refuse_control(to_email, "the recipient's address")
    if to_name:
        _refuse_control(to_name, "the recipient's name")
    # "=_" never occurs in quoted-printable text, so the boundary needs no search of the bodies.
    message = MIMEMultipart("alternative", boundary=f"=_digest_{secrets.token_hex(12)}")
    message["From"] = _header(sender)
    message["To"] = _header(formataddr((to_name, to_email), charset="utf-8")) if to_name else to_email
    message["Subject"] = _header(one_line(rendered.subject))
    message["Date"] = format_datetime(date.astimezone(dt.timezone.utc))
    message["Message-ID"] = msg_id
    message["List-Id"] = formataddr(("Paper Digest", f"digest.{sender_domain(sender)}"))
    message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Auto-Submitted"] = "auto-generated"
    message["Precedence"] = "bulk"
    message.attach(_text_part(rendered.text, "plain"))
    message.attach(_text_part(rendered.html, "html"))
    buffer = BytesIO()
    _Generator(buffer, mangle_from_=False, policy=WIRE).flatten(message)
    data = buffer.getvalue()
    return Outgoing(to_email, msg_id, dkim_key.sign(data) if dkim_key else data)


def envelope_sender(sender: str) -> str:
    return parseaddr(sender)[1]
