"""End to end on real parts: private redis-server, moto S3 over HTTP, a `celery -A workers worker`
subprocess with the real models. Jobs go in through the producer; answers are compared with
what the engine gives in-process for the same bytes."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared import keys
from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.errors import FeaturesError, JobError
from shared.jobs import JobStatus
from shared.producer import Producer
from shared.schemas import to_dict
from tests.conftest import (
    FACES_DIR,
    Photo,
    S3Endpoint,
    celery_worker,
    features_of,
    pipeline_env,
)

pytestmark = [pytest.mark.e2e, pytest.mark.services, pytest.mark.slow]


@pytest.fixture(scope="module")
def worker(broker_url: str, photos_s3: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with celery_worker(pipeline_env(broker_url, photos_s3), tmp_path_factory.mktemp("worker")):
        yield


@pytest.fixture()
def producer(worker: None, broker_url: str, photos_s3: S3Endpoint) -> Iterator[Producer]:
    settings = Settings(
        broker_url=broker_url,
        s3_endpoint_url=photos_s3.url,
        s3_bucket=photos_s3.bucket,
        s3_results_bucket=photos_s3.results_bucket,
    )
    p = Producer(settings)
    yield p
    p.close()


def ref(name: str) -> str:
    return f"s3://kyc-images/faces/{name}"


def test_faces_jobs_equal_the_engine_in_process(producer: Producer, engine: KYCDeepFace, photos: list[Photo]) -> None:
    docs = [producer.submit_faces(ref(p.file)) for p in photos]
    for photo, doc in zip(photos, docs, strict=True):
        final = producer.wait_for(doc.job_id, timeout_s=120)
        assert final.status is JobStatus.SUCCEEDED, final.error
        assert final.result == to_dict(engine.get_faces(photo.path.read_bytes())), photo.file
        assert final.attempts == 1
        assert final.started_at is not None and final.finished_at is not None
        assert {"queue_s", "fetch_s", "compute_s"} <= set(final.timings)


def test_same_job_id_twice_is_one_job_and_one_document(producer: Producer, broker_url: str) -> None:
    job_id = f"case-{uuid.uuid4().hex[:8]}:faces"
    first = producer.submit_faces(ref("fr_obama.jpg"), job_id=job_id)
    second = producer.submit_faces(ref("fr_obama.jpg"), job_id=job_id)
    assert second.job_id == first.job_id and second.created_at == first.created_at
    final = producer.wait_for(job_id)
    # A third submit after the answer returns the answer itself, and runs nothing.
    assert producer.submit_faces(ref("fr_obama.jpg"), job_id=job_id) == final
    assert final.attempts == 1
    client = redis.Redis.from_url(broker_url)
    assert int(client.get(keys.job_attempts_key(job_id)) or 0) == 1
    with pytest.raises(JobError, match="different"):
        producer.submit_faces(ref("fr_biden.jpg"), job_id=job_id)


def test_missing_object_fails_with_a_clear_error_and_no_retry(producer: Producer) -> None:
    final = producer.wait_for(producer.submit_faces(ref("no-such-photo.jpg")).job_id)
    assert final.status is JobStatus.FAILED
    assert final.error is not None
    assert final.error.code == "ERROR"
    assert final.error.type == "ObjectNotFoundError"
    assert "no-such-photo.jpg" in final.error.message and "no such object" in final.error.message
    assert final.attempts == 1 and final.result is None


def test_corrupt_image_is_an_answer(producer: Producer, photos_s3: S3Endpoint) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=photos_s3.url, region_name="us-east-1")
    truncated = (FACES_DIR / "fr_obama.jpg").read_bytes()[:2000]
    client.put_object(Bucket="kyc-images", Key="faces/corrupt.jpg", Body=truncated)
    final = producer.wait_for(producer.submit_faces(ref("corrupt.jpg")).job_id)
    assert final.status is JobStatus.SUCCEEDED
    assert final.result is not None and final.result["code"] == "INVALID_IMAGE"


@pytest.mark.parametrize(
    ("selfie", "document", "code", "verified"),
    [
        ("fr_obama.jpg", "fr_obama2.jpg", "SUCCESS", True),
        ("fr_obama.jpg", "fr_biden.jpg", "SUCCESS", False),
        ("fr_two_people.jpg", "fr_obama2.jpg", "MULTIPLE_FACES", False),
        ("sk_coffee.png", "fr_obama2.jpg", "NO_FACE", False),
    ],
)
def test_verify(producer: Producer, selfie: str, document: str, code: str, verified: bool) -> None:
    final = producer.wait_for(producer.submit_verify(ref(selfie), ref(document)).job_id)
    assert final.status is JobStatus.SUCCEEDED, final.error
    assert final.result is not None
    assert final.result["code"] == code
    assert final.result["verified"] is verified
    if code == "SUCCESS":
        assert final.result["selfie_face"] == 0 and final.result["document_face"] is not None
    else:
        assert final.result["image"] == "selfie" and final.result["message"]


def test_match_job_equals_the_engine(producer: Producer, engine: KYCDeepFace) -> None:
    a = features_of(engine, "fr_obama.jpg")
    b = features_of(engine, "fr_obama2.jpg")
    final = producer.wait_for(producer.submit_match(a, b).job_id)
    assert final.status is JobStatus.SUCCEEDED
    assert final.result == to_dict(engine.match_faces(a, b))


def test_malformed_features_are_refused_at_submission(producer: Producer) -> None:
    # Parsed at the edge: the error keeps its type, and no job is stored or sent.
    with pytest.raises(FeaturesError):
        producer.submit_match("not-features", "either", job_id="bad-features")
    assert producer.get_job("bad-features") is None


def test_a_job_past_max_attempts_is_dead_lettered(producer: Producer, broker_url: str) -> None:
    # As if the job had killed its worker max_attempts times: the next delivery must not run it.
    job_id = f"poison-{uuid.uuid4().hex[:8]}"
    redis.Redis.from_url(broker_url).set(keys.job_attempts_key(job_id), producer.settings.max_attempts)
    final = producer.wait_for(producer.submit_faces(ref("fr_obama.jpg"), job_id=job_id).job_id)
    assert final.status is JobStatus.FAILED
    assert final.error is not None and final.error.type == "MaxAttemptsExceeded"
    assert "gave up after 3 attempts" in final.error.message


def test_worker_log_never_carries_biometric_data(
    producer: Producer, engine: KYCDeepFace, tmp_path_factory: pytest.TempPathFactory
) -> None:
    features = features_of(engine, "fr_obama.jpg")
    producer.wait_for(producer.submit_match(features, features).job_id)
    logs = [p.read_text() for p in Path(tmp_path_factory.getbasetemp()).glob("worker*/celery-worker.log")]
    assert logs and all(features[:32] not in text for text in logs)


def test_a_job_survives_its_worker_process_being_killed(producer: Producer, broker_url: str) -> None:
    # SIGKILL the pool process running a job: the message goes back to the queue
    # (acks_late + reject_on_worker_lost), the stale run lock of the dead process is taken
    # over at once, and the job ends with one answer on its second attempt.
    client = redis.Redis.from_url(broker_url)
    for _ in range(20):
        doc = producer.submit_verify(ref("df_selfie-many-people.jpg"), ref("df_couple.jpg"))
        holder = None
        deadline = time.monotonic() + 10
        while holder is None and time.monotonic() < deadline:
            holder = client.get(keys.job_lock_key(doc.job_id))
            time.sleep(0.001)
        if holder is None:
            continue
        try:
            os.kill(int(holder.decode().split(":")[1]), signal.SIGKILL)
        except ProcessLookupError:
            continue
        final = producer.wait_for(doc.job_id, timeout_s=60)
        if final.attempts == 1:
            continue  # the job had finished before the signal landed; try again
        assert final.status is JobStatus.SUCCEEDED and final.attempts == 2
        assert final.result is not None and final.result["code"] == "MULTIPLE_FACES"
        return
    pytest.fail("never caught a job in flight")
