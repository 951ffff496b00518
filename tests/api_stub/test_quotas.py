"""Quotas per tenant and per key on every kind, the per-tenant cap on live job documents, the
near-miss scope, probe patterns, and features sealed per tenant, through the HTTP stub on a real
Redis and the moto S3 endpoint."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api_stub.app import create_app
from harness.s3 import MotoS3
from shared import features, keys
from shared.config import ApiKey, Settings
from shared.engine import KYCDeepFace
from shared.errors import SettingsError
from shared.gallery.audit import AUDIT_LOGGER
from shared.producer import Producer
from shared.tenants import Scope
from tests.api_stub.conftest import ALL_SCOPES
from tests.api_stub.test_tenants import ACME, BETA, SELFIE, as_key, run_queued, tenant_settings
from tests.conftest import FACES_DIR, S3Endpoint, features_of

pytestmark = pytest.mark.services

SECOND_ACME = "acme-second-key-77"
NO_CANDIDATES = "acme-plain-search-1"
PER_KEY = 2  # jobs of each kind per key
PER_TENANT = 3  # faces jobs per tenant
LIVE_CAP = 6


def quota_settings(redis_url: str, s3: S3Endpoint, **overrides: object) -> Settings:
    every_kind = {"faces": PER_KEY, "verify": PER_KEY, "match": PER_KEY, "enroll": PER_KEY, "delete": PER_KEY}
    values: dict[str, object] = {
        "api_keys": {
            "acme-all": ApiKey.of(ACME, ALL_SCOPES, tenant="acme"),
            "acme-second": ApiKey.of(SECOND_ACME, ALL_SCOPES, tenant="acme"),
            "acme-plain": ApiKey.of(NO_CANDIDATES, [Scope.GALLERY_SEARCH, Scope.JOBS_READ], tenant="acme"),
            "beta-all": ApiKey.of(BETA, ALL_SCOPES, tenant="beta"),
        },
        "api_search_limit": PER_KEY,
        "api_search_window_s": 3600,
        "api_key_quotas_per_min": {"submit": 100, **every_kind, "forget": PER_KEY, "search:candidates": 1},
        "api_tenant_quotas_per_min": {"submit": 100, "faces": PER_TENANT},
        "api_metrics": True,
    }
    values.update(overrides)
    return tenant_settings(redis_url, s3, **values)


@pytest.fixture()
def stack(redis_url: str, s3: S3Endpoint) -> Iterator[tuple[TestClient, Producer]]:
    settings = quota_settings(redis_url, s3)
    producer = Producer(settings)
    with TestClient(create_app(settings, producer)) as client:
        yield client, producer
    producer.close()


def _post(client: TestClient, key: str, body: dict[str, str]) -> int:
    return client.post("/v1/jobs", json=body, headers=as_key(key)).status_code


def _bodies(engine: KYCDeepFace) -> dict[str, dict[str, str]]:
    probe = features.seal_for(features_of(engine, "fr_obama.jpg"), "acme")
    return {
        "faces": {"kind": "faces", "image": SELFIE},
        "verify": {"kind": "verify", "selfie": SELFIE, "document": SELFIE},
        "match": {"kind": "match", "features1": probe, "features2": probe},
        "enroll": {"kind": "enroll", "gallery": "g", "face_id": "x", "probe": probe},
        "search": {"kind": "search", "gallery": "g", "probe": probe},
        "delete": {"kind": "delete", "gallery": "g", "face_id": "x"},
        "forget": {"kind": "forget", "face_id": "x"},
    }


def test_every_kind_has_its_quota_per_key(stack: tuple[TestClient, Producer], engine: KYCDeepFace) -> None:
    client, _ = stack
    for kind, body in _bodies(engine).items():
        assert [_post(client, ACME, body) for _ in range(PER_KEY)] == [202] * PER_KEY, kind
        refused = client.post("/v1/jobs", json=body, headers=as_key(ACME))
        assert refused.status_code == 429, (kind, refused.text)
        # One token a 30 s (PER_KEY a minute; search: PER_KEY an hour).
        assert 1 <= int(refused.headers["Retry-After"]) <= (1800 if kind == "search" else 30), kind
        # Another key of the tenant has its own budget for the kind.
        assert _post(client, SECOND_ACME, body) == 202, kind
    metrics = client.get("/metrics").text
    assert 'kyc_api_jobs_refused_total{kind="faces",reason="quota"} 1.0' in metrics


def test_a_tenants_flood_leaves_another_tenant_submitting(stack: tuple[TestClient, Producer]) -> None:
    client, _ = stack
    faces = {"kind": "faces", "image": SELFIE}
    # acme's two keys share the tenant's bucket: PER_TENANT in all, whichever key sends them.
    sent = [_post(client, key, faces) for key in (ACME, SECOND_ACME, ACME, SECOND_ACME)]
    assert sorted(sent) == [202] * PER_TENANT + [429]
    assert [_post(client, BETA, faces) for _ in range(PER_KEY)] == [202] * PER_KEY


def test_a_refused_request_takes_no_token(stack: tuple[TestClient, Producer]) -> None:
    client, producer = stack
    faces = {"kind": "faces", "image": SELFIE}
    assert [_post(client, ACME, faces) for _ in range(PER_KEY + 3)] == [202] * PER_KEY + [429] * 3
    # The tenant's bucket lost only what passed: one more faces job fits, from the other key.
    assert _post(client, SECOND_ACME, faces) == 202
    assert _post(client, SECOND_ACME, faces) == 429  # now the tenant's PER_TENANT are spent
    assert producer.jobs.redis.ttl(keys.quota_bucket_key("faces", "tenant:acme")) > 0


def test_live_job_documents_are_capped_per_tenant(redis_url: str, s3: S3Endpoint) -> None:
    plenty = {"submit": 100}
    settings = quota_settings(
        redis_url,
        s3,
        api_tenant_max_live_jobs=LIVE_CAP,
        api_key_quotas_per_min=plenty,
        api_tenant_quotas_per_min=plenty,
    )
    producer = Producer(settings)
    with TestClient(create_app(settings, producer)) as client:
        faces = {"kind": "faces", "image": SELFIE}
        for i in range(LIVE_CAP):
            assert _post(client, ACME, {**faces, "job_id": f"f-{i}"}) == 202
        refused = client.post("/v1/jobs", json={**faces, "job_id": "one-more"}, headers=as_key(ACME))
        assert refused.status_code == 429 and "live jobs" in refused.json()["detail"]
        # Until the oldest document expires (KYC_JOB_TTL_S), give or take the test's seconds.
        assert settings.job_ttl_s - 60 <= int(refused.headers["Retry-After"]) <= settings.job_ttl_s
        assert _post(client, ACME, {**faces, "job_id": "f-0"}) == 202  # a resubmission makes nothing
        assert _post(client, BETA, faces) == 202  # another tenant's documents are its own
        assert not producer.jobs.redis.exists(keys.job_key("acme/one-more"))
    producer.close()


def test_quota_settings_name_real_buckets(redis_url: str, s3: S3Endpoint) -> None:
    with pytest.raises(SettingsError, match="no such bucket"):
        create_app(quota_settings(redis_url, s3, api_key_quotas_per_min={"serch": 5}))
    with pytest.raises(SettingsError, match="at least 1"):
        quota_settings(redis_url, s3, api_tenant_quotas_per_min={"faces": 0})


def test_near_misses_need_their_scope_are_audited_and_limited_on_their_own(
    stack: tuple[TestClient, Producer], engine: KYCDeepFace, caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = stack
    probe = features.seal_for(features_of(engine, "fr_obama.jpg"), "acme")
    near = {"kind": "search", "gallery": "g", "probe": probe, "near_misses": "true"}
    refused = client.post("/v1/jobs", json=near, headers=as_key(NO_CANDIDATES))
    assert refused.status_code == 403 and "search:candidates" in refused.json()["detail"]
    with caplog.at_level(logging.WARNING, logger=AUDIT_LOGGER):
        assert _post(client, ACME, near) == 202
    (record,) = [r for r in caplog.records if r.name == AUDIT_LOGGER]
    assert "tenant=acme gallery=g" in record.getMessage() and "key=acme-all" in record.getMessage()
    assert probe not in record.getMessage() and probe[:40] not in caplog.text
    # One near-miss search a minute for this key: the next is refused, a plain search is not.
    assert _post(client, ACME, near) == 429
    assert _post(client, ACME, {**near, "near_misses": "false"}) == 202


def test_near_duplicate_probes_of_one_key_are_counted(
    stack: tuple[TestClient, Producer], engine: KYCDeepFace, caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = stack
    obama, obama2, biden = (
        features.seal_for(features_of(engine, name), "acme")
        for name in ("fr_obama.jpg", "fr_obama2.jpg", "fr_biden.jpg")
    )
    search = {"kind": "search", "gallery": "g"}
    with caplog.at_level(logging.WARNING, logger="shared.gallery.probe_patterns"):
        # Two people, another photo of one of them: no near-duplicate (a sketch is not a face match).
        for probe in (obama, biden):
            assert _post(client, ACME, {**search, "probe": probe}) == 202
        assert "kyc_api_probe_near_duplicates_total 0.0" in client.get("/metrics").text
        assert _post(client, SECOND_ACME, {**search, "probe": obama2}) == 202
        assert "kyc_api_probe_near_duplicates_total 0.0" in client.get("/metrics").text
        # The same probe again from the same key: counted, and logged without the probe.
        assert _post(client, SECOND_ACME, {**search, "probe": obama2}) == 202
    assert "kyc_api_probe_near_duplicates_total 1.0" in client.get("/metrics").text
    (line,) = [r.getMessage() for r in caplog.records if r.name == "shared.gallery.probe_patterns"]
    assert "acme-second" in line and obama2[:40] not in caplog.text


def test_the_same_image_in_two_tenants_gives_features_each_refuses(
    stack: tuple[TestClient, Producer], engine: KYCDeepFace, s3: S3Endpoint, moto_s3: MotoS3
) -> None:
    client, producer = stack
    image = (FACES_DIR / "fr_obama.jpg").read_bytes()
    moto_s3.client().put_object(Bucket=s3.bucket, Key="onboarding/case-1/selfie.jpg", Body=image)
    for key in (ACME, BETA):
        assert _post(client, key, {"kind": "faces", "image": SELFIE, "job_id": "f"}) == 202
    run_queued(producer, engine, "acme/f", "beta/f")
    got = {}
    for key, tenant in ((ACME, "acme"), (BETA, "beta")):
        doc = client.get("/v1/jobs/f", headers=as_key(key)).json()
        got[tenant] = doc["result"]["faces"][0]["features"]
        assert features.decode(got[tenant]).tenant == tenant
    assert got["acme"] != got["beta"]
    for key, foreign, own in ((ACME, got["beta"], got["acme"]), (BETA, got["acme"], got["beta"])):
        refused = client.post("/v1/jobs", json={"kind": "match", "features1": own, "features2": foreign},
                              headers=as_key(key))  # fmt: skip
        assert refused.status_code == 422 and "not sealed for this tenant" in refused.json()["detail"]
        enrol = {"kind": "enroll", "gallery": "g", "face_id": "p", "probe": foreign}
        assert _post(client, key, enrol) == 422
        assert _post(client, key, {"kind": "match", "features1": own, "features2": own}) == 202
    # The stored result is the service's own string: one digest for erasure, whoever reads it.
    stored = producer.get_job("f", "acme")
    assert stored is not None and stored.result is not None
    assert features.decode(stored.result["faces"][0]["features"]).tenant == "default"
    assert features.digest_of_string(got["acme"]) == features.digest_of_string(got["beta"])
