"""Ranking: papers scored for many subscribers at once, from their interests, their feedback and
the clicks of subscribers like them; then cut to good matches, diversified and explained.

The method (measured in docs/evaluation.md):

- `TextModel` (scikit-learn fit/transform) counts Snowball-stemmed words of title, abstract and
  authors. A candidate paper is a BM25 vector (k1=1.2, b=0.75, idf weights, no normalization); a
  query is a unit TF-IDF vector with sublinear term frequency.
- A subscriber has up to three queries: their weighted interest phrases, the centroid of the papers
  they opened or liked (sharpened by a little of those shown but not opened: Rocchio), and the
  centroid of those they turned down. The content score blends the first two by evidence,
  w = n / (n + 2) for n positive papers, so that a new subscriber is served by their interests
  alone and evidence gradually takes over; the third is subtracted, and so are `avoid` phrases.
- Followed authors and categories add a share of the subscriber's best score.
- Readers like you: the 50 subscribers whose opened papers overlap most with yours vote for what
  they opened; a paper's score is multiplied by 1 + 2 * votes (its content score counting as at
  least 35% of your best match). A paper nobody opened yet (every brand-new one) keeps its
  content score.
- A paper goes into an email only when it matches: it contains enough of an interest phrase, or it
  is like the papers the subscriber opened, or readers like them opened it, or it is by a
  followed author. The top of the list is then
  diversified (maximal marginal relevance), and every item says why it was chosen.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import snowballstemmer
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer
from sklearn.preprocessing import normalize

from .config import RankingConfig

_TOKEN = re.compile(r"(?u)\b\w\w+\b")

#: Below this many papers, `TextModel` keeps terms met only once.
SMALL_CORPUS = 200
#: An item's reason names the opened paper it is like when the history makes this share of its score.
HISTORY_SHARE = 0.25
#: History weights at or below this are papers turned down; between it and 0, papers skipped.
TURNED_DOWN = -0.5


class StemmingTokenizer:
    """Lowercase words without stop words or numbers, stemmed: "language models" meets "language model"."""

    def __init__(self) -> None:
        self._stem = lru_cache(maxsize=500_000)(snowballstemmer.stemmer("english").stemWord)

    def __call__(self, text: str) -> list[str]:
        stem = self._stem
        return [stem(t) for t in _TOKEN.findall(text.lower()) if t not in ENGLISH_STOP_WORDS and not t.isdigit()]

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()


def paper_text(title: str, abstract: str, authors: Iterable[str] = ()) -> str:
    """The text a paper is known by: title, abstract and authors (shared authors are shared taste)."""
    return f"{title}. {abstract} {' '.join(authors)}"


class TextModel(TransformerMixin, BaseEstimator):
    """Term statistics of a corpus: `transform` gives unit TF-IDF query vectors, `bm25` paper vectors.

    The vocabulary is every stemmed word met in at least `min_df` papers, plus every word of the
    phrases passed as `keep` to `fit`: a subscriber's interest must not vanish because the corpus
    has met it only once, or not yet.
    """

    def __init__(self, min_df: int = 2, k1: float = 1.2, b: float = 0.75) -> None:
        self.min_df = min_df
        self.k1 = k1
        self.b = b

    def fit(self, texts: Iterable[str], y: object = None, keep: Iterable[str] = ()) -> "TextModel":
        self.fit_counts(texts, keep=keep)
        return self

    def fit_counts(self, texts: Iterable[str], keep: Iterable[str] = ()) -> sparse.csr_matrix:
        """Fit on `texts` and return their term counts (the corpus is tokenized once)."""
        counter = CountVectorizer(tokenizer=StemmingTokenizer(), token_pattern=None, lowercase=False, dtype=np.float32)
        texts = list(texts)
        try:
            counts = counter.fit_transform(texts).tocsc()
            terms = counter.get_feature_names_out()
        except ValueError:  # "empty vocabulary": no paper has a word that counts (only "A", say)
            if any(counter.build_analyzer()(text) for text in texts):
                raise
            counter.vocabulary_, terms = {}, np.array([], dtype=object)
            counts = sparse.csc_matrix((len(texts), 0), dtype=np.float32)
        df = np.diff(counts.indptr)
        min_df = self.min_df if counts.shape[0] >= SMALL_CORPUS else 1
        chosen = np.flatnonzero(df >= min_df)
        wanted = {t for phrase in keep for t in counter.build_analyzer()(phrase)}
        position = counter.vocabulary_
        chosen = np.union1d(chosen, np.array([position[t] for t in wanted if t in position], dtype=chosen.dtype))
        unseen = sorted(t for t in wanted if t not in position)
        vocabulary = [*terms[chosen].tolist(), *unseen]
        self.counter_ = CountVectorizer(
            tokenizer=StemmingTokenizer(), token_pattern=None, lowercase=False, dtype=np.float32,
            vocabulary={t: i for i, t in enumerate(vocabulary)},
        )
        kept = sparse.hstack([counts[:, chosen], sparse.csc_matrix((counts.shape[0], len(unseen)), dtype=np.float32)]).tocsr()
        n = kept.shape[0]
        df_kept = np.bincount(kept.indices, minlength=kept.shape[1])
        self.idf_ = (np.log((1 + n) / (1 + df_kept)) + 1).astype(np.float32)
        lengths = np.asarray(kept.sum(axis=1)).ravel()
        self.avg_length_ = float(lengths.mean()) if n else 1.0
        return kept

    def counts(self, texts: Iterable[str]) -> sparse.csr_matrix:
        texts = list(texts)
        if not self.counter_.vocabulary:  # a model of no words: nothing can match (never an error)
            return sparse.csr_matrix((len(texts), 0), dtype=np.float32)
        return self.counter_.transform(texts).tocsr()

    def queries(self, counts: sparse.csr_matrix) -> sparse.csr_matrix:
        """Unit TF-IDF rows, term frequency 1 + ln(count)."""
        if counts.shape[0] == 0 or counts.shape[1] == 0:  # no rows, or a model of no words
            return sparse.csr_matrix(counts.shape, dtype=np.float32)
        logged = counts.astype(np.float32, copy=True)
        logged.data = 1 + np.log(logged.data)
        return normalize(logged @ sparse.diags(self.idf_)).astype(np.float32).tocsr()

    def bm25(self, counts: sparse.csr_matrix) -> sparse.csr_matrix:
        """BM25 rows: saturated, length-normalized term frequency times idf."""
        coo = counts.tocoo(copy=True)
        lengths = np.asarray(counts.sum(axis=1)).ravel()
        k1, b = self.k1, self.b
        coo.data = coo.data * (k1 + 1) / (coo.data + k1 * (1 - b + b * lengths[coo.row] / self.avg_length_))
        return (coo.tocsr() @ sparse.diags(self.idf_)).astype(np.float32).tocsr()

    def transform(self, texts: Iterable[str]) -> sparse.csr_matrix:
        return self.queries(self.counts(texts))


# --- what the ranker knows of subscribers and papers ---------------------------------------------


@dataclass(frozen=True)
class Interests:
    """A subscriber's stated taste."""

    phrases: tuple[tuple[str, float], ...]
    avoid: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()

    @classmethod
    def from_subscriber(cls, subscriber) -> "Interests":
        phrases = []
        for interest in subscriber.interests:
            if isinstance(interest, dict):
                phrases.append((interest["phrase"], float(interest.get("weight", 1.0))))
            else:
                phrases.append((interest.phrase, float(interest.weight)))
        return cls(tuple(phrases), tuple(subscriber.avoid), tuple(subscriber.authors), tuple(subscriber.categories))

    def all_phrases(self) -> list[str]:
        """Every phrase the text model must know: the interests and what to avoid."""
        return [p for p, _ in self.phrases] + list(self.avoid)


@dataclass(frozen=True)
class History:
    """A subscriber's feedback as examples: paper ids with signed weights (positive: opened or
    liked; at most `TURNED_DOWN`: turned down; between that and 0: shown and not opened), and how
    many are positive."""

    papers: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()
    positives: int = 0

    @classmethod
    def of(cls, positive: Iterable[int]) -> "History":
        ids = tuple(dict.fromkeys(positive))
        return cls(ids, tuple(1.0 for _ in ids), len(ids))

    @property
    def positive_papers(self) -> list[int]:
        return [p for p, w in zip(self.papers, self.weights) if w > 0]


@dataclass
class Reader:
    """One subscriber as the ranker sees them."""

    key: int  # the subscriber id (the row of the community matrix)
    interests: Interests
    history: History = field(default_factory=History)
    max_items: int = 10


@dataclass
class Examples:
    """The papers of subscribers' histories, as query vectors, with their titles (for reasons)."""

    vectors: sparse.csr_matrix
    row: dict[int, int]  # paper id -> row of `vectors`
    titles: dict[int, str]
    paper_ids: list[int] = field(init=False, repr=False)  # row of `vectors` -> paper id

    def __post_init__(self) -> None:
        self.paper_ids = [0] * self.vectors.shape[0]
        for paper, row in self.row.items():
            self.paper_ids[row] = paper

    @classmethod
    def build(cls, model: TextModel, papers: Sequence[tuple[int, str]], counts: sparse.csr_matrix) -> "Examples":
        """`papers` is [(id, title)], `counts` their term counts in the same order."""
        return cls(model.queries(counts) if counts.shape[0] else sparse.csr_matrix((0, len(model.idf_)), dtype=np.float32),
                   {pid: i for i, (pid, _) in enumerate(papers)}, dict(papers))


def author_key(name: str) -> str:
    """A name compared without case, accents, dots or hyphens."""
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return " ".join(re.findall(r"[a-z0-9]+", text))


def _initial_key(key: str) -> str | None:
    """"t dao" for "tri dao": followed names written with an initial match any first name."""
    words = key.split()
    return f"{words[0][0]} {words[-1]}" if len(words) >= 2 else None


@dataclass
class Candidates:
    """The papers to rank, vectorized once for every subscriber."""

    ids: np.ndarray
    docs: sparse.csr_matrix  # BM25 rows
    vectors: sparse.csr_matrix  # unit TF-IDF rows (similarity between papers)
    present: sparse.csr_matrix  # 1 where a term occurs (how much of a phrase a paper contains)
    authors: list[list[str]]
    categories: list[list[str]]
    author_index: dict[str, set[int]]  # author key (full, or initial form) -> rows
    category_index: dict[str, set[int]]
    _similarity: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def build(cls, model: TextModel, ids: Sequence[int], counts: sparse.csr_matrix, authors: Sequence[Sequence[str]], categories: Sequence[Sequence[str]]) -> "Candidates":
        present = counts.copy()
        present.data[:] = 1
        author_index: dict[str, set[int]] = {}
        category_index: dict[str, set[int]] = {}
        for row, names in enumerate(authors):
            for name in names:
                key = author_key(name)
                author_index.setdefault(key, set()).add(row)
                initial = _initial_key(key)
                if initial:
                    author_index.setdefault("~" + initial, set()).add(row)
        for row, cats in enumerate(categories):
            for cat in cats:
                category_index.setdefault(cat, set()).add(row)
        return cls(
            np.asarray(ids), model.bm25(counts), model.queries(counts), present.tocsr(),
            [list(a) for a in authors], [list(c) for c in categories], author_index, category_index,
        )

    def __len__(self) -> int:
        return len(self.ids)

    def similarity(self) -> np.ndarray | None:
        """Cosine of every candidate with every other, dense, computed once for all readers (MMR
        needs it for each reader's top); None when there are too many candidates to hold it."""
        if len(self) > DENSE_SIMILARITY_LIMIT:
            return None
        if self._similarity is None:
            self._similarity = (self.vectors @ self.vectors.T).toarray().astype(np.float32)
        return self._similarity

    def by_authors(self, followed: Iterable[str]) -> tuple[set[int], dict[int, list[str]]]:
        rows: set[int] = set()
        for name in followed:
            key = author_key(name)
            words = key.split()
            if len(words) >= 2 and len(words[0]) == 1:  # "T. Dao": any first name starting with T
                rows |= self.author_index.get("~" + _initial_key(key), set())
            rows |= self.author_index.get(key, set())
        keys = {author_key(n) for n in followed}
        initials = {_initial_key(k) for k in keys if len(k.split()) >= 2 and len(k.split()[0]) == 1}
        names = {
            row: [a for a in self.authors[row] if author_key(a) in keys or _initial_key(author_key(a)) in initials]
            for row in rows
        }
        return rows, names

    def by_categories(self, followed: Iterable[str]) -> set[int]:
        rows: set[int] = set()
        for cat in followed:
            rows |= self.category_index.get(cat, set())
        return rows


class Community:
    """Who opened what, over all subscribers: the evidence of "readers like you"."""

    def __init__(self, clicks: dict[int, Iterable[int]], neighbours: int = 50) -> None:
        users = [u for u, papers in clicks.items()]
        papers = sorted({p for ps in clicks.values() for p in ps})
        self.user_row = {u: i for i, u in enumerate(users)}
        self.paper_column = {p: j for j, p in enumerate(papers)}
        rows, cols = [], []
        for u, ps in clicks.items():
            for p in set(ps):
                rows.append(self.user_row[u])
                cols.append(self.paper_column[p])
        self.matrix = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(users), len(papers)))
        self.unit = normalize(self.matrix).tocsr() if self.matrix.shape[0] else self.matrix
        self.neighbours = neighbours

    def votes(self, readers: Sequence[Reader], candidate_ids: np.ndarray) -> np.ndarray:
        """votes[r, d]: how many of reader r's nearest readers opened candidate d, each counted by
        the cosine of their opened papers with r's (r's own row never counts)."""
        result = np.zeros((len(readers), len(candidate_ids)), dtype=np.float32)
        columns = np.array([self.paper_column.get(int(p), -1) for p in candidate_ids])
        wanted = np.flatnonzero(columns >= 0)
        rows, cols = [], []
        for i, reader in enumerate(readers):
            for paper, weight in zip(reader.history.papers, reader.history.weights):
                column = self.paper_column.get(paper)
                if weight > 0 and column is not None:
                    rows.append(i)
                    cols.append(column)
        if not wanted.size or not rows:
            return result
        mine = normalize(sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(readers), self.matrix.shape[1])))
        similar = (mine @ self.unit.T).tocsr()
        top_rows, top_cols, top_vals = [], [], []
        for i, reader in enumerate(readers):
            start, end = similar.indptr[i], similar.indptr[i + 1]
            others, sims = similar.indices[start:end], similar.data[start:end]
            keep = (others != self.user_row.get(reader.key, -1)) & (sims > 0)
            others, sims = others[keep], sims[keep]
            if others.size > self.neighbours:
                cut = -np.partition(-sims, self.neighbours - 1)[self.neighbours - 1]
                keep = sims >= cut
                others, sims = others[keep], sims[keep]
            top_rows.extend([i] * others.size)
            top_cols.extend(others.tolist())
            top_vals.extend(sims.tolist())
        weights = sparse.csr_matrix((np.array(top_vals, np.float32), (top_rows, top_cols)), shape=(len(readers), self.matrix.shape[0]))
        result[:, wanted] = (weights @ self.matrix[:, columns[wanted]]).toarray()
        return result


@dataclass
class Ranked:
    index: int  # row in the candidates
    score: float
    reasons: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def top_k(scores: np.ndarray, k: int, eligible: np.ndarray | None = None) -> np.ndarray:
    """Indices of the `k` highest scores (among `eligible`), best first, ties by index."""
    rows = np.flatnonzero(eligible) if eligible is not None else np.arange(scores.shape[0])
    if rows.size > k:
        rows = rows[np.argpartition(-scores[rows], k - 1)[:k]]
    return rows[np.lexsort((rows, -scores[rows]))]


#: How many places at the top are diversified (a digest holds at most 50; its top is what is read).
MMR_DEPTH = 20
#: Readers whose chosen items are compared with their opened papers in one product.
NEAREST_GROUP = 64
#: Up to this many candidates their likeness to each other is held as one dense matrix (100 MB at 5,000).
DENSE_SIMILARITY_LIMIT = 5000


def mmr(
    order: np.ndarray, scores: np.ndarray, vectors: sparse.csr_matrix, k: int, diversity: float, duplicate: float = 0.6, depth: int = MMR_DEPTH,
    similarity: np.ndarray | None = None,
) -> list[int]:
    """Maximal marginal relevance for the first `depth` places of a list sorted best first: each
    next pick trades its relevance (scaled to the best) against how far its likeness to what was
    picked goes beyond `duplicate` (cosine); places after `depth` follow the scores.

    Only near-duplicates are pushed apart: papers that are merely on the same topic are what the
    subscriber asked for (measured: a penalty on all likeness cost 8% nDCG@10 on real text)."""
    if diversity <= 0 or len(order) <= 1:
        return [int(i) for i in order[:k]]
    places = min(k, depth)
    pool = order[: places * 5]
    relevance = scores[pool].astype(np.float64)
    top = relevance.max()
    relevance = relevance / top if top > 0 else relevance
    similar = similarity[np.ix_(pool, pool)] if similarity is not None else (vectors[pool] @ vectors[pool].T).toarray()
    chosen = [0]
    closest = similar[0].copy()
    available = np.ones(len(pool), dtype=bool)
    available[0] = False
    while len(chosen) < min(places, len(pool)):
        value = (1 - diversity) * relevance - diversity * np.maximum(closest - duplicate, 0) / (1 - duplicate)
        value[~available] = -np.inf
        pick = int(np.argmax(value))
        chosen.append(pick)
        available[pick] = False
        closest = np.maximum(closest, similar[pick])
    picked = [int(pool[i]) for i in chosen]
    taken = set(picked)
    picked += [int(i) for i in order if int(i) not in taken][: k - len(picked)]
    return picked


# --- the ranker ----------------------------------------------------------------------------------


class Ranker:
    """Ranks candidates for many readers, a chunk of readers at a time (sparse matrix products,
    never a Python loop over papers)."""

    def __init__(self, model: TextModel, config: RankingConfig | None = None, examples: Examples | None = None, community: Community | None = None, chunk: int = 512) -> None:
        self.model = model
        self.config = config or RankingConfig()
        self.examples = examples
        self.community = community
        self.chunk = chunk

    def rank(
        self,
        readers: Sequence[Reader],
        candidates: Candidates,
        allowed: Sequence[np.ndarray | None] | None = None,
        k: int | None = None,
        require_match: bool = True,
        explain: bool = True,
    ) -> list[list[Ranked]]:
        """Each reader's best candidates, best first: at most `k` (default: their `max_items`),
        only rows `allowed` for them, and only good matches unless `require_match` is off."""
        results: list[list[Ranked]] = []
        for start in range(0, len(readers), self.chunk):
            part = readers[start : start + self.chunk]
            part_allowed = allowed[start : start + self.chunk] if allowed is not None else [None] * len(part)
            results.extend(self._rank_chunk(part, candidates, part_allowed, k, require_match, explain))
        return results

    def scores(self, readers: Sequence[Reader], candidates: Candidates) -> np.ndarray:
        """The final score of every candidate for every reader (readers x candidates)."""
        return self._score(readers, candidates).final

    def _queries(self, readers: Sequence[Reader]) -> "_Queries":
        model = self.model
        n_terms = len(model.idf_)
        phrases: list[str] = []
        weight_rows, weight_cols, weight_vals = [], [], []
        avoid_rows, avoid_cols = [], []
        owner: list[int] = []
        for i, reader in enumerate(readers):
            for phrase, weight in reader.interests.phrases:
                weight_rows.append(i)
                weight_cols.append(len(phrases))
                weight_vals.append(weight)
                owner.append(i)
                phrases.append(phrase)
            for phrase in reader.interests.avoid:
                avoid_rows.append(i)
                avoid_cols.append(len(phrases))
                owner.append(-1)
                phrases.append(phrase)
        phrase_counts = model.counts(phrases) if phrases else sparse.csr_matrix((0, n_terms), dtype=np.float32)
        phrase_vectors = model.queries(phrase_counts)
        shape = (len(readers), len(phrases))
        weights = sparse.csr_matrix((np.array(weight_vals, np.float32), (weight_rows, weight_cols)), shape=shape)
        avoid = sparse.csr_matrix((np.ones(len(avoid_rows), np.float32), (avoid_rows, avoid_cols)), shape=shape)
        # All of a reader's phrases make one query, as if written as one text (each word counted
        # as often as its phrases' weights say): a phrase of rare words is not drowned by a common one.
        interest = model.queries(weights @ phrase_counts)
        avoid_q = model.queries(avoid @ phrase_counts)
        positive, negative, negative_mass = self._history_queries(readers, n_terms)
        return _Queries(interest, avoid_q, positive, negative, negative_mass, phrases, phrase_vectors, weights)

    def _history_queries(self, readers: Sequence[Reader], n_terms: int) -> tuple[sparse.csr_matrix, sparse.csr_matrix, np.ndarray]:
        """Rocchio: the positive query is the mean of the opened papers less a little of the mean
        of those skipped (which sharpens it without pushing the whole topic down); papers turned
        down make a query of their own, subtracted by the evidence for it."""
        examples = self.examples
        empty = sparse.csr_matrix((len(readers), n_terms), dtype=np.float32)
        if examples is None or not any(r.history.papers for r in readers):
            return empty, empty, np.zeros(len(readers), np.float32)
        kinds: dict[str, tuple[list[int], list[int], list[float]]] = {k: ([], [], []) for k in ("positive", "skipped", "down")}
        for i, reader in enumerate(readers):
            for paper, weight in zip(reader.history.papers, reader.history.weights):
                row = examples.row.get(paper)
                if row is None:
                    continue
                kind = "positive" if weight > 0 else ("down" if weight <= TURNED_DOWN else "skipped")
                rows, cols, vals = kinds[kind]
                rows.append(i), cols.append(row), vals.append(abs(weight))
        shape = (len(readers), examples.vectors.shape[0])
        matrices = {k: sparse.csr_matrix((np.array(v, np.float32), (r, c)), shape=shape) for k, (r, c, v) in kinds.items()}
        mean_positive = normalize(matrices["positive"], norm="l1") @ examples.vectors
        skipped = matrices["skipped"]
        counts = np.maximum(np.diff(skipped.indptr), 1).astype(np.float32)
        mean_skipped = sparse.diags(1 / counts) @ skipped @ examples.vectors  # weights (0.15) times the mean
        has_positive = np.diff(matrices["positive"].indptr) > 0
        positive = normalize(mean_positive - sparse.diags(has_positive.astype(np.float32)) @ mean_skipped).tocsr()
        positive.data = np.maximum(positive.data, 0)  # a query never asks for a word's absence
        positive = normalize(positive).tocsr()
        down = matrices["down"]
        mass = np.asarray(down.sum(axis=1)).ravel().astype(np.float32)
        return positive, normalize(down @ examples.vectors).tocsr(), mass

    def _score(self, readers: Sequence[Reader], candidates: Candidates) -> "_Scores":
        cfg = self.config
        q = self._queries(readers)
        docs_t = candidates.docs.T.tocsr()
        interest = (q.interest @ docs_t).toarray()
        history = (q.positive @ docs_t).toarray()
        n = np.array([r.history.positives for r in readers], np.float32)[:, None]
        has_interests = np.array([bool(r.interests.phrases) for r in readers])[:, None]
        w = np.where(has_interests, n / (n + cfg.evidence_scale), 1.0)
        content = w * history + (1 - w) * interest
        if q.negative.nnz:
            strength = (cfg.negative_weight * q.negative_mass / (q.negative_mass + cfg.evidence_scale))[:, None]
            content -= strength * (q.negative @ docs_t).toarray()
        if q.avoid.nnz:
            content -= cfg.avoid_weight * (q.avoid @ docs_t).toarray()
        best = np.maximum(content.max(axis=1, initial=0.0), 1e-9)[:, None]
        followed: list[tuple[set[int], dict[int, list[str]]]] = []
        in_category: list[set[int]] = []
        for i, reader in enumerate(readers):
            rows, names = candidates.by_authors(reader.interests.authors) if reader.interests.authors else (set(), {})
            cats = candidates.by_categories(reader.interests.categories) if reader.interests.categories else set()
            followed.append((rows, names))
            in_category.append(cats)
            if rows:
                content[i, list(rows)] += cfg.author_boost * best[i, 0]
            if cats:
                content[i, list(cats)] += cfg.category_boost * best[i, 0]
        votes = None
        final = content
        if self.community is not None and cfg.readers_like_you > 0:
            votes = self.community.votes(readers, candidates.ids)
            # A paper readers like you opened counts as if its content score were at least a share of
            # the reader's best match: collaborative evidence can surface what the words miss.
            final = content + cfg.readers_like_you * votes * np.maximum(content, cfg.readers_like_you_floor * best)
        return _Scores(q, content, final, votes, history, interest, w, followed, in_category)

    def _rank_chunk(self, readers, candidates, allowed, k, require_match, explain) -> list[list[Ranked]]:
        cfg = self.config
        s = self._score(readers, candidates)
        final = s.final
        results = []
        coverage = None
        likeness = None
        similarity = candidates.similarity() if cfg.diversity > 0 else None
        if require_match or explain:
            coverage = _coverage(candidates.present, s.queries)  # candidates x phrases
            if s.queries.positive.nnz:
                likeness = (candidates.vectors @ s.queries.positive.T).toarray()  # candidates x readers
        for i, reader in enumerate(readers):
            scores = final[i].copy()
            mask = np.ones(len(candidates), dtype=bool) if allowed[i] is None else allowed[i].copy()
            if require_match:
                matched = np.zeros(len(candidates), dtype=bool)
                mine = s.queries.phrase_columns(i)
                if mine.size:
                    matched |= coverage[:, mine].max(axis=1) >= cfg.min_match
                if likeness is not None and reader.history.positives:
                    matched |= likeness[:, i] >= cfg.min_like
                if s.votes is not None:
                    matched |= s.votes[i] > 0
                if s.followed[i][0]:
                    matched[list(s.followed[i][0])] = True
                mask &= matched
            limit = k or reader.max_items
            order = top_k(scores, limit + 4 * min(limit, MMR_DEPTH), mask)
            picked = mmr(order, scores, candidates.vectors, limit, cfg.diversity, cfg.duplicate_similarity, similarity=similarity)
            results.append([Ranked(row, float(scores[row])) for row in picked])
        if explain:
            nearest = self._nearest_positives(readers, results, candidates)
            for i, (reader, ranked) in enumerate(zip(readers, results)):
                for item in ranked:
                    item.reasons = self._reasons(i, item.index, reader, s, candidates, coverage, likeness, nearest)
        return results

    def _reasons(self, i: int, row: int, reader: Reader, s: "_Scores", candidates: Candidates, coverage, likeness, nearest: dict[tuple[int, int], int]) -> list[str]:
        cfg = self.config
        reasons = []
        mine = s.queries.phrase_columns(i)
        if mine.size and coverage is not None:
            hits = [(coverage[row, j], s.queries.phrases[j]) for j in mine if coverage[row, j] >= cfg.min_match]
            hits.sort(key=lambda h: -h[0])
            if hits:
                reasons.append("matches " + ", ".join(p for _, p in hits[:3]))
        # Said when the opened papers make up a fair share (a quarter) of the score, or are all of it.
        from_history_part = s.weight[i, 0] * s.history[i, row]
        from_history = from_history_part >= HISTORY_SHARE * (from_history_part + (1 - s.weight[i, 0]) * s.interest[i, row]) or not reasons
        if reader.history.positives and from_history and self.examples is not None and likeness is not None and likeness[row, i] >= cfg.min_like:
            paper = nearest.get((i, row))
            if paper is not None:
                title = self.examples.titles[paper]
                title = title if len(title) <= 70 else title[:69].rsplit(" ", 1)[0] + "…"
                reasons.append(f"like “{title}” you opened")
        if s.votes is not None and s.votes[i, row] > 0:
            reasons.append("opened by readers like you")
        names = s.followed[i][1].get(row)
        if names:
            reasons.append("by " + ", ".join(names[:2]) + " (followed)")
        if row in s.in_category[i]:
            cats = [c for c in candidates.categories[row] if c in set(reader.interests.categories)]
            reasons.append("in " + ", ".join(cats[:2]))
        return reasons

    def _nearest_positives(self, readers: Sequence[Reader], results: list[list[Ranked]], candidates: Candidates) -> dict[tuple[int, int], int]:
        """{(reader, candidate row): the paper the reader opened that is most like it}, for every
        chosen item of readers with opened papers: one sparse product per group of readers (the
        opened papers by the chosen items), not one per item."""
        examples = self.examples
        nearest: dict[tuple[int, int], int] = {}
        if examples is None:
            return nearest
        positives = [[examples.row[p] for p, w in zip(r.history.papers, r.history.weights) if w > 0 and p in examples.row] for r in readers]
        for start in range(0, len(readers), NEAREST_GROUP):
            group = range(start, min(start + NEAREST_GROUP, len(readers)))
            mine = [i for i in group if positives[i] and results[i]]
            if not mine:
                continue
            example_rows = np.unique(np.concatenate([positives[i] for i in mine]))
            item_rows = np.unique(np.concatenate([[item.index for item in results[i]] for i in mine]))
            sims = (candidates.vectors[item_rows] @ examples.vectors[example_rows].T).toarray()
            example_at = {row: j for j, row in enumerate(example_rows.tolist())}
            item_at = {row: j for j, row in enumerate(item_rows.tolist())}
            for i in mine:
                columns = [example_at[row] for row in positives[i]]
                rows = [item_at[item.index] for item in results[i]]
                best = sims[np.ix_(rows, columns)].argmax(axis=1)
                paper_of = [examples.paper_ids[positives[i][j]] for j in best]
                for item, paper in zip(results[i], paper_of):
                    nearest[(i, item.index)] = paper
        return nearest


@dataclass
class _Queries:
    interest: sparse.csr_matrix
    avoid: sparse.csr_matrix
    positive: sparse.csr_matrix
    negative: sparse.csr_matrix
    negative_mass: np.ndarray
    phrases: list[str]
    phrase_vectors: sparse.csr_matrix
    weights: sparse.csr_matrix  # readers x phrases (interest phrases only)

    def phrase_columns(self, reader: int) -> np.ndarray:
        return self.weights.indices[self.weights.indptr[reader] : self.weights.indptr[reader + 1]]


@dataclass
class _Scores:
    queries: _Queries
    content: np.ndarray
    final: np.ndarray
    votes: np.ndarray | None
    history: np.ndarray
    interest: np.ndarray
    weight: np.ndarray
    followed: list[tuple[set[int], dict[int, list[str]]]]
    in_category: list[set[int]]


def _coverage(present: sparse.csr_matrix, queries: _Queries) -> np.ndarray:
    """How much of each phrase each candidate contains: the share of the phrase's squared TF-IDF
    weight on words present in the paper (1 = all of it), whatever the paper's length."""
    if not queries.phrases:
        return np.zeros((present.shape[0], 0), np.float32)
    squared = queries.phrase_vectors.multiply(queries.phrase_vectors).tocsr()
    return (present @ squared.T).toarray()
