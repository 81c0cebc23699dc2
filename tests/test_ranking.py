"""Ranking: interests pull their topic up with reasons; feedback, avoid, authors, categories,
readers like you and diversity each do what they say; batches rank as single readers do."""

from __future__ import annotations

import numpy as np

from digest.config import RankingConfig
from digest.ranking.community import Community
from digest.ranking.diversity import mmr, top_k
from digest.ranking.papers import Candidates, Examples
from digest.ranking.ranker import Ranker
from digest.ranking.readers import History, Interests, Reader
from digest.textmodel import TextModel, paper_text

# Short invented papers over three topics; ids 100+ are older papers readers opened.
PAPERS = [
    (1, "Speculative decoding with draft trees", "A small draft model proposes tokens that a large language model verifies.", ["Ann Lee"], ["cs.CL"]),
    (2, "Faster speculative decoding for language models", "Self-drafting heads speed up decoding of large language models.", ["Bo Chen"], ["cs.CL"]),
    (3, "A survey of speculative decoding", "We survey speculative decoding methods for language model inference.", ["Cy Diaz"], ["cs.CL"]),
    (4, "Quadruped locomotion from proprioception", "A legged robot learns to walk on sand with reinforcement learning.", ["Di Eve"], ["cs.RO"]),
    (5, "Sim-to-real transfer for robot grasping", "Domain randomization lets a grasping policy trained in simulation work on a real robot.", ["Ed Fox"], ["cs.RO"]),
    (6, "Surface code decoders under correlated noise", "Matching decoders for quantum error correction with correlated errors.", ["Flo Gu"], ["quant-ph"]),
    (7, "Neural decoders for color codes", "Quantum error correction with neural network decoders trained on syndromes.", ["Ann Lee"], ["quant-ph"]),
    (8, "Variational eigensolvers on trapped ions", "A variational quantum algorithm estimates ground-state energies on trapped ions.", ["Gil Ho"], ["quant-ph"]),
    (9, "Legged robots that climb stairs", "Reinforcement learning teaches a legged robot to climb stairs from camera images.", ["Hal Ives"], ["cs.RO"]),
]
OPENED = [
    (101, "Walking robots on rough ground", "A legged robot walks on rough terrain with a learned locomotion policy.", ["Ivy Jo"], ["cs.RO"]),
    (102, "Robot locomotion over gravel", "Reinforcement learning for legged locomotion of a quadruped robot on gravel.", ["Ivy Jo"], ["cs.RO"]),
]


def build(community: dict[int, list[int]] | None = None, **config) -> tuple[Ranker, Candidates]:
    everything = PAPERS + OPENED
    model = TextModel()
    counts = model.fit_counts([paper_text(t, a, au) for _, t, a, au, _ in everything])
    n = len(PAPERS)
    candidates = Candidates.build(model, [p[0] for p in PAPERS], counts[:n], [p[3] for p in PAPERS], [p[4] for p in PAPERS],
                                  texts=[paper_text(t, a, au) for _, t, a, au, _ in PAPERS])
    examples = Examples.build(model, [(p[0], p[1]) for p in everything], counts)
    return Ranker(model, RankingConfig(**config), examples, Community(community or {})), candidates


def reader(*phrases: tuple[str, float], history: History | None = None, key: int = 1, **kw) -> Reader:
    return Reader(key, Interests(tuple(phrases), **kw), history or History(), max_items=5)


def titles(ranked) -> list[str]:
    return [PAPERS[r.index][1] for r in ranked]


def rank(ranker: Ranker, candidates: Candidates, one: Reader, **kw) -> list:
    return ranker.rank([one], candidates, **kw)[0]


def test_an_interest_ranks_its_topic_first_and_says_so() -> None:
    ranker, candidates = build(diversity=0)
    ranked = rank(ranker, candidates, reader(("quantum error correction", 1.0)))
    assert set(titles(ranked)[:2]) == {"Surface code decoders under correlated noise", "Neural decoders for color codes"}
    assert all("matches quantum error correction" in r.reason for r in ranked[:2])
    assert ranked[0].score >= ranked[1].score


def test_weights_decide_between_two_interests() -> None:
    ranker, candidates = build(diversity=0)
    robots = rank(ranker, candidates, reader(("legged locomotion", 3.0), ("speculative decoding", 1.0)), k=9)
    assert titles(robots)[0] == "Quadruped locomotion from proprioception"
    decoding = rank(ranker, candidates, reader(("legged locomotion", 1.0), ("speculative decoding", 3.0)), k=9)
    assert "speculative decoding" in titles(decoding)[0].lower()


def test_a_partial_phrase_is_not_a_match_and_stemming_meets_plurals() -> None:
    ranker, candidates = build()
    matched = titles(rank(ranker, candidates, reader(("speculative decoding", 1.0)), k=9))
    # The quantum "decoders" share one stemmed word with "speculative decoding": not a match.
    assert "Neural decoders for color codes" not in matched and len(matched) == 3
    assert "Faster speculative decoding for language models" in titles(rank(ranker, candidates, reader(("language model", 1.0))))


def test_avoid_pushes_a_paper_down() -> None:
    ranker, candidates = build(diversity=0)
    plain = titles(rank(ranker, candidates, reader(("speculative decoding", 1.0))))
    avoiding = titles(rank(ranker, candidates, reader(("speculative decoding", 1.0), avoid=("survey",))))
    assert plain.index("A survey of speculative decoding") < 2
    assert avoiding[-1] == "A survey of speculative decoding"


def test_a_followed_author_and_category_push_up_with_a_reason() -> None:
    ranker, candidates = build(diversity=0)
    plain = rank(ranker, candidates, reader(("speculative decoding", 1.0)), k=9)
    followed = rank(ranker, candidates, reader(("speculative decoding", 1.0), authors=("ann lee",)), k=9)
    # Ann Lee's quantum paper matches no interest, yet comes because she is followed.
    assert "Neural decoders for color codes" not in titles(plain)
    assert "Neural decoders for color codes" in titles(followed)
    assert any("by Ann Lee (followed)" in r.reason for r in followed)
    assert "Neural decoders for color codes" in titles(rank(ranker, candidates, reader(("speculative decoding", 1.0), authors=("A. Lee",)), k=9))
    boosted = rank(ranker, candidates, reader(("quantum error correction", 1.0), categories=("quant-ph",)), k=9)
    assert all("in quant-ph" in r.reason for r in boosted)
    base = {titles([r])[0]: r.score for r in rank(ranker, candidates, reader(("quantum error correction", 1.0)), k=9)}
    assert all(r.score > base[titles([r])[0]] for r in boosted)


def test_nothing_matches_gives_nothing_and_fewer_matches_give_fewer() -> None:
    ranker, candidates = build()
    assert rank(ranker, candidates, reader(("protein folding", 1.0))) == []
    assert titles(rank(ranker, candidates, reader(("sim-to-real transfer", 1.0)))) == ["Sim-to-real transfer for robot grasping"]
    everything = rank(ranker, candidates, reader(("protein folding", 1.0)), k=9, require_match=False)
    assert len(everything) == 9  # evaluation ranks all candidates; only the email needs matches


def test_opened_papers_lift_their_topic_as_evidence_grows_with_a_reason() -> None:
    ranker, candidates = build(diversity=0)
    stated = ("speculative decoding", 1.0)
    alone = ranker.scores([reader(stated)], candidates)[0]
    fresh = ranker.scores([reader(stated, history=History())], candidates)[0]
    assert np.array_equal(alone, fresh)  # no evidence: the interests alone
    robots = [3, 8]  # rows of the two legged-robot papers
    one = ranker.scores([reader(stated, history=History.of([101]))], candidates)[0]
    two = ranker.scores([reader(stated, history=History.of([101, 102]))], candidates)[0]
    assert (one[robots] > alone[robots]).all() and (two[robots] > one[robots]).all()
    ranked = rank(ranker, candidates, reader(stated, history=History.of([101, 102])), k=9)
    robot = next(r for r in ranked if r.index in robots)
    assert "you opened" in robot.reason and ("Walking robots" in robot.reason or "Robot locomotion" in robot.reason)


def test_a_thumbs_down_pushes_its_topic_down() -> None:
    ranker, candidates = build(diversity=0)
    liked = ("reinforcement learning", 1.0)
    before = ranker.scores([reader(liked)], candidates)[0]
    down = History(papers=(4,), weights=(-1.0,), positives=0)  # "less like this" on the quadruped paper
    after = ranker.scores([reader(liked, history=down)], candidates)[0]
    drop = before - after
    assert drop[3] > drop[8] > drop[4] > 0  # that paper most, the other legged robot next, then grasping
    assert np.allclose(drop[[0, 1, 2, 5, 6, 7]], 0)  # decoding and quantum papers do not move


def test_readers_like_you_reorder_and_brand_new_papers_keep_their_score() -> None:
    # Readers 2 and 3 opened what reader 1 opened, and the robot grasping paper (id 5).
    community = {1: [101, 102], 2: [101, 102, 5], 3: [101, 5]}
    ranker, candidates = build(community=community, diversity=0)
    me = reader(("reinforcement learning", 1.0), history=History.of([101, 102]), key=1)
    with_votes = ranker.scores([me], candidates)[0]
    ranker_alone, _ = build(diversity=0)
    without = ranker_alone.scores([me], candidates)[0]
    assert with_votes[4] > without[4]  # the paper similar readers opened rises
    others = [i for i in range(len(PAPERS)) if i != 4]
    assert np.allclose(with_votes[others], without[others])  # nobody opened these: content only
    ranked = rank(ranker, candidates, me, k=9)
    assert any("opened by readers like you" in r.reason for r in ranked if r.index == 4)


def test_near_duplicates_do_not_fill_the_top_but_a_topic_may() -> None:
    model = TextModel()
    papers = [
        ("Speculative decoding with draft trees", "A small draft model proposes tokens that a large model verifies in parallel."),
        ("Speculative decoding with draft trees, revisited", "A small draft model proposes tokens that a large model verifies in parallel, faster."),
        ("Speculative decoding with early exits", "Early exit heads draft tokens for speculative decoding inside the target model."),
        ("A survey of speculative decoding", "Methods for speculative decoding of language models, compared on one benchmark."),
    ]
    counts = model.fit_counts([paper_text(t, a) for t, a in papers])
    candidates = Candidates.build(model, [1, 2, 3, 4], counts, [[]] * 4, [[]] * 4)
    similar = (candidates.vectors @ candidates.vectors.T).toarray()
    assert similar[0, 1] > 0.6 > max(similar[0, 2], similar[0, 3])  # one near-duplicate pair
    me = Reader(1, Interests((("speculative decoding draft trees", 1.0),)), max_items=3)
    # (ranked whether or not they hold the whole phrase: this is about the order)
    plain = Ranker(model, RankingConfig(diversity=0)).rank([me], candidates, k=3, require_match=False)[0]
    assert [r.index for r in plain[:2]] == [0, 1]
    diverse = Ranker(model, RankingConfig()).rank([me], candidates, k=4, require_match=False)[0]
    assert diverse[0].index == 0 and diverse[1].index != 1 and 1 in [r.index for r in diverse]  # the twin waits


def test_a_batch_ranks_each_reader_as_alone() -> None:
    ranker, candidates = build(community={1: [101], 2: [101, 5]})
    readers = [
        reader(("quantum error correction", 1.0), key=7),
        reader(("reinforcement learning", 2.0), ("speculative decoding", 1.0), history=History.of([101]), key=1, authors=("Ann Lee",)),
        reader(("language model", 1.0), avoid=("survey",), key=2, categories=("cs.CL",)),
    ]
    allowed = [None, np.arange(len(PAPERS)) % 2 == 0, None]
    together = ranker.rank(readers, candidates, allowed)
    ranker.chunk = 1
    apart = ranker.rank(readers, candidates, allowed)
    assert [[(r.index, round(r.score, 6), r.reason) for r in rs] for rs in together] == [[(r.index, round(r.score, 6), r.reason) for r in rs] for rs in apart]
    assert all(r.index % 2 == 0 for r in together[1])  # only the allowed rows


def test_every_kind_of_history_ranks_in_a_batch_as_alone() -> None:
    """The examples of a chunk's readers are looked up together (`Examples.rows_of`): a learned
    model, raw clicks, a thumbs down alone, and papers that are not examples (id 999) each rank
    as their reader would alone; a learned model's paper that is not an example adds nothing."""
    ranker, candidates = build(community={1: [101], 2: [101, 5]})
    learned = History(papers=(101, 999, 102, 6), weights=(0.8, 0.6, 0.5, -0.4), positives=3, background=-0.3, learned=True)
    readers = [
        reader(("quantum error correction", 1.0), history=learned, key=1),
        reader(("reinforcement learning", 1.0), history=History.of([999]), key=2),  # clicks on no known paper
        reader(("speculative decoding", 1.0), history=History(papers=(4, 999), weights=(-1.0, -1.0), positives=0), key=3),
        reader(("language model", 1.0), history=History.of([102, 999]), key=4),
    ]
    together = ranker.rank(readers, candidates)
    ranker.chunk = 1
    apart = ranker.rank(readers, candidates)
    assert [[(r.index, r.reason) for r in rs] for rs in together] == [[(r.index, r.reason) for r in rs] for rs in apart]
    # The same within float32 rounding (a learned model's query is summed in another order in a batch).
    assert np.allclose([r.score for rs in together for r in rs], [r.score for rs in apart for r in rs], rtol=1e-5)
    without = History(papers=(101, 102, 6), weights=(0.8, 0.5, -0.4), positives=3, background=-0.3, learned=True)
    assert np.array_equal(ranker.scores([readers[0]], candidates), ranker.scores([reader(("quantum error correction", 1.0), history=without)], candidates))
    examples = ranker.examples
    assert examples.rows_of(np.array([102, 999, 1, 101, -5])).tolist() == [examples.row[102], -1, examples.row[1], examples.row[101], -1]


def test_top_k_is_best_first_with_ties_by_position() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.2], dtype=np.float32)
    assert top_k(scores, 3).tolist() == [1, 3, 2]
    assert top_k(scores, 10).tolist() == [1, 3, 2, 4, 0]
    assert top_k(scores, 2, scores < 0.6).tolist() == [2, 4]


def test_sharing_out_without_near_duplicates_is_the_full_loop() -> None:
    """`mmr` skips its per-place loop when nothing is to be pushed apart: the result is the one
    the loop gives (a constant penalty, as with duplicate=-1 and no likeness, changes no order)."""
    rng = np.random.default_rng(0)
    for _ in range(500):
        n, interests = int(rng.integers(2, 60)), int(rng.integers(2, 5))
        scores = np.sort(rng.random(n))[::-1] + np.arange(n)[::-1] * 1e-9
        order = np.arange(n)
        groups = rng.random((n, interests)) < 0.35  # an item may match several interests, or none
        shares = rng.choice([1.0, 1.5, 2.0], size=interests)
        free = float(rng.choice([0.0, 0.3, 2.0]))
        k = int(rng.integers(1, 25))
        unlike = np.zeros((n, n), np.float32)
        fast = mmr(order, scores, None, k, 0.5, 0.6, similarity=unlike, groups=groups, shares=shares, free_share=free)
        loop = mmr(order, scores, None, k, 0.5, -1.0, similarity=unlike, groups=groups, shares=shares, free_share=free)
        assert fast == loop
