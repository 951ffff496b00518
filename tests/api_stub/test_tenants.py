"""Tenants and scopes through the HTTP stub, on a real Redis and the moto S3 endpoint.

Two tenants (``acme``, ``beta``) with keys of every scope, plus narrow keys. Jobs run in this
process through the job runner (the worker's code path, no Celery), so galleries and the result
archive are the real Redis and S3 stores.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from api_stub.app import create_app
from api_stub.auth import KeyRing, Principal, require
from harness.s3 import MotoS3
from shared import features, keys
from shared.config import ApiKey, Settings
from shared.engine import KYCDeepFace
from shared.errors import SettingsError
from shared.jobs.resources import Resources
from shared.jobs.runner import execute
from shared.producer import Producer
from shared.tenants import Scope, api_key_hash
from tests.api_stub.conftest import ALL_SCOPES
from tests.conftest import S3Endpoint, features_of

pytestmark = pytest.mark.services

ACME, BETA = "acme-key-3f1c7d", "beta-key-88a0e2"
READ_ONLY, SUBMIT_ONLY, SEARCH_ONLY = "read-only-key-1", "submit-only-key-2", "search-only-key-3"
SELFIE = "s3://kyc-images/onboarding/case-1/selfie.jpg"
DOCUMENT = "s3://kyc-images/onboarding/case-1/passport.jpg"
SEARCH_LIMIT = 3


def tenant_settings(redis_url: str, s3: S3Endpoint, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "broker_url": redis_url,
        "s3_endpoint_url": s3.url,
        "s3_bucket": s3.bucket,
        "s3_results_bucket": s3.results_bucket,
        "result_store": "both",
        "api_keys": {
            "acme-all": ApiKey.of(ACME, ALL_SCOPES, tenant="acme"),
            "beta-all": ApiKey.of(BETA, ALL_SCOPES, tenant="beta"),
            "acme-read": ApiKey.of(READ_ONLY, [Scope.JOBS_READ], tenant="acme"),
            "acme-submit": ApiKey.of(SUBMIT_ONLY, [Scope.JOBS_SUBMIT], tenant="acme"),
            "acme-search": ApiKey.of(SEARCH_ONLY, [Scope.GALLERY_SEARCH, Scope.JOBS_READ], tenant="acme"),
        },
        "api_search_limit": SEARCH_LIMIT,
        "api_search_window_s": 3600,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture()
def stack(redis_url: str, s3: S3Endpoint) -> Iterator[tuple[TestClient, Producer]]:
    settings = tenant_settings(redis_url, s3)
    producer = Producer(settings)
    with TestClient(create_app(settings, producer)) as client:
        yield client, producer
    producer.close()


def as_key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def run_queued(producer: Producer, engine: KYCDeepFace, *addresses: str, status: str = "succeeded") -> None:
    """Run jobs as a worker would (claim, run, store), here, on the stack's Redis and S3."""
    resources = Resources(producer.settings, engine=engine)
    try:
        for address in addresses:
            assert execute(address, resources, lock_ttl_s=60).status == status, address
    finally:
        resources.close()


def submit(client: TestClient, key: str, body: dict[str, str]) -> dict[str, object]:
    response = client.post("/v1/jobs", json=body, headers=as_key(key))
    assert response.status_code == 202, response.text
    doc: dict[str, object] = response.json()
    return doc


# -- jobs ---------------------------------------------------------------------------------------


def test_the_same_job_id_in_two_tenants_is_two_jobs(stack: tuple[TestClient, Producer]) -> None:
    client, producer = stack
    other_selfie = "s3://kyc-images/onboarding/case-9/selfie.jpg"
    a = submit(client, ACME, {"kind": "verify", "selfie": SELFIE, "document": DOCUMENT, "job_id": "case-1:verify"})
    b = submit(
        client, BETA, {"kind": "verify", "selfie": other_selfie, "document": DOCUMENT, "job_id": "case-1:verify"}
    )
    assert (a["tenant"], b["tenant"]) == ("acme", "beta")
    assert client.get("/v1/jobs/case-1:verify", headers=as_key(ACME)).json()["inputs"]["selfie"] == SELFIE
    assert client.get("/v1/jobs/case-1:verify", headers=as_key(BETA)).json()["inputs"]["selfie"] == other_selfie
    stored = {k.decode() for k in producer.jobs.redis.scan_iter(match=keys.job_key("*"))}
    assert stored == {keys.job_key("acme/case-1:verify"), keys.job_key("beta/case-1:verify")}


def test_another_tenants_job_is_404_like_one_that_never_existed(stack: tuple[TestClient, Producer]) -> None:
    client, _ = stack
    submit(client, ACME, {"kind": "verify", "selfie": SELFIE, "document": DOCUMENT, "job_id": "acme-only"})
    theirs = client.get("/v1/jobs/acme-only", headers=as_key(BETA))
    never = client.get("/v1/jobs/no-such-job", headers=as_key(BETA))
    assert theirs.status_code == never.status_code == 404
    assert theirs.json() == never.json()
    assert client.get("/v1/jobs/acme-only", headers=as_key(ACME)).status_code == 200


def test_reusing_another_tenants_job_id_neither_conflicts_nor_changes_it(stack: tuple[TestClient, Producer]) -> None:
    client, _ = stack
    submit(client, ACME, {"kind": "verify", "selfie": SELFIE, "document": DOCUMENT, "job_id": "taken"})
    # A 409 here would tell beta that acme uses this id.
    submit(client, BETA, {"kind": "faces", "image": SELFIE, "job_id": "taken"})
    assert client.get("/v1/jobs/taken", headers=as_key(ACME)).json()["kind"] == "verify"
    assert client.get("/v1/jobs/taken", headers=as_key(BETA)).json()["kind"] == "faces"


def test_result_objects_are_filed_under_the_tenant(
    stack: tuple[TestClient, Producer], engine: KYCDeepFace, s3: S3Endpoint, moto_s3: MotoS3
) -> None:
    client, producer = stack
    feats = features_of(engine, "fr_obama.jpg")
    for key, tenant in ((ACME, "acme"), (BETA, "beta")):
        own = features.seal_for(feats, tenant)  # what the tenant's faces job gave it
        submit(client, key, {"kind": "match", "features1": own, "features2": own, "job_id": "m-1"})
    run_queued(producer, engine, "acme/m-1", "beta/m-1")
    listed = moto_s3.client().list_objects_v2(Bucket=s3.results_bucket)
    assert sorted(o["Key"] for o in listed["Contents"]) == ["results/acme/m-1.json", "results/beta/m-1.json"]
    for key, tenant in ((ACME, "acme"), (BETA, "beta")):
        doc = client.get("/v1/jobs/m-1", headers=as_key(key)).json()
        assert doc["status"] == "succeeded" and doc["tenant"] == tenant


# -- galleries ----------------------------------------------------------------------------------


def test_a_tenant_cannot_search_or_delete_another_tenants_faces(
    stack: tuple[TestClient, Producer], engine: KYCDeepFace
) -> None:
    client, producer = stack
    obama = features.seal_for(features_of(engine, "fr_obama.jpg"), "acme")
    obama_of_beta = features.seal_for(obama, "beta")
    submit(client, ACME, {"kind": "enroll", "gallery": "watchlist", "face_id": "p-1", "probe": obama, "job_id": "e"})
    run_queued(producer, engine, "acme/e")
    # beta names the same gallery and face: it reaches its own, which does not exist.
    submit(client, BETA, {"kind": "delete", "gallery": "watchlist", "face_id": "p-1", "job_id": "d"})
    submit(client, BETA, {"kind": "search", "gallery": "watchlist", "probe": obama_of_beta, "job_id": "s"})
    submit(client, ACME, {"kind": "search", "gallery": "watchlist", "probe": obama, "job_id": "s"})
    run_queued(producer, engine, "beta/d", "beta/s", status="failed")
    run_queued(producer, engine, "acme/s")
    for job_id in ("d", "s"):
        doc = client.get(f"/v1/jobs/{job_id}", headers=as_key(BETA)).json()
        assert (doc["status"], doc["error"]["type"]) == ("failed", "GalleryNotFoundError"), doc
    found = client.get("/v1/jobs/s", headers=as_key(ACME)).json()["result"]["candidates"]
    assert [c["face_id"] for c in found] == ["p-1"]
    r = producer.jobs.redis
    assert r.hkeys(keys.gallery_faces_key("acme/watchlist")) == [b"p-1"]
    assert not r.exists(keys.gallery_faces_key("watchlist"), keys.gallery_faces_key("beta/watchlist"))


# -- scopes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "body"),
    [
        (READ_ONLY, {"kind": "verify", "selfie": SELFIE, "document": DOCUMENT}),
        (SUBMIT_ONLY, {"kind": "enroll", "gallery": "g", "face_id": "x", "probe": SELFIE}),
        (SUBMIT_ONLY, {"kind": "delete", "gallery": "g", "face_id": "x"}),
        (SUBMIT_ONLY, {"kind": "search", "gallery": "g", "probe": SELFIE}),
        (SEARCH_ONLY, {"kind": "enroll", "gallery": "g", "face_id": "x", "probe": SELFIE}),
        (SEARCH_ONLY, {"kind": "faces", "image": SELFIE}),
    ],
)
def test_a_key_without_the_kinds_scope_is_403(stack: tuple[TestClient, Producer], key: str, body: dict) -> None:
    client, producer = stack
    response = client.post("/v1/jobs", json=body, headers=as_key(key))
    assert response.status_code == 403, response.text
    assert "scope" in response.json()["detail"]
    assert not list(producer.jobs.redis.scan_iter(match=keys.job_key("*")))


def test_reading_jobs_needs_jobs_read(stack: tuple[TestClient, Producer]) -> None:
    client, _ = stack
    submit(client, SUBMIT_ONLY, {"kind": "faces", "image": SELFIE, "job_id": "f-1"})
    assert client.get("/v1/jobs/f-1", headers=as_key(SUBMIT_ONLY)).status_code == 403
    assert client.get("/v1/jobs/f-1", headers=as_key(READ_ONLY)).status_code == 200


def test_require_gives_routes_the_principal(redis_url: str, s3: S3Endpoint) -> None:
    # The shape other routes (the reviewer's) are written against.
    app = FastAPI()
    app.state.keyring = KeyRing(tenant_settings(redis_url, s3).api_keys)

    @app.get("/whoami")
    def whoami(caller: Principal = Depends(require("review"))) -> dict[str, str]:  # noqa: B008
        return {"tenant": caller.tenant, "key_id": caller.key_id}

    with TestClient(app) as client:
        assert client.get("/whoami", headers=as_key(BETA)).json() == {"tenant": "beta", "key_id": "beta-all"}
        assert client.get("/whoami", headers=as_key(READ_ONLY)).status_code == 403
        assert client.get("/whoami", headers=as_key("not-a-key")).status_code == 401


# -- rate limit ---------------------------------------------------------------------------------


def test_search_jobs_are_rate_limited_per_key(stack: tuple[TestClient, Producer], engine: KYCDeepFace) -> None:
    client, _ = stack
    probe = features.seal_for(features_of(engine, "fr_obama.jpg"), "acme")
    search = {"kind": "search", "gallery": "watchlist", "probe": probe}
    for _ in range(SEARCH_LIMIT):
        assert client.post("/v1/jobs", json=search, headers=as_key(SEARCH_ONLY)).status_code == 202
    refused = client.post("/v1/jobs", json=search, headers=as_key(SEARCH_ONLY))
    assert refused.status_code == 429
    # A token bucket of SEARCH_LIMIT refilled over the hour: the next token in 3600 / SEARCH_LIMIT s.
    assert 3600 / SEARCH_LIMIT - 60 <= int(refused.headers["Retry-After"]) <= 3600 / SEARCH_LIMIT
    # Another key of the same tenant has its own budget; other kinds are not counted.
    assert client.post("/v1/jobs", json=search, headers=as_key(ACME)).status_code == 202
    faces = {"kind": "faces", "image": SELFIE}
    assert client.post("/v1/jobs", json=faces, headers=as_key(ACME)).status_code == 202


# -- keys are configured as hashes -------------------------------------------------------------


def test_keys_are_configured_as_hashes_and_never_stored(
    monkeypatch: pytest.MonkeyPatch, stack: tuple[TestClient, Producer]
) -> None:
    client, producer = stack
    entry = {"sha256": api_key_hash(ACME), "tenant": "acme", "scopes": ["jobs:submit", "jobs:read"]}
    monkeypatch.setenv("KYC_API_KEYS", json.dumps({"acme-1": entry}))
    settings = Settings()
    assert ACME not in repr(settings) + settings.model_dump_json()
    assert settings.api_keys["acme-1"].tenant == "acme"
    submit(client, ACME, {"kind": "faces", "image": SELFIE, "job_id": "h-1"})
    r: redis.Redis = producer.jobs.redis
    for name in r.scan_iter(match="*"):
        value = r.dump(name) or b""
        assert ACME.encode() not in name and ACME.encode() not in value


def test_clear_text_keys_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KYC_API_KEYS", '["a-long-random-key"]')
    with pytest.raises(SettingsError, match="kycface api-key new"):
        Settings()


def test_with_tenant_prefixes_a_key_names_only_its_tenants_images(redis_url: str, s3: S3Endpoint) -> None:
    settings = tenant_settings(redis_url, s3, s3_tenant_prefixes=True)
    producer = Producer(settings)
    with TestClient(create_app(settings, producer)) as client:
        ours = {"kind": "faces", "image": "s3://kyc-images/acme/case-1/selfie.jpg"}
        assert client.post("/v1/jobs", json=ours, headers=as_key(ACME)).status_code == 202
        for body, field in (
            ({"kind": "faces", "image": "s3://kyc-images/beta/case-1/selfie.jpg"}, "image"),
            (
                {"kind": "verify", "selfie": "s3://kyc-images/acme/s.jpg", "document": "s3://kyc-images/d.jpg"},
                "document",
            ),
            ({"kind": "search", "gallery": "g", "probe": "s3://kyc-images/acme-evil/p.jpg"}, "probe"),
        ):
            refused = client.post("/v1/jobs", json=body, headers=as_key(ACME))
            assert refused.status_code == 422, (body, refused.text)
            assert [e["msg"] for e in refused.json()["detail"]] == [
                f"{field}: reference is outside the tenant's prefix"
            ]
    producer.close()
