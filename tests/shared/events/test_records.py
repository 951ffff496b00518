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


def lambda_sqs_event(*bodies: Any) -> dict[str, Any]:
    """A Lambda function's SQS event: a batch of messages, each body a notification."""
    return {
        "Records": [
            {"messageId": f"m-{n}", "receiptHandle": "r", "body": json.dumps(body), "attributes": {},
             "messageAttributes": {}, "md5OfBody": "x", "eventSource": "aws:sqs",
             "eventSourceARN": "arn:aws:sqs:us-east-1:1:kyc", "awsRegion": "us-east-1"}
            for n, body in enumerate(bodies)
        ]
    }  # fmt: skip


def eventbridge(detail_type: str = "Object Created", key: str = "selfies/case 1/a+b.jpg") -> dict[str, Any]:
    """An EventBridge event of S3, as its rule delivers it (to SQS, Lambda or a relay)."""
    return {
        "version": "0", "id": "17793124-05d4-b198-2fde-7ededc63b103", "detail-type": detail_type,
        "source": "aws.s3", "account": "111122223333", "time": "2026-12-01T21:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:s3:::kyc-images"],
        "detail": {"version": "0", "bucket": {"name": "kyc-images"},
                   "object": {"key": key, "size": 1024, "etag": "d41d8cd98f00b204e9800998ecf8427e",
                              "version-id": "uhggCJ2_B6gU2JaXWXebnXFDstO0ID6G", "sequencer": "0055AED6DCD90281E5"},
                   "request-id": "Q1", "requester": "111122223333", "reason": "PutObject"},
    }  # fmt: skip


def test_a_lambda_sqs_event_yields_every_message_of_its_batch() -> None:
    other = {"Records": [s3_record("selfies/case-2/b.jpg")]}
    events = parse_notification(json.dumps(lambda_sqs_event(RECORDS, SNS, other)))
    assert events[:2] == [EXPECTED, EXPECTED] and events[2].key == "selfies/case-2/b.jpg"
    # Lambda's SNS event: each record holds the notification in Sns.Message.
    sns_event = {"Records": [{"EventSource": "aws:sns", "EventVersion": "1.0", "Sns": SNS}]}
    assert parse_notification(json.dumps(sns_event)) == [EXPECTED]
    # A batch holding a message in no known shape is malformed as a whole (the relay sees it in the log).
    with pytest.raises(MalformedEventError):
        parse_notification(json.dumps(lambda_sqs_event(RECORDS, {"hello": "world"})))


def test_an_eventbridge_object_created_event_yields_its_object_version() -> None:
    [event] = parse_notification(json.dumps(eventbridge()))
    assert (event.bucket, event.key, event.etag, event.sequencer) == (
        "kyc-images", "selfies/case 1/a+b.jpg", "d41d8cd98f00b204e9800998ecf8427e", "0055AED6DCD90281E5",
    )  # fmt: skip
    assert event.version_id == "uhggCJ2_B6gU2JaXWXebnXFDstO0ID6G"
    assert event.ref == "s3://kyc-images/selfies/case 1/a+b.jpg?versionId=uhggCJ2_B6gU2JaXWXebnXFDstO0ID6G"
    # Relayed through SQS to a Lambda function, too; other detail types make nothing.
    assert parse_notification(json.dumps(lambda_sqs_event(eventbridge()))) == [event]
    assert parse_notification(json.dumps(eventbridge("Object Deleted"))) == []
    broken = eventbridge()
    del broken["detail"]["object"]
    with pytest.raises(MalformedEventError):
        parse_notification(json.dumps(broken))


def test_an_event_names_its_object_version_in_its_reference() -> None:
    [unversioned] = parse_notification(json.dumps(RECORDS))
    assert unversioned.ref == "s3://kyc-images/selfies/case 1/a+b.jpg?etag=d41d8cd98f00b204e9800998ecf8427e"
    versioned = {"Records": [s3_record("a.jpg", versionId="3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY")]}
    assert (
        parse_notification(json.dumps(versioned))[0].ref
        == "s3://kyc-images/a.jpg?versionId=3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"
    )
    # S3 writes "null" as the version id of an object in a bucket that never kept versions.
    nulled = {"Records": [s3_record("a.jpg", versionId="null")]}
    assert (
        parse_notification(json.dumps(nulled))[0].ref == "s3://kyc-images/a.jpg?etag=d41d8cd98f00b204e9800998ecf8427e"
    )
