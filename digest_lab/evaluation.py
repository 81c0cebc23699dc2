"""Offline evaluation (`digest eval`) and the click-feedback simulation (`digest simulate`).

Both run the production code: profiles are validated as `profiles.Profile`, feedback becomes a
`ranking.readers.History` through `training` (the simulation writes real digests and click events to a
SQLite database and calls `training.retrain`), and papers are ranked by `ranking.ranker.Ranker`. Nothing
here is a separate research model. The baselines are what the ranker must beat: random,
popularity, TF-IDF cosine to the interests, and arxiv-sanity-lite's per-user SVM.

A dataset is a folder of two files. `papers.jsonl`: one paper a line, `id`, `title`, `abstract`,
`authors`, `published`, and `"new": true` on the papers of the new-papers protocol (unread by
everyone; only they are ranked). `users.jsonl`: one user a line, `id`, `interests` (phrases),
`history` (paper ids read) and `relevant` (held-out paper ids, what a ranking should find).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from pydantic import ValidationError
from sqlalchemy import insert

from digest.config import RankingConfig
from digest.db import Database
from digest.feedback import Evidence
from digest.models import Digest, DigestItem, DigestStatus, FeedbackEvent, FeedbackKind, Paper, Subscriber
from digest.profiles import Profile
from digest.ranking.community import Community
from digest.ranking.papers import Candidates, Examples, Pool
from digest.ranking.ranker import Ranker
from digest.ranking.readers import History, Interests, Reader
from digest.ranking.store import load_histories
from digest.textmodel import TextModel, paper_text
from digest.training import PaperFeatures, learn, retrain

log = logging.getLogger(__name__)

MODES = ("both", "interests", "history")


# --- the dataset ---------------------------------------------------------------------------------


@dataclass
class User:
    id: str
    interests: list[str]
    history: np.ndarray  # paper rows
    relevant: np.ndarray  # paper rows


@dataclass
class Dataset:
    name: str
    ids: list[str]
    titles: list[str]
    abstracts: list[str]
    authors: list[list[str]]
    published: list[str | None]
    users: list[User]
    #: The day's new papers (`"new": true`); all False in a library dataset.
    new: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.new is None:
            self.new = np.zeros(len(self.ids), dtype=bool)

    @property
    def texts(self) -> list[str]:
        return [paper_text(t, a, au) for t, a, au in zip(self.titles, self.abstracts, self.authors)]

    @property
    def protocol(self) -> str:
        """"new-papers" when any paper is marked new (every method ranks only those), else "library"."""
        return "new-papers" if self.new.any() else "library"

    def candidates(self, user: User) -> np.ndarray:
        """The rows a method may rank for `user`: the new papers (new-papers protocol), or every
        paper not in their history (library protocol)."""
        mask = self.new.copy() if self.new.any() else np.ones(len(self.ids), dtype=bool)
        mask[user.history] = False
        return mask


class DatasetError(ValueError):
    pass


def load_dataset(folder: str | Path, limit_users: int | None = None) -> Dataset:
    """Read `papers.jsonl` and `users.jsonl`; papers a user names but the corpus lacks are dropped."""
    folder = Path(folder)
    papers_file, users_file = folder / "papers.jsonl", folder / "users.jsonl"
    for path in (papers_file, users_file):
        if not path.is_file():
            raise DatasetError(f"{path} is missing (a dataset is a folder with papers.jsonl and users.jsonl)")
    ids, titles, abstracts, authors, published, new = [], [], [], [], [], []
    for number, line in enumerate(papers_file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            paper = json.loads(line)
            ids.append(str(paper["id"]))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DatasetError(f"{papers_file}:{number}: not a paper ({exc})") from None
        titles.append(paper.get("title") or "")
        abstracts.append(paper.get("abstract") or "")
        authors.append([a for a in paper.get("authors") or [] if isinstance(a, str)])
        published.append(paper.get("published"))
        new.append(paper.get("new") is True)
    row = {pid: i for i, pid in enumerate(ids)}
    is_new = np.array(new, dtype=bool)
    users = []
    for number, line in enumerate(users_file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            user = User(
                str(item["id"]),
                [p for p in item.get("interests") or [] if isinstance(p, str) and p.strip()],
                np.array([row[p] for p in item.get("history") or [] if p in row], dtype=np.int64),
                np.array([row[p] for p in item.get("relevant") or [] if p in row], dtype=np.int64),
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DatasetError(f"{users_file}:{number}: not a user ({exc})") from None
        if is_new.any():
            # A new paper is unread by everyone: none in a history; only new ones can be found.
            user.history = user.history[~is_new[user.history]]
            user.relevant = user.relevant[is_new[user.relevant]]
        if user.relevant.size:
            users.append(user)
        if limit_users and len(users) >= limit_users:
            break
    return Dataset(folder.name, ids, titles, abstracts, authors, published, users, is_new)


def split_new(dataset: Dataset, fraction: float = 0.2, seed: int = 0) -> Dataset:
    """A library dataset re-split into the new-papers protocol: a seeded `fraction` of the papers
    is the day's new papers; each user's papers among them are `relevant`, the rest `history`.

    The users' `interests` are kept as they are, and were built from their whole library: they
    leak the relevant papers' topics, so only mode `history` is fair on such a split."""
    rng = np.random.default_rng(seed)
    new = np.zeros(len(dataset.ids), dtype=bool)
    new[rng.permutation(len(dataset.ids))[: int(round(fraction * len(dataset.ids)))]] = True
    users = []
    for user in dataset.users:
        mine = np.unique(np.concatenate([user.history, user.relevant]))
        relevant, history = mine[new[mine]], mine[~new[mine]]
        if relevant.size:
            users.append(User(user.id, user.interests, history, relevant))
    return Dataset(f"{dataset.name} (new-papers split, seed {seed})", dataset.ids, dataset.titles, dataset.abstracts, dataset.authors,
                   dataset.published, users, new)


# --- metrics -------------------------------------------------------------------------------------


def metrics(ranked: np.ndarray, relevant: np.ndarray) -> tuple[float, float, float]:
    """recall@10, recall@50 and nDCG@10 (binary relevance) of one ranking."""
    hits = np.isin(ranked[:50], relevant)
    r10 = hits[:10].sum() / relevant.size
    r50 = hits.sum() / relevant.size
    gains = hits[:10] / np.log2(np.arange(2, 12))[: hits[:10].size]
    ideal = (1 / np.log2(np.arange(2, 12))[: min(relevant.size, 10)]).sum()
    return float(r10), float(r50), float(gains.sum() / ideal)


@dataclass
class Result:
    method: str
    mode: str
    recall10: float
    recall50: float
    ndcg10: float
    ms_per_user: float
    users: int
    rankings: dict[str, list[str]] = field(default_factory=dict, repr=False)
    #: The production models' learning (the nightly retrain's work), apart from ranking.
    train_ms_per_user: float = 0.0

    def row(self) -> dict:
        return {"method": self.method, "mode": self.mode, "recall@10": self.recall10, "recall@50": self.recall50,
                "nDCG@10": self.ndcg10, "ms_per_user": self.ms_per_user, "train_ms_per_user": self.train_ms_per_user, "users": self.users}


Scorer = Callable[[Sequence[User]], list[np.ndarray]]  # users -> each user's ranked paper rows


def score(name: str, mode: str, dataset: Dataset, ranker: Scorer, k: int, batch: int = 256, keep: bool = False) -> Result:
    """Run `ranker` over every user in batches, timing it, and average the metrics."""
    totals = np.zeros(3)
    rankings: dict[str, list[str]] = {}
    elapsed = 0.0
    for start in range(0, len(dataset.users), batch):
        users = dataset.users[start : start + batch]
        began = time.perf_counter()
        ranked = ranker(users)
        elapsed += time.perf_counter() - began
        for user, rows in zip(users, ranked):
            totals += metrics(rows, user.relevant)
            if keep:
                rankings[user.id] = [dataset.ids[r] for r in rows[:k]]
    n = len(dataset.users)
    return Result(name, mode, *(totals / n), 1000 * elapsed / n, n, rankings)


def _best_candidates(scores: np.ndarray, users: Sequence[User], dataset: Dataset, k: int) -> list[np.ndarray]:
    """Each user's top `k` of their candidates (`Dataset.candidates`), best first, ties in corpus order."""
    out = []
    for row, user in zip(scores, users):
        allowed = np.flatnonzero(dataset.candidates(user))
        out.append(allowed[np.argsort(-row[allowed].astype(np.float64), kind="stable")[:k]])
    return out


# --- baselines -----------------------------------------------------------------------------------


def random_baseline(dataset: Dataset, k: int, seed: int = 0) -> Scorer:
    rng = np.random.default_rng(seed)
    return lambda users: _best_candidates(rng.random((len(users), len(dataset.ids))), users, dataset, k)


def popularity_baseline(dataset: Dataset, k: int) -> Scorer:
    """How many users have the paper in their history."""
    counts = np.bincount(np.concatenate([u.history for u in dataset.users] or [np.zeros(0, np.int64)]), minlength=len(dataset.ids)).astype(np.float64)
    counts += np.linspace(0, 1e-6, len(dataset.ids))[::-1]  # ties by position
    return lambda users: _best_candidates(np.tile(counts, (len(users), 1)), users, dataset, k)


def interests_baseline(dataset: Dataset, k: int) -> Scorer:
    """TF-IDF cosine between each paper and the user's interests (scikit-learn defaults, English stop words)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(stop_words="english", sublinear_tf=True, dtype=np.float32)
    docs = vectorizer.fit_transform(dataset.texts)

    def rank(users: Sequence[User]) -> list[np.ndarray]:
        queries = vectorizer.transform([" ".join(u.interests) for u in users])
        return _best_candidates((queries @ docs.T).toarray(), users, dataset, k)

    return rank


def arxiv_sanity_baseline(dataset: Dataset, k: int) -> Scorer:
    """arxiv-sanity-lite: TF-IDF of title + abstract + authors (word 1-2-grams, 20,000 features,
    sublinear tf, max_df=0.1, min_df=5, English stop words, float32) and one
    LinearSVC(C=0.01, class_weight="balanced") per user, positives = history, negatives = every
    other paper, ranked by decision_function."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    vectorizer = TfidfVectorizer(
        input="content", encoding="utf-8", decode_error="replace", strip_accents="unicode", lowercase=True,
        analyzer="word", stop_words="english", token_pattern=r"(?u)\b[a-zA-Z_][a-zA-Z0-9_]+\b", ngram_range=(1, 2),
        max_features=20000, norm="l2", use_idf=True, smooth_idf=True, sublinear_tf=True, max_df=0.1, min_df=5, dtype=np.float32,
    )
    texts = [f"{t} {a} {' '.join(au)}" for t, a, au in zip(dataset.titles, dataset.abstracts, dataset.authors)]
    x = vectorizer.fit_transform(texts)

    def rank(users: Sequence[User]) -> list[np.ndarray]:
        out = []
        for user in users:
            y = np.zeros(x.shape[0], dtype=np.int8)
            y[user.history] = 1
            if not user.history.size:  # nothing to learn from: the candidates in corpus order
                out.extend(_best_candidates(-np.arange(x.shape[0], dtype=np.float64)[None, :], [user], dataset, k))
                continue
            svm = LinearSVC(class_weight="balanced", C=0.01, max_iter=10000, tol=1e-6)
            svm.fit(x, y)
            out.extend(_best_candidates(svm.decision_function(x)[None, :], [user], dataset, k))
        return out

    return rank


# --- the production ranker -----------------------------------------------------------------------


@dataclass
class Production:
    """The production ranker, fitted once on the dataset's corpus: the text model, every paper as
    a candidate (each user may rank only theirs: `Dataset.candidates`), as an example, and as the
    pool pseudo-relevance feedback draws on; each user's history learned by `training.learn`."""

    dataset: Dataset
    config: RankingConfig
    model: TextModel
    candidates: Candidates
    examples: Examples
    interests: list[Interests]
    pool: Pool
    features: PaperFeatures
    phrase_embedder: Callable[[Sequence[str]], np.ndarray] | None = None
    histories: list[History] = field(default_factory=list)
    train_seconds: float = 0.0
    offered: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # candidate row -> paper row

    @classmethod
    def fit(cls, dataset: Dataset, config: RankingConfig | None = None, embeddings: np.ndarray | None = None,
            phrase_embedder: Callable[[Sequence[str]], np.ndarray] | None = None, learn_histories: bool = True) -> "Production":
        config = config or RankingConfig()
        interests = [profile_interests(u) for u in dataset.users]
        model = TextModel()
        counts = model.fit_counts(dataset.texts, keep=[p for i in interests for p in i.all_phrases()])
        rows = list(range(len(dataset.ids)))
        # Candidates are the papers anyone may be offered: the new ones, or (library) all.
        offered = np.flatnonzero(dataset.new) if dataset.new.any() else np.arange(len(rows))
        candidates = Candidates.build(model, offered.tolist(), counts[offered], [dataset.authors[i] for i in offered], [[] for _ in offered],
                                      embeddings[offered] if embeddings is not None else None, texts=[dataset.texts[i] for i in offered],
                                      phrases=[p for i in interests for p in i.all_phrases()])
        examples = Examples.build(model, list(zip(rows, dataset.titles)), counts, embeddings)
        # The pool is the recent corpus: the day's new papers are the most recent (put last).
        recent = np.argsort(dataset.new, kind="stable")[-config.prf_pool :] if config.prf_pool else np.zeros(0, np.int64)
        pool = Pool.build(model, counts[recent], embeddings[recent] if embeddings is not None else None)
        features = PaperFeatures(model, {r: r for r in rows}, examples.vectors)
        production = cls(dataset, config, model, candidates, examples, interests, pool, features, phrase_embedder, offered=offered)
        if phrase_embedder is not None:  # as production keeps its subscribers' phrase vectors: not part of ranking's time
            phrase_embedder(sorted({p for i in interests for p in i.all_phrases()}))
        if learn_histories:
            began = time.perf_counter()
            production.histories = [learn(Evidence(positive=[int(r) for r in u.history]), features, config)[0] for u in dataset.users]
            production.train_seconds = time.perf_counter() - began
        return production

    def ranker(self, community: Community | None) -> Ranker:
        return Ranker(self.model, self.config, self.examples, community, chunk=128, pool=self.pool, phrase_embedder=self.phrase_embedder)

    def reader(self, index: int, history: History, mode: str) -> Reader:
        interests = self.interests[index] if mode != "history" else Interests(())
        return Reader(index, interests, history if mode != "interests" else History(), max_items=10)

    def scorer(self, mode: str, k: int, community: Community | None) -> Scorer:
        ranker = self.ranker(community)
        position = {id(u): i for i, u in enumerate(self.dataset.users)}

        def rank(users: Sequence[User]) -> list[np.ndarray]:
            readers = [self.reader(position[id(u)], self.histories[position[id(u)]] if self.histories else History(), mode) for u in users]
            allowed = [self.dataset.candidates(user)[self.offered] for user in users]
            ranked = ranker.rank(readers, self.candidates, allowed, k=k, require_match=False, explain=False)
            return [self.offered[[r.index for r in items]].astype(np.int64) for items in ranked]

        return rank


def profile_interests(user: User) -> Interests:
    """The user's interests as a subscriber profile would give them (validated the same way)."""
    if not user.interests:
        return Interests(())
    try:
        profile = Profile(email="reader@example.org", interests=user.interests[:50])
    except ValidationError:
        return Interests(tuple((p, 1.0) for p in user.interests if p.strip()))
    return Interests.from_subscriber(profile)


def community_of(dataset: Dataset, neighbours: int) -> Community:
    """Every user's clicks: what "readers like you" draws on."""
    return Community({i: [int(r) for r in u.history] for i, u in enumerate(dataset.users)}, neighbours)


def evaluate(
    dataset: Dataset,
    modes: Sequence[str] = MODES,
    k: int = 100,
    baselines: bool = True,
    config: RankingConfig | None = None,
    on_result: Callable[[Result], None] | None = None,
    embeddings: np.ndarray | None = None,
    phrase_embedder: Callable[[Sequence[str]], np.ndarray] | None = None,
) -> list[Result]:
    """Every method in every mode where it applies; the production ranking keeps its top-k lists.
    "production, content only" (without readers like you) is reported in the library protocol:
    in the new-papers protocol nobody has read a candidate, so it is the production ranking."""
    results: list[Result] = []

    def add(result: Result) -> None:
        results.append(result)
        if on_result:
            on_result(result)

    began = time.perf_counter()
    production = Production.fit(dataset, config, embeddings, phrase_embedder, learn_histories=any(m != "interests" for m in modes))
    log.info("production fitted in %.1f s (of which %.1f s learning the users' models)", time.perf_counter() - began, production.train_seconds)
    train_ms = 1000 * production.train_seconds / max(len(dataset.users), 1)
    community = community_of(dataset, production.config.neighbours)
    for mode in modes:
        result = score("production", mode, dataset, production.scorer(mode, k, community), k, keep=True)
        result.train_ms_per_user = train_ms if mode != "interests" else 0.0
        add(result)
        if mode != "interests" and dataset.protocol == "library":
            add(score("production, content only", mode, dataset, production.scorer(mode, k, None), k))
    if baselines:
        add(score("random", "any", dataset, random_baseline(dataset, k), k))
        add(score("popularity", "any", dataset, popularity_baseline(dataset, k), k))
        if "history" not in modes or set(modes) != {"history"}:
            add(score("interests only (TF-IDF)", "interests", dataset, interests_baseline(dataset, k), k))
        if "interests" not in modes or len(modes) > 1:
            add(score("arxiv-sanity-lite (SVM)", "history", dataset, arxiv_sanity_baseline(dataset, k), k, batch=16))
    return results


def dataset_embeddings(dataset: Dataset, embedder, cache: Path | None = None) -> np.ndarray:
    """The papers' embeddings, as the semantic extra computes them at ingest (`embeddings.paper_passage`),
    kept in `cache` (a folder) by the dataset's text and the model, since embedding a corpus takes minutes."""
    import hashlib

    from digest.embeddings import paper_passage

    passages = [paper_passage(t, a) for t, a in zip(dataset.titles, dataset.abstracts)]
    key = hashlib.sha1("\x00".join([embedder.key, *passages]).encode()).hexdigest()[:16]
    path = cache / f"{key}.npy" if cache is not None else None
    if path is not None and path.is_file():
        vectors = np.load(path)
        if vectors.shape[0] == len(passages):
            return vectors
    began = time.perf_counter()
    vectors = np.concatenate([embedder.embed(passages[i : i + 256]) for i in range(0, len(passages), 256)]) if passages else np.zeros((0, embedder.dim), np.float32)
    log.info("embedded %d papers in %.1f s", len(passages), time.perf_counter() - began)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors.astype(np.float32))
    return vectors


def write_rankings(result: Result, path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for user, ranked in result.rankings.items():
            handle.write(json.dumps({"user": user, "ranked": ranked}) + "\n")


# --- the click-feedback simulation ---------------------------------------------------------------


@dataclass
class SimDay:
    day: int
    shown: int
    clicks: int

    @property
    def ctr(self) -> float:
        return self.clicks / self.shown if self.shown else 0.0


@dataclass
class SimReport:
    with_feedback: list[SimDay]
    without_feedback: list[SimDay]
    users: int
    seconds: float

    def summary(self) -> dict:
        def last(days: list[SimDay]) -> float:
            tail = days[-5:]
            shown = sum(d.shown for d in tail)
            return sum(d.clicks for d in tail) / shown if shown else 0.0

        first = self.with_feedback[0].ctr if self.with_feedback else 0.0
        return {
            "users": self.users,
            "days": len(self.with_feedback),
            "ctr_day1": first,
            "ctr_last5_with_feedback": last(self.with_feedback),
            "ctr_last5_without_feedback": last(self.without_feedback),
            "lift_last5_over_day1": last(self.with_feedback) / first if first else math.inf,
            "seconds": self.seconds,
        }


def day_of_each_paper(dataset: Dataset, days: int, seed: int) -> np.ndarray:
    """The day (0..days-1) each replayed paper appears on, -1 for the others: the papers marked new
    (new-papers protocol) or all (library protocol), by `published` where every one has a date,
    else a seeded shuffle into equal days."""
    day = np.full(len(dataset.ids), -1, dtype=np.int64)
    replayed = np.flatnonzero(dataset.new) if dataset.new.any() else np.arange(len(dataset.ids))
    n = replayed.size
    published = [dataset.published[i] for i in replayed]
    if n and all(published):
        order = replayed[np.argsort(np.array([str(p) for p in published]), kind="stable")]
    else:
        order = replayed[np.random.default_rng(seed).permutation(n)]
    day[order] = np.arange(n) * days // max(n, 1)
    return day


class SimulatedService:
    """A real database behind the simulation: subscribers, sent digests and click events, so that
    learning goes through `feedback.gather_evidence` and `training.retrain` as in production.
    Paper `i` of the dataset is paper `i + 1` here, user `u` subscriber `u + 1`."""

    def __init__(self, dataset: Dataset, folder: Path) -> None:
        self.db = Database(f"sqlite:///{folder / 'simulate.db'}")
        self.dataset = dataset
        now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
        with self.db.transaction() as session:
            session.execute(insert(Paper), [
                {"id": i + 1, "title": title or pid, "title_key": f"eval {pid}", "abstract": "", "authors": [], "categories": [],
                 "source": "eval", "first_seen": now}
                for i, (pid, title) in enumerate(zip(dataset.ids, dataset.titles))
            ])
            session.execute(insert(Subscriber), [
                {"id": i + 1, "email": f"user{i + 1}@simulation.invalid", "interests": [], "avoid": [], "authors": [], "categories": [],
                 "created_at": now, "updated_at": now}
                for i in range(len(dataset.users))
            ])
        self._next_digest = 1
        self._next_item = 1

    def record(self, day: int, shown: list[np.ndarray], clicked: list[set[int]]) -> None:
        """Store the day's digests (sent) and the clicks on them, in one transaction."""
        when = dt.datetime(2026, 1, 1, 8, tzinfo=dt.timezone.utc) + dt.timedelta(days=day)
        digests, items, events = [], [], []
        for user, (rows, clicks) in enumerate(zip(shown, clicked)):
            if not len(rows):
                continue
            digest_id = self._next_digest
            self._next_digest += 1
            digests.append({"id": digest_id, "subscriber_id": user + 1, "local_date": when.date(), "status": DigestStatus.SENT,
                            "window_start": when, "window_end": when, "created_at": when, "sent_at": when, "attempts": 1})
            for rank, row in enumerate(rows, start=1):
                item_id = self._next_item
                self._next_item += 1
                items.append({"id": item_id, "digest_id": digest_id, "paper_id": int(row) + 1, "rank": rank, "score": 0.0, "reason": ""})
                if int(row) in clicks:
                    events.append({"subscriber_id": user + 1, "digest_id": digest_id, "digest_item_id": item_id, "paper_id": int(row) + 1,
                                   "kind": FeedbackKind.CLICK.value, "repeat": False, "created_at": when + dt.timedelta(hours=1)})
        with self.db.transaction() as session:
            for table, rows_ in ((Digest, digests), (DigestItem, items), (FeedbackEvent, events)):
                if rows_:
                    session.execute(insert(table), rows_)

    def histories(self, production: "Production", day: int) -> dict[int, History]:
        """Each user's model as `digest retrain` leaves it after `day`, in dataset rows (the
        dataset's text model gives the papers' vectors)."""
        features = PaperFeatures(production.model, {r + 1: r for r in range(len(self.dataset.ids))}, production.features.vectors)
        retrain(self.db, now=dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc) + dt.timedelta(days=day), config=production.config, features=features)
        stored = load_histories(self.db, range(1, len(self.dataset.users) + 1))
        return {subscriber - 1: replace(h, papers=tuple(p - 1 for p in h.papers)) for subscriber, h in stored.items()}


def simulate(
    dataset: Dataset,
    days: int = 20,
    k: int = 10,
    seed: int = 0,
    config: RankingConfig | None = None,
    log_path: str | Path | None = None,
    on_day: Callable[[str, SimDay], None] | None = None,
    embeddings: np.ndarray | None = None,
    phrase_embedder: Callable[[Sequence[str]], np.ndarray] | None = None,
) -> SimReport:
    """Each user joins as a new subscriber with their interests and no clicks. The new papers
    (or, in a library dataset, all papers) are replayed over `days`; every day each user is sent
    the top `k` of that day's papers (never one of their own library), through the production
    ranking, and clicks those in `relevant`. Nobody has a paper before its day: "readers like
    you" draw only on the clicks made here on earlier days. With feedback, the clicks are stored
    as events, retrained on (`training.retrain`) and join the readers' evidence before the next
    day; without, the same service never learns from them."""
    began = time.perf_counter()
    production = Production.fit(dataset, config, embeddings, phrase_embedder, learn_histories=False)
    paper_day = day_of_each_paper(dataset, days, seed)
    relevant = [set(u.relevant.tolist()) for u in dataset.users]
    log_handle = open(log_path, "w", encoding="utf-8") if log_path else None
    report = {"with": [], "without": []}
    try:
        with tempfile.TemporaryDirectory(prefix="digest-simulate-") as folder:
            service = SimulatedService(dataset, Path(folder))
            histories: dict[int, History] = {}
            for day in range(days):
                today = paper_day == day
                for arm in ("with", "without"):
                    feedback = arm == "with"
                    community = None
                    if feedback and histories:
                        community = Community({u: h.positive_papers for u, h in histories.items() if h.positives}, production.config.neighbours)
                    ranker = production.ranker(community)
                    readers = [
                        production.reader(i, histories.get(i, History()) if feedback else History(), "both")
                        for i in range(len(dataset.users))
                    ]
                    allowed = []
                    for user in dataset.users:
                        mask = today.copy()
                        mask[user.history] = False
                        allowed.append(mask[production.offered])
                    ranked = ranker.rank(readers, production.candidates, allowed, k=k, require_match=False, explain=False)
                    shown = [production.offered[[r.index for r in items]].astype(np.int64) for items in ranked]
                    clicked = [set(rows.tolist()) & rel for rows, rel in zip(shown, relevant)]
                    result = SimDay(day + 1, sum(len(s) for s in shown), sum(len(c) for c in clicked))
                    report[arm].append(result)
                    if on_day:
                        on_day(arm, result)
                    if log_handle:
                        for user, rows, clicks in zip(dataset.users, shown, clicked):
                            log_handle.write(json.dumps({"day": day + 1, "user": user.id, "feedback": feedback,
                                                         "shown": [dataset.ids[r] for r in rows], "clicked": [dataset.ids[r] for r in rows if r in clicks]}) + "\n")
                    if feedback:
                        service.record(day, shown, clicked)
                histories = service.histories(production, day)
    finally:
        if log_handle:
            log_handle.close()
    return SimReport(report["with"], report["without"], len(dataset.users), time.perf_counter() - began)


def plot(report: SimReport, path: str | Path, title: str) -> None:
    """Click-through per day, with and without feedback, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [d.day for d in report.with_feedback]
    figure, axes = plt.subplots(figsize=(7.5, 4.2), dpi=120)
    axes.plot(days, [100 * d.ctr for d in report.with_feedback], marker="o", label="with feedback (clicks retrained on daily)")
    axes.plot(days, [100 * d.ctr for d in report.without_feedback], marker="s", linestyle="--", label="without feedback (interests only)")
    axes.set_xlabel("day")
    axes.set_ylabel("click-through (%)")
    axes.set_title(title)
    axes.set_xticks(days)
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
