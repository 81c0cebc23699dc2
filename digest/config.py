"""`config/digest.yaml`: the sources to poll, the schedule and the ranking defaults.

Validated like the profiles (unknown keys are errors, problems name file, line and field).
A missing file means the built-in defaults.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .schedule import Clock, TimeZone
from .yamlfile import load_model


class Source(BaseModel):
    """A source the scheduler polls: where, when, and how much of a paged source."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    #: A path (relative to the working directory) or an http(s) URL.
    url: str = Field(min_length=1)
    #: Local times of day (in `timezone`) to poll at.
    poll_at: list[Clock] = Field(default_factory=lambda: ["06:00"], min_length=1)
    timezone: TimeZone = "UTC"
    #: For paged sources (arXiv API, OAI-PMH): stop after this many papers in one poll.
    max_papers: int = Field(default=2000, ge=1, le=100_000)
    enabled: bool = True

    @field_validator("poll_at", mode="before")
    @classmethod
    def _one_or_more(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _location(cls, value: str) -> str:
        value = value.strip()
        if "://" in value and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("a source is a path or an http(s) URL")
        return value


class RankingConfig(BaseModel):
    """The ranking's constants (see `digest.ranking` and docs/evaluation.md for what they do and
    how they were chosen)."""

    model_config = ConfigDict(extra="forbid")

    #: Days of papers a subscriber's first digest looks back over.
    lookback_days: float = Field(default=7, gt=0, le=365)
    #: Days of papers any digest looks back over at most: one after a long pause (or a long
    #: outage) brings the best of these days, and a few such subscribers do not make the whole
    #: run rank months of candidates for everyone.
    max_window_days: float = Field(default=14, gt=0, le=365)
    #: Days of papers the term statistics are fitted on.
    fit_days: float = Field(default=90, gt=0)
    #: A paper matches an interest when it holds this much of the phrase (`textmodel.PhraseWeights`:
    #: 1 = the phrase as written, 0.8 = all its words apart; a rare word alone is far less).
    min_match: float = Field(default=0.75, gt=0, le=1)
    #: ... or when its cosine with the centroid of the papers the subscriber opened reaches this.
    min_like: float = Field(default=0.2, gt=0, le=1)
    #: ... or (semantic extra) when the cosine of its embedding with the phrase's reaches this.
    min_related: float = Field(default=0.5, gt=0, le=1)
    #: Opened papers at which the learned model counts as much as the stated interests:
    #: w = n^p / (n^p + scale^p), p the power (`ranking.evidence_weight`).
    evidence_scale: float = Field(default=3.0, gt=0)
    evidence_power: float = Field(default=2.0, gt=0)
    #: Pseudo-relevance feedback: the interests are expanded by the centroid of the papers of the
    #: recent corpus that match them best: how many papers, and the centroid's weight (0: off).
    prf_papers: int = Field(default=10, ge=0)
    prf_weight: float = Field(default=2.0, ge=0)
    #: ... and the weight of those papers' mean embedding in the expanded interest embedding.
    prf_semantic_weight: float = Field(default=0.5, ge=0)
    #: ... drawn from at most this many of the most recent papers.
    prf_pool: int = Field(default=20_000, ge=0)
    #: Semantic extra: the weight of embedding similarity beside TF-IDF, for the interests and for
    #: the learned model (each part scaled by its spread over the candidates first).
    semantic_weight: float = Field(default=1.0, ge=0)
    semantic_history_weight: float = Field(default=2.0, ge=0)
    #: How far a model leans away from the typical paper: raw evidence (TF-IDF; a learned model
    #: learns its own), and the embedding part of every model.
    typicality: float = Field(default=3.0, ge=0)
    semantic_typicality: float = Field(default=1.0, ge=0)
    #: The learned model (`digest retrain`): logistic regression's C, and the weight of the corpus
    #: centroid as a negative example, per positive paper.
    learn_c: float = Field(default=1.0, gt=0)
    learn_background: float = Field(default=1.0, gt=0)
    #: How hard papers like those turned down are pushed down, in spreads of their likeness to them
    #: (for a subscriber with no opened papers yet; a learned model weighs them itself).
    negative_weight: float = Field(default=3.0, ge=0)
    #: How hard an `avoid` phrase pushes a paper down (a share of the subscriber's best score).
    avoid_weight: float = Field(default=1.0, ge=0)
    #: Share of the subscriber's best score added for a followed author, and for a followed category.
    author_boost: float = Field(default=0.3, ge=0)
    category_boost: float = Field(default=0.05, ge=0)
    #: "Readers like you": a paper's score is multiplied by 1 + this x the votes of similar readers.
    readers_like_you: float = Field(default=2.0, ge=0)
    #: ... where a paper's content score counts as at least this share of the reader's best match.
    readers_like_you_floor: float = Field(default=0.35, ge=0, le=1)
    #: How many similar readers vote.
    neighbours: int = Field(default=50, ge=1)
    #: The top places are shared out over the interests in proportion to their weights, among the
    #: papers that match them well: scoring at least `quota_floor` of the reader's best (times the
    #: interest's weight over the largest) and `quota_interest_floor` of the interest's own best;
    #: false: by score alone.
    interest_quota: bool = True
    quota_floor: float = Field(default=0.4, ge=0, le=1)
    quota_interest_floor: float = Field(default=0.0, ge=0, le=1)
    #: Near-duplicates at the top: papers whose cosine passes `duplicate_similarity` are pushed
    #: apart (maximal marginal relevance) with this weight; 0 ranks by score alone.
    diversity: float = Field(default=0.5, ge=0, lt=1)
    duplicate_similarity: float = Field(default=0.6, ge=0, lt=1)

    @model_validator(mode="after")
    def _window(self) -> "RankingConfig":
        if self.lookback_days > self.max_window_days:
            raise ValueError(f"lookback_days ({self.lookback_days:g}) cannot exceed max_window_days ({self.max_window_days:g})")
        return self


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


def lay_out_starter(folder: Path) -> list[Path]:
    """Copy the starter configuration (the repository's `config/`, installed as package data
    `digest.starter`: sources and ranking defaults, example profiles, the bundled sample feed)
    into `folder`, normally `config/`, so that an installed digest has something to run on; the
    paths written. A folder that already holds a `digest.yaml` is a project: nothing is added."""
    if (folder / "digest.yaml").exists():
        return []
    written = []
    with resources.as_file(resources.files("digest.starter")) as starter:
        for source in sorted(starter.rglob("*")):
            if not source.is_file() or source.suffix in (".py", ".pyc"):
                continue
            target = folder / source.relative_to(starter)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
                written.append(target)
    return written
