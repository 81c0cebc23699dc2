"""The learned per-subscriber model: a logistic regression kept in dual form (a weight per example
paper and one for the corpus centroid), rebuilt in whatever vocabulary today's text model has,
and retrained from the feedback stored in a real SQLite database."""

from __future__ import annotations

import datetime as dt

import numpy as np
from scipy import sparse
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sqlalchemy import insert
from sqlmodel import select

from digest.config import RankingConfig
from digest.db import Database
from digest.feedback import Evidence
from digest.models import Digest, DigestItem, DigestStatus, FeedbackEvent, Paper, Subscriber, SubscriberModel
from digest.ranking.papers import Candidates, Examples
from digest.ranking.ranker import Ranker
from digest.ranking.readers import Interests, Reader
from digest.ranking.store import MODEL_VERSION, load_histories
from digest.textmodel import TextModel, paper_text
from digest.training import PaperFeatures, learn, retrain

# Invented papers on three topics; the last of each topic is today's candidate.
TOPICS = {
    "robots": ["legged robot walks on ice", "quadruped robot gait on sand", "robot stair climbing with legs", "legged robot over rubble"],
    "proteins": ["protein folding with attention", "protein structure from sequence", "enzyme design with diffusion", "protein binding sites"],
    "weather": ["ensemble weather forecast", "precipitation nowcasting radar", "cyclone track forecast", "weather forecast with graphs"],
}
PAPERS = [(f"{topic}-{n}", f"{text.capitalize()}", f"We study {text} and report results on {topic} benchmarks.")
          for topic, texts in TOPICS.items() for n, text in enumerate(texts)]


def features(texts=None) -> tuple[TextModel, PaperFeatures, object]:
    model = TextModel()
    counts = model.fit_counts(texts or [paper_text(t, a) for _, t, a in PAPERS])
    return model, PaperFeatures.build(model, list(range(len(PAPERS))), counts), counts


def test_the_stored_weights_are_the_regression_itself() -> None:
    """sum_i a_i x_i + b c equals the fitted regression's weight vector: nothing is lost by
    keeping examples instead of words."""
    model, feats, _ = features()
    evidence = Evidence(positive=[0, 1, 2], negative=[4], shown=[8, 9])
    config = RankingConfig()
    history, _ = learn(evidence, feats, config)
    assert history.learned and history.positives == 3 and history.background < 0
    assert all(w > 0 for p, w in zip(history.papers, history.weights) if p in (0, 1, 2))
    assert all(w < 0 for p, w in zip(history.papers, history.weights) if p in (4, 8, 9))
    rebuilt = feats.rows(list(history.papers)).T @ np.array(history.weights) + history.background * model.centroid_
    # The same regression, fitted directly.
    x = sparse.vstack([feats.rows([0, 1, 2, 4, 8, 9]), sparse.csr_matrix(model.centroid_[None, :])]).tocsr()
    y = np.array([1, 1, 1, 0, 0, 0, 0])
    weight = np.array([1, 1, 1, 1, 0.15, 0.15, config.learn_background * 3])
    direct = LogisticRegression(C=config.learn_c, solver="liblinear", dual=True, max_iter=1000, tol=1e-8).fit(x, y, sample_weight=weight)
    assert np.allclose(rebuilt, direct.coef_.ravel(), atol=2e-3 * np.abs(direct.coef_).max())
    sign = 2 * y - 1
    alpha = config.learn_c * weight * sign * expit(-sign * (x @ direct.coef_.ravel() + direct.intercept_[0]))
    assert np.allclose(np.r_[history.weights, history.background], alpha, atol=2e-3)


def test_no_positive_paper_keeps_the_raw_evidence() -> None:
    _, feats, _ = features()
    history, _ = learn(Evidence(negative=[4], shown=[8]), feats, RankingConfig())
    assert not history.learned and history.down_papers == [4] and history.positives == 0


def test_a_learned_model_ranks_in_a_new_vocabulary() -> None:
    """Learned on yesterday's text model, read in today's (other words, other columns)."""
    _, yesterday, _ = features()
    history, _ = learn(Evidence(positive=[0, 1, 2]), yesterday, RankingConfig())  # three robot papers
    extra = ["Quantum error correction codes", "Surface code decoders"]
    model = TextModel()
    texts = [paper_text(t, a) for _, t, a in PAPERS] + extra
    counts = model.fit_counts(texts)
    assert model.vocabulary_ != yesterday.model.vocabulary_
    examples = Examples.build(model, [(i, PAPERS[i][1]) for i in range(len(PAPERS))], counts[: len(PAPERS)])
    today = [3, 7, 11]  # the last paper of each topic
    candidates = Candidates.build(model, today, counts[today], [[]] * 3, [[]] * 3)
    ranked = Ranker(model, RankingConfig(), examples).rank([Reader(1, Interests(()), history)], candidates, k=3, require_match=False)[0]
    assert ranked[0].index == 0  # the robot paper
    assert "you opened" in ranked[0].reason


def test_retrain_learns_from_stored_feedback_and_rebuilds_older_models(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'learn.db'}")
    now = dt.datetime(2026, 4, 30, 12, tzinfo=dt.timezone.utc)
    with db.transaction() as session:
        session.execute(insert(Paper), [
            {"id": i + 1, "title": t, "title_key": key, "abstract": a, "authors": [], "categories": [], "source": "test",
             "first_seen": now - dt.timedelta(days=2)}
            for i, (key, t, a) in enumerate(PAPERS)
        ])
        session.execute(insert(Subscriber), [{"id": s, "email": f"s{s}@example.org", "interests": [], "avoid": [], "authors": [], "categories": [],
                                              "created_at": now, "updated_at": now} for s in (1, 2)])
        session.execute(insert(Digest), [{"id": 1, "subscriber_id": 1, "local_date": now.date(), "status": DigestStatus.SENT,
                                          "window_start": now, "window_end": now, "created_at": now, "attempts": 1}])
        session.execute(insert(DigestItem), [{"id": n + 1, "digest_id": 1, "paper_id": p, "rank": n + 1, "score": 0.0, "reason": ""}
                                             for n, p in enumerate([1, 2, 9, 10])])
        session.execute(insert(Digest), [{"id": 2, "subscriber_id": 2, "local_date": now.date(), "status": DigestStatus.SENT,
                                          "window_start": now, "window_end": now, "created_at": now, "attempts": 1}])
        session.execute(insert(DigestItem), [{"id": 10, "digest_id": 2, "paper_id": 5, "rank": 1, "score": 0.0, "reason": ""}])
        session.execute(insert(FeedbackEvent), [
            {"subscriber_id": 1, "digest_id": 1, "digest_item_id": 1, "paper_id": 1, "kind": "click", "repeat": False, "created_at": now},
            {"subscriber_id": 1, "digest_id": 1, "digest_item_id": 2, "paper_id": 2, "kind": "up", "repeat": False, "created_at": now},
            {"subscriber_id": 2, "digest_id": 2, "digest_item_id": 10, "paper_id": 5, "kind": "click", "repeat": False, "created_at": now - dt.timedelta(days=1)},
        ])
        # Subscriber 2's model is of the older kind (raw evidence), and has seen every event.
        session.add(SubscriberModel(subscriber_id=2, examples=[[5, 1.0]], positives=1, version=0, evidence_until=now, trained_at=now))
    assert not load_histories(db, [2])[2].learned  # read as raw evidence until rebuilt
    report = retrain(db, now=now, config=RankingConfig())
    assert sorted(report.trained) == [1, 2]  # 1 has new feedback; 2 a model of the older kind
    histories = load_histories(db, [1, 2])
    assert histories[2].learned and histories[2].positive_papers == [5]
    learned = histories[1]
    assert learned.learned and learned.positives == 2 and learned.background < 0
    weights = dict(zip(learned.papers, learned.weights))
    assert weights[1] > 0 and weights[2] > 0 and weights[9] < 0 and weights[10] < 0  # shown, not opened
    with db.session() as session:
        stored = session.exec(select(SubscriberModel).where(SubscriberModel.subscriber_id == 1)).one()
    assert stored.version == MODEL_VERSION
    assert retrain(db, now=now, config=RankingConfig()).trained == []  # nothing new
