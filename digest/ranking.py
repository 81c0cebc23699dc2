"""Ranking: papers scored for many subscribers at once, from their interests, their learned model
and the clicks of subscribers like them; then cut to good matches, shared out over the
interests, diversified and explained.

The method (measured in docs/evaluation.md):

- Papers are words and adjacent word pairs (`textmodel.TextModel`): a candidate is a BM25 vector,
  a query a unit TF-IDF vector. With the `semantic` extra, papers and phrases also have sentence
  embeddings (`embeddings`), and every score below gets a dense twin.
- Interests: the weighted phrases make one query, expanded by pseudo-relevance feedback: the
  `prf_papers` papers of the recent corpus that best match it are added to it (`prf_weight`), so
  that a subscriber with two tags is also served by the words those papers share.
- The learned model: the retraining (`training`) fits each subscriber's logistic regression on
  the papers they opened or liked against those they turned down, skipped, and the typical paper
  of the corpus; it is kept in dual form, as a weight per example paper and one for the corpus
  centroid, so that it is read in whatever vocabulary today's text model has.
- Each part is scaled by its spread over the reader's candidates, and the two are blended by
  evidence: w = n / (n + `evidence_scale`) for n positive papers, so that a new subscriber is served
  by their interests alone and evidence gradually takes over. `avoid` phrases and (for a reader
  with nothing opened yet) papers turned down push papers down; followed authors and categories
  add a share of the best score; "readers like you" multiply a paper's score by 1 + 2 x votes.
- A paper goes into an email only when it matches: it contains an interest phrase (its words,
  and its adjacent pairs, weighed by idf: `min_match`), or its embedding is close to the phrase's,
  or it is like the papers the subscriber opened, or readers like them opened it, or it is by a
  followed author. The top places are shared out over the interests in proportion to their
  weights (where an interest has good matches), near-duplicates are pushed apart, and every item
  says why it was chosen, naming only what it truly matched.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy import sparse
from sklearn.preprocessing import normalize

from .config import RankingConfig
from .textmodel import SMALL_CORPUS, StemmingTokenizer, TextModel, paper_text

__all__ = [
    "SMALL_CORPUS", "Candidates", "Community", "Examples", "History", "Interests", "Pool", "Ranked", "Ranker", "Reader",
    "StemmingTokenizer", "TextModel", "mmr", "paper_text", "top_k",
]

#: History weights at or below this are papers turned down; between it and 0, papers skipped.
TURNED_DOWN = -0.5

#: Something that embeds short texts (interest phrases) as unit vectors: `embeddings.Embedder.phrases`.
PhraseEmbedder = Callable[[Sequence[str]], np.ndarray]


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
    """A subscriber's feedback as example papers with weights, and how many are positive.

    `learned`: the weights are the dual coefficients of the subscriber's learned model (see
    `training.learn`), with `background` the coefficient of the corpus centroid. Otherwise they are
    raw evidence: positive for opened or liked, at most `TURNED_DOWN` for turned down, between
    that and 0 for shown and not opened (a model from before learning, or a test's history)."""

    papers: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()
    positives: int = 0
    background: float = 0.0
    learned: bool = False

    @classmethod
    def of(cls, positive: Iterable[int]) -> "History":
        ids = tuple(dict.fromkeys(positive))
        return cls(ids, tuple(1.0 for _ in ids), len(ids))

    @cached_property
    def positive_papers(self) -> list[int]:
        """The papers opened or liked: positive weights in either form (a learned model's
        coefficients have the sign of their example's label)."""
        return [p for p, w in zip(self.papers, self.weights) if w > 0]

    @cached_property
    def down_papers(self) -> list[int]:
        """Papers turned down, as raw evidence (a learned model has folded them in)."""
        return [] if self.learned else [p for p, w in zip(self.papers, self.weights) if w <= TURNED_DOWN]


@dataclass
class Reader:
    """One subscriber as the ranker sees them."""

    key: int  # the subscriber id (the row of the community matrix)
    interests: Interests
    history: History = field(default_factory=History)
    max_items: int = 10


@dataclass
class Examples:
    """The papers of subscribers' histories, as unit query vectors (and embeddings, where there
    are), with their titles (for reasons)."""

    vectors: sparse.csr_matrix  # unit TF-IDF rows over words and pairs (what queries are made of)
    row: dict[int, int]  # paper id -> row of `vectors`
    titles: dict[int, str]
    embeddings: np.ndarray | None = None  # rows as `vectors`; zeros where a paper has none
    words: sparse.csr_matrix | None = None  # unit TF-IDF rows over words alone (likeness to candidates)
    paper_ids: list[int] = field(init=False, repr=False)  # row of `vectors` -> paper id

    def __post_init__(self) -> None:
        self.paper_ids = [0] * self.vectors.shape[0]
        for paper, row in self.row.items():
            self.paper_ids[row] = paper
        if self.words is None:
            self.words = self.vectors

    @classmethod
    def build(cls, model: TextModel, papers: Sequence[tuple[int, str]], counts: sparse.csr_matrix, embeddings: np.ndarray | None = None) -> "Examples":
        """`papers` is [(id, title)], `counts` their term counts in the same order."""
        vectors = model.queries(counts) if counts.shape[0] else sparse.csr_matrix((0, len(model.idf_)), dtype=np.float32)
        return cls(vectors, {pid: i for i, (pid, _) in enumerate(papers)}, dict(papers), embeddings, model.word_part(vectors))


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
    docs: sparse.csr_matrix  # BM25 rows (what queries score)
    vectors: sparse.csr_matrix  # unit TF-IDF rows over words (likeness between papers)
    present: sparse.csr_matrix  # 1 where a word or pair occurs (how much of a phrase a paper contains)
    typicality: np.ndarray  # how alike each paper is to the corpus centroid (`TextModel.typicality`)
    authors: list[list[str]]
    categories: list[list[str]]
    author_index: dict[str, set[int]]  # author key (full, or initial form) -> rows
    category_index: dict[str, set[int]]
    embeddings: np.ndarray | None = None  # unit sentence embeddings (rows), with the semantic extra
    near: sparse.csr_matrix | None = None  # the phrases' word pairs each paper holds close together
    _similarity: np.ndarray | None = field(default=None, repr=False)
    _docs_t: sparse.csr_matrix | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls, model: TextModel, ids: Sequence[int], counts: sparse.csr_matrix, authors: Sequence[Sequence[str]], categories: Sequence[Sequence[str]],
        embeddings: np.ndarray | None = None, texts: Sequence[str] | None = None, phrases: Iterable[str] | None = None,
    ) -> "Candidates":
        """`texts`: where given, a phrase's words count as together when close (`TextModel.near`;
        `phrases`, the readers' interests and avoids, limit the work to their words), else only
        as written."""
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
        docs = model.bm25(counts)
        near = model.near(texts, phrases) if texts is not None else None
        return cls(
            np.asarray(ids), docs, model.word_part(model.queries(counts)), present.tocsr(), model.typicality(docs),
            [list(a) for a in authors], [list(c) for c in categories], author_index, category_index, embeddings, near,
        )

    def __len__(self) -> int:
        return len(self.ids)

    def docs_t(self) -> sparse.csr_matrix:
        """The BM25 rows transposed (terms x papers), made once for every chunk of readers."""
        if self._docs_t is None:
            self._docs_t = self.docs.T.tocsr()
        return self._docs_t

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


@dataclass
class Pool:
    """The recent corpus that pseudo-relevance feedback draws on: papers that best match a
    reader's interests lend them their other words (and their embeddings)."""

    docs: sparse.csr_matrix  # BM25 rows
    vectors: sparse.csr_matrix  # unit TF-IDF rows
    embeddings: np.ndarray | None = None
    _docs_t: sparse.csr_matrix | None = field(default=None, repr=False)

    @classmethod
    def build(cls, model: TextModel, counts: sparse.csr_matrix, embeddings: np.ndarray | None = None) -> "Pool":
        return cls(model.bm25(counts), model.queries(counts), embeddings)

    def __len__(self) -> int:
        return self.docs.shape[0]

    def docs_t(self) -> sparse.csr_matrix:
        if self._docs_t is None:
            self._docs_t = self.docs.T.tocsr()
        return self._docs_t

    @property
    def embedding_centroid(self) -> np.ndarray | None:
        """The mean embedding: what a typical paper is, in the dense space."""
        if self.embeddings is None or not len(self.embeddings):
            return None
        return self.embeddings.mean(axis=0).astype(np.float32)


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
            for paper in reader.history.positive_papers:
                column = self.paper_column.get(paper)
                if column is not None:
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


#: How many places at the top are diversified and shared out (a digest holds at most 50; its top is what is read).
MMR_DEPTH = 20
#: Readers whose chosen items are compared with their opened papers in one product.
NEAREST_GROUP = 64
#: Up to this many candidates their likeness to each other is held as one dense matrix (100 MB at 5,000).
DENSE_SIMILARITY_LIMIT = 5000
#: Phrases matched against the pseudo-relevance feedback pool in one product.
PRF_BATCH = 256
#: Terms kept in a reader's expanded interest query, and in their learned model's query (`_prune`):
#: measured on development data, 200 make the expanded interests better than all (the long tail
#: of the feedback papers is noise) and 500 lose nothing of a learned model (200 lost 3.6%; all
#: terms lost 1% of nDCG@10 on citeulike-a-dev new-papers seeds 0-2, measured 2026-11-24).
INTEREST_TERMS = 200
MODEL_TERMS = 500


def mmr(
    order: np.ndarray, scores: np.ndarray, vectors: sparse.csr_matrix, k: int, diversity: float, duplicate: float = 0.6, depth: int = MMR_DEPTH,
    similarity: np.ndarray | None = None, groups: np.ndarray | None = None, shares: np.ndarray | None = None, free_share: float = 0.0,
) -> list[int]:
    """The first `depth` places of a list sorted best first, chosen one at a time; later places
    follow the scores.

    With `groups` (items x interests: which interests each item is a good match of) and `shares`
    (each interest's weight), the places are shared out: the interest that fills the next place
    is the one furthest below its share of the places taken so far (Sainte-Laguë: share /
    (2 x places + 1)), among those with items left; an item matching several interests can fill
    the place of any of them. `free_share` is a share of places that go by score alone (the
    weight of what the subscriber's clicks say), and an item of no interest is taken in an
    interest's turn when its score beats that interest's best. Within a turn, maximal marginal
    relevance picks the item: its relevance (scaled to the best) traded against how far its
    likeness to what was picked goes beyond `duplicate` (cosine). Only near-duplicates are pushed
    apart: papers merely on the same topic are what the subscriber asked for (measured: a penalty
    on all likeness cost 8% nDCG@10 on real text)."""
    shared = groups is not None and shares is not None and len(shares) > 1
    if (diversity <= 0 and not shared) or len(order) <= 1:
        return [int(i) for i in order[:k]]
    places = min(k, depth)
    pool = order[: places * 5]
    relevance = scores[pool].astype(np.float64)
    top = relevance.max()
    relevance = relevance / top if top > 0 else relevance
    if diversity > 0:
        similar = similarity[np.ix_(pool, pool)] if similarity is not None else (vectors[pool] @ vectors[pool].T).toarray()
        twins = int((similar > duplicate).sum()) > len(pool)  # beyond the diagonal
    else:
        similar, twins = None, False
    if not twins:  # no near-duplicates to push apart: the scores' order, shared out
        if not shared:
            return [int(i) for i in order[:k]]
        picked = _share_out(pool, groups[: len(pool)], np.asarray(shares, np.float64), free_share, places)
        taken_rows = set(picked)
        return picked + [int(i) for i in order if int(i) not in taken_rows][: k - len(picked)]
    if shared:
        member = groups[: len(pool)]
        weight = np.append(np.asarray(shares, np.float64), free_share)  # the last: places by score alone
        taken = np.zeros(len(weight))
        remaining = member.sum(axis=0)
        members = [np.flatnonzero(member[:, g]) for g in range(len(shares))]
        outside = np.flatnonzero(~member.any(axis=1))
    chosen: list[int] = []
    closest = np.zeros(len(pool))
    available = np.ones(len(pool), dtype=bool)
    while len(chosen) < min(places, len(pool)):
        value = (1 - diversity) * relevance - diversity * np.maximum(closest - duplicate, 0) / (1 - duplicate)
        value[~available] = -np.inf
        pick = int(np.argmax(value))
        if shared and remaining.any():
            left = np.append(remaining > 0, free_share > 0)
            turn = int(np.argmax(np.where(left, weight / (2 * taken + 1), -np.inf)))
            if turn < len(shares):
                in_turn = int(members[turn][np.argmax(value[members[turn]])])
                best_outside = int(outside[np.argmax(value[outside])]) if outside.size else -1
                pick = best_outside if best_outside >= 0 and value[best_outside] > value[in_turn] else in_turn
                if pick == in_turn:
                    taken[turn] += 1
            else:
                taken[turn] += 1
        chosen.append(pick)
        available[pick] = False
        if shared:
            remaining -= member[pick]
        closest = np.maximum(closest, similar[pick])
    picked = [int(pool[i]) for i in chosen]
    taken_rows = set(picked)
    picked += [int(i) for i in order if int(i) not in taken_rows][: k - len(picked)]
    return picked


def _share_out(pool: np.ndarray, member: np.ndarray, shares: np.ndarray, free_share: float, places: int) -> list[int]:
    """`mmr`'s sharing out when nothing is to be pushed apart, in plain Python over a few dozen
    items: each turn (Sainte-Laguë) takes its interest's best item left, unless an item of no
    interest scores higher; a free turn takes the best item left."""
    count = len(shares)
    queues = [np.flatnonzero(member[:, g]).tolist() for g in range(count)]  # positions in pool, best first
    outside = np.flatnonzero(~member.any(axis=1)).tolist()
    weight = [*shares.tolist(), free_share]
    taken = [0] * (count + 1)
    heads = [0] * count
    out_head = 0
    used: set[int] = set()
    picked: list[int] = []
    while len(picked) < min(places, len(pool)):
        for g in range(count):  # an item taken for another interest is gone from this one's queue
            while heads[g] < len(queues[g]) and queues[g][heads[g]] in used:
                heads[g] += 1
        left = [heads[g] < len(queues[g]) for g in range(count)]
        if not any(left):
            break
        turns = [weight[g] / (2 * taken[g] + 1) if left[g] else -1.0 for g in range(count)] + [weight[count] / (2 * taken[count] + 1) if free_share > 0 else -1.0]
        turn = max(range(count + 1), key=lambda g: (turns[g], -g))
        options = [queues[g][heads[g]] for g in range(count) if left[g]] if turn == count else [queues[turn][heads[turn]]]
        best = min(options)
        if out_head < len(outside) and outside[out_head] < best:
            best = outside[out_head]
            out_head += 1
        elif turn < count and best == queues[turn][heads[turn]]:
            taken[turn] += 1
        if turn == count:
            taken[count] += 1
        used.add(best)
        picked.append(int(pool[best]))
    rest = [int(pool[j]) for j in outside[out_head:] if j not in used]
    return picked + rest[: max(0, min(places, len(pool)) - len(picked))]


def _spread(scores: np.ndarray, mask: np.ndarray | None, shift: bool = True) -> np.ndarray:
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


def _prune(queries: sparse.csr_matrix, terms: int) -> sparse.csr_matrix:
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


class _Products:
    """Rows of `left @ right` (sparse, a few thousand columns) computed when first needed and
    kept dense: how alike each example paper and each of the day's candidates are is worked
    out once per run, and looked up for every reader's chosen items."""

    def __init__(self, left: sparse.csr_matrix, right: sparse.csr_matrix) -> None:
        self.left, self.right = left, right
        self.matrix = np.zeros((left.shape[0], right.shape[1]), np.float32)
        self.done = np.zeros(left.shape[0], dtype=bool)

    def rows(self, needed: np.ndarray) -> np.ndarray:
        """The whole matrix, with at least the rows `needed` filled in."""
        needed = np.unique(np.asarray(needed, np.int64))
        todo = needed[~self.done[needed]]
        if todo.size:
            self.matrix[todo] = (self.left[todo] @ self.right).toarray()
            self.done[todo] = True
        return self.matrix


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


# --- the ranker ----------------------------------------------------------------------------------


class Ranker:
    """Ranks candidates for many readers, a chunk of readers at a time (sparse matrix products,
    never a Python loop over papers)."""

    def __init__(
        self, model: TextModel, config: RankingConfig | None = None, examples: Examples | None = None, community: Community | None = None,
        chunk: int = 512, pool: Pool | None = None, phrase_embedder: PhraseEmbedder | None = None,
    ) -> None:
        self.model = model
        self.config = config or RankingConfig()
        self.examples = examples
        self.community = community
        self.chunk = chunk
        self.pool = pool
        #: Sentence embeddings of phrases; with candidates' embeddings, the semantic half of every score.
        self.phrase_embedder = phrase_embedder

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
        return self._score(readers, candidates, None).final

    def semantic(self, candidates: Candidates) -> bool:
        return self.phrase_embedder is not None and candidates.embeddings is not None

    def _likeness(self, candidates: Candidates) -> _Products:
        """Cosine (over words) of the example papers with today's candidates, kept for the run's candidates."""
        held = self.__dict__.get("_held")
        if held is None or held[0] is not candidates:
            self.__dict__["_held"] = held = (candidates, _Products(self.examples.words, candidates.vectors.T.tocsr()))
        return held[1]

    # --- the parts of a score --------------------------------------------------------------------

    def _queries(self, readers: Sequence[Reader], candidates: Candidates) -> "_Queries":
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
            interest_embedding = _unit_rows(np.asarray(weights @ phrase_embeddings))
        columns = [np.fromiter(mine, dtype=np.int64, count=len(mine)) for mine in own]
        shares = [np.fromiter(mine.values(), dtype=np.float64, count=len(mine)) for mine in own]
        return _Queries(interest, avoid, phrases, weights, phrase_embeddings, interest_embedding, columns, shares)

    def _expand(self, q: "_Queries", has_interests: np.ndarray) -> tuple[sparse.csr_matrix, np.ndarray | None]:
        """Pseudo-relevance feedback: each reader's interest query plus the centroid of the papers
        of the pool that best match each of their phrases (`prf_papers` per phrase, in words and,
        where there are embeddings, in meaning), each phrase counting by its weight. Per phrase,
        so that a reader's strongest interest does not take the expansion over from the others."""
        cfg = self.config
        words, meaning = self._feedback_centroids(q.phrases)
        share = normalize(q.weights, norm="l1")  # readers x phrases: each interest phrase by its weight
        expanded = normalize(_prune(normalize(q.interest) + cfg.prf_weight * normalize(share @ words), INTEREST_TERMS)).astype(np.float32).tocsr()
        dense = None
        if q.interest_embedding is not None and meaning is not None:
            dense = _unit_rows(q.interest_embedding + cfg.prf_semantic_weight * _unit_rows(np.asarray(share @ meaning)))
        return expanded, dense

    def _feedback_centroids(self, phrases: Sequence[str]) -> tuple[sparse.csr_matrix, np.ndarray | None]:
        """For each phrase, the centroid (words, and embeddings where there are) of the
        `prf_papers` papers of the pool that match it best: worked out once per phrase for all the
        readers this ranker serves (a run's subscribers share many phrases)."""
        cfg = self.config
        pool = self.pool
        cache = self.__dict__.setdefault("_prf_cache", {})
        todo = [p for p in dict.fromkeys(phrases) if p not in cache]
        m = min(cfg.prf_papers, len(pool))
        dense = self.phrase_embedder is not None and pool.embeddings is not None
        for start in range(0, len(todo), PRF_BATCH):
            part = todo[start : start + PRF_BATCH]
            match = (self.model.queries(self.model.counts(part)) @ pool.docs_t()).toarray()
            if dense:
                meaning = np.asarray(self.phrase_embedder(part), np.float32) @ pool.embeddings.T
                match = _spread(match, None, shift=False) + cfg.semantic_weight * _spread(meaning, None)
            top = np.argpartition(-match, m - 1, axis=1)[:, :m]
            rows, cols = [], []
            for j, (found, scores) in enumerate(zip(top, match)):
                found = found[scores[found] > 0]  # a paper sharing nothing with the phrase is no feedback
                rows.extend([j] * found.size)
                cols.extend(found.tolist())
            pick = normalize(sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(part), len(pool))), norm="l1")
            centroids = _prune(normalize(pick @ pool.vectors), INTEREST_TERMS)
            embedded = _unit_rows(np.asarray(pick @ pool.embeddings)) if dense else None
            for j, phrase in enumerate(part):
                cache[phrase] = (centroids[j], embedded[j] if embedded is not None else None)
        words = sparse.vstack([cache[p][0] for p in phrases]).tocsr() if phrases else sparse.csr_matrix((0, len(self.model.idf_)), dtype=np.float32)
        meaning = np.stack([cache[p][1] for p in phrases]) if dense and phrases else None
        return words, meaning

    def _history(self, readers: Sequence[Reader], candidates: Candidates) -> "_HistoryParts":
        """The learned models as queries: the examples' weights times their vectors (the dual
        form), plus the corpus centroid's weight times each candidate's typicality. Raw evidence
        (no learned model yet) counts as the centroid of the positives less `typicality` times
        the corpus centroid; papers turned down by a reader with no positives make a query of
        their own, subtracted by the evidence for it."""
        cfg = self.config
        examples = self.examples
        n = len(readers)
        empty = _HistoryParts(None, np.zeros(n, np.float32), None, None, np.zeros(n, np.float32), None)
        if examples is None or not any(r.history.papers for r in readers):
            return empty
        model_rows, model_cols, model_vals = [], [], []
        raw_rows, raw_cols = [], []
        like_rows, like_cols = [], []
        down_rows, down_cols = [], []
        background = np.zeros(n, np.float32)
        for i, reader in enumerate(readers):
            history = reader.history
            positives = [examples.row[p] for p in history.positive_papers if p in examples.row]
            like_rows += [i] * len(positives)
            like_cols += positives
            if history.learned:
                for paper, weight in zip(history.papers, history.weights):
                    row = examples.row.get(paper)
                    if row is not None:
                        model_rows.append(i), model_cols.append(row), model_vals.append(weight)
                background[i] = history.background
            elif positives:
                raw_rows += [i] * len(positives)
                raw_cols += positives
                background[i] = -cfg.typicality
            if not history.positives:
                downs = [examples.row[p] for p in history.down_papers if p in examples.row]
                down_rows += [i] * len(downs)
                down_cols += downs
        shape = (n, examples.vectors.shape[0])
        learned = sparse.csr_matrix((np.array(model_vals, np.float32), (model_rows, model_cols)), shape=shape)
        raw = sparse.csr_matrix((np.ones(len(raw_rows), np.float32), (raw_rows, raw_cols)), shape=shape)
        liked = sparse.csr_matrix((np.ones(len(like_rows), np.float32), (like_rows, like_cols)), shape=shape)
        down = sparse.csr_matrix((np.ones(len(down_rows), np.float32), (down_rows, down_cols)), shape=shape)
        # Raw evidence: the unit centroid of the positives (the background is scaled to a unit query).
        query = learned @ examples.vectors
        if raw.nnz:
            query = query + normalize(raw @ examples.vectors)
        query = _prune(query, MODEL_TERMS)
        weights = (learned + raw).tocsr()
        docs_t = candidates.docs_t()
        scores = (query @ docs_t).toarray()
        negative = (normalize(down @ examples.vectors) @ docs_t).toarray() if down.nnz else None
        down_mass = np.asarray(down.sum(axis=1)).ravel().astype(np.float32)
        likeness = normalize(_prune(liked @ examples.words, INTEREST_TERMS)).tocsr()  # the centroid of what was opened: for matches and reasons
        meaning = None
        if self.semantic(candidates) and examples.embeddings is not None:
            combined = np.asarray(weights @ examples.embeddings)
            centroid = self.pool.embedding_centroid if self.pool is not None else None
            if centroid is None:
                centroid = candidates.embeddings.mean(axis=0)
            has_model = np.diff(weights.indptr) > 0
            meaning = np.where(has_model[:, None], _unit_rows(combined) - cfg.semantic_typicality * centroid[None, :], 0).astype(np.float32)
        return _HistoryParts(scores, background, likeness, negative, down_mass, meaning)

    def _score(self, readers: Sequence[Reader], candidates: Candidates, allowed: Sequence[np.ndarray | None] | None) -> "_Scores":
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
        interest = _spread((interest_words @ docs_t).toarray(), mask, shift=False)
        if semantic and interest_meaning is not None:
            interest += cfg.semantic_weight * _spread(interest_meaning @ candidates.embeddings.T, mask)
        h = self._history(readers, candidates)
        history = np.zeros_like(interest)
        if h.scores is not None:
            history = _spread(h.scores + h.background[:, None] * candidates.typicality[None, :], mask)
            if h.meaning is not None:
                history += cfg.semantic_history_weight * _spread(h.meaning @ candidates.embeddings.T, mask)
        w = np.where(has_interests, evidence_weight(n, cfg), (n > 0).astype(np.float32))[:, None]
        content = w * history + (1 - w) * interest
        if h.negative is not None:
            # "Less like this" is said on purpose: one counts half at once (a click is weighed more slowly).
            strength = (cfg.negative_weight * h.negative_mass / (h.negative_mass + 1))[:, None]
            content -= strength * _spread(h.negative, mask, shift=False)
        best = np.maximum(np.where(mask, content, -np.inf).max(axis=1, initial=0.0) if mask is not None else content.max(axis=1, initial=0.0), 1e-9)[:, None]
        match = self._matches(q, candidates)
        if q.avoid.nnz:
            held = np.where(match.coverage >= cfg.min_match, match.coverage, 0)
            # A paper holding an avoided phrase loses the reader's best score (times `avoid_weight`).
            content -= cfg.avoid_weight * np.minimum((held @ q.avoid.T.toarray()).T, 1.0) * best
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
        return _Scores(q, content, final, votes, history, interest, w, followed, in_category, h, match, list(readers))

    def _matches(self, q: "_Queries", candidates: Candidates) -> "_Matches":
        """How much of each phrase each candidate contains (candidates x phrases), and, with
        embeddings, how close in meaning each is to each phrase."""
        weights = self.model.phrase_weights(q.phrases) if q.phrases else None
        covered = weights.coverage(candidates.present, candidates.near) if weights is not None else np.zeros((len(candidates), 0), np.float32)
        related = None
        if q.phrase_embeddings is not None:
            related = candidates.embeddings @ q.phrase_embeddings.T
        return _Matches(covered, related, weights)

    # --- choosing and explaining -----------------------------------------------------------------

    def _rank_chunk(self, readers, candidates, allowed, k, require_match, explain) -> list[list[Ranked]]:
        cfg = self.config
        s = self._score(readers, candidates, allowed)
        final = s.final
        results = []
        likeness = None
        similarity = candidates.similarity() if cfg.diversity > 0 else None
        if s.history_parts.likeness is not None and s.history_parts.likeness.nnz:
            likeness = (candidates.vectors @ s.history_parts.likeness.T).toarray()  # candidates x readers
        found = self._phrase_match(s.matches)  # candidates x the chunk's phrases
        said = self._said_about(readers, s) if cfg.interest_quota else None
        for i, reader in enumerate(readers):
            scores = final[i].copy()
            mask = np.ones(len(candidates), dtype=bool) if allowed[i] is None else allowed[i].copy()
            mine = s.queries.phrase_columns(i)
            phrase_match = found[:, mine]  # candidates x the reader's phrases
            if require_match:
                matched = phrase_match.any(axis=1) if mine.size else np.zeros(len(candidates), dtype=bool)
                if likeness is not None and reader.history.positives:
                    matched |= likeness[:, i] >= cfg.min_like
                if s.votes is not None:
                    matched |= s.votes[i] > 0
                if s.followed[i][0]:
                    matched[list(s.followed[i][0])] = True
                mask &= matched
            limit = k or reader.max_items
            order = top_k(scores, limit + 4 * min(limit, MMR_DEPTH), mask)
            groups, shares = self._interest_groups(i, order, s, mine, phrase_match, scores, said)
            # The stated weights share out the places until the subscriber says otherwise: what they
            # opened, liked or turned down frees a share of the places, which go by score.
            told = reader.history.positives + len(reader.history.down_papers)
            w = float(evidence_weight(np.float32(told), cfg))
            free = float(shares.sum()) * w / (1 - w) if shares is not None else 0.0
            picked = mmr(order, scores, candidates.vectors, limit, cfg.diversity, cfg.duplicate_similarity, similarity=similarity, groups=groups, shares=shares, free_share=free)
            results.append([Ranked(row, float(scores[row])) for row in picked])
        if explain:
            nearest = self._nearest_positives(readers, results, candidates)
            for i, (reader, ranked) in enumerate(zip(readers, results)):
                mine = s.queries.phrase_columns(i)
                for item in ranked:
                    item.reasons = self._reasons(i, item.index, reader, s, candidates, mine, likeness, nearest)
        return results

    def _phrase_match(self, matches: "_Matches") -> np.ndarray:
        """Which candidates truly match which phrases: they contain it (`min_match` of its
        weighed words and pairs), or (embeddings) are close to it in meaning (`min_related`)."""
        cfg = self.config
        found = matches.coverage >= cfg.min_match
        if matches.related is not None and cfg.min_related < 1:
            found |= matches.related >= cfg.min_related
        return found

    def _interest_groups(self, i: int, order: np.ndarray, s: "_Scores", mine: np.ndarray, phrase_match: np.ndarray, scores: np.ndarray, said):
        """For sharing the top places out over the interests: the interest each ranked item
        stands for (none for an item that truly matches none, or is not a good match: scoring
        below `quota_floor` of the reader's best times the interest's weight over the largest, or
        below `quota_interest_floor` of the interest's own best), and each interest's weight
        (times what the reader's feedback says of it)."""
        cfg = self.config
        if not cfg.interest_quota or mine.size < 2 or not len(order):
            return None, None
        weights = s.queries.shares[i]
        matched = phrase_match[order]
        strength = np.where(matched, s.matches.coverage[order][:, mine] + 1e-3, 0)
        if s.matches.related is not None:
            strength = np.maximum(strength, np.where(matched, s.matches.related[order][:, mine], 0))
        best = scores[order[0]]
        ranked = scores[order]
        matches = strength > 0
        if best > 0:  # a weak match holds no place (it competes by score): below a share of the reader's
            # best, that share scaled by the interest's weight (a lesser interest's papers score less) ...
            floor = cfg.quota_floor * best * weights / weights.max()
            strength[ranked[:, None] < floor[None, :]] = 0
            # ... or below a share of the interest's own best match, among the papers that match no
            # heavier interest (a paper of a heavier interest scores by that interest's weight)
            good = strength > 0
            heavier = weights[None, :] > weights[:, None]  # [g, h]: h weighs more than g
            alone = (good.astype(np.int32) @ heavier.T.astype(np.int32)) == 0  # items x interests
            own = np.where(good & alone, ranked[:, None], 0).max(axis=0)
            own = np.where(own > 0, own, np.where(good, ranked[:, None], 0).max(axis=0))
            strength[ranked[:, None] < cfg.quota_interest_floor * own[None, :]] = 0
        # An item that matches several interests stands for the one it matches best (ties: the
        # interest with fewer good matches), so that each interest has papers of its own.
        scarcity = 1e-6 / (1 + (strength > 0).sum(axis=0))
        chosen = np.argmax(strength + np.where(strength > 0, scarcity[None, :], 0), axis=1)
        member = np.zeros_like(strength, dtype=bool)
        has = strength.max(axis=1) > 0
        member[np.flatnonzero(has), chosen[has]] = True
        # A weak match of an interest heavier than another stays that interest's: competing by
        # score, the heavier weight alone would let it take the lighter interests' places.
        weak = ~has & matches.any(axis=1)
        if weak.any():
            strongest = np.argmax(np.where(matches, weights[None, :], 0), axis=1)  # its heaviest interest
            keep = weak & (weights[strongest] > weights.min())
            member[np.flatnonzero(keep), strongest[keep]] = True
        return member, weights * said[i] if said is not None and i in said else weights

    def _said_about(self, readers: Sequence[Reader], s: "_Scores") -> dict[int, np.ndarray]:
        """What each reader's feedback says of each of their interests: (1 + papers opened or
        liked that match it) / (1 + papers turned down that match it), a factor on its share;
        for the readers who said anything (one product for the chunk)."""
        examples = self.examples
        if examples is None or s.matches.phrase_weights is None:
            return {}
        wanted = {}
        for i, reader in enumerate(readers):
            if reader.history.papers and s.queries.phrase_columns(i).size >= 2:
                up = [examples.row[p] for p in reader.history.positive_papers if p in examples.row]
                down = [examples.row[p] for p in reader.history.down_papers if p in examples.row]
                if up or down:
                    wanted[i] = (up, down)
        if not wanted:
            return {}
        rows = np.unique(np.concatenate([np.array(up + down, dtype=np.int64) for up, down in wanted.values()]))
        present = examples.vectors[rows].copy()
        present.data[:] = 1
        matched = s.matches.phrase_weights.coverage(present) >= self.config.min_match  # example rows x the chunk's phrases
        at = {row: j for j, row in enumerate(rows.tolist())}
        factors = {}
        for i, (up, down) in wanted.items():
            mine = s.queries.phrase_columns(i)
            ups = matched[[at[r] for r in up]][:, mine].sum(axis=0) if up else 0
            downs = matched[[at[r] for r in down]][:, mine].sum(axis=0) if down else 0
            factors[i] = (1 + ups) / (1 + downs)
        return factors

    def _reasons(self, i: int, row: int, reader: Reader, s: "_Scores", candidates: Candidates, mine: np.ndarray, likeness, nearest: dict[tuple[int, int], int]) -> list[str]:
        cfg = self.config
        reasons = []
        if mine.size:
            covered = s.matches.coverage[row, mine]
            hits = [(covered[j], s.queries.phrases[c]) for j, c in enumerate(mine) if covered[j] >= cfg.min_match]
            hits.sort(key=lambda h: -h[0])
            if hits:
                reasons.append("matches " + ", ".join(p for _, p in hits[:3]))
            if s.matches.related is not None and cfg.min_related < 1:
                lexical = {p for _, p in hits}
                close = [(s.matches.related[row, c], s.queries.phrases[c]) for c in mine
                         if s.matches.related[row, c] >= cfg.min_related and s.queries.phrases[c] not in lexical]
                close.sort(key=lambda h: -h[0])
                if close:
                    reasons.append("close to " + ", ".join(f"“{p}”" for _, p in close[:2]))
        # Said whenever the paper is like one the reader opened (`min_like`): true, and it is what
        # the learned model, whatever its share of the score, reads.
        if reader.history.positives and self.examples is not None and likeness is not None and likeness[row, i] >= cfg.min_like:
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
        positives = [[examples.row[p] for p in r.history.positive_papers if p in examples.row] for r in readers]
        products = self._likeness(candidates)
        for start in range(0, len(readers), NEAREST_GROUP):
            group = range(start, min(start + NEAREST_GROUP, len(readers)))
            mine = [i for i in group if positives[i] and results[i]]
            if not mine:
                continue
            example_rows = np.unique(np.concatenate([positives[i] for i in mine]))
            item_rows = np.unique(np.concatenate([[item.index for item in results[i]] for i in mine]))
            sims = products.rows(example_rows)[np.ix_(example_rows, item_rows)].T
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
class _HistoryParts:
    scores: np.ndarray | None  # the learned models' scores of the candidates (readers x candidates), before the background
    background: np.ndarray  # the weight of the corpus centroid in each model
    likeness: sparse.csr_matrix | None  # the unit centroid of each reader's opened papers
    negative: np.ndarray | None  # likeness to the papers turned down, for readers with no positives (readers x candidates)
    negative_mass: np.ndarray
    meaning: np.ndarray | None  # the models in the embedding space


@dataclass
class _Matches:
    coverage: np.ndarray  # candidates x phrases: share of each phrase a paper contains
    related: np.ndarray | None  # candidates x phrases: cosine of embeddings, with the semantic extra
    phrase_weights: object = None  # the `textmodel.PhraseWeights` of the chunk's phrases


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
    history_parts: _HistoryParts
    matches: _Matches
    readers: list
