"""The gallery's in-memory index against float32 brute force, and the 1:N threshold arithmetic."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bench.gallery_common import FacePopulation, lfw_faces
from shared.calibration import ConfidenceMap
from shared.config import Settings
from shared.gallery.index import VectorIndex
from shared.gallery.projection import projection_for
from shared.gallery.threshold import gallery_threshold, per_comparison_far
from shared.models.registry import get_spec
from tests.conftest import FACES_DIR, LFW_DIR, need


def unit(rng: np.random.Generator, n: int, dim: int = 128) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute(gallery: np.ndarray, queries: np.ndarray, k: int) -> list[list[int]]:
    sims = queries @ gallery.T
    return [list(np.argsort(-row, kind="stable")[:k]) for row in sims]


@pytest.mark.parametrize("n_queries", [1, 3, 16, 64], ids=lambda n: f"{n}q")
def test_top_k_matches_brute_force(n_queries: int) -> None:
    rng = np.random.default_rng(n_queries)
    gallery = unit(rng, 5000)
    # Half near-duplicates of gallery rows, half unrelated: both kinds of search.
    near = gallery[rng.integers(0, 5000, n_queries)] + 0.05 * unit(rng, n_queries)
    queries = np.vstack([near, unit(rng, n_queries)])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    index = VectorIndex(128)
    index.upsert([str(i) for i in range(5000)], gallery)
    truth = brute(gallery, queries, 10)
    for q, (ids, sims), expected in zip(queries, index.search(queries, 10), truth, strict=True):
        assert [int(i) for i in ids] == [int(i) for i in expected]
        assert np.allclose(sims, gallery[[int(i) for i in ids]] @ q, atol=1e-6)  # exact cosines


def test_updates_and_deletes_keep_the_index_exact() -> None:
    rng = np.random.default_rng(7)
    truth = {str(i): v for i, v in enumerate(unit(rng, 3000))}
    index = VectorIndex(128, shortlist=32)
    index.upsert(list(truth), np.stack(list(truth.values())))
    for face_id in [str(i) for i in rng.choice(3000, 1000, replace=False)]:
        assert index.remove(face_id)
        del truth[face_id]
    replaced = [str(i) for i in range(0, 3000, 7) if str(i) in truth]
    new_vectors = unit(rng, len(replaced))
    index.upsert(replaced, new_vectors)
    truth.update(zip(replaced, new_vectors, strict=True))
    assert len(index) == len(truth)
    ids = list(truth)
    matrix = np.stack([truth[i] for i in ids])
    queries = unit(rng, 20)
    for q, (got, _) in zip(queries, index.search(queries, 5), strict=True):
        assert got == [ids[j] for j in np.argsort(-(matrix @ q))[:5]]


def test_small_and_empty_galleries() -> None:
    index = VectorIndex(4)
    assert index.search(np.eye(4, dtype=np.float32)[:1], 10) == [([], pytest.approx(np.zeros(0)))]
    index.upsert(["a", "b"], np.eye(4, dtype=np.float32)[:2])
    ((ids, sims),) = index.search(np.eye(4, dtype=np.float32)[:1], 10)
    assert ids == ["a", "b"] and list(sims) == [1.0, 0.0]
    assert index.remove("a") and not index.remove("a")
    assert index.vector("a") is None and index.vector("b") is not None


@pytest.fixture(scope="module")
def fr_feature(settings: Settings) -> dict[str, Any]:
    """Real 512-d embeddings: every 8th ``lfw-calib`` image (the projection was fitted on all of
    them) and every single-face photo of ``../shared/faces`` (never fitted on)."""
    from shared.engine import KYCDeepFace

    need(LFW_DIR.is_dir() and FACES_DIR.is_dir(), "lfw-calib or the face photos are missing")
    spec = get_spec("fr_feature", "embedding")
    engine = KYCDeepFace(settings=settings.model_copy(update={"embedding_model": spec.name}))
    lfw, kept = lfw_faces(engine, sorted((LFW_DIR / "images").glob("*/*.jpg"))[::8])
    held_out = []
    for path in sorted(FACES_DIR.glob("*.jpg")):
        faces = [f.vector for f in engine.analyse(path.read_bytes(), embed_partial=True) if f.vector is not None]
        if len(faces) == 1:
            held_out.append(faces[0])
    return {
        "lfw": lfw,
        "names": np.array([path.parent.name for path in kept]),
        "held_out": np.stack(held_out).astype(np.float32),
        "projection": projection_for(spec.model_id, spec.dim),
    }


def test_a_512d_model_ships_a_first_pass_projection_for_its_exact_weights() -> None:
    spec = get_spec("fr_feature", "embedding")
    basis = projection_for(spec.model_id, spec.dim)
    assert basis is not None and basis.shape == (512, 128)
    assert np.allclose(basis.T @ basis, np.eye(128), atol=1e-5)  # orthonormal: dot products kept
    assert projection_for("fr_feature@000000000000", 512) is None  # other weights of the same name
    assert projection_for(get_spec("mobilefacenet", "embedding").model_id, 128) is None  # short: scanned as is
    with pytest.raises(ValueError):
        VectorIndex(256, projection=basis)


def test_real_512d_embeddings_get_their_exact_top_k(fr_feature: dict[str, Any]) -> None:
    """On real templates the projected first pass only picks rows: ids and cosines are brute force's."""
    gallery = fr_feature["lfw"]
    queries = np.vstack([fr_feature["held_out"], gallery[:20]])
    index = VectorIndex(512, shortlist=32, projection=fr_feature["projection"])
    assert index.code_dim == 128 and index.bytes_per_template == 4 * 512 + 128 + 32  # + the fast-scan code
    index.upsert([str(i) for i in range(len(gallery))], gallery)
    for q, (ids, sims), expected in zip(queries, index.search(queries, 10), brute(gallery, queries, 10), strict=True):
        rows = [int(i) for i in ids]
        assert rows == [int(i) for i in expected]
        assert np.allclose(sims, gallery[rows] @ q, rtol=0, atol=1e-6)  # float32 cosines, not 8-bit estimates


@pytest.mark.parametrize("n_queries", [5, 64], ids=["single", "batched"])
def test_recall_holds_on_a_population_shaped_like_real_embeddings(fr_feature: dict[str, Any], n_queries: int) -> None:
    """20k templates with the second moments of the real ones, real mates among them, real and
    synthetic queries: a shortlist of 64 (half the default, so that the small gallery is not
    searched almost whole) holds the exact top-10 (recall@10 >= 0.999)."""
    population = FacePopulation.fitted(fr_feature["lfw"], fr_feature["names"], seed=n_queries)
    synthetic, centres = population.gallery(20_000)
    real = fr_feature["lfw"]
    gallery = np.vstack([real, synthetic])
    rng = np.random.default_rng(n_queries)
    queries = np.vstack([
        fr_feature["held_out"],
        real[rng.integers(0, len(real), 20)],  # a query of an enrolled face: its mate is in the gallery
        population.samples(centres[rng.integers(0, len(centres), 40)]),
    ])  # fmt: skip
    index = VectorIndex(512, shortlist=64, projection=fr_feature["projection"])
    index.upsert([str(i) for i in range(len(gallery))], gallery)
    found = 0
    for start in range(0, len(queries), n_queries):
        chunk = queries[start : start + n_queries]
        for q, (ids, sims) in zip(chunk, index.search(chunk, 10), strict=True):
            exact = gallery @ q
            tenth = np.sort(exact)[-10]
            found += int((exact[[int(i) for i in ids]] >= tenth - 1e-6).sum())
            assert np.allclose(sims, exact[[int(i) for i in ids]], atol=1e-6)
    assert found / (10 * len(queries)) >= 0.999


CMAP = ConfidenceMap(
    model_id="m@0", slope=30.0, threshold=0.33, anchor=0.76, far=1e-3,
    far_table=[(1e-1, 0.14), (1e-2, 0.25), (1e-3, 0.33), (1e-4, 0.40), (1e-5, 0.46)],
    fitted_on="test", metrics={},
)  # fmt: skip


def test_per_comparison_far_inverts_fpir() -> None:
    for n in (1, 10, 1000, 10**6):
        f = per_comparison_far(0.01, n)
        assert -np.expm1(n * np.log1p(-f)) == pytest.approx(0.01, rel=1e-9)
    assert per_comparison_far(0.01, 0) == pytest.approx(0.01)


def test_gallery_threshold_rises_with_size_from_the_one_to_one_floor() -> None:
    floor = CMAP.cosine_for(0.76)
    assert gallery_threshold(CMAP, 0.01, 1, 0.76) == pytest.approx(floor)
    assert gallery_threshold(CMAP, 0.01, 100, 0.76) == pytest.approx(0.40, abs=1e-3)  # f = 1e-4
    assert gallery_threshold(CMAP, 0.01, 1000, 0.76) == pytest.approx(0.46, abs=1e-3)  # f = 1e-5
    assert gallery_threshold(CMAP, 0.01, 10**6, 0.76) > 0.46  # extrapolated, stated as such
