"""The web endpoints, served by a real uvicorn on loopback (`digest web` as a subprocess)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import secrets
import shutil
import sqlite3
import threading
import time
from email import message_from_bytes, policy
from pathlib import Path
from urllib.parse import quote_plus, urlsplit

import httpx
import numpy
import pytest
from itsdangerous import Signer
from lxml import html as lxml_html
from sqlalchemy import text
from sqlmodel import select

from digest.config import load_config
from digest.db import Database
from digest.ingest import ingest_source
from digest.links import safe_url
from digest.mail.render import Renderer
from digest.mail.transports import OutboxTransport
from digest.models import Digest, DigestItem, FeedbackEvent, Paper, Subscriber
from digest.profiles import sync_profiles
from digest.send.run import DigestSender

from .browser import measure
from .conftest import NOW, TEST_KEY, Web, Workdir, send_today


def links(workdir: Workdir, email: str = "ada@example.org") -> dict[str, list[str]]:
    """The tracked links of `email`'s message in the outbox (or of the file whose name holds it), by kind."""
    path = next(p for p in workdir.outbox() if email.replace("@", "_") in p.name)
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    hrefs = lxml_html.fromstring(message.get_body(("html",)).get_content()).xpath("//a/@href")
    return {kind: [h for h in hrefs if f"/{kind}/" in h] for kind in "cdfuvp"}


def events(workdir: Workdir) -> list[FeedbackEvent]:
    with workdir.db().session() as session:
        return list(session.exec(select(FeedbackEvent).order_by(FeedbackEvent.id)))


def subscriber(workdir: Workdir, email: str) -> Subscriber:
    with workdir.db().session() as session:
        return session.exec(select(Subscriber).where(Subscriber.email == email)).one()


def test_a_click_is_recorded_and_redirects_to_the_paper(web: Web, workdir: Workdir) -> None:
    first = links(workdir)["c"][0]
    assert first.startswith(web.base + "/c/")
    response = web.client.get(first)
    assert response.status_code == 302
    with workdir.db().session() as session:
        paper = session.get(Paper, events(workdir)[0].paper_id)
    assert response.headers["location"] == paper.url
    web.client.get(first)
    recorded = events(workdir)
    assert [(e.kind, e.repeat) for e in recorded] == [("click", False), ("click", True)]
    assert recorded[0].digest_item_id is not None and recorded[0].created_at.tzinfo is not None


def test_head_records_nothing(web: Web, workdir: Workdir) -> None:
    found = links(workdir)
    assert web.client.head(found["c"][0]).status_code == 302
    assert web.client.head(found["f"][0]).status_code == 200
    assert web.client.head(found["v"][0]).status_code == 200
    assert events(workdir) == []


def test_forged_altered_and_truncated_tokens_answer_404_and_store_nothing(web: Web, workdir: Workdir) -> None:
    found = links(workdir)
    click = found["c"][0]
    token = click.rsplit("/", 1)[1]
    value, owner, signature = token.split(".")
    forged = [
        f"{web.base}/c/{value}.{owner}.{signature[:-2]}",  # truncated
        f"{web.base}/c/{value[:-1]}{'9' if value[-1] != '9' else '8'}.{owner}.{signature}",  # another item, same signature
        f"{web.base}/c/c1.{owner}.{'A' * len(signature)}",  # made up
        f"{web.base}/c/{value}.{owner}",  # no signature
        f"{web.base}/c/{value}.{signature}",  # no owner
        f"{web.base}/u/{token}",  # a click token used to unsubscribe
        f"{web.base}/v/{token}",
        f"{web.base}/f/{token}?v=up",
    ]
    for url in forged:
        response = web.client.get(url)
        assert response.status_code == 404, url
        assert "does not work" in response.text
    assert web.client.post(f"{web.base}/u/{token}").status_code == 404
    assert events(workdir) == []
    assert subscriber(workdir, "ada@example.org").active


def test_open_redirects_fail(web: Web, workdir: Workdir) -> None:
    click = links(workdir)["c"][0]
    for attempt in (click + "?next=https://evil.example/", click + "?url=//evil.example", click.replace("/c/", "/c//evil.example/")):
        response = web.client.get(attempt)
        location = response.headers.get("location", "")
        assert "evil.example" not in location, attempt
        assert response.status_code in (302, 404)
        if response.status_code == 302:
            assert urlsplit(location).netloc == "example.org"
    # A stored URL that is not http(s) is never followed: the paper is looked up by its title instead.
    with workdir.db().transaction() as session:
        item_paper = session.get(Paper, events(workdir)[0].paper_id)
        item_paper.url, item_paper.pdf_url = "javascript:alert(1)", None
        session.add(item_paper)
    response = web.client.get(click)
    assert response.status_code == 302 and "javascript" not in response.headers["location"]
    assert response.headers["location"] == "https://huggingface.co/papers?q=" + quote_plus(item_paper.title)
    assert safe_url("https://arxiv.org/abs/1") and not safe_url("//evil.example") and not safe_url("data:text/html,x")


def test_thumbs_are_recorded_with_a_short_page(web: Web, workdir: Workdir) -> None:
    feedback = links(workdir)["f"]
    up, down = feedback[0], feedback[3]
    assert up.endswith("?v=up") and down.endswith("?v=down")
    assert "More like this" in web.client.get(up).text
    assert "Less like this" in web.client.get(down).text
    bad = web.client.get(up.replace("v=up", "v=sideways"))
    assert bad.status_code == 400
    assert [e.kind for e in events(workdir)] == ["up", "down"]


def test_the_digest_in_the_browser_is_the_email(web: Web, workdir: Workdir) -> None:
    found = links(workdir)
    response = web.client.get(found["v"][0])
    assert response.status_code == 200
    page = lxml_html.fromstring(response.text)
    assert page.xpath("//a[contains(@href, '/c/')]/@href") == found["c"]
    assert [e.kind for e in events(workdir)] == ["view"]
    assert response.headers["cache-control"] == "no-store"


def test_get_and_head_keep_the_subscription_post_ends_it_for_good(web: Web, workdir: Workdir) -> None:
    unsubscribe = links(workdir, "kenji@example.org")["u"][0]
    page = web.client.get(unsubscribe)
    assert page.status_code == 200
    form = lxml_html.fromstring(page.text).xpath("//form")[0]
    assert form.get("method") == "post" and form.xpath(".//button")
    web.client.head(unsubscribe)
    assert subscriber(workdir, "kenji@example.org").unsubscribed_at is None

    # RFC 8058: what a mail client sends for the List-Unsubscribe-Post header.
    done = web.client.post(unsubscribe, content="List-Unsubscribe=One-Click", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert done.status_code == 200 and "unsubscribed" in done.text
    gone = subscriber(workdir, "kenji@example.org")
    assert gone.unsubscribed_at is not None and not gone.active
    assert [e.kind for e in events(workdir)] == ["unsubscribe"]
    assert web.client.post(unsubscribe).status_code == 200  # twice is harmless

    sync = workdir.cli("profiles", "sync", check=True)
    assert "1 kept unsubscribed" in sync.stdout
    assert not subscriber(workdir, "kenji@example.org").active
    later = (NOW.date() + dt.timedelta(days=3)).isoformat()
    before = {p.name for p in workdir.outbox()}
    workdir.cli("ingest", "config/sample-feed.jsonl", check=True)
    workdir.cli("send", "--date", later, check=True)
    new = {p.name for p in workdir.outbox()} - before
    assert not any("kenji" in name for name in new)


def test_health(web: Web) -> None:
    response = web.client.get(web.base + "/healthz")
    assert (response.status_code, response.text) == (200, "ok")


def test_the_unsubscribe_page_is_usable_on_a_phone(web: Web, workdir: Workdir) -> None:
    page = web.client.get(links(workdir)["u"][0]).text
    assert re.search(r'<html lang="en">', page)
    result = measure(page, 360, """{
      scroll: doc.documentElement.scrollWidth, client: doc.documentElement.clientWidth,
      button: doc.querySelector("form button").innerText,
      buttonHeight: doc.querySelector("form button").getBoundingClientRect().height,
      heading: doc.querySelector("h1").innerText
    }""")
    assert result["scroll"] <= result["client"]
    assert result["button"] == "Unsubscribe ada@example.org"
    assert result["buttonHeight"] >= 40  # a target a thumb can hit
    assert result["heading"].startswith("Unsubscribe")


# --- keys and links: strong keys, links bound to this installation and to their subscriber ----------------------


def first_format(action: str, object_id: int, key: str = TEST_KEY) -> str:
    """A token as versions before the installation id made them: the action and id, signed with the key alone."""
    return Signer(key, salt="digest.links", digest_method=hashlib.sha256).sign(f"{action}{numpy.base_repr(object_id, 36).lower()}").decode()


def copy_database(workdir: Workdir, to: Path) -> None:
    with sqlite3.connect(workdir.env["DIGEST_DATABASE_URL"].removeprefix("sqlite:///")) as source, sqlite3.connect(to) as target:
        source.backup(target)


def test_a_weak_secret_key_is_refused_with_a_clear_error(workdir: Workdir) -> None:
    from digest.settings import SettingsError

    for weak in ("a", " ", "a" * 64, "correct-horse", "abcdefghijklmnopqrstuvwxyz" * 3):
        with pytest.raises(SettingsError, match="DIGEST_SECRET_KEY is too weak to sign links"):
            workdir.settings(DIGEST_SECRET_KEY=weak).require_secret_key()
    with pytest.raises(SettingsError, match="DIGEST_OLD_SECRET_KEYS: key 2 is too weak"):
        workdir.settings(DIGEST_OLD_SECRET_KEYS=f"{secrets.token_urlsafe(32)},a").require_secret_key()
    result = workdir.cli("send", "--dry-run", DIGEST_SECRET_KEY="a")  # the key the audit recovered in 0.01 s
    assert result.returncode == 2 and "DIGEST_SECRET_KEY is too weak to sign links" in result.stderr, result.stderr
    assert "digest init" in result.stderr and "Traceback" not in result.stderr


def test_links_of_another_installation_sharing_the_key_or_from_before_a_reset_open_nothing(workdir: Workdir, tmp_path: Path) -> None:
    server = Web(workdir)
    send_today(workdir)
    mailed = links(workdir, "kenji@example.org")
    # Another installation with the same key: its digests have the same ids as ours.
    other = workdir.settings(DIGEST_DATABASE_URL=f"sqlite:///{tmp_path / 'other.db'}", DIGEST_OUTBOX=str(tmp_path / "other-outbox"))
    db = Database(other.database_url)
    ingest_source(db, "config/sample-feed.jsonl", now=NOW - dt.timedelta(hours=1))
    sync_profiles(db, other.profiles_dir)
    DigestSender(db, other, load_config(other.config_path), Renderer(other.templates_dir), OutboxTransport(other.outbox), lambda: NOW).run()
    theirs = next(p for p in (tmp_path / "other-outbox").glob("*.eml") if "ada" in p.name)
    their_links = lxml_html.fromstring(message_from_bytes(theirs.read_bytes(), policy=policy.default).get_body(("html",)).get_content()).xpath("//a/@href")
    server.start()
    try:
        for url in [h for h in their_links if "/u/" in h or "/c/" in h or "/v/" in h]:
            assert server.client.get(server.base + urlsplit(url).path).status_code == 404, url
        assert server.client.post(server.base + urlsplit(next(h for h in their_links if "/u/" in h)).path).status_code == 404
        assert server.client.get(mailed["v"][0]).status_code == 200  # our own links work
    finally:
        server.stop()
    # The database is reset (deleted and made again): the links mailed before name nothing.
    for path in (workdir.path / "var").glob("digest.db*"):
        path.unlink()
    send_today(workdir)
    server.client = httpx.Client(follow_redirects=False, timeout=10)
    server.start()  # on the same address as before
    try:
        for url in mailed["c"][:2] + mailed["v"] + mailed["u"]:
            assert server.client.get(url).status_code == 404, url
        assert server.client.post(mailed["u"][0]).status_code == 404
    finally:
        server.stop()
    with workdir.db().session() as session:
        assert events(workdir) == [] and all(s.active for s in session.exec(select(Subscriber)))


def test_a_link_acts_only_while_its_object_belongs_to_the_subscriber_it_was_mailed_to(workdir: Workdir, tmp_path: Path) -> None:
    """A restore from a backup re-uses the ids of digests mailed since: ada's old link must not
    unsubscribe the subscriber whose digest has that id now."""
    db = workdir.db()
    ingest_source(db, "config/sample-feed.jsonl", now=NOW - dt.timedelta(hours=1))
    sync_profiles(db, workdir.settings().profiles_dir)
    db.dispose()
    copy_database(workdir, tmp_path / "backup.db")
    server = Web(workdir)
    settings = workdir.settings()
    DigestSender(workdir.db(), settings, load_config(settings.config_path), Renderer(settings.templates_dir), OutboxTransport(settings.outbox), lambda: NOW).run()
    adas = links(workdir, "ada@example.org")
    assert "/u/u1." in adas["u"][0]  # ada's digest was the first
    for path in (workdir.path / "var").glob("digest.db*"):
        path.unlink()
    shutil.copy(tmp_path / "backup.db", workdir.path / "var" / "digest.db")  # restored from the backup
    (workdir.path / "config" / "subscribers" / "ada.yaml").unlink()
    db = workdir.db()
    sync_profiles(db, settings.profiles_dir)
    DigestSender(db, settings, load_config(settings.config_path), Renderer(settings.templates_dir), OutboxTransport(settings.outbox), lambda: NOW).run()
    with db.session() as session:
        assert session.get(Subscriber, session.get(Digest, 1).subscriber_id).email == "kenji@example.org"  # digest 1 is kenji's now
    server.start()
    try:
        assert server.client.post(adas["u"][0]).status_code == 404
        assert server.client.get(adas["v"][0]).status_code == 404 and server.client.get(adas["c"][0]).status_code == 404
        assert server.client.get(links(workdir, "kenji@example.org")["v"][0]).status_code == 200
    finally:
        server.stop()
    assert subscriber(workdir, "kenji@example.org").active and [e.kind for e in events(workdir)] == ["view"]  # kenji's own view only


def test_links_mailed_before_the_upgrade_stay_valid_and_the_old_format_opens_nothing_newer(workdir: Workdir, tmp_path: Path) -> None:
    send_today(workdir)
    with workdir.db().transaction() as session:  # the database as the earlier version left it: no installation, no link ids
        session.execute(text("DELETE FROM installation"))
        session.execute(text("UPDATE subscriber SET link_id = NULL"))
        item = session.exec(select(DigestItem).where(DigestItem.digest_id == 1).order_by(DigestItem.rank)).first()
    server = Web(workdir).start()  # this version's first start on it
    try:
        assert server.client.get(f"{server.base}/v/{first_format('v', 1)}").status_code == 200
        click = server.client.get(f"{server.base}/c/{first_format('c', item.id)}")
        assert click.status_code == 302
        # Digests made after the upgrade carry the new links; a first-format token for one is refused.
        (workdir.path / "more.jsonl").write_text(json.dumps({"title": "KV cache compression for speculative decoding", "abstract": "KV cache."}) + "\n")
        later = NOW + dt.timedelta(days=1)
        workdir.prepare("more.jsonl", now=later - dt.timedelta(hours=1))
        settings = workdir.settings()
        DigestSender(workdir.db(), settings, load_config(settings.config_path), Renderer(settings.templates_dir), OutboxTransport(settings.outbox),
                     lambda: later).run()
        with workdir.db().session() as session:
            newest = max(session.exec(select(Digest.id).where(Digest.status == "sent")).all())
        assert newest > 4
        assert server.client.get(f"{server.base}/v/{first_format('v', newest)}").status_code == 404
        assert server.client.post(f"{server.base}/u/{first_format('u', newest)}").status_code == 404
        assert server.client.get(links(workdir, f"_{newest:08d}_")["v"][0]).status_code == 200  # its own link works
    finally:
        server.stop()
    assert [e.kind for e in events(workdir)] == ["view", "click", "view"]  # none for the refused tokens
    # A database made afresh accepts no first-format token at all.
    fresh = Database(f"sqlite:///{tmp_path / 'fresh.db'}").installation()
    assert (fresh.legacy_digest_max, fresh.legacy_item_max) == (0, 0)


def test_a_validly_signed_token_with_a_huge_id_is_not_found(web: Web, workdir: Workdir) -> None:
    for action, path in (("c", "c"), ("v", "v"), ("u", "u")):
        response = web.client.get(f"{web.base}/{path}/{first_format(action, 10**30)}")
        assert response.status_code == 404, response.text
    assert web.client.post(f"{web.base}/u/{first_format('u', 2**63)}").status_code == 404
    assert web.client.get(f"{web.base}/healthz").status_code == 200


def test_a_repeated_click_is_flagged_even_while_another_writer_holds_the_lock(web: Web, workdir: Workdir) -> None:
    click = links(workdir)["c"][0]
    holder = sqlite3.connect(workdir.env["DIGEST_DATABASE_URL"].removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer (a send, an ingest) holds the lock
    codes: list[int] = []
    threads = [threading.Thread(target=lambda: codes.append(httpx.get(click, timeout=30).status_code)) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # both requests are in, waiting for the lock
    holder.execute("COMMIT")
    holder.close()
    for thread in threads:
        thread.join(30)
    assert codes == [302, 302]
    assert sorted((e.kind, e.repeat) for e in events(workdir)) == [("click", False), ("click", True)]
