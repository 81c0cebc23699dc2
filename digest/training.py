"""Retraining: each subscriber's feedback turned into their learned model (`SubscriberModel`).

The model is a logistic regression per subscriber on the papers' TF-IDF vectors: papers opened
or liked are positive examples; papers marked "less like this", papers shown in a digest the
subscriber used but did not open (weak, `SHOWN_WEIGHT`), and the typical paper of the recent
corpus (its centroid, standing for every paper they never asked for: `learn_background` per
positive) are negative ones. It is fitted with scikit-learn and stored in dual form: since the
weights of an L2-regularized linear model are a combination of its examples, w = sum_i a_i x_i + b c
(c the centroid), what is stored is a_i per example paper and b, never a weight per word. So the
model survives the nightly change of vocabulary: the ranking (`ranking.ranker.Ranker`) rebuilds w from
the examples' vectors in today's text model, and blends it with the stated interests by how much
evidence there is.

Cost: one text model fit per run (as a daily send does) and one small regression per subscriber
with new feedback (a few hundred rows at most): a few milliseconds each (see the benchmark).
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sqlmodel import col, select

from .config import RankingConfig
from .db import Database, chunks
from .feedback import Evidence, gather_evidence
from .models import SubscriberModel, utcnow
from .ranking.readers import History
from .ranking.store import MODEL_VERSION, recent_corpus
from .textmodel import TextModel

log = logging.getLogger(__name__)

#: How much each kind of evidence weighs as an example (raw evidence, and sample weights of the regression).
CLICK_WEIGHT = 1.0
NEGATIVE_WEIGHT = -1.0
SHOWN_WEIGHT = -0.15
#: The most recent shown-but-not-opened papers kept: older ones say little about today's taste.
MAX_SHOWN = 200
#: Significant digits of a stored coefficient.
DIGITS = 5


def history_from_evidence(evidence: Evidence) -> History:
    """Raw evidence as examples: opened or liked +1, turned down -1, shown but not opened -0.15."""
    examples: dict[int, float] = {}
    for paper in evidence.shown[-MAX_SHOWN:]:
        examples[paper] = SHOWN_WEIGHT
    for paper in evidence.negative:
        examples[paper] = NEGATIVE_WEIGHT
    for paper in evidence.positive:
        examples[paper] = CLICK_WEIGHT
    return History(tuple(examples), tuple(examples.values()), len(evidence.positive))


@dataclass
class PaperFeatures:
    """Papers' unit TF-IDF vectors in one text model, by paper id, and the corpus centroid."""

    model: TextModel
    row: dict[int, int]
    vectors: sparse.csr_matrix

    @classmethod
    def build(cls, model: TextModel, ids: Sequence[int], counts: sparse.csr_matrix) -> "PaperFeatures":
        return cls(model, {int(p): i for i, p in enumerate(ids)}, model.queries(counts))

    def rows(self, papers: Sequence[int]) -> sparse.csr_matrix:
        return self.vectors[[self.row[p] for p in papers]]


def learn(evidence: Evidence, features: PaperFeatures, config: RankingConfig) -> tuple[History, float]:
    """The subscriber's model: a logistic regression of their evidence, in dual form (see the
    module's docstring), and the seconds it took. Without a positive paper there is nothing to
    learn a taste from: the raw evidence is kept (the ranking pushes papers turned down away)."""
    raw = history_from_evidence(evidence)
    positives = [p for p in dict.fromkeys(evidence.positive) if p in features.row]
    if not positives:
        return raw, 0.0
    began = dt.datetime.now()
    taken = set(positives)
    negatives = [p for p in dict.fromkeys(evidence.negative) if p in features.row and p not in taken]
    taken |= set(negatives)
    shown = [p for p in dict.fromkeys(evidence.shown[-MAX_SHOWN:]) if p in features.row and p not in taken]
    papers = positives + negatives + shown
    x = sparse.vstack([features.rows(papers), sparse.csr_matrix(features.model.centroid_[None, :])]).tocsr()
    y = np.r_[np.ones(len(positives)), np.zeros(len(negatives) + len(shown) + 1)]
    weight = np.r_[
        np.full(len(positives), CLICK_WEIGHT), np.full(len(negatives), -NEGATIVE_WEIGHT), np.full(len(shown), -SHOWN_WEIGHT),
        config.learn_background * len(positives),
    ]
    c = config.learn_c
    # liblinear, solved in its dual (far fewer examples than words): about 2 ms for one subscriber
    # (its penalized intercept is one more weight on a constant feature: the dual form below holds).
    regression = LogisticRegression(C=c, solver="liblinear", dual=True, max_iter=100, tol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        regression.fit(x, y, sample_weight=weight)
    # The optimum of (1/2)|w|^2 + C sum_i s_i log(1 + exp(-y_i f_i)) is w = C sum_i s_i y_i sigma(-y_i f_i) x_i.
    sign = 2 * y - 1
    margin = x @ regression.coef_.ravel() + regression.intercept_[0]
    alpha = c * weight * sign * expit(-sign * margin)
    coefficients = [float(f"{a:.{DIGITS}g}") for a in alpha]
    history = History(tuple(papers), tuple(coefficients[:-1]), len(positives), coefficients[-1], True)
    return history, (dt.datetime.now() - began).total_seconds()


@dataclass
class RetrainReport:
    trained: list[int] = field(default_factory=list)
    unchanged: int = 0
    seconds_fitting: float = 0.0  # the text model
    seconds_learning: float = 0.0  # the regressions


def retrain(
    db: Database, subscriber_ids: Iterable[int] | None = None, force: bool = False, now: dt.datetime | None = None,
    config: RankingConfig | None = None, features: PaperFeatures | None = None,
) -> RetrainReport:
    """Rebuild the models of subscribers with feedback newer than their model, or of an older
    kind (or all, `force`). The text model is fitted on the recent corpus and the subscribers'
    example papers, unless `features` are given (the simulation passes its dataset's)."""
    now = now or utcnow()
    config = config or RankingConfig()
    report = RetrainReport()
    evidence = gather_evidence(db, subscriber_ids)
    with db.session() as session:
        existing = {
            m.subscriber_id: m
            for part in chunks(list(evidence))
            for m in session.exec(select(SubscriberModel).where(col(SubscriberModel.subscriber_id).in_(part)))
        }
    todo = {}
    for subscriber_id, found in evidence.items():
        model = existing.get(subscriber_id)
        fresh = (model is not None and model.version >= MODEL_VERSION and model.evidence_until is not None
                 and found.last_event is not None and found.last_event <= model.evidence_until)
        if fresh and not force:
            report.unchanged += 1
        else:
            todo[subscriber_id] = found
    if todo and features is None:
        began = dt.datetime.now()
        wanted = {p for found in todo.values() for p in (*found.positive, *found.negative, *found.shown[-MAX_SHOWN:])}
        features = corpus_features(db, config, now, wanted)
        report.seconds_fitting = (dt.datetime.now() - began).total_seconds()
    with db.transaction() as session:
        for subscriber_id, found in todo.items():
            history, seconds = learn(found, features, config)
            report.seconds_learning += seconds
            model = existing.get(subscriber_id) or SubscriberModel(subscriber_id=subscriber_id)
            model.examples = [[p, w] for p, w in zip(history.papers, history.weights)]
            model.background = history.background
            model.version = MODEL_VERSION
            model.positives = len(found.positive)
            model.negatives = len(found.negative)
            model.evidence_until = found.last_event
            model.trained_at = now
            session.add(model)
            report.trained.append(subscriber_id)
    log.info("retrained %d subscriber models (%d unchanged): text model %.1f s, regressions %.1f s",
             len(report.trained), report.unchanged, report.seconds_fitting, report.seconds_learning)
    return report


def corpus_features(db: Database, config: RankingConfig, now: dt.datetime, papers: Iterable[int]) -> PaperFeatures:
    """A text model fitted on the last `fit_days` of papers and `papers`, and their vectors."""
    corpus = recent_corpus(db, now - dt.timedelta(days=config.fit_days), now, papers)
    model = TextModel()
    counts, _ = model.fit_papers(corpus)
    return PaperFeatures.build(model, [p.id for p in corpus], counts)


