"""Ranking: a TF-IDF model of paper text and a subscriber's interests scored against it.

`TextModel` follows scikit-learn's fit/transform: fitted on the recent corpus, it turns papers and
interest phrases into L2-normalized TF-IDF rows (stemmed words and word pairs), so that a
phrase's cosine with a paper says how much of the phrase the paper is about.

`InterestScorer` scores candidates for one subscriber from the weighted interests, pushes down
what is like an `avoid` phrase, pushes up followed authors and categories, and says why.
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
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer, TfidfTransformer

from .config import RankingConfig

_TOKEN = re.compile(r"(?u)\b\w\w+\b")


class StemmingTokenizer:
    """Lowercase words without stop words, stemmed, so "language models" meets "language model"."""

    def __init__(self) -> None:
        self._stemmer = snowballstemmer.stemmer("english")
        self._stem = lru_cache(maxsize=200_000)(self._stemmer.stemWord)

    def __call__(self, text: str) -> list[str]:
        stem = self._stem
        return [stem(t) for t in _TOKEN.findall(text.lower()) if t not in ENGLISH_STOP_WORDS and not t.isdigit()]

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()


def paper_text(title: str, abstract: str) -> str:
    """The text a paper is known by; the title counts twice, being the densest summary."""
    return f"{title}. {title}. {abstract}"


#: Below this many papers, `TextModel` keeps terms met only once.
SMALL_CORPUS = 200


class TextModel(TransformerMixin, BaseEstimator):
    """TF-IDF over stemmed words and word pairs, sublinear term frequency, rows L2-normalized.

    The vocabulary is what occurs in at least `min_df` papers (at most `max_features` terms),
    plus every term of the phrases passed as `keep` to `fit`: a subscriber's interest must not
    vanish because the corpus has met it only once, or not yet.
    """

    def __init__(self, ngram_range: tuple[int, int] = (1, 2), min_df: int = 2, max_features: int | None = 200_000):
        self.ngram_range = ngram_range
        self.min_df = min_df
        self.max_features = max_features

    def fit(self, texts: Iterable[str], y: object = None, keep: Iterable[str] = ()) -> "TextModel":
        self.fit_transform(texts, keep=keep)
        return self

    def fit_transform(self, texts: Iterable[str], y: object = None, keep: Iterable[str] = ()) -> sparse.csr_matrix:
        """Fit on `texts` and return their TF-IDF rows (tokenizing the corpus once)."""
        counter = CountVectorizer(tokenizer=StemmingTokenizer(), token_pattern=None, lowercase=False, ngram_range=self.ngram_range, dtype=np.float32)
        counts = counter.fit_transform(list(texts)).tocsc()
        terms = counter.get_feature_names_out()
        df = np.diff(counts.indptr)
        # Too few papers to tell a typo from a rare term: then every term counts.
        min_df = self.min_df if counts.shape[0] >= SMALL_CORPUS else 1
        chosen = np.flatnonzero(df >= min_df)
        if self.max_features is not None and chosen.size > self.max_features:
            totals = np.asarray(counts[:, chosen].sum(axis=0)).ravel()
            chosen = np.sort(chosen[np.argsort(-totals, kind="stable")[: self.max_features]])
        position = counter.vocabulary_
        wanted = {t for phrase in keep for t in counter.build_analyzer()(phrase)}
        chosen = np.union1d(chosen, np.array([position[t] for t in wanted if t in position], dtype=chosen.dtype))
        unseen = sorted(t for t in wanted if t not in position)
        vocabulary = [*terms[chosen].tolist(), *unseen]
        selected = sparse.hstack([counts[:, chosen], sparse.csc_matrix((counts.shape[0], len(unseen)), dtype=np.float32)]).tocsr()
        self.counter_ = CountVectorizer(
            tokenizer=StemmingTokenizer(), token_pattern=None, lowercase=False, ngram_range=self.ngram_range,
            vocabulary={t: i for i, t in enumerate(vocabulary)}, dtype=np.float32,
        )
        self.tfidf_ = TfidfTransformer(sublinear_tf=True)
        return self.tfidf_.fit_transform(selected).astype(np.float32).tocsr()

    def transform(self, texts: Iterable[str]) -> sparse.csr_matrix:
        return self.tfidf_.transform(self.counter_.transform(list(texts))).astype(np.float32).tocsr()

    @property
    def vocabulary_(self) -> dict[str, int]:
        return self.counter_.vocabulary


@dataclass(frozen=True)
class Interests:
    """What the ranker knows of a subscriber's stated taste."""

    phrases: tuple[tuple[str, float], ...]
    avoid: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()

    @classmethod
    def from_subscriber(cls, subscriber) -> "Interests":  # noqa: ANN001  (a Subscriber row or a Profile)
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
class Candidate:
    """The parts of a paper the ranker reads besides its text."""

    authors: Sequence[str] = ()
    categories: Sequence[str] = ()


@dataclass
class Ranked:
    index: int  # position in the candidate list
    score: float
    reasons: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def author_key(name: str) -> str:
    """A name compared without case, accents, dots or hyphens."""
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return " ".join(re.findall(r"[a-z0-9]+", text))


def _initial_key(name: str) -> str | None:
    """"t dao" for "T. Dao": followed names written with an initial match any first name."""
    words = author_key(name).split()
    return f"{words[0][0]} {words[-1]}" if len(words) >= 2 else None


class InterestScorer:
    """Scores candidate papers for one subscriber's stated interests."""

    def __init__(self, model: TextModel, config: RankingConfig | None = None) -> None:
        self.model = model
        self.config = config or RankingConfig()

    def score(self, interests: Interests, matrix: sparse.csr_matrix, candidates: Sequence[Candidate]) -> "Scored":
        """Scores and match flags for every candidate row of `matrix`."""
        cfg = self.config
        phrases = [p for p, _ in interests.phrases]
        weights = np.array([w for _, w in interests.phrases], dtype=np.float32)
        queries = self.model.transform(phrases)
        sims = (matrix @ queries.T).toarray()
        scores = sims @ weights / weights.sum()
        # How much of each phrase a paper contains, whatever the paper's length: the share of the
        # phrase's squared TF-IDF weight on words (and word pairs) present in the paper. A paper
        # that shares only "decoding" with "speculative decoding" is not a match.
        present = matrix.copy()
        present.data[:] = 1
        coverage = (present @ queries.multiply(queries).T).toarray()
        matched = coverage.max(axis=1) >= cfg.min_match
        if interests.avoid:
            avoid = (matrix @ self.model.transform(interests.avoid).T).toarray()
            scores -= cfg.avoid_weight * avoid.max(axis=1)
        followed = _AuthorMatcher(interests.authors)
        categories = set(interests.categories)
        by_author: dict[int, list[str]] = {}
        in_category: dict[int, list[str]] = {}
        if followed or categories:
            for row, candidate in enumerate(candidates):
                authors = followed.matches(candidate.authors)
                if authors:
                    by_author[row] = authors
                cats = [c for c in candidate.categories if c in categories]
                if cats:
                    in_category[row] = cats
        for row in by_author:
            scores[row] += cfg.author_boost
            matched[row] = True
        for row in in_category:
            scores[row] += cfg.category_boost
        return Scored(scores, matched, sims, coverage, phrases, by_author, in_category, cfg.min_match)

    def rank(self, interests: Interests, matrix: sparse.csr_matrix, candidates: Sequence[Candidate], k: int) -> list[Ranked]:
        """The best `k` matching candidates, best first; fewer when fewer match."""
        if matrix.shape[0] == 0:
            return []
        scored = self.score(interests, matrix, candidates)
        top = top_k(scored.scores, k, scored.matched)
        return [Ranked(int(i), float(scored.scores[i]), scored.reasons(int(i))) for i in top]


def top_k(scores: np.ndarray, k: int, eligible: np.ndarray | None = None) -> np.ndarray:
    """Indices of the `k` highest scores (among `eligible`), best first, ties by index."""
    rows = np.flatnonzero(eligible) if eligible is not None else np.arange(scores.shape[0])
    if rows.size > k:
        rows = rows[np.argpartition(-scores[rows], k - 1)[:k]]
    return rows[np.lexsort((rows, -scores[rows]))]


@dataclass
class Scored:
    """One subscriber's scores over the candidates, with what is needed to explain any of them."""

    scores: np.ndarray
    matched: np.ndarray
    similarities: np.ndarray  # candidates x interest phrases
    coverage: np.ndarray  # candidates x interest phrases
    phrases: list[str]
    by_author: dict[int, list[str]]
    in_category: dict[int, list[str]]
    min_match: float

    def reasons(self, row: int) -> list[str]:
        """Why candidate `row` scored: the interests it matches, best first, and what is followed."""
        reasons = []
        sims, coverage = self.similarities[row], self.coverage[row]
        hits = [self.phrases[j] for j in np.argsort(-sims, kind="stable") if coverage[j] >= self.min_match][:3]
        if hits:
            reasons.append("matches " + ", ".join(hits))
        if row in self.by_author:
            reasons.append("by " + ", ".join(self.by_author[row][:2]) + " (followed)")
        if row in self.in_category:
            reasons.append("in " + ", ".join(self.in_category[row][:2]))
        return reasons


class _AuthorMatcher:
    """Followed authors, matched without case or accents; a followed "T. Dao" matches any T. Dao."""

    def __init__(self, names: Iterable[str]) -> None:
        keys = [author_key(n) for n in names]
        self.full = {k for k in keys if k}
        self.initials = {_initial_key(k) for k in keys if len(k.split()) >= 2 and len(k.split()[0]) == 1}

    def __bool__(self) -> bool:
        return bool(self.full)

    def matches(self, authors: Sequence[str]) -> list[str]:
        if not self.full:
            return []
        return [a for a in authors if (key := author_key(a)) in self.full or (self.initials and _initial_key(key) in self.initials)]
