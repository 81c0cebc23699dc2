"""Sentence embeddings of papers and phrases: the optional `semantic` extra.

`pip install 'digest[semantic]'` brings fastembed (ONNX Runtime, no torch). The model is the
setting `DIGEST_EMBEDDING_MODEL`: a fastembed model name (fetched from the model hub on first
use) or a local folder holding an ONNX export (`model.onnx`, `tokenizer.json`, `config.json`),
such as `../shared/models/all-MiniLM-L6-v2-onnx`, loaded as a custom model with mean pooling and
unit normalization (sentence-transformers' recipe for that family).

A paper is embedded once, at ingest, in batches: its title and the start of its abstract
(`MAX_WORDS` words, then at most `MAX_TOKENS` word pieces: the cost grows with length).
Vectors are stored as float16 bytes in a table of their own, keyed by paper and model (with the
length read), so that changing either never mixes spaces; papers met before the model was set are
embedded by `digest embed`, or when a digest needs them. Phrases (interests) are embedded when
first met and kept the same way.

Without the extra nothing changes: ranking is TF-IDF alone, and a set `DIGEST_EMBEDDING_MODEL`
only earns one clear line saying what to install.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from sqlalchemy import func, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from .db import Database, chunks
from .models import Paper, PaperEmbedding, PhraseEmbedding

log = logging.getLogger(__name__)

INSTALL_HINT = "DIGEST_EMBEDDING_MODEL is set but the semantic extra is not installed: pip install 'digest[semantic]' (ranking stays TF-IDF only)"
#: Words of a paper's title and abstract that are embedded.
MAX_WORDS = 200
#: Word pieces of a text the model reads, at most: sentence-transformers' `max_seq_length` for
#: all-MiniLM-L6-v2 (its tokenizer alone allows 512). On 300 real papers (title and up to 200
#: words, about 350 word pieces) embedding took 25.2 s at 512 and 15.5 s at 256; `digest eval`
#: on citeulike-a-dev new-papers seeds 0-2, semantic: both 1.124x -> 1.125x the SVM, interests
#: 1.194x -> 1.203x TF-IDF cosine (the same within noise; measured 2026-11-24).
MAX_TOKENS = 256
#: Texts per call of the model.
BATCH = 32


class EmbeddingUnavailable(RuntimeError):
    """The semantic extra is missing, or the model cannot be loaded."""


def paper_passage(title: str, abstract: str) -> str:
    """What a paper is embedded as: its title and the first `MAX_WORDS` words of it and its abstract."""
    return " ".join(f"{title.strip()}. {abstract or ''}".split()[:MAX_WORDS])


class Embedder:
    """A fastembed model, by name or local folder: unit vectors of texts, phrases cached."""

    def __init__(self, model: str, threads: int | None = None) -> None:
        try:
            from fastembed import TextEmbedding
            from fastembed.common.model_description import ModelSource, PoolingType
        except ImportError:
            raise EmbeddingUnavailable(INSTALL_HINT) from None
        folder = Path(model).expanduser()
        try:
            if folder.is_dir():
                self.key = str(folder.resolve())
                name = "digest-local/" + hashlib.sha1(self.key.encode()).hexdigest()[:12]
                config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
                onnx = "model.onnx" if (folder / "model.onnx").is_file() else next((p.name for p in sorted(folder.glob("*.onnx"))), None)
                if onnx is None:
                    raise EmbeddingUnavailable(f"{folder} holds no .onnx model")
                if name not in {m["model"] for m in TextEmbedding.list_supported_models()}:
                    TextEmbedding.add_custom_model(
                        model=name, pooling=PoolingType.MEAN, normalization=True, sources=ModelSource(hf=name),
                        dim=int(config.get("hidden_size", 384)), model_file=onnx,
                    )
                self._model = TextEmbedding(name, specific_model_path=str(folder), threads=threads)
            else:
                self.key = model
                self._model = TextEmbedding(model, threads=threads)
        except EmbeddingUnavailable:
            raise
        except Exception as exc:  # a missing folder, a model the hub cannot give, a broken file
            raise EmbeddingUnavailable(f"cannot load the embedding model {model!r}: {exc}") from exc
        self.max_tokens = _limit_length(self._model, MAX_TOKENS)
        if self.max_tokens is not None:
            self.key = f"{self.key}#{self.max_tokens}"  # vectors of another length are another space
        self._phrases: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors (rows, float32) of `texts`."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        vectors = np.asarray(list(self._model.embed(list(texts), batch_size=BATCH)), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0, norms, 1.0)

    @property
    def dim(self) -> int:
        if not hasattr(self, "_dim"):
            self._dim = int(np.asarray(next(iter(self._model.embed(["dimension"])))).shape[0])
        return self._dim

    def phrases(self, phrases: Sequence[str]) -> np.ndarray:
        """Unit vectors of short texts (interests), each embedded once per process."""
        todo = sorted({p for p in phrases if p not in self._phrases})
        if todo:
            self.remember(todo, self.embed(todo))
        return np.stack([self._phrases[p] for p in phrases]) if phrases else np.zeros((0, self.dim), np.float32)

    def remember(self, phrases: Sequence[str], vectors: np.ndarray) -> None:
        self._phrases.update(zip(phrases, vectors))


def _limit_length(model, tokens: int) -> int | None:
    """Have `model` (a fastembed `TextEmbedding`) read at most `tokens` word pieces of a text:
    the limit it now has, or None where its tokenizer cannot be reached (its own limit stays).
    fastembed sets the truncation from the tokenizer's config and offers no setting for it."""
    tokenizer = getattr(getattr(model, "model", None), "tokenizer", None)
    truncation = getattr(tokenizer, "truncation", None)
    if not truncation:
        log.debug("the embedding model's tokenizer is out of reach: texts are cut at its own limit")
        return None
    if truncation["max_length"] > tokens:
        tokenizer.enable_truncation(max_length=tokens, direction=truncation.get("direction", "right"))
    return min(truncation["max_length"], tokens)


def from_settings(model: str | None) -> Embedder | None:
    """The embedder the setting names, or None (TF-IDF only) with one warning when the extra or
    the model is missing: a digest is never lost for want of embeddings."""
    if not model:
        return None
    try:
        return Embedder(model)
    except EmbeddingUnavailable as exc:
        log.warning("%s", exc)
        return None


# --- storage -------------------------------------------------------------------------------------


def _pack(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f2").tobytes()


def _unpack(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f2").astype(np.float32)


def missing_papers(db: Database, key: str, paper_ids: Iterable[int] | None = None) -> list[int]:
    """Papers (all, or of `paper_ids`) with no vector for model `key`."""
    with db.session() as session:
        done = set(session.exec(select(PaperEmbedding.paper_id).where(PaperEmbedding.model == key)).all())
        if paper_ids is None:
            ids = session.exec(select(Paper.id).order_by(Paper.id)).all()
        else:
            ids = sorted(set(paper_ids))
    return [p for p in ids if p not in done]


def embed_papers(db: Database, embedder: Embedder, paper_ids: Sequence[int], on_batch: Callable[[int], None] | None = None, batch: int = 256) -> int:
    """Embed `paper_ids` and store their vectors, `batch` papers per transaction; how many."""
    done = 0
    for part in chunks(list(paper_ids), batch):
        with db.session() as session:
            papers = session.exec(select(Paper.id, Paper.title, Paper.abstract).where(col(Paper.id).in_(part))).all()
        vectors = embedder.embed([paper_passage(title, abstract) for _, title, abstract in papers])
        now = dt.datetime.now(dt.timezone.utc)
        with db.transaction() as session:
            existing = set(session.exec(select(PaperEmbedding.paper_id).where(PaperEmbedding.model == embedder.key, col(PaperEmbedding.paper_id).in_(part))).all())
            rows = [{"paper_id": pid, "model": embedder.key, "dim": int(v.shape[0]), "vector": _pack(v), "created_at": now}
                    for (pid, _, _), v in zip(papers, vectors) if pid not in existing]
            if rows:
                session.execute(insert(PaperEmbedding), rows)
        done += len(papers)
        if on_batch:
            on_batch(len(papers))
    return done


def papers_since(db: Database, since: dt.datetime) -> list[int]:
    """The papers first seen since `since`."""
    with db.session() as session:
        return list(session.exec(select(Paper.id).where(col(Paper.first_seen) >= since).order_by(Paper.id)).all())


def last_paper(db: Database) -> int:
    """The highest paper id: what an ingest adds comes after it."""
    with db.session() as session:
        return session.exec(select(func.max(Paper.id))).one() or 0


def embed_new(db: Database, model: str | None, after: int) -> int:
    """After an ingest: embed the papers it added (ids above `after`) if a model is set and the
    extra installed; how many. Never fails an ingest: a problem is logged."""
    embedder = from_settings(model)
    if embedder is None:
        return 0
    try:
        with db.session() as session:
            added = list(session.exec(select(Paper.id).where(col(Paper.id) > after)).all())
        return embed_missing(db, embedder, added)
    except Exception:  # a broken model file must not lose the papers just stored
        log.exception("embedding the new papers failed (digest embed tries again)")
        return 0


def embed_missing(db: Database, embedder: Embedder, paper_ids: Iterable[int] | None = None, on_batch: Callable[[int], None] | None = None) -> int:
    """Embed the papers (all, or of `paper_ids`) that have no vector for this model yet."""
    todo = missing_papers(db, embedder.key, paper_ids)
    if todo:
        log.info("embedding %d papers with %s", len(todo), embedder.key)
    return embed_papers(db, embedder, todo, on_batch) if todo else 0


def load_vectors(db: Database, key: str, paper_ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(vectors in the order of `paper_ids`, which have one): rows of zeros for papers with none."""
    at = {p: i for i, p in enumerate(paper_ids)}
    vectors = np.zeros((len(paper_ids), dim), np.float32)
    found = np.zeros(len(paper_ids), bool)
    with db.engine.connect() as connection:
        table = PaperEmbedding.__table__
        for part in chunks(list(paper_ids)):
            for pid, blob in connection.execute(select(table.c.paper_id, table.c.vector).where(table.c.model == key, table.c.paper_id.in_(part))):
                vector = _unpack(blob)
                if vector.shape[0] == dim:
                    vectors[at[pid]] = vector
                    found[at[pid]] = True
    return vectors, found


def phrase_vectors(db: Database, embedder: Embedder, phrases: Iterable[str]) -> None:
    """Make `embedder` know the vectors of `phrases`: stored ones loaded, new ones embedded and stored."""
    wanted = sorted(set(phrases))
    stored: dict[str, np.ndarray] = {}
    with db.engine.connect() as connection:
        table = PhraseEmbedding.__table__
        for part in chunks(wanted):
            for phrase, blob in connection.execute(select(table.c.phrase, table.c.vector).where(table.c.model == embedder.key, table.c.phrase.in_(part))):
                stored[phrase] = _unpack(blob)
    if stored:
        embedder.remember(list(stored), np.stack(list(stored.values())))
    new = [p for p in wanted if p not in stored]
    if new:
        vectors = embedder.phrases(new)
        try:
            with db.transaction() as session:
                session.execute(insert(PhraseEmbedding), [{"phrase": p, "model": embedder.key, "vector": _pack(v)} for p, v in zip(new, vectors)])
        except IntegrityError:  # another process stored some of them meanwhile: theirs are as good
            log.debug("phrase embeddings stored by another process")
