"""A job made from a bucket event reads the object version of its event: a selfie re-uploaded
before the consumer runs never answers the first event's job on the new bytes.

Real models and photos, real Redis, the moto S3 endpoint; the jobs run through the job runner
in this process, as a worker runs them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from harness import S3Endpoint
from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.errors import ObjectSupersededError
from shared.events.bodies import parse_body
from shared.events.consumer import Consumer
from shared.jobs import JobDocument, JobStatus
from shared.jobs.resources import Resources
from shared.jobs.runner import execute
from shared.storage.s3 import S3Store, s3_client
from tests.conftest import FACES_DIR
from tests.shared.events.conftest import job_ids
from tests.shared.events.test_records import s3_record

pytestmark = [pytest.mark.services, pytest.mark.slow]

DOCUMENT_PHOTO, SAME_PERSON, OTHER_PERSON = "fr_obama2.jpg", "fr_obama.jpg", "fr_biden.jpg"
SELFIE_KEY, DOCUMENT_KEY = "selfies/case-v/selfie.jpg", "documents/case-v/passport.jpg"


@pytest.fixture()
def stack(settings: Settings, ev_settings: Settings, engine: KYCDeepFace) -> Iterator[Resources]:
    worker_settings = settings.model_copy(
        update={"redis_url": ev_settings.broker_url, "s3_endpoint_url": ev_settings.s3_endpoint_url,
                "s3_bucket": ev_settings.s3_bucket}
    )  # fmt: skip
    resources = Resources(worker_settings, engine=engine)
    yield resources
    resources.close()


def upload(s3: S3Endpoint, key: str, photo: str, sequencer: int) -> dict[str, Any]:
    """Put the photo under ``key``; its notification record as S3 writes it."""
    client = s3_client(Settings(s3_endpoint_url=s3.url))
    put = client.put_object(Bucket=s3.bucket, Key=key, Body=(FACES_DIR / photo).read_bytes())
    version = {"versionId": put["VersionId"]} if put.get("VersionId") else {}
    return s3_record(key, bucket=s3.bucket, eTag=put["ETag"].strip('"'), sequencer=f"{sequencer:018X}", **version)


def answered(stack: Resources, job_id: str) -> JobDocument:
    execute(job_id, stack, lock_ttl_s=60)
    doc = stack.jobs.get(job_id)
    assert doc is not None and doc.status.terminal, doc
    return doc


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned-bucket", "unversioned-bucket"])
def test_an_overwrite_before_the_consumer_runs_never_answers_the_first_event_on_the_new_bytes(
    client: redis.Redis, s3: S3Endpoint, ev_settings: Settings, consumer: Consumer, stack: Resources, versioned: bool
) -> None:
    if versioned:
        s3_client(Settings(s3_endpoint_url=s3.url)).put_bucket_versioning(
            Bucket=s3.bucket, VersioningConfiguration={"Status": "Enabled"}
        )
    upload(s3, DOCUMENT_KEY, DOCUMENT_PHOTO, 1)
    first = upload(s3, SELFIE_KEY, SAME_PERSON, 2)  # v1: the customer
    second = upload(s3, SELFIE_KEY, OTHER_PERSON, 3)  # v2: someone else, before the consumer ran
    for record in (first, second):
        client.rpush(ev_settings.events_bucket_key, json.dumps({"Records": [record]}))
    consumer.run(max_batches=1)
    jobs = job_ids(client)
    assert len(jobs) == 2  # v2's event makes its own job
    docs = {doc.inputs["selfie"]: doc for doc in (stack.jobs.get(job) for job in jobs) if doc is not None}
    pin = "versionId" if versioned else "etag"
    value = first["s3"]["object"]["versionId" if versioned else "eTag"]
    v1_job = docs[f"s3://{s3.bucket}/{SELFIE_KEY}?{pin}={value}"]
    value = second["s3"]["object"]["versionId" if versioned else "eTag"]
    v2_job = docs[f"s3://{s3.bucket}/{SELFIE_KEY}?{pin}={value}"]
    # The document the rule table looked up is pinned too, to the version it had when listed.
    assert {job.inputs["document"].partition("?")[2].partition("=")[0] for job in (v1_job, v2_job)} == {pin}

    v1 = answered(stack, v1_job.address)
    if versioned:  # read at its version: the customer's own selfie, a match
        assert v1.status is JobStatus.SUCCEEDED and v1.result is not None and v1.result["verified"] is True, v1
    else:  # no version to read: refused, never answered on v2's bytes
        assert v1.status is JobStatus.FAILED and v1.error is not None and v1.error.code == "SUPERSEDED", v1
    v2 = answered(stack, v2_job.address)
    assert v2.status is JobStatus.SUCCEEDED and v2.result is not None and v2.result["verified"] is False, v2


def test_a_reference_may_name_a_version(s3: S3Endpoint, ev_settings: Settings) -> None:
    """The grammar on its own: ``?versionId=`` reads that version, ``?etag=`` only while it is current."""
    client = s3_client(Settings(s3_endpoint_url=s3.url))
    client.put_bucket_versioning(Bucket=s3.bucket, VersioningConfiguration={"Status": "Enabled"})
    old = client.put_object(Bucket=s3.bucket, Key="a.jpg", Body=b"version one")
    new = client.put_object(Bucket=s3.bucket, Key="a.jpg", Body=b"version two")
    store = S3Store(ev_settings)
    assert store.get(f"s3://{s3.bucket}/a.jpg?versionId={old['VersionId']}") == b"version one"
    assert store.get(f"s3://{s3.bucket}/a.jpg?versionId={new['VersionId']}") == b"version two"
    assert store.get(f"s3://{s3.bucket}/a.jpg?etag={new['ETag'].strip(chr(34))}") == b"version two"
    with pytest.raises(ObjectSupersededError):
        store.get(f"s3://{s3.bucket}/a.jpg?etag={old['ETag'].strip(chr(34))}")
    assert store.get(f"s3://{s3.bucket}/a.jpg") == b"version two"
    # POST /v1/jobs and the intake take the same grammar.
    body = parse_body({"kind": "faces", "image": f"s3://{s3.bucket}/a.jpg?versionId={old['VersionId']}"})
    assert body.inputs()["image"].endswith(f"?versionId={old['VersionId']}")
