"""The preferences page: edits written back into the profile file (comments, order and quoting
kept), the same field errors as `profiles validate`, pause, unsubscribe and resubscribe, undo of a
thumb, and forms that refuse cross-site requests; end to end in Chromium against `digest web`."""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import shutil
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select

from digest.config import load_config
from digest.feedback import gather_evidence
from digest.ingest import ingest_source
from digest.links import LinkMaker, LinkSigner
from digest.mail.render import Renderer
from digest.mail.transports import OutboxTransport
from digest.models import FeedbackEvent, Subscriber, SubscriberModel
from digest.preferences import Conflict, FormTokens, ProfileFile, parse_form, same_origin
from digest.profiles import load_profiles, sync_profile, sync_profiles
from digest.send.preview import preview_digest
from digest.send.run import DigestSender
from digest.training import retrain
from digest.yamlfile import FileError

from .browser import Browser
from .conftest import ROOT, TEST_KEY, Web, Workdir
from .test_web import links

ADA = (ROOT / "config" / "subscribers" / "ada.yaml").read_text()
# Ada's profile as an operator may have written it: comments everywhere.
COMMENTED = ADA.replace("max_items: 8", "max_items: 8          # she asked for fewer").replace(
    "  - mixture of experts", "  # added after the March workshop\n  - mixture of experts"
)


def form_of(profile_file: ProfileFile, **changes: str) -> dict[str, str]:
    """The form the page would submit for the file unchanged, with `changes`."""
    profile = profile_file.profile()
    form = {f"interest-{n}-phrase": i.phrase for n, i in enumerate(profile.interests)}
    form |= {f"interest-{n}-weight": f"{i.weight:g}" for n, i in enumerate(profile.interests)}
    form |= {"avoid": "\n".join(profile.avoid), "authors": "\n".join(profile.authors), "categories": " ".join(profile.categories),
             "send_at": profile.send_at, "timezone": profile.timezone, "max_items": str(profile.max_items)}
    return form | changes


# --- the file round trip --------------------------------------------------------------------------------


def test_an_edit_changes_only_what_changed_and_keeps_comments_order_and_quotes(tmp_path: Path) -> None:
    path = tmp_path / "ada.yaml"
    path.write_text(COMMENTED)
    path.chmod(0o640)  # as the operator left it
    profile_file = ProfileFile(path)
    current = profile_file.profile()
    form = form_of(profile_file, **{"max_items": "12", "interest-1-weight": "3", "interest-4-phrase": "state space models", "interest-4-weight": "1.5",
                                    "interest-2-remove": "on", "avoid": "image generation\nsurvey"})
    profile_file.apply(parse_form(form), current)
    saved = profile_file.save()
    text = path.read_text()
    assert path.stat().st_mode & 0o777 == 0o640 and [p.name for p in tmp_path.iterdir()] == ["ada.yaml"]  # its mode kept, no copy left
    assert saved.max_items == 12 and [i.phrase for i in saved.interests] == ["speculative decoding", "KV cache", "retrieval-augmented generation", "state space models"]
    assert saved.interests[1].weight == 3 and saved.avoid == ["image generation", "survey"]
    before, after = COMMENTED.splitlines(), text.splitlines()
    assert after[0] == before[0] and after[0].startswith("# An LLM-systems engineer")  # the comment on top
    assert "max_items: 12         # she asked for fewer" in after  # the comment on the changed line, in its column
    assert 'send_at: "07:00"' in after  # quoting kept
    assert "  - {phrase: KV cache, weight: 3}" in after and "  - {phrase: state space models, weight: 1.5}" in after
    assert "avoid: [image generation, survey]" in after  # flow style kept
    assert [line.split(":")[0] for line in after if re.match(r"^\w", line)] == [line.split(":")[0] for line in before if re.match(r"^\w", line)]
    untouched = ("email:", "name:", "timezone:", "authors:", "categories:", "  - speculative decoding", "  - retrieval-augmented generation")
    for line in before:
        if line.startswith(untouched):
            assert line in after, line
    # The mixture-of-experts line went, its comment with it; nothing else.
    assert "mixture of experts" not in text


def test_invalid_input_gets_the_errors_of_profiles_validate_and_changes_nothing(tmp_path: Path) -> None:
    for change, field in (({"interest-1-weight": "lots"}, "interests[1].weight"), ({"timezone": "Europe/Londn"}, "timezone"),
                          ({"max_items": "0"}, "max_items"), ({"send_at": "25:00"}, "send_at"), ({"categories": "not a category!"}, "categories")):
        path = tmp_path / "ada.yaml"
        path.write_text(COMMENTED)
        profile_file = ProfileFile(path)
        profile_file.apply(parse_form(form_of(profile_file, **change)), profile_file.profile())
        with pytest.raises(FileError) as caught:
            profile_file.save()
        assert path.read_text() == COMMENTED
        # `profiles validate` on the same text says the same thing about the same field.
        folder = tmp_path / "check"
        folder.mkdir(exist_ok=True)
        (folder / "ada.yaml").write_text(profile_file.text())
        [reported] = load_profiles(folder).errors
        assert (caught.value.field, caught.value.message) == (reported.field, reported.message) and reported.field == field


def test_pause_writes_the_key_in_its_place_and_resume_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "ada.yaml"
    path.write_text(COMMENTED)
    profile_file = ProfileFile(path)
    profile_file.pause(dt.date(2026, 12, 1))
    assert profile_file.save().paused_until == dt.date(2026, 12, 1)
    assert path.read_text() == COMMENTED + "paused_until: 2026-12-01\n"
    profile_file = ProfileFile(path)
    profile_file.pause(None)
    profile_file.save()
    assert path.read_text() == COMMENTED


def test_a_file_changed_meanwhile_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "ada.yaml"
    path.write_text(COMMENTED)
    profile_file = ProfileFile(path)
    profile_file.apply(parse_form(form_of(profile_file, max_items="3")), profile_file.profile())
    path.write_text(COMMENTED.replace("name: Ada", "name: Ada L."))  # the operator, at the same time
    with pytest.raises(Conflict):
        profile_file.save()
    assert "name: Ada L." in path.read_text() and "max_items: 8" in path.read_text()


def test_form_tokens_are_bound_to_their_link_and_expire() -> None:
    another, newer = secrets.token_urlsafe(32), secrets.token_urlsafe(32)  # keys as strong as `digest init` writes
    tokens = FormTokens(TEST_KEY)
    token = tokens.make("p1.abc")
    assert tokens.check(token, "p1.abc")
    assert not tokens.check(token, "p2.abc") and not tokens.check(None, "p1.abc") and not tokens.check(token[:-2], "p1.abc")
    assert not FormTokens(another).check(token, "p1.abc")
    assert FormTokens(newer, [TEST_KEY]).check(token, "p1.abc")  # a rotated key keeps open pages working
    time.sleep(1.1)
    assert not tokens.check(token, "p1.abc", max_age=0)
    base = "https://digest.example.org"
    assert same_origin({"origin": "https://digest.example.org"}, base) and same_origin({"origin": "https://digest.example.org:443"}, base)
    assert same_origin({"referer": "https://digest.example.org/p/p1.x"}, base)
    for headers in ({}, {"origin": "null"}, {"origin": "https://evil.example"}, {"origin": "http://digest.example.org"},
                    {"referer": "https://digest.example.org.evil.example/p/"}, {"origin": "https://evil.example", "referer": base + "/p/"}):
        assert not same_origin(headers, base), headers


# --- the page, served ------------------------------------------------------------------------------------


@pytest.fixture
def web_only(workdir: Workdir):
    """`digest web` on the sample feed and the example profiles, no digest sent yet."""
    server = Web(workdir)
    db = workdir.db()
    ingest_source(db, "config/sample-feed.jsonl")
    sync_profiles(db, workdir.settings().profiles_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def subscriber(workdir: Workdir, email: str) -> Subscriber:
    with workdir.db().session() as session:
        return session.exec(select(Subscriber).where(Subscriber.email == email)).one()


def page_link(workdir: Workdir, web: Web, email: str = "ada@example.org") -> str:
    owner = subscriber(workdir, email)
    return LinkMaker(web.base, LinkSigner(TEST_KEY, installation=workdir.db().installation().id)).preferences(owner.id, owner.link_id)


def sender(workdir: Workdir) -> DigestSender:
    settings = workdir.settings()
    return DigestSender(workdir.db(), settings, load_config(settings.config_path), Renderer(settings.templates_dir), OutboxTransport(settings.outbox))


def preview(workdir: Workdir, email: str = "ada@example.org") -> str:
    return workdir.cli("preview", email, check=True).stdout


def test_every_email_links_its_preferences_page(web: Web, workdir: Workdir) -> None:
    for path in workdir.outbox():
        email = re.search(r"_\d{8}_(.+)\.eml$", path.name).group(1).replace("_", "@", 1)
        [link] = links(workdir, email)["p"]
        page = web.client.get(link)
        assert page.status_code == 200 and email in page.text and "Your preferences" in page.text
        assert page.headers["referrer-policy"] == "same-origin" and page.headers["cache-control"] == "no-store"
    token = link.rsplit("/", 1)[1]
    assert web.client.get(f"{web.base}/p/{token[:-3]}xyz").status_code == 404
    assert web.client.get(f"{web.base}/p/{token.replace('p', 'c', 1)}").status_code == 404


def test_a_cross_site_post_changes_nothing(web_only: Web, workdir: Workdir) -> None:
    link = page_link(workdir, web_only)
    page = web_only.client.get(link).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    version = re.search(r'name="version" value="([^"]+)"', page).group(1)
    file = workdir.path / "config" / "subscribers" / "ada.yaml"
    before = file.read_text()
    profile_file = ProfileFile(file)
    form = form_of(profile_file, max_items="2", version=version, csrf=csrf, action="save")
    for headers in ({}, {"Origin": "null"}, {"Origin": "https://evil.example"}, {"Referer": "https://evil.example/form"}):
        answer = web_only.client.post(link, data=form, headers=headers)
        assert answer.status_code == 403, headers
    for bad in ("", csrf[:-2] + "xx", FormTokens(TEST_KEY).make("another-link")):
        assert web_only.client.post(link, data=form | {"csrf": bad}, headers={"Origin": web_only.base}).status_code == 403
    assert web_only.client.post(link, data=form | {"action": "unsubscribe"}, headers={"Origin": "https://evil.example"}).status_code == 403
    assert file.read_text() == before and subscriber(workdir, "ada@example.org").unsubscribed_at is None
    # The same form from its own page is saved.
    done = web_only.client.post(link, data=form, headers={"Origin": web_only.base})
    assert done.status_code == 200 and "Saved" in done.text
    assert "max_items: 2" in file.read_text() and subscriber(workdir, "ada@example.org").max_items == 2


def test_edit_in_chromium_and_the_next_preview_follows(web_only: Web, workdir: Workdir) -> None:
    before = preview(workdir)
    assert "matches KV cache" in before and "weather" not in before.lower()
    file = workdir.path / "config" / "subscribers" / "ada.yaml"
    file.write_text(COMMENTED)
    with Browser() as browser:
        browser.viewport(390, 900)
        browser.open(page_link(workdir, web_only))
        assert browser.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        sizes = browser.evaluate("[...document.querySelectorAll('button')].map(b => { const r = b.getBoundingClientRect(); return [r.width, r.height]; })")
        assert sizes and all(w >= 44 and h >= 44 for w, h in sizes), sizes
        # A typo first: the field's error, as `profiles validate` words it, and the file untouched.
        browser.evaluate("document.querySelector('#timezone').value = 'Europe/Londn'")
        browser.submit("document.querySelector('button[value=save]').click()")
        error = browser.evaluate("document.querySelector('#timezone').parentElement.querySelector('.error').textContent")
        assert error == "timezone: unknown time zone 'Europe/Londn' (use an IANA name such as Europe/Berlin)"
        assert browser.evaluate("document.querySelector('#timezone').value") == "Europe/Londn"  # what was typed is kept
        assert file.read_text() == COMMENTED
        # Then a real change: weather instead of the systems topics, three papers, at 06:30.
        browser.evaluate("""(() => {
            document.querySelector('#timezone').value = 'Europe/London';
            for (const n of [0, 1, 2, 3]) document.querySelector(`[name=interest-${n}-remove]`).checked = true;
            document.querySelector('[name=interest-4-phrase]').value = 'weather forecasting';
            document.querySelector('[name=interest-4-weight]').value = '2';
            document.querySelector('#max_items').value = '3';
            document.querySelector('#send_at').value = '06:30';
            document.querySelector('#avoid').value = '';
            document.querySelector('#authors').value = '';
            document.querySelector('#categories').value = '';
        })()""")
        browser.submit("document.querySelector('button[value=save]').click()")
        assert "Saved" in browser.evaluate("document.querySelector('.notice').textContent")
    text = file.read_text()
    assert "# An LLM-systems engineer" in text and re.search(r"^max_items: 3 +# she asked for fewer$", text, re.M)
    assert "  - {phrase: weather forecasting, weight: 2}" in text and 'send_at: "06:30"' in text and "avoid: []" in text
    ada = subscriber(workdir, "ada@example.org")  # synced at once
    assert (ada.max_items, ada.send_at, ada.interests) == (3, "06:30", [{"phrase": "weather forecasting", "weight": 2.0}])
    after = preview(workdir)
    # all three on her new interest (one has its words apart: "weather models ... humidity forecasts")
    assert after.count("matches weather forecasting") + after.count("has the words of “weather forecasting”") == 3 and "KV cache" not in after


def test_pause_in_chromium_skips_the_digests_and_resume_brings_them_back(web_only: Web, workdir: Workdir) -> None:
    with Browser() as browser:
        browser.viewport(390, 900)
        browser.open(page_link(workdir, web_only))
        browser.evaluate("document.querySelector('#pause_days').value = '3'")
        browser.submit("document.querySelector('button[value=pause]').click()")
        notice = browser.evaluate("document.querySelector('.notice').textContent")
    ada = subscriber(workdir, "ada@example.org")
    today = dt.datetime.now(dt.timezone.utc).astimezone(ZoneInfo("Europe/London")).date()
    assert ada.paused_until == today + dt.timedelta(days=3) and "resume on" in notice
    assert f"paused_until: {ada.paused_until.isoformat()}" in (workdir.path / "config" / "subscribers" / "ada.yaml").read_text()
    sent = workdir.cli("send", check=True)
    assert "1 paused" in sent.stdout and "3 sent" in sent.stdout
    assert not any("ada_example.org" in p.name for p in workdir.outbox())
    made = sender(workdir)
    assert "paused until" in preview_digest(made, ada).reason
    # On the first day back her digest is sent.
    assert made.run(date=today + dt.timedelta(days=3), only="ada@example.org").count("sent") == 1
    page = web_only.client.get(page_link(workdir, web_only)).text
    form = {"csrf": re.search(r'name="csrf" value="([^"]+)"', page).group(1), "version": re.search(r'name="version" value="([^"]+)"', page).group(1),
            "action": "resume"}
    assert "Resume now" in page
    web_only.client.post(page_link(workdir, web_only), data=form, headers={"Origin": web_only.base})
    assert subscriber(workdir, "ada@example.org").paused_until is None
    assert "paused_until" not in (workdir.path / "config" / "subscribers" / "ada.yaml").read_text()


def test_resubscribing_undoes_an_unsubscribe_which_stays_final_against_sync(web: Web, workdir: Workdir) -> None:
    found = links(workdir, "kenji@example.org")
    web.client.post(found["u"][0], content="List-Unsubscribe=One-Click", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert subscriber(workdir, "kenji@example.org").unsubscribed_at is not None
    assert sync_profiles(workdir.db(), workdir.settings().profiles_dir).kept_unsubscribed == ["kenji@example.org"]
    gone = web.client.get(found["u"][0])
    assert found["p"][0] in gone.text  # the way back is offered
    with Browser() as browser:
        browser.viewport(390, 900)
        browser.open(found["p"][0])
        assert browser.evaluate("document.querySelector('button[value=resubscribe]') !== null")
        browser.submit("document.querySelector('button[value=resubscribe]').click()")
        assert "Welcome back" in browser.evaluate("document.querySelector('.notice').textContent")
    kenji = subscriber(workdir, "kenji@example.org")
    assert kenji.unsubscribed_at is None and kenji.active
    assert sync_profiles(workdir.db(), workdir.settings().profiles_dir).kept_unsubscribed == []
    assert subscriber(workdir, "kenji@example.org").active
    with workdir.db().session() as session:
        kinds = [e.kind for e in session.exec(select(FeedbackEvent).where(FeedbackEvent.subscriber_id == kenji.id).order_by(FeedbackEvent.id))]
    assert kinds == ["unsubscribe", "resubscribe"]
    assert [s.email for s in sender(workdir).subscribers("kenji@example.org")] == ["kenji@example.org"]  # sent to again


def test_undo_of_a_thumb_takes_it_out_of_training(web: Web, workdir: Workdir) -> None:
    feedback = links(workdir)["f"]
    up = feedback[0]
    with Browser() as browser:
        browser.viewport(390, 900)
        browser.open(up)
        box = browser.evaluate("(() => { const r = document.querySelector('form button').getBoundingClientRect(); return [r.width, r.height]; })()")
        assert box[0] >= 44 and box[1] >= 44
        db = workdir.db()
        retrain(db)
        ada = subscriber(workdir, "ada@example.org")
        with db.session() as session:
            model = session.get(SubscriberModel, ada.id)
            liked = [p for p, w in model.examples if w > 0]
        assert len(liked) == 1  # the thumb was trained in
        browser.submit("document.querySelector('form button').click()")
        assert browser.evaluate("document.querySelector('h1').textContent") == "Undone"
    report = retrain(db)
    assert ada.id in report.trained  # the undo is news for the model
    with db.session() as session:
        model = session.get(SubscriberModel, ada.id)
    assert model.examples == [] and model.positives == 0
    # A thumb given twice (the page reloaded) is taken back whole; a thumb on another item stays.
    web.client.get(feedback[2])
    web.client.get(feedback[2])
    other = feedback[5]  # "less like this" of the third item
    web.client.get(other)
    assert web.client.post(feedback[2], headers={"Origin": web.base}).status_code == 200
    assert web.client.post(feedback[2], headers={"Origin": "https://evil.example"}).status_code == 403
    evidence = gather_evidence(db)[ada.id]
    assert len(evidence.positive) == 0 and len(evidence.negative) == 1


def test_the_preferences_page_needs_its_profile_file(web_only: Web, workdir: Workdir) -> None:
    link = page_link(workdir, web_only, "sam@example.org")
    shutil.move(workdir.path / "config" / "subscribers" / "sam.yaml", workdir.path / "sam.yaml")
    page = web_only.client.get(link)
    assert page.status_code == 200 and "not found on the server" in page.text and 'id="preferences"' not in page.text


def test_an_oversized_profile_file_is_refused_by_the_page_as_by_validate(web_only: Web, workdir: Workdir) -> None:
    link = page_link(workdir, web_only)
    opened = web_only.client.get(link).text  # the page, open while the operator grows the file
    form = {"action": "save", "max_items": "2", "csrf": re.search(r'name="csrf" value="([^"]+)"', opened).group(1),
            "version": re.search(r'name="version" value="([^"]+)"', opened).group(1)}
    file = workdir.path / "config" / "subscribers" / "ada.yaml"
    file.write_text(ADA + "".join(f"# a note the operator kept, number {n}\n" for n in range(10_000)))  # valid YAML, over 256 KB
    before = file.read_text()
    page = web_only.client.get(link)
    assert page.status_code == 200 and "a profile may be at most 256 KB" in page.text and 'id="preferences"' not in page.text
    saved = web_only.client.post(link, data=form, headers={"Origin": web_only.base})
    assert saved.status_code == 409 and "a profile may be at most 256 KB" in saved.text and file.read_text() == before
    assert "a profile may be at most 256 KB" in sync_profile(workdir.db(), file).errors[0].message


def test_the_form_is_read_as_a_person_types_it() -> None:
    form = {"interest-0-phrase": "  graph   neural nets: deep ", "interest-0-weight": "", "authors": "Zoë Ō'Neil\n\n  Tri Dao ", "categories": "cs.CL, cs.LG;stat.ML"}
    edit = parse_form(form)
    assert edit.interests[0].phrase == "graph   neural nets: deep" and edit.authors == ["Zoë Ō'Neil", "Tri Dao"]
    assert edit.categories == ["cs.CL", "cs.LG", "stat.ML"]
    assert json.dumps(edit.avoid) == "[]"
