"""`digest eval` and `digest simulate` on a small dataset written here, in the format of DESIGN.md."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from digest_lab import evaluation
from digest_lab.evaluation import arxiv_sanity_baseline, day_of_each_paper, interests_baseline, load_dataset, metrics, popularity_baseline, random_baseline, split_new

from .conftest import Workdir

TOPICS = {
    "robots": "robot legged locomotion gait terrain quadruped actuator balance walking stairs",
    "proteins": "protein folding structure residue enzyme sequence binding fold peptide amino",
    "quantum": "quantum qubit error correction surface code decoder entanglement gate circuit",
    "weather": "weather forecast precipitation climate storm radar ensemble temperature wind cyclone",
}
COMMON = "we propose method results show approach model data study new paper"


def write_dataset(folder: Path, users: int = 40, per_topic: int = 40, seed: int = 1, new_papers: bool = False) -> Path:
    """Papers are bags of their topic's words and common words; a user reads one topic, with a
    little noise, so a good ranker finds their relevant papers and a random one does not.
    `new_papers`: the new-papers protocol, the last quarter of each topic marked new, each user's
    papers among them relevant and the others history."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    papers = []
    for topic, words in TOPICS.items():
        vocabulary = words.split()
        for n in range(per_topic):
            text = " ".join(rng.choices(vocabulary, k=12) + rng.choices(COMMON.split(), k=8))
            papers.append({"id": f"{topic}-{n}", "title": "", "abstract": text, "published": None, "authors": []})
            if new_papers and n >= per_topic * 3 // 4:
                papers[-1]["new"] = True
    with open(folder / "papers.jsonl", "w") as handle:
        for paper in papers:
            handle.write(json.dumps(paper) + "\n")
    with open(folder / "users.jsonl", "w") as handle:
        for u in range(users):
            topic = list(TOPICS)[u % len(TOPICS)]
            picked = rng.sample(range(per_topic), min(14, per_topic))
            own = [f"{topic}-{n}" for n in picked]
            history, relevant = own[:8], own[8:]
            if new_papers:
                history = [f"{topic}-{n}" for n in picked if n < per_topic * 3 // 4]
                relevant = [f"{topic}-{n}" for n in picked if n >= per_topic * 3 // 4]
            handle.write(json.dumps({
                "id": f"u{u}", "interests": TOPICS[topic].split()[:2],
                "history": history, "relevant": relevant,
            }) + "\n")
    return folder


def test_metrics_are_the_textbook_ones() -> None:
    ranked = np.array([5, 1, 7, 2, 9, 3, 4, 6, 8, 0])
    r10, r50, ndcg = metrics(ranked, np.array([1, 2, 100]))
    assert r10 == r50 == pytest.approx(2 / 3)
    ideal = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert ndcg == pytest.approx((1 / np.log2(3) + 1 / np.log2(5)) / ideal)
    assert metrics(np.array([4, 3]), np.array([4]))[2] == 1.0


def test_eval_runs_production_and_baselines_and_writes_rankings_anyone_can_rescore(workdir: Workdir, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "toy", per_topic=80)
    rankings = tmp_path / "ranked.jsonl"
    result = workdir.cli("eval", str(data), "--mode", "both", "--k", "20", "--rankings", str(rankings), "--json", check=True)
    report = json.loads(result.stdout)
    rows = {(r["method"], r["mode"]): r for r in report["results"]}
    assert set(rows) == {
        ("production", "both"), ("production, content only", "both"), ("random", "any"), ("popularity", "any"),
        ("interests only (TF-IDF)", "interests"), ("arxiv-sanity-lite (SVM)", "history"),
    }
    assert all(r["ms_per_user"] > 0 and r["users"] == 40 for r in rows.values())
    production = rows[("production", "both")]
    # Within a topic the toy papers are alike, so a user's topic is all a ranker can find: the
    # production ranker finds it, random does not.
    assert production["nDCG@10"] > 3 * rows[("random", "any")]["nDCG@10"]
    assert production["nDCG@10"] > rows[("popularity", "any")]["nDCG@10"]

    users = {json.loads(line)["id"]: json.loads(line) for line in (data / "users.jsonl").read_text().splitlines()}
    lines = [json.loads(line) for line in rankings.read_text().splitlines()]
    assert len(lines) == 40
    ids = [p["id"] for p in map(json.loads, (data / "papers.jsonl").read_text().splitlines())]
    row = {pid: i for i, pid in enumerate(ids)}
    recall10 = []
    for line in lines:
        user = users[line["user"]]
        assert len(line["ranked"]) == 20 and not set(line["ranked"]) & set(user["history"])
        recall10.append(metrics(np.array([row[p] for p in line["ranked"]]), np.array([row[p] for p in user["relevant"]]))[0])
    assert np.mean(recall10) == pytest.approx(production["recall@10"])  # the file re-scores to the reported figure


def test_eval_modes_hide_what_they_should(workdir: Workdir, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "toy")
    result = workdir.cli("eval", str(data), "--mode", "interests", "--mode", "history", "--no-baselines", "--json", check=True)
    rows = {(r["method"], r["mode"]): r for r in json.loads(result.stdout)["results"]}
    assert set(rows) == {("production", "interests"), ("production", "history"), ("production, content only", "history")}
    assert rows[("production", "interests")]["nDCG@10"] > 0.2  # two words of the topic find it


def test_the_table_shows_every_method(workdir: Workdir, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "toy", users=12)
    result = workdir.cli("eval", str(data), "--mode", "both", check=True)
    for name in ("production", "random", "popularity", "interests only (TF-IDF)", "arxiv-sanity-lite (SVM)", "ms / user"):
        assert name in result.stdout


def test_a_dataset_that_is_not_one_is_exit_2(workdir: Workdir, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = workdir.cli("eval", str(tmp_path / "empty"))
    assert result.returncode == 2 and "papers.jsonl is missing" in result.stderr


def test_simulate_logs_days_that_reconcile_and_feedback_helps(workdir: Workdir, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "toy", users=40, per_topic=60)
    log = tmp_path / "sim.jsonl"
    result = workdir.cli("simulate", str(data), "--days", "6", "--k", "3", "--seed", "7", "--log", str(log), "--json", check=True)
    report = json.loads(result.stdout)
    assert report["users"] == 40 and report["days"] == 6
    dataset = load_dataset(data)
    day = day_of_each_paper(dataset, 6, 7)
    row = {pid: i for i, pid in enumerate(dataset.ids)}
    users = {u.id: u for u in dataset.users}
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(entries) == 2 * 6 * 40
    for arm, key in ((True, "days_with_feedback"), (False, "days_without_feedback")):
        for d in range(1, 7):
            todays = [e for e in entries if e["day"] == d and e["feedback"] is arm]
            assert sum(len(e["clicked"]) for e in todays) == report[key][d - 1]["clicks"]
            assert sum(len(e["shown"]) for e in todays) == report[key][d - 1]["shown"]
            for e in todays:
                user = users[e["user"]]
                assert all(day[row[p]] == d - 1 for p in e["shown"])  # that day's papers
                assert not {row[p] for p in e["shown"]} & set(user.history.tolist())
                assert set(e["clicked"]) == {p for p in e["shown"] if row[p] in set(user.relevant.tolist())}
    assert report["days_with_feedback"][0] == report["days_without_feedback"][0]  # the same first day
    assert report["ctr_last5_with_feedback"] >= report["ctr_last5_without_feedback"]


def test_days_follow_publication_dates_where_every_paper_has_one(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "toy", users=4, per_topic=5)
    lines = [json.loads(line) for line in (data / "papers.jsonl").read_text().splitlines()]
    for n, paper in enumerate(lines):
        paper["published"] = f"2026-01-{20 - n % 20:02d}"
    (data / "papers.jsonl").write_text("\n".join(json.dumps(p) for p in lines) + "\n")
    dataset = load_dataset(data)
    day = day_of_each_paper(dataset, 4, seed=0)
    published = [p["published"] for p in lines]
    order = np.argsort(published, kind="stable")
    assert (np.diff(day[order]) >= 0).all()  # earlier papers, earlier days
    assert set(day.tolist()) == {0, 1, 2, 3}


def test_new_papers_protocol_every_method_ranks_only_the_new_papers(workdir: Workdir, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "toy", per_topic=40, new_papers=True)
    rankings = tmp_path / "ranked.jsonl"
    result = workdir.cli("eval", str(data), "--mode", "both", "--k", "20", "--rankings", str(rankings), "--json", check=True)
    report = json.loads(result.stdout)
    assert report["protocol"] == "new-papers" and report["new_papers"] == 40
    methods = {r["method"] for r in report["results"]}
    assert "production, content only" not in methods  # nobody has read a new paper: it would be the same ranking
    dataset = load_dataset(data)
    new = {dataset.ids[i] for i in np.flatnonzero(dataset.new)}
    for line in map(json.loads, rankings.read_text().splitlines()):
        assert len(line["ranked"]) == 20 and set(line["ranked"]) <= new  # 40 new papers, top 20
    k = 20
    for scorer in (random_baseline(dataset, k), popularity_baseline(dataset, k), interests_baseline(dataset, k), arxiv_sanity_baseline(dataset, k)):
        for ranked in scorer(dataset.users[:5]):
            assert {dataset.ids[r] for r in ranked} <= new and len(ranked) == k
    rows = {r["method"]: r for r in report["results"]}
    assert rows["production"]["nDCG@10"] > 2 * rows["random"]["nDCG@10"]


def test_a_new_paper_is_in_no_history_and_only_new_papers_are_relevant(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "toy", users=8, per_topic=20, new_papers=True)
    lines = [json.loads(line) for line in (data / "users.jsonl").read_text().splitlines()]
    lines[0]["history"].append("robots-19")  # a new paper in a history: read by nobody, so dropped
    lines[0]["relevant"].append("robots-0")  # an old paper as relevant: not a candidate, so dropped
    (data / "users.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    dataset = load_dataset(data)
    user = dataset.users[0]
    assert not dataset.new[user.history].any() and dataset.new[user.relevant].all()
    assert (dataset.candidates(user) == dataset.new).all()


def test_a_library_dataset_split_into_new_papers_is_scored_on_history_alone(workdir: Workdir, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "toy", per_topic=40)
    refused = workdir.cli("eval", str(data), "--split-new", "0", "--mode", "both")
    assert refused.returncode == 2 and "--mode history" in refused.stderr
    result = workdir.cli("eval", str(data), "--split-new", "0", "--no-baselines", "--json", check=True)
    report = json.loads(result.stdout)
    assert report["protocol"] == "new-papers" and report["new_papers"] == 32  # a fifth of 160
    assert [(r["method"], r["mode"]) for r in report["results"]] == [("production", "history")]
    split = split_new(load_dataset(data), seed=0)
    for user in split.users:
        assert split.new[user.relevant].all() and not split.new[user.history].any()
    assert (split.new == split_new(load_dataset(data), seed=0).new).all()  # seeded


def test_simulated_readers_like_you_only_know_clicks_of_earlier_days(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody has a paper before its day: the community each day is built from clicks made in the
    simulation on earlier days, never from the users' libraries."""
    data = write_dataset(tmp_path / "toy", users=24, per_topic=40)
    dataset = load_dataset(data)
    days = 5
    paper_day = day_of_each_paper(dataset, days, 3)
    seen: list[dict] = []

    class Spy(evaluation.Community):
        def __init__(self, clicks, neighbours=50):
            seen.append({u: list(ps) for u, ps in clicks.items()})
            super().__init__(clicks, neighbours)

    monkeypatch.setattr(evaluation, "Community", Spy)
    calls_per_day: list[int] = []
    report = evaluation.simulate(dataset, days=days, k=3, seed=3, on_day=lambda arm, day: calls_per_day.append(len(seen)))
    assert report.with_feedback[0].clicks == report.without_feedback[0].clicks
    # The community of day d (if any) holds only papers of days before d.
    built = [seen[n - 1] if n else None for n in calls_per_day[::2]]
    for day, clicks in enumerate(built):
        if clicks is None:
            continue
        papers = {p for ps in clicks.values() for p in ps}
        assert papers and all(paper_day[p] < day for p in papers)  # a library would hold papers of every day
