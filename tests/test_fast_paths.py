"""The fast paths of the daily run give what the straightforward ones give, on small inputs:
the same ranking, the same HTML, the same messages, each message delivered once."""

from __future__ import annotations

import datetime as dt
import gc
import os
import re
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from digest import matrices
from digest.config import RankingConfig, load_config
from digest.ingest import ingest_source
from digest.ingest.readers import read
from digest.mail.compose import Composer, compose
from digest.mail.render import DigestView, ItemView, RenderedDigest, Renderer
from digest.mail.transports import OutboxTransport, SMTPTransport
from digest.matrices import dense_product
from digest.profiles import sync_profiles
from digest.ranking import papers as ranking_papers
from digest.ranking.community import Community
from digest.ranking.papers import Candidates, Examples
from digest.ranking.ranker import Ranker
from digest.ranking.readers import History, Interests, Reader
from digest.send import heap
from digest.send import run as send_run
from digest.send.select import Selector
from digest.textmodel import TextModel, paper_text

from .conftest import ROOT, SMTPSink, Workdir

# --- ranking ------------------------------------------------------------------------------------------


def sample_world(readers: int = 60, seed: int = 3) -> tuple[TextModel, Candidates, Examples, list[Reader], list, object]:
    """The bundled sample feed: the first 50 papers are candidates, the rest what readers opened."""
    records = read((ROOT / "config" / "sample-feed.jsonl").read_bytes()).records
    texts = [paper_text(r.title, r.abstract, r.authors) for r in records]
    model = TextModel()
    counts = model.fit_counts(texts)
    n = 50
    ids = list(range(1, len(records) + 1))
    candidates = Candidates.build(model, ids[:n], counts[:n], [r.authors for r in records[:n]], [r.categories for r in records[:n]])
    examples = Examples.build(model, [(i, r.title) for i, r in zip(ids, records)], counts)
    rng = np.random.default_rng(seed)
    # Interests as people write them: a word of a title, or two adjacent ones.
    words = sorted({w for r in records[:n] for w in re.findall(r"[a-z]{6,}", r.title.lower())})
    pairs = sorted({f"{a} {b}" for r in records[:n] for a, b in zip(r.title.lower().split(), r.title.lower().split()[1:]) if len(a) > 4 and len(b) > 4})
    vocabulary = words + pairs
    people = []
    for key in range(readers):
        phrases = tuple((str(rng.choice(vocabulary)), float(rng.choice([1.0, 2.0]))) for _ in range(int(rng.integers(1, 4))))
        opened = [int(p) for p in rng.choice(ids[n:], size=int(rng.integers(0, 6)), replace=False)]
        skipped = [int(p) for p in rng.choice(ids[:n], size=int(rng.integers(0, 5)), replace=False)]
        history = History(tuple(opened + skipped), tuple([1.0] * len(opened) + [-0.15] * len(skipped)), len(opened))
        authors = (records[int(rng.integers(n))].authors[0],) if rng.random() < 0.2 else ()
        people.append(Reader(key, Interests(phrases, authors=authors), history, max_items=int(rng.choice([3, 5, 10]))))
    return model, candidates, examples, people, records, counts[:n]


def rows(result) -> list[list[tuple]]:
    return [[(r.index, round(r.score, 5), r.reason) for r in ranked] for ranked in result]


def test_batched_ranking_is_the_ranking_of_each_reader_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    model, candidates, examples, readers, _, counts = sample_world()
    community = Community({r.key: list(r.history.positive_papers) for r in readers if r.history.positives})
    allowed = [None if i % 3 else np.arange(len(candidates)) % 2 == 0 for i in range(len(readers))]
    fast = Ranker(model, RankingConfig(), examples, community, chunk=512).rank(readers, candidates, allowed)
    assert candidates.similarity() is not None  # the fast path held every likeness in one matrix

    # The straightforward way: one reader at a time, likeness computed for each reader's top alone.
    monkeypatch.setattr(ranking_papers, "DENSE_SIMILARITY_LIMIT", 0)
    plain_candidates = Candidates.build(model, candidates.ids, counts, candidates.authors, candidates.categories)
    slow = Ranker(model, RankingConfig(), examples, community, chunk=1).rank(readers, plain_candidates, allowed)
    assert plain_candidates.similarity() is None
    assert rows(fast) == rows(slow)
    assert sum(len(r) for r in fast) > 100 and any("you opened" in r.reason for rs in fast for r in rs)


@pytest.mark.parametrize("index", [np.int32, np.int64])
def test_a_dense_product_is_the_sparse_product_made_dense(index: type, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    a = sparse.random(300, 5000, density=0.01, format="csr", dtype=np.float32, random_state=rng)
    b = sparse.random(5000, 400, density=0.02, format="csr", dtype=np.float32, random_state=rng)
    a.data[a.indptr[3] : a.indptr[4]] = 0  # an empty row
    a.eliminate_zeros()
    a.indices, a.indptr = a.indices.astype(index), a.indptr.astype(index)
    assert matrices._sparsetools is not None  # SciPy's kernel, not the fallback, is what is checked
    for left, right in [(a, b), (a, b.tocsc()), (a.astype(np.float64), b), (a[:0], b), (b.T, a.T)]:
        fast = dense_product(left, right)
        assert fast.dtype == (left @ right).dtype and np.array_equal(fast, (left @ right).toarray())
    assert np.count_nonzero(dense_product(a, b)) > 1000
    # Above the bound, the public product
    monkeypatch.setattr(matrices, "MAX_ENTRIES", 10)
    assert np.array_equal(dense_product(a, b), (a @ b).toarray())


def test_the_opened_paper_named_in_a_reason_is_the_most_like_the_item() -> None:
    model, candidates, examples, readers, records, _ = sample_world()
    result = Ranker(model, RankingConfig(), examples).rank(readers, candidates)
    checked = 0
    for reader, ranked in zip(readers, result):
        opened = [p for p, w in zip(reader.history.papers, reader.history.weights) if w > 0]
        for item in ranked:
            said = re.search(r"like “(.+?)” you opened", item.reason)
            if not said:
                continue
            likeness = {p: float((examples.words[examples.row[p]] @ candidates.vectors[item.index].T).toarray()[0, 0]) for p in opened}
            best = max(likeness, key=lambda p: (likeness[p], -opened.index(p)))
            title = records[best - 1].title
            assert said.group(1) == (title if len(title) <= 70 else title[:69].rsplit(" ", 1)[0] + "…")
            checked += 1
    assert checked >= 10


# --- rendering ----------------------------------------------------------------------------------------

TRICKY = [
    "<script>alert('x')</script> & <b>bold</b> \"quoted\" 'single'",
    "Schrödinger — “curly” ½ ≤ ∑ 😀 \u00a0non-breaking\u2028line separator",
    "&amp; already escaped &lt;tag&gt; and a lone & and ]]> and -- too",
    "tab\tand\nnewline and a form\x0cfeed",
    "carriage\r\nreturn",  # libxml2 reads CR as LF: the slow path is taken, the HTML is the same
]


def tricky_view(n: int, items: int, url: str = "https://digest.example.org/c/c{n}.sig", name: str | None = "Ada <Lovelace> & co") -> DigestView:
    entries = [
        ItemView(
            rank=i + 1, title=TRICKY[(n + i) % len(TRICKY)], click_url=url.format(n=i), more_url=f"https://digest.example.org/f/f{i}.sig?v=up",
            less_url=f"https://digest.example.org/f/f{i}.sig?v=down", pdf_url=f"https://digest.example.org/d/d{i}.sig" if i % 3 else "",
            byline=f"Émile Zola, A. B. & C et al. · 20 Nov 2026 · {TRICKY[(n + i + 2) % len(TRICKY)]}",
            arxiv_id="2611.00001" if i % 2 else "", categories=tuple(TRICKY[(n + i + k) % len(TRICKY)][:12] for k in range(i % 3)),
            tldr=TRICKY[(n + i + 1) % len(TRICKY)] * 3, reason="matches x & y" if i % 2 else "",
        )
        for i in range(items)
    ]
    return DigestView("ada@example.org", name, dt.date(2026, 11, 22), ["graphs <b>", "x & y"], entries,
                      "https://digest.example.org/v/v1.sig", "https://digest.example.org/u/u1.sig", "https://digest.example.org/p/p1.sig")


def test_the_inlined_template_gives_the_html_of_premailer_on_each_message() -> None:
    fast, slow = Renderer(ROOT / "templates"), Renderer(ROOT / "templates", inline="message")
    views = [tricky_view(n, items) for n in range(len(TRICKY)) for items in (0, 1, 4)]
    views += [tricky_view(0, 2, name=None), tricky_view(1, 3, url="https://digest.example.org/c/with space/é{n}\"")]
    for view in views:
        assert fast.render(view) == slow.render(view)
    # Only the messages with a carriage return or an odd URL fell back to premailer.
    odd = [v for v in views if any("\r" in i.title + i.tldr + i.byline + "".join(i.categories) or " " in i.click_url for i in v.items)]
    assert 0 < fast.slow_renders == len(odd) < len(views)


def test_a_changed_template_is_inlined_again(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    renderer = Renderer(tmp_path / "templates")
    before = renderer.render(tricky_view(1, 1)).html
    page = tmp_path / "templates" / "email" / "digest.html"
    page.write_text(page.read_text().replace(".brand { margin: 0;", ".brand { margin: 0; border-left: 3px solid #123456;"), encoding="utf-8")
    after = renderer.render(tricky_view(1, 1)).html
    assert "#123456" not in before and "#123456" in after
    assert after == Renderer(tmp_path / "templates", inline="message").render(tricky_view(1, 1)).html


# --- composing -----------------------------------------------------------------------------------------


def test_the_fast_mime_message_reads_as_the_email_message_api_writes_it() -> None:
    rendered = RenderedDigest("3 new papers for 22 Nov: Schrödinger bridges, “quoted” …", "<p>HTML é 😀</p>\n" * 40, "Text é\nFrom the top\n. dot\n" * 10)
    args = dict(sender="Paper Digest <digest@example.net>", to_email="ada@example.org", to_name="Zoë, Q.", msg_id="<d.1@example.net>",
                unsubscribe_url="https://example.net/u/" + "t" * 90, date=dt.datetime(2026, 11, 22, 7, tzinfo=dt.timezone.utc))
    fast = message_from_bytes(compose(rendered=rendered, **args).data, policy=policy.default)
    slow = EmailMessage(policy=policy.SMTP)
    slow["From"], slow["To"], slow["Subject"] = args["sender"], f'"{args["to_name"]}" <{args["to_email"]}>', rendered.subject
    slow.set_content(rendered.text, charset="utf-8")
    slow.add_alternative(rendered.html, subtype="html", charset="utf-8")
    slow = message_from_bytes(slow.as_bytes(), policy=policy.default)
    for header in ("From", "To", "Subject"):
        assert str(fast[header]) == str(slow[header])
    assert fast["List-Unsubscribe"] == f"<{args['unsubscribe_url']}>"  # on one line, not folded before the URL
    for kind in ("plain", "html"):
        assert fast.get_body((kind,)).get_content().replace("\r\n", "\n") == slow.get_body((kind,)).get_content().replace("\r\n", "\n")


# --- the whole send ---------------------------------------------------------------------------------------


def test_worker_processes_rank_and_make_the_messages_one_process_makes(workdir: Workdir, monkeypatch: pytest.MonkeyPatch) -> None:
    now = dt.datetime(2026, 11, 24, 12, tzinfo=dt.timezone.utc)
    db = workdir.db()
    ingest_source(db, "config/sample-feed.jsonl", now=now - dt.timedelta(hours=1))
    sync_profiles(db, workdir.path / "config" / "subscribers")
    db.dispose()
    database = Path(workdir.env["DIGEST_DATABASE_URL"].removeprefix("sqlite:///"))
    shutil.copy(database, database.with_name("copy.db"))
    monkeypatch.setattr(send_run, "WORKERS_FROM", 1)
    makers = workdir.path / "makers"
    makers.mkdir()

    def compose_and_tell(self, rendered, **kwargs):  # which process made each message (a worker writes a file too)
        (makers / f"{os.getpid()}-{kwargs['to_email']}").touch()
        return real_compose(self, rendered, **kwargs)

    real_compose = Composer.compose
    monkeypatch.setattr(Composer, "compose", compose_and_tell)
    rankers = workdir.path / "rankers"
    rankers.mkdir()

    def rank_and_tell(self, wanted):  # which process ranked each subscriber
        for plan in wanted:
            (rankers / f"{os.getpid()}-{plan.subscriber_id}").touch()
        return real_rank(self, wanted)

    real_rank = Selector.rank
    monkeypatch.setattr(Selector, "rank", rank_and_tell)
    frozen: list[int] = []  # objects this process keeps out of the garbage collector's passes, at each delivery
    young: set[int] = set()  # the collector's threshold for its youngest generation, at each delivery
    threshold = gc.get_threshold()

    def send_and_tell(self, message, key):
        frozen.append(gc.get_freeze_count())
        young.add(gc.get_threshold()[0])
        return real_send(self, message, key)

    real_send = OutboxTransport.send
    monkeypatch.setattr(OutboxTransport, "send", send_and_tell)

    def run(url: str, outbox: Path, workers: int) -> dict[str, bytes]:
        settings = workdir.settings(DIGEST_DATABASE_URL=url, DIGEST_OUTBOX=str(outbox))
        from digest.db import Database

        config = load_config(settings.config_path)
        sender = send_run.DigestSender(Database(url), settings, config, Renderer(settings.templates_dir), OutboxTransport(outbox), lambda: now, workers=workers)
        report = sender.run()
        assert report.count("sent") == 4
        # The MIME boundary is random; all else must be byte for byte the same.
        return {f.name: re.sub(rb"=_digest_[0-9a-f]+", b"BOUNDARY", f.read_bytes()) for f in outbox.glob("*.eml")}

    one = run(workdir.env["DIGEST_DATABASE_URL"], workdir.path / "one", workers=1)
    by_me = {p.name for p in makers.iterdir()}
    ranked_by_me = {p.name for p in rankers.iterdir()}
    assert {name.split("-")[0] for name in by_me | ranked_by_me} == {str(os.getpid())} and len(ranked_by_me) == 4
    assert frozen == [0] * 4
    frozen.clear()
    two = run(f"sqlite:///{database.with_name('copy.db')}", workdir.path / "two", workers=2)
    # What the workers inherited stays frozen here while they live (the run's long-lived state is
    # not walked by every full pass of the collector), and is let go with them.
    assert len(frozen) == 4 and min(frozen) > 0 and gc.get_freeze_count() == 0
    # Both runs, with and without workers, let the collector pass less often, and only while they run.
    assert young == {heap.YOUNG_THRESHOLD} and gc.get_threshold() == threshold
    by_workers = {p.name.split("-")[0] for p in makers.iterdir() if p.name not in by_me}
    assert by_workers and str(os.getpid()) not in by_workers  # the second run's messages were made in worker processes
    ranked_by_workers = [p.name for p in rankers.iterdir() if p.name not in ranked_by_me]
    assert len(ranked_by_workers) == 4 and str(os.getpid()) not in {name.split("-")[0] for name in ranked_by_workers}  # ... and ranked there
    assert len(one) == 4 and one == two


def test_parallel_smtp_connections_deliver_each_message_once(workdir: Workdir, smtp_sink: SMTPSink) -> None:
    settings = workdir.settings(DIGEST_TRANSPORT="smtp", SMTP_HOST=smtp_sink.host, SMTP_PORT=str(smtp_sink.port), SMTP_CONNECTIONS="4")
    rendered = RenderedDigest("Digest", "<p>HTML</p>", "Text\n")
    messages = [compose(rendered=rendered, sender="Paper Digest <digest@example.net>", to_email=f"user{n}@example.org", to_name=None,
                        msg_id=f"<digest.{n}@example.net>", unsubscribe_url=f"https://example.net/u/u{n}", date=dt.datetime(2026, 11, 24, 7, tzinfo=dt.timezone.utc))
                for n in range(60)]
    threads: set[str] = set()
    smtp = SMTPTransport(settings)

    def deliver(pair):
        threads.add(threading.current_thread().name)
        return smtp.send(pair[1], f"k{pair[0]}")

    with smtp, ThreadPoolExecutor(smtp.connections) as pool:
        list(pool.map(deliver, enumerate(messages)))
    received = smtp_sink.by_recipient()
    assert sorted(received) == sorted(f"user{n}@example.org" for n in range(60))
    assert all(len(got) == 1 for got in received.values())
    assert 1 < smtp_sink.connections <= 4 and smtp_sink.connections <= len(threads)  # one connection per thread, reused


def test_the_outbox_does_not_count_a_file_cut_short(tmp_path: Path) -> None:
    rendered = RenderedDigest("Digest", "<p>HTML</p>", "Text\n")
    message = compose(rendered=rendered, sender="d@example.net", to_email="a@example.org", to_name=None, msg_id="<d@example.net>",
                      unsubscribe_url="https://example.net/u/u", date=dt.datetime(2026, 11, 24, 7, tzinfo=dt.timezone.utc))
    with OutboxTransport(tmp_path) as outbox:
        outbox.send(message, "whole")
        outbox.send(message, "cut")
    (tmp_path / "cut.eml").write_bytes(message.data[: len(message.data) // 2])  # as a machine crash may leave it
    (tmp_path / "empty.eml").write_bytes(b"")
    assert outbox.delivered("whole") and not outbox.delivered("cut") and not outbox.delivered("empty")
