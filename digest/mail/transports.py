"""Delivery: hand finished messages to the outbox folder or to an SMTP server.

A transport is opened once for a run (`with transport:`), so SMTP reuses its connections for
many messages. Every message carries a key, stable for its digest: the outbox names its file
after it and can later tell whether a message was written.

Speed (see `digest bench`): the outbox writes files without a disk sync each and makes a batch
durable with one `flush()`; SMTP keeps `smtp_connections` connections, one per sending thread.

A failure says whose it is (`DeliveryError`): the recipient's (a 5xx to RCPT TO: a bounce,
which counts towards switching the address off), this message's, or the server's and the
session's (a refused connection, no answer, a failed login or TLS handshake, our sender
refused). A server fault is never held against a recipient: the run stops and leaves the rest
for the next one, and after `SERVER_FAILURE_LIMIT` of them in a row (or one that trying again
cannot mend, such as a wrong password) the transport stops trying the server at all.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import re
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ..backoff import backoff_delay
from ..settings import Settings
from .compose import Outgoing, envelope_sender

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A message was not delivered, and whose fault it was.

    `permanent`: trying this message again cannot help (the digest is `failed`). `bounce`: the
    server said the address itself is bad (counts towards switching it off). `server`: the
    server or the session failed, not this recipient (the run stops; the digest is deferred,
    or, when it was never `tried`, left pending).
    """

    def __init__(self, message: str, permanent: bool = False, retries: int = 0, *, bounce: bool = False, server: bool = False, tried: bool = True) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retries = retries
        self.bounce = bounce
        self.server = server
        self.tried = tried


#: Server faults in a row (across all connections, each try counting) after which a run stops
#: trying the server: with the default SMTP_TIMEOUT and SMTP_CONNECTIONS, a server that accepts
#: connections and never answers costs about one timeout, not timeout x retries per message.
SERVER_FAILURE_LIMIT = 3


class CircuitBreaker:
    """Counts server faults in a row; once open, every message fails at once, untried.

    Any answer of the server about a message (delivered, or refused for its recipient) closes
    the count again. A fault that trying again cannot mend (a refused login, a failed TLS
    handshake, our sender refused) opens it at once: retrying a wrong password only gets the
    account locked.
    """

    def __init__(self, limit: int = SERVER_FAILURE_LIMIT) -> None:
        self.limit = limit
        self.failures = 0
        self.reason: str | None = None
        self._lock = threading.Lock()

    def check(self) -> None:
        if self.reason is not None:
            raise DeliveryError(self.reason, server=True, tried=False)

    def failed(self, problem: str, hopeless: bool = False) -> bool:
        """Count a server fault; True when the breaker is (now) open."""
        with self._lock:
            self.failures += 1
            if self.reason is None and (hopeless or self.failures >= self.limit):
                self.reason = problem if hopeless else f"{problem}; stopped trying the server after {self.failures} failures in a row"
                log.info("circuit breaker open: %s", self.reason)
            return self.reason is not None

    def answered(self) -> None:
        with self._lock:
            self.failures = 0


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
        """Open for a run (a fault here, such as an outbox that cannot be made, is a server
        `DeliveryError`)."""
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def eight_bit_mime(self) -> bool:
        """Whether messages may carry 8bit bodies (see `compose`); asked once a run, after the
        transport is opened. No by default: quoted-printable goes anywhere."""
        return False

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
    message under its real name. The temporary files live in a folder of this process's own
    (`.drafts.<pid>`, removed when the transport closes): the shared folder then sees one rename
    per message, not a create, a rename and a removal, and two senders writing one outbox no
    longer queue on its lock (two senders at 20,000 subscribers: 28.7 -> 25.6 CPU s each). The
    disk sync is per batch: `flush()` syncs the file system once (`syncfs`) and then the folder,
    instead of one `fsync` per file.
    """

    name = "outbox"
    verifiable = True

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.drafts = self.folder / f".drafts.{os.getpid()}"
        self._unsynced = False

    def __enter__(self) -> "OutboxTransport":
        try:
            self.drafts.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeliveryError(f"cannot create the outbox folder {self.folder}: {exc.strerror or exc}", server=True, tried=False) from None
        return self

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.eml"

    def eight_bit_mime(self) -> bool:
        """Yes: a file carries any octet, and what hands an `.eml` file on (sendmail, a Postfix
        or Exim pickup) takes 8bit MIME and converts it where a next hop lacks 8BITMIME."""
        return True

    def send(self, message: Outgoing, key: str) -> Delivered:
        target = self.path(key)
        temporary = self.drafts / f"{key}.tmp"
        try:
            with open(temporary, "wb") as handle:
                handle.write(message.data)
            os.replace(temporary, target)
        except OSError as exc:  # a full disk, a folder gone or read-only: nobody's address is at fault
            temporary.unlink(missing_ok=True)
            raise DeliveryError(f"cannot write {target}: {exc.strerror or exc}", server=True) from exc
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
        with contextlib.suppress(OSError):  # not made, or a crashed write left something in it
            self.drafts.rmdir()


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
    new connection, up to `smtp_retries` times with exponential backoff, while the circuit
    breaker is closed; a permanent one (5xx) about a recipient or a message fails that message
    only, and the connection goes on serving the others. A fault of the server or the session
    counts towards the breaker (see the module docstring).
    """

    name = "smtp"

    def __init__(self, settings: Settings, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.sleep = sleep
        self.connections = settings.smtp_connections
        self._local = threading.local()
        self._open: set[smtplib.SMTP] = set()
        #: The connection `eight_bit_mime` opened, for the first thread that needs one.
        self._spare: smtplib.SMTP | None = None
        self._lock = threading.Lock()
        self.breaker = CircuitBreaker()

    def __enter__(self) -> "SMTPTransport":
        self.breaker = CircuitBreaker()  # each run gives the server a fresh chance
        return self

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

    def _spare_connection(self) -> smtplib.SMTP | None:
        with self._lock:
            spare, self._spare = self._spare, None
        return spare

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

    def eight_bit_mime(self) -> bool:
        """Whether the server offers 8BITMIME (RFC 6152), asked on a connection that then serves
        the first thread to send. A server that cannot be reached now gets quoted-printable; a
        fault that trying again cannot mend (a wrong password) opens the circuit breaker at
        once, so no message logs in again, and any other is left for the messages to meet and
        count (the retries a message is promised stay its own)."""
        try:
            self.breaker.check()
            connection = self._connect()
        except DeliveryError:
            return False
        except Exception as exc:
            fault = _classify(exc, "connect")
            if fault is None:
                raise
            if fault.permanent:
                self.breaker.failed(fault.problem, hopeless=True)
            log.info("could not ask the SMTP server for 8BITMIME (messages go quoted-printable): %s", fault.problem)
            return False
        with self._lock:
            self._open.add(connection)
            self._spare = connection
        return bool(connection.has_extn("8bitmime"))

    def send(self, message: Outgoing, key: str) -> Delivered:
        recipient = message.recipient
        sender = envelope_sender(self.settings.sender)
        retries = 0
        while True:
            self.breaker.check()
            stage = "connect"
            try:
                if self._connection is None:
                    self._connection = self._spare_connection() or self._connect()
                stage = "send"
                options = ()
                if message.eight_bit:
                    if not self._connection.has_extn("8bitmime"):  # not what the server said when the run began
                        self.breaker.failed("the SMTP server no longer offers 8BITMIME, which this run's messages need", hopeless=True)
                        raise DeliveryError(self.breaker.reason, server=True, tried=False)  # the next run composes for it
                    options = ("BODY=8BITMIME",)
                refused = self._connection.sendmail(sender, [recipient], message.data, mail_options=options)
                if refused:  # not for a single recipient (smtplib raises), but be sure
                    code, reply = next(iter(refused.values()))
                    raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
                self.breaker.answered()
                return Delivered(f"{self.settings.smtp_host}:{self.settings.smtp_port}", retries)
            except Exception as exc:
                fault = _classify(exc, stage)
                if fault is None:
                    raise
            if fault.server:
                self._drop()
                if self.breaker.failed(fault.problem, hopeless=fault.permanent):
                    raise DeliveryError(self.breaker.reason, retries=retries, server=True) from None
            else:
                self.breaker.answered()
                if fault.permanent:
                    log.warning("%s refused for good: %s", recipient, fault.problem)
                    raise DeliveryError(fault.problem, permanent=True, retries=retries, bounce=fault.bounce)
                self._drop()
            if retries >= self.settings.smtp_retries:
                raise DeliveryError(f"{fault.problem} (after {retries + 1} tries)", retries=retries)
            delay = backoff_delay(self.settings.smtp_retry_backoff, retries)
            log.warning("%s for %s; trying again on a new connection in %.1f s", fault.problem, recipient, delay)
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
            connections, self._open, self._spare = list(self._open), set(), None
        for connection in connections:
            try:
                connection.quit()
            except (OSError, smtplib.SMTPException):
                pass
        self._local = threading.local()


@dataclass(frozen=True)
class _Fault:
    problem: str
    permanent: bool
    #: The server or the session failed, not this recipient or message.
    server: bool = False
    #: The server said the address is bad.
    bounce: bool = False


#: RFC 3463 enhanced status codes: the subject of X.1.Y is the address, of X.2.Y the mailbox.
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


def _says_address_is_bad(code: int, reply: bytes | str, unqualified: bool) -> bool:
    """Whether a 5xx reply blames the address or mailbox (5.1.x, 5.2.x); one without an enhanced
    code (an old server) counts as `unqualified` says. A 5xx about policy, the system or the
    content (5.7.1 relaying denied, say) is no evidence against the address, and never
    switches anyone off."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    enhanced = _ENHANCED.match(text)
    return 500 <= code < 600 and (enhanced.group(2) in ("1", "2") if enhanced else unqualified)


def _classify(exc: Exception, stage: str = "send") -> _Fault | None:
    """What went wrong, and whose fault it is; None for an error not about delivery.

    `stage` "connect": opening the session (connect, greeting, EHLO, STARTTLS, AUTH): every
    fault there is the server's, and a 5xx, a failed TLS handshake or a missing extension
    will not mend by trying again. "send": MAIL, RCPT and DATA of one message.
    """
    if stage == "connect":
        if isinstance(exc, ssl.SSLError):
            return _Fault(f"TLS with the SMTP server failed: {exc}", permanent=True, server=True)
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return _Fault(f"the SMTP server refused the login: {_reply(exc.smtp_code, exc.smtp_error)}", 500 <= exc.smtp_code < 600, server=True)
        if isinstance(exc, smtplib.SMTPResponseException):  # greeting, EHLO, STARTTLS refused
            return _Fault(f"the SMTP server refused the session: {_reply(exc.smtp_code, exc.smtp_error)}", 500 <= exc.smtp_code < 600, server=True)
        if isinstance(exc, smtplib.SMTPNotSupportedError) or type(exc) is smtplib.SMTPException:  # no STARTTLS, no AUTH
            return _Fault(f"the SMTP server cannot do what SMTP_SECURITY / SMTP_USERNAME ask: {exc}", permanent=True, server=True)
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return _Fault(f"the SMTP server closed the connection ({exc or 'no reason given'})", False, server=True)
        if isinstance(exc, OSError):  # refused, unreachable, no answer within SMTP_TIMEOUT
            return _Fault(f"cannot reach the SMTP server {type(exc).__name__}: {exc}", False, server=True)
        return None
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(exc.recipients.values()))
        if code == 421:  # the server is closing the session, whoever the recipient
            return _Fault(_reply(code, reply), False, server=True)
        return _Fault(_reply(code, reply), 500 <= code < 600, bounce=_says_address_is_bad(code, reply, unqualified=True))
    if isinstance(exc, smtplib.SMTPSenderRefused):  # our own address: the same for every message
        return _Fault(f"the SMTP server refused the sender {exc.sender}: {_reply(exc.smtp_code, exc.smtp_error)}", 500 <= exc.smtp_code < 600, server=True)
    if isinstance(exc, smtplib.SMTPDataError) and exc.smtp_code != 421:  # this message refused
        return _Fault(_reply(exc.smtp_code, exc.smtp_error), 500 <= exc.smtp_code < 600,
                      bounce=_says_address_is_bad(exc.smtp_code, exc.smtp_error, unqualified=False))
    if isinstance(exc, smtplib.SMTPResponseException):  # 421, or EHLO refused: the session, not the message
        return _Fault(_reply(exc.smtp_code, exc.smtp_error), 500 <= exc.smtp_code < 600, server=True)
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return _Fault(f"the SMTP server closed the connection ({exc or 'no reason given'})", False, server=True)
    if isinstance(exc, smtplib.SMTPNotSupportedError):  # this message needs an extension the server lacks (SMTPUTF8)
        return _Fault(f"the SMTP server cannot take this message: {exc}", permanent=True)
    if isinstance(exc, (OSError, smtplib.SMTPException)):  # timeouts, resets
        return _Fault(f"{type(exc).__name__}: {exc}", False, server=True)
    return None


def _reply(code: int, reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return f"SMTP {code} {text}".strip()


def make_transport(settings: Settings) -> Transport:
    if settings.transport == "smtp":
        return SMTPTransport(settings)
    return OutboxTransport(settings.outbox)
