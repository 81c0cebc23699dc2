"""Every part of a score, for a chunk of readers at once: the interests as one query (expanded
by pseudo-relevance feedback), the learned model, papers turned down and avoided, followed authors
and categories, and "readers like you"; each part scaled by its spread and blended by evidence
(see the package's docstring). Sparse products over the chunk, never a loop over papers."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from sklearn.preprocessing import normalize

from ..config import RankingConfig
from ..matrices import dense_product
from ..textmodel import PhraseWeights, TextModel
from .community import Community
from .papers import Candidates, Examples, Pool
from .readers import Reader

#: Something that embeds short texts (interest phrases) as unit vectors: `embeddings.Embedder.phrases`.
PhraseEmbedder = Callable[[Sequence[str]], np.ndarray]

#: Phrases matched against the pseudo-relevance feedback pool in one product.
PRF_BATCH = 256
#: Terms kept in a reader's expanded interest query, and in their learned model's query (`prune`):
#: measured on development data, 200 make the expanded interests better than all (the long tail
#: of the feedback papers is noise) and 500 lose nothing of a learned model (200 lost 3.6%; all
#: terms lost 1% of nDCG@10 on citeulike-a-dev new-papers seeds 0-2, measured 2026-11-24).
INTEREST_TERMS = 200
MODEL_TERMS = 500


def spread(scores: np.ndarray, mask: np.ndarray | None, shift: bool = True) -> np.ndarray:
    """Each row divided by its standard deviation over the row's allowed columns, less its
    minimum there (`shift`; a part whose zero means "nothing in common" keeps it): parts of
    different kinds (TF-IDF, embeddings, interests, a learned model) become comparable and never
    negative, and a reader's ranking does not depend on how large their numbers happen to be (for
    a sum of such parts, the ranking is that of summed z-scores)."""
    scores = scores.astype(np.float64)
    if mask is None:  # the same arithmetic either way: a reader ranks the same alone or in a batch
        mask = np.ones(scores.shape, dtype=bool)
    count = np.maximum(mask.sum(axis=1, keepdims=True), 1)
    mean = np.where(mask, scores, 0).sum(axis=1, keepdims=True) / count
    std = np.sqrt(np.where(mask, (scores - mean) ** 2, 0).sum(axis=1, keepdims=True) / count)
    low = np.where(mask, scores, np.inf).min(axis=1, keepdims=True, initial=np.inf)
    low = np.where(np.isfinite(low), low, 0) if shift else 0
    return (scores - low) / np.where(std > 1e-9, std, 1.0)


def evidence_weight(n: np.ndarray, config: RankingConfig) -> np.ndarray:
    """How much n papers of evidence count against the stated interests: n^p / (n^p + s^p), s
    the `evidence_scale` and p the `evidence_power`: 0 without evidence, 1/2 at s papers, near
    1 well beyond (with p = 2, one or two clicks move little, a library of them decides)."""
    p, s = config.evidence_power, config.evidence_scale
    n = np.asarray(n, np.float32)
    return n**p / (n**p + s**p)


def prune(queries: sparse.csr_matrix, terms: int) -> sparse.csr_matrix:
    """Each row cut to its `terms` largest weights in magnitude: an expanded or learned query
    holds thousands of small weights that cost time in every product (see `INTEREST_TERMS`)."""
    queries = queries.tocsr()
    lengths = np.diff(queries.indptr)
    if terms <= 0 or not (lengths > terms).any():
        return queries
    keep = np.ones(queries.nnz, dtype=bool)
    for row in np.flatnonzero(lengths > terms):
        start, end = queries.indptr[row], queries.indptr[row + 1]
        values = np.abs(queries.data[start:end])
        keep[start + np.argpartition(-values, terms)[terms:]] = False
    data, indices = queries.data[keep], queries.indices[keep]
    indptr = np.concatenate([[0], np.cumsum(np.minimum(lengths, terms))])
    return sparse.csr_matrix((data, indices, indptr), shape=queries.shape)


def _rows(examples: Examples, papers: Sequence[Sequence[int]], weights: Sequence[Sequence[float]] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each reader's papers (`papers[i]`, reader i's) as (reader, example row, weight) triples,
    in order, without the papers that are not examples: the lookups of a whole chunk of readers
    in one call (`Examples.rows_of`)."""
    lengths = np.fromiter((len(p) for p in papers), np.int64, count=len(papers))
    total = int(lengths.sum())
    readers = np.repeat(np.arange(len(papers), dtype=np.int64), lengths)
    rows = examples.rows_of(np.fromiter(itertools.chain.from_iterable(papers), np.int64, count=total))
    found = rows >= 0
    values = np.fromiter(itertools.chain.from_iterable(weights), np.float32, count=total)[found] if weights is not None else np.ones(int(found.sum()), np.float32)
    return readers[found], rows[found], values


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


class Scorer:
    """The scores of every candidate for a chunk of readers (`score`), with what choosing and
    explaining need of their parts. Keeps each phrase's feedback centroid for the run."""

    def __init__(
        self, model: TextModel, config: RankingConfig, examples: Examples | None = None, community: Community | None = None,
        pool: Pool | None = None, phrase_embedder: PhraseEmbedder | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.examples = examples
        self.community = community
        self.pool = pool
        #: Sentence embeddings of phrases; with candidates' embeddings, the semantic half of every score.
        self.phrase_embedder = phrase_embedder
        self._prf_cache: dict[str, tuple] = {}

    def semantic(self, candidates: Candidates) -> bool:
        return self.phrase_embedder is not None and candidates.embeddings is not None

    def _queries(self, readers: Sequence[Reader], candidates: Candidates) -> "Queries":
        model = self.model
        n_terms = len(model.idf_)
        # Each distinct phrase once: readers share many, and everything per phrase is then done once.
        column: dict[str, int] = {}
        weight_rows, weight_cols, weight_vals = [], [], []
        avoid_rows, avoid_cols = [], []
        own: list[dict[int, float]] = []  # each reader's phrase columns and weights, in the reader's order
        for i, reader in enumerate(readers):
            mine: dict[int, float] = {}
            for phrase, weight in reader.interests.phrases:
                weight_rows.append(i)
                weight_cols.append(column.setdefault(phrase, len(column)))
                weight_vals.append(weight)
                mine[column[phrase]] = mine.get(column[phrase], 0.0) + weight
            own.append(mine)
            for phrase in reader.interests.avoid:
                avoid_rows.append(i)
                avoid_cols.append(column.setdefault(phrase, len(column)))
        phrases = list(column)
        phrase_counts = model.counts(phrases) if phrases else sparse.csr_matrix((0, n_terms), dtype=np.float32)
        shape = (len(readers), len(phrases))
        weights = sparse.csr_matrix((np.array(weight_vals, np.float32), (weight_rows, weight_cols)), shape=shape)
        avoid = sparse.csr_matrix((np.ones(len(avoid_rows), np.float32), (avoid_rows, avoid_cols)), shape=shape)
        # All of a reader's phrases make one query, as if written as one text (each word and pair
        # counted as often as its phrases' weights say): a phrase of rare words is not drowned by a common one.
        interest = model.queries(weights @ phrase_counts)
        phrase_embeddings = None
        interest_embedding = None
        if self.semantic(candidates) and phrases:
            phrase_embeddings = np.asarray(self.phrase_embedder(phrases), np.float32)
            interest_embedding = unit_rows(np.asarray(weights @ phrase_embeddings))
        columns = [np.fromiter(mine, dtype=np.int64, count=len(mine)) for mine in own]
        shares = [np.fromiter(mine.values(), dtype=np.float64, count=len(mine)) for mine in own]
        return Queries(interest, avoid, phrases, weights, phrase_embeddings, interest_embedding, columns, shares)

    def _expand(self, q: "Queries", has_interests: np.ndarray) -> tuple[sparse.csr_matrix, np.ndarray | None]:
        """Pseudo-relevance feedback: each reader's interest query plus the centroid of the papers
        of the pool that best match each of their phrases (`prf_papers` per phrase, in words and,
        where there are embeddings, in meaning), each phrase counting by its weight. Per phrase,
        so that a reader's strongest interest does not take the expansion over from the others."""
        cfg = self.config
        words, meaning = self._feedback_centroids(q.phrases)
        share = normalize(q.weights, norm="l1")  # readers x phrases: each interest phrase by its weight
        expanded = normalize(prune(normalize(q.interest) + cfg.prf_weight * normalize(share @ words), INTEREST_TERMS)).astype(np.float32).tocsr()
        dense = None
        if q.interest_embedding is not None and meaning is not None:
            dense = unit_rows(q.interest_embedding + cfg.prf_semantic_weight * unit_rows(np.asarray(share @ meaning)))
        return expanded, dense

    def _feedback_centroids(self, phrases: Sequence[str]) -> tuple[sparse.csr_matrix, np.ndarray | None]:
        """For each phrase, the centroid (words, and embeddings where there are) of the
        `prf_papers` papers of the pool that match it best: worked out once per phrase for all the
        readers this ranker serves (a run's subscribers share many phrases)."""
        cfg = self.config
        pool = self.pool
        cache = self._prf_cache
        todo = [p for p in dict.fromkeys(phrases) if p not in cache]
        m = min(cfg.prf_papers, len(pool))
        dense = self.phrase_embedder is not None and pool.embeddings is not None
        for start in range(0, len(todo), PRF_BATCH):
            part = todo[start : start + PRF_BATCH]
            match = dense_product(self.model.queries(self.model.counts(part)), pool.docs_t())
            if dense:
                meaning = np.asarray(self.phrase_embedder(part), np.float32) @ pool.embeddings.T
                match = spread(match, None, shift=False) + cfg.semantic_weight * spread(meaning, None)
            top = np.argpartition(-match, m - 1, axis=1)[:, :m]
            rows, cols = [], []
            for j, (found, scores) in enumerate(zip(top, match)):
                found = found[scores[found] > 0]  # a paper sharing nothing with the phrase is no feedback
                rows.extend([j] * found.size)
                cols.extend(found.tolist())
            pick = normalize(sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(part), len(pool))), norm="l1")
            centroids = prune(normalize(pick @ pool.vectors), INTEREST_TERMS)
            embedded = unit_rows(np.asarray(pick @ pool.embeddings)) if dense else None
            for j, phrase in enumerate(part):
                cache[phrase] = (centroids[j], embedded[j] if embedded is not None else None)
        words = sparse.vstack([cache[p][0] for p in phrases]).tocsr() if phrases else sparse.csr_matrix((0, len(self.model.idf_)), dtype=np.float32)
        meaning = np.stack([cache[p][1] for p in phrases]) if dense and phrases else None
        return words, meaning

    def _history(self, readers: Sequence[Reader], candidates: Candidates) -> "HistoryParts":
        """The learned models as queries: the examples' weights times their vectors (the dual
        form), plus the corpus centroid's weight times each candidate's typicality. Raw evidence
        (no learned model yet) counts as the centroid of the positives less `typicality` times
        the corpus centroid; papers turned down by a reader with no positives make a query of
        their own, subtracted by the evidence for it."""
        cfg = self.config
        examples = self.examples
        n = len(readers)
        empty = HistoryParts(None, np.zeros(n, np.float32), None, None, np.zeros(n, np.float32), None, [np.zeros(0, np.int64)] * n)
        if examples is None or not any(r.history.papers for r in readers):
            return empty
        # Every reader's examples as (reader, example row) pairs, looked up for the chunk at once,
        # in the readers' order and each reader's (the order the matrices were built in before).
        histories = [r.history for r in readers]
        is_learned = np.array([h.learned for h in histories])
        like_rows, like_cols, _ = _rows(examples, [h.positive_papers for h in histories])
        down_rows, down_cols, _ = _rows(examples, [[] if h.positives else h.down_papers for h in histories])
        model_rows, model_cols, model_vals = _rows(examples, [h.papers if h.learned else () for h in histories],
                                                   [h.weights if h.learned else () for h in histories])
        background = np.array([h.background if h.learned else 0.0 for h in histories], np.float32)
        # Raw evidence: a reader with no learned model, and positives among the examples.
        raw_readers = (np.bincount(like_rows, minlength=n) > 0) & ~is_learned
        background[raw_readers] = -cfg.typicality
        raw_rows, raw_cols = like_rows[raw_readers[like_rows]], like_cols[raw_readers[like_rows]]
        shape = (n, examples.vectors.shape[0])
        learned = sparse.csr_matrix((model_vals, (model_rows, model_cols)), shape=shape)
        raw = sparse.csr_matrix((np.ones(len(raw_rows), np.float32), (raw_rows, raw_cols)), shape=shape)
        liked = sparse.csr_matrix((np.ones(len(like_rows), np.float32), (like_rows, like_cols)), shape=shape)
        down = sparse.csr_matrix((np.ones(len(down_rows), np.float32), (down_rows, down_cols)), shape=shape)
        # Raw evidence: the unit centroid of the positives (the background is scaled to a unit query).
        query = learned @ examples.vectors
        if raw.nnz:
            query = query + normalize(raw @ examples.vectors)
        query = prune(query, MODEL_TERMS)
        weights = (learned + raw).tocsr()
        docs_t = candidates.docs_t()
        scores = dense_product(query, docs_t)
        negative = dense_product(normalize(down @ examples.vectors), docs_t) if down.nnz else None
        down_mass = np.asarray(down.sum(axis=1)).ravel().astype(np.float32)
        likeness = normalize(prune(liked @ examples.words, INTEREST_TERMS)).tocsr()  # the centroid of what was opened: for matches and reasons
        meaning = None
        if self.semantic(candidates) and examples.embeddings is not None:
            combined = np.asarray(weights @ examples.embeddings)
            centroid = self.pool.embedding_centroid if self.pool is not None else None
            if centroid is None:
                centroid = candidates.embeddings.mean(axis=0)
            has_model = np.diff(weights.indptr) > 0
            meaning = np.where(has_model[:, None], unit_rows(combined) - cfg.semantic_typicality * centroid[None, :], 0).astype(np.float32)
        opened = np.split(like_cols, np.cumsum(np.bincount(like_rows, minlength=n))[:-1])
        return HistoryParts(scores, background, likeness, negative, down_mass, meaning, opened)

    def score(self, readers: Sequence[Reader], candidates: Candidates, allowed: Sequence[np.ndarray | None] | None) -> "Scores":
        cfg = self.config
        q = self._queries(readers, candidates)
        docs_t = candidates.docs_t()
        mask = None
        if allowed is not None and any(a is not None for a in allowed):
            mask = np.stack([np.ones(len(candidates), bool) if a is None else a for a in allowed])
        has_interests = np.array([bool(r.interests.phrases) for r in readers])
        n = np.array([r.history.positives for r in readers], np.float32)
        semantic = self.semantic(candidates)
        interest_words, interest_meaning = q.interest, q.interest_embedding
        if self.pool is not None and len(self.pool) and cfg.prf_papers > 0 and cfg.prf_weight > 0 and has_interests.any():
            expanded_words, expanded_meaning = self._expand(q, has_interests)
            interest_words = expanded_words
            interest_meaning = expanded_meaning if expanded_meaning is not None else interest_meaning
        interest = spread(dense_product(interest_words, docs_t), mask, shift=False)
        if semantic and interest_meaning is not None:
            interest += cfg.semantic_weight * spread(interest_meaning @ candidates.embeddings.T, mask)
        h = self._history(readers, candidates)
        history = np.zeros_like(interest)
        if h.scores is not None:
            history = spread(h.scores + h.background[:, None] * candidates.typicality[None, :], mask)
            if h.meaning is not None:
                history += cfg.semantic_history_weight * spread(h.meaning @ candidates.embeddings.T, mask)
        w = np.where(has_interests, evidence_weight(n, cfg), (n > 0).astype(np.float32))[:, None]
        content = w * history + (1 - w) * interest
        if h.negative is not None:
            # "Less like this" is said on purpose: one counts half at once (a click is weighed more slowly).
            strength = (cfg.negative_weight * h.negative_mass / (h.negative_mass + 1))[:, None]
            content -= strength * spread(h.negative, mask, shift=False)
        best = np.maximum(np.where(mask, content, -np.inf).max(axis=1, initial=0.0) if mask is not None else content.max(axis=1, initial=0.0), 1e-9)[:, None]
        match = self._matches(q, candidates)
        if q.avoid.nnz:
            held = np.where(match.coverage >= cfg.min_match, match.coverage, 0)
            # A paper holding an avoided phrase loses the reader's best score (times `avoid_weight`).
            content -= cfg.avoid_weight * np.minimum((held @ q.avoid.T.toarray()).T, 1.0) * best
        followed: list[tuple[set[int], dict[int, list[str]]]] = []
        in_category: list[frozenset[int]] = []
        for i, reader in enumerate(readers):
            rows, names = candidates.by_authors(reader.interests.authors) if reader.interests.authors else (set(), {})
            cats = candidates.by_categories(reader.interests.categories) if reader.interests.categories else frozenset()
            followed.append((rows, names))
            in_category.append(cats)
            if rows:
                content[i, list(rows)] += cfg.author_boost * best[i, 0]
            if cats:
                content[i, candidates.category_rows(reader.interests.categories)] += cfg.category_boost * best[i, 0]
        votes = None
        final = content
        if self.community is not None and cfg.readers_like_you > 0:
            votes = self.community.votes(readers, candidates.ids)
            # A paper readers like you opened counts as if its content score were at least a share of
            # the reader's best match: collaborative evidence can surface what the words miss.
            final = content + cfg.readers_like_you * votes * np.maximum(content, cfg.readers_like_you_floor * best)
        return Scores(q, content, final, votes, history, interest, w, followed, in_category, h, match, list(readers))

    def _matches(self, q: "Queries", candidates: Candidates) -> "Matches":
        """How much of each phrase each candidate contains (candidates x phrases), and, with
        embeddings, how close in meaning each is to each phrase."""
        weights = self.model.phrase_weights(q.phrases) if q.phrases else None
        covered = weights.coverage(candidates.present, candidates.near) if weights is not None else np.zeros((len(candidates), 0), np.float32)
        related = None
        if q.phrase_embeddings is not None:
            related = candidates.embeddings @ q.phrase_embeddings.T
        return Matches(covered, related, weights)


@dataclass
class Queries:
    interest: sparse.csr_matrix
    avoid: sparse.csr_matrix  # readers x phrases (avoid phrases only)
    phrases: list[str]
    weights: sparse.csr_matrix  # readers x phrases (interest phrases only)
    phrase_embeddings: np.ndarray | None = None
    interest_embedding: np.ndarray | None = None
    columns: list[np.ndarray] = field(default_factory=list)  # each reader's phrase columns, in their order
    shares: list[np.ndarray] = field(default_factory=list)  # ... and their weights

    def phrase_columns(self, reader: int) -> np.ndarray:
        return self.columns[reader]


@dataclass
class HistoryParts:
    scores: np.ndarray | None  # the learned models' scores of the candidates (readers x candidates), before the background
    background: np.ndarray  # the weight of the corpus centroid in each model
    likeness: sparse.csr_matrix | None  # the unit centroid of each reader's opened papers
    negative: np.ndarray | None  # likeness to the papers turned down, for readers with no positives (readers x candidates)
    negative_mass: np.ndarray
    meaning: np.ndarray | None  # the models in the embedding space
    opened: list[np.ndarray]  # each reader's opened or liked papers among the examples (rows of `Examples`), in order


@dataclass
class Matches:
    coverage: np.ndarray  # candidates x phrases: share of each phrase a paper contains
    related: np.ndarray | None  # candidates x phrases: cosine of embeddings, with the semantic extra
    phrase_weights: PhraseWeights | None = None  # what it takes to contain each of the chunk's phrases


@dataclass
class Scores:
    queries: Queries
    content: np.ndarray
    final: np.ndarray
    votes: np.ndarray | None
    history: np.ndarray
    interest: np.ndarray
    weight: np.ndarray
    followed: list[tuple[set[int], dict[int, list[str]]]]
    in_category: list[frozenset[int]]
    history_parts: HistoryParts
    matches: Matches
    readers: list
