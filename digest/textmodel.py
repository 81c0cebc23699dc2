"""The text model: the words and word pairs papers are compared by.

A paper is counted once as Snowball-stemmed words (English stop words and numbers dropped) and as
adjacent pairs of those words ("language model", "kv cach"). Words keep a vocabulary; pairs are
hashed into a fixed number of buckets, so that the pair vocabulary of a large corpus (millions of
pairs) never has to be held, and only buckets met in at least `min_df` papers are kept as
features. The words and pairs of the subscribers' phrases are always kept (`keep`): an interest
must not vanish because the corpus has met it only once, or not yet.

Pairs do two things: they make a paper that has the phrase "speculative decoding" more alike a
query that asks for it than one that has both words apart (the pair block weighs `pair_weight` of
its idf), and they tell whether a paper contains a multi-word interest as a phrase
(`TextModel.phrase_weights`, used by the ranking to decide what matches).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import snowballstemmer
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer, HashingVectorizer
from sklearn.preprocessing import normalize

from .matrices import dense_product

_TOKEN = re.compile(r"(?u)\b\w\w+\b")

#: Below this many papers, `TextModel` keeps words and pairs met only once.
SMALL_CORPUS = 200
#: Terms of the corpus centroid kept (the typical paper).
CENTROID_TERMS = 1000
#: Two words of a phrase are "together" in a paper when at most this many words apart (stop words
#: not counted): "language models of proteins" holds "protein language model", "protein-ligand
#: data ... large language models" does not.
NEAR = 3


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


#: The one column of a model fitted on papers without a word that counts: no token is ever this.
NO_WORD = "\x00"


def paper_text(title: str, abstract: str, authors: Iterable[str] = ()) -> str:
    """The text a paper is known by: title, abstract and authors (shared authors are shared taste)."""
    return f"{title}. {abstract} {' '.join(authors)}"


def _tokens(tokens: list[str]) -> list[str]:
    return tokens


#: A paper's tokens as ingest stores them (`Paper.terms`): this mark, then the tokens separated by
#: spaces. A change of `StemmingTokenizer` (its pattern, stop words or stemmer) must change the
#: mark, so that tokens stored by the old one are worked out again rather than read.
TOKENS_MARK = "t1 "
_TOKENIZER = StemmingTokenizer()


def stored_tokens(title: str, abstract: str, authors: Iterable[str] = ()) -> str:
    """The paper's tokens (of `paper_text`) as ingest stores them: a daily run and the nightly
    retrain fit their text model on the recent corpus every time, and tokenizing it was most of
    that fit (about 1 s for 6,400 papers; a token never holds a space, so they split back as they were)."""
    return TOKENS_MARK + " ".join(_TOKENIZER(paper_text(title, abstract, authors)))


def paper_tokens(stored: str | None, title: str, abstract: str, authors: Iterable[str] = (), tokenizer: StemmingTokenizer | None = None) -> list[str]:
    """A paper's tokens: read from what ingest stored (`stored_tokens`) where it was stored by
    this tokenizer, else worked out now (a paper stored before, or by another tokenizer)."""
    if stored is not None and stored.startswith(TOKENS_MARK):
        # Interned, as the tokenizer's cache shares them: a corpus holds each word many times
        # (6,400 papers split apart without it: 50 MB more at the peak of a run).
        return list(map(sys.intern, stored[len(TOKENS_MARK) :].split()))
    return (tokenizer or _TOKENIZER)(paper_text(title, abstract, authors))


def word_pairs(tokens: Sequence[str]) -> list[str]:
    """Adjacent pairs of a token list: stop words are gone already, so "mixture of experts" gives "mixtur expert"."""
    return [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


def near_pairs(tokens: Sequence[str], wanted: set[str] | frozenset[str] | None = None) -> list[str]:
    """The unordered pairs ("a|b", a < b) of `wanted` words (None: any) at most `NEAR` words apart in `tokens`."""
    spots = [(n, t) for n, t in enumerate(tokens) if wanted is None or t in wanted]
    found = set()
    for i, (n, a) in enumerate(spots):
        for m, b in spots[i + 1 :]:
            if m - n > NEAR:
                break
            if a != b:
                found.add(f"{a}|{b}" if a < b else f"{b}|{a}")
    return list(found)


class TextModel(TransformerMixin, BaseEstimator):
    """Term statistics of a corpus over words and word pairs: `transform` gives unit TF-IDF
    vectors (sublinear term frequency), `bm25` the vectors candidates are scored as."""

    def __init__(self, min_df: int = 2, k1: float = 1.2, b: float = 0.75, pair_weight: float = 1.0, pair_buckets: int = 2**20) -> None:
        self.min_df = min_df
        self.k1 = k1
        self.b = b
        self.pair_weight = pair_weight
        self.pair_buckets = pair_buckets

    # --- fitting ---------------------------------------------------------------------------------

    def fit(self, texts: Iterable[str], y: object = None, keep: Iterable[str] = ()) -> "TextModel":
        self.fit_counts(texts, keep=keep)
        return self

    def fit_counts(self, texts: Iterable[str], keep: Iterable[str] = ()) -> sparse.csr_matrix:
        """Fit on `texts` and return their counts (the corpus is tokenized once)."""
        tokenizer = StemmingTokenizer()
        return self.fit_tokens([tokenizer(t) for t in texts], keep, tokenizer)

    def fit_papers(self, papers: Iterable, keep: Iterable[str] = ()) -> tuple[sparse.csr_matrix, list[list[str]]]:
        """Fit on papers (with `terms`, `title`, `abstract` and `authors`, as `models.Paper`): the
        words ingest stored of each where it did (`paper_tokens`), else tokenized now by the
        model's own tokenizer. Their counts, and their tokens (for `near`)."""
        tokenizer = StemmingTokenizer()
        tokens = [paper_tokens(p.terms, p.title, p.abstract, p.authors, tokenizer) for p in papers]
        return self.fit_tokens(tokens, keep, tokenizer), tokens

    def fit_tokens(self, docs: Sequence[list[str]], keep: Iterable[str] = (), tokenizer: StemmingTokenizer | None = None) -> sparse.csr_matrix:
        """Fit on texts already tokenized by `StemmingTokenizer` (`paper_tokens`) and return their
        counts; `keep`: phrases (as written) whose words and pairs stay columns however rare."""
        self.tokenizer_ = tokenizer or StemmingTokenizer()
        keep_docs = [self.tokenizer_(p) for p in keep]
        counter = CountVectorizer(analyzer=_tokens, dtype=np.float32)
        if any(docs):
            words = counter.fit_transform(docs).tocsc()
            terms, position = counter.get_feature_names_out(), counter.vocabulary_
        else:  # no paper has a word that counts (none, or only "A"): a model where nothing matches,
            # kept in shape by one column that no text can fill
            words, terms, position = sparse.csc_matrix((len(docs), 1), dtype=np.float32), np.array([NO_WORD], dtype=object), {NO_WORD: 0}
        min_df = self.min_df if len(docs) >= SMALL_CORPUS else 1
        chosen = np.flatnonzero(np.diff(words.indptr) >= min_df) if any(docs) else np.array([0])
        wanted = {t for tokens in keep_docs for t in tokens}
        chosen = np.union1d(chosen, np.array([position[t] for t in wanted if t in position], dtype=np.int64)).astype(np.int64)
        unseen = sorted(t for t in wanted if t not in position)
        vocabulary = [*terms[chosen].tolist(), *unseen]
        self.vocabulary_ = {t: i for i, t in enumerate(vocabulary)}
        self.n_words_ = len(vocabulary)

        pairs = self._pair_counts(docs).tocsc()
        buckets = np.flatnonzero(np.diff(pairs.indptr) >= min_df)
        wanted_buckets = self._pair_counts(keep_docs).indices if keep_docs else np.zeros(0, np.int64)
        buckets = np.union1d(buckets, wanted_buckets).astype(np.int64)
        self.pair_column_ = np.full(self.pair_buckets, -1, dtype=np.int64)
        self.pair_column_[buckets] = self.n_words_ + np.arange(buckets.size)
        self.n_features_ = self.n_words_ + buckets.size

        kept = sparse.hstack([
            words[:, chosen], sparse.csc_matrix((len(docs), len(unseen)), dtype=np.float32), pairs[:, buckets],
        ], format="csr", dtype=np.float32)
        n = kept.shape[0]
        df = np.bincount(kept.indices, minlength=self.n_features_)
        self.idf_ = (np.log((1 + n) / (1 + df)) + 1).astype(np.float32)
        self.idf_[self.n_words_ :] *= self.pair_weight
        lengths = np.asarray(kept.sum(axis=1)).ravel()
        self.avg_length_ = float(lengths.mean()) if n and lengths.mean() > 0 else 1.0
        #: The mean unit vector of the corpus, on its `CENTROID_TERMS` heaviest terms (about 90% of its
        #: weight; the rest would make it a dense vector for every model to carry): what a typical
        #: paper looks like (see `typicality`).
        centroid = np.asarray(self.queries(kept).mean(axis=0)).ravel().astype(np.float32) if n else np.zeros(self.n_features_, np.float32)
        if centroid.size > CENTROID_TERMS:
            centroid[np.argpartition(-centroid, CENTROID_TERMS)[CENTROID_TERMS:]] = 0
        self.centroid_ = centroid
        return kept

    def _pair_counts(self, docs: Sequence[list[str]]) -> sparse.csr_matrix:
        hasher = HashingVectorizer(analyzer=word_pairs, n_features=self.pair_buckets, alternate_sign=False, norm=None, dtype=np.float32)
        return hasher.transform(docs).tocsr() if len(docs) else sparse.csr_matrix((0, self.pair_buckets), dtype=np.float32)

    # --- transforming ----------------------------------------------------------------------------

    def counts(self, texts: Iterable[str]) -> sparse.csr_matrix:
        """Counts of words and kept pairs of `texts` in this model's columns."""
        docs = [self.tokenizer_(t) for t in texts]
        if not docs:
            return sparse.csr_matrix((0, self.n_features_), dtype=np.float32)
        words = self._word_counter().transform(docs)
        coo = self._pair_counts(docs).tocoo()
        column = self.pair_column_[coo.col]
        found = column >= 0
        pairs = sparse.csr_matrix((coo.data[found], (coo.row[found], column[found] - self.n_words_)), shape=(len(docs), self.n_features_ - self.n_words_), dtype=np.float32)
        return sparse.hstack([words, pairs], format="csr", dtype=np.float32)

    def _word_counter(self) -> CountVectorizer:
        """The counter of this model's words, made once per fit: a CountVectorizer given a
        vocabulary checks all of it on its first `transform` (2 ms at 50,000 words, for each
        chunk of readers ranked when made anew)."""
        counter = getattr(self, "_counter", None)
        if counter is None or counter.vocabulary is not self.vocabulary_:
            counter = self._counter = CountVectorizer(analyzer=_tokens, vocabulary=self.vocabulary_, dtype=np.float32)
        return counter

    def queries(self, counts: sparse.csr_matrix) -> sparse.csr_matrix:
        """Unit TF-IDF rows, term frequency 1 + ln(count)."""
        if counts.shape[0] == 0:
            return sparse.csr_matrix(counts.shape, dtype=np.float32)
        logged = counts.astype(np.float32, copy=True)
        logged.data = 1 + np.log(np.maximum(logged.data, 1e-12))
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

    def near(self, texts: Iterable[str] | None, phrases: Iterable[str] | None = None, tokens: Iterable[Sequence[str]] | None = None) -> sparse.csr_matrix:
        """Which pairs of the `phrases`' words (None: of any words; slower) each text holds close
        together (`NEAR`), hashed into `pair_buckets` columns (1 where present): how
        `PhraseWeights.coverage` tells a phrase, or a close variant of it, from its words
        scattered over an abstract. `tokens`: the texts already tokenized, instead of `texts`."""
        wanted = None if phrases is None else frozenset(w for phrase in phrases for w in self.tokenizer_(phrase))
        if tokens is None:
            tokens = (self.tokenizer_(text) for text in texts)
        docs = [near_pairs(doc, wanted) for doc in tokens]
        hasher = HashingVectorizer(analyzer=_tokens, n_features=self.pair_buckets, alternate_sign=False, norm=None, binary=True, dtype=np.float32)
        return hasher.transform(docs).tocsr() if docs else sparse.csr_matrix((0, self.pair_buckets), dtype=np.float32)

    def _near_buckets(self, pairs: Sequence[str]) -> np.ndarray:
        hasher = HashingVectorizer(analyzer=_tokens, n_features=self.pair_buckets, alternate_sign=False, norm=None, dtype=np.float32)
        hashed = hasher.transform([[p] for p in pairs]).tocsr()
        return hashed.indices[hashed.indptr[:-1]]

    def word_part(self, rows: sparse.csr_matrix) -> sparse.csr_matrix:
        """Unit rows over the words alone: the likeness of two papers (pairs are rarely shared and
        would only dilute it; they serve queries and phrases)."""
        words = rows[:, : self.n_words_]
        return normalize(words).astype(np.float32).tocsr() if words.shape[0] else sparse.csr_matrix(words.shape, dtype=np.float32)

    def typicality(self, docs: sparse.csr_matrix) -> np.ndarray:
        """How alike each row is to the typical paper of the corpus (the centroid): a learned model
        leans away from it, since what every paper says tells nobody's taste."""
        return np.asarray(docs @ self.centroid_).ravel().astype(np.float32)

    # --- phrases ---------------------------------------------------------------------------------

    def phrase_weights(self, phrases: Sequence[str]) -> "PhraseWeights":
        """What it takes for a paper to contain each phrase (see `PhraseWeights`). Words the
        model does not know weigh as the rarest and are never found."""
        top_idf = float(np.log(1 + max(len(getattr(self, "idf_", [])), 1)) + 1)
        tokens_of = [list(dict.fromkeys(self.tokenizer_(phrase))) for phrase in phrases]
        pairs = sorted({pair for tokens in tokens_of for pair in word_pairs(tokens)})
        pair_column = dict(zip(pairs, self._pair_columns(pairs)))
        word_entries: tuple[list, list, list] = ([], [], [])
        pair_entries: tuple[list, list, list] = ([], [], [])
        near_entries: tuple[list, list, list] = ([], [], [])
        unordered = sorted({"|".join(sorted(pair.split(" "))) for tokens in tokens_of for pair in word_pairs(tokens)})
        near_bucket = dict(zip(unordered, self._near_buckets(unordered))) if unordered else {}
        word_totals = np.zeros(len(phrases), np.float32)
        pair_totals = np.zeros(len(phrases), np.float32)
        pairs_of: list[list[tuple[int, int, int, int]]] = []
        for j, tokens in enumerate(tokens_of):
            pairs_of.append([])
            weight = {}
            for token in tokens:
                column = self.vocabulary_.get(token)
                weight[token] = float(self.idf_[column]) if column is not None else top_idf
                word_totals[j] += weight[token]
                if column is not None:
                    for target, value in zip(word_entries, (column, j, weight[token])):
                        target.append(value)
            for pair in word_pairs(tokens):
                a, b = pair.split(" ")
                value = weight[a] + weight[b]
                pair_totals[j] += value
                if pair_column[pair] >= 0:
                    for target, item in zip(pair_entries, (pair_column[pair], j, value)):
                        target.append(item)
                bucket = int(near_bucket["|".join(sorted((a, b)))])
                for target, item in zip(near_entries, (bucket, j, value)):
                    target.append(item)
                pairs_of[j].append((self.vocabulary_.get(a, -1), self.vocabulary_.get(b, -1), bucket, int(pair_column[pair])))
        shape = (self.n_features_, len(phrases))

        def matrix(entries: tuple[list, list, list], rows_: int = shape[0]) -> sparse.csr_matrix:
            rows, cols, vals = entries
            return sparse.csr_matrix((np.array(vals, np.float32), (rows, cols)), shape=(rows_, len(phrases)))

        return PhraseWeights(matrix(word_entries), word_totals, matrix(pair_entries), pair_totals, tokens_of, matrix(near_entries, self.pair_buckets), pairs_of)

    def _pair_columns(self, pairs: Sequence[str]) -> np.ndarray:
        """The column of each pair ("a b"), or -1 where it is not a feature."""
        if not pairs:
            return np.zeros(0, np.int64)
        hashed = self._pair_counts([pair.split(" ") for pair in pairs]).tocsr()
        buckets = hashed.indices[hashed.indptr[:-1]]  # one pair per row
        return self.pair_column_[buckets]


#: The share of a phrase's coverage that its words' closeness makes (the rest: its words).
PAIR_SHARE = 0.2


@dataclass
class PhraseWeights:
    """What it takes for a paper to contain each of a list of phrases.

    A phrase's words weigh their idf; `coverage` is mostly (1 - `PAIR_SHARE`) the share of that
    weight a paper holds (a rare word alone: well under 1), and `PAIR_SHARE` the share of the
    phrase's consecutive word pairs (each weighing its two words' idf) that it holds close together
    (`NEAR`, in either order; without `near`, adjacent as written). So the phrase as written, or a
    close variant ("language models of proteins"), scores 1; all its words but scattered, 0.8; a
    long phrase missing one common word, a little under; missing its distinctive word, much less.
    (PAIR_SHARE 0.5 made scattered words 0.5, which kept "protein-ligand ... large language
    models" from matching "protein language model", but also "legged robots ... quadruped
    locomotion" from "legged locomotion": it left subscribers of the sample feed without mail.)"""

    words: sparse.csr_matrix  # features x phrases
    word_totals: np.ndarray
    pairs: sparse.csr_matrix  # features x phrases (adjacent pairs, in the text model's columns)
    pair_totals: np.ndarray
    tokens: list[list[str]]
    near: sparse.csr_matrix | None = None  # near-pair buckets x phrases (`TextModel.near`)
    #: Each phrase's consecutive word pairs: (column of one word, of the other (-1: unknown), near-pair bucket, pair column (-1: none)).
    pairs_of: list[list[tuple[int, int, int, int]]] = field(default_factory=list)

    def held_together(self, phrase: int, present: sparse.csr_matrix, near: sparse.csr_matrix | None, row: int) -> bool:
        """Whether paper `row` holds the words of `phrase` that it has close together: each pair
        of the phrase's consecutive words that the paper has both of is within `NEAR` words of
        each other (adjacent, without `near`). What a reason may call a match: "large language
        models ... protein-ligand data" has all the words of "protein language model", and holds
        "language model", but not "protein" with "language"; "language models of proteins" holds
        both pairs. A phrase of one word: True."""
        pairs = self.pairs_of[phrase] if phrase < len(self.pairs_of) else []
        if not pairs:
            return True
        words = set(present.indices[present.indptr[row] : present.indptr[row + 1]].tolist())
        close = set(near.indices[near.indptr[row] : near.indptr[row + 1]].tolist()) if near is not None else words
        both = [(bucket if near is not None else column) for a, b, bucket, column in pairs if a in words and b in words]
        return bool(both) and all(key in close for key in both)

    def coverage(self, present: sparse.csr_matrix, near: sparse.csr_matrix | None = None) -> np.ndarray:
        """How much of each phrase each paper contains (papers x phrases, 0..1); `present` is 1
        where a paper has a word or adjacent pair, `near` (optional) where it has two of the
        phrases' words close together."""
        if self.words.shape[1] == 0:
            return np.zeros((present.shape[0], 0), np.float32)
        words = dense_product(present, self.words) / np.maximum(self.word_totals, 1e-9)[None, :]
        held = dense_product(near, self.near) if near is not None and self.near is not None else dense_product(present, self.pairs)
        pairs = held / np.maximum(self.pair_totals, 1e-9)[None, :]
        has_pairs = self.pair_totals > 0
        return np.where(has_pairs[None, :], (1 - PAIR_SHARE) * words + PAIR_SHARE * pairs, words).astype(np.float32)
