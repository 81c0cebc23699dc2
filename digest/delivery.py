"""Delivery: hand finished messages to the outbox folder or to an SMTP server.

A transport is opened once for a batch (`with transport:`), so SMTP reuses one connection for
many messages. Every message carries a key, stable for its digest: the outbox names its file
after it and can later tell whether a message was written.
"""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
import tempfile
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType

from .mail import envelope_sender
from .settings import Settings

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A message was not delivered; `permanent` says whether trying again can help."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Transport:
    name = "transport"

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def send(self, message: EmailMessage, key: str) -> str:
        """Deliver `message`; return where it went (a path or the server's reply)."""
        raise NotImplementedError

    def delivered(self, key: str) -> bool | None:
        """Whether the message of `key` was delivered: True, False, or None when this cannot be known."""
        return None

    def close(self) -> None:
        pass


class OutboxTransport(Transport):
    """Writes one RFC 5322 `.eml` file per message; a file appears whole or not at all."""

    name = "outbox"

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.eml"

    def send(self, message: EmailMessage, key: str) -> str:
        target = self.path(key)
        data = message.as_bytes()
        fd, temporary = tempfile.mkstemp(dir=self.folder, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return str(target)

    def delivered(self, key: str) -> bool:
        return self.path(key).exists()

    def close(self) -> None:
        # Make the renames themselves durable.
        try:
            fd = os.open(self.folder, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class SMTPTransport(Transport):
    """smtplib over one connection per batch; STARTTLS, SSL and login as the settings say."""

    name = "smtp"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._connection: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        context = ssl.create_default_context()
        if s.smtp_security == "ssl":
            connection: smtplib.SMTP = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout, context=context)
        else:
            connection = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout)
        connection.ehlo()
        if s.smtp_security == "starttls":
            connection.starttls(context=context)
            connection.ehlo()
        if s.smtp_username:
            connection.login(s.smtp_username, s.smtp_password or "")
        return connection

    def send(self, message: EmailMessage, key: str) -> str:
        recipient = message["To"].addresses[0].addr_spec
        for attempt in (1, 2):
            try:
                if self._connection is None:
                    self._connection = self._connect()
                refused = self._connection.send_message(message, from_addr=envelope_sender(self.settings.sender), to_addrs=[recipient])
            except smtplib.SMTPServerDisconnected:
                # A server may close an idle connection between messages: open a new one, once.
                self._connection = None
                if attempt == 2:
                    raise DeliveryError("the SMTP server closed the connection") from None
                continue
            except smtplib.SMTPRecipientsRefused as exc:
                code, reply = next(iter(exc.recipients.values()))
                raise DeliveryError(_reply(code, reply), permanent=500 <= code < 600) from None
            except smtplib.SMTPResponseException as exc:
                raise DeliveryError(_reply(exc.smtp_code, exc.smtp_error), permanent=500 <= exc.smtp_code < 600) from None
            except (OSError, smtplib.SMTPException) as exc:
                self._connection = None
                raise DeliveryError(f"SMTP {self.settings.smtp_host}:{self.settings.smtp_port}: {exc}") from None
            if refused:
                code, reply = next(iter(refused.values()))
                raise DeliveryError(_reply(code, reply), permanent=500 <= code < 600)
            return f"{self.settings.smtp_host}:{self.settings.smtp_port}"
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.quit()
            except (OSError, smtplib.SMTPException):
                pass
            self._connection = None


def _reply(code: int, reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return f"SMTP {code} {text}".strip()


def make_transport(settings: Settings) -> Transport:
    if settings.transport == "smtp":
        return SMTPTransport(settings)
    return OutboxTransport(settings.outbox)
