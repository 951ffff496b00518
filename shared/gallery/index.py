"""The in-memory search index of one gallery: float32 templates plus 8-bit codes, top-k by cosine.

Search is two passes. The first scans 8-bit codes of every template for a shortlist of
``shortlist`` rows; the second re-scores that shortlist exactly in float32 and keeps the best
``k``. A single query (fewer than 8) scans 4-bit fast-scan codes instead
(:mod:`shared.gallery.fastscan`, a quarter of the bytes and SIMD table look-ups) for the best
``max(8 x shortlist, N / 256)`` rows and lets the 8-bit codes of just those rows pick the
shortlist. The codes are of the template itself when it has at most 128 dimensions, else of its
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
from shared.gallery.fastscan import FastScanCodes

# Codes are round(x * 256) + 128, clipped to 0..255: components of a unit vector beyond
# +-0.5 are rare and only cost the first pass a little precision; the re-rank stays exact.
_CODE_SCALE = 256.0
_CODE_ZERO = 128
# Quantised single queries use |q| <= 8191 (fewer for dims past 1024) so sums fit in int32.
_QUERY_MAX_ONE = 8191
_QUERY_MAX_MANY = 127
# Batches at least this large go through the matrix-multiply kernel.
_BATCH_MIN = 8
# Rows a single query's fast scan hands to the 8-bit codes: at least 8x the shortlist and 1/256 of
# the gallery (its coarser scores displace a true neighbour by a number of ranks that grows with
# the gallery). Measured through all passes (recall@10 of 300 queries): 1.0 at 1,024 of 200k, 0.997 at
# 1,024 and 0.9997 at 2,048 of 1M, 1.0 at 4,096 of 1M.
_FAST_FACTOR = 8
_FAST_SHARE = 256


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
        fast_scan: scan single queries' 4-bit fast-scan codes (False: the 8-bit codes, as batches
            do; the benchmark's comparison and a fallback for odd code dimensions).
        float16: keep the re-rank store in float16 instead of float32: half the memory, cosines
            off by up to ~5e-5, which at 512-d swapped near-tied neighbours in the top-10 of 2 %
            of queries at 1M and 2M (``bench/gallery.py``).
    """

    def __init__(
        self,
        dim: int,
        shortlist: int = 128,
        projection: np.ndarray | None = None,
        fast_scan: bool = True,
        float16: bool = False,
    ) -> None:
        if projection is not None and projection.shape[0] != dim:
            raise ValueError(f"projection is for {projection.shape[0]} dimensions, not {dim}")
        self.dim = dim
        self.shortlist = shortlist
        self.projection = projection
        self.code_dim = dim if projection is None else projection.shape[1]
        self._store_dtype = np.float16 if float16 else np.float32
        self._vectors = np.zeros((0, dim), self._store_dtype)
        self._codes = np.zeros((0, self.code_dim), np.uint8)
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        self._fast = FastScanCodes(self.code_dim) if fast_scan and self.code_dim % 2 == 0 else None

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, face_id: object) -> bool:
        return face_id in self._rows

    @property
    def nbytes(self) -> int:
        """Bytes allocated for the vector and code matrices (capacity, not just rows in use)."""
        return int(self._vectors.nbytes + self._codes.nbytes + (0 if self._fast is None else self._fast.nbytes))

    @property
    def bytes_per_template(self) -> int:
        """Matrix bytes per template in use: a float32 (or float16) vector, its 8-bit code and its fast-scan code."""
        return self._vectors.itemsize * self.dim + self.code_dim + (0 if self._fast is None else self._fast.code_size)

    @property
    def bytes_scanned(self) -> int:
        """Bytes a single query's first pass reads: every template's fast-scan (else 8-bit) code."""
        return len(self._ids) * (self.code_dim if self._fast is None else self._fast.code_size)

    def clear(self) -> None:
        self._vectors = np.zeros((0, self.dim), self._store_dtype)
        self._codes = np.zeros((0, self.code_dim), np.uint8)
        self._ids = []
        self._rows = {}
        if self._fast is not None:
            self._fast.clear()

    def _reserve(self, rows: int) -> None:
        capacity = self._vectors.shape[0]
        if rows <= capacity:
            return
        # Growing by half keeps enrolment amortised O(1) per template at a third less slack than doubling.
        new_capacity = max(rows, capacity + capacity // 2, 1024)
        vectors = np.zeros((new_capacity, self.dim), self._store_dtype)
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
        before = len(self._ids)
        replaced: set[int] = set()
        for face_id, vector, code in zip(face_ids, vectors, codes, strict=True):
            row = self._rows.get(face_id)
            if row is None:
                row = len(self._ids)
                self._ids.append(face_id)
                self._rows[face_id] = row
            elif row < before:
                replaced.add(row)
            self._vectors[row] = vector
            self._codes[row] = code
        if self._fast is not None:
            # From the rows as written: a face given twice in one call keeps its last template.
            for row in sorted(replaced):
                self._fast.set(row, self._first_pass_view(self._vectors[row]))
            self._fast.append(self._first_pass_view(self._vectors[before : len(self._ids)]))

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
        if self._fast is not None:
            self._fast.pop_into(row)
        return True

    def _first_pass_view(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, np.float32)
        return vectors if self.projection is None else vectors @ self.projection

    def vector(self, face_id: str) -> np.ndarray | None:
        row = self._rows.get(face_id)
        return None if row is None else self._vectors[row].astype(np.float32)

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
            shortlists = list(
                kernels.scan_many(self._codes, n, _quantise_queries(view, _QUERY_MAX_MANY, np.int8), keep)
            )
        elif self._fast is not None and n > _FAST_FACTOR * keep:
            fast, handed = self._fast, max(_FAST_FACTOR * keep, n // _FAST_SHARE)
            shortlists = [self._shortlist(fast.search(v, handed), v, keep) for v in view]
        else:
            limit = min(_QUERY_MAX_ONE, (2**31 - 1) // (255 * self.code_dim))
            quantised = _quantise_queries(view, limit, np.int16)
            shortlists = [kernels.scan_one(self._codes, n, q, keep) for q in quantised]
        return [self._rerank(q, rows[rows >= 0], k) for q, rows in zip(queries, shortlists, strict=True)]

    def _shortlist(self, candidates: np.ndarray, view: np.ndarray, keep: int) -> np.ndarray:
        """The ``keep`` of ``candidates`` (rows) whose 8-bit codes score best for one query view."""
        scores = self._codes[candidates].astype(np.float32) @ view
        return candidates[np.argpartition(-scores, keep - 1)[:keep]] if len(candidates) > keep else candidates

    def _rerank(self, query: np.ndarray, rows: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
        sims = self._vectors[rows].astype(np.float32) @ query
        # Ties broken by row number so equal scores come back in a stable order.
        order = np.lexsort((rows, -sims))[:k]
        return [self._ids[r] for r in rows[order]], sims[order]
