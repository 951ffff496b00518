"""The in-memory search index of one gallery: float32 templates plus 8-bit codes, top-k by cosine.

Search is two passes. The first scans 8-bit codes of every template for a shortlist of
``shortlist`` rows; the second re-scores that shortlist exactly in float32 and keeps the best
``k``. The codes are of the template itself when it has at most 128 dimensions, else of its
projection onto the model's shipped 128-d subspace (:mod:`shared.gallery.projection`), so a
512-d gallery scans 128 bytes per template, as a 128-d one does. Reported similarities are
exact cosines either way; a true top-k row is lost only if the first pass (8-bit rounding,
about 0.001 in cosine, plus what the projection leaves out) pushes it below the shortlist,
which ``bench/gallery.py`` measures as recall@10 against float32 brute force.

Rows are dense: deleting a row moves the last row into its slot, so a scan never meets holes,
and the freed slot is zeroed (the template is erased from this process's memory too).
"""

from __future__ import annotations

import numpy as np

from shared.gallery import kernels

# Codes are round(x * 256) + 128, clipped to 0..255: components of a unit vector beyond
# +-0.5 are rare and only cost the first pass a little precision; the re-rank stays exact.
_CODE_SCALE = 256.0
_CODE_ZERO = 128
# Quantised single queries use |q| <= 8191 (fewer for dims past 1024) so sums fit in int32.
_QUERY_MAX_ONE = 8191
_QUERY_MAX_MANY = 127
# Batches at least this large go through the matrix-multiply kernel.
_BATCH_MIN = 8


def encode_codes(vectors: np.ndarray) -> np.ndarray:
    """8-bit codes of unit vectors, (n, D) float32 -> (n, D) uint8."""
    return np.clip(np.rint(vectors * _CODE_SCALE) + _CODE_ZERO, 0, 255).astype(np.uint8)


def _quantise_queries(queries: np.ndarray, limit: int, dtype: type) -> np.ndarray:
    """Scale each query so its largest component is ``limit``: ranking within a query is unchanged."""
    peak = np.maximum(np.abs(queries).max(axis=1, keepdims=True), 1e-12)
    return np.rint(queries * (limit / peak)).astype(dtype)


class VectorIndex:
    """Templates of one embedding dimension, searchable by cosine similarity.

    Args:
        dim: vector dimension.
        shortlist: rows re-scored in float32 per query (at least ``k``).
        projection: (dim, code_dim) orthonormal basis the first pass scans codes in (None: the
            vectors' own coordinates).
    """

    def __init__(self, dim: int, shortlist: int = 128, projection: np.ndarray | None = None) -> None:
        if projection is not None and projection.shape[0] != dim:
            raise ValueError(f"projection is for {projection.shape[0]} dimensions, not {dim}")
        self.dim = dim
        self.shortlist = shortlist
        self.projection = projection
        self.code_dim = dim if projection is None else projection.shape[1]
        self._vectors = np.zeros((0, dim), np.float32)
        self._codes = np.zeros((0, self.code_dim), np.uint8)
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, face_id: object) -> bool:
        return face_id in self._rows

    @property
    def nbytes(self) -> int:
        """Bytes allocated for the vector and code matrices (capacity, not just rows in use)."""
        return int(self._vectors.nbytes + self._codes.nbytes)

    @property
    def bytes_per_template(self) -> int:
        """Matrix bytes per template in use: a float32 vector and its 8-bit code."""
        return 4 * self.dim + self.code_dim

    @property
    def bytes_scanned(self) -> int:
        """Bytes the first pass reads per query: every template's code."""
        return len(self._ids) * self.code_dim

    def clear(self) -> None:
        self._vectors = np.zeros((0, self.dim), np.float32)
        self._codes = np.zeros((0, self.code_dim), np.uint8)
        self._ids = []
        self._rows = {}

    def _reserve(self, rows: int) -> None:
        capacity = self._vectors.shape[0]
        if rows <= capacity:
            return
        # Growing by half keeps enrolment amortised O(1) per template at a third less slack than doubling.
        new_capacity = max(rows, capacity + capacity // 2, 1024)
        vectors = np.zeros((new_capacity, self.dim), np.float32)
        codes = np.zeros((new_capacity, self.code_dim), np.uint8)
        n = len(self._ids)
        vectors[:n] = self._vectors[:n]
        codes[:n] = self._codes[:n]
        self._vectors, self._codes = vectors, codes

    def upsert(self, face_ids: list[str], vectors: np.ndarray) -> None:
        """Add or replace templates. ``vectors`` are (n, dim) unit float32 rows."""
        vectors = np.asarray(vectors, np.float32).reshape(-1, self.dim)
        codes = encode_codes(self._first_pass_view(vectors))
        self._reserve(len(self._ids) + len(face_ids))
        for face_id, vector, code in zip(face_ids, vectors, codes, strict=True):
            row = self._rows.get(face_id)
            if row is None:
                row = len(self._ids)
                self._ids.append(face_id)
                self._rows[face_id] = row
            self._vectors[row] = vector
            self._codes[row] = code

    def remove(self, face_id: str) -> bool:
        """Drop a template; True if it was present."""
        row = self._rows.pop(face_id, None)
        if row is None:
            return False
        last = len(self._ids) - 1
        if row != last:
            moved = self._ids[last]
            self._ids[row] = moved
            self._rows[moved] = row
            self._vectors[row] = self._vectors[last]
            self._codes[row] = self._codes[last]
        self._ids.pop()
        self._vectors[last] = 0.0
        self._codes[last] = 0
        return True

    def _first_pass_view(self, vectors: np.ndarray) -> np.ndarray:
        return vectors if self.projection is None else vectors @ self.projection

    def vector(self, face_id: str) -> np.ndarray | None:
        row = self._rows.get(face_id)
        return None if row is None else self._vectors[row].copy()

    def search(self, queries: np.ndarray, k: int) -> list[tuple[list[str], np.ndarray]]:
        """Top-``k`` templates per query by cosine similarity, best first.

        Args:
            queries: (Q, dim) unit float32 vectors.
            k: results per query (fewer when the gallery is smaller).

        Returns:
            Per query, the face ids and their exact float32 cosines.
        """
        queries = np.ascontiguousarray(np.asarray(queries, np.float32).reshape(-1, self.dim))
        n = len(self._ids)
        if n == 0 or k <= 0:
            return [([], np.zeros(0, np.float32)) for _ in range(len(queries))]
        keep = min(n, max(k, self.shortlist))
        view = self._first_pass_view(queries)
        if len(queries) >= _BATCH_MIN:
            shortlists = kernels.scan_many(self._codes, n, _quantise_queries(view, _QUERY_MAX_MANY, np.int8), keep)
        else:
            limit = min(_QUERY_MAX_ONE, (2**31 - 1) // (255 * self.code_dim))
            quantised = _quantise_queries(view, limit, np.int16)
            shortlists = np.stack([kernels.scan_one(self._codes, n, q, keep) for q in quantised])
        return [self._rerank(q, rows[rows >= 0], k) for q, rows in zip(queries, shortlists, strict=True)]

    def _rerank(self, query: np.ndarray, rows: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
        sims = self._vectors[rows] @ query
        # Ties broken by row number so equal scores come back in a stable order.
        order = np.lexsort((rows, -sims))[:k]
        return [self._ids[r] for r in rows[order]], sims[order]
