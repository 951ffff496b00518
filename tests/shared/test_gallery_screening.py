"""Rescreen and dedupe on real embeddings: the hits, the chunking and the reports."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import redis

from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.gallery import KYCDeepFaceDB
from shared.gallery.runs import RunStore
from shared.gallery.screening import Hit, merge_hits, plan, report, run_in_process, screen_chunk
from shared.schemas import FacesResult
from shared.storage import LocalStore
from tests.conftest import FACES_DIR

pytestmark = pytest.mark.services


def features_of(engine: KYCDeepFace, name: str) -> str:
    result = engine.get_faces((FACES_DIR / name).read_bytes())
    assert isinstance(result, FacesResult) and len(result.faces) == 1
    return result.faces[0].features


@pytest.fixture()
def screen_settings(settings: Settings, tmp_path: Path, redis_url: str) -> Settings:
    return settings.model_copy(
        update={
            "redis_url": redis_url,
            "gallery_store": "redis",
            "gallery_chunk_size": 3,  # several chunks even for a handful of faces
            "gallery_report_prefix": str(tmp_path / "reports"),
        }
    )


@pytest.fixture()
def galleries(engine: KYCDeepFace, screen_settings: Settings) -> tuple[KYCDeepFaceDB, KYCDeepFaceDB]:
    customers = KYCDeepFaceDB("customers", settings=screen_settings)
    watchlist = KYCDeepFaceDB("watchlist", settings=screen_settings)
    for face_id, photo in {
        "acct-obama": "fr_obama.jpg", "acct-biden": "fr_biden.jpg", "acct-1": "df_img11.jpg",
        "acct-2": "df_img12.jpg", "acct-3": "df_img17.jpg", "acct-4": "df_img50.jpg",
        "acct-1-again": "df_img5.jpg",  # the same person as acct-1, under another account
    }.items():  # fmt: skip
        assert customers.set(face_id, features_of(engine, photo))["code"] == "SUCCESS"
    for face_id, photo in {"wanted-obama": "fr_obama2.jpg", "wanted-astronaut": "sk_astronaut.png"}.items():
        assert watchlist.set(face_id, features_of(engine, photo))["code"] == "SUCCESS"
    return customers, watchlist


def test_rescreen_finds_the_customer_on_the_watchlist(
    galleries: tuple[KYCDeepFaceDB, KYCDeepFaceDB], screen_settings: Settings, tmp_path: Path
) -> None:
    customers, watchlist = galleries
    store = LocalStore(screen_settings.max_image_bytes)
    result, refs = run_in_process("rescreen", customers, watchlist, store, screen_settings)
    assert result.chunks == 3 and result.faces_screened == 7
    assert [(h.face_id, h.match_id) for h in result.hits] == [("acct-obama", "wanted-obama")]
    doc = json.loads(Path(refs["json"]).read_text())
    assert doc["kind"] == "rescreen" and doc["gallery"] == "customers" and doc["against"] == "watchlist"
    assert doc["hits"][0]["face_id"] == "acct-obama" and "features" not in json.dumps(doc)
    rows = list(csv.DictReader(io.StringIO(Path(refs["csv"]).read_text())))
    assert [(r["face_id"], r["match_id"]) for r in rows] == [("acct-obama", "wanted-obama")]


def test_dedupe_finds_one_person_under_two_accounts(
    galleries: tuple[KYCDeepFaceDB, KYCDeepFaceDB], screen_settings: Settings
) -> None:
    customers, _ = galleries
    store = LocalStore(screen_settings.max_image_bytes)
    result, _refs = run_in_process("dedupe", customers, customers, store, screen_settings)
    assert [(h.face_id, h.match_id) for h in result.hits] == [("acct-1", "acct-1-again")]


def test_chunks_fan_in_once_even_when_redelivered(
    galleries: tuple[KYCDeepFaceDB, KYCDeepFaceDB], screen_settings: Settings, redis_url: str
) -> None:
    customers, _ = galleries
    run = plan("dedupe", customers, customers, screen_settings.gallery_chunk_size)
    runs = RunStore(redis.Redis.from_url(redis_url))
    runs.start(run, parts=run.n_chunks)
    parts = [screen_chunk("dedupe", customers, customers, chunk) for chunk in run.chunks]
    assert runs.add_part(run.run_id, 0, parts[0]) == 2
    assert runs.add_part(run.run_id, 0, parts[0]) == 2  # a redelivery counts once
    assert runs.add_part(run.run_id, 2, parts[2]) == 1
    assert runs.add_part(run.run_id, 1, parts[1]) == 0
    merged = merge_hits(runs.parts(run.run_id))
    assert merged == merge_hits(parts) and len(merged) == 1
    stored_plan = runs.plan(run.run_id)
    assert stored_plan is not None and stored_plan.n_chunks == 3 and stored_plan.chunks == []
    assert not runs.reported(run.run_id)
    runs.finish(run.run_id, {"json": "r.json", "csv": "r.csv"})
    assert runs.reported(run.run_id) and runs.parts(run.run_id) == []
    assert report(run, merged, 0.01).faces_screened == 7
    runs.close()


def test_merge_keeps_each_pair_once_best_first() -> None:
    a = Hit(face_id="a", match_id="b", similarity=0.5, confidence=0.9)
    a_again = Hit(face_id="a", match_id="b", similarity=0.6, confidence=0.95)
    c = Hit(face_id="c", match_id="d", similarity=0.7, confidence=0.99)
    assert merge_hits([[a], [a_again, c]]) == [c, a_again]


def test_dedupe_refuses_two_galleries(galleries: tuple[KYCDeepFaceDB, KYCDeepFaceDB]) -> None:
    from shared.errors import GalleryError

    with pytest.raises(GalleryError):
        plan("dedupe", *galleries, 10)


def test_per_shard_chunks_union_to_the_unsharded_answer(
    engine: KYCDeepFace, galleries: tuple[KYCDeepFaceDB, KYCDeepFaceDB], screen_settings: Settings
) -> None:
    customers, _ = galleries
    sharded = KYCDeepFaceDB("customers-2", settings=screen_settings.model_copy(update={"gallery_shards": 2}))
    with sharded:
        for face_id in customers.face_ids():
            sharded.set(face_id, customers.get(face_id)["features"])
        assert all(store.count() > 0 for store in sharded.stores)
        ids = customers.face_ids()
        per_shard = [screen_chunk("dedupe", sharded, sharded, ids, shard) for shard in range(2)]
        assert merge_hits(per_shard) == merge_hits([screen_chunk("dedupe", customers, customers, ids)])
