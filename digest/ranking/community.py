"""Who opened what, over all subscribers: the evidence of "readers like you"."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import sparse
from sklearn.preprocessing import normalize

from ..matrices import dense_product
from .readers import Reader


class Community:
    """Who opened what, over all subscribers: the evidence of "readers like you"."""

    def __init__(self, clicks: dict[int, Iterable[int]], neighbours: int = 50) -> None:
        users = [u for u, papers in clicks.items()]
        papers = sorted({p for ps in clicks.values() for p in ps})
        self.user_row = {u: i for i, u in enumerate(users)}
        self.paper_column = {p: j for j, p in enumerate(papers)}
        rows, cols = [], []
        for u, ps in clicks.items():
            for p in set(ps):
                rows.append(self.user_row[u])
                cols.append(self.paper_column[p])
        self.matrix = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(users), len(papers)))
        self.unit = normalize(self.matrix).tocsr() if self.matrix.shape[0] else self.matrix
        self.neighbours = neighbours

    def votes(self, readers: Sequence[Reader], candidate_ids: np.ndarray) -> np.ndarray:
        """votes[r, d]: how many of reader r's nearest readers opened candidate d, each counted by
        the cosine of their opened papers with r's (r's own row never counts)."""
        result = np.zeros((len(readers), len(candidate_ids)), dtype=np.float32)
        columns = np.array([self.paper_column.get(int(p), -1) for p in candidate_ids])
        wanted = np.flatnonzero(columns >= 0)
        rows, cols = [], []
        for i, reader in enumerate(readers):
            for paper in reader.history.positive_papers:
                column = self.paper_column.get(paper)
                if column is not None:
                    rows.append(i)
                    cols.append(column)
        if not wanted.size or not rows:
            return result
        mine = normalize(sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(readers), self.matrix.shape[1])))
        similar = (mine @ self.unit.T).tocsr()
        top_rows, top_cols, top_vals = [], [], []
        for i, reader in enumerate(readers):
            start, end = similar.indptr[i], similar.indptr[i + 1]
            others, sims = similar.indices[start:end], similar.data[start:end]
            keep = (others != self.user_row.get(reader.key, -1)) & (sims > 0)
            others, sims = others[keep], sims[keep]
            if others.size > self.neighbours:
                cut = -np.partition(-sims, self.neighbours - 1)[self.neighbours - 1]
                keep = sims >= cut
                others, sims = others[keep], sims[keep]
            top_rows.extend([i] * others.size)
            top_cols.extend(others.tolist())
            top_vals.extend(sims.tolist())
        weights = sparse.csr_matrix((np.array(top_vals, np.float32), (top_rows, top_cols)), shape=(len(readers), self.matrix.shape[0]))
        result[:, wanted] = dense_product(weights, self.matrix[:, columns[wanted]])
        return result
