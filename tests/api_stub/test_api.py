"""The HTTP stub against a real Redis: auth, validation, limits, idempotency and the OpenAPI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api_stub.app import create_app
from shared import keys
from shared.config import Settings
from shared.errors import SettingsError
from shared.jobs import JobStatus
from shared.producer import Producer
from tests.api_stub.conftest import API_KEY, BUCKET, EXTRA_BUCKET, SECOND_KEY, stub_settings

pytestmark = pytest.mark.services

SELFIE = f"s3://{BUCKET}/onboarding/case-1/selfie.jpg"
DOCUMENT = f"s3://{BUCKET}/onboarding/case-1/passport.jpg"
VERIFY = {"kind": "verify", "selfie": SELFIE, "document": DOCUMENT}


def detail_for(response, field: str) -> dict:  # type: ignore[no-untyped-def]
    """The 422 error entry whose location ends with ``field``."""
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    matching = [e for e in errors if e["loc"][-1] == field]
    assert matching, errors
    return matching[0]


# -- health ------------------------------------------------------------------------------------


def test_healthz_answers_ok_when_redis_answers(client: TestClient) -> None:
    response = client.get("/healthz", headers={"X-API-Key": ""})
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_and_jobs_answer_503_when_redis_is_down(redis_url: str) -> None:
    dead = stub_settings("redis://127.0.0.1:1/0")
    with TestClient(create_app(dead), headers={"X-API-Key": API_KEY}) as c:
        assert c.get("/healthz").status_code == 503
        assert c.get("/v1/jobs/some-job").status_code == 503
        assert c.post("/v1/jobs", json=VERIFY).status_code == 503


def test_without_a_broker_the_job_routes_answer_503(redis_url: str) -> None:
    settings = stub_settings(redis_url, broker_url=None)
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as c:
        assert c.get("/healthz").status_code == 503
        response = c.post("/v1/jobs", json=VERIFY)
        assert response.status_code == 503
        assert "KYC_BROKER_URL" in response.json()["detail"]


# -- authentication ----------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": ""}, {"X-API-Key": "wrong"}, {"X-API-Key": API_KEY + "x"}])
def test_missing_or_wrong_api_key_is_401(client: TestClient, headers: dict[str, str]) -> None:
    client.headers.pop("X-API-Key")
    for response in (client.post("/v1/jobs", json=VERIFY, headers=headers), client.get("/v1/jobs/x", headers=headers)):
        assert response.status_code == 401
        assert response.json() == {"detail": "missing or invalid API key"}


def test_every_configured_key_is_accepted(client: TestClient) -> None:
    assert client.post("/v1/jobs", json=VERIFY, headers={"X-API-Key": SECOND_KEY}).status_code == 202


def test_no_configured_keys_refuses_everyone(redis_url: str) -> None:
    with TestClient(create_app(stub_settings(redis_url, api_keys={}))) as c:
        assert c.post("/v1/jobs", json=VERIFY, headers={"X-API-Key": ""}).status_code == 401
        assert c.post("/v1/jobs", json=VERIFY, headers={"X-API-Key": "anything"}).status_code == 401


# -- submit and poll ---------------------------------------------------------------------------


def test_submit_is_202_with_the_queued_document(client: TestClient) -> None:
    response = client.post("/v1/jobs", json=VERIFY)
    assert response.status_code == 202, response.text
    doc = response.json()
    assert doc["status"] == JobStatus.QUEUED.value
    assert doc["kind"] == "verify"
    assert doc["inputs"] == {"selfie": SELFIE, "document": DOCUMENT, "include_features": "false"}
    assert doc["schema_version"] == 1 and doc["attempts"] == 0
    assert response.headers["Location"] == f"/v1/jobs/{doc['job_id']}"
    polled = client.get(f"/v1/jobs/{doc['job_id']}")
    assert polled.status_code == 200
    assert polled.json() == doc


def test_every_kind_is_accepted(client: TestClient, engine, photos) -> None:  # type: ignore[no-untyped-def]
    features = engine.get_faces(photos[0].path.read_bytes()).faces[0].features
    bodies = [
        {"kind": "faces", "image": SELFIE},
        VERIFY,
        {"kind": "match", "features1": features, "features2": features},
        {"kind": "faces", "image": f"s3://{EXTRA_BUCKET}/ids/1.png"},
    ]
    for body in bodies:
        response = client.post("/v1/jobs", json=body)
        assert response.status_code == 202, (body["kind"], response.text)
        assert response.json()["kind"] == body["kind"]


def test_same_job_id_twice_returns_the_same_document(client: TestClient, producer: Producer) -> None:
    body = {**VERIFY, "job_id": "case-1:verify"}
    first = client.post("/v1/jobs", json=body)
    second = client.post("/v1/jobs", json=body)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert producer.get_job("case-1:verify") is not None
    # One message on the queue, not two: the duplicate sent nothing.
    assert producer.jobs.redis.llen("kyc.heavy") == 1


def test_job_id_reused_for_other_work_is_409(client: TestClient) -> None:
    assert client.post("/v1/jobs", json={**VERIFY, "job_id": "case-2"}).status_code == 202
    other = {"kind": "verify", "selfie": DOCUMENT, "document": SELFIE, "job_id": "case-2"}
    response = client.post("/v1/jobs", json=other)
    assert response.status_code == 409
    assert "case-2" in response.json()["detail"]


def test_unknown_job_is_404(client: TestClient) -> None:
    response = client.get("/v1/jobs/never-submitted")
    assert response.status_code == 404
    assert response.json() == {"detail": "no such job"}


def test_malformed_job_id_in_the_path_is_422(client: TestClient) -> None:
    assert client.get("/v1/jobs/-leading-dash").status_code == 422
    assert client.get(f"/v1/jobs/{'a' * 200}").status_code == 422


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"kind": "verify", "selfie": SELFIE}, "document", "document: required"),
        ({"kind": "faces"}, "image", "image: required"),
        ({"kind": "match", "features1": "not base64!", "features2": "x"}, "features1", "not valid base64"),
        ({"kind": "match", "features1": "QUJD", "features2": "QUJD"}, "features2", "bad magic"),
        ({**VERIFY, "job_id": "../../etc"}, "job_id", "job_id: must be 1 to 128 letters"),
        ({**VERIFY, "job_id": "x" * 129}, "job_id", "job_id: must be 1 to 128 letters"),
        ({**VERIFY, "priority": 9}, "priority", "priority: not a field of a verify request"),
        ({**VERIFY, "selfie": 42}, "selfie", "selfie: must be a string"),
        ({"kind": "gallery", "image": SELFIE}, "kind", "kind: must be one of "),
        ({"selfie": SELFIE}, "kind", "kind: required"),
    ],
)
def test_invalid_bodies_are_422_naming_the_field(client: TestClient, body: dict, field: str, message: str) -> None:
    error = detail_for(client.post("/v1/jobs", json=body), field)
    assert message in error["msg"]


def test_422_never_echoes_the_input(client: TestClient) -> None:
    secret = "QUJD" * 50  # stands in for a features string, which is biometric data
    response = client.post("/v1/jobs", json={"kind": "match", "features1": secret, "features2": secret})
    assert response.status_code == 422
    assert secret not in response.text
    assert all(set(e) == {"loc", "msg", "type"} for e in response.json()["detail"])


@pytest.mark.parametrize(
    ("body", "submitted"),
    [
        # U+202E (right-to-left override) makes "case\u202e/../gpj.exe" display as "exe.jpg/../case".
        ({**VERIFY, "selfie": f"s3://{BUCKET}/case\u202e/../gpj.exe"}, "case\u202e/../gpj.exe"),
        ({**VERIFY, "selfie": "s3://partner-secret-bucket/a.jpg"}, "partner-secret-bucket"),
        ({**VERIFY, "selfie": "s3://Bad\u202eBucket/a.jpg"}, "Bad\u202eBucket"),
        ({**VERIFY, "selfie": "gopher://internal-host\u2067/x"}, "internal-host"),
        ({**VERIFY, "kind": "verify\u202e"}, "verify\u202e"),
        ({**VERIFY, "kind": "customer-42-ssn"}, "customer-42-ssn"),
    ],
)
def test_422_names_fields_and_reasons_never_the_value(client: TestClient, body: dict, submitted: str) -> None:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    text = response.content.decode()
    assert submitted not in text and "\u202e" not in text and "\u2067" not in text
    assert all(e["loc"] and e["msg"] for e in response.json()["detail"])


def test_body_that_is_not_json_is_422(client: TestClient) -> None:
    response = client.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("s3://someone-elses-bucket/a.jpg", "is not allowed"),
        (f"s3://{BUCKET}/../other/a.jpg", "'..' segment"),
        (f"s3://{BUCKET}/a/./b.jpg", "'.' or '..' segment"),
        (f"s3://{BUCKET}//etc/passwd", "absolute key"),
        (f"s3://{BUCKET}/", "empty key"),
        (f"s3://{BUCKET}/a\nb.jpg", "control characters"),
        (f"s3://{BUCKET}/a\x00.jpg", "control characters"),
        ("/etc/passwd", "must be an s3://bucket/key reference"),
        ("../../etc/passwd", "must be an s3://bucket/key reference"),
        ("file:///etc/passwd", "must be an s3://bucket/key reference"),
        ("http://169.254.169.254/latest/meta-data", "unsupported scheme"),
        ("   ", "empty image reference"),
        ("", "selfie: must not be empty"),
        ("s3://" + "a" * 2100, "at most 2048 characters"),
    ],
)
def test_unsafe_or_foreign_references_are_422(client: TestClient, ref: str, message: str) -> None:
    body = {"kind": "verify", "selfie": ref, "document": DOCUMENT}
    error = detail_for(client.post("/v1/jobs", json=body), "selfie")
    assert message in error["msg"]


# -- body size ---------------------------------------------------------------------------------


def test_oversized_body_is_413_before_parsing_or_auth(client: TestClient, api_settings: Settings) -> None:
    big = json.dumps({**VERIFY, "pad": "x" * api_settings.api_max_body_bytes})
    assert client.post("/v1/jobs", content=big, headers={"Content-Type": "application/json"}).status_code == 413
    # Not valid JSON and no key either: the size is refused first.
    response = client.post("/v1/jobs", content=b"{" * 70_000, headers={"X-API-Key": ""})
    assert response.status_code == 413


def test_oversized_chunked_body_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"kind": "verify", "pad": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    response = client.post("/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_body_just_under_the_cap_is_parsed(client: TestClient, api_settings: Settings) -> None:
    body = json.dumps(VERIFY).encode()
    padded = body[:-1] + b" " * (api_settings.api_max_body_bytes - len(body)) + b"}"
    assert len(padded) == api_settings.api_max_body_bytes
    assert client.post("/v1/jobs", content=padded, headers={"Content-Type": "application/json"}).status_code == 202


# -- OpenAPI and imports -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"])
def test_no_docs_pages_and_no_public_schema(client: TestClient, path: str) -> None:
    # The first release served these without a key, and /docs loaded Swagger's JS from a CDN.
    for headers in ({"X-API-Key": ""}, {"X-API-Key": API_KEY}):
        response = client.get(path, headers=headers)
        assert response.status_code == 404, (path, headers)
        assert "cdn.jsdelivr.net" not in response.text and "<script" not in response.text


def test_openapi_needs_a_key(client: TestClient) -> None:
    assert client.get("/v1/openapi.json", headers={"X-API-Key": ""}).status_code == 401
    assert client.get("/v1/openapi.json", headers={"X-API-Key": "wrong"}).status_code == 401


def test_openapi_is_served_to_any_valid_key(client: TestClient) -> None:
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/healthz"} <= set(spec["paths"])
    schemes = spec["components"]["securitySchemes"]
    assert any(s["type"] == "apiKey" and s["in"] == "header" and s["name"] == "X-API-Key" for s in schemes.values())
    assert {"FacesJobRequest", "VerifyJobRequest", "MatchJobRequest", "JobDocument"} <= set(
        spec["components"]["schemas"]
    )


def test_the_stub_never_imports_a_model_runtime(redis_url: str) -> None:
    script = f"""
import sys
from fastapi.testclient import TestClient
from api_stub.app import create_app
from shared.config import ApiKey, Settings

settings = Settings(broker_url={redis_url!r}, api_keys={{"k": ApiKey.of("k", ["jobs:submit", "jobs:read"])}})
with TestClient(create_app(settings), headers={{"X-API-Key": "k"}}) as c:
    job = c.post("/v1/jobs", json={{"kind": "faces", "image": "s3://kyc-images/a.jpg"}}).json()
    c.get("/v1/jobs/" + job["job_id"])
    c.get("/healthz")
heavy = ("onnxruntime", "cv2", "shared.engine", "shared.models", "shared.imaging")
print(",".join(m for m in heavy if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "", f"the API imported {out.stdout.strip()}"


def test_the_api_refuses_to_serve_without_a_features_key() -> None:
    unkeyed = Settings(broker_url="redis://127.0.0.1:1/0", features_key=None)
    with pytest.raises(SettingsError, match="KYC_FEATURES_KEY is not set"):
        create_app(unkeyed)


def test_an_unreadable_job_document_is_a_clear_410_not_a_500(client: TestClient, producer: Producer) -> None:
    producer.jobs.redis.set(keys.job_key("broken-1"), '{"schema_version": 0}')
    response = client.get("/v1/jobs/broken-1")
    assert response.status_code == 410, response.text
    assert response.json() == {"detail": "the stored job document does not parse"}


@pytest.mark.parametrize("spelt", ["١٠", "²", "１０"])
def test_top_k_in_another_script_is_422(client: TestClient, spelt: str) -> None:
    body = {"kind": "search", "gallery": "g", "probe": "s3://kyc-images/a.jpg", "top_k": spelt}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    assert any("top_k" in map(str, error["loc"]) for error in response.json()["detail"]), response.text
