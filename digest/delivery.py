"""Delivery: hand finished messages to the outbox folder or to an SMTP server.

A transport is opened once for a run (`with transport:`), so SMTP reuses its connections for
many messages. Every message carries a key, stable for its digest: the outbox names its file
after it and can later tell whether a message was written.

Speed (see `digest bench`): the outbox writes files without a disk sync each and makes a batch
durable with one `flush()`; SMTP keeps `smtp_connections` connections, one per sending thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import random
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from .mail import Outgoing, envelope_sender
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
    #: Whether `delivered` can tell afterwards if a message went out (then a run may mark a whole
    #: batch `sending` at once: an interruption is resolved by looking).
    verifiable = False
    #: How many threads may call `send` at once.
    connections = 1

    def __enter__(self) -> "Transport":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def send(self, message: Outgoing, key: str) -> Delivered:
        """Deliver `message`, or raise `DeliveryError`."""
        raise NotImplementedError

    def flush(self) -> None:
        """Make what was delivered so far durable (before a run records it as sent)."""

    def delivered(self, key: str) -> bool | None:
        """Whether the message of `key` was delivered: True, False, or None when this cannot be known."""
        return None

    def close(self) -> None:
        pass


class OutboxTransport(Transport):
    """Writes one RFC 5322 `.eml` file per message; a file appears whole or not at all.

    A file is written under a temporary name and renamed, so a crash never leaves half a
    message under its real name. The disk sync is per batch: `flush()` syncs the file system
    once (`syncfs`) and then the folder, instead of one `fsync` per file.
    """

    name = "outbox"
    verifiable = True

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._unsynced = False

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.eml"

    def send(self, message: Outgoing, key: str) -> Delivered:
        target = self.path(key)
        temporary = self.folder / f".{key}.{os.getpid()}.tmp"
        try:
            with open(temporary, "wb") as handle:
                handle.write(message.data)
            os.replace(temporary, target)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise DeliveryError(f"cannot write {target}: {exc}") from exc
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        self._unsynced = True
        return Delivered(str(target))

    def delivered(self, key: str) -> bool:
        """Whether the message of `key` is in the outbox, whole (after a machine crash, a file
        renamed but not yet synced could be empty or cut short: it does not count)."""
        try:
            with open(self.path(key), "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(size - 64, 0))
                tail = handle.read()
        except FileNotFoundError:
            return False
        return tail.rstrip(b"\r\n").endswith(b"--")  # the closing MIME boundary

    def flush(self) -> None:
        if self._unsynced:
            _sync_file_system(self.folder)
            self._unsynced = False

    def close(self) -> None:
        self.flush()


def _sync_file_system(folder: Path) -> None:
    """Everything written to `folder`'s file system so far, and the folder's entries, on disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        if _syncfs is not None:
            _syncfs(fd)
        else:  # not Linux
            os.sync()
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


_syncfs = _load_syncfs()


class SMTPTransport(Transport):
    """smtplib over `smtp_connections` connections, each reused for many messages and owned by
    one sending thread; STARTTLS, SSL and login as the settings say.

    A temporary failure (4xx, 421, a timeout, a dropped or refused connection) is tried again on a
    new connection, up to `smtp_retries` times with exponential backoff; a permanent one (5xx)
    fails that message only, and the connection goes on serving the others.
    """

    name = "smtp"

    def __init__(self, settings: Settings, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.sleep = sleep
        self.connections = settings.smtp_connections
        self._local = threading.local()
        self._open: set[smtplib.SMTP] = set()
        self._lock = threading.Lock()

    @property
    def _connection(self) -> smtplib.SMTP | None:
        return getattr(self._local, "connection", None)

    @_connection.setter
    def _connection(self, connection: smtplib.SMTP | None) -> None:
        with self._lock:
            old = getattr(self._local, "connection", None)
            self._open.discard(old)
            if connection is not None:
                self._open.add(connection)
        self._local.connection = connection

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

    def send(self, message: Outgoing, key: str) -> Delivered:
        recipient = message.recipient
        sender = envelope_sender(self.settings.sender)
        retries = 0
        while True:
            try:
                if self._connection is None:
                    self._connection = self._connect()
                refused = self._connection.sendmail(sender, [recipient], message.data)
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
        """Say goodbye on every connection, whichever thread opened it."""
        with self._lock:
            connections, self._open = list(self._open), set()
        for connection in connections:
            try:
                connection.quit()
            except (OSError, smtplib.SMTPException):
                pass
        self._local = threading.local()


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
