"""Honest paper data: text of no known format is refused, every paper is dated by its announcement
(never by the ingest), a trending paper gets the arXiv link of the same paper, labels a reader
understands, and a digest of a date shows nothing announced after it."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from sqlmodel import select

from digest.config import load_config
from digest.ingest import SourceSpec, ingest_source
from digest.ingest.readers import date_in_name, read
from digest.ingest.records import SourceError
from digest.links import paper_link
from digest.mail.render import Renderer
from digest.mail.transports import OutboxTransport
from digest.mail.view import source_label
from digest.models import Paper
from digest.profiles import sync_profiles
from digest.send.preview import preview_digest
from digest.send.run import DigestSender

from .conftest import Workdir, shared

# Written for these tests.
ABSTRACT = "Sparse experts route each token to a few of many feed-forward blocks. " * 3 + "We propose a router that learns when to skip experts entirely."


def paper_line(arxiv_id: str, title: str, abstract: str = ABSTRACT, **extra: object) -> str:
    return json.dumps({"id": arxiv_id, "title": title, "summary": abstract, "authors": ["Ann Lee", "Bo Chen"], "categories": ["cs.LG", "cs.CL"],
                       "abs": f"https://arxiv.org/abs/{arxiv_id}", "pdf": f"https://arxiv.org/pdf/{arxiv_id}", **extra})


def papers(workdir: Workdir) -> dict[str, Paper]:
    with workdir.db().session() as session:
        return {p.title: p for p in session.exec(select(Paper))}


# --- text of no known format -----------------------------------------------------------------------

README = """# A project

Some words about it, long enough to be a paragraph but not an abstract.

| column | value |
|---|---|
| a | b |
"""
PLAIN_NOTES = "Meeting notes\nWe talked about the budget.\nAction items follow.\nNothing else.\n"


@pytest.mark.parametrize(("text", "message"), [
    (README, "looks like Markdown (line 1: '# A project')"),
    ("Title\n\n```\ncode\n```\n" + "An abstract sentence. " * 30, "looks like Markdown (line 2: '```')"),
    (PLAIN_NOTES, "not a trending-papers page"),
])
def test_text_of_no_known_format_is_refused_not_read_as_papers(text: str, message: str) -> None:
    with pytest.raises(SourceError) as caught:
        read(text.encode(), "notes.md")
    assert message in str(caught.value)
    assert "JSONL" in str(caught.value) and "trending-papers page" in str(caught.value)  # it says what would be read


def test_ingest_of_the_feeds_folder_ingests_the_feeds_and_refuses_its_markdown(workdir: Workdir) -> None:
    files = sorted(str(p) for p in shared("feeds").iterdir())
    assert any(f.endswith("SOURCE.md") for f in files)
    result = workdir.cli("ingest", *files)
    assert result.returncode == 1  # one source failed: exit 1, the others are stored
    rows = [line for line in result.stdout.splitlines() if "│" in line]
    assert sum(1 for line in rows if re.search(r"│ (arxiv-api|arxiv-oai|rss|hf-daily) +│ +[1-9]", line)) == 5
    assert "SOURCE.md" in result.stdout and "looks like Markdown" in result.stdout
    titles = list(papers(workdir))
    assert len(titles) == 42
    assert not any(t.startswith(("#", "|")) for t in titles)


# --- dates -------------------------------------------------------------------------------------------


def test_a_jsonl_listing_is_dated_by_its_file_name_or_the_date_given_never_by_the_ingest(workdir: Workdir, tmp_path: Path) -> None:
    listing = tmp_path / "2026-04-10.jsonl"
    listing.write_text("\n".join([paper_line("2604.00001", "Skipping Experts"), paper_line("2604.00002", "Dated Itself", published="2026-04-08")]) + "\n")
    undated = tmp_path / "listing.jsonl"
    undated.write_text(paper_line("2604.00003", "No Date Anywhere") + "\n")
    given = tmp_path / "other.jsonl"
    given.write_text(paper_line("2604.00004", "Date Given At Ingest") + "\n")
    db = workdir.db()
    assert ingest_source(db, str(listing)).new == 2
    assert ingest_source(db, str(undated)).new == 1
    assert workdir.cli("ingest", "--date", "2026-04-09", str(given)).returncode == 0
    found = papers(workdir)
    assert found["Skipping Experts"].published == dt.datetime(2026, 4, 10, tzinfo=dt.timezone.utc)
    assert found["Dated Itself"].published == dt.datetime(2026, 4, 8, tzinfo=dt.timezone.utc)  # its own date wins
    assert found["No Date Anywhere"].published is None  # not the day of the ingest
    assert found["Date Given At Ingest"].published == dt.datetime(2026, 4, 9, tzinfo=dt.timezone.utc)
    assert date_in_name("https://example.org/data/2026-04-13.jsonl?raw=1") == dt.date(2026, 4, 13)
    assert date_in_name("listing-20260413.jsonl") is None and date_in_name("2026-13-45.jsonl") is None


def test_a_paper_listed_again_keeps_its_first_announcement(workdir: Workdir, tmp_path: Path) -> None:
    later, earlier = tmp_path / "2026-04-14.jsonl", tmp_path / "2026-04-10.jsonl"
    later.write_text(paper_line("2604.00001", "Listed Twice") + "\n")
    earlier.write_text(paper_line("2604.00001", "Listed Twice") + "\n")
    db = workdir.db()
    ingest_source(db, str(later))
    ingest_source(db, str(earlier))  # read in the wrong order
    assert papers(workdir)["Listed Twice"].published.date() == dt.date(2026, 4, 10)


def test_every_real_listing_paper_is_dated_by_the_first_day_it_was_listed(workdir: Workdir) -> None:
    files = sorted(shared("arxiv-daily").glob("*.jsonl"))
    first_day: dict[str, dt.date] = {}
    for f in files:  # the oracle, computed apart from the readers
        day = dt.date.fromisoformat(f.stem)
        for line in f.read_text().splitlines():
            first_day.setdefault(json.loads(line)["id"].split("v")[0], day)
    db = workdir.db()
    for f in reversed(files):  # newest first: the earliest listing must still win
        assert ingest_source(db, str(f)).ok
    with db.session() as session:
        found = {p.arxiv_id: p.published for p in session.exec(select(Paper))}
    assert len(found) == len(first_day) > 6000
    assert all(found[i] is not None and found[i].date() == day for i, day in first_day.items())


# --- links and labels -------------------------------------------------------------------------------

TRENDING = f"""new

Get trending papers in your email inbox!

Mar 12

Skipping Experts: When Routers Learn To Abstain

{ABSTRACT * 3}

A Paper Nobody Listed

{ABSTRACT * 3}
"""


def test_a_trending_paper_gets_the_arxiv_link_of_the_same_title_whichever_comes_first(workdir: Workdir, tmp_path: Path) -> None:
    listing = tmp_path / "2026-04-10.jsonl"
    listing.write_text(paper_line("2604.00001", "Skipping experts — when routers learn to abstain") + "\n")
    page = tmp_path / "trending.txt"
    page.write_text(TRENDING)
    db = workdir.db()
    # The arXiv paper first, then the trending page: the trending entry is that paper.
    ingest_source(db, str(listing))
    ingest_source(db, str(page))
    found = papers(workdir)
    assert len(found) == 2
    known = found["Skipping experts — when routers learn to abstain"]
    assert paper_link(known) == "https://arxiv.org/abs/2604.00001" and known.pdf_url == "https://arxiv.org/pdf/2604.00001"
    unknown = found["A Paper Nobody Listed"]
    assert unknown.url is None and unknown.published is None
    assert paper_link(unknown) == "https://huggingface.co/papers?q=A+Paper+Nobody+Listed"
    assert source_label(unknown) == "Hugging Face trending"

    # The other way round, in a fresh database: the arXiv paper arriving later completes the trending one.
    other = workdir.path / "other.db"
    db2 = type(db)(f"sqlite:///{other}")
    ingest_source(db2, str(page))
    ingest_source(db2, str(listing))
    with db2.session() as session:
        rows = {p.title_key: p for p in session.exec(select(Paper))}
    assert len(rows) == 2
    merged = rows["skipping experts when routers learn to abstain"]
    assert merged.arxiv_id == "2604.00001" and paper_link(merged) == "https://arxiv.org/abs/2604.00001"
    assert merged.published.date() == dt.date(2026, 4, 10) and merged.categories == ["cs.LG", "cs.CL"]


def test_sources_are_labelled_for_readers(workdir: Workdir, tmp_path: Path) -> None:
    listing = tmp_path / "2026-04-10.jsonl"
    listing.write_text(paper_line("2604.00001", "From A Listing") + "\n")
    page = tmp_path / "trending.txt"
    page.write_text(TRENDING)
    db = workdir.db()
    for source in (str(listing), str(page), "config/sample-feed.jsonl"):
        assert ingest_source(db, SourceSpec(source, name="my feed")).ok  # the source's own name is not the label
    found = papers(workdir)
    assert source_label(found["From A Listing"]) == "arXiv"
    assert source_label(found["A Paper Nobody Listed"]) == "Hugging Face trending"
    sample = next(p for p in found.values() if p.url and "example.org" in p.url)
    assert source_label(sample) == "example.org"  # not an arXiv paper: where it lives


def test_hugging_face_daily_papers_are_labelled_so(workdir: Workdir) -> None:
    db = workdir.db()
    assert ingest_source(db, str(shared("feeds", "hf_daily_papers_2026-06.json"))).ok
    labels = {source_label(p) for p in papers(workdir).values()}
    assert labels == {"Hugging Face daily papers"}


# --- a digest of a date shows nothing announced after it ----------------------------------------------

MOE = "Mixture of experts layers route tokens to experts. We propose a new routing rule for mixture of experts models that balances load."


def moe_listings(tmp_path: Path) -> list[Path]:
    days = {"2026-04-10": ["Experts On The Tenth", "Routing On The Tenth"], "2026-04-14": ["Experts On The Fourteenth", "Routing On The Fourteenth"],
            "2026-04-20": ["Experts On The Twentieth"]}
    paths = []
    for n, (day, titles) in enumerate(days.items()):
        path = tmp_path / f"{day}.jsonl"
        path.write_text("\n".join(paper_line(f"2604.2{n}00{k}", title, MOE) for k, title in enumerate(titles)) + "\n")
        paths.append(path)
    return paths


def shown_dates(html: str) -> list[dt.date]:
    return [dt.datetime.strptime(d, "%d %b %Y").date() for d in re.findall(r"· (\d{1,2} \w{3} \d{4}) ·", html)]


def sender(workdir: Workdir) -> DigestSender:
    settings = workdir.settings()
    return DigestSender(workdir.db(), settings, load_config(settings.config_path), Renderer(settings.templates_dir), OutboxTransport(settings.outbox))


def preview_titles(workdir: Workdir, email: str, date: dt.date | None) -> str:
    made = sender(workdir)
    result = preview_digest(made, made.subscribers(email)[0], date)
    return " | ".join(item.title for item in result.view.items) if result.view else result.reason


def test_preview_and_send_of_a_past_date_show_only_what_was_announced_by_then(workdir: Workdir, tmp_path: Path) -> None:
    workdir.cli("ingest", *map(str, moe_listings(tmp_path)), check=True)  # every day ingested now, long after
    sync_profiles(workdir.db(), workdir.settings().profiles_dir)
    tenth = workdir.cli("preview", "ada@example.org", "--date", "2026-04-10", "--out", str(tmp_path / "10.html"), check=True).stdout
    assert "Friday, 10 April 2026" in (tmp_path / "10.html").read_text()
    assert "Tenth" in tenth and "Fourteenth" not in tenth and "Twentieth" not in tenth
    assert set(shown_dates((tmp_path / "10.html").read_text())) == {dt.date(2026, 4, 10)}
    fourteenth = preview_titles(workdir, "ada@example.org", dt.date(2026, 4, 14))
    assert "Fourteenth" in fourteenth and "Tenth" in fourteenth and "Twentieth" not in fourteenth  # the week up to the 14th
    # Sent one after the other, the second day brings only what the first did not.
    for day in (dt.date(2026, 4, 10), dt.date(2026, 4, 14)):
        assert sender(workdir).run(date=day, only="ada@example.org").count("sent") == 1
    texts = {p.name[:10]: p.read_text() for p in workdir.outbox()}
    assert "Tenth" in texts["2026-04-10"] and "Fourteenth" not in texts["2026-04-10"]
    assert "Fourteenth" in texts["2026-04-14"] and "Tenth" not in texts["2026-04-14"]
    assert "Twentieth" not in texts["2026-04-10"] + texts["2026-04-14"]
    # Today's digest takes what is new to the service and not sent yet, whenever it was announced.
    today = preview_titles(workdir, "ada@example.org", None)
    assert "Twentieth" in today and "Tenth" not in today and "Fourteenth" not in today


def test_a_real_data_preview_of_a_day_holds_no_later_paper(workdir: Workdir, tmp_path: Path) -> None:
    db = workdir.db()
    for path in sorted(shared("arxiv-daily").glob("*.jsonl")):
        assert ingest_source(db, str(path)).ok
    (workdir.path / "config" / "subscribers" / "cv.yaml").write_text(
        "email: cv@example.org\ninterests: [object detection, vision-language models, image segmentation]\nmax_items: 20\n"
    )
    sync_profiles(db, workdir.settings().profiles_dir)
    made = sender(workdir)
    result = preview_digest(made, made.subscribers("cv@example.org")[0], dt.date(2026, 4, 10))
    dates = shown_dates(result.rendered.html)
    assert len(dates) == 20
    assert max(dates) <= dt.date(2026, 4, 10) and min(dates) >= dt.date(2026, 4, 3)
