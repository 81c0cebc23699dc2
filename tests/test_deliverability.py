"""Mail that lands: DKIM signatures dkimpy verifies (DNS, the internet part, stood in for by
dkimpy's `dnsfunc` hook), and a sample email SpamAssassin (offline, `-L`) scores at most 0, with no
rule about low contrast or hidden text."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import dkim
import pytest

from digest.config import load_config
from digest.ingest import ingest_source
from digest.mail.compose import DkimError, DkimKey
from digest.mail.render import Renderer
from digest.mail.transports import OutboxTransport
from digest.profiles import sync_profiles
from digest.send.run import DigestSender
from digest.settings import Settings, SettingsError

from .conftest import Workdir


def make_key(folder: Path) -> tuple[Path, str]:
    """A fresh 2048-bit RSA key (openssl) and the TXT record that would publish it."""
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.skip("no openssl here to make a DKIM key")
    key = folder / "dkim.pem"
    subprocess.run([openssl, "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    public = subprocess.run([openssl, "rsa", "-in", str(key), "-pubout", "-outform", "DER"], check=True, capture_output=True).stdout
    return key, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


def send_sample(workdir: Workdir, **env: str) -> list[bytes]:
    """Today's digests of the sample feed and the example profiles, as they are on the wire."""
    settings = workdir.settings(**env)
    db = workdir.db()
    ingest_source(db, "config/sample-feed.jsonl")
    sync_profiles(db, settings.profiles_dir)
    DigestSender(db, settings, load_config(settings.config_path), Renderer(settings.templates_dir), OutboxTransport(settings.outbox)).run()
    return [p.read_bytes() for p in workdir.outbox()]


def test_dkim_signed_messages_verify_and_cover_the_unsubscribe_headers(workdir: Workdir, tmp_path: Path) -> None:
    key, record = make_key(tmp_path)
    published = {b"mail2026._domainkey.example.net.": record.encode()}
    asked: list[bytes] = []

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        asked.append(name)
        return published.get(name)

    env = {"DIGEST_DKIM_KEY": str(key), "DIGEST_DKIM_SELECTOR": "mail2026", "DIGEST_DKIM_DOMAIN": "example.net"}
    messages = send_sample(workdir, **env)
    assert len(messages) == 4
    for data in messages:
        assert data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.net;")
        assert dkim.verify(data, dnsfunc=dns)
        signed = re.search(rb"h=([^;]+);", re.sub(rb"\r\n\s+", b"", data.split(b"\r\n\r\n", 1)[0])).group(1).replace(b" ", b"").lower().split(b":")
        assert {b"list-unsubscribe", b"list-unsubscribe-post", b"from", b"subject", b"message-id"} <= set(signed)
        assert not dkim.verify(data.replace(b"More like this", b"More like that", 1), dnsfunc=dns)  # the body is covered
        tampered = re.sub(rb"(List-Unsubscribe: <[^>]*?)(.)>", lambda m: m.group(1) + (b"x" if m.group(2) != b"x" else b"y") + b">", data, count=1)
        assert tampered != data and not dkim.verify(tampered, dnsfunc=dns)
    assert set(asked) == set(published)


def test_unsigned_without_the_settings_and_clear_errors_for_half_settings(workdir: Workdir, tmp_path: Path) -> None:
    for data in send_sample(workdir):
        assert b"DKIM-Signature" not in data
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"DIGEST_DKIM_KEY": "k.pem", "DIGEST_DKIM_DOMAIN": "example.net"}, dotenv_path=None)
    assert "DIGEST_DKIM_SELECTOR not set" in str(caught.value)
    for name, value in (("DIGEST_DKIM_SELECTOR", "s\r\nBcc: all@example.net"), ("DIGEST_DKIM_SELECTOR", "s; d=evil.example"), ("DIGEST_DKIM_DOMAIN", "example.net\x00")):
        values = {"DIGEST_DKIM_KEY": "k.pem", "DIGEST_DKIM_SELECTOR": "s", "DIGEST_DKIM_DOMAIN": "example.net", name: value}
        with pytest.raises(SettingsError, match=f"{name} must be a DNS name"):  # it would be written into every message's header
            Settings.from_env(values, dotenv_path=None)
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(DkimError) as caught:
        DkimKey.load(bad, "s", "example.net")
    assert "DIGEST_DKIM_KEY" in str(caught.value) and "bad.pem" in str(caught.value)
    with pytest.raises(DkimError):
        DkimKey.load(tmp_path / "missing.pem", "s", "example.net")
    result = workdir.cli("send", DIGEST_DKIM_KEY=str(bad), DIGEST_DKIM_SELECTOR="s", DIGEST_DKIM_DOMAIN="example.net")
    assert result.returncode == 2 and "DIGEST_DKIM_KEY" in result.stderr


# --- SpamAssassin ------------------------------------------------------------------------------------------

#: Rules about text a reader cannot see (low contrast, hidden or tiny text): none may hit.
HIDDEN_TEXT = re.compile(r"HTML_FONT_LOW_CONTRAST|LOW_CONTRAST|HIDDEN|INVISIBLE|TINY_FONT|FONT_SIZE|HTML_SHORT_LINK_IMG|OBFU", re.I)


def spamassassin(data: bytes, folder: Path) -> tuple[float, list[str], str]:
    """SpamAssassin's score, the rules hit and its report, run offline (`-L`) on its shipped rules."""
    binary = shutil.which("spamassassin")
    if not binary:
        pytest.skip("spamassassin is not installed here (CI installs Debian's package)")
    prefs = folder / "user_prefs"
    prefs.write_text("")
    result = subprocess.run([binary, "-L", "-t", "-p", str(prefs)], input=data, capture_output=True, timeout=300,
                            env={"HOME": str(folder), "PATH": "/usr/bin:/bin"})
    report = result.stdout.decode("utf-8", "replace")
    score = re.search(r"Content analysis details:\s+\((-?[\d.]+) points", report)
    assert score, report[-3000:] + result.stderr.decode(errors="replace")[-2000:]
    rules = re.findall(r"^\s*-?\d+\.\d+\s+([A-Z0-9_]+)\s", report.split("Content analysis details:")[1], re.M)
    return float(score.group(1)), rules, report


def test_the_sample_email_scores_at_most_zero_in_spamassassin(workdir: Workdir, tmp_path: Path) -> None:
    data = next(m for m in send_sample(workdir) if b"ada@example.org" in m)
    assert b"Content-Transfer-Encoding: 8bit" in data  # as the outbox gets it (see `compose`)
    score, rules, report = spamassassin(data, tmp_path)
    assert score <= 0, report[-2500:]
    assert not [r for r in rules if HIDDEN_TEXT.search(r)], rules
    print("SpamAssassin:", score, rules)
