"""Mail that lands: DKIM signatures dkimpy verifies (DNS, the internet part, stood in for by
dkimpy's `dnsfunc` hook)."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import dkim
import pytest

from digest.mail import DkimError, DkimKey
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
    workdir.cli("ingest", "config/sample-feed.jsonl", check=True, **env)
    workdir.cli("profiles", "sync", check=True, **env)
    workdir.cli("send", check=True, **env)
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
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(DkimError) as caught:
        DkimKey.load(bad, "s", "example.net")
    assert "DIGEST_DKIM_KEY" in str(caught.value) and "bad.pem" in str(caught.value)
    with pytest.raises(DkimError):
        DkimKey.load(tmp_path / "missing.pem", "s", "example.net")
    result = workdir.cli("send", DIGEST_DKIM_KEY=str(bad), DIGEST_DKIM_SELECTOR="s", DIGEST_DKIM_DOMAIN="example.net")
    assert result.returncode == 2 and "DIGEST_DKIM_KEY" in result.stderr
