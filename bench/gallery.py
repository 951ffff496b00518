"""Gallery search on one core, 128-d and 512-d models in one run: our index beside numpy float32
brute force and faiss IndexFlatIP, our index without its single-query fast scan (as before issue
27) and with a float16 re-rank store, faiss's own batched fast scan of the same 4-bit codes (and,
at 512-d, faiss's data-free RaBitQ code), and what an inverted file's nearest cells would hold.

    python bench/gallery.py [--models mobilefacenet fr_feature] [--sizes 10000 100000 1000000]
        [--queries 300] [--batches 5] [--enrol 10000] [--methods ours ours-8bit ...]
        [--lfw ../shared/lfw-calib] [--cpu N] [--results bench/RESULTS.md]

Methods are built one at a time and dropped after measuring (at 2M an index is 2-4.5 GB); numpy
always runs first, as the baseline of the ratios and of recall.

Data, per model, from its real embeddings of ``lfw-calib`` split by identity into two halves:

- the first half fits the first-pass projection of a model with more than 128 dimensions (as
  ``bench/gallery_projection.py`` fits the shipped one on all of ``lfw-calib``), so everything
  searched below comes from identities the projection never saw;
- the other half gives real templates and queries: one image of each identity with several is
  enrolled, its other images search for it (real genuine mates), images of identities with one
  image search as strangers; and the rest of the N templates are a synthetic population with the
  second moments of that half (``FacePopulation``: stranger and same-identity cosines as the
  real ones, printed), ~10 % of synthetic identities enrolled 2-4 times, with a third of the
  queries new samples of enrolled synthetic identities.

Per size and method: top-10 latency of single queries (p50/p95) and of batches of 64 (per
query), recall@10 against exact float32 brute force (all queries, and the mated ones), bytes
the first pass reads per query, bytes per template, and our index's RSS per million templates.
Then what a float16 or 8-bit re-rank store would cost in accuracy, and enrolment throughput
(in-memory, and ``KYCDeepFaceDB.set`` through a private redis-server). The process is pinned to
one core and every library to one thread.
"""

from __future__ import annotations

import functools
import os

# Before numpy/faiss load: their thread pools size themselves at import.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gallery_common import (  # noqa: E402
    FacePopulation,
    lfw_embeddings,
    machine,
    publish,
    split_identities,
)
from harness import RedisServer  # noqa: E402
from shared.gallery import projection  # noqa: E402
from shared.gallery.index import VectorIndex, encode_codes  # noqa: E402
from shared.models.registry import get_spec  # noqa: E402

HEADING = "Gallery search"
K = 10
BATCH = 64
# Rows faiss's RaBitQ code hands to the exact re-rank: its recall@10 reaches 0.999 at about this.
RABITQ_SHORTLIST = 1000


class Workload:
    """A gallery of ``size`` templates and its queries.

    With ``real`` (a model's real vectors and identity names, see the module docstring) the
    gallery mixes real templates into the synthetic population and a third of the queries each
    are real mates, synthetic mates and real strangers; without, half synthetic mates and half
    synthetic strangers.
    """

    def __init__(
        self,
        population: FacePopulation,
        size: int,
        n_queries: int,
        real: tuple[np.ndarray, np.ndarray] | None = None,
        seed: int = 0,
    ) -> None:
        rng = np.random.default_rng(seed)
        enrolled, mated, strangers = [np.zeros((0, population.dim), np.float32)] * 3
        if real is not None:
            vectors, names = real
            by_name = [np.flatnonzero(names == name) for name in np.unique(names)]
            several = [rows for rows in by_name if len(rows) >= 2][: size // 2]
            enrolled = vectors[[rows[0] for rows in several]]
            mated = vectors[np.concatenate([rows[1:] for rows in several])]
            strangers = vectors[np.concatenate([rows for rows in by_name if len(rows) == 1])]
        if real is None:
            strangers = population.samples(population.centres(n_queries - n_queries // 2))
        n_real_mated = min(len(mated), n_queries // 3)
        n_strangers = min(len(strangers), n_queries - n_queries // 2 if real is None else n_queries // 3)
        n_synthetic = n_queries - n_real_mated - n_strangers
        # Built in place (2M x 512 float32 is 4 GB): real templates first, then shuffled row by row.
        gallery = np.empty((size, population.dim), np.float32)
        gallery[: len(enrolled)] = enrolled
        centres = population.gallery_into(gallery[len(enrolled) :], n_synthetic)
        rng.shuffle(gallery)
        self.queries = np.vstack([
            mated[rng.permutation(len(mated))[:n_real_mated]],
            population.samples(centres),
            strangers[rng.permutation(len(strangers))[:n_strangers]],
        ]).astype(np.float32)  # fmt: skip
        self.mated = np.arange(len(self.queries)) < n_real_mated + n_synthetic
        self.gallery = gallery
        self.real_enrolled = len(enrolled)
        self.truth = exact_top(self.gallery, self.queries)


def exact_top(gallery: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Ground truth: float32 brute force, in chunks to bound memory."""
    out = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), 64):
        sims = queries[start : start + 64] @ gallery.T
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        out[start : start + 64] = np.take_along_axis(top, order, axis=1)
    return out


def recall(found: list[np.ndarray], truth: np.ndarray, gallery: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Per query, the share of the true top-K found. A returned row whose float64 cosine ties the
    K-th best (within float32 rounding, 1e-6) counts as found: which of two equal scores a
    method keeps is arbitrary."""
    scores = []
    for rows, best, q in zip(found, truth, queries.astype(np.float64), strict=True):
        kth = float((gallery[best].astype(np.float64) @ q).min())
        rows = np.unique(rows[rows >= 0])
        scores.append(min(K, int((gallery[rows].astype(np.float64) @ q >= kth - 1e-6).sum())) / K)
    return np.array(scores)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


class Method:
    """One searcher: ``single(q) -> rows`` and ``batch(Q) -> rows per query``."""

    name = ""
    bytes_per_template = 0.0
    bytes_scanned = 0.0  # per query, by the pass that touches every template

    def single(self, q: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def batch(self, qs: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError


class NumpyBrute(Method):
    name = "numpy float32 brute force"

    def __init__(self, gallery: np.ndarray) -> None:
        self.gallery = gallery
        self.bytes_per_template = gallery.nbytes / len(gallery)
        self.bytes_scanned = gallery.nbytes

    def single(self, q: np.ndarray) -> np.ndarray:
        sims = self.gallery @ q
        top = np.argpartition(sims, -K)[-K:]
        return top[np.argsort(-sims[top])]

    def batch(self, qs: np.ndarray) -> list[np.ndarray]:
        sims = qs @ self.gallery.T
        top = np.argpartition(sims, -K, axis=1)[:, -K:]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        return list(np.take_along_axis(top, order, axis=1))


class FaissFlat(Method):
    name = "faiss IndexFlatIP"

    def __init__(self, gallery: np.ndarray) -> None:
        import faiss

        faiss.omp_set_num_threads(1)
        self.index = faiss.IndexFlatIP(gallery.shape[1])
        self.index.add(gallery)
        self.bytes_per_template = gallery.nbytes / len(gallery)
        self.bytes_scanned = gallery.nbytes

    def single(self, q: np.ndarray) -> np.ndarray:
        return self.index.search(q[None, :], K)[1][0]

    def batch(self, qs: np.ndarray) -> list[np.ndarray]:
        return list(self.index.search(qs, K)[1])


class FaissRaBitQ(Method):
    """faiss's data-free code (random rotation, one bit per dimension, SIMD fast scan), then our
    exact float32 re-rank of its shortlist: the kept-library alternative to a fitted projection."""

    name = f"faiss RaBitQ fast scan (random rotation, 1 bit) + float32 re-rank of {RABITQ_SHORTLIST}"

    def __init__(self, gallery: np.ndarray) -> None:
        import faiss

        faiss.omp_set_num_threads(1)
        dim = gallery.shape[1]
        self.codes = faiss.IndexRaBitQFastScan(dim, faiss.METRIC_INNER_PRODUCT)
        self.index = faiss.IndexPreTransform(faiss.RandomRotationMatrix(dim, dim), self.codes)
        self.index.train(gallery[:50_000])
        self.index.add(gallery)
        self.gallery = gallery
        self.bytes_per_template = self.codes.sa_code_size() + gallery.nbytes / len(gallery)
        self.bytes_scanned = self.codes.sa_code_size() * len(gallery)

    def _rerank(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        rows = rows[rows >= 0]
        sims = self.gallery[rows] @ q
        return rows[np.argsort(-sims)[:K]]

    def single(self, q: np.ndarray) -> np.ndarray:
        return self._rerank(q, self.index.search(q[None, :], RABITQ_SHORTLIST)[1][0])

    def batch(self, qs: np.ndarray) -> list[np.ndarray]:
        rows = self.index.search(qs, RABITQ_SHORTLIST)[1]
        return [self._rerank(q, r) for q, r in zip(qs, rows, strict=True)]


class FaissPQFastScan(Method):
    """faiss's fast scan of the same 4-bit codes our single queries scan, for batches too, then an
    exact float32 re-rank of its best rows: the kept library beside our batch kernel."""

    def __init__(self, gallery: np.ndarray, basis: np.ndarray | None) -> None:
        from shared.gallery.fastscan import FastScanCodes

        self.basis = basis
        view = gallery if basis is None else gallery @ basis
        self.codes = FastScanCodes(view.shape[1])
        for lo in range(0, len(gallery), 100_000):
            self.codes.append(view[lo : lo + 100_000])
        self.handed = max(1024, len(gallery) // 256)  # what our index hands on (shared/gallery/index.py)
        self.name = f"faiss IndexPQFastScan (the same 4-bit codes, batched too) + float32 re-rank of {self.handed:,}"
        self.gallery = gallery
        self.bytes_per_template = self.codes.code_size + gallery.nbytes / len(gallery)
        self.bytes_scanned = self.codes.code_size * len(gallery)

    def _view(self, qs: np.ndarray) -> np.ndarray:
        return qs if self.basis is None else qs @ self.basis

    def _rerank(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        rows = rows[rows >= 0]
        return rows[np.argsort(-(self.gallery[rows] @ q))[:K]]

    def single(self, q: np.ndarray) -> np.ndarray:
        return self._rerank(q, self.codes.search(self._view(q), self.handed))

    def batch(self, qs: np.ndarray) -> list[np.ndarray]:
        _, rows = self.codes._index.search(self.codes._turned(self._view(qs)), self.handed)
        return [self._rerank(q, r) for q, r in zip(qs, rows, strict=True)]


class Ours(Method):
    def __init__(
        self, gallery: np.ndarray, basis: np.ndarray | None, fast_scan: bool = True, float16: bool = False
    ) -> None:
        code = "8-bit scan" if basis is None else f"8-bit scan of a {basis.shape[1]}-d projection"
        single = "4-bit fast scan, then " if fast_scan else ""
        store = "float16" if float16 else "float32"
        self.name = f"KYCDeepFaceDB index ({single}{code} + {store} re-rank)"
        if not fast_scan:
            self.name += ", without the fast scan (before issue 27)"
        rss_before = rss_mb()
        self.index = VectorIndex(gallery.shape[1], projection=basis, fast_scan=fast_scan, float16=float16)
        ids = [str(i) for i in range(len(gallery))]
        start = time.perf_counter()
        for lo in range(0, len(gallery), 10_000):  # enrolment arrives in pieces, not one array
            self.index.upsert(ids[lo : lo + 10_000], gallery[lo : lo + 10_000])
        self.enrol_rate = len(gallery) / (time.perf_counter() - start)
        self.rss_per_million = (rss_mb() - rss_before) / (len(gallery) / 1e6)
        self.rss_total = rss_mb()
        self.bytes_per_template = self.index.bytes_per_template
        self.bytes_scanned = self.index.bytes_scanned
        self.allocated_per_template = self.index.nbytes / len(gallery)
        self.gallery = gallery

    def single(self, q: np.ndarray) -> np.ndarray:
        return np.array([int(f) for f in self.index.search(q[None, :], K)[0][0]])

    def batch(self, qs: np.ndarray) -> list[np.ndarray]:
        return [np.array([int(f) for f in ids]) for ids, _ in self.index.search(qs, K)]

    def churn(self, n: int = 1000) -> dict[str, float]:
        """Microseconds per erasure (``remove``) and per enrolment of one template (``upsert`` of
        one new face, as a replica applies a lone ``set``), and whether a face enrolled is found
        at once as its own best match."""
        rng = np.random.default_rng(1)
        rows = rng.choice(len(self.gallery), n, replace=False)
        start = time.perf_counter()
        for r in rows:
            self.index.remove(str(r))
        remove_us = (time.perf_counter() - start) / n * 1e6
        start = time.perf_counter()
        for r in rows:
            self.index.upsert([str(r)], self.gallery[r : r + 1])
        enrol_us = (time.perf_counter() - start) / n * 1e6
        found = sum(self.index.search(self.gallery[r : r + 1], 1)[0][0] == [str(r)] for r in rows[:50])
        return {"remove_us": remove_us, "enrol_us": enrol_us, "found_at_once": found / 50}


def measure(method: Method, work: Workload, batches: int) -> dict[str, float]:
    queries = work.queries
    method.single(queries[0])  # warm-up (and numba's compile-cache load)
    singles, found = [], []
    for q in queries:
        start = time.perf_counter()
        found.append(method.single(q))
        singles.append((time.perf_counter() - start) * 1e3)
    per_query, found_batch = [], []
    for b in range(batches):
        rows = np.arange(b * BATCH, (b + 1) * BATCH) % len(queries)
        start = time.perf_counter()
        got = method.batch(queries[rows])
        per_query.append((time.perf_counter() - start) * 1e3 / BATCH)
        found_batch.extend(got)
    batch_rows = np.arange(batches * BATCH) % len(queries)
    single_recall = recall(found, work.truth, work.gallery, queries)
    return {
        "single_p50": float(np.percentile(singles, 50)),
        "single_p95": float(np.percentile(singles, 95)),
        "batch_p50": float(np.percentile(per_query, 50)),
        "batch_p95": float(np.percentile(per_query, 95)),
        "recall_single": float(single_recall.mean()),
        "recall_mated": float(single_recall[work.mated].mean()),
        "recall_batch": float(recall(found_batch, work.truth[batch_rows], work.gallery, queries[batch_rows]).mean()),
        "bytes": method.bytes_per_template,
        "scanned": method.bytes_scanned,
    }


def rerank_store_cost(work: Workload, shortlist: int = 128) -> dict[str, float]:
    """What keeping the re-rank vectors as float16 or as 8-bit codes instead of float32 would cost:
    the largest cosine error over each query's true top ``shortlist`` rows, and the share of
    queries whose top-10 (in order) would change."""
    top = exact_top(work.gallery, work.queries, shortlist)
    out: dict[str, float] = {}
    for kind in ("float16", "int8"):
        worst, changed = 0.0, 0
        for q, rows in zip(work.queries, top, strict=True):
            exact = work.gallery[rows] @ q
            if kind == "float16":
                approx = work.gallery[rows].astype(np.float16).astype(np.float32) @ q
            else:
                approx = (encode_codes(work.gallery[rows]).astype(np.float32) - 128) / 256 @ q
            worst = max(worst, float(np.abs(approx - exact).max()))
            changed += int(not np.array_equal(rows[np.argsort(-exact)[:K]], rows[np.argsort(-approx)[:K]]))
        out[f"{kind}_error"] = worst
        out[f"{kind}_changed"] = changed / len(work.queries)
    return out


def rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss / 2**20)


def enrolment_through_redis(model: str, population: FacePopulation, n: int) -> dict[str, Any]:
    """``KYCDeepFaceDB.set`` rate into a private redis-server, and a second instance's catch-up
    (``{"refused": message}`` when the gallery refuses the model's templates)."""
    from shared import features
    from shared.config import Settings
    from shared.gallery import KYCDeepFaceDB

    if shutil.which("redis-server") is None:
        return {}
    model_id = get_spec(model, "embedding").model_id
    vectors, owners = population.gallery(n)
    encoded = [features.encode(model_id, v) for v in vectors]
    probes = [features.encode(model_id, q) for q in population.samples(owners[:200])]
    # AOF everysec: Redis's production default, so the write rate is a deployment's.
    with (
        tempfile.TemporaryDirectory() as tmp,
        RedisServer(Path(tmp), appendonly=True, appendfsync="everysec") as server,
    ):
        settings = Settings(redis_url=server.url, gallery_store="redis", embedding_model=model)
        with (
            KYCDeepFaceDB("bench", settings=settings) as writer,
            KYCDeepFaceDB("bench", settings=settings) as reader,
        ):
            reader.refresh()
            first = writer.set("face-0", encoded[0])
            if first["code"] != "SUCCESS":  # e.g. a model without a shipped calibration
                return {"refused": first["message"].split(" at ", 1)[0]}  # the message, not the path
            start = time.perf_counter()
            for i, f in enumerate(encoded):
                writer.set(f"face-{i}", f)
            set_rate = n / (time.perf_counter() - start)
            start = time.perf_counter()
            reader.refresh()  # replays n ops from the log
            replay_rate = n / (time.perf_counter() - start)
        with KYCDeepFaceDB("bench", settings=settings) as fresh:
            start = time.perf_counter()
            fresh.refresh()  # a new worker: full load
            load_rate = n / (time.perf_counter() - start)
            # The whole call: log check (one round trip), decode, search, result documents.
            single = [timed(functools.partial(fresh.find_faces, p, top_k=K)) for p in probes]
            batch = [timed(lambda: fresh.find_faces_many(probes[:BATCH], top_k=K)) / BATCH for _ in range(5)]
    return {
        "set": set_rate,
        "replay": replay_rate,
        "load": load_rate,
        "find_p50": float(np.percentile(single, 50)),
        "find_p95": float(np.percentile(single, 95)),
        "find_batch": float(np.median(batch)),
    }


def ivf_coverage(work: Workload, basis: np.ndarray | None, cells: int = 1024) -> str:
    """Why the single query is not an inverted file: k-means cells of the first-pass view, fitted
    on the gallery itself (the most favourable fit), and per ``nprobe`` the share of each query's
    true top-10 lying in its ``nprobe`` nearest cells (what any IVF can find at best) and the share
    of the gallery those cells hold (what it would scan)."""
    import faiss

    def view(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x if basis is None else x @ basis, np.float32)

    sample = np.random.default_rng(2).choice(len(work.gallery), min(len(work.gallery), 64 * cells), replace=False)
    kmeans = faiss.Kmeans(view(work.gallery[:1]).shape[1], cells, niter=20, seed=1, spherical=True)
    kmeans.train(view(work.gallery[np.sort(sample)]))
    centroids = np.asarray(kmeans.centroids)
    cell = np.concatenate([
        np.argmax(view(work.gallery[lo : lo + 100_000]) @ centroids.T, axis=1)
        for lo in range(0, len(work.gallery), 100_000)
    ])  # fmt: skip
    sizes = np.bincount(cell, minlength=cells)
    nearest = np.argsort(-(view(work.queries) @ centroids.T), axis=1)
    parts = []
    for nprobe in (8, 32, 128, 512):
        probed = nearest[:, :nprobe]
        covered = np.mean([np.isin(cell[t], p).mean() for t, p in zip(work.truth, probed, strict=True)])
        scanned = np.mean([sizes[p].sum() for p in probed]) / len(work.gallery)
        parts.append(f"nprobe {nprobe}: {covered:.3f} of the true top-10 in cells holding {scanned:.1%} of the gallery")
    return f"inverted file of {cells} k-means cells: " + "; ".join(parts)


# What --methods names: the baseline always runs first (ratios are to it).
METHODS = ("faiss-flat", "ours", "ours-8bit", "ours-float16", "faiss-pq4", "faiss-rabitq", "ivf")


def run_model(model: str, args: argparse.Namespace) -> tuple[list[str], list[str], FacePopulation]:
    """Table rows and notes for one model at every size."""
    spec = get_spec(model, "embedding")
    vectors, names = lfw_embeddings(args.lfw, spec.name, Path(f"/tmp/kyc-gallery-lfw-{spec.name}.npz"))
    fit_side = split_identities(names)
    held, held_names = vectors[~fit_side], names[~fit_side]
    basis = projection.fit(vectors[fit_side]) if spec.dim > projection.FIRST_PASS_DIM else None
    population = FacePopulation.fitted(held, held_names)
    population_note = population.describe(held, held_names)
    rows, notes = [], []
    for size in args.sizes:
        work = Workload(population, size, args.queries, real=(held, held_names))
        # Built one at a time and dropped after measuring: at 2M each index is 2-4 GB.
        factories: list[tuple[str, Callable[[np.ndarray], Method]]] = [
            ("faiss-flat", FaissFlat),
            ("ours", lambda g: Ours(g, basis)),
            ("ours-8bit", lambda g: Ours(g, basis, fast_scan=False)),
            ("ours-float16", lambda g: Ours(g, basis, float16=True)),
            ("faiss-pq4", lambda g: FaissPQFastScan(g, basis)),
        ]
        if basis is not None:
            factories.append(("faiss-rabitq", FaissRaBitQ))
        base: dict[str, float] = {}
        size_notes = []
        for key, factory in [("numpy", NumpyBrute), *factories]:
            if key != "numpy" and key not in args.methods:
                continue
            method = factory(work.gallery)
            got = measure(method, work, args.batches)
            base = base or got
            print(f"{spec.dim:>4}-d {size:>9} {method.name[:60]:<60} single p50 {got['single_p50']:7.2f} ms  "
                  f"batch {got['batch_p50']:6.2f} ms/q  recall {got['recall_single']:.4f}/{got['recall_batch']:.4f}",
                  file=sys.stderr)  # fmt: skip
            rows.append(
                f"| {spec.name} ({spec.dim}-d) | {size:,} | {method.name} | {got['single_p50']:.2f} | "
                f"{got['single_p95']:.2f} | {got['batch_p50']:.2f} | {got['batch_p95']:.2f} | "
                f"{got['recall_single']:.4f} / {got['recall_batch']:.4f} | {got['recall_mated']:.4f} | "
                f"{base['single_p50'] / got['single_p50']:.1f}x | {base['batch_p50'] / got['batch_p50']:.1f}x | "
                f"{got['scanned'] / 2**20:,.1f} MB | {got['bytes']:,.0f} |"
            )
            if isinstance(method, Ours):
                churn = method.churn() if key == "ours" else None
                size_notes.append(
                    f"{method.name}: added {method.rss_per_million:,.0f} MB RSS per million templates "
                    f"({method.allocated_per_template:,.0f} bytes/template allocated, growth slack included; "
                    f"process RSS {method.rss_total / 1024:,.1f} GB with the bench's own copy of the gallery); "
                    f"in-memory enrolment {method.enrol_rate:,.0f} templates/s (upserts in pieces of 10k)"
                    + (
                        ""
                        if churn is None
                        else f"; one at a time: {churn['enrol_us']:,.0f} us per enrolment, {churn['remove_us']:,.0f} us "
                        f"per erasure (1,000 of each), {churn['found_at_once']:.0%} of re-enrolled faces their own "
                        "best match at the next search"
                    )
                )
            del method
        cost = rerank_store_cost(work)
        ivf = ivf_coverage(work, basis) if "ivf" in args.methods else None
        notes.append(
            f"- {spec.name}, N = {size:,} ({work.real_enrolled} real LFW templates among them; {population_note}). "
            + ". ".join(size_notes)
            + f". A float16 re-rank store is off by up to {cost['float16_error']:.1e} in cosine and changes the "
            f"top-10 of {cost['float16_changed']:.1%} of queries; 8-bit codes by up to {cost['int8_error']:.1e}, "
            f"changing {cost['int8_changed']:.1%}." + ("" if ivf is None else f" An {ivf}.")
        )
        del work
    return rows, notes, population


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mobilefacenet", "fr_feature"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=300, help="single queries per size")
    parser.add_argument("--batches", type=int, default=5, help="batches of 64 per size")
    parser.add_argument("--enrol", type=int, default=10_000, help="templates enrolled through Redis (0: skip)")
    parser.add_argument(
        "--methods", nargs="+", choices=METHODS, default=list(METHODS), help="beside numpy, which always runs"
    )
    parser.add_argument("--lfw", type=Path, default=ROOT.parent / "shared" / "lfw-calib")
    parser.add_argument("--cpu", type=int, default=None, help="core to pin to (default: the last one)")
    parser.add_argument("--results", type=Path, help="write the tables into this Markdown file")
    args = parser.parse_args()

    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    table = [
        "| model | N | method | single p50 ms | single p95 ms | batch-64 p50 ms/query | batch-64 p95 ms/query | "
        "recall@10 single / batch | recall@10 mated | single vs numpy | batch vs numpy | scanned per query | "
        "bytes/template |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    extras: list[str] = []
    for model in args.models:
        rows, notes, population = run_model(model, args)
        table += rows
        extras += notes
        if args.enrol:
            enrol = enrolment_through_redis(model, population, args.enrol)
            if "refused" in enrol:
                extras.append(f"- {model} through Redis: not measured, the gallery refused it: {enrol['refused']}")
            elif enrol:
                extras.append(
                    f"- {model} through Redis (private redis-server, AOF everysec, loopback), {args.enrol:,} "
                    f"templates: `KYCDeepFaceDB.set` {enrol['set']:,.0f}/s (one client, one round trip each); a "
                    f"second instance replays the log at {enrol['replay']:,.0f} ops/s; a fresh instance loads the "
                    f"gallery at {enrol['load']:,.0f} templates/s. `find_faces` end to end (log check round trip, "
                    f"decode, search, documents) at that size: p50 {enrol['find_p50']:.2f} ms, p95 "
                    f"{enrol['find_p95']:.2f} ms; `find_faces_many` of 64: {enrol['find_batch']:.2f} ms per query."
                )
    text = (
        f"Top-{K} search, one core (pinned to CPU {cpu}, every library on one thread); per model, real "
        f"`lfw-calib` templates and queries of identities the projection was not fitted on, in a synthetic "
        f"population with their second moments ({args.queries} single queries: a third real mates, a third "
        f"synthetic mates, a third real strangers; {args.batches} batches of {BATCH}). Ratios are speed-ups "
        "over numpy (higher is faster). 'scanned per query' is what the pass over every template reads; "
        "bytes/template counts the float32 matrix and codes of rows in use, not ids.\n\n"
        + "\n".join(table)
        + "\n\n"
        + "\n".join(extras)
        + "\n\n"
        + machine()
    )
    return publish(text, args.results, HEADING)


if __name__ == "__main__":
    sys.exit(main())
