"""Every real source format, read right; bad input gives a clear message and stores nothing."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from lxml import etree
from sqlmodel import col, func, select

from digest.ingest import ingest_source
from digest.ingest.readers import detect_format, read
from digest.ingest.records import SourceError, clean_latex, title_key
from digest.models import IngestRun, Paper

from .conftest import Workdir, shared
from .feeds import api_atom, oai_page, rss

ATOM = "{http://www.w3.org/2005/Atom}"
ARXIV = "{http://arxiv.org/schemas/atom}"


def papers(workdir: Workdir) -> dict[str, Paper]:
    with workdir.db().session() as session:
        return {p.arxiv_id or p.title_key: p for p in session.exec(select(Paper))}


def words(text: str) -> str:
    return " ".join(text.split())


# --- the recorded real feeds, checked against what lxml/json read from the same files ----------------


@pytest.mark.parametrize("name", ["arxiv_api_atom_2026.xml", "arxiv_api_atom_classic_2020.xml"])
def test_arxiv_api_atom_of_both_generations(workdir: Workdir, name: str) -> None:
    path = shared("feeds", name)
    root = etree.parse(str(path)).getroot()
    entries = root.findall(f"{ATOM}entry")
    result = ingest_source(workdir.db(), str(path))
    assert (result.format, result.new, result.skipped) == ("arxiv-api", len(entries), 0)
    stored = papers(workdir)
    for entry in entries:
        versioned = entry.findtext(f"{ATOM}id").rsplit("/abs/", 1)[1]
        arxiv_id, version = versioned.split("v")
        paper = stored[arxiv_id]
        assert paper.version == int(version)
        assert paper.title == words(entry.findtext(f"{ATOM}title"))
        assert paper.authors == [a.findtext(f"{ATOM}name") for a in entry.findall(f"{ATOM}author")]
        primary = entry.find(f"{ARXIV}primary_category").get("term")
        assert paper.categories[0] == primary
        assert set(paper.categories) == {c.get("term") for c in entry.findall(f"{ATOM}category")} | {primary}
        published = dt.datetime.fromisoformat(entry.findtext(f"{ATOM}published").replace("Z", "+00:00"))
        assert paper.published == published and paper.updated is not None
        assert paper.url == f"https://arxiv.org/abs/{arxiv_id}" and paper.pdf_url == f"https://arxiv.org/pdf/{arxiv_id}"
        assert paper.abstract and "  " not in paper.abstract and "\n" not in paper.abstract
        assert paper.first_seen.tzinfo is not None


def test_latex_in_a_real_abstract_is_cleaned(workdir: Workdir) -> None:
    ingest_source(workdir.db(), str(shared("feeds", "arxiv_api_atom_classic_2020.xml")))
    [paper] = papers(workdir).values()
    assert '\\"' not in paper.abstract and "ü" in paper.abstract  # B\"uttiker -> Büttiker
    assert "$I$-$V$" in paper.abstract  # math is kept as written


def test_arxiv_rss_new_and_cross_are_new_and_an_unknown_replace_is_not_stored(workdir: Workdir) -> None:
    path = shared("feeds", "arxiv_rss_2026-09-24.xml")
    items = etree.parse(str(path)).getroot().findall("channel/item")
    kinds = {i.findtext("link").rsplit("/", 1)[1]: i.findtext("{http://arxiv.org/schemas/atom}announce_type") for i in items}
    assert sorted(kinds.values()) == ["cross", "new", "new", "replace"]
    replaced = next(k for k, v in kinds.items() if v == "replace")
    result = ingest_source(workdir.db(), str(path))
    assert (result.format, result.new, result.skipped) == ("rss", 3, 1)
    stored = papers(workdir)
    assert set(stored) == {k for k, v in kinds.items() if v != "replace"}
    for item in items:
        arxiv_id = item.findtext("link").rsplit("/", 1)[1]
        if arxiv_id == replaced:
            continue
        paper = stored[arxiv_id]
        assert paper.title == words(item.findtext("title"))
        assert paper.authors == [n.strip() for n in item.findtext("{http://purl.org/dc/elements/1.1/}creator").split(",")]
        assert paper.categories == [c.text for c in item.findall("category")]
        assert not paper.abstract.startswith("arXiv:") and "Announce Type" not in paper.abstract
        assert paper.abstract == words(item.findtext("description").split("Abstract:", 1)[1])
        assert (paper.published is not None) == (kinds[arxiv_id] == "new")


def test_an_rss_replace_updates_a_known_paper_without_making_it_new(workdir: Workdir, tmp_path: Path) -> None:
    db = workdir.db()
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"id": "2009.13987v2", "title": "An older title", "abstract": "Version two."}) + "\n")
    day1 = dt.datetime(2026, 9, 1, tzinfo=dt.timezone.utc)
    ingest_source(db, str(old), now=day1)
    result = ingest_source(db, str(shared("feeds", "arxiv_rss_2026-09-24.xml")))
    assert (result.new, result.updated, result.skipped) == (3, 1, 0)
    paper = papers(workdir)["2009.13987"]
    assert paper.version == 3 and paper.title != "An older title" and paper.first_seen == day1


def test_oai_pmh_list_records(workdir: Workdir) -> None:
    path = shared("feeds", "arxiv_oai_pmh_listrecords_2026.xml")
    ns = "{http://arxiv.org/OAI/arXiv/}"
    records = list(etree.parse(str(path)).getroot().iter(f"{ns}arXiv"))
    result = ingest_source(workdir.db(), str(path))
    assert (result.format, result.new, result.skipped) == ("arxiv-oai", len(records), 0)
    stored = papers(workdir)
    for record in records:
        paper = stored[record.findtext(f"{ns}id")]
        assert paper.title == words(record.findtext(f"{ns}title"))
        assert paper.categories == record.findtext(f"{ns}categories").split()
        assert paper.authors == [
            " ".join(filter(None, [a.findtext(f"{ns}forenames"), a.findtext(f"{ns}keyname")])) for a in record.iter(f"{ns}author")
        ]
        assert paper.published.date().isoformat() == record.findtext(f"{ns}created")
        assert paper.updated.date().isoformat() == record.findtext(f"{ns}updated")


def test_hugging_face_daily_papers_keep_upvotes(workdir: Workdir) -> None:
    path = shared("feeds", "hf_daily_papers_2026-06.json")
    items = json.loads(path.read_text())
    result = ingest_source(workdir.db(), str(path))
    assert (result.format, result.new, result.skipped) == ("hf-daily", len(items), 0)
    stored = papers(workdir)
    for item in items:
        paper = stored[item["paper"]["id"]]
        assert paper.popularity == item["paper"]["upvotes"]
        assert paper.title == words(item["paper"]["title"])
        assert paper.authors == [a["name"] for a in item["paper"]["authors"]]
        assert paper.published.isoformat().startswith(item["paper"]["publishedAt"][:19])
        assert paper.url == f"https://arxiv.org/abs/{item['paper']['id']}"


def test_everything_under_shared_data_is_one_row_per_paper_and_a_second_pass_is_not_new(workdir: Workdir) -> None:
    files = sorted(shared("hf-trending").glob("*.txt")) + sorted(shared("feeds").glob("*.*")) + sorted(shared("arxiv-daily").glob("*.jsonl"))
    files = [f for f in files if f.suffix in (".txt", ".xml", ".json", ".jsonl")]
    db = workdir.db()
    first = [ingest_source(db, str(f)) for f in files]
    assert all(r.ok for r in first), [r.error for r in first if r.error]
    # The oracle, computed apart: arXiv ids from the id-bearing files, titles of the title-only page.
    ids: set[str] = set()
    titles_with_ids: set[str] = set()
    for f in sorted(shared("arxiv-daily").glob("*.jsonl")):
        for line in f.read_text().splitlines():
            item = json.loads(line)
            ids.add(item["id"].split("v")[0])
            titles_with_ids.add(title_key(item["title"]))
    for result in read_all_feeds():
        for record in result.records:
            if not record.update_only:
                ids.add(record.arxiv_id)
                titles_with_ids.add(record.title_key)
    trending = {r.title_key for f in sorted(shared("hf-trending").glob("*.txt")) for r in read(f.read_bytes()).records}
    with db.session() as session:
        rows = session.exec(select(func.count()).select_from(Paper)).one()
        with_id = session.exec(select(func.count()).select_from(Paper).where(col(Paper.arxiv_id).is_not(None))).one()
    assert with_id == len(ids)
    assert rows == len(ids) + len(trending - titles_with_ids)
    second = [ingest_source(db, str(f)) for f in files]
    assert sum(r.new for r in second) == 0
    with db.session() as session:
        assert session.exec(select(func.count()).select_from(Paper)).one() == rows
        assert session.exec(select(func.count()).select_from(IngestRun)).one() == 2 * len(files)


def read_all_feeds():
    return [read(f.read_bytes()) for f in sorted(shared("feeds").glob("*")) if f.suffix in (".xml", ".json")]


# --- formats told by content, and bad input --------------------------------------------------------


def test_the_format_is_told_by_the_content_not_the_name() -> None:
    assert detect_format(rss([{"id": "2611.00001", "title": "T"}])) == "rss"
    assert detect_format(api_atom([{"id": "2611.00001", "title": "T"}])) == "arxiv-api"
    assert detect_format(oai_page([{"id": "2611.00001", "title": "T"}])) == "arxiv-oai"
    assert detect_format(b'[{"paper": {"id": "2611.00001", "title": "T"}}]') == "hf-daily"
    assert detect_format(b'{"title": "T"}\n{"title": "U"}\n') == "jsonl"
    assert detect_format(b"\xef\xbb\xbf" + b'{"title": "T"}') == "jsonl"
    assert detect_format(b"Mar 3\n\nA title\n\n" + b"An abstract. " * 40) == "hf-trending"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (rss([{"id": "2611.00001", "title": "T"}] * 3)[:-150], "not a well-formed feed"),
        (oai_page([{"id": "2611.00001", "title": "T"}])[:-60], "not well-formed XML"),
        (b'{"error": "rate limited", "status": 429}', "JSON of the wrong shape"),
        (b'{"papers": [1, 2]', "not valid JSON"),
        (b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body><h1>502</h1></body></html>", "HTML page where a feed was expected: '502 Bad Gateway'"),
        (b"<html><body>Service temporarily unavailable<br></body></html>", "HTML page"),
        (b"   \n\n", "empty"),
        (b"<config><a/></config>", "unknown kind"),
        (b"Rate exceeded.", "not a trending-papers page"),
    ],
)
def test_a_source_that_cannot_be_read_says_why(data: bytes, message: str) -> None:
    with pytest.raises(SourceError) as caught:
        read(data)
    assert message in str(caught.value)


def test_an_empty_feed_is_a_message_not_a_failure(workdir: Workdir, tmp_path: Path) -> None:
    path = tmp_path / "weekend.xml"
    path.write_bytes(rss([]))
    result = ingest_source(workdir.db(), str(path))
    assert result.ok and result.new == 0 and "the feed has no entries" in result.notes


def test_bad_entries_are_skipped_and_huge_fields_bounded(workdir: Workdir, tmp_path: Path) -> None:
    path = tmp_path / "mixed.xml"
    path.write_bytes(rss([
        {"id": "2611.00001", "title": "Fine paper", "abstract": "word " * 250_000},  # an abstract of over a megabyte
        {"id": "2611.00002", "title": ""},  # no title
        {"id": "2611.00003", "title": "T" * 1_000_000},  # a megabyte title
        {"id": "2611.00004", "title": "Also fine", "announce": "frobnicate"},
        {"id": "2611.00005", "title": "Still fine"},
    ]))
    result = ingest_source(workdir.db(), str(path))
    assert (result.new, result.skipped) == (2, 3)
    stored = papers(workdir)
    assert set(stored) == {"2611.00001", "2611.00005"}
    assert 19_000 < len(stored["2611.00001"].abstract) <= 20_002
    with workdir.db().session() as session:
        run = session.exec(select(IngestRun)).one()
    assert run.skipped == 3 and "no title" in run.detail and "unknown announce type" in run.detail


def test_a_failing_source_changes_nothing_and_is_recorded(workdir: Workdir, tmp_path: Path) -> None:
    db = workdir.db()
    path = tmp_path / "cut.xml"
    path.write_bytes(api_atom([{"id": f"2611.0000{n}", "title": f"Paper {n}"} for n in range(5)])[:-300])
    result = ingest_source(db, str(path))
    assert not result.ok and "well-formed" in result.error
    with db.session() as session:
        assert session.exec(select(func.count()).select_from(Paper)).one() == 0
        run = session.exec(select(IngestRun)).one()
    assert (run.status, run.errors) == ("failed", 1) and "well-formed" in run.detail


def test_oai_deleted_records_and_dublin_core() -> None:
    result = read(oai_page([{"id": "2611.00001", "title": "Kept", "authors": [("Ann", "Lee"), ("Bo", "Chen")]}, {"id": "2611.00002", "title": "x", "deleted": True}]))
    assert [r.title for r in result.records] == ["Kept"] and result.records[0].authors == ["Ann Lee", "Bo Chen"]
    assert result.skipped == ["record 2: deleted from the archive"]
    dc = b"""<?xml version="1.0"?><OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/"><ListRecords><record>
<header><identifier>oai:arXiv.org:hep-th/9901001</identifier></header><metadata>
<oai_dc:dc xmlns:oai_dc="http://www.openarchives.org/OAI/2.0/oai_dc/" xmlns:dc="http://purl.org/dc/elements/1.1/">
<dc:title>Strings  and
 things</dc:title><dc:creator>Lee, Ann</dc:creator><dc:description>About strings.</dc:description>
<dc:date>1999-01-04</dc:date><dc:date>2001-05-02</dc:date><dc:identifier>http://arxiv.org/abs/hep-th/9901001v2</dc:identifier>
</oai_dc:dc></metadata></record></ListRecords></OAI-PMH>"""
    [record] = read(dc).records
    assert (record.arxiv_id, record.title, record.authors) == ("hep-th/9901001", "Strings and things", ["Ann Lee"])
    assert record.published.year == 1999 and record.updated.year == 2001


def test_an_oai_error_answer() -> None:
    answer = b"""<?xml version="1.0"?><OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/"><error code="badResumptionToken">expired</error></OAI-PMH>"""
    with pytest.raises(SourceError, match="badResumptionToken"):
        read(answer)
    none = b"""<?xml version="1.0"?><OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/"><error code="noRecordsMatch"/></OAI-PMH>"""
    assert read(none).notes == ["no records match this request"]


def test_an_arxiv_api_error_entry_is_a_clear_error() -> None:
    error = b"""<?xml version="1.0" encoding="UTF-8"?><feed xmlns="http://www.w3.org/2005/Atom" xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">
<opensearch:totalResults>1</opensearch:totalResults><entry><id>http://arxiv.org/api/errors#incorrect_id_format_for_1234</id>
<title>Error</title><summary>incorrect id format for 1234</summary></entry></feed>"""
    with pytest.raises(SourceError, match="incorrect id format"):
        read(error)


@pytest.mark.parametrize(
    ("latex", "text"),
    [
        (r"Schr\"{o}dinger and Erd\H{o}s met G\'erard", "Schrödinger and Erdős met Gérard"),
        (r"\emph{Sparse} \textbf{\textit{routing}} for {\it all}", "Sparse routing for all"),
        (r"costs \$5 at 50\% with $\mathcal{O}(n^2)$ time", r"costs $5 at 50% with $\mathcal{O}(n^2)$ time"),
        ("pages 1--3 --- roughly ``so''", "pages 1\u20133 \u2014 roughly \u201cso\u201d"),
        (r"see \url{https://example.org/x_y} and \href{https://e.org}{this}", "see https://example.org/x_y and this"),
        ("Plain  text\n with   spaces", "Plain text with spaces"),
    ],
)
def test_simple_latex_is_cleaned(latex: str, text: str) -> None:
    assert clean_latex(latex) == text
