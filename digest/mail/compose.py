"""The email itself: `multipart/alternative` (text, then HTML) with the headers of README § Email.

A run makes thousands of messages that differ only in a few headers and in their bodies, so a
`Composer` is made once per run and prepares what they share: the headers that do not change
(From, List-Id, List-Unsubscribe-Post, ...), each distinct subject's encoded form, the Date. A
message is then its bytes written in one piece, on public APIs of the standard library only:
headers that are plain ASCII on one line are written as they are; any other goes through
`email.policy.SMTP.fold` (RFC 2047 encoded words, folded); bodies are UTF-8.

Transfer encoding, chosen for speed where the standards allow it:

- **8bit** (RFC 2045 § 2.8; RFC 6152 for SMTP) when the transport carries it (`eight_bit`: the
  outbox; an SMTP server that offers 8BITMIME) and the part allows it: no NUL, no line over 998
  octets (RFC 5322 § 2.1.1). Nothing to encode: the bytes are the text's own UTF-8, the smallest
  message, and writing it costs a tenth of quoted-printable (`digest bench`).
- **quoted-printable** (`binascii`, C) otherwise: valid on any transport, readable, and what
  spam filters expect of mostly-ASCII text (base64 would be as quick to make, but a third larger
  and a classic spam signal for text parts).

Line breaks are CRLF on the wire, as a text body's canonical form is (RFC 2046 § 4.1.1); a bare
CR in a body (which no reader shows other than as a line break) is written as one. The MIME
boundary holds 96 random bits, so no body can contain it by chance, and no body is searched.

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
from email.policy import SMTP
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache
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


@dataclass(frozen=True)
class Outgoing:
    """A finished message: its envelope recipient, its id and its bytes as they go on the wire
    (`eight_bit`: a body holds 8bit data, which SMTP may carry only with BODY=8BITMIME)."""

    recipient: str
    message_id: str
    data: bytes
    eight_bit: bool = False


@lru_cache(maxsize=64)  # a pure function of the one sender of a run, asked for every message
def sender_domain(sender: str) -> str:
    address = parseaddr(sender)[1]
    return address.rpartition("@")[2] or "localhost"


def message_id(digest_id: int, local_date: dt.date, sender: str) -> str:
    """Stable for a digest, so a message re-sent after a crash is recognisably the same one."""
    return f"<digest.{local_date:%Y%m%d}.{digest_id}@{sender_domain(sender)}>"


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


#: RFC 5322 § 2.1.1: a line is at most 998 octets, CRLF excluded.
MAX_LINE = 998
#: The email package's SMTP policy (CRLF, 78 columns), told to fold and encode every header it is
#: given (by default it passes a short header through as it is, non-ASCII or not).
_FOLDING = SMTP.clone(refold_source="all")


def _header_line(name: str, value: str) -> bytes:
    """`Name: value` and CRLF: as it is when it is plain ASCII that fits on one line (a folded
    List-Unsubscribe URL trips up some readers of it), else encoded and folded by the email
    package."""
    if value.isascii() and len(name) + len(value) + 2 <= MAX_LINE and not _CONTROL.search(value):
        return f"{name}: {value}\r\n".encode("ascii")
    return _FOLDING.fold(name, value).encode("ascii")


def _body(text: str, eight_bit: bool) -> tuple[bytes, bytes]:
    """A text part's Content-Transfer-Encoding and its body on the wire (CRLF line breaks):
    7bit or 8bit as it is where the part allows it (no NUL, no line over `MAX_LINE` octets; 8bit
    only where the transport carries it), else quoted-printable."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    data = text.encode("utf-8")
    if b"\0" not in data and (len(data) <= MAX_LINE or max(map(len, data.split(b"\n"))) <= MAX_LINE):
        if data.isascii():
            return b"7bit", data.replace(b"\n", b"\r\n")
        if eight_bit:
            return b"8bit", data.replace(b"\n", b"\r\n")
    return b"quoted-printable", binascii.b2a_qp(data.replace(b"\n", b"\r\n"), istext=True)


class Composer:
    """Makes the messages of one run from one sender: what they share is prepared once.

    `eight_bit`: the transport carries 8bit bodies (the outbox, an SMTP server with 8BITMIME);
    without it every body is quoted-printable, valid anywhere. A composer holds per-run caches
    (the encoded subjects): make one per run, not one for the life of a service.
    """

    def __init__(self, sender: str, *, dkim_key: DkimKey | None = None, eight_bit: bool = False) -> None:
        _refuse_control(sender, "the sender (DIGEST_FROM)")
        self.sender = sender
        self.dkim_key = dkim_key
        self.eight_bit = eight_bit
        self.domain = sender_domain(sender)
        self._from = _header_line("From", sender)
        self._list = _header_line("List-Id", formataddr(("Paper Digest", f"digest.{self.domain}")))
        self._after_unsubscribe = b"".join([
            _header_line("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            _header_line("Auto-Submitted", "auto-generated"),
            _header_line("Precedence", "bulk"),
            b"MIME-Version: 1.0\r\n",
        ])
        self._subjects: dict[str, bytes] = {}
        self._dates: dict[dt.datetime, bytes] = {}

    def subject(self, subject: str) -> bytes:
        """The Subject header of `subject` (its control characters made spaces), encoded once per run."""
        line = self._subjects.get(subject)
        if line is None:
            if len(self._subjects) >= 100_000:  # a run's subjects are far fewer; a bound all the same
                self._subjects.clear()
            line = self._subjects[subject] = _header_line("Subject", one_line(subject))
        return line

    def date(self, when: dt.datetime) -> bytes:
        line = self._dates.get(when)
        if line is None:
            self._dates.clear()  # a run stamps its messages with one instant
            line = self._dates[when] = _header_line("Date", format_datetime(when.astimezone(dt.timezone.utc)))
        return line

    def compose(self, rendered: RenderedDigest, *, to_email: str, to_name: str | None, msg_id: str, unsubscribe_url: str, date: dt.datetime) -> Outgoing:
        """The message, or a ValueError when a value meant for a header cannot go into one (a
        recipient's name or address with a line break: that message fails, not the run)."""
        _refuse_control(to_email, "the recipient's address")
        if to_name:
            _refuse_control(to_name, "the recipient's name")
        _refuse_control(msg_id, "the Message-ID")
        _refuse_control(unsubscribe_url, "the unsubscribe URL")
        text_encoding, text = _body(rendered.text, self.eight_bit)
        html_encoding, html = _body(rendered.html, self.eight_bit)
        boundary = f"=_digest_{secrets.token_hex(12)}".encode("ascii")
        data = b"".join([
            self._from,
            _header_line("To", formataddr((to_name, to_email)) if to_name else to_email),
            self.subject(rendered.subject),
            self.date(date),
            _header_line("Message-ID", msg_id),
            self._list,
            _header_line("List-Unsubscribe", f"<{unsubscribe_url}>"),
            self._after_unsubscribe,
            b'Content-Type: multipart/alternative; boundary="', boundary, b'"\r\n\r\n',
            b"--", boundary, b'\r\nContent-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: ', text_encoding, b"\r\n\r\n",
            text,
            b"\r\n--", boundary, b'\r\nContent-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: ', html_encoding, b"\r\n\r\n",
            html,
            b"\r\n--", boundary, b"--\r\n",
        ])
        eight_bit = text_encoding == b"8bit" or html_encoding == b"8bit"
        return Outgoing(to_email, msg_id, self.dkim_key.sign(data) if self.dkim_key else data, eight_bit)


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
    eight_bit: bool = False,
) -> Outgoing:
    """One message on its own (a run makes a `Composer` once and reuses it)."""
    return Composer(sender, dkim_key=dkim_key, eight_bit=eight_bit).compose(
        rendered, to_email=to_email, to_name=to_name, msg_id=msg_id, unsubscribe_url=unsubscribe_url, date=date)


def envelope_sender(sender: str) -> str:
    return parseaddr(sender)[1]
