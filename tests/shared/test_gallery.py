"""KYCDeepFaceDB end to end: real embeddings of ../shared/faces, real Redis, real files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from harness import RedisServer
from shared import features
from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.gallery import KYCDeepFaceDB
from shared.schemas import ErrorResult, FacesResult, FindManyResult
from tests.conftest import load_photos

pytestmark = pytest.mark.services

PHOTOS = load_photos()
# The partial and small Obama crops are the same photo as fr_obama.jpg: not independent probes.
CROPS = {"fr_obama_partial_face.jpg", "fr_obama_partial_face2.jpg", "fr_obama_small.jpg"}
SINGLE = [p for p in PHOTOS if p.identity not in ("multi", "noface") and p.file not in CROPS]
STRANGER = "astronaut"


@pytest.fixture(scope="module")
def embedded(engine: KYCDeepFace) -> dict[str, list[str]]:
    """identity -> features of each of its photos, in labels.csv order."""
    out: dict[str, list[str]] = {}
    for photo in SINGLE:
        result = engine.get_faces(photo.path.read_bytes())
        assert isinstance(result, FacesResult) and len(result.faces) == 1, photo.file
        out.setdefault(photo.identity, []).append(result.faces[0].features)
    return out


@pytest.fixture()
def gallery_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"gallery_file_dir": tmp_path / "galleries", "redis_url": None})


@pytest.fixture()
def redis_db(gallery_settings: Settings, redis_url: str) -> Iterator[KYCDeepFaceDB]:
    with KYCDeepFaceDB("customers", settings=_with_redis(gallery_settings, redis_url)) as db:
        yield db


def _with_redis(settings: Settings, url: str) -> Settings:
    return settings.model_copy(update={"redis_url": url, "gallery_store": "redis"})


def enrol_first_photos(db: KYCDeepFaceDB, embedded: dict[str, list[str]]) -> None:
    for identity, feats in embedded.items():
        if identity != STRANGER:
            assert db.set(identity, feats[0])["code"] == "SUCCESS"


def test_other_photos_find_their_identity_first_and_verified(
    redis_db: KYCDeepFaceDB, embedded: dict[str, list[str]]
) -> None:
    enrol_first_photos(redis_db, embedded)
    assert redis_db.count() == len(embedded) - 1
    probes = [(identity, f) for identity, feats in embedded.items() if identity != STRANGER for f in feats[1:]]
    assert len(probes) >= 12
    for identity, probe in probes:
        many = redis_db.find_faces(probe, top_k=3)
        assert isinstance(many, FindManyResult)
        assert many.candidates[0].face_id == identity
        assert many.gallery_size == len(embedded) - 1
        found = redis_db.find_face(probe)
        assert found["found"] == identity and found["verified"] is True, (identity, found)
        # The confidence is the same map as 1:1 matching.
        assert found["confidence"] == many.candidates[0].confidence


def test_stranger_is_not_verified(redis_db: KYCDeepFaceDB, embedded: dict[str, list[str]]) -> None:
    enrol_first_photos(redis_db, embedded)
    result = redis_db.find_face(embedded[STRANGER][0]).model_dump()
    assert set(result) == {"code", "found", "confidence", "verified"}
    assert result["code"] == "SUCCESS" and result["found"] is None and result["verified"] is False
    assert result["confidence"] < 0.76


def test_gallery_threshold_is_never_below_one_to_one(redis_db: KYCDeepFaceDB, embedded: dict[str, list[str]]) -> None:
    model_id = features.decode(embedded["obama"][0]).model_id
    cmap = redis_db.confidence_map(model_id)
    one_to_one = cmap.cosine_for(redis_db.verify_confidence)
    sizes = [1, 10, 100, 1000, 100_000]
    cuts = [redis_db.threshold(model_id, n) for n in sizes]
    assert cuts[0] == pytest.approx(one_to_one)
    assert cuts == sorted(cuts) and cuts[-1] > cuts[2] > one_to_one


def test_delete_erases_everywhere(gallery_settings: Settings, redis_url: str, embedded: dict[str, list[str]]) -> None:
    settings = _with_redis(gallery_settings, redis_url)
    with KYCDeepFaceDB("customers", settings=settings) as a, KYCDeepFaceDB("customers", settings=settings) as b:
        enrol_first_photos(a, embedded)
        probe = embedded["biden"][1]
        assert b.find_face(probe)["found"] == "biden"  # B loads the gallery A wrote
        assert a.delete("biden").model_dump() == {
            "code": "SUCCESS",
            "gallery": "customers",
            "face_id": "biden",
            "deleted": True,
            "documents_redacted": 0,  # the library's delete: job results are a delete job's to redact
        }
        assert b.find_face(probe)["found"] is None  # B's cached index dropped it
        assert "biden" not in [c.face_id for c in b.find_faces(probe, top_k=20).candidates]  # type: ignore[union-attr]
        assert b.get("biden")["features"] is None
        assert a.delete("biden")["deleted"] is False
        # ... and a set in A is seen by B's very next search (incremental, no reload).
        assert a.set("biden", embedded["biden"][0])["code"] == "SUCCESS"
        assert b.find_face(probe)["found"] == "biden"


def test_templates_survive_a_redis_restart(
    gallery_settings: Settings, tmp_path: Path, embedded: dict[str, list[str]]
) -> None:
    server = RedisServer(tmp_path, appendonly=True)
    server.start()
    try:
        settings = _with_redis(gallery_settings, server.url)
        with KYCDeepFaceDB("watchlist", settings=settings) as db:
            enrol_first_photos(db, embedded)
        server.stop(hard=True)  # a crash: only the AOF (fsync always) survives
        server.start()
        with KYCDeepFaceDB("watchlist", settings=settings) as fresh:  # a restarted worker
            assert fresh.count() == len(embedded) - 1
            assert fresh.find_face(embedded["obama"][1])["found"] == "obama"
    finally:
        server.stop()


def test_named_galleries_are_separate(redis_db: KYCDeepFaceDB, gallery_settings: Settings, redis_url: str,
                                      embedded: dict[str, list[str]]) -> None:  # fmt: skip
    enrol_first_photos(redis_db, embedded)
    with KYCDeepFaceDB("watchlist", settings=_with_redis(gallery_settings, redis_url)) as watchlist:
        assert watchlist.count() == 0
        assert watchlist.find_face(embedded["obama"][1]).model_dump() == {"code": "SUCCESS", "found": None, "confidence": 0.0,
                                                             "verified": False}  # fmt: skip


def test_bad_input_is_an_error_document(redis_db: KYCDeepFaceDB, embedded: dict[str, list[str]]) -> None:
    good = embedded["obama"][0]
    for call in (
        lambda: redis_db.set("x", "not base64!"),
        lambda: redis_db.set("", good),
        lambda: redis_db.set("bad\nid", good),
        lambda: redis_db.set("x", None),
        lambda: redis_db.find_face("AAAA"),
        lambda: redis_db.find_faces(good, top_k=0),
        lambda: redis_db.get(""),
        lambda: redis_db.delete(123),  # type: ignore[arg-type]
    ):
        result = call()
        assert isinstance(result, ErrorResult), result
        assert result["code"] == "ERROR" and result["message"]


def test_mixed_models_are_refused(redis_db: KYCDeepFaceDB, embedded: dict[str, list[str]],
                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    enrol_first_photos(redis_db, embedded)
    vector = features.decode(embedded["obama"][0]).vector
    foreign = features.encode("sface-2021dec@0123456789ab", vector)
    # Unknown to the registry: refused before it reaches the store.
    assert redis_db.set("someone", foreign)["code"] == "ERROR"
    # Known model, but not the gallery's: the store refuses it atomically.
    real_map = redis_db.confidence_map(features.decode(embedded["obama"][0]).model_id)
    monkeypatch.setattr(KYCDeepFaceDB, "confidence_map", lambda self, model_id: real_map)
    refused = redis_db.set("someone", foreign)
    assert refused["code"] == "ERROR" and "refusing features of" in refused["message"]
    searched = redis_db.find_face(foreign)
    assert searched["code"] == "ERROR" and "holds" in searched["message"]
    assert redis_db.count() == len(embedded) - 1


def test_file_store_persists_without_redis(gallery_settings: Settings, embedded: dict[str, list[str]]) -> None:
    assert gallery_settings.resolved_redis_url() is None
    with KYCDeepFaceDB("customers", settings=gallery_settings) as db:
        enrol_first_photos(db, embedded)
        assert db.delete("obama")["deleted"] is True
    path = gallery_settings.gallery_file_dir / "customers.sqlite3"
    assert path.is_file()
    with KYCDeepFaceDB("customers", settings=gallery_settings) as again:
        assert again.count() == len(embedded) - 2
        assert again.find_face(embedded["biden"][1])["found"] == "biden"
        assert again.find_face(embedded["obama"][1])["found"] is None
    # Erasure: the deleted template's bytes are nowhere in the file (secure_delete, WAL truncated).
    obama_bytes = features.decode(embedded["obama"][0]).vector.astype("<f4").tobytes()
    on_disk = b"".join(p.read_bytes() for p in path.parent.iterdir())
    assert embedded["obama"][0].encode() not in on_disk and obama_bytes not in on_disk


def test_batch_search_matches_single(redis_db: KYCDeepFaceDB, embedded: dict[str, list[str]]) -> None:
    enrol_first_photos(redis_db, embedded)
    probes = [f for feats in embedded.values() for f in feats] * 2  # >= 8 queries: the batched kernel
    batch = redis_db.find_faces_many([*probes, "garbage"], top_k=3)
    assert isinstance(batch[-1], ErrorResult)
    for probe, got in zip(probes, batch, strict=False):
        single = redis_db.find_faces(probe, top_k=3)
        assert isinstance(got, FindManyResult) and isinstance(single, FindManyResult)
        assert got.candidates == single.candidates


def test_two_shards_answer_like_one(gallery_settings: Settings, redis_url: str, embedded: dict[str, list[str]]) -> None:
    settings = _with_redis(gallery_settings, redis_url)
    real = features.decode(embedded["obama"][0])
    rng = np.random.default_rng(3)
    # Real faces plus 300 templates of the same model, so both shards hold plenty. Fillers are random
    # mixtures of the real templates: they lie where face templates lie (an isotropic random vector
    # would not, and the gallery's first pass is built for face templates). Not of Obama's, whom the
    # test deletes and then expects to find nowhere.
    base = np.stack([features.decode(f).vector for name, feats in embedded.items() if name != "obama" for f in feats])
    fillers = {f"filler-{i}": features.encode(real.model_id, rng.standard_normal(len(base)) @ base) for i in range(300)}
    one = KYCDeepFaceDB("sharded", settings=settings)
    two = KYCDeepFaceDB("sharded", settings=settings.model_copy(update={"gallery_shards": 2}))
    with one, two:
        for db in (one, two):
            enrol_first_photos(db, embedded)
            for face_id, value in fillers.items():
                db.set(face_id, value)
        assert [store.count() for store in two.stores] == [pytest.approx(157, abs=40)] * 2
        assert one.count() == two.count()
        probes = [f for feats in embedded.values() for f in feats] + list(fillers.values())[:20]
        for probe in probes:
            assert one.find_faces(probe, top_k=5).model_dump() == two.find_faces(probe, top_k=5).model_dump()
        assert [r.model_dump() for r in one.find_faces_many(probes, 5)] == [
            r.model_dump() for r in two.find_faces_many(probes, 5)
        ]
        assert two.delete("obama")["deleted"] is True
        assert two.find_face(embedded["obama"][1])["found"] is None
