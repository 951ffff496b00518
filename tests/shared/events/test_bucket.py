"""Bucket notifications in the S3 event record format become one job per object version, with the
document found by listing the case's prefix on the S3 endpoint."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest
import redis

from shared.config import Settings
from shared.events.consumer import Consumer
from shared.events.model import Outcome
from shared.jobs.store import JobStore
from shared.producer import Producer
from tests.conftest import S3Endpoint
from tests.shared.events.conftest import counts, job_ids, make_settings, rejects, task_messages
from tests.shared.events.test_records import s3_record

pytestmark = pytest.mark.services


def put(s3: S3Endpoint, key: str) -> dict[str, Any]:
    """Store an object and return its notification record as S3 would write it."""
    client = boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1")
    etag = client.put_object(Bucket=s3.bucket, Key=key, Body=b"\xff\xd8 not a real image")["ETag"]
    return s3_record(key, bucket=s3.bucket, eTag=etag.strip('"'), sequencer=f"{abs(hash(key)):016X}")


def minio_access(record: dict[str, Any]) -> str:
    return json.dumps([{"Event": [record], "EventTime": record["eventTime"]}])


def test_a_selfie_upload_verifies_against_the_case_document(
    client: redis.Redis, s3: S3Endpoint, ev_settings: Settings, consumer: Consumer
) -> None:
    put(s3, "documents/case-7/passport-retake.jpg")
    time.sleep(1.1)  # S3's LastModified has one-second resolution
    document = put(s3, "documents/case-7/passport.jpg")  # newest: the one to use
    record = put(s3, "selfies/case-7/selfie.jpg")
    client.rpush(ev_settings.events_bucket_key, minio_access(record))  # MinIO's access format RPUSHes
    client.rpush(ev_settings.events_bucket_key, minio_access(record))  # the same event delivered twice
    totals = consumer.run(max_batches=1)
    assert totals[Outcome.CREATED] == 1 and totals[Outcome.DUPLICATE] == 1
    [job_id] = job_ids(client)
    assert job_id.startswith("acme/s3e-") and task_messages(client) == [job_id]  # the rule's tenant
    doc = JobStore(ev_settings, client).get(job_id)
    assert doc is not None and doc.kind == "verify"
    # Both pinned: the selfie to the event's object, the document to the version listed (ETags,
    # as the bucket keeps no versions).
    assert doc.inputs == {
        "selfie": f"s3://{s3.bucket}/selfies/case-7/selfie.jpg?etag={record['s3']['object']['eTag']}",
        "document": f"s3://{s3.bucket}/documents/case-7/passport.jpg?etag={document['s3']['object']['eTag']}",
        "include_features": "false",
    }
    assert client.llen(ev_settings.events_bucket_key) == 0
    # A third delivery, much later (a relay replaying its queue): still no second job.
    client.rpush(ev_settings.events_bucket_key, json.dumps({"Records": [record]}))
    consumer.run(max_batches=1)
    assert job_ids(client) == [job_id] and counts(client)["duplicate"] == 2


def test_an_overwritten_object_is_a_new_version_and_a_new_job(
    client: redis.Redis, s3: S3Endpoint, ev_settings: Settings, consumer: Consumer
) -> None:
    put(s3, "documents/case-8/id.jpg")
    first = put(s3, "selfies/case-8/selfie.jpg")
    second = json.loads(json.dumps(first))
    second["s3"]["object"]["sequencer"] = "00FFFFFFFFFFFFFFFF"
    for record in (first, second):
        client.rpush(ev_settings.events_bucket_key, json.dumps({"Records": [record]}))
    consumer.run(max_batches=1)
    assert len(job_ids(client)) == 2


def test_an_enrol_upload_enrols_the_face(
    client: redis.Redis, s3: S3Endpoint, ev_settings: Settings, consumer: Consumer
) -> None:
    record = put(s3, "enrol/customers/cust-42.jpg")
    client.rpush(ev_settings.events_bucket_key, json.dumps({"Records": [record]}))
    consumer.run(max_batches=1)
    [job_id] = job_ids(client)
    doc = JobStore(ev_settings, client).get(job_id)
    assert doc is not None and doc.kind == "enroll"
    assert doc.inputs == {
        "gallery": "customers",
        "face_id": "cust-42",
        "probe": f"s3://{s3.bucket}/enrol/customers/cust-42.jpg?etag={record['s3']['object']['eTag']}",
        "include_features": "false",
    }


def test_unmatched_malformed_and_unresolvable_events_never_stop_the_consumer(
    client: redis.Redis, s3: S3Endpoint, ev_settings: Settings, consumer: Consumer, caplog: pytest.LogCaptureFixture
) -> None:
    client.rpush(ev_settings.events_bucket_key, json.dumps({"Records": [put(s3, "elsewhere/x.jpg")]}))
    client.rpush(ev_settings.events_bucket_key, '{"Records": [{"eventName": "ObjectCreated:Put", "secret": "AAAA')
    client.rpush(ev_settings.events_bucket_key, json.dumps({"Records": [put(s3, "selfies/case-404/s.jpg")]}))
    client.rpush(ev_settings.events_bucket_key, json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}))
    put(s3, "documents/case-9/id.jpg")
    client.rpush(ev_settings.events_bucket_key, json.dumps({"Records": [put(s3, "selfies/case-9/s.jpg")]}))
    totals = consumer.run(max_batches=1)
    assert totals == {Outcome.UNMATCHED: 1, Outcome.MALFORMED: 1, Outcome.REJECTED: 1, Outcome.IGNORED: 1,
                      Outcome.CREATED: 1}  # fmt: skip
    assert len(job_ids(client)) == 1 and counts(client)["unmatched"] == 1
    [reject] = rejects(client, ev_settings)
    assert reject["reason"] == "document: no object under the rule's prefix in the event's bucket"
    assert "case-404" not in reject["reason"]
    assert "AAAA" not in caplog.text  # the raw input is never echoed


def test_minio_namespace_format_is_read_from_the_hash(
    client: redis.Redis, redis_url: str, s3: S3Endpoint, producer: Producer
) -> None:
    from shared.events.consumer import default_routes
    from shared.events.wiring import producer_submit, validator

    settings = make_settings(redis_url, s3, events_bucket_source="hash")
    consumer = Consumer(
        client,
        settings,
        default_routes(client, settings, validator(settings, producer.images.validate), producer_submit(producer), "t"),
    )
    put(s3, "documents/case-5/id.jpg")
    record = put(s3, "selfies/case-5/selfie.jpg")
    # MinIO: HSET <key> "<bucket>/<object>" '{"Records": [...]}'
    client.hset(settings.events_bucket_key, f"{s3.bucket}/selfies/case-5/selfie.jpg", json.dumps({"Records": [record]}))
    consumer.run(max_batches=2)
    assert len(job_ids(client)) == 1 and client.hlen(settings.events_bucket_key) == 0


def test_a_relay_can_use_a_stream(client: redis.Redis, redis_url: str, s3: S3Endpoint, producer: Producer) -> None:
    from shared.events.consumer import default_routes
    from shared.events.wiring import producer_submit, validator

    settings = make_settings(redis_url, s3, events_bucket_source="stream")
    consumer = Consumer(
        client,
        settings,
        default_routes(client, settings, validator(settings, producer.images.validate), producer_submit(producer), "t"),
    )
    put(s3, "documents/case-6/id.jpg")
    sqs_body = json.dumps({"Records": [put(s3, "selfies/case-6/selfie.jpg")]})
    client.xadd(settings.events_bucket_key, {"event": sqs_body})
    client.xadd(settings.events_bucket_key, {"event": sqs_body})
    consumer.run(max_batches=1)
    assert len(job_ids(client)) == 1
    assert client.xpending(settings.events_bucket_key, settings.events_group)["pending"] == 0


def test_a_lambda_sqs_batch_and_an_eventbridge_event_make_their_jobs(
    client: redis.Redis, s3: S3Endpoint, ev_settings: Settings, consumer: Consumer
) -> None:
    from tests.shared.events.test_records import eventbridge, lambda_sqs_event

    put(s3, "documents/case-8/id.jpg")
    put(s3, "documents/case-9/id.jpg")
    batch = lambda_sqs_event({"Records": [put(s3, "selfies/case-8/selfie.jpg")]})
    bridged = eventbridge(key="selfies/case-9/selfie.jpg")
    put(s3, "selfies/case-9/selfie.jpg")
    bridged["detail"]["object"].pop("version-id")  # the bucket keeps no versions: the ETag pins it
    client.rpush(ev_settings.events_bucket_key, json.dumps(batch), json.dumps(bridged))
    totals = consumer.run(max_batches=2)
    assert totals[Outcome.CREATED] == 2 and totals[Outcome.MALFORMED] == 0
    selfies = sorted(doc.inputs["selfie"] for job in job_ids(client) if (doc := JobStore(ev_settings, client).get(job)))
    assert [s.partition("?")[0] for s in selfies] == [
        f"s3://{s3.bucket}/selfies/case-8/selfie.jpg",
        f"s3://{s3.bucket}/selfies/case-9/selfie.jpg",
    ]
