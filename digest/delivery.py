"""Delivery: hand finished messages to the outbox folder or to an SMTP server.

A transport is opened once for a batch (`with transport:`), so SMTP reuses one connection for
many messages. Every message carries a key, stable for its digest: the outbox names its file
after it and can later tell whether a message was written.
"""

from __future__ import annotations

import logging
import os
import random
import smtplib
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType

from .mail import envelope_sender
from .settings import Settings

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A message was not delivered; `permanent` says whether trying again can help."""

    def __init__(self, message: str, permanent: bool = False, retries: int = 0) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retries = retries


@dataclass(frozen=True)
class Delivered:
    """Where a message went, and how many times it had to be tried again to get there."""

    where: str
    retries: int = 0


class Transport:
    name = "transport"

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def send(self, message: EmailMessage, key: str) -> Delivered:
        """Deliver `message`, or raise `DeliveryError`."""
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

    def send(self, message: EmailMessage, key: str) -> Delivered:
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
        return Delivered(str(target))

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
    """smtplib over one connection per batch; STARTTLS, SSL and login as the settings say.

    A temporary failure (4xx, 421, a timeout, a dropped or refused connection) is tried again on a
    new connection, up to `smtp_retries` times with exponential backoff; a permanent one (5xx)
    fails that message only, and the connection goes on serving the others.
    """

    name = "smtp"

    def __init__(self, settings: Settings, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.sleep = sleep
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

    def send(self, message: EmailMessage, key: str) -> Delivered:
        recipient = message["To"].addresses[0].addr_spec
        sender = envelope_sender(self.settings.sender)
        retries = 0
        while True:
            try:
                if self._connection is None:
                    self._connection = self._connect()
                refused = self._connection.send_message(message, from_addr=sender, to_addrs=[recipient])
                if refused:  # not for a single recipient (smtplib raises), but be sure
                    code, reply = next(iter(refused.values()))
                    raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
                return Delivered(f"{self.settings.smtp_host}:{self.settings.smtp_port}", retries)
            except Exception as exc:
                problem, permanent = _classify(exc)
                if problem is None:
                    raise
            if permanent:
                log.warning("%s refused for good: %s", recipient, problem)
                raise DeliveryError(problem, permanent=True, retries=retries)
            self._drop()
            if retries >= self.settings.smtp_retries:
                raise DeliveryError(f"{problem} (after {retries + 1} tries)", retries=retries)
            delay = self.settings.smtp_retry_backoff * 2**retries * (0.75 + random.random() / 2)
            log.warning("%s for %s; trying again on a new connection in %.1f s", problem, recipient, delay)
            self.sleep(delay)
            retries += 1

    def _drop(self) -> None:
        """Forget the connection, politely if it still answers."""
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except (OSError, smtplib.SMTPException):
                pass

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.quit()
            except (OSError, smtplib.SMTPException):
                pass
            self._connection = None


def _classify(exc: Exception) -> tuple[str | None, bool]:
    """(what went wrong, whether it is permanent), or (None, False) for an error not about delivery."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(exc.recipients.values()))
        return _reply(code, reply), 500 <= code < 600
    if isinstance(exc, smtplib.SMTPResponseException):  # sender refused, data refused, 421, auth
        return _reply(exc.smtp_code, exc.smtp_error), 500 <= exc.smtp_code < 600
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return f"the SMTP server closed the connection ({exc or 'no reason given'})", False
    if isinstance(exc, (OSError, smtplib.SMTPException)):  # timeouts, refused connections, TLS
        return f"{type(exc).__name__}: {exc}", False
    return None, False


def _reply(code: int, reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return f"SMTP {code} {text}".strip()


def make_transport(settings: Settings) -> Transport:
    if settings.transport == "smtp":
        return SMTPTransport(settings)
    return OutboxTransport(settings.outbox)
