"""Ranking: interests pull their topic up, with reasons; avoid, authors and categories count."""

from __future__ import annotations

import numpy as np

from digest.config import RankingConfig
from digest.ranking import Candidate, InterestScorer, Interests, TextModel, paper_text, top_k

# Eight short invented papers over three topics.
PAPERS = [
    ("Speculative decoding with draft trees", "A small draft model proposes tokens that a large language model verifies.", ["Ann Lee"], ["cs.CL"]),
    ("Faster speculative decoding for language models", "Self-drafting heads speed up decoding of large language models.", ["Bo Chen"], ["cs.CL"]),
    ("A survey of speculative decoding", "We survey speculative decoding methods for language model inference.", ["Cy Diaz"], ["cs.CL"]),
    ("Quadruped locomotion from proprioception", "A legged robot learns to walk on sand with reinforcement learning.", ["Di Eve"], ["cs.RO"]),
    ("Sim-to-real transfer for robot grasping", "Domain randomization lets a grasping policy trained in simulation work on a real robot.", ["Ed Fox"], ["cs.RO"]),
    ("Surface code decoders under correlated noise", "Matching decoders for quantum error correction with correlated errors.", ["Flo Gu"], ["quant-ph"]),
    ("Neural decoders for color codes", "Quantum error correction with neural network decoders trained on syndromes.", ["Ann Lee"], ["quant-ph"]),
    ("Variational eigensolvers on trapped ions", "A variational quantum algorithm estimates ground-state energies.", ["Gil Ho"], ["quant-ph"]),
]


def setup() -> tuple[InterestScorer, object, list[Candidate]]:
    texts = [paper_text(t, a) for t, a, _, _ in PAPERS]
    model = TextModel().fit(texts)  # a small corpus: every term kept
    matrix = model.transform(texts)
    candidates = [Candidate(authors, cats) for _, _, authors, cats in PAPERS]
    return InterestScorer(model, RankingConfig()), matrix, candidates


def titles(ranked) -> list[str]:  # noqa: ANN001
    return [PAPERS[r.index][0] for r in ranked]


def test_an_interest_ranks_its_topic_first_and_says_so() -> None:
    scorer, matrix, candidates = setup()
    ranked = scorer.rank(Interests((("quantum error correction", 1.0),)), matrix, candidates, k=5)
    assert set(titles(ranked)[:2]) == {"Surface code decoders under correlated noise", "Neural decoders for color codes"}
    assert all("matches quantum error correction" in r.reason for r in ranked[:2])
    assert ranked[0].score >= ranked[1].score


def test_weights_decide_between_two_interests() -> None:
    scorer, matrix, candidates = setup()
    robots_first = scorer.rank(Interests((("legged locomotion", 3.0), ("speculative decoding", 1.0))), matrix, candidates, k=8)
    assert titles(robots_first)[0] == "Quadruped locomotion from proprioception"
    decoding_first = scorer.rank(Interests((("legged locomotion", 1.0), ("speculative decoding", 3.0))), matrix, candidates, k=8)
    assert "speculative decoding" in titles(decoding_first)[0].lower()


def test_stemming_lets_singular_meet_plural() -> None:
    scorer, matrix, candidates = setup()
    ranked = scorer.rank(Interests((("language model", 1.0),)), matrix, candidates, k=3)
    assert {"Faster speculative decoding for language models"} <= set(titles(ranked))


def test_avoid_pushes_a_paper_down() -> None:
    scorer, matrix, candidates = setup()
    plain = titles(scorer.rank(Interests((("speculative decoding", 1.0),)), matrix, candidates, k=3))
    avoiding = titles(scorer.rank(Interests((("speculative decoding", 1.0),), avoid=("survey",)), matrix, candidates, k=3))
    assert plain.index("A survey of speculative decoding") < 2
    assert avoiding[-1] == "A survey of speculative decoding" or "A survey of speculative decoding" not in avoiding


def test_a_followed_author_and_category_push_up_with_a_reason() -> None:
    scorer, matrix, candidates = setup()
    base = Interests((("speculative decoding", 1.0),))
    followed = Interests((("speculative decoding", 1.0),), authors=("ann lee",))
    plain = scorer.rank(base, matrix, candidates, k=8)
    boosted = scorer.rank(followed, matrix, candidates, k=8)
    # Ann Lee's quantum paper matches no interest, yet enters because she is followed.
    assert "Neural decoders for color codes" not in titles(plain)
    assert "Neural decoders for color codes" in titles(boosted)
    assert any("by Ann Lee (followed)" in r.reason for r in boosted)
    by_initial = scorer.rank(Interests((("speculative decoding", 1.0),), authors=("A. Lee",)), matrix, candidates, k=8)
    assert "Neural decoders for color codes" in titles(by_initial)
    in_category = scorer.rank(Interests((("quantum error correction", 1.0),), categories=("quant-ph",)), matrix, candidates, k=8)
    assert all("in quant-ph" in r.reason for r in in_category)
    scores = {titles([r])[0]: r.score for r in in_category}
    plain_scores = {titles([r])[0]: r.score for r in scorer.rank(Interests((("quantum error correction", 1.0),)), matrix, candidates, k=8)}
    assert all(scores[t] > plain_scores[t] for t in plain_scores)


def test_nothing_matches_gives_nothing_and_fewer_matches_give_fewer() -> None:
    scorer, matrix, candidates = setup()
    assert scorer.rank(Interests((("protein folding", 1.0),)), matrix, candidates, k=5) == []
    few = scorer.rank(Interests((("sim-to-real transfer", 1.0),)), matrix, candidates, k=5)
    assert titles(few) == ["Sim-to-real transfer for robot grasping"]


def test_top_k_is_best_first_with_ties_by_position() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.2], dtype=np.float32)
    assert top_k(scores, 3).tolist() == [1, 3, 2]
    assert top_k(scores, 10).tolist() == [1, 3, 2, 4, 0]
    assert top_k(scores, 2, scores < 0.6).tolist() == [2, 4]
