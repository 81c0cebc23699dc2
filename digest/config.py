"""`config/digest.yaml`: the sources to poll, the schedule and the ranking defaults.

Validated like the profiles (unknown keys are errors, problems name file, line and field).
A missing file means the built-in defaults.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .yamlfile import load_model


_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class Source(BaseModel):
    """A source the scheduler polls: where, when, and how much of a paged source."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    #: A path (relative to the working directory) or an http(s) URL.
    url: str = Field(min_length=1)
    #: Local times of day (in `timezone`) to poll at.
    poll_at: list[str] = Field(default_factory=lambda: ["06:00"], min_length=1)
    timezone: str = "UTC"
    #: For paged sources (arXiv API, OAI-PMH): stop after this many papers in one poll.
    max_papers: int = Field(default=2000, ge=1, le=100_000)
    enabled: bool = True

    @field_validator("poll_at", mode="before")
    @classmethod
    def _times(cls, value: object) -> object:
        values = [value] if isinstance(value, str) else value
        if isinstance(values, list):
            for item in values:
                if not isinstance(item, str) or not _CLOCK.match(item.strip()):
                    raise ValueError(f"expected times written as \"HH:MM\", not {item!r}")
            return [f"{int(v.split(':')[0]):02d}:{v.split(':')[1]}" for v in (v.strip() for v in values)]
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("url")
    @classmethod
    def _location(cls, value: str) -> str:
        value = value.strip()
        if "://" in value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("a source is a path or an http(s) URL")
        return value


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

    @model_validator(mode="after")
    def _unique_names(self) -> "AppConfig":
        names = [s.name for s in self.sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"source names must be unique: {', '.join(duplicates)}")
        return self


def load_config(path: str | Path) -> AppConfig:
    """The configuration of `path`, or the defaults when there is no such file."""
    path = Path(path)
    if not path.exists():
        return AppConfig()
    config, _ = load_model(path, AppConfig)
    return config
