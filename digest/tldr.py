"""A one-sentence TL;DR of an abstract: the sentence that states the contribution.

Abstracts follow a pattern: background, the gap, then "We propose / introduce / present …", then
results. The sentence that says what the paper does is the one a reader wants in a digest, and it
is marked by cue phrases; where several sentences carry cues, the stronger cue wins, then the
earlier sentence. No cue at all: the first sentence that is not background. No external service:
this is extraction, a handful of regular expressions over each paper once (on the lowercased
text, which Python's `re` scans about twice as fast as with IGNORECASE).
"""

from __future__ import annotations

import re
from bisect import bisect_right

#: A TL;DR longer than this is cut at a word (rare: one sentence of an abstract).
MAX_CHARS = 300

# Abbreviations after which a full stop does not end a sentence.
_ABBREVIATIONS = {
    "e.g", "i.e", "etc", "vs", "cf", "al", "fig", "figs", "eq", "eqs", "sec", "tab", "no", "nos", "approx", "resp",
    "dr", "prof", "mr", "ms", "st", "ref", "refs", "ca", "viz", "incl", "vol", "pp", "ch", "e.t.c",
}
# A sentence ends at . ! or ? (perhaps after a closing quote or bracket) before a space and a capital,
# a digit or an opening quote or bracket; or, with the space missing ("algorithms.Our"), between
# two lowercase letters and a capitalized word.
_BOUNDARY = re.compile(r"(?<=[.!?])[\"”’)\]]*\s+(?=[\"“‘(\[]?[A-Z0-9$\\])|(?<=[a-z]{2}[.!?])(?=[A-Z][a-z])")
_CLOSING = "\"”’)]"

# Cue phrases, strongest first: (pattern, score). "We" or "this paper" (survey, work, ...) doing
# something new is the contribution; "we show" or "we study" say what it does, less directly.
_SUBJECT = (
    r"(?:we|(?:this|the present|the) (?:paper|work|study|article|letter|report|note|survey|review|thesis|tutorial|position paper|benchmark)|our (?:paper|work))"
    r"\s+(?:\w+ly\s+|first\s+|then\s+|further\s+|also\s+|here\s+|therefore\s+|thus\s+)?"
)
_CUES: list[tuple[re.Pattern[str], float]] = [
    (re.compile(rf"\b{_SUBJECT}(?:propose|introduce|present|develop|design|devise|formulate|put forward|establish|unveil|release|build|construct|"
                rf"describe|offer|contribute|provide|create|curate|collect|advocate|argue)s?\b"), 4.0),
    (re.compile(r"\b(?:we|this (?:paper|work))\s+(?:\w+\s+){0,2}(?:propose|introduce|present)\b"), 3.5),
    (re.compile(r"\b(?:is|are) (?:proposed|introduced|presented|developed)\b"), 2.5),
    (re.compile(rf"\b{_SUBJECT}(?:show|demonstrate|prove|find|study|investigate|address|tackle|explore|analy[sz]e|examine|identify|derive|"
                rf"report|extend|apply|leverage|train|evaluate|compare|characteri[sz]e|reveal|review|survey|organi[sz]e)s?\b"), 2.0),
    (re.compile(r"\b(?:to (?:address|tackle|overcome|bridge|fill|solve|mitigate|close) (?:this|these|that|the)|to this end)\b"), 1.5),
    (re.compile(r"\bour (?:method|approach|framework|model|system|algorithm|results?|analysis|findings|benchmark|dataset)\b"), 1.0),
]
#: A name given to the contribution ("a method called Foo"): the case of the name counts.
_NAMED = re.compile(r"\b(?:called|named|dubbed|termed)\s+[A-Z]")
_NAMED_WEIGHT = 2.5
# Background and motivation: what the paper is about, not what it does (lowercased).
_BACKGROUND = re.compile(
    r"^(?:recent(?:ly)?|in recent years|over the past|despite|although|while|however|existing|current|traditional|conventional|"
    r"most|many|prior|previous|state-of-the-art|large language models?|\w+ (?:has|have) (?:become|emerged|shown|attracted|been))\b"
    r"|\b(?:remains? (?:a |an )?(?:challenge|challenging|open|unclear|limited|difficult)|has (?:attracted|gained|received) (?:\w+ )?attention|"
    r"ha(?:s|ve) been (?:widely|extensively)|suffer(?:s)? from|(?:is|are) (?:limited|hindered|constrained) by)\b",
    re.M,
)
_RESULT = re.compile(r"\b(?:outperform\w*|state-of-the-art|experiments?|results? (?:show|demonstrate)|achiev\w+|improv\w+)\b")
# Where the code is, who funded it: never the point of the paper.
_ASIDE = re.compile(r"https?://|github\.com|\b(?:code|data|models?|weights)(?: and \w+)? (?:is|are|will be) (?:publicly |made )?(?:available|released)|"
                    r"\baccepted (?:at|to|by)\b")
_ASIDE_WORDS = ("http", "github", "available", "released", "accepted")  # cheap test before the pattern


def sentences(text: str) -> list[str]:
    """`text` split into sentences, not at "e.g.", "et al.", "Fig. 3", initials or decimals."""
    text = " ".join(text.split())
    if not text:
        return []
    pieces = _BOUNDARY.split(text)
    result: list[str] = []
    for piece in pieces:
        if result and _continues(result[-1]):
            result[-1] = f"{result[-1]} {piece}"
        else:
            result.append(piece)
    return [s.strip() for s in result if s.strip()]


def _continues(sentence: str) -> bool:
    """Whether `sentence` ends with an abbreviation or an initial, not with the end of a sentence."""
    word = sentence.rsplit(" ", 1)[-1].rstrip(_CLOSING).lstrip("(\"“‘[")
    if not word.endswith(".") or not word[:1].isalpha():
        return False
    word = word[:-1]
    return word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isupper())


def score(sentence: str, position: int, count: int) -> float:
    """How clearly `sentence` (the `position`-th of `count`) states the paper's contribution."""
    return _scores([sentence], position, count)[0]


def _scores(found: list[str], first: int = 0, count: int | None = None) -> list[float]:
    """The score of each sentence of `found`. Each pattern scans the whole abstract once (its
    sentences one a line, so that `^` is a sentence's start) rather than every sentence apart:
    a tenth of the calls into `re`."""
    count = count or len(found)
    text = "\n".join(found)
    lower = text.lower()
    starts, position = [], 0
    for sentence in found:
        starts.append(position)
        position += len(sentence) + 1

    def hits(pattern: re.Pattern[str], where: str) -> set[int]:
        return {bisect_right(starts, m.start()) - 1 for m in pattern.finditer(where)}

    values = [0.0] * len(found)
    for pattern, weight in reversed(_CUES):  # weakest first: the strongest cue of a sentence stays
        for index in hits(pattern, lower):
            values[index] = weight
    for index in hits(_NAMED, text):
        values[index] = max(values[index], _NAMED_WEIGHT)
    if any(word in lower for word in _ASIDE_WORDS):
        for index in hits(_ASIDE, lower):
            values[index] -= 4.0
    for index in hits(_BACKGROUND, lower):
        values[index] -= 1.5
    results = hits(_RESULT, lower)
    for index, sentence in enumerate(found):
        value = values[index]
        if value <= 0 and index in results:
            value += 0.5
        words = sentence.count(" ") + 1
        if words < 6:
            value -= 2.0
        elif words > 70:
            value -= 1.0
        # Ties go to the earlier sentence; the very first is most often background.
        position = first + index
        value += 0.3 * (1 - position / max(count, 1))
        if position == 0 and value < 2:
            value -= 0.5
        values[index] = value
    return values


def tldr(abstract: str, limit: int = MAX_CHARS) -> str:
    """The one sentence of `abstract` that states what the paper does, at most `limit` characters."""
    found = sentences(abstract)
    if not found:
        return ""
    values = _scores(found)
    best = max(range(len(found)), key=lambda i: (values[i], -i))
    return _shorten(found[best], limit)


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0].rstrip(",;:.-")
    return cut + "…"
