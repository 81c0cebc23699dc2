"""What the ranker knows of a subscriber (`Reader`: `Interests` and `History`) and what it
returns for them (`Ranked`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

#: History weights at or below this are papers turned down; between it and 0, papers skipped.
TURNED_DOWN = -0.5


@dataclass(frozen=True)
class Interests:
    """A subscriber's stated taste."""

    phrases: tuple[tuple[str, float], ...]
    avoid: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()

    @classmethod
    def from_subscriber(cls, subscriber) -> "Interests":
        return cls.stated(subscriber.interests, subscriber.avoid, subscriber.authors, subscriber.categories)

    @classmethod
    def stated(cls, interests: Iterable, avoid: Iterable[str] = (), authors: Iterable[str] = (), categories: Iterable[str] = ()) -> "Interests":
        """From the fields as a profile states them (interests as stored dicts or as objects with
        `phrase` and `weight`): what reads a few fields alone needs no subscriber to make one."""
        phrases = []
        for interest in interests:
            if isinstance(interest, dict):
                phrases.append((interest["phrase"], float(interest.get("weight", 1.0))))
            else:
                phrases.append((interest.phrase, float(interest.weight)))
        return cls(tuple(phrases), tuple(avoid), tuple(authors), tuple(categories))

    def all_phrases(self) -> list[str]:
        """Every phrase the text model must know: the interests and what to avoid."""
        return [p for p, _ in self.phrases] + list(self.avoid)


@dataclass(frozen=True)
class History:
    """A subscriber's feedback as example papers with weights, and how many are positive.

    `learned`: the weights are the dual coefficients of the subscriber's learned model (see
    `training.learn`), with `background` the coefficient of the corpus centroid. Otherwise they are
    raw evidence: positive for opened or liked, at most `TURNED_DOWN` for turned down, between
    that and 0 for shown and not opened (a model from before learning, or a test's history)."""

    papers: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()
    positives: int = 0
    background: float = 0.0
    learned: bool = False

    @classmethod
    def of(cls, positive: Iterable[int]) -> "History":
        ids = tuple(dict.fromkeys(positive))
        return cls(ids, tuple(1.0 for _ in ids), len(ids))

    @cached_property
    def positive_papers(self) -> list[int]:
        """The papers opened or liked: positive weights in either form (a learned model's
        coefficients have the sign of their example's label)."""
        return [p for p, w in zip(self.papers, self.weights) if w > 0]

    @cached_property
    def down_papers(self) -> list[int]:
        """Papers turned down, as raw evidence (a learned model has folded them in)."""
        return [] if self.learned else [p for p, w in zip(self.papers, self.weights) if w <= TURNED_DOWN]


@dataclass
class Reader:
    """One subscriber as the ranker sees them."""

    key: int  # the subscriber id (the row of the community matrix)
    interests: Interests
    history: History = field(default_factory=History)
    max_items: int = 10


@dataclass
class Ranked:
    index: int  # row in the candidates
    score: float
    reasons: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)
