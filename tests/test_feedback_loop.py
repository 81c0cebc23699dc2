"""The loop from the email back into the ranking, on real parts: aiosmtpd receives the digest, a
real uvicorn (`digest web`) answers its links, `digest retrain` learns, and the next day's digest
changes. Three subscribers share one profile: one clicks, one says "less like this", one does nothing."""

from __future__ import annotations

import datetime as dt
import json
import re
from email.message import EmailMessage

import httpx
import pytest
from lxml import html as lxml_html
from sqlmodel import select

from digest.models import FeedbackEvent, SubscriberModel

from .conftest import SMTPSink, Web, Workdir

PROFILE = """email: {name}@example.org
timezone: UTC
max_items: 12
interests:
  - reinforcement learning
  - diffusion models
  - quantum computing
"""

TOPICS = {
    "robots": [
        ("Legged robot locomotion on ice with reinforcement learning", "A quadruped robot learns to walk on ice with reinforcement learning and a terrain curriculum."),
        ("Reinforcement learning for robot stair climbing", "A legged robot climbs stairs; reinforcement learning with proprioception and depth images."),
        ("Sim-to-real reinforcement learning for humanoid walking", "A humanoid robot walks after reinforcement learning in simulation with randomized dynamics."),
        ("Robot locomotion over rubble by reinforcement learning", "Reinforcement learning trains a legged robot gait controller for rubble and debris."),
    ],
    "images": [
        ("Diffusion models for faster image editing", "Image diffusion models edit photographs with attention guidance and fewer sampling steps."),
        ("Latent diffusion models for sketch to image", "Diffusion models turn sketches into images with a latent denoiser and layout control."),
        ("Video diffusion models with temporal attention", "Diffusion models generate video frames with temporal attention and image priors."),
        ("Distilling diffusion models into one-step image generators", "Diffusion models are distilled into a one-step image generator with adversarial loss."),
    ],
    "quantum": [
        ("Quantum computing with error-corrected logical qubits", "Quantum computing on logical qubits with surface code error correction and decoders."),
        ("Variational quantum computing for chemistry", "Quantum computing estimates molecular energies with a variational circuit ansatz."),
        ("Quantum computing benchmarks on trapped ions", "Trapped-ion quantum computing is benchmarked with randomized circuits and fidelity."),
        ("Compiling circuits for quantum computing hardware", "Quantum computing circuits are compiled to hardware gates with routing and scheduling."),
    ],
}


def day_two_feed(path) -> None:
    lines = [
        json.dumps({"id": f"day2-{topic}-{n}", "title": title, "abstract": abstract, "authors": [f"Author {topic} {n}"]})
        for topic, papers in TOPICS.items() for n, (title, abstract) in enumerate(papers)
    ]
    path.write_text("\n".join(lines) + "\n")


def items(message: EmailMessage) -> list[dict]:
    """The papers of a received digest, in order, with their links."""
    tree = lxml_html.fromstring(message.get_body(("html",)).get_content())
    result = []
    for cell in tree.xpath("//td[contains(@class, 'item')]"):
        title = cell.xpath(".//a[contains(@href, '/c/')]")[0]
        result.append({
            "title": title.text_content(),
            "click": title.get("href"),
            "up": cell.xpath(".//a[contains(@href, 'v=up')]/@href")[0],
            "down": cell.xpath(".//a[contains(@href, 'v=down')]/@href")[0],
            "reason": " ".join(cell.xpath(".//p[contains(@class, 'reason')]//text()")),
        })
    return result


def topic_of(title: str) -> str | None:
    return next((t for t, papers in TOPICS.items() if title in [p[0] for p in papers]), None)


def mean_rank(digest: list[dict], topic: str) -> float:
    ranks = [n for n, item in enumerate(digest, start=1) if topic_of(item["title"]) == topic]
    assert len(ranks) == 4, (topic, [i["title"] for i in digest])
    return sum(ranks) / len(ranks)


@pytest.fixture
def loop(workdir: Workdir, smtp_sink: SMTPSink):
    folder = workdir.path / "people"
    folder.mkdir()
    for name in ("clicker", "critic", "control"):
        (folder / f"{name}.yaml").write_text(PROFILE.format(name=name))
    workdir.env.update({"DIGEST_PROFILES": str(folder), "DIGEST_TRANSPORT": "smtp", "SMTP_HOST": smtp_sink.host, "SMTP_PORT": str(smtp_sink.port)})
    web = Web(workdir)
    workdir.cli("ingest", "config/sample-feed.jsonl", check=True)
    workdir.cli("profiles", "sync", check=True)
    workdir.cli("send", check=True)
    web.start()
    try:
        yield web
    finally:
        web.stop()


def test_a_click_and_a_thumbs_down_change_the_next_days_ranking(loop: Web, workdir: Workdir, smtp_sink: SMTPSink) -> None:
    day1 = {rcpt: items(messages[0]) for rcpt, messages in smtp_sink.by_recipient().items()}
    assert sorted(day1) == ["clicker@example.org", "control@example.org", "critic@example.org"]
    titles = {rcpt: [i["title"] for i in digest] for rcpt, digest in day1.items()}
    assert titles["clicker@example.org"] == titles["control@example.org"] == titles["critic@example.org"]  # same profile

    # The clicker opens a legged-robot paper: a real redirect to the paper's own page.
    robot = next(i for i in day1["clicker@example.org"] if re.search(r"legged|locomotion|quadruped", i["title"], re.I))
    response = httpx.get(robot["click"], follow_redirects=False)
    assert response.status_code == 302 and response.headers["location"].startswith("https://example.org/digest-sample/")
    # The critic says "less like this" to a quantum computing paper.
    quantum = next(i for i in day1["critic@example.org"] if re.search(r"quantum|qubit", i["title"], re.I))
    assert httpx.get(quantum["down"]).status_code == 200
    with workdir.db().session() as session:
        events = session.exec(select(FeedbackEvent)).all()
    assert sorted(e.kind for e in events) == ["click", "down"]

    retrained = workdir.cli("retrain", check=True)
    assert "2 retrained" in retrained.stdout
    with workdir.db().session() as session:
        models = {m.subscriber_id: m for m in session.exec(select(SubscriberModel))}
    assert sorted((m.positives, m.negatives) for m in models.values()) == [(0, 1), (1, 0)]
    assert "0 retrained, 2 unchanged" in workdir.cli("retrain", check=True).stdout  # nothing new

    day_two_feed(workdir.path / "day2.jsonl")
    workdir.cli("ingest", "day2.jsonl", check=True)
    tomorrow = (dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=1)).isoformat()
    workdir.cli("send", "--date", tomorrow, check=True)
    day2 = {rcpt: items(messages[-1]) for rcpt, messages in smtp_sink.by_recipient().items()}
    assert all(len(m) == 2 for m in smtp_sink.by_recipient().values())
    for digest in day2.values():
        assert {topic_of(i["title"]) for i in digest} == {"robots", "images", "quantum"}  # only new papers

    assert mean_rank(day2["clicker@example.org"], "robots") < mean_rank(day2["control@example.org"], "robots")
    # The control said nothing: its three equal interests share the top evenly.
    control = [topic_of(i["title"]) for i in day2["control@example.org"]]
    assert set(control[:3]) == set(control[3:6]) == {"robots", "images", "quantum"}, control
    assert mean_rank(day2["critic@example.org"], "quantum") > mean_rank(day2["control@example.org"], "quantum") + 1
    liked = [i["reason"] for i in day2["clicker@example.org"] if topic_of(i["title"]) == "robots"]
    assert any(f"like “{robot['title'][:40]}" in reason and "you opened" in reason for reason in liked), liked
