"""Bounded resources through a real worker: a job killed at the hard time limit fails once with a
typed code, galleries named by job documents leave the Redis client count flat and no keys, and a
document naming a local path is refused. (The scan bomb through a worker:
``tests/reliability/test_scan_bomb.py``.)"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from harness import CeleryWorker
from shared import keys
from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.jobs import JobDocument, JobStatus
from shared.jobs.model import utcnow
from shared.jobs.registry import CHUNK_TASK
from shared.producer import Producer
from shared.schemas import to_dict
from tests.conftest import FACES_DIR, S3Endpoint, celery_worker, features_of, pipeline_env
from tests.reliability.conftest import wait_terminal
from workers.policy import HARD_LIMIT_EXIT

pytestmark = [pytest.mark.e2e, pytest.mark.services, pytest.mark.slow]

# The kind of tests/workers/stuck_kind.py, which only the worker imports (-I): importing it here
# would declare it in this process's registry too.
STUCK = "test_only_stuck"
SOFT_LIMIT_S, HARD_LIMIT_S = 3, 4
GALLERIES = 200


@pytest.fixture(scope="module")
def worker(broker_url: str, photos_s3: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryWorker]:
    env = pipeline_env(
        broker_url,
        photos_s3,
        KYC_TASK_SOFT_TIME_LIMIT_S=str(SOFT_LIMIT_S),
        KYC_TASK_TIME_LIMIT_S=str(HARD_LIMIT_S),
        KYC_LOCK_MARGIN_S="2",
        KYC_REDELIVERY_MARGIN_S="2",
        KYC_UNACKED_RESTORE_INTERVAL_S="1",
        KYC_RETRY_BACKOFF_MAX_S="1",
    )
    with celery_worker(env, tmp_path_factory.mktemp("worker"), 2, extra_args=["-I", "tests.workers.stuck_kind"]) as w:
        yield w


@pytest.fixture()
def producer(worker: CeleryWorker, broker_url: str, photos_s3: S3Endpoint) -> Iterator[Producer]:
    p = Producer(Settings(broker_url=broker_url, s3_endpoint_url=photos_s3.url, s3_bucket=photos_s3.bucket))
    yield p
    p.close()


def send_as_stored(producer: Producer, doc: JobDocument, task: str, queue: str = "kyc.heavy") -> None:
    """Store a document as written around the producer (by hand, or an older version) and send it."""
    assert producer.jobs.create(doc)[1]
    producer.app.send_task(task, args=[doc.job_id], queue=queue, task_id=doc.job_id)


def test_a_job_killed_at_the_hard_time_limit_fails_once_with_a_typed_code(
    producer: Producer, worker: CeleryWorker
) -> None:
    doc = JobDocument(job_id="stuck-1", kind=STUCK, status=JobStatus.QUEUED, created_at=utcnow(), inputs={})
    pools = worker.pool_pids()
    send_as_stored(producer, doc, f"kyc.jobs.{STUCK}")
    client = producer.jobs.redis
    final = wait_terminal(client, ["stuck-1"], timeout_s=HARD_LIMIT_S + 30)["stuck-1"]
    assert final.status is JobStatus.FAILED and final.error is not None, final
    assert final.error.type == "TimeLimitExceeded", final.error
    assert f"{HARD_LIMIT_S}s hard time limit" in final.error.message
    assert final.attempts == 1
    # Not retried into the same wall: past the lock and the redelivery windows, still one attempt
    # and one kill (it was three kills, then MaxAttemptsExceeded).
    time.sleep(HARD_LIMIT_S + 8)
    assert int(client.get(keys.job_attempts_key("stuck-1")) or 0) == 1
    assert producer.get_job("stuck-1") == final
    log = worker.log()
    assert len(re.findall(r"Hard time limit \(\d+(\.\d+)?s\) exceeded for kyc\.jobs\." + STUCK, log)) == 1, log[-3000:]
    assert len(pools - worker.pool_pids()) == 1  # the one killed process, replaced


def test_a_solo_worker_at_the_hard_time_limit_fails_the_job_once_and_ends(
    producer: Producer, broker_url: str, photos_s3: S3Endpoint, tmp_path: Path
) -> None:
    """No pool kills a solo worker's stuck call: its watchdog records the limit as prefork's main
    process does, then ends the process; the worker started in its place finds the redelivered
    message's job done."""
    env = pipeline_env(broker_url, photos_s3, KYC_TASK_SOFT_TIME_LIMIT_S=str(SOFT_LIMIT_S),
                       KYC_TASK_TIME_LIMIT_S=str(HARD_LIMIT_S), KYC_LOCK_MARGIN_S="2", KYC_REDELIVERY_MARGIN_S="2",
                       KYC_UNACKED_RESTORE_INTERVAL_S="1", KYC_RETRY_BACKOFF_MAX_S="1")  # fmt: skip
    options = {"pool": "solo", "extra_args": ["-I", "tests.workers.stuck_kind"], "queues": "kyc.solo-limit"}
    doc = JobDocument(job_id="solo-stuck-1", kind=STUCK, status=JobStatus.QUEUED, created_at=utcnow(), inputs={})
    client = producer.jobs.redis
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    with celery_worker(env, tmp_path / "first", 1, **options) as solo:
        send_as_stored(producer, doc, f"kyc.jobs.{STUCK}", queue="kyc.solo-limit")
        final = wait_terminal(client, [doc.job_id], timeout_s=HARD_LIMIT_S + 30)[doc.job_id]
        assert final.status is JobStatus.FAILED and final.error is not None, final
        assert final.error.type == "TimeLimitExceeded" and f"{HARD_LIMIT_S}s hard time limit" in final.error.message
        assert solo.proc is not None and solo.proc.wait(timeout=10) == HARD_LIMIT_EXIT
    with celery_worker(env, tmp_path / "second", 1, **options) as again:
        # Past the visibility timeout the unacknowledged message is back: a no-op on a done job.
        answered = re.compile(r"Task kyc\.jobs\." + STUCK + r"\[solo-stuck-1\] succeeded in [0-9.]+s: 'failed'")
        deadline = time.monotonic() + 60
        while not answered.search(again.log()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert answered.search(again.log()), again.log()[-3000:]
        assert again.proc is not None and again.proc.poll() is None
    assert int(client.get(keys.job_attempts_key(doc.job_id)) or 0) == 1
    assert producer.get_job(doc.job_id) == final


def clients_on(client: redis.Redis, url: str) -> int:
    db = int(url.rsplit("/", 1)[1])
    return sum(1 for c in client.client_list() if int(c["db"]) == db)


def test_galleries_named_by_jobs_leave_the_client_count_flat_and_no_keys(
    producer: Producer, engine: KYCDeepFace, broker_url: str
) -> None:
    probe = features_of(engine, "fr_obama.jpg")

    def burst(tag: str, count: int) -> None:
        ids = []
        for i in range(count):
            kind, inputs = ("delete", {"face_id": "x"}) if i % 2 else ("search", {"probe": probe})
            ids.append(producer.submit(kind, {"gallery": f"{tag}{i}", **inputs}, f"{tag}-{i}").job_id)
        for doc in wait_terminal(producer.jobs.redis, ids, timeout_s=120).values():
            assert doc.status is JobStatus.FAILED and doc.error is not None
            assert doc.error.type == "GalleryNotFoundError"

    client = producer.jobs.redis
    burst("warm", 20)  # both pool processes have opened their one pool by now
    before = clients_on(client, broker_url)
    burst("g", GALLERIES)
    after = clients_on(client, broker_url)
    assert after <= before + 1, (before, after)  # it was one more connection per gallery and process
    assert list(client.scan_iter(match=f"{keys.GALLERY_PREFIX}*")) == []


def test_a_document_naming_a_local_path_is_refused_by_the_worker(producer: Producer, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for a job to read")
    send_as_stored(producer, JobDocument.new("faces", {"image": str(secret)}, "local-1"), "kyc.jobs.faces")
    final = wait_terminal(producer.jobs.redis, ["local-1"], timeout_s=30)["local-1"]
    assert final.status is JobStatus.FAILED and final.error is not None
    assert final.error.type == "ReferenceRejectedError" and "KYC_LOCAL_STORAGE_ROOT" in final.error.message


def test_a_chunk_at_the_hard_time_limit_is_split_and_fails_only_the_stuck_job(
    producer: Producer, worker: CeleryWorker, photos_s3: S3Endpoint, engine: KYCDeepFace
) -> None:
    """Which job of a chunk held it at the hard limit is unknown: its running jobs are given back
    and split as after any lost process, and only the job that reaches the limit alone fails."""
    photos = ["fr_obama.jpg", "fr_biden.jpg", "df_couple.jpg"]
    faces = [
        producer.store("faces", {"image": f"s3://{photos_s3.bucket}/faces/{name}"}, f"beside-stuck-{n}")[0]
        for n, name in enumerate(photos)
    ]
    stuck = JobDocument(job_id="stuck-in-chunk", kind=STUCK, status=JobStatus.QUEUED, created_at=utcnow(), inputs={})
    assert producer.jobs.create(stuck)[1]
    job_ids = [faces[0].job_id, faces[1].job_id, stuck.job_id, faces[2].job_id]
    producer.app.send_task(CHUNK_TASK, args=[job_ids], queue="kyc.heavy")
    final = wait_terminal(producer.jobs.redis, job_ids, timeout_s=4 * HARD_LIMIT_S + 60)
    assert final[stuck.job_id].status is JobStatus.FAILED and final[stuck.job_id].error is not None
    assert final[stuck.job_id].error.type == "TimeLimitExceeded"
    for doc, name in zip(faces, photos, strict=True):
        done = final[doc.job_id]
        assert done.status is JobStatus.SUCCEEDED, done.error
        assert done.result == to_dict(engine.get_faces((FACES_DIR / name).read_bytes()))
        assert done.attempts == 1  # the chunk's lost run is not charged
    assert "group of 4 came back after its process was lost" in worker.log()
