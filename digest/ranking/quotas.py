"""Sharing a reader's top places out over their interests: which interest each ranked item stands
for (`interest_groups`) and what the reader's feedback says of each interest (`said_about`); the
places themselves are dealt by `diversity.mmr`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..config import RankingConfig
from .papers import Examples
from .readers import Reader
from .scoring import Scores


def interest_groups(config: RankingConfig, i: int, order: np.ndarray, s: Scores, mine: np.ndarray, phrase_match: np.ndarray, scores: np.ndarray, said):
    """For sharing the top places out over the interests: the interest each ranked item
    stands for (none for an item that truly matches none, or is not a good match: scoring
    below `quota_floor` of the reader's best times the interest's weight over the largest, or
    below `quota_interest_floor` of the interest's own best), and each interest's weight
    (times what the reader's feedback says of it)."""
    cfg = config
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


def said_about(config: RankingConfig, examples: Examples | None, readers: Sequence[Reader], s: Scores) -> dict[int, np.ndarray]:
    """What each reader's feedback says of each of their interests: (1 + papers opened or
    liked that match it) / (1 + papers turned down that match it), a factor on its share;
    for the readers who said anything (one product for the chunk)."""
    if examples is None or s.matches.phrase_weights is None:
        return {}
    wanted = {}
    for i, reader in enumerate(readers):
        if reader.history.papers and s.queries.phrase_columns(i).size >= 2:
            up = s.history_parts.opened[i].tolist()  # looked up with the learned models
            down = [examples.row[p] for p in reader.history.down_papers if p in examples.row]
            if up or down:
                wanted[i] = (up, down)
    if not wanted:
        return {}
    rows = np.unique(np.concatenate([np.array(up + down, dtype=np.int64) for up, down in wanted.values()]))
    present = examples.vectors[rows].copy()
    present.data[:] = 1
    matched = s.matches.phrase_weights.coverage(present) >= config.min_match  # example rows x the chunk's phrases
    at = {row: j for j, row in enumerate(rows.tolist())}
    factors = {}
    for i, (up, down) in wanted.items():
        mine = s.queries.phrase_columns(i)
        ups = matched[[at[r] for r in up]][:, mine].sum(axis=0) if up else 0
        downs = matched[[at[r] for r in down]][:, mine].sum(axis=0) if down else 0
        factors[i] = (1 + ups) / (1 + downs)
    return factors
