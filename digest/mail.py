"""The email itself: `multipart/alternative` (text, then HTML) with the headers of DESIGN.md § Email."""

from __future__ import annotations

import datetime as dt
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, parseaddr

from .render import RenderedDigest


def sender_domain(sender: str) -> str:
    address = parseaddr(sender)[1]
    return address.rpartition("@")[2] or "localhost"


def message_id(digest_id: int, local_date: dt.date, sender: str) -> str:
    """Stable for a digest, so a message re-sent after a crash is recognisably the same one."""
    return f"<digest.{local_date:%Y%m%d}.{digest_id}@{sender_domain(sender)}>"


def compose(
    *,
    rendered: RenderedDigest,
    sender: str,
    to_email: str,
    to_name: str | None,
    msg_id: str,
    unsubscribe_url: str,
    date: dt.datetime,
) -> EmailMessage:
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = Address(display_name=to_name or "", addr_spec=to_email) if to_name else to_email
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(date.astimezone(dt.timezone.utc))
    message["Message-ID"] = msg_id
    message["List-Id"] = formataddr(("Paper Digest", f"digest.{sender_domain(sender)}"))
    message["List-Unsubscribe"] = f"<{unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Auto-Submitted"] = "auto-generated"
    message["Precedence"] = "bulk"
    message.set_content(rendered.text, subtype="plain", charset="utf-8")
    message.add_alternative(rendered.html, subtype="html", charset="utf-8")
    return message


def envelope_sender(sender: str) -> str:
    return parseaddr(sender)[1]
