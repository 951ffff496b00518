"""A solo worker (``--pool solo``): one process that consumes and runs, models loaded before its
first message, answers equal to the engine's in-process, two of them sharing one queue."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from harness import CeleryWorker, free_port
from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.jobs import JobDocument, JobStatus
from shared.jobs.model import utcnow
from shared.producer import Producer
from shared.schemas import to_dict
from tests.conftest import Photo, S3Endpoint, celery_worker, pipeline_env
from tests.reliability.conftest import wait_terminal

pytestmark = [pytest.mark.e2e, pytest.mark.services, pytest.mark.slow]

# The interruptible kind of tests/workers/stuck_kind.py, which only the workers import (-I).
SLOW = "test_only_slow"
SOFT_LIMIT_S = 5


@pytest.fixture(scope="module")
def solo_workers(
    broker_url: str, photos_s3: S3Endpoint, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[CeleryWorker]]:
    env = pipeline_env(broker_url, photos_s3, KYC_INTRA_OP_THREADS="1", KYC_TASK_SOFT_TIME_LIMIT_S=str(SOFT_LIMIT_S))
    with ExitStack() as stack:
        options = {"concurrency": 1, "pool": "solo", "extra_args": ["-I", "tests.workers.stuck_kind"]}
        workers = [
            stack.enter_context(
                celery_worker(
                    {**env, "KYC_METRICS_PORT": str(free_port())}, tmp_path_factory.mktemp(f"solo{n}"), **options
                )
            )
            for n in range(2)
        ]
        yield workers


def test_solo_workers_load_the_models_at_start_and_answer_as_in_process(
    solo_workers: list[CeleryWorker], broker_url: str, photos_s3: S3Endpoint, engine: KYCDeepFace, photos: list[Photo]
) -> None:
    for worker in solo_workers:
        # Ready (and warmed) before any message arrived: the first job pays no model load.
        assert "worker process" in worker.log() and "Task " not in worker.log()
        assert worker.pool_pids() == {worker.pid}
    settings = Settings(
        broker_url=broker_url,
        s3_endpoint_url=photos_s3.url,
        s3_bucket=photos_s3.bucket,
        s3_results_bucket=photos_s3.results_bucket,
    )
    producer = Producer(settings)
    try:
        docs = [producer.submit_faces(f"s3://{photos_s3.bucket}/faces/{p.file}") for p in photos[:12]]
        for photo, doc in zip(photos[:12], docs, strict=True):
            final = producer.wait_for(doc.job_id, timeout_s=120)
            assert final.status is JobStatus.SUCCEEDED, final.error
            assert final.result == to_dict(engine.get_faces(photo.path.read_bytes())), photo.file
            assert final.attempts == 1
    finally:
        producer.close()
    # One queue, both consumers took part, and each counts its own jobs on its metrics endpoint.
    assert all("succeeded in" in w.log() for w in solo_workers)
    counted = 0.0
    for worker in solo_workers:
        url = f"http://127.0.0.1:{worker.env['KYC_METRICS_PORT']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        found = re.findall(r'^kyc_jobs_total\{code="[A-Z_]+",kind="faces",status="succeeded"\} (\S+)$', text, re.M)
        counted += sum(float(n) for n in found)
    assert counted == len(docs)


def test_a_solo_worker_stops_a_job_at_the_soft_time_limit(solo_workers: list[CeleryWorker], broker_url: str) -> None:
    producer = Producer(Settings(broker_url=broker_url))
    try:
        doc = JobDocument(job_id="solo-slow-1", kind=SLOW, status=JobStatus.QUEUED, created_at=utcnow(), inputs={})
        assert producer.jobs.create(doc)[1]
        producer.app.send_task(f"kyc.jobs.{SLOW}", args=[doc.job_id], queue="kyc.heavy", task_id=doc.job_id)
        final = wait_terminal(producer.jobs.redis, [doc.job_id], timeout_s=SOFT_LIMIT_S + 30)[doc.job_id]
    finally:
        producer.close()
    assert final.status is JobStatus.FAILED and final.error is not None, final
    assert final.error.type == "TimeLimitExceeded" and final.attempts == 1, final.error
    # The worker lives on and still answers.
    assert all(w.proc is not None and w.proc.poll() is None for w in solo_workers)
