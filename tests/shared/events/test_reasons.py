"""Every refused request names its field and says what is wrong in plain words, the same on the
intake's rejects stream as in the 422 of ``POST /v1/jobs``, and never quotes what was sent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from api_stub.app import create_app
from shared import features
from shared.config import ApiKey, Settings
from shared.events.consumer import Consumer
from shared.events.model import Outcome
from shared.producer import Producer
from shared.tenants import Scope
from tests.conftest import S3Endpoint
from tests.shared.events.conftest import job_ids, make_settings, rejects

pytestmark = pytest.mark.services

KEY = "reasons-test-key"
SELFIE = "s3://kyc-images/selfies/case-1/selfie.jpg"
DOCUMENT = "s3://kyc-images/documents/case-1/passport.jpg"
VERIFY = {"kind": "verify", "selfie": SELFIE, "document": DOCUMENT}


def valid_features() -> str:
    vector = np.ones(128, dtype=np.float32) / np.sqrt(128)
    return features.encode("mobilefacenet", vector)


# (request, the field its reason must name, a word of what is wrong, a value never to be quoted)
MALFORMED: list[tuple[dict[str, Any], str, str, str | None]] = [
    ({"kind": "verify", "selfie": SELFIE}, "document", "required", None),
    ({"selfie": SELFIE, "document": DOCUMENT}, "kind", "required", None),
    ({"kind": "teleport-42", "image": SELFIE}, "kind", "must be one of", "teleport-42"),
    ({"kind": "match", "features1": "not base64!", "features2": "QUJD"}, "features1", "base64", "not base64!"),
    ({"kind": "match", "features1": "@FEATURES@", "features2": "QUJDREVG"}, "features2", "features", "QUJDREVG"),
    ({"kind": "faces", "image": "s3://partner-secret-bucket/a.jpg"}, "image", "not allowed", "partner-secret-bucket"),
    ({"kind": "faces", "image": "/etc/passwd"}, "image", "s3://bucket/key", "/etc/passwd"),
    ({**VERIFY, "selfie": "s3://kyc-images/a/../b.jpg"}, "selfie", "segment", "a/../b.jpg"),
    ({**VERIFY, "document": 42}, "document", "must be a string", None),
    ({**VERIFY, "job_id": "has spaces/../x"}, "job_id", "letters, digits", "has spaces"),
    ({**VERIFY, "priority": "urgent-77"}, "priority", "not a field of a verify request", "urgent-77"),
    ({**VERIFY, "callback_url": "https://evil.example/hook"}, "callback_url", "allow-list", "evil.example"),
    ({**VERIFY, "callback_url": "http://hooks.acme.example/kyc"}, "callback_url", "https", "hooks.acme.example"),
    ({"kind": "search", "gallery": "customers", "probe": "@FEATURES@", "top_k": "0"}, "top_k", "1 to 1000", None),
    ({"kind": "enroll", "gallery": "bad name!", "face_id": "c-1", "probe": SELFIE}, "gallery", "gallery", "bad name!"),
    ({**VERIFY, "reference": "r" * 300}, "reference", "at most 256 characters", "r" * 300),
    ({**VERIFY, "reference": "case\x07bell"}, "reference", "control characters", "case\x07bell"),
    ({**VERIFY, "include_features": "maybe-so"}, "include_features", "true", "maybe-so"),
]


def filled(request: dict[str, Any]) -> dict[str, Any]:
    text = valid_features()
    return {k: text if v == "@FEATURES@" else v for k, v in request.items()}


@pytest.fixture()
def settings(redis_url: str, s3: S3Endpoint) -> Settings:
    return make_settings(redis_url, s3, api_keys={"acme-key": ApiKey.of(KEY, list(Scope), tenant="acme")})


@pytest.fixture()
def api(settings: Settings, producer: Producer) -> Iterator[TestClient]:
    with TestClient(create_app(settings, producer), headers={"X-API-Key": KEY}) as c:
        yield c


def intake_reason(client: redis.Redis, settings: Settings, consumer: Consumer, fields: dict[str, str]) -> str:
    client.delete(settings.events_rejects_stream)
    client.xadd(settings.events_intake_stream, fields)
    assert consumer.run_once()[Outcome.REJECTED] == 1
    [reject] = rejects(client, settings)
    return reject["reason"]


@pytest.mark.parametrize(("request_", "field", "words", "secret"), MALFORMED)
def test_a_reason_names_its_field_the_same_on_the_intake_and_the_api(
    client: redis.Redis,
    settings: Settings,
    consumer: Consumer,
    api: TestClient,
    request_: dict[str, Any],
    field: str,
    words: str,
    secret: str | None,
) -> None:
    body = filled(request_)
    answer = api.post("/v1/jobs", json=body)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    http_reason = "; ".join(entry["msg"] for entry in detail)
    assert [entry["loc"] for entry in detail if entry["loc"][-1] == field], detail

    # The intake: the request as JSON with the tenant beside it, and flat when every value is a string.
    as_json = intake_reason(client, settings, consumer, {"request": json.dumps(body), "tenant": "acme"})
    assert as_json == http_reason
    if all(isinstance(v, str) for v in body.values()):
        assert intake_reason(client, settings, consumer, {**body, "tenant": "acme"}) == http_reason
    assert http_reason.startswith(f"{field}: ") and words in http_reason, http_reason
    for text in (http_reason, answer.text):
        assert "Value error" not in text and "Field required" not in text and "input" not in text
        assert secret is None or secret not in text
    assert job_ids(client) == []


def test_the_table_covers_twelve_fields_kinds_of_wrong(settings: Settings) -> None:
    assert len(MALFORMED) >= 12 and len({field for _, field, _, _ in MALFORMED}) >= 12


def test_a_request_field_beside_flat_envelope_fields_is_read_as_the_request(
    client: redis.Redis, settings: Settings, consumer: Consumer
) -> None:
    request = json.dumps({"kind": "faces", "image": SELFIE, "job_id": "beside-1"})
    client.xadd(settings.events_intake_stream, {"request": request, "tenant": "acme", "reference": "ref-1"})
    assert consumer.run(max_batches=1)[Outcome.CREATED] == 1
    assert job_ids(client) == ["acme/beside-1"]
    # A field given twice is refused, naming it, rather than one of the two being picked.
    client.xadd(settings.events_intake_stream, {"request": request, "job_id": "beside-2"})
    consumer.run(max_batches=1)
    [reject] = rejects(client, settings)
    assert reject["reason"] == "job_id: given both inside request and beside it"
