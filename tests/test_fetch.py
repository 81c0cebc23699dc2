"""Fetching over HTTP from a real local server: retries, politeness, conditional GET, paging."""

from __future__ import annotations

import pytest
from sqlmodel import func, select

from digest.backoff import backoff_delay
from digest.ingest import SourceSpec, ingest_source, ingest_sources
from digest.ingest.fetch import ARXIV_INTERVAL, USER_AGENT, Fetcher
from digest.ingest.records import SourceError
from digest.models import IngestRun, Paper

from .conftest import FeedServer, Workdir, free_port, shared
from .feeds import api_atom, oai_page, rss


class FakeTime:
    """A clock that moves only when slept on, and a record of the sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def fetcher(fake: FakeTime | None = None, **kw) -> Fetcher:
    fake = fake or FakeTime()
    return Fetcher(sleep=fake.sleep, clock=fake.clock, backoff=0.01, **kw)


def count(workdir: Workdir, table=Paper) -> int:
    with workdir.db().session() as session:
        return session.exec(select(func.count()).select_from(table)).one()


def test_recorded_feeds_served_over_http_ingest_like_files(workdir: Workdir, feed_server: FeedServer) -> None:
    urls = [feed_server.serve(f"/{f.name}", f.read_bytes()) for f in sorted(shared("feeds").glob("*.xml"))]
    results = ingest_sources(workdir.db(), urls, fetcher=fetcher())
    assert all(r.ok for r in results) and sum(r.new for r in results) == 5 + 1 + 3 + 3
    assert all(h["user-agent"] == USER_AGENT for _, h in feed_server.requests)
    assert USER_AGENT.startswith("digest/") and "+http" in USER_AGENT


def test_conditional_get_with_etag_and_last_modified(workdir: Workdir, feed_server: FeedServer) -> None:
    db = workdir.db()
    body = rss([{"id": "2611.00001", "title": "First"}])
    tagged = feed_server.serve("/tagged.xml", body, headers={"ETag": '"v1"'})
    dated = feed_server.serve("/dated.xml", body, headers={"Last-Modified": "Wed, 18 Nov 2026 08:00:00 GMT"})
    for url, header, value in ((tagged, "if-none-match", '"v1"'), (dated, "if-modified-since", "Wed, 18 Nov 2026 08:00:00 GMT")):
        first = ingest_source(db, url, fetcher=fetcher())
        second = ingest_source(db, url, fetcher=fetcher())
        assert first.status == "ok" and second.status == "not-modified" and second.new == 0
        asked = feed_server.asked(url.removeprefix(feed_server.base))
        assert header not in asked[0] and asked[1][header] == value
    with db.session() as session:
        assert [r.status for r in session.exec(select(IngestRun).order_by(IngestRun.id))] == ["ok", "not-modified", "ok", "not-modified"]


def test_a_failed_store_does_not_keep_the_new_etag(workdir: Workdir, feed_server: FeedServer) -> None:
    db = workdir.db()
    feed_server.sequence(
        "/flaky.xml",
        (200, {"ETag": '"broken"'}, b"<rss><channel><item><title>cut"),
        (200, {"ETag": '"good"'}, rss([{"id": "2611.00002", "title": "Whole"}])),
    )
    assert not ingest_source(db, feed_server.base + "/flaky.xml", fetcher=fetcher()).ok
    assert ingest_source(db, feed_server.base + "/flaky.xml", fetcher=fetcher()).new == 1
    assert "if-none-match" not in feed_server.asked("/flaky.xml")[1]


def test_retries_with_backoff_on_429_and_5xx_honouring_retry_after(workdir: Workdir, feed_server: FeedServer) -> None:
    fake = FakeTime()
    url = feed_server.sequence(
        "/busy.xml",
        (503, {"Retry-After": "7"}, b"busy"),
        (429, {}, b"slow down"),
        (200, {}, rss([{"id": "2611.00003", "title": "Patience"}])),
    )
    result = ingest_source(workdir.db(), url, fetcher=fetcher(fake))
    assert result.ok and result.new == 1
    assert len(feed_server.asked("/busy.xml")) == 3
    assert fake.sleeps[0] >= 7 and 0 < fake.sleeps[1] < 7


def test_retries_are_bounded_and_the_failure_stores_nothing(workdir: Workdir, feed_server: FeedServer) -> None:
    url = feed_server.serve("/down.xml", b"oops", status=500)
    results = ingest_sources(workdir.db(), [url, "config/sample-feed.jsonl"], fetcher=fetcher(retries=2))
    assert not results[0].ok and "HTTP 500 after 3 tries" in results[0].error
    assert len(feed_server.asked("/down.xml")) == 3
    assert results[1].ok and count(workdir) == 72  # the next source still ran
    assert count(workdir, IngestRun) == 2


def test_network_errors_and_timeouts_are_retried_then_reported(feed_server: FeedServer) -> None:
    with pytest.raises(SourceError, match="no answer after 2 tries"):
        fetcher(retries=1).get(f"http://127.0.0.1:{free_port()}/nothing")
    slow = feed_server.serve("/slow.xml", b"late", delay=1.5)
    with pytest.raises(SourceError, match="Timeout"):
        fetcher(retries=1, timeout=0.3).get(slow)


def test_a_404_is_not_retried(feed_server: FeedServer) -> None:
    with pytest.raises(SourceError, match="HTTP 404"):
        fetcher().get(feed_server.base + "/missing.xml")
    assert len(feed_server.asked("/missing.xml")) == 1


def test_arxiv_hosts_are_asked_at_most_every_three_seconds() -> None:
    fake = FakeTime()
    polite = fetcher(fake)
    for host in ("export.arxiv.org", "arxiv.org", "oaipmh.arxiv.org"):
        polite._last.clear()
        fake.sleeps.clear()
        for _ in range(3):
            polite._wait_turn(host)
        assert fake.sleeps == [ARXIV_INTERVAL, ARXIV_INTERVAL]
    fake.sleeps.clear()
    for _ in range(3):
        polite._wait_turn("huggingface.co")
    assert fake.sleeps == []


def test_oai_resumption_tokens_are_followed_and_paced(workdir: Workdir, feed_server: FeedServer) -> None:
    fake = FakeTime()
    page1 = oai_page([{"id": f"2611.0010{n}", "title": f"Page one paper {n}"} for n in range(3)], token="tok-2")
    page2 = oai_page([{"id": f"2611.0020{n}", "title": f"Page two paper {n}"} for n in range(3)], token="tok-3")
    page3 = oai_page([{"id": "2611.00300", "title": "Last page paper"}])
    feed_server.serve("/oai?verb=ListRecords&metadataPrefix=arXiv&set=cs", page1)
    feed_server.serve("/oai?verb=ListRecords&resumptionToken=tok-2", page2)
    feed_server.serve("/oai?verb=ListRecords&resumptionToken=tok-3", page3)
    polite = fetcher(fake, intervals={"127.0.0.1": ARXIV_INTERVAL})
    result = ingest_source(workdir.db(), feed_server.base + "/oai?verb=ListRecords&metadataPrefix=arXiv&set=cs", fetcher=polite)
    assert (result.format, result.new) == ("arxiv-oai", 7)
    assert [p for p, _ in feed_server.requests] == [
        "/oai?verb=ListRecords&metadataPrefix=arXiv&set=cs",
        "/oai?verb=ListRecords&resumptionToken=tok-2",
        "/oai?verb=ListRecords&resumptionToken=tok-3",
    ]
    assert fake.sleeps == [ARXIV_INTERVAL, ARXIV_INTERVAL]


def test_a_failing_page_fails_the_whole_paged_source(workdir: Workdir, feed_server: FeedServer) -> None:
    feed_server.serve("/oai2?verb=ListRecords&metadataPrefix=arXiv", oai_page([{"id": "2611.00400", "title": "One"}], token="gone"))
    feed_server.serve("/oai2?verb=ListRecords&resumptionToken=gone", b"<html><title>Gateway Timeout</title></html>")
    result = ingest_source(workdir.db(), feed_server.base + "/oai2?verb=ListRecords&metadataPrefix=arXiv", fetcher=fetcher())
    assert not result.ok and "HTML page" in result.error
    assert count(workdir) == 0


def test_arxiv_api_pages_follow_start_up_to_max_papers(workdir: Workdir, feed_server: FeedServer) -> None:
    entries = [{"id": f"2611.0050{n}", "title": f"API paper {n}"} for n in range(5)]
    feed_server.serve("/api/query?search_query=cat%3Acs.LG&max_results=2", api_atom(entries[:2], total=5, start=0))
    feed_server.serve("/api/query?search_query=cat%3Acs.LG&max_results=2&start=2", api_atom(entries[2:4], total=5, start=2))
    feed_server.serve("/api/query?search_query=cat%3Acs.LG&max_results=2&start=4", api_atom(entries[4:], total=5, start=4))
    spec = SourceSpec(feed_server.base + "/api/query?search_query=cat%3Acs.LG&max_results=2", "arxiv-api", max_papers=4)
    result = ingest_source(workdir.db(), spec, fetcher=fetcher())
    assert result.new == 4 and any("stopped after 2 pages" in n for n in result.notes)
    assert len(feed_server.requests) == 2


def test_configured_sources_are_polled_by_ingest_without_arguments(workdir: Workdir, feed_server: FeedServer) -> None:
    url = feed_server.serve("/rss/cs.LG", rss([{"id": "2611.00600", "title": "Polled"}]))
    (workdir.path / "config" / "digest.yaml").write_text(
        f"""sources:
  - name: arxiv cs.LG
    url: {url}
    poll_at: ["06:30", "18:30"]
    timezone: America/New_York
  - name: sample feed
    url: config/sample-feed.jsonl
  - name: switched off
    url: config/nothing-here.jsonl
    enabled: false
"""
    )
    result = workdir.cli("ingest", check=True)
    assert "arxiv cs.LG" in result.stdout and "sample feed" in result.stdout and "switched off" not in result.stdout
    assert count(workdir) == 73
    with workdir.db().session() as session:
        runs = {r.source: r for r in session.exec(select(IngestRun))}
    assert runs["arxiv cs.LG"].new == 1 and runs["sample feed"].new == 72 and runs["sample feed"].seconds > 0


def test_a_bad_source_in_the_config_names_file_line_and_field(workdir: Workdir) -> None:
    (workdir.path / "config" / "digest.yaml").write_text("sources:\n  - name: x\n    url: ftp://example.org/feed\n    poll_at: noon\n")
    result = workdir.cli("ingest")
    assert result.returncode == 2
    assert "digest.yaml:3: sources[0].url: a source is a path or an http(s) URL" in result.stderr


def test_every_retry_waits_by_one_rule() -> None:
    for attempt in range(4):
        waits = [backoff_delay(2.0, attempt) for _ in range(200)]
        assert all(2.0 * 2**attempt * 0.5 <= w <= 2.0 * 2**attempt for w in waits)
        assert max(waits) - min(waits) > 0.2 * 2**attempt  # jittered, not one value
