"""A reader's top places: the best-scored candidates (`top_k`), then near-duplicates pushed apart
and the places shared out over the interests (`mmr`)."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ..matrices import dense_product

#: How many places at the top are diversified and shared out (a digest holds at most 50; its top is what is read).
MMR_DEPTH = 20


def top_k(scores: np.ndarray, k: int, eligible: np.ndarray | None = None) -> np.ndarray:
    """Indices of the `k` highest scores (among `eligible`), best first, ties by index."""
    rows = np.flatnonzero(eligible) if eligible is not None else np.arange(scores.shape[0])
    if rows.size > k:
        rows = rows[np.argpartition(-scores[rows], k - 1)[:k]]
    return rows[np.lexsort((rows, -scores[rows]))]


def mmr(
    order: np.ndarray, scores: np.ndarray, vectors: sparse.csr_matrix, k: int, diversity: float, duplicate: float = 0.6, depth: int = MMR_DEPTH,
    similarity: np.ndarray | None = None, groups: np.ndarray | None = None, shares: np.ndarray | None = None, free_share: float = 0.0,
    twins: dict[int, set[int]] | None = None,
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
    on all likeness cost 8% nDCG@10 on real text). `twins` (`Candidates.twins`): where given, a
    list with no near-duplicate pair in it is known to have none without comparing its items."""
    shared = groups is not None and shares is not None and len(shares) > 1
    if (diversity <= 0 and not shared) or len(order) <= 1:
        return [int(i) for i in order[:k]]
    places = min(k, depth)
    pool = order[: places * 5]
    relevance = scores[pool].astype(np.float64)
    top = relevance.max()
    relevance = relevance / top if top > 0 else relevance
    if diversity > 0 and twins is not None:
        rows = set(pool.tolist())
        maybe = any(not twins[row].isdisjoint(rows) for row in rows if row in twins)
    else:
        maybe = diversity > 0
    if maybe:
        similar = similarity[np.ix_(pool, pool)] if similarity is not None else dense_product(vectors[pool], vectors[pool].T)
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
    weight = shares.tolist()
    free_taken = 0
    taken = [0] * count
    heads = [0] * count
    out_head = 0
    used: set[int] = set()
    picked: list[int] = []
    while len(picked) < min(places, len(pool)):
        # The interest furthest below its share among those with items left (ties: the first);
        # an item taken for another interest is gone from this one's queue.
        turn, value, left = count, -np.inf, []
        for g in range(count):
            queue, head = queues[g], heads[g]
            while head < len(queue) and queue[head] in used:
                head += 1
            heads[g] = head
            if head < len(queue):
                left.append(queue[head])
                mine = weight[g] / (2 * taken[g] + 1)
                if mine > value:
                    turn, value = g, mine
        if not left:
            break
        if free_share > 0 and free_share / (2 * free_taken + 1) > value:
            turn = count  # a free turn: the best item left of any interest
        best = min(left) if turn == count else queues[turn][heads[turn]]
        if out_head < len(outside) and outside[out_head] < best:
            best = outside[out_head]
            out_head += 1
        elif turn < count:
            taken[turn] += 1
        if turn == count:
            free_taken += 1
        used.add(best)
        picked.append(int(pool[best]))
    rest = [int(pool[j]) for j in outside[out_head:] if j not in used]
    return picked + rest[: max(0, min(places, len(pool)) - len(picked))]
