"""The `Ranker`: each reader's best candidates, a chunk of readers at a time: scored together
(`scoring`), cut to good matches, shared out over the interests (`quotas`), diversified
(`diversity`) and explained (`reasons`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..config import RankingConfig
from ..matrices import dense_product
from ..textmodel import TextModel
from .community import Community
from .diversity import MMR_DEPTH, mmr, top_k
from .papers import Candidates, Examples, Pool, ProductRows
from .quotas import interest_groups, said_about
from .readers import Ranked, Reader
from .reasons import nearest_positives, reasons
from .scoring import Matches, PhraseEmbedder, Scorer, Scores, evidence_weight


class Ranker:
    """Ranks candidates for many readers, a chunk of readers at a time (matrix products, never a
    Python loop over papers; what is done per reader is done on their top few dozen)."""

    def __init__(
        self, model: TextModel, config: RankingConfig | None = None, examples: Examples | None = None, community: Community | None = None,
        chunk: int = 512, pool: Pool | None = None, phrase_embedder: PhraseEmbedder | None = None,
    ) -> None:
        self.scorer = Scorer(model, config or RankingConfig(), examples, community, pool, phrase_embedder)
        self.chunk = chunk
        self._likeness: tuple[Candidates, ProductRows] | None = None

    @property
    def config(self) -> RankingConfig:
        return self.scorer.config

    @property
    def examples(self) -> Examples | None:
        return self.scorer.examples

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

    def prepare(self, candidates: Candidates) -> None:
        """Work out what ranking every reader shares (the candidates' BM25 rows transposed, their
        likeness to each other and near-duplicates): done by the process that plans a run, before
        its worker processes fork, so that they share it instead of each making its own."""
        candidates.docs_t()
        if self.config.diversity > 0:
            candidates.twins(self.config.duplicate_similarity)

    def scores(self, readers: Sequence[Reader], candidates: Candidates) -> np.ndarray:
        """The final score of every candidate for every reader (readers x candidates)."""
        return self.scorer.score(readers, candidates, None).final

    def semantic(self, candidates: Candidates) -> bool:
        return self.scorer.semantic(candidates)

    def example_likeness(self, candidates: Candidates) -> ProductRows | None:
        """Cosine (over words) of the example papers with the candidates, kept for the run's candidates."""
        if self.examples is None:
            return None
        if self._likeness is None or self._likeness[0] is not candidates:
            self._likeness = (candidates, ProductRows(self.examples.words, candidates.vectors.T.tocsr()))
        return self._likeness[1]

    def _rank_chunk(self, readers, candidates, allowed, k, require_match, explain) -> list[list[Ranked]]:
        cfg = self.config
        s = self.scorer.score(readers, candidates, allowed)
        final = s.final
        results = []
        likeness = None
        similarity = candidates.similarity() if cfg.diversity > 0 else None
        twins = candidates.twins(cfg.duplicate_similarity) if cfg.diversity > 0 else None
        if s.history_parts.likeness is not None and s.history_parts.likeness.nnz:
            likeness = dense_product(candidates.vectors, s.history_parts.likeness.T)  # candidates x readers
        found = self._phrase_match(s.matches)  # candidates x the chunk's phrases
        said = said_about(cfg, self.examples, readers, s) if cfg.interest_quota else None
        eligible = self._eligible(readers, candidates, allowed, s, found, likeness) if require_match else self._allowed(readers, candidates, allowed)
        limits = np.array([k or reader.max_items for reader in readers])
        for i, reader in enumerate(readers):
            scores = final[i]
            mine = s.queries.phrase_columns(i)
            phrase_match = found[:, mine]  # candidates x the reader's phrases
            limit = int(limits[i])
            order = top_k(scores, limit + 4 * min(limit, MMR_DEPTH), eligible[i])
            groups, shares = interest_groups(cfg, i, order, s, mine, phrase_match, scores, said)
            # The stated weights share out the places until the subscriber says otherwise: what they
            # opened, liked or turned down frees a share of the places, which go by score.
            told = reader.history.positives + len(reader.history.down_papers)
            w = float(evidence_weight(np.float32(told), cfg))
            free = float(shares.sum()) * w / (1 - w) if shares is not None else 0.0
            picked = mmr(order, scores, candidates.vectors, limit, cfg.diversity, cfg.duplicate_similarity,
                         similarity=similarity, groups=groups, shares=shares, free_share=free, twins=twins)
            results.append([Ranked(row, float(scores[row])) for row in picked])
        if explain:
            nearest = nearest_positives(self.examples, self.example_likeness(candidates), s.history_parts.opened, results)
            for i, (reader, ranked) in enumerate(zip(readers, results)):
                mine = s.queries.phrase_columns(i)
                for item in ranked:
                    item.reasons = reasons(cfg, self.examples, i, item.index, reader, s, candidates, mine, likeness, nearest)
        return results

    @staticmethod
    def _allowed(readers: Sequence[Reader], candidates: Candidates, allowed) -> np.ndarray:
        """readers x candidates: the rows each reader may be sent."""
        eligible = np.ones((len(readers), len(candidates)), dtype=bool)
        for i, rows in enumerate(allowed):
            if rows is not None:
                eligible[i] &= rows
        return eligible

    def _eligible(self, readers: Sequence[Reader], candidates: Candidates, allowed, s: Scores, found: np.ndarray, likeness: np.ndarray | None) -> np.ndarray:
        """readers x candidates: the allowed rows that are good matches for each reader: they
        contain one of the reader's phrases (or are close to it), are like what the reader opened,
        were opened by readers like them, or are by an author they follow. For the whole chunk at
        once (which reader holds which phrase is one product)."""
        holds = np.zeros((found.shape[1], len(readers)), dtype=np.float32)  # phrases x readers
        for i in range(len(readers)):
            holds[s.queries.phrase_columns(i), i] = 1
        matched = (found.astype(np.float32) @ holds).T > 0
        if likeness is not None:
            opened = np.array([reader.history.positives > 0 for reader in readers])
            matched |= (likeness.T >= self.config.min_like) & opened[:, None]
        if s.votes is not None:
            matched |= s.votes > 0
        for i, (rows, _) in enumerate(s.followed):
            if rows:
                matched[i, list(rows)] = True
        return self._allowed(readers, candidates, allowed) & matched

    def _phrase_match(self, matches: Matches) -> np.ndarray:
        """Which candidates truly match which phrases: they contain it (`min_match` of its
        weighed words and pairs), or (embeddings) are close to it in meaning (`min_related`)."""
        cfg = self.config
        found = matches.coverage >= cfg.min_match
        if matches.related is not None and cfg.min_related < 1:
            found |= matches.related >= cfg.min_related
        return found
