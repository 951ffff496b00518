"""The single-query first pass on 4-bit fast-scan codes: exact answers after the re-rank, rows kept
in step with the index through enrolment, replacement and erasure, and the float16 store option."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest

from bench.gallery_common import FacePopulation
from shared import features
from shared.config import Settings
from shared.gallery import KYCDeepFaceDB, kernels
from shared.gallery.fastscan import FastScanCodes
from shared.gallery.index import VectorIndex
from shared.gallery.projection import projection_for
from shared.models.registry import get_spec
from shared.schemas import FindManyResult


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute(matrix: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    return [int(i) for i in np.argsort(-(matrix @ q), kind="stable")[:k]]


def packed(codes: FastScanCodes) -> np.ndarray:
    """faiss's packed code buffer of ``codes`` (a copy)."""
    index = codes._index
    return faiss.rev_swig_ptr(index.codes.get(), index.codes.size()).copy()


@pytest.fixture()
def no_eight_bit_single_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any single query that falls back to the 8-bit scan: the fast path must answer it."""

    def refuse(*args: object) -> None:
        raise AssertionError("single query went through the 8-bit scan, not the fast scan")

    monkeypatch.setattr(kernels, "scan_one", refuse)


def test_codes_edited_in_place_equal_codes_built_afresh() -> None:
    """Replace, delete (the last row moved into the hole) and append after deletes: faiss's packed
    buffer ends up holding what a fresh build of the final rows holds, so search agrees too."""
    rng = np.random.default_rng(0)
    rows = unit(rng.standard_normal((150, 32)))
    codes = FastScanCodes(32)
    codes.append(rows[:100])
    expected = list(rows[:100])
    codes.set(5, rows[120])
    expected[5] = rows[120]
    for row in (7, 98, 31, 64):  # 98 is the last row by then: dropped without a move
        last = len(expected) - 1
        codes.pop_into(row)
        expected[row] = expected[last]
        expected.pop()
    codes.append(rows[100:150])
    expected += list(rows[100:150])
    fresh = FastScanCodes(32)
    fresh.append(np.stack(expected))
    assert len(codes) == len(fresh) == 146
    in_use = -(-146 // codes._packer.nvec) * codes._packer.block_size  # whole blocks of 32 rows
    assert np.array_equal(packed(codes)[:in_use], packed(fresh)[:in_use])
    for q in unit(rng.standard_normal((5, 32))):
        assert np.array_equal(codes.search(q, 146), fresh.search(q, 146))


def test_erasure_zeroes_every_code() -> None:
    """A deleted template leaves nothing behind in either code store or the float32 rows."""
    rng = np.random.default_rng(1)
    index = VectorIndex(128, shortlist=4)
    index.upsert([f"f{i}" for i in range(300)], unit(rng.standard_normal((300, 128))))
    for i in rng.permutation(300):
        assert index.remove(f"f{i}")
    assert index._fast is not None and len(index._fast) == 0
    assert not packed(index._fast).any() and not index._codes.any() and not index._vectors.any()


@pytest.mark.usefixtures("no_eight_bit_single_scan")
def test_single_queries_get_the_exact_top_k_through_the_fast_scan() -> None:
    """A population shaped like real embeddings (model-free stand-in), mates and strangers: the
    ids and cosines after the re-rank are brute force's, and a mate is its query's top-1."""
    population = FacePopulation.synthetic(128, seed=3)
    gallery, centres = population.gallery(6000)
    mates = population.samples(centres[:20])
    strangers = population.samples(population.centres(20))
    index = VectorIndex(128, shortlist=32)  # hands 256 of 6,000 rows to the 8-bit codes
    index.upsert([str(i) for i in range(len(gallery))], gallery)
    assert index.bytes_scanned == 6000 * 32  # 4 bits per two coordinates
    for q in np.vstack([mates, strangers]):
        ((ids, sims),) = index.search(q[None, :], 10)
        rows = [int(i) for i in ids]
        assert rows == brute(gallery, q, 10)
        assert np.allclose(sims, gallery[rows] @ q, rtol=0, atol=1e-6)  # float32 cosines
    for q in mates:  # top-1 alone (a shorter keep): numpy's exact answer
        ((ids, _),) = index.search(q[None, :], 1)
        assert [int(ids[0])] == brute(gallery, q, 1)


@pytest.mark.usefixtures("no_eight_bit_single_scan")
def test_512d_projected_gallery_uses_the_fast_scan_and_stays_exact() -> None:
    """With the shipped fr_feature projection the fast scan reads 32 bytes per template."""
    spec = get_spec("fr_feature", "embedding")
    basis = projection_for(spec.model_id, spec.dim)
    assert basis is not None
    rng = np.random.default_rng(4)
    # Templates inside the model's subspace plus a little outside it, as real ones are.
    gallery = unit(rng.standard_normal((3000, 128)) @ basis.T + 0.02 * rng.standard_normal((3000, 512)))
    queries = unit(gallery[:10] + 0.3 * unit(rng.standard_normal((10, 512))))
    index = VectorIndex(512, shortlist=16, projection=basis)
    index.upsert([str(i) for i in range(3000)], gallery)
    assert index.bytes_per_template == 4 * 512 + 128 + 32
    for i, q in enumerate(queries):
        ((ids, _),) = index.search(q[None, :], 5)
        assert [int(x) for x in ids] == brute(gallery, q, 5)
        assert int(ids[0]) == i  # its mate


@pytest.mark.usefixtures("no_eight_bit_single_scan")
def test_enrol_replace_and_delete_are_seen_by_the_next_search() -> None:
    """Random enrolments, replacements (also twice in one call) and erasures, each followed by a
    search: an enrolled face is found at once as its own best match, an erased one never again,
    and the answers equal brute force over whatever is enrolled at that moment."""
    rng = np.random.default_rng(5)
    truth = {f"f{i}": v for i, v in enumerate(unit(rng.standard_normal((2000, 64))))}
    index = VectorIndex(64, shortlist=32)  # hands 256 of ~2,000 rows to the 8-bit codes
    index.upsert(list(truth), np.stack(list(truth.values())))
    for step in range(300):
        kind = step % 3
        if kind == 0:  # a new face
            face_id, vector = f"new{step}", unit(rng.standard_normal((1, 64)))[0]
            index.upsert([face_id], vector[None, :])
            truth[face_id] = vector
        elif kind == 1:  # a replacement, given twice in one call: the last one wins
            face_id = list(truth)[int(rng.integers(len(truth)))]
            first, vector = unit(rng.standard_normal((2, 64)))
            index.upsert([face_id, face_id], np.stack([first, vector]))
            truth[face_id] = vector
        else:  # an erasure
            face_id = list(truth)[int(rng.integers(len(truth)))]
            assert index.remove(face_id)
            del truth[face_id]
            vector = rng.standard_normal(64).astype(np.float32)
        ((ids, _),) = index.search(vector[None, :] / np.linalg.norm(vector), 10)
        if kind == 2:
            assert face_id not in ids
        else:
            assert ids[0] == face_id
        if step % 25 == 0:  # the edited index answers as one built afresh from what is enrolled
            fresh = VectorIndex(64, shortlist=32)
            fresh.upsert(list(truth), np.stack(list(truth.values())))
            for q in unit(rng.standard_normal((5, 64))):
                ((got, sims),) = index.search(q[None, :], 10)
                ((want, want_sims),) = fresh.search(q[None, :], 10)
                assert sorted(got) == sorted(want) and np.allclose(sims, want_sims, rtol=0, atol=1e-6)
    assert len(index) == len(truth)


def test_float16_store_halves_the_vectors_and_errs_only_on_near_ties() -> None:
    """float16 cosines are within 1e-4 of the exact ones, so the top-10 can differ from float32's
    only by swapping neighbours that close (the 512-d bench measures how often: never at 1M)."""
    population = FacePopulation.synthetic(128, seed=6)
    gallery, centres = population.gallery(4000)
    queries = np.vstack([population.samples(centres[:16]), population.samples(population.centres(16))])
    exact, half = VectorIndex(128, shortlist=32), VectorIndex(128, shortlist=32, float16=True)
    for index in (exact, half):
        index.upsert([str(i) for i in range(len(gallery))], gallery)
    assert exact.bytes_per_template - half.bytes_per_template == 2 * 128
    for q in queries:
        ((ids, sims),) = half.search(q[None, :], 10)
        ((_, exact_sims),) = exact.search(q[None, :], 10)
        true_sims = gallery[[int(i) for i in ids]] @ q
        assert np.abs(sims - true_sims).max() < 1e-4
        assert np.abs(np.sort(true_sims) - np.sort(exact_sims)).max() < 2e-4  # same cosines, ties aside
    vector = half.vector("0")
    assert vector is not None and vector.dtype == np.float32


# --- through KYCDeepFaceDB: two processes' replicas over one Redis --------------------------


@pytest.fixture()
def two_replicas(settings: Settings, redis_url: str, tmp_path: Path) -> Iterator[tuple[KYCDeepFaceDB, KYCDeepFaceDB]]:
    # A short shortlist so that a gallery of a few thousand already takes the fast path.
    shared = settings.model_copy(
        update={"redis_url": redis_url, "gallery_store": "redis", "gallery_shortlist": 8, "gallery_file_dir": tmp_path}
    )
    with KYCDeepFaceDB("fast", settings=shared) as writer, KYCDeepFaceDB("fast", settings=shared) as reader:
        yield writer, reader


@pytest.mark.services
@pytest.mark.usefixtures("no_eight_bit_single_scan")
def test_a_face_enrolled_in_one_process_is_found_at_once_in_another(
    two_replicas: tuple[KYCDeepFaceDB, KYCDeepFaceDB],
) -> None:
    writer, reader = two_replicas
    spec = get_spec(writer.settings.embedding_model, "embedding")
    rng = np.random.default_rng(7)
    vectors = unit(rng.standard_normal((1500, spec.dim)))
    for i, v in enumerate(vectors):
        assert writer.set(f"face-{i}", features.encode(spec.model_id, v))["code"] == "SUCCESS"
    assert reader.count() == 1500
    newcomer = unit(rng.standard_normal((1, spec.dim)))[0]
    probe = features.encode(spec.model_id, unit(newcomer[None, :] + 0.2 * unit(rng.standard_normal((1, spec.dim))))[0])

    def found(top_k: int) -> list[str]:
        result = reader.find_faces(probe, top_k=top_k)
        assert isinstance(result, FindManyResult), result
        return [c.face_id for c in result.candidates]

    assert "newcomer" not in found(1)
    assert writer.set("newcomer", features.encode(spec.model_id, newcomer))["code"] == "SUCCESS"
    assert found(1) == ["newcomer"]
    assert writer.delete("newcomer")["deleted"] is True
    assert "newcomer" not in found(10)
