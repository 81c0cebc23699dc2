"""`config/digest.yaml`: the sources to poll, the schedule and the ranking defaults.

Validated like the profiles (unknown keys are errors, problems name file, line and field).
A missing file means the built-in defaults.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from .yamlfile import load_model


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    #: A path (relative to the working directory) or an http(s) URL.
    url: str = Field(min_length=1)
    enabled: bool = True


class RankingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Days of papers a subscriber's first digest looks back over.
    lookback_days: float = Field(default=7, gt=0, le=365)
    #: Days of papers the term weights are fitted on.
    fit_days: float = Field(default=90, gt=0)
    #: A paper matches an interest when it contains this share of the interest's weighted words
    #: (1 = all of them); a paper that matches no interest is sent only for a followed author.
    min_match: float = Field(default=0.5, gt=0, le=1)
    #: Score added for a followed author, and for a followed category, on top of the interest score.
    author_boost: float = Field(default=0.3, ge=0)
    category_boost: float = Field(default=0.05, ge=0)
    #: How strongly a paper like an `avoid` phrase is pushed down.
    avoid_weight: float = Field(default=1.0, ge=0)


class AppConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[Source] = Field(default_factory=list)
    ranking: RankingConfig = Field(default_factory=RankingConfig)


def load_config(path: str | Path) -> AppConfig:
    """The configuration of `path`, or the defaults when there is no such file."""
    path = Path(path)
    if not path.exists():
        return AppConfig()
    config, _ = load_model(path, AppConfig)
    return config
