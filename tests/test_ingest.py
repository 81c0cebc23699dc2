"""Ingest: the trending-papers page and JSONL, deduplication, and sources that fail safely."""

from __future__ import annotations

import json
from pathlib import Path

from sqlmodel import func, select

from digest.ingest import ingest_source
from digest.ingest.readers import read
from digest.ingest.records import parse_arxiv_id, title_key
from digest.mail.view import paper_fields
from digest.models import Paper
from digest.textmodel import TOKENS_MARK, StemmingTokenizer, TextModel, paper_text, paper_tokens

from .conftest import ROOT, Workdir, both_databases, shared

# Written for these tests, in the two layouts of the real pages.
ABSTRACT_1 = "We study how small recurrent routers pick experts. " * 8
ABSTRACT_2 = "A benchmark of retrieval pipelines for long documents, with error analysis. " * 6
PAGE_WITH_BLANKS = f"""new

Get trending papers in your email inbox!

Subscribe

byAK and the research community

Mar 12

Recurrent Routers for Sparse Experts

{ABSTRACT_1}

Long Documents, Short Answers

{ABSTRACT_2}
"""
PAGE_WITHOUT_BLANKS = f"""Get trending papers in your email inbox once a day!
Get trending papers in your email inbox!
SubscribeRecurrent Routers for Sparse Experts
{ABSTRACT_1}
Long Documents, Short Answers
{ABSTRACT_2}
"""


def count(workdir: Workdir) -> int:
    with workdir.db().session() as session:
        return session.exec(select(func.count()).select_from(Paper)).one()


def test_both_layouts_of_the_trending_page_read_the_same() -> None:
    for page in (PAGE_WITH_BLANKS, PAGE_WITHOUT_BLANKS):
        result = read(page.encode())
        assert result.format == "hf-trending"
        assert [r.title for r in result.records] == ["Recurrent Routers for Sparse Experts", "Long Documents, Short Answers"]
        assert result.records[0].abstract == ABSTRACT_1.strip()
        assert result.skipped == []


def test_a_trending_title_without_abstract_is_skipped_and_counted() -> None:
    page = f"Mar 3\n\nOrphan Title\n\nRecurrent Routers for Sparse Experts\n\n{ABSTRACT_1}\n"
    result = read(page.encode())
    assert [r.title for r in result.records] == ["Recurrent Routers for Sparse Experts"]
    assert len(result.skipped) == 1 and "Orphan Title" in result.skipped[0]


def test_jsonl_reads_good_lines_and_skips_bad_ones_with_a_count() -> None:
    lines = [
        json.dumps({"id": "2604.01234v2", "title": "A  Paper\n Title", "summary": "An abstract.", "authors": ["A. One", "B. Two"],
                    "categories": ["cs.CL", "cs.LG"], "published": "2026-04-02", "abs": "https://arxiv.org/abs/2604.01234v2"}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"id": "x", "abstract": "no title here"}),
        json.dumps({"title": "Old style", "url": "http://arxiv.org/abs/hep-th/9901001v3", "authors": "C. Three and D. Four"}),
        "",
        json.dumps({"title": "Bad authors", "authors": [1, 2]}),
    ]
    result = read("\n".join(lines).encode())
    assert result.format == "jsonl"
    assert len(result.records) == 2
    assert len(result.skipped) == 4
    assert [s.split(":")[0] for s in result.skipped] == ["line 2", "line 3", "line 4", "line 7"]
    first, second = result.records
    assert (first.arxiv_id, first.version, first.title) == ("2604.01234", 2, "A Paper Title")
    assert first.categories == ["cs.CL", "cs.LG"] and first.published.isoformat() == "2026-04-02T00:00:00+00:00"
    assert first.url == "https://arxiv.org/abs/2604.01234v2" and first.pdf_url == "https://arxiv.org/pdf/2604.01234"
    assert (second.arxiv_id, second.version, second.authors) == ("hep-th/9901001", 3, ["C. Three", "D. Four"])


def test_arxiv_ids_and_title_keys() -> None:
    assert parse_arxiv_id("arXiv:2609.26811v1") == ("2609.26811", 1)
    assert parse_arxiv_id("oai:arXiv.org:2504.11237") == ("2504.11237", None)
    assert parse_arxiv_id("https://arxiv.org/pdf/0704.0001v2.pdf") == ("0704.0001", 2)
    assert parse_arxiv_id("math.GT/0309136") == ("math.GT/0309136", None)
    assert parse_arxiv_id("sample-001") is None
    assert parse_arxiv_id("12345.6789") is None
    assert title_key("Mixture-of-Experts: A Survey!") == title_key("mixture of experts  a survey") == "mixture of experts a survey"
    assert title_key("Über Ähnlichkeit") == "uber ahnlichkeit"


@both_databases
def test_the_same_paper_met_again_is_one_row_and_stays_first_seen(workdir: Workdir, tmp_path: Path) -> None:
    db = workdir.db()
    day1 = tmp_path / "day1.jsonl"
    day1.write_text(
        json.dumps({"title": "Sparse Routers", "abstract": "v1 text"}) + "\n"  # title only, as on the trending page
        + json.dumps({"id": "2604.00001v1", "title": "Dense Retrievers", "abstract": "first version"}) + "\n"
    )
    day2 = tmp_path / "day2.jsonl"
    day2.write_text(
        json.dumps({"id": "2604.00002v1", "title": "Sparse  routers", "abstract": "v1 text", "categories": ["cs.LG"]}) + "\n"
        + json.dumps({"id": "2604.00001v2", "title": "Dense Retrievers, Revisited", "abstract": "second version"}) + "\n"
        + json.dumps({"id": "2604.00001v1", "title": "Dense Retrievers", "abstract": "first version"}) + "\n"
    )
    first = ingest_source(db, str(day1))
    assert (first.new, first.updated) == (2, 0)
    with db.session() as session:
        seen = {p.title_key: p.first_seen for p in session.exec(select(Paper))}
    second = ingest_source(db, str(day2))
    assert (second.new, second.updated, second.unchanged) == (0, 2, 0)
    assert count(workdir) == 2
    with db.session() as session:
        papers = {p.arxiv_id: p for p in session.exec(select(Paper))}
    assert papers["2604.00002"].categories == ["cs.LG"]  # the title-only row learnt its arXiv id
    assert papers["2604.00002"].first_seen == seen["sparse routers"]
    assert (papers["2604.00001"].title, papers["2604.00001"].version) == ("Dense Retrievers, Revisited", 2)
    assert papers["2604.00001"].first_seen == seen["dense retrievers"]
    third = ingest_source(db, str(day2))
    assert (third.new, third.updated, third.unchanged) == (0, 0, 2)


@both_databases
def test_the_tldr_is_stored_with_the_abstract_and_follows_a_new_version(workdir: Workdir, tmp_path: Path) -> None:
    """A paper's TL;DR is worked out once, when its abstract is stored (not by every run that
    shows it); a new version with another abstract gets a new one; a paper stored before the
    column existed (NULL) still shows one."""
    db = workdir.db()
    v1 = "Sorting is everywhere. We propose Quicksort Nine, a sort that is fast. It wins on ten benchmarks."
    v2 = "Sorting is everywhere. We introduce Quicksort Ten, a sort that is faster still. It wins on twenty benchmarks."
    for version, abstract in ((1, v1), (2, v2)):
        feed = tmp_path / f"v{version}.jsonl"
        feed.write_text(json.dumps({"id": f"2604.00009v{version}", "title": "Quicksort Nine", "abstract": abstract}) + "\n")
        ingest_source(db, str(feed))
        with db.session() as session:
            paper = session.exec(select(Paper)).one()
        assert paper.tldr == f"We {'propose Quicksort Nine, a sort that is fast' if version == 1 else 'introduce Quicksort Ten, a sort that is faster still'}."
        assert paper_fields(paper)["tldr"] == paper.tldr
    paper.tldr = None  # as stored before migration 0005
    assert paper_fields(paper)["tldr"] == "We introduce Quicksort Ten, a sort that is faster still."


def test_the_words_are_stored_with_the_text_and_read_back_as_the_tokenizer_gives_them(workdir: Workdir, tmp_path: Path) -> None:
    """What a text model reads of a paper is worked out at ingest and stored: read back, it is
    what the tokenizer gives (so a model fitted on it is the one fitted on the texts); a new
    version's text replaces it; words stored by another tokenizer (another mark) are not read."""
    db = workdir.db()
    papers = [("Mixture of Experts Routing", "We propose sparse routers for mixtures of experts. Tokens go to 2 experts.", ["A. Author"]),
              ("Language Models of Proteins", "Protein language models learn folding. We study their scaling laws.", ["B. Writer", "A. Author"])]
    feed = tmp_path / "v1.jsonl"
    feed.write_text("".join(json.dumps({"id": f"2604.0001{n}v1", "title": t, "abstract": a, "authors": au}) + "\n" for n, (t, a, au) in enumerate(papers)))
    ingest_source(db, str(feed))
    tokenizer = StemmingTokenizer()
    with db.session() as session:
        stored = session.exec(select(Paper).order_by(Paper.id)).all()
    tokens = [paper_tokens(p.terms, p.title, p.abstract, p.authors) for p in stored]
    assert all(p.terms.startswith(TOKENS_MARK) for p in stored)
    assert tokens == [tokenizer(paper_text(*paper)) for paper in papers] and "expert" in tokens[0]
    from_texts, from_tokens = TextModel(), TextModel()
    assert (from_texts.fit_counts(paper_text(*paper) for paper in papers) != from_tokens.fit_tokens(tokens)).nnz == 0
    assert from_texts.vocabulary_ == from_tokens.vocabulary_
    feed.write_text(json.dumps({"id": "2604.00010v2", "title": papers[0][0], "abstract": "We propose dense routers.", "authors": papers[0][2]}) + "\n")
    ingest_source(db, str(feed))
    with db.session() as session:
        paper = session.exec(select(Paper).order_by(Paper.id)).first()
    assert paper_tokens(paper.terms, paper.title, paper.abstract, paper.authors) == tokenizer(paper_text(papers[0][0], "We propose dense routers.", papers[0][2]))
    assert paper_tokens("t0 stale words", paper.title, paper.abstract, paper.authors) == tokenizer(paper_text(paper.title, paper.abstract, paper.authors))


def test_a_source_that_cannot_be_read_writes_nothing_and_others_still_run(workdir: Workdir, tmp_path: Path) -> None:
    html = tmp_path / "error.html"
    html.write_text("<!DOCTYPE html><html><body><h1>503 Service Unavailable</h1></body></html>")
    binary = tmp_path / "blob.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    result = workdir.cli("ingest", str(tmp_path / "missing.jsonl"), str(html), str(binary), str(empty), "config/sample-feed.jsonl")
    assert result.returncode == 1
    assert "No such file" in result.stdout
    assert "HTML page where a feed was expected" in result.stdout and "UTF-8" in result.stdout and "empty" in result.stdout
    assert count(workdir) == 72  # the good source was stored, the bad ones wrote nothing


def test_a_malformed_entry_is_skipped_with_a_warning_and_counted(workdir: Workdir, tmp_path: Path) -> None:
    feed = tmp_path / "feed.jsonl"
    feed.write_text(json.dumps({"title": "Fine", "abstract": "ok"}) + "\n{broken\n")
    result = workdir.cli("ingest", str(feed))
    assert result.returncode == 0
    assert "line 2: not valid JSON" in result.stderr
    assert count(workdir) == 1


def test_the_sample_feed_has_sixty_papers_over_six_topics() -> None:
    result = read((ROOT / "config" / "sample-feed.jsonl").read_bytes())
    assert result.skipped == []
    assert len(result.records) >= 60
    assert len({r.categories[0] for r in result.records}) >= 6
    assert all(r.abstract and r.authors and r.published for r in result.records)


def test_the_five_trending_pages_are_595_entries_of_536_papers(workdir: Workdir) -> None:
    pages = sorted(shared("hf-trending").glob("*.txt"))
    db = workdir.db()
    results = [ingest_source(db, str(p)) for p in pages]
    assert [r.format for r in results] == ["hf-trending"] * 5
    assert sum(r.new + r.updated + r.unchanged for r in results) == 595
    assert sum(r.skipped for r in results) == 0
    assert count(workdir) == 536
    again = [ingest_source(db, str(p)) for p in pages]
    assert sum(r.new for r in again) == 0
