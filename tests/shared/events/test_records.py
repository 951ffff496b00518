"""S3 event records in each wrapping AWS and MinIO send them in."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.events.model import MalformedEventError
from shared.events.records import ObjectEvent, parse_notification


def s3_record(key: str, bucket: str = "kyc-images", name: str = "ObjectCreated:Put", **obj: Any) -> dict[str, Any]:
    """A record as S3 writes it (key URL-encoded, spaces as '+')."""
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-12-01T21:00:00.000Z",
        "eventName": name,
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": key, "size": 1024, "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                       "sequencer": "0055AED6DCD90281E5", **obj},
        },
    }  # fmt: skip


EXPECTED = ObjectEvent(
    bucket="kyc-images",
    key="selfies/case 1/a+b.jpg",
    event_name="ObjectCreated:Put",
    etag="d41d8cd98f00b204e9800998ecf8427e",
    sequencer="0055AED6DCD90281E5",
)
RECORDS = {"Records": [s3_record("selfies/case+1/a%2Bb.jpg")]}
SNS = {
    "Type": "Notification",
    "MessageId": "m-1",
    "TopicArn": "arn:aws:sns:us-east-1:1:kyc",
    "Message": json.dumps(RECORDS),
}


@pytest.mark.parametrize(
    "message",
    [
        RECORDS,  # SQS body or a relay's own message
        SNS,  # SNS -> HTTP/Lambda
        {"MessageId": "q-1", "ReceiptHandle": "r", "Body": json.dumps(SNS)},  # SNS -> SQS, as boto3 receives it
        {"messageId": "q-1", "body": json.dumps(RECORDS)},  # SQS as Lambda receives it
        [{"Event": RECORDS["Records"], "EventTime": "2026-12-01T21:00:00.000Z"}],  # MinIO access format
    ],
    ids=["records", "sns", "sqs-sns", "sqs-lambda", "minio-access"],
)
def test_every_wrapping_yields_the_decoded_object(message: Any) -> None:
    assert parse_notification(json.dumps(message)) == [EXPECTED]


def test_test_events_and_removals_yield_nothing() -> None:
    assert parse_notification(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})) == []
    removed = {"Records": [s3_record("selfies/c/a.jpg", name="ObjectRemoved:Delete")]}
    assert parse_notification(json.dumps(removed)) == []


def test_minio_event_names_carry_the_s3_prefix() -> None:
    [event] = parse_notification(json.dumps({"Records": [s3_record("a.jpg", name="s3:ObjectCreated:Put")]}))
    assert event.key == "a.jpg"


@pytest.mark.parametrize(
    "raw",
    ["not json", "[1]", json.dumps({"Records": "x"}), json.dumps({"Records": [{"eventName": "ObjectCreated:Put"}]}),
     json.dumps({"Message": "{"}), json.dumps({"hello": "world"}), "\udcff"],
)  # fmt: skip
def test_malformed_notifications_raise_without_quoting_them(raw: str) -> None:
    with pytest.raises(MalformedEventError) as info:
        parse_notification(raw)
    assert raw not in info.value.message


def test_one_object_version_has_one_idempotency_key() -> None:
    first = parse_notification(json.dumps(RECORDS))[0]
    assert parse_notification(json.dumps(SNS))[0].idempotency_key() == first.idempotency_key()
    rewritten = json.loads(json.dumps(RECORDS))
    rewritten["Records"][0]["s3"]["object"].update(sequencer="0055AED6DCD90281E6")  # the same key written again
    assert parse_notification(json.dumps(rewritten))[0].idempotency_key() != first.idempotency_key()
    versioned = {"Records": [s3_record("selfies/case+1/a%2Bb.jpg", versionId="v2")]}
    assert parse_notification(json.dumps(versioned))[0].idempotency_key() != first.idempotency_key()
