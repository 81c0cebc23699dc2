"""The semantic extra on real parts: fastembed loading the local MiniLM folder of ../shared/models,
vectors stored in SQLite at ingest, `digest embed` for papers met before the setting, a paper
found by meaning with an honest reason; and without the extra, one clear line and TF-IDF as before.
Skips cleanly where fastembed or the model folder is absent."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from sqlmodel import select

from digest.config import RankingConfig
from digest.embeddings import MAX_TOKENS
from digest.models import PaperEmbedding, PhraseEmbedding
from digest.ranking.papers import Candidates
from digest.ranking.ranker import Ranker
from digest.ranking.readers import Interests, Reader
from digest.textmodel import TextModel, paper_text

from .conftest import ROOT, Workdir

MODELS = Path(os.environ.get("DIGEST_SHARED_MODELS", ROOT.parent / "shared" / "models"))
MINILM = MODELS / "all-MiniLM-L6-v2-onnx"


@pytest.fixture(scope="module")
def embedder():
    pytest.importorskip("fastembed", reason="the semantic extra is not installed")
    if not (MINILM / "model.onnx").is_file():
        pytest.skip(f"{MINILM} is not here (the shared models sit beside the checkout)")
    from digest.embeddings import Embedder

    return Embedder(str(MINILM))


def test_the_local_model_gives_unit_vectors_that_mean_something(embedder) -> None:
    vectors = embedder.embed(["A quadruped robot learns to walk over rocks.", "Legged robots walking on rough terrain.", "Stock market volatility."])
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    again = embedder.phrases(["legged locomotion", "legged locomotion"])
    assert again.shape == (2, 384) and np.allclose(again[0], again[1])


def test_a_text_is_read_to_its_first_256_word_pieces_and_its_vectors_are_kept_as_such(embedder) -> None:
    from tokenizers import Tokenizer

    head = " ".join(
        f"Legged robot {n} learns to walk over rocks, gravel and ice with a controller trained in simulation." for n in range(16)
    )
    tokenizer = Tokenizer.from_file(str(MINILM / "tokenizer.json"))
    tokenizer.no_truncation()
    pieces = len(tokenizer.encode(head).ids)
    assert MAX_TOKENS < pieces < MAX_TOKENS + 100  # the head alone fills what is read; with a tail, still under the tokenizer's own 512
    markets = " Stock markets fall after the central bank raises interest rates, and bond yields climb." * 3
    weather = " Heavy rain and storms flood the coastal towns while forecasters warn of more wind." * 3
    vectors = embedder.embed([head + markets, head + weather, markets])
    assert np.allclose(vectors[0], vectors[1], atol=1e-5)  # what lies past the limit is not read
    assert vectors[0] @ vectors[2] < 0.5
    assert embedder.key.endswith(f"#{MAX_TOKENS}")  # vectors read to another length are another space


def test_a_paper_found_by_meaning_says_so_and_claims_no_match(embedder) -> None:
    papers = [
        ("Walking robots on rough ground", "A quadruped learns to walk over rocks and gravel with a learned controller."),
        ("Stock market volatility under rate shocks", "We model daily equity returns after interest rate announcements."),
        ("Legged locomotion on ice", "Legged locomotion policies trained in simulation transfer to icy floors."),
    ]
    texts = [paper_text(t, a) for t, a in papers]
    model = TextModel()
    counts = model.fit_counts(texts, keep=["legged locomotion"])
    vectors = embedder.embed([f"{t}. {a}" for t, a in papers])
    candidates = Candidates.build(model, [0, 1, 2], counts, [[]] * 3, [[]] * 3, vectors)
    me = Reader(1, Interests((("legged locomotion", 1.0),)), max_items=5)
    words_only = Ranker(model, RankingConfig()).rank([me], candidates)[0]
    assert [r.index for r in words_only] == [2]  # the words find only the paper that has them
    ranked = Ranker(model, RankingConfig(), phrase_embedder=embedder.phrases).rank([me], candidates)[0]
    reasons = {r.index: r.reason for r in ranked}
    assert set(reasons) == {0, 2}  # the walking robots too, by meaning; never the stock market
    assert reasons[2] == "matches legged locomotion"
    assert reasons[0] == "close to “legged locomotion”"


def _papers_file(path: Path, start: int, n: int) -> None:
    lines = [json.dumps({"id": f"2604.{start + i:05d}", "title": f"Robot grasping study {start + i}",
                         "abstract": "A robot arm learns to grasp objects from camera images.", "authors": ["Ann Lee"]}) for i in range(n)]
    path.write_text("\n".join(lines) + "\n")


def test_ingest_embeds_new_papers_and_embed_fills_in_older_ones(embedder, workdir: Workdir) -> None:
    _papers_file(workdir.path / "before.jsonl", 0, 3)
    workdir.cli("ingest", "before.jsonl", check=True)  # no model set: nothing embedded
    db = workdir.db()
    with db.session() as session:
        assert session.exec(select(PaperEmbedding)).all() == []
    workdir.env["DIGEST_EMBEDDING_MODEL"] = str(MINILM)
    _papers_file(workdir.path / "after.jsonl", 10, 2)
    result = workdir.cli("ingest", "after.jsonl", check=True)
    assert "Embedded 2 new papers" in result.stdout
    with db.session() as session:
        rows = session.exec(select(PaperEmbedding)).all()
    assert len(rows) == 2 and all(r.dim == 384 and len(r.vector) == 384 * 2 and r.model == f"{MINILM.resolve()}#{MAX_TOKENS}" for r in rows)
    result = workdir.cli("embed", "--all", check=True)
    assert "Embedded 3 papers" in result.stdout
    assert "Embedded 0 papers" in workdir.cli("embed", "--all", check=True).stdout  # nothing left
    workdir.cli("ingest", "config/sample-feed.jsonl", check=True)
    workdir.cli("profiles", "sync", check=True)
    sent = workdir.cli("send", check=True)
    assert "sent" in sent.stdout and workdir.outbox()
    with db.session() as session:
        phrases = {p.phrase for p in session.exec(select(PhraseEmbedding))}
    assert {"speculative decoding", "legged locomotion"} <= phrases  # the profiles' interests, embedded once


def test_without_the_extra_one_line_says_what_to_install(workdir: Workdir, tmp_path: Path) -> None:
    """fastembed hidden from the interpreter: the setting given, the send still goes out on TF-IDF."""
    shim = tmp_path / "shim"
    (shim / "fastembed").mkdir(parents=True)
    (shim / "fastembed" / "__init__.py").write_text("raise ImportError('fastembed is not installed here')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(shim), str(ROOT)]), "DIGEST_EMBEDDING_MODEL": str(MINILM)}
    refused = workdir.cli("embed", **env)
    assert refused.returncode == 2 and "pip install 'digest[semantic]'" in refused.stderr
    workdir.cli("ingest", "config/sample-feed.jsonl", check=True, **env)
    workdir.cli("profiles", "sync", check=True, **env)
    sent = workdir.cli("send", check=True, **env)
    assert len(workdir.outbox()) == 4
    warnings = [line for line in (sent.stdout + sent.stderr).splitlines() if "digest[semantic]" in line]
    assert len(warnings) == 1, sent.stderr


def test_eval_ranks_with_embeddings_when_the_model_is_set(embedder, workdir: Workdir, tmp_path: Path) -> None:
    from .test_evaluation import write_dataset

    data = write_dataset(tmp_path / "toy", users=8, per_topic=12, new_papers=True)
    result = workdir.cli("eval", str(data), "--mode", "both", "--no-baselines", "--json", DIGEST_EMBEDDING_MODEL=str(MINILM))
    assert result.returncode == 0, result.stderr
    assert f"Semantic: {embedder.key}" in result.stderr
    assert [r["method"] for r in json.loads(result.stdout)["results"]] == ["production"]
    assert list((workdir.path / "var" / "eval-embeddings").glob("*.npy"))  # the dataset's vectors, cached for the next run
