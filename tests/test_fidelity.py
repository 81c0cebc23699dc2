"""Honest paper data: text of no known format is refused, every paper is dated by its announcement
(never by the ingest), a trending paper gets the arXiv link of the same paper."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
from sqlmodel import select

from digest.ingest import ingest_source
from digest.ingest.readers import SourceError, date_in_name, read
from digest.models import Paper

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
    assert known.url == "https://arxiv.org/abs/2604.00001" and known.pdf_url == "https://arxiv.org/pdf/2604.00001"
    unknown = found["A Paper Nobody Listed"]
    assert unknown.url is None and unknown.published is None and unknown.source == "hf-trending"

    # The other way round, in a fresh database: the arXiv paper arriving later completes the trending one.
    other = workdir.path / "other.db"
    db2 = type(db)(f"sqlite:///{other}")
    ingest_source(db2, str(page))
    ingest_source(db2, str(listing))
    with db2.session() as session:
        rows = {p.title_key: p for p in session.exec(select(Paper))}
    assert len(rows) == 2
    merged = rows["skipping experts when routers learn to abstain"]
    assert merged.arxiv_id == "2604.00001" and merged.url == "https://arxiv.org/abs/2604.00001"
    assert merged.published.date() == dt.date(2026, 4, 10) and merged.categories == ["cs.LG", "cs.CL"]
