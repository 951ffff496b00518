"""Gallery jobs and tasks on a real `celery -A workers worker` (real models, Redis, moto S3).

The worker runs with two shards, and also serves the second shard's queue, so every search job
fans out through ``kyc.gallery.search_shard``; its answers must equal the in-process ones of a
sharded and of an unsharded gallery holding the same faces.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from harness import CeleryWorker, S3Endpoint
from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.gallery import KYCDeepFaceDB
from shared.jobs import JobStatus
from shared.producer import Producer
from tests.conftest import celery_worker, features_of, pipeline_env
from workers.gallery_schedule import SCREEN_TASK, beat_entries

pytestmark = [pytest.mark.e2e, pytest.mark.services, pytest.mark.slow]

ENROL = {"obama": "fr_obama.jpg", "biden": "fr_biden.jpg", "id-01": "df_img11.jpg", "id-02": "df_img12.jpg"}
PROBES = {"obama": "fr_obama2.jpg", "biden": "fr_biden2.jpg", "id-01": "df_img5.jpg", "id-02": "df_img55.jpg"}


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reports")


@pytest.fixture(scope="module")
def worker(
    broker_url: str, photos_s3: S3Endpoint, reports: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CeleryWorker]:
    env = pipeline_env(
        broker_url, photos_s3, KYC_GALLERY_SHARDS="2", KYC_GALLERY_CHUNK_SIZE="2",
        KYC_GALLERY_REPORT_PREFIX=str(reports) + "/", KYC_GALLERY_FANOUT_TIMEOUT_S="20",
    )  # fmt: skip
    with celery_worker(env, tmp_path_factory.mktemp("worker"), 2, queues="kyc.heavy,kyc.light,kyc.gallery.shard1") as w:
        yield w


@pytest.fixture(scope="module")
def settings_2(broker_url: str, photos_s3: S3Endpoint) -> Settings:
    return Settings(
        broker_url=broker_url,
        s3_endpoint_url=photos_s3.url,
        s3_bucket=photos_s3.bucket,
        s3_results_bucket=photos_s3.results_bucket,
        gallery_shards=2,
    )


@pytest.fixture(scope="module")
def producer(worker: CeleryWorker, settings_2: Settings) -> Iterator[Producer]:
    p = Producer(settings_2)
    yield p
    p.close()


def ref(name: str) -> str:
    return f"s3://kyc-images/faces/{name}"


def run(producer: Producer, kind: str, **inputs: str) -> dict[str, object]:
    doc = producer.wait_for(producer.submit(kind, inputs).job_id, timeout_s=120)
    assert doc.status is JobStatus.SUCCEEDED, doc.error
    assert doc.result is not None
    return doc.result


@pytest.fixture(scope="module")
def enrolled(producer: Producer) -> None:
    for face_id, photo in ENROL.items():
        assert run(producer, "enroll", gallery="customers", face_id=face_id, probe=ref(photo))["face_id"] == face_id


def test_search_jobs_fan_out_and_equal_in_process(
    enrolled: None, producer: Producer, worker: CeleryWorker, engine: KYCDeepFace, settings_2: Settings
) -> None:
    sharded = KYCDeepFaceDB("customers", settings=settings_2)
    unsharded = KYCDeepFaceDB("customers-1", settings=settings_2.model_copy(update={"gallery_shards": 1}))
    with sharded, unsharded:
        assert [store.count() for store in sharded.stores] == [2, 2]  # both shards hold faces
        for face_id, photo in ENROL.items():
            unsharded.set(face_id, features_of(engine, photo))
        for face_id, photo in PROBES.items():
            answer = run(producer, "search", gallery="customers", probe=ref(photo), top_k="3")
            candidates = answer["candidates"]
            assert isinstance(candidates, list) and candidates[0]["face_id"] == face_id
            assert candidates[0]["verified"] is True and answer["gallery_size"] == 4
            probe = features_of(engine, photo)
            assert answer == sharded.find_faces(probe, top_k=3).model_dump(mode="json")
            assert answer == unsharded.find_faces(probe, top_k=3).model_dump(mode="json")
            # A features string is a probe too.
            assert run(producer, "search", gallery="customers", probe=probe, top_k="3") == answer
    log = worker.log_path.read_text()
    assert "kyc.gallery.search_shard" in log and "did not answer in time" not in log


def test_delete_job_erases_the_face(enrolled: None, producer: Producer) -> None:
    assert run(producer, "enroll", gallery="leavers", face_id="x", probe=ref("fr_obama.jpg"))["code"] == "SUCCESS"
    assert run(producer, "delete", gallery="leavers", face_id="x")["deleted"] is True
    answer = run(producer, "search", gallery="leavers", probe=ref("fr_obama2.jpg"), top_k="1")
    assert answer["candidates"] == [] and answer["gallery_size"] == 0


def test_bad_gallery_requests_are_refused_at_submit(worker: CeleryWorker, producer: Producer) -> None:
    from shared.errors import JobError

    for inputs in (
        {"gallery": "bad name", "face_id": "x", "probe": ref("fr_obama.jpg")},
        {"gallery": "g", "face_id": "", "probe": ref("fr_obama.jpg")},
        {"gallery": "g", "face_id": "x", "probe": "s3://Bad_Bucket/x"},
    ):
        with pytest.raises(JobError):
            producer.submit("enroll", inputs)
    with pytest.raises(JobError):
        producer.submit("search", {"gallery": "g", "probe": ref("fr_obama.jpg"), "top_k": "0"})


def test_probe_without_exactly_one_face_fails_the_job(worker: CeleryWorker, producer: Producer) -> None:
    doc = producer.submit("enroll", {"gallery": "g", "face_id": "x", "probe": ref("fr_two_people.jpg")})
    final = producer.wait_for(doc.job_id, timeout_s=120)
    assert final.status is JobStatus.FAILED and final.error is not None
    assert "exactly one usable face" in final.error.message


def test_scheduled_rescreen_writes_reports(
    enrolled: None, worker: CeleryWorker, broker_url: str, reports: Path, engine: KYCDeepFace, settings_2: Settings
) -> None:
    with KYCDeepFaceDB("watchlist", settings=settings_2) as watchlist:
        watchlist.set("wanted-biden", features_of(engine, "fr_biden2.jpg"))
        watchlist.set("wanted-astronaut", features_of(engine, "sk_astronaut.png"))
    client = Celery(broker=broker_url)
    try:
        client.send_task(SCREEN_TASK, args=["rescreen", "customers", "watchlist"], queue="kyc.heavy")
        client.send_task(SCREEN_TASK, args=["dedupe", "customers", "customers"], queue="kyc.heavy")
    finally:
        client.close()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(reports.glob("*.json"))) < 2:
        time.sleep(0.2)
    by_kind = {doc["kind"]: doc for doc in (json.loads(p.read_text()) for p in reports.glob("*.json"))}
    assert set(by_kind) == {"rescreen", "dedupe"}
    rescreen = by_kind["rescreen"]
    assert rescreen["faces_screened"] == 4 and rescreen["chunks"] == 2  # chunks of 2, fanned out
    assert [(h["face_id"], h["match_id"]) for h in rescreen["hits"]] == [("biden", "wanted-biden")]
    assert by_kind["dedupe"]["hits"] == []  # four different people
    assert len(list(reports.glob("*.csv"))) == 2


def test_beat_schedule_comes_from_settings() -> None:
    settings = Settings(
        gallery_rescreen=["customers:watchlist"], gallery_dedupe=["customers"], gallery_screen_interval_s=60
    )
    entries = beat_entries(settings)
    assert entries["gallery-rescreen-customers-watchlist"]["args"] == ("rescreen", "customers", "watchlist")
    assert entries["gallery-dedupe-customers"]["schedule"] == 60
    from workers.app import create_app

    assert "gallery-dedupe-customers" in create_app(settings).conf.beat_schedule
    from shared.errors import GalleryError

    with pytest.raises(GalleryError):
        beat_entries(Settings(gallery_rescreen=["customers"]))
