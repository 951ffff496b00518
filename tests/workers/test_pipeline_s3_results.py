"""``KYC_RESULT_STORE=s3``: the worker archives each final document in S3 and Redis keeps only
its envelope; the producer still returns the full document."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
import redis

from shared import keys
from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.jobs import JobDocument, JobStatus
from shared.producer import Producer
from shared.schemas import to_dict
from tests.conftest import FACES_DIR, S3Endpoint, celery_worker, pipeline_env

pytestmark = [pytest.mark.e2e, pytest.mark.services, pytest.mark.slow]


@pytest.fixture(scope="module")
def producer(broker_url: str, photos_s3: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Producer]:
    env = pipeline_env(broker_url, photos_s3, KYC_RESULT_STORE="s3", KYC_S3_RESULTS_PREFIX="out/")
    with celery_worker(env, tmp_path_factory.mktemp("worker-s3"), concurrency=1):
        settings = Settings(
            broker_url=broker_url,
            s3_endpoint_url=photos_s3.url,
            s3_results_bucket=photos_s3.results_bucket,
            s3_results_prefix="out/",
            result_store="s3",
        )
        p = Producer(settings)
        yield p
        p.close()


def test_final_document_is_read_from_s3(producer: Producer, broker_url: str, engine: KYCDeepFace) -> None:
    job_id = "s3-results-1"
    final = producer.wait_for(producer.submit_faces("s3://kyc-images/faces/fr_obama.jpg", job_id=job_id).job_id)
    assert final.status is JobStatus.SUCCEEDED
    assert final.result == to_dict(engine.get_faces((FACES_DIR / "fr_obama.jpg").read_bytes()))

    client = boto3.client("s3", endpoint_url=producer.settings.s3_endpoint_url, region_name="us-east-1")
    body = client.get_object(Bucket="kyc-results", Key=f"out/{job_id}.json")["Body"].read()
    assert JobDocument.from_json(body) == final
    assert json.loads(body)["schema_version"] == 1

    envelope = JobDocument.from_json(redis.Redis.from_url(broker_url).get(keys.job_key(job_id)) or b"")
    assert envelope.result is None and envelope.result_ref == f"s3://kyc-results/out/{job_id}.json"
    assert envelope.status is JobStatus.SUCCEEDED


def test_failed_document_is_archived_too(producer: Producer) -> None:
    final = producer.wait_for(producer.submit_faces("s3://kyc-images/faces/missing.jpg", job_id="s3-missing").job_id)
    assert final.status is JobStatus.FAILED and final.error is not None
    assert final.error.type == "ObjectNotFoundError"
