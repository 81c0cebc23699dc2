"""The one-sentence TL;DR: the sentence of the abstract that states the contribution."""

from __future__ import annotations

import json
import re

import pytest

from digest.tldr import MAX_CHARS, sentences, tldr

from .conftest import shared

# Abstracts written for these tests, in the usual shape: background, gap, contribution, results.
BACKGROUND_FIRST = (
    "Large language models have become the default interface to knowledge work. "
    "However, their inference cost grows with the length of the context, e.g. for retrieval-augmented prompts. "
    "We propose LeanCache, a key-value cache that evicts tokens by their attention mass. "
    "On three benchmarks it cuts memory by 3.5x with a loss below 0.2 points. "
    "Code is available at https://example.org/leancache."
)
THIS_PAPER = (
    "Robots fail on ice. "
    "Prior controllers assume known friction. "
    "This paper presents a learned estimator of friction from proprioception alone, trained in simulation (Fig. 2) and transferred without tuning. "
    "Experiments on a quadruped show fewer falls."
)
TO_ADDRESS = (
    "Graph neural networks over-smooth as they deepen, as shown by Li et al. in 2018. "
    "To address this, we introduce residual gating between layers. "
    "We show that gating keeps node features apart up to 64 layers."
)
NO_CUE = "Protein language models predict structure. Their embeddings transfer to function prediction. Results hold across families."


@pytest.mark.parametrize(("abstract", "expected"), [
    (BACKGROUND_FIRST, "We propose LeanCache, a key-value cache that evicts tokens by their attention mass."),
    (THIS_PAPER, "This paper presents a learned estimator of friction from proprioception alone, trained in simulation (Fig. 2) and transferred without tuning."),
    (TO_ADDRESS, "To address this, we introduce residual gating between layers."),
])
def test_the_contribution_sentence_is_chosen_not_the_background(abstract: str, expected: str) -> None:
    assert tldr(abstract) == expected


def test_sentences_are_not_split_at_abbreviations_initials_or_decimals() -> None:
    assert sentences(BACKGROUND_FIRST)[1].endswith("e.g. for retrieval-augmented prompts.")
    assert sentences(BACKGROUND_FIRST)[3] == "On three benchmarks it cuts memory by 3.5x with a loss below 0.2 points."
    assert sentences(TO_ADDRESS)[0] == "Graph neural networks over-smooth as they deepen, as shown by Li et al. in 2018."
    assert sentences("We thank J. R. Smith for data. It helped.") == ["We thank J. R. Smith for data.", "It helped."]
    assert sentences("A model trained on the data.We then test it.") == ["A model trained on the data.", "We then test it."]


def test_without_a_cue_the_first_sentence_that_is_not_background_and_never_the_code_link() -> None:
    assert tldr(NO_CUE) in sentences(NO_CUE)
    assert "https://" not in tldr(BACKGROUND_FIRST)
    assert tldr("") == "" and tldr("   ") == ""
    assert tldr("One sentence without a full stop") == "One sentence without a full stop"


def test_a_long_sentence_is_cut_at_a_word_with_an_ellipsis() -> None:
    long = "We propose " + "a very careful method " * 40 + "for everything."
    short = tldr(long)
    assert len(short) <= MAX_CHARS and short.endswith("…") and long.startswith(short[:-1])


def test_on_the_real_listings_the_tldr_is_a_whole_sentence_that_states_the_contribution() -> None:
    path = shared("arxiv-daily", "2026-04-10.jsonl")
    abstracts = [" ".join(json.loads(line)["summary"].split()) for line in path.read_text().splitlines()]
    cue = re.compile(r"\b(?:we|this (?:paper|work|survey|study))\b[^.]{0,40}\b(?:propose|introduce|present)s?\b", re.I)
    with_cue = chosen_with_cue = 0
    for abstract in abstracts:
        summary = tldr(abstract)
        assert summary, abstract[:80]
        assert len(summary) <= MAX_CHARS
        assert summary.endswith("…") or summary in abstract  # a sentence of the abstract, or its cut beginning
        if cue.search(abstract):
            with_cue += 1
            chosen_with_cue += bool(cue.search(summary))
    assert with_cue > 100
    # Where the abstract says "we propose / introduce / present", the TL;DR is nearly always that sentence.
    assert chosen_with_cue / with_cue > 0.9, (chosen_with_cue, with_cue)
