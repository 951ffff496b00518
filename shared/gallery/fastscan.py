"""4-bit codes of the first-pass view, scanned by faiss's SIMD fast scan, kept row for row with the index.

Why: a single query is bound by what its first pass reads and by the scan's arithmetic. The 8-bit
scan reads 128 bytes per template (122 MB at 1M) and takes 10-23 ms per query on one core here.
faiss's fast scan (``IndexPQFastScan``) holds a product-quantised code of 4 bits per two
coordinates (32 bytes per template at 128-d) and scores a block of 32 codes with in-register
table look-ups (``pshufb``), so the same 1M templates take ~1.5-4 ms. Its scores are coarser, so
it hands 1/256 of the gallery (at least 8 x the shortlist) to the 8-bit codes, which pick the
shortlist the exact float32 re-rank scores (``bench/gallery.py`` measures recall@10 through all three passes).

The codebook is data-free: the view is turned by a fixed random rotation, so each pair of
coordinates is close to an isotropic 2-d Gaussian of variance 1/D, and the 16 centres of every
pair are k-means centres of samples of that Gaussian (fixed seed). Nothing is fitted to a
gallery or shipped, and a template's code never depends on another's, so enrolment encodes one
row at a time.

faiss stores the codes packed in blocks of 32 rows and has no in-place update, so this module
writes one row's code into its block with faiss's own packer: the index stays dense and in step
with :class:`~shared.gallery.index.VectorIndex`'s rows (replace = overwrite the row, delete = move
the last row into the hole and zero the last slot).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import faiss
import numpy as np

# One worker process per core is the deployment model (as for the batch kernel's onnxruntime
# session): faiss's OpenMP pool would otherwise fight the other workers for the cores.
faiss.omp_set_num_threads(1)

_BITS = 4
_CENTRES = 2**_BITS
# Coordinates per sub-quantiser: 2 gives 4 bits per 2 coordinates, 32 bytes at 128-d (measured:
# 1 coordinate per 4-bit code doubles the bytes and is ~3x slower in faiss at no recall gain
# after the 8-bit pass; 4 coordinates halve them again but need a shortlist 4-8x longer).
_SUB_DIM = 2
_CODEBOOK_SAMPLES = 16_384


@lru_cache(maxsize=4)
def _codebook(dim: int) -> np.ndarray:
    """(16, 2) k-means centres of a 2-d Gaussian of variance 1 / ``dim`` per coordinate."""
    samples = np.random.default_rng(0).standard_normal((_CODEBOOK_SAMPLES, _SUB_DIM)).astype(np.float32)
    kmeans = faiss.Kmeans(_SUB_DIM, _CENTRES, niter=50, seed=0, max_points_per_centroid=_CODEBOOK_SAMPLES)
    kmeans.train(samples / np.float32(np.sqrt(dim)))
    return np.ascontiguousarray(kmeans.centroids, np.float32)


@lru_cache(maxsize=4)
def _rotation(dim: int) -> np.ndarray:
    """A fixed random orthogonal (dim, dim) matrix: spreads every direction over all coordinates."""
    return np.linalg.qr(np.random.default_rng(0).standard_normal((dim, dim)))[0].astype(np.float32)


class FastScanCodes:
    """Fast-scan codes of ``dim``-d first-pass views, one per index row, rows dense from 0.

    Args:
        dim: first-pass dimension (even).
    """

    def __init__(self, dim: int) -> None:
        if dim % _SUB_DIM:
            raise ValueError(f"fast-scan codes need an even dimension, not {dim}")
        self.dim = dim
        self._rotation = _rotation(dim)
        quantiser = faiss.IndexPQ(dim, dim // _SUB_DIM, _BITS, faiss.METRIC_INNER_PRODUCT)
        faiss.copy_array_to_vector(np.tile(_codebook(dim).ravel(), dim // _SUB_DIM), quantiser.pq.centroids)
        quantiser.is_trained = True
        # Any: faiss's bundled stubs miss the constructor from an IndexPQ and the packer.
        self._index: Any = faiss.IndexPQFastScan(quantiser)  # type: ignore[arg-type]
        self._packer: Any = self._index.get_CodePacker()  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def code_size(self) -> int:
        """Bytes per template: what a single query's scan reads per row."""
        return int(self._index.code_size)

    @property
    def nbytes(self) -> int:
        """Bytes allocated for the packed codes (whole blocks of 32 rows, capacity included)."""
        return int(self._index.codes.size())

    def _turned(self, views: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(views, np.float32).reshape(-1, self.dim) @ self._rotation)

    def append(self, views: np.ndarray) -> None:
        """Codes for new rows ``len(self)``, ``len(self) + 1``, ... of (n, dim) views."""
        if len(views):
            self._index.add(self._turned(views))

    def _block(self, row: int) -> np.ndarray:
        """The packed codes from the block holding ``row`` on (a view of faiss's own buffer)."""
        buffer = faiss.rev_swig_ptr(self._index.codes.get(), self._index.codes.size())
        return buffer[(row // self._packer.nvec) * self._packer.block_size :]

    def _pack(self, row: int, code: np.ndarray) -> None:
        self._packer.pack_1_c(faiss.swig_ptr(code), row % self._packer.nvec, faiss.swig_ptr(self._block(row)))

    def set(self, row: int, view: np.ndarray) -> None:
        """Overwrite an existing row's code with the code of ``view`` (dim,)."""
        self._pack(row, np.ascontiguousarray(self._index.sa_encode(self._turned(view))[0]))

    def pop_into(self, row: int) -> None:
        """Delete ``row``: the last row's code moves into it and the last slot is zeroed and dropped."""
        last = len(self) - 1
        if row != last:
            code = np.zeros(self.code_size, np.uint8)
            self._packer.unpack_1_c(faiss.swig_ptr(self._block(last)), last % self._packer.nvec, faiss.swig_ptr(code))
            self._pack(row, code)
        self._pack(last, np.zeros(self.code_size, np.uint8))
        self._index.ntotal = last

    def clear(self) -> None:
        self._index.reset()

    def search(self, view: np.ndarray, keep: int) -> np.ndarray:
        """Rows of the ``keep`` best fast-scan scores of one (dim,) query view, best first."""
        _, rows = self._index.search(self._turned(view), min(keep, len(self)))
        found = rows[0]
        return found[found >= 0]
