"""The papers the ranking reads, as matrices made once for every reader: the day's
`Candidates`, the recent `Pool` that pseudo-relevance feedback draws on, and the `Examples`
(the papers of subscribers' histories)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from ..matrices import dense_product
from ..textmodel import TextModel

#: Up to this many candidates their likeness to each other is held as one dense matrix (100 MB at 5,000).
DENSE_SIMILARITY_LIMIT = 5000


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
        ids = np.fromiter(self.row, dtype=np.int64, count=len(self.row))
        order = np.argsort(ids, kind="stable")
        self._sorted_ids, self._sorted_rows = ids[order], np.fromiter(self.row.values(), dtype=np.int64, count=len(self.row))[order]

    def rows_of(self, papers: np.ndarray) -> np.ndarray:
        """The row of each paper id of `papers`, -1 for a paper that is not an example: the
        papers of a whole chunk of readers looked up in one call (at 10,000 subscribers with
        stored models, half a million dictionary lookups a run otherwise)."""
        papers = np.asarray(papers, np.int64)
        if not len(self._sorted_ids):
            return np.full(papers.shape, -1, np.int64)
        at = np.minimum(np.searchsorted(self._sorted_ids, papers), len(self._sorted_ids) - 1)
        return np.where(self._sorted_ids[at] == papers, self._sorted_rows[at], -1)

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
    _twins: dict[float, dict[int, set[int]]] = field(default_factory=dict, repr=False)
    _in_categories: dict[frozenset, frozenset[int]] = field(default_factory=dict, repr=False)
    _category_rows: dict[frozenset, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls, model: TextModel, ids: Sequence[int], counts: sparse.csr_matrix, authors: Sequence[Sequence[str]], categories: Sequence[Sequence[str]],
        embeddings: np.ndarray | None = None, texts: Sequence[str] | None = None, phrases: Iterable[str] | None = None,
        tokens: Sequence[Sequence[str]] | None = None,
    ) -> "Candidates":
        """`texts` (or the same `tokens`, tokenized): where given, a phrase's words count as
        together when close (`TextModel.near`; `phrases`, the readers' interests and avoids, limit
        the work to their words), else only as written."""
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
        near = model.near(texts, phrases, tokens) if texts is not None or tokens is not None else None
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
            self._similarity = dense_product(self.vectors, self.vectors.T).astype(np.float32)
        return self._similarity

    def twins(self, duplicate: float) -> dict[int, set[int]]:
        """{row: the other rows more alike than `duplicate` (cosine)}, for the few candidates
        that have such a near-duplicate: MMR looks here first, and only a reader whose top holds
        a pair of them needs its likeness matrix (computed once per threshold for all readers)."""
        held = self._twins.get(duplicate)
        if held is None:
            dense = self.similarity()
            if dense is not None:
                rows, cols = np.nonzero(dense > duplicate)
            else:
                close = (self.vectors @ self.vectors.T).tocoo()
                rows, cols = close.row[close.data > duplicate], close.col[close.data > duplicate]
            held = {}
            for row, col in zip(rows.tolist(), cols.tolist()):
                if row != col:
                    held.setdefault(row, set()).add(col)
            self._twins[duplicate] = held
        return held

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

    def by_categories(self, followed: Iterable[str]) -> frozenset[int]:
        """The rows in any of the `followed` categories (kept per set of categories: readers share them)."""
        key = frozenset(followed)
        rows = self._in_categories.get(key)
        if rows is None:
            rows = self._in_categories[key] = frozenset().union(*(self.category_index.get(cat, ()) for cat in key))
        return rows

    def category_rows(self, followed: Iterable[str]) -> np.ndarray:
        """`by_categories` as an array of rows, for indexing."""
        key = frozenset(followed)
        rows = self._category_rows.get(key)
        if rows is None:
            rows = self._category_rows[key] = np.fromiter(sorted(self.by_categories(key)), dtype=np.int64)
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


class ProductRows:
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
            self.matrix[todo] = dense_product(self.left[todo], self.right)
            self.done[todo] = True
        return self.matrix
