"""Settings from the environment, loaded from `.env` with python-dotenv.

The variables and their defaults are the README's (§ Configuration). Values already in the
process environment win over `.env`, so a test or a deployment can override any of them.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values

from .links import weak_key_problem

log = logging.getLogger(__name__)

#: The templates installed with the package (the repository's `templates/`, package data of
#: `digest.templates`): used unless DIGEST_TEMPLATES or the working directory names others.
PACKAGED_TEMPLATES = Path(str(resources.files("digest.templates")))

TRANSPORTS = ("outbox", "smtp")
SMTP_SECURITY = ("none", "starttls", "ssl")
#: A DKIM selector or signing domain: dot-separated DNS labels (RFC 6376 § 3.1, `sub-domain`).
_DNS_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


class SettingsError(ValueError):
    """A setting has a value the program cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///var/digest.db"
    config_path: Path = Path("config/digest.yaml")
    profiles_dir: Path = Path("config/subscribers")
    templates_dir: Path = PACKAGED_TEMPLATES
    transport: str = "outbox"
    outbox: Path = Path("var/outbox")
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_security: str = "none"
    smtp_timeout: float = 30.0
    #: Tries after the first for a temporary SMTP failure (4xx, timeouts, dropped connections),
    #: each on a new connection, waiting `smtp_retry_backoff` x 2^n seconds before the n-th.
    smtp_retries: int = 4
    smtp_retry_backoff: float = 2.0
    #: Processes that render and compose the messages of a large `digest send` (default: one per CPU).
    workers: int = 1
    #: SMTP connections open at once, each reused for many messages (one sending thread each).
    smtp_connections: int = 4
    #: Seconds a send process's lease on a batch lasts without renewal (`coordination`): how soon
    #: another process takes over the batch of one that died.
    send_lease: float = 60.0
    #: Subscribers ranked, claimed and leased together: the unit of work send processes share.
    send_batch: int = 500
    sender: str = "Paper Digest <digest@localhost>"
    base_url: str = "http://127.0.0.1:8000"
    secret_key: str | None = field(default=None, repr=False)
    #: Earlier keys still accepted for tracked links, so that rotating the key keeps old mail working.
    old_secret_keys: tuple[str, ...] = field(default=(), repr=False)
    #: DKIM signing (all three or none): the private key file (PEM), the selector and the domain
    #: whose DNS publishes the public key at `<selector>._domainkey.<domain>`.
    dkim_key: Path | None = None
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    #: With the `semantic` extra: a fastembed model name or a local model folder (None: TF-IDF only).
    embedding_model: str | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, dotenv_path: str | os.PathLike | None = ".env") -> "Settings":
        """Read settings from `environ` (default: the process environment) over `.env`."""
        values: dict[str, str | None] = {}
        if dotenv_path is not None and Path(dotenv_path).is_file():
            values.update(dotenv_values(dotenv_path))
            if values.get("DIGEST_SECRET_KEY"):
                warn_if_readable(Path(dotenv_path))
        # A variable set but empty does not hide the value of `.env`.
        values.update({k: v for k, v in (os.environ if environ is None else environ).items() if v != ""})

        def get(name: str, default: str | None = None) -> str | None:
            value = values.get(name)
            return default if value is None or value == "" else value

        def number(name: str, default: str, kind: type = float) -> float:
            value = get(name, default)
            try:
                result = kind(value)
            except ValueError:
                raise SettingsError(f"{name} must be a number, not {value!r}") from None
            if result < 0:
                raise SettingsError(f"{name} must not be negative, not {value!r}")
            return result

        if number("SMTP_CONNECTIONS", "4", int) < 1:
            raise SettingsError("SMTP_CONNECTIONS must be at least 1")
        transport = get("DIGEST_TRANSPORT", "outbox").lower()
        if transport not in TRANSPORTS:
            raise SettingsError(f"DIGEST_TRANSPORT must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
        security = get("SMTP_SECURITY", "none").lower()
        if security not in SMTP_SECURITY:
            raise SettingsError(f"SMTP_SECURITY must be one of {', '.join(SMTP_SECURITY)}, not {security!r}")
        base_url = get("DIGEST_BASE_URL", cls.base_url).rstrip("/")
        if urlsplit(base_url).scheme not in ("http", "https") or not urlsplit(base_url).netloc or _has_control(base_url):
            raise SettingsError(f"DIGEST_BASE_URL must be an http(s) URL, not {base_url!r}")
        if _has_control(get("DIGEST_FROM", cls.sender)):  # it goes into the From: header of every message
            raise SettingsError(f"DIGEST_FROM must be one line of text, not {get('DIGEST_FROM')!r}")
        old_keys = tuple(k.strip() for k in (get("DIGEST_OLD_SECRET_KEYS", "") or "").split(",") if k.strip())
        dkim = {name: get(name) for name in ("DIGEST_DKIM_KEY", "DIGEST_DKIM_SELECTOR", "DIGEST_DKIM_DOMAIN")}
        if any(dkim.values()) and not all(dkim.values()):
            missing = ", ".join(name for name, value in dkim.items() if not value)
            raise SettingsError(f"DKIM signing needs DIGEST_DKIM_KEY, DIGEST_DKIM_SELECTOR and DIGEST_DKIM_DOMAIN; {missing} not set")
        for name in ("DIGEST_DKIM_SELECTOR", "DIGEST_DKIM_DOMAIN"):  # both go into every message's DKIM-Signature header
            if dkim[name] and not _DNS_NAME.fullmatch(dkim[name]):
                raise SettingsError(f"{name} must be a DNS name such as mail2026 or example.org, not {dkim[name]!r}")
        return cls(
            database_url=get("DIGEST_DATABASE_URL", cls.database_url),
            config_path=Path(get("DIGEST_CONFIG", str(cls.config_path))),
            profiles_dir=Path(get("DIGEST_PROFILES", str(cls.profiles_dir))),
            templates_dir=_templates(get("DIGEST_TEMPLATES")),
            transport=transport,
            outbox=Path(get("DIGEST_OUTBOX", str(cls.outbox))),
            smtp_host=get("SMTP_HOST", cls.smtp_host),
            smtp_port=number("SMTP_PORT", "25", int),
            smtp_username=get("SMTP_USERNAME"),
            smtp_password=get("SMTP_PASSWORD"),
            smtp_security=security,
            smtp_timeout=number("SMTP_TIMEOUT", "30"),
            smtp_retries=number("SMTP_RETRIES", "4", int),
            smtp_retry_backoff=number("SMTP_RETRY_BACKOFF", "2"),
            smtp_connections=number("SMTP_CONNECTIONS", "4", int),
            send_lease=max(1.0, number("DIGEST_SEND_LEASE", "60")),
            send_batch=max(1, number("DIGEST_SEND_BATCH", "500", int)),
            workers=max(1, number("DIGEST_WORKERS", str(os.cpu_count() or 1), int)),
            sender=get("DIGEST_FROM", cls.sender),
            base_url=base_url,
            secret_key=get("DIGEST_SECRET_KEY"),
            old_secret_keys=old_keys,
            dkim_key=Path(dkim["DIGEST_DKIM_KEY"]) if dkim["DIGEST_DKIM_KEY"] else None,
            dkim_selector=dkim["DIGEST_DKIM_SELECTOR"],
            dkim_domain=dkim["DIGEST_DKIM_DOMAIN"],
            embedding_model=get("DIGEST_EMBEDDING_MODEL"),
        )

    def require_secret_key(self) -> str:
        """The signing key, or a clear error: tracked links cannot be made without a key, nor
        safely with a weak one (or with a weak earlier key still accepted)."""
        if not self.secret_key:
            raise SettingsError("DIGEST_SECRET_KEY is not set: run `digest init` (or `make run`) to write one to .env")
        problem = weak_key_problem(self.secret_key)
        if problem:
            raise SettingsError(f"DIGEST_SECRET_KEY {problem}: remove it from .env and run `digest init` to write a random one")
        for n, key in enumerate(self.old_secret_keys, start=1):
            problem = weak_key_problem(key)
            if problem:
                raise SettingsError(f"DIGEST_OLD_SECRET_KEYS: key {n} {problem}; drop it (links signed with it stop working)")
        return self.secret_key


def warn_if_readable(path: Path) -> bool:
    """Warn when `path`, which holds the secret key, can be read by other users; True if so."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s holds DIGEST_SECRET_KEY and other users can read it (mode %s): run `chmod 600 %s`", path, stat.filemode(mode), path)
        return True
    return False


def _has_control(value: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029" for c in value)


def _templates(setting: str | None) -> Path:
    """DIGEST_TEMPLATES when set; else the working directory's own `templates/` (an operator's
    edited copy); else the templates installed with the package."""
    if setting:
        return Path(setting)
    return Path("templates") if Path("templates", "email").is_dir() else PACKAGED_TEMPLATES
