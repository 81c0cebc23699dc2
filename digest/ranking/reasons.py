"""Why each chosen item was chosen, naming only what it truly matched: the interest phrases it
contains (or is close to in meaning), the opened paper it is most like, readers like you, a
followed author or category."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..config import RankingConfig
from .papers import Candidates, Examples, ProductRows
from .readers import Ranked, Reader
from .scoring import Scores

#: A coverage this close to 1 is the phrase as written, or a variant holding all its words close together.
WHOLE = 0.9999


def reasons(
    config: RankingConfig, examples: Examples | None, i: int, row: int, reader: Reader, s: Scores, candidates: Candidates, mine: np.ndarray,
    likeness: np.ndarray | None, nearest: dict[tuple[int, int], int],
) -> list[str]:
    """What to say of candidate `row` chosen for reader `i` (`likeness`: candidates x readers,
    cosine with the centroid of what each opened; `nearest`: from `nearest_positives`)."""
    cfg = config
    reasons = []
    if mine.size:
        covered = s.matches.coverage[row, mine]
        weights = s.matches.phrase_weights  # made for the chunk's phrases, so there whenever `mine` is not empty
        # The phrase whole (coverage 1) is held together; a part of it is looked at pair by pair.
        hits = sorted(
            ((share, s.queries.phrases[c], share >= WHOLE or weights.held_together(c, candidates.present, candidates.near, row))
             for share, c in zip(covered.tolist(), mine.tolist()) if share >= cfg.min_match),
            key=lambda h: -h[0],
        )
        whole = [p for _, p, held in hits if held]
        close: list[str] = []
        if s.matches.related is not None and cfg.min_related < 1:
            near = sorted(((s.matches.related[row, c], s.queries.phrases[c]) for c in mine if s.matches.related[row, c] >= cfg.min_related), key=lambda h: -h[0])
            close = [p for _, p in near if p not in whole]
        # A phrase's words all there but scattered count as a match (a close variant may read so),
        # but the reason says what the paper has, not that it is about the phrase.
        scattered = [p for _, p, held in hits if not held and p not in close]
        if whole:
            reasons.append("matches " + ", ".join(whole[:3]))
        if scattered and len(whole) < 3:
            reasons.append("has the words of " + ", ".join(f"“{p}”" for p in scattered[: 3 - len(whole)]))
        if close:
            reasons.append("close to " + ", ".join(f"“{p}”" for p in close[:2]))
    # Said whenever the paper is like one the reader opened (`min_like`): true, and it is what
    # the learned model, whatever its share of the score, reads.
    if reader.history.positives and examples is not None and likeness is not None and likeness[row, i] >= cfg.min_like:
        paper = nearest.get((i, row))
        if paper is not None:
            title = examples.titles[paper]
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


def nearest_positives(examples: Examples | None, likeness: ProductRows | None, opened: Sequence[np.ndarray], results: list[list[Ranked]]) -> dict[tuple[int, int], int]:
    """{(reader, candidate row): the paper the reader opened that is most like it}, for every
    chosen item of readers with opened papers (`opened`: their rows among the examples,
    `HistoryParts.opened`): looked up in `likeness` (the example papers' cosine with the
    candidates, kept for the run)."""
    nearest: dict[tuple[int, int], int] = {}
    if examples is None or likeness is None:
        return nearest
    mine = [i for i in range(len(opened)) if opened[i].size and results[i]]
    if not mine:
        return nearest
    sims = likeness.rows(np.concatenate([opened[i] for i in mine]))  # example papers x candidates
    for i in mine:
        items = [item.index for item in results[i]]
        best = sims[np.ix_(opened[i], items)].argmax(axis=0)
        for item, j in zip(items, best.tolist()):
            nearest[(i, item)] = examples.paper_ids[opened[i][j]]
    return nearest
