"""Compiled scan kernels for the gallery's first pass: 8-bit codes -> integer scores -> shortlist.

Why two kernels: at 1M x 128 a single query is bound by memory bandwidth, and a plain numba
loop streams the 128 MB of codes at ~20 GB/s (about 5 ms on one core), and selection runs on
small blocks of scores inside the same loop, so no 4 MB score array is written and re-read. A batch of queries is bound by
arithmetic instead, and onnxruntime's MatMulInteger (MLAS, AVX2/AVX-512 VNNI uint8 x int8)
does that several times faster than any loop numba emits; its scores are then selected in
blocks that stay in cache.

Selection keeps, per query, a buffer of at most ``2 * keep`` (score, row) pairs and a running
threshold: a score enters only if it beats the threshold, and a full buffer is cut back to its
``keep`` best, raising the threshold. After the first few thousand rows almost every row fails
the one comparison, so selection costs far less than the scan.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
from numba import njit


def _jit(fastmath: bool = False) -> Callable[[Callable[..., Any]], Any]:
    """numba's njit, cached on disk when a cache location is writable (next to this file, the
    user's cache or ``NUMBA_CACHE_DIR``): a fresh process then loads instead of compiling (~5 s).
    A read-only install without a home compiles once per process instead of failing to import."""

    def wrap(fn: Callable[..., Any]) -> Any:
        try:
            return njit(cache=True, nogil=True, boundscheck=False, fastmath=fastmath)(fn)
        except RuntimeError:
            return njit(cache=False, nogil=True, boundscheck=False, fastmath=fastmath)(fn)

    return wrap


_FLOOR = np.iinfo(np.int64).min
# Rows scored before each selection pass of the single-query scan (1 KB of int32, stays in L1).
_SCAN_BLOCK_ROWS = 256

# Rows per onnxruntime call in the batched path: the (rows x queries) int32 score block stays
# in L2/L3 (16k x 64 x 4 B = 4 MB) while it is selected.
BATCH_BLOCK_ROWS = 16_384


@_jit()
def _compact(bufv: np.ndarray, bufi: np.ndarray, n: int, keep: int) -> int:
    """Keep the ``keep`` best of the first ``n`` entries at the front; return the new threshold."""
    order = np.argsort(-bufv[:n])[:keep]
    topv = bufv[order]
    topi = bufi[order]
    bufv[:keep] = topv
    bufi[:keep] = topi
    return topv[keep - 1]


@_jit(fastmath=True)
def scan_one(codes: np.ndarray, n: int, query: np.ndarray, keep: int) -> np.ndarray:
    """Rows of the ``keep`` highest integer scores ``codes[i] . query`` over the first ``n`` rows.

    Args:
        codes: (capacity, D) uint8 codes; rows ``n`` and beyond are ignored.
        n: rows in use.
        query: (D,) int16 quantised query, small enough that the int32 sum cannot overflow
            (int16 rather than int32 lets LLVM use 16-bit multiply-add instructions: 2x faster).
        keep: shortlist length.

    Returns:
        int64 row numbers, best first (at most ``keep``).
    """
    d = codes.shape[1]
    cap = 2 * keep
    bufv = np.empty(cap, np.int64)
    bufi = np.empty(cap, np.int64)
    block = np.empty(_SCAN_BLOCK_ROWS, np.int32)
    cnt = 0
    thr = _FLOOR
    for start in range(0, n, _SCAN_BLOCK_ROWS):
        stop = min(n, start + _SCAN_BLOCK_ROWS)
        # Score a block first, select after: a branch inside the scoring loop stops LLVM from
        # overlapping rows and makes the scan 2.5x slower.
        for i in range(start, stop):
            acc = np.int32(0)
            for j in range(d):
                acc += np.int32(codes[i, j]) * np.int32(query[j])
            block[i - start] = acc
        for r in range(stop - start):
            if block[r] > thr:
                bufv[cnt] = block[r]
                bufi[cnt] = start + r
                cnt += 1
                if cnt == cap:
                    thr = _compact(bufv, bufi, cnt, keep)
                    cnt = keep
    order = np.argsort(-bufv[:cnt])[:keep]
    return bufi[order]


@_jit()
def select_block(
    scores: np.ndarray, base: int, keep: int, bufv: np.ndarray, bufi: np.ndarray, cnt: np.ndarray, thr: np.ndarray
) -> None:
    """Fold a (rows, queries) int32 score block into each query's running shortlist.

    ``bufv``/``bufi`` are (queries, 2 * keep) buffers and ``cnt``/``thr`` their fill and
    threshold, carried from block to block; ``base`` is the block's first row number.
    """
    rows, nq = scores.shape
    cap = bufv.shape[1]
    for i in range(rows):
        for q in range(nq):
            s = scores[i, q]
            if s > thr[q]:
                c = cnt[q]
                bufv[q, c] = s
                bufi[q, c] = base + i
                c += 1
                if c == cap:
                    thr[q] = _compact(bufv[q], bufi[q], c, keep)
                    c = keep
                cnt[q] = c


@_jit()
def finish(bufv: np.ndarray, bufi: np.ndarray, cnt: np.ndarray, keep: int) -> np.ndarray:
    """(queries, keep) rows of each query's shortlist, best first; -1 pads short lists."""
    nq = bufv.shape[0]
    out = np.full((nq, keep), -1, np.int64)
    for q in range(nq):
        c = cnt[q]
        order = np.argsort(-bufv[q, :c])[:keep]
        for r in range(order.size):
            out[q, r] = bufi[q, order[r]]
    return out


@lru_cache(maxsize=1)
def _matmul_session() -> object:
    """A one-node onnxruntime graph, Y = A @ B with A uint8 codes and B int8 queries, one thread."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
        "gallery_scan",
        [
            helper.make_tensor_value_info("A", TensorProto.UINT8, [None, None]),
            helper.make_tensor_value_info("B", TensorProto.INT8, [None, None]),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [None, None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    # One worker process per core is the deployment model; more threads would fight for it.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def scan_many(codes: np.ndarray, n: int, queries: np.ndarray, keep: int) -> np.ndarray:
    """Shortlists for a batch of queries, as :func:`scan_one` but with int8 queries.

    Args:
        codes: (capacity, D) uint8 codes; the first ``n`` rows are scanned.
        n: rows in use.
        queries: (Q, D) int8 quantised queries.
        keep: shortlist length per query.

    Returns:
        (Q, keep) int64 row numbers, best first, -1 where fewer than ``keep`` rows exist.
    """
    session = _matmul_session()
    nq = queries.shape[0]
    b = np.ascontiguousarray(queries.T)
    bufv = np.empty((nq, 2 * keep), np.int64)
    bufi = np.empty((nq, 2 * keep), np.int64)
    cnt = np.zeros(nq, np.int64)
    thr = np.full(nq, _FLOOR, np.int64)
    for start in range(0, n, BATCH_BLOCK_ROWS):
        stop = min(n, start + BATCH_BLOCK_ROWS)
        (scores,) = session.run(None, {"A": codes[start:stop], "B": b})  # type: ignore[attr-defined]
        select_block(scores, start, keep, bufv, bufi, cnt, thr)
    return finish(bufv, bufi, cnt, keep)


def warm_up() -> None:
    """Compile (or load from the cache) every kernel, so a worker's first search does not pay."""
    codes = np.full((64, 8), 128, np.uint8)
    scan_one(codes, 64, np.ones(8, np.int16), 4)
    scan_many(codes, 64, np.ones((8, 8), np.int8), 4)
    # The single-query fast scan: faiss's import and the data-free codebook of 128-d views.
    from shared.gallery.fastscan import FastScanCodes

    FastScanCodes(128).append(np.eye(128, dtype=np.float32)[:4])
