"""Interests that mean what they say: a multi-word interest matches through the phrase or all its
words, never through its rarest word alone; the top of the email covers the interests in
proportion to their weights; a reason names only what truly matched. The papers are invented
here (titles and abstracts written for these tests)."""

from __future__ import annotations

import numpy as np
import pytest

from digest.config import RankingConfig
from digest.ranking.papers import Candidates
from digest.ranking.ranker import Ranker
from digest.ranking.readers import Interests, Reader
from digest.textmodel import TextModel, paper_text

# (title, abstract): every paper is invented for these tests.
PAPERS = {
    "vla": ("Vision-Language-Action Models for Dexterous Robot Manipulation",
            "We train a vision-language-action model that maps camera images and instructions to robot actions."),
    "vla-policy": ("Scaling Vision-Language-Action (VLA) Policies with Web Data",
                   "Vision-language-action policies are pretrained on web images and fine-tuned on robot demonstrations."),
    "skeleton": ("Skeleton-Based Action Recognition with Graph Convolutions",
                 "Human action recognition from skeleton joints using spatial temporal graph convolution networks."),
    "vlm": ("A Vision-Language Model for Chart Understanding",
            "We present a vision-language model that reads charts and answers questions about them."),
    "squirrel": ("Locomotion of Tree Squirrels on Narrow Branches",
                 "Field recordings show how squirrels adapt locomotion and balance on thin branches."),
    "legged": ("Learning Legged Locomotion over Rough Terrain",
               "A quadruped robot learns legged locomotion with reinforcement learning and a terrain curriculum."),
    "coding": ("Large Language Models for Decoding Error-Correcting Codes",
               "We prompt a large language model to decode linear block codes and compare it with belief propagation."),
    "plm": ("Protein Language Models Predict Mutation Effects",
            "A protein language model trained on evolutionary sequences predicts the effects of mutations."),
    "plm-apart": ("Language Models Learn the Grammar of Proteins",
                  "Transformer language models trained on protein sequences capture structure and function."),
    "weather": ("Ensemble Weather Forecasting with Graph Networks",
                "Graph neural networks produce calibrated ensemble forecasts of precipitation and wind."),
    # "model" is as common as in real abstracts: it tells little, and weighs little.
    **{f"filler-{n}": (f"A {topic} model", f"We propose a model of {topic} and evaluate the model on benchmarks.")
       for n, topic in enumerate(["traffic", "sea ice", "epidemic", "market", "soil carbon", "crowd"])},
}
KEYS = list(PAPERS)


@pytest.fixture(scope="module")
def world() -> tuple[TextModel, Candidates]:
    texts = [paper_text(t, a) for t, a in PAPERS.values()]
    model = TextModel()
    counts = model.fit_counts(texts, keep=["vision-language-action model", "legged locomotion", "protein language model"])
    return model, Candidates.build(model, list(range(len(texts))), counts, [[]] * len(texts), [[]] * len(texts), texts=texts)


def covered(model: TextModel, candidates: Candidates, phrase: str) -> dict[str, float]:
    return dict(zip(KEYS, model.phrase_weights([phrase]).coverage(candidates.present, candidates.near)[:, 0].round(3)))


def test_coverage_is_the_phrase_not_its_rarest_word(world) -> None:
    model, candidates = world
    vla = covered(model, candidates, "vision-language-action model")
    assert vla["vla"] == pytest.approx(1.0)  # the phrase as written
    assert vla["vla-policy"] >= 0.75  # all but its most common word, the rest in a row
    assert vla["skeleton"] < 0.4  # "action" alone
    assert vla["vlm"] < 0.75  # a vision-language model is not a vision-language-action model
    protein = covered(model, candidates, "protein language model")
    assert protein["plm"] == pytest.approx(1.0)
    assert protein["plm-apart"] >= 0.75  # a close variant: "language models ... on protein sequences"
    assert protein["coding"] < 0.75  # "language model" without the protein
    legged = covered(model, candidates, "legged locomotion")
    assert legged["legged"] == pytest.approx(1.0) and legged["squirrel"] < 0.75


@pytest.mark.parametrize(("phrase", "matching"), [
    ("vision-language-action model", {"vla", "vla-policy"}),
    ("legged locomotion", {"legged"}),
    ("protein language model", {"plm", "plm-apart"}),
])
def test_an_email_holds_only_true_matches_and_says_which(world, phrase: str, matching: set[str]) -> None:
    model, candidates = world
    ranked = Ranker(model, RankingConfig()).rank([Reader(1, Interests(((phrase, 1.0),)), max_items=10)], candidates)[0]
    assert {KEYS[r.index] for r in ranked} == matching
    assert all(r.reason == f"matches {phrase}" for r in ranked)


def test_a_reason_names_only_the_interests_the_paper_matches(world) -> None:
    model, candidates = world
    me = Reader(1, Interests((("legged locomotion", 1.0), ("protein language model", 1.0), ("vision-language-action model", 1.0))), max_items=10)
    ranked = Ranker(model, RankingConfig()).rank([me], candidates)[0]
    by_key = {KEYS[r.index]: r.reason for r in ranked}
    assert set(by_key) == {"vla", "vla-policy", "legged", "plm", "plm-apart"}
    assert by_key["legged"] == "matches legged locomotion"
    assert by_key["plm"] == "matches protein language model"
    assert by_key["vla"] == "matches vision-language-action model"


def quota_world(n_kv: int = 10, n_spec: int = 6) -> tuple[TextModel, Candidates, list[str]]:
    """Many papers all about KV caches, and fewer that only touch on speculative decoding: by score
    alone, the KV cache papers come first."""
    filler = "The serving system batches requests and reports latency and throughput."
    papers = [("kv", f"KV cache compression, method {n}", f"KV cache eviction and KV cache quantization shrink the KV cache, variant {n}.") for n in range(n_kv)]
    papers += [("spec", f"Speculative decoding in a serving system, study {n}", f"We try speculative decoding. {filler}") for n in range(n_spec)]
    papers += [("other", title, abstract) for title, abstract in [
        ("Decoding speech from brain signals", "Neural decoding of speech with implanted electrodes."),
        ("Speculative execution attacks on processors", "Side channels through speculative execution in CPUs."),
        ("Graph networks for weather", "Ensemble forecasts of precipitation."),
    ]]
    model = TextModel()
    texts = [paper_text(t, a) for _, t, a in papers]
    counts = model.fit_counts(texts, keep=["speculative decoding", "KV cache"])
    candidates = Candidates.build(model, list(range(len(papers))), counts, [[]] * len(papers), [[]] * len(papers), texts=texts)
    return model, candidates, [kind for kind, _, _ in papers]


def test_the_top_covers_the_interests_in_proportion_to_their_weights() -> None:
    model, candidates, kinds = quota_world()
    me = Reader(1, Interests((("speculative decoding", 1.0), ("KV cache", 2.0))), max_items=9)
    by_score = Ranker(model, RankingConfig(interest_quota=False, diversity=0)).rank([me], candidates)[0]
    assert [kinds[r.index] for r in by_score[:6]] == ["kv"] * 6  # left to the scores, one interest fills the top
    shared = Ranker(model, RankingConfig()).rank([me], candidates)[0]
    top = [kinds[r.index] for r in shared[:6]]
    assert top.count("kv") == 4 and top.count("spec") == 2, top  # 2 : 1, as weighted
    assert [kinds[r.index] for r in shared].count("spec") == 3  # its share of 9
    assert all(r.reason == ("matches speculative decoding" if kinds[r.index] == "spec" else "matches KV cache") for r in shared)


def test_an_interest_without_good_matches_leaves_its_places_to_the_others() -> None:
    model, candidates, kinds = quota_world(n_spec=1)
    me = Reader(1, Interests((("speculative decoding", 5.0), ("KV cache", 1.0))), max_items=6)
    shared = Ranker(model, RankingConfig()).rank([me], candidates)[0]
    assert [kinds[r.index] for r in shared] == ["spec"] + ["kv"] * 5


def test_phrase_columns_are_the_same_however_phrases_are_batched(world) -> None:
    model, candidates = world
    phrases = ["legged locomotion", "protein language model", "kv cache", "vision-language-action model"]
    together = model.phrase_weights(phrases).coverage(candidates.present, candidates.near)
    apart = np.hstack([model.phrase_weights([p]).coverage(candidates.present, candidates.near) for p in phrases])
    limited = Candidates.build(model, list(range(len(PAPERS))), candidates.present, [[]] * len(PAPERS), [[]] * len(PAPERS),
                               texts=[paper_text(t, a) for t, a in PAPERS.values()], phrases=phrases)
    assert np.allclose(together, model.phrase_weights(phrases).coverage(limited.present, limited.near))  # the phrases' words suffice
    assert np.allclose(together, apart)


def test_a_paper_with_the_words_of_an_interest_scattered_is_not_said_to_match_it() -> None:
    papers = {  # invented for this test
        "whole": ("Protein Language Models for Enzyme Design", "A protein language model proposes enzyme sequences that fold."),
        "scattered": ("Folding Kinetics of a Membrane Protein",
                      "Stopped-flow traces are fitted with a kinetic scheme; every measurement is then described in a formal language for "
                      "laboratory protocols, and a Markov model is compared."),
        **{f"filler-{n}": (f"A study of {topic}", f"We measure {topic} in the field and report what we found about {topic}.")
           for n, topic in enumerate(["river sediment", "bird song", "glacier melt", "city traffic", "coral growth", "wind gusts"])},
    }
    texts = [paper_text(t, a) for t, a in papers.values()]
    model = TextModel()
    counts = model.fit_counts(texts, keep=["protein language model"])
    candidates = Candidates.build(model, list(range(len(texts))), counts, [[]] * len(texts), [[]] * len(texts), texts=texts)
    keys = list(papers)
    coverage = dict(zip(keys, model.phrase_weights(["protein language model"]).coverage(candidates.present, candidates.near)[:, 0]))
    assert coverage["whole"] == pytest.approx(1.0) and 0.75 <= coverage["scattered"] < 0.81  # all its words, none close together
    ranked = Ranker(model, RankingConfig()).rank([Reader(1, Interests((("protein language model", 1.0),)), max_items=10)], candidates)[0]
    reasons = {keys[r.index]: r.reason for r in ranked}
    assert reasons == {"whole": "matches protein language model", "scattered": "has the words of “protein language model”"}
