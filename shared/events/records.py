"""S3 event records (``Records[].s3``) in every wrapping they reach us in.

AWS puts the same JSON in an SQS message body, in an SNS envelope's ``Message``, or in an SNS
envelope inside an SQS body; a Lambda function's SQS event holds a batch of those messages as
``{"Records": [{"body": ...}, ...]}`` (its SNS event as ``{"Records": [{"Sns": {"Message":
...}}]}``); EventBridge sends its own shape (``"detail-type": "Object Created"``). MinIO's Redis
target writes ``{"Records": [...]}`` (namespace format) or ``[{"Event": [...], "EventTime":
...}]`` (access format). :func:`parse_notification` unwraps all of them to :class:`ObjectEvent`
values, one per created object.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from shared.events.model import MalformedEventError

# Envelopes nest at most SQS body -> SNS Message -> records; more is not a notification.
_MAX_DEPTH = 4


@dataclass(frozen=True)
class ObjectEvent:
    """One object version that was written.

    ``key`` is decoded (S3 URL-encodes it in events, spaces as ``+``).
    """

    bucket: str
    key: str
    event_name: str
    version_id: str = ""
    etag: str = ""
    sequencer: str = ""

    @property
    def ref(self) -> str:
        """``s3://bucket/key`` pinned to this version: ``?versionId=`` where the bucket keeps
        versions, else ``?etag=`` (see :mod:`shared.storage.refs`)."""
        if self.version_id and self.version_id != "null":
            return f"s3://{self.bucket}/{self.key}?versionId={self.version_id}"
        if self.etag:
            return f"s3://{self.bucket}/{self.key}?etag={self.etag}"
        return f"s3://{self.bucket}/{self.key}"

    def idempotency_key(self) -> str:
        """Same object version, same key: a redelivered or duplicated event maps to the same job."""
        version = self.version_id or self.etag
        raw = "\x1f".join((self.bucket, self.key, version, self.sequencer))
        return hashlib.sha256(raw.encode()).hexdigest()[:40]


def parse_notification(raw: str | bytes) -> list[ObjectEvent]:
    """The object-created events of one notification message.

    Test events (``s3:TestEvent``) and removals yield nothing.

    Raises:
        MalformedEventError: not JSON, or no known shape. The message never quotes the input.
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise MalformedEventError("notification is not JSON") from None
    return _unwrap(data, 0)


def _unwrap(data: Any, depth: int) -> list[ObjectEvent]:
    if depth > _MAX_DEPTH:
        raise MalformedEventError("notification nested too deeply")
    if isinstance(data, list):  # MinIO access format: [{"Event": [...], "EventTime": ...}]
        return [event for item in data for event in _unwrap(item, depth + 1)]
    if not isinstance(data, dict):
        raise MalformedEventError("notification is not a JSON object")
    if data.get("Event") == "s3:TestEvent" or data.get("Type") == "SubscriptionConfirmation":
        return []
    if "detail-type" in data and "detail" in data:
        return _eventbridge(data)
    if "Records" in data or "Event" in data:
        records = data.get("Records", data.get("Event"))
        if not isinstance(records, list):
            raise MalformedEventError("Records is not a list")
        events: list[ObjectEvent] = []
        for record in records:
            if isinstance(record, dict) and "s3" not in record and ("body" in record or "Sns" in record):
                # A Lambda event: each record is one SQS message (or SNS notification) around a notification.
                events += _unwrap(record.get("Sns", record), depth + 1)
            elif (event := _record(record)) is not None:
                events.append(event)
        return events
    for envelope in ("Message", "Body", "body"):  # SNS, SQS (boto3 spelling), SQS (Lambda spelling)
        inner = data.get(envelope)
        if isinstance(inner, str):
            try:
                return _unwrap(json.loads(inner), depth + 1)
            except ValueError:
                raise MalformedEventError(f"{envelope} is not JSON") from None
    raise MalformedEventError("no Records in notification")


def _record(record: Any) -> ObjectEvent | None:
    if not isinstance(record, dict):
        raise MalformedEventError("record is not an object")
    name = record.get("eventName")
    s3 = record.get("s3")
    if not isinstance(name, str) or not isinstance(s3, dict):
        raise MalformedEventError("record without eventName or s3")
    if not name.removeprefix("s3:").startswith("ObjectCreated:"):
        return None
    bucket = s3.get("bucket", {}).get("name") if isinstance(s3.get("bucket"), dict) else None
    obj = s3.get("object")
    if not isinstance(bucket, str) or not bucket or not isinstance(obj, dict) or not isinstance(obj.get("key"), str):
        raise MalformedEventError("record without bucket name or object key")
    return ObjectEvent(
        bucket=bucket,
        key=unquote_plus(obj["key"]),
        event_name=name,
        version_id=str(obj.get("versionId") or ""),
        etag=str(obj.get("eTag") or obj.get("etag") or "").strip('"'),
        sequencer=str(obj.get("sequencer") or ""),
    )


def _eventbridge(data: dict[str, Any]) -> list[ObjectEvent]:
    """An EventBridge event of S3: ``Object Created`` is one object; any other type is nothing.

    Its object key is not URL-encoded (unlike a notification record's).
    """
    if data.get("detail-type") != "Object Created":
        return []
    detail = data.get("detail")
    bucket = detail.get("bucket") if isinstance(detail, dict) else None
    obj = detail.get("object") if isinstance(detail, dict) else None
    name = bucket.get("name") if isinstance(bucket, dict) else None
    key = obj.get("key") if isinstance(obj, dict) else None
    if not isinstance(name, str) or not name or not isinstance(key, str) or not key or not isinstance(obj, dict):
        raise MalformedEventError("EventBridge event without bucket name or object key")
    return [
        ObjectEvent(
            bucket=name,
            key=key,
            event_name=f"ObjectCreated:{detail.get('reason') or 'Put'}" if isinstance(detail, dict) else "",
            version_id=str(obj.get("version-id") or ""),
            etag=str(obj.get("etag") or "").strip('"'),
            sequencer=str(obj.get("sequencer") or ""),
        )
    ]
