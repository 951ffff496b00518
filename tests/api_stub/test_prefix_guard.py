"""Tenant prefix confinement, on by default: once a tenant is configured, ``<tenant>/`` in the
allowed buckets is its own, and no other key (one minted without ``--tenant`` included) may name
an object there."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api_stub.app import create_app
from shared.config import ApiKey, Settings
from shared.errors import ReferenceRejectedError
from shared.producer import Producer
from shared.tenants import Scope, Tenant
from tests.conftest import S3Endpoint

pytestmark = pytest.mark.services

ACME, BETA, PLAIN = "acme-key-5d2e90", "beta-key-a0c41f", "plain-key-77b3e1"
SCOPES = [Scope.JOBS_SUBMIT, Scope.JOBS_READ, Scope.GALLERY_SEARCH]


def guard_settings(redis_url: str, s3: S3Endpoint, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "broker_url": redis_url,
        "s3_endpoint_url": s3.url,
        "s3_bucket": s3.bucket,
        "api_keys": {
            "acme-1": ApiKey.of(ACME, SCOPES, tenant="acme"),
            "beta-1": ApiKey.of(BETA, SCOPES, tenant="beta"),
            "plain-1": ApiKey.of(PLAIN, SCOPES),  # minted without --tenant: the default tenant
        },
    }
    return Settings(**(values | overrides))  # type: ignore[arg-type]


def status_of(client: TestClient, key: str, body: dict[str, str]) -> tuple[int, str]:
    response = client.post("/v1/jobs", json=body, headers={"X-API-Key": key})
    return response.status_code, response.text


def test_no_key_names_another_configured_tenants_prefix(redis_url: str, s3: S3Endpoint) -> None:
    settings = guard_settings(redis_url, s3)
    assert settings.s3_tenant_prefix_guard  # the default
    producer = Producer(settings)
    with TestClient(create_app(settings, producer)) as client:
        for key, image in ((ACME, "acme/case-1/selfie.jpg"), (PLAIN, "onboarding/s.jpg"), (BETA, "acme-x/s.jpg")):
            assert status_of(client, key, {"kind": "faces", "image": f"s3://kyc-images/{image}"})[0] == 202
        for key, body, field in (
            (PLAIN, {"kind": "faces", "image": "s3://kyc-images/acme/case-1/selfie.jpg"}, "image"),
            (BETA, {"kind": "faces", "image": "s3://kyc-images/acme/case-1/selfie.jpg"}, "image"),
            (
                PLAIN,
                {"kind": "verify", "selfie": "s3://kyc-images/s.jpg", "document": "s3://kyc-images/beta/d.jpg"},
                "document",
            ),
            (PLAIN, {"kind": "search", "gallery": "g", "probe": "s3://kyc-images/beta/p.jpg"}, "probe"),
        ):
            response = client.post("/v1/jobs", json=body, headers={"X-API-Key": key})
            assert response.status_code == 422, (key, body, response.text)
            # The refusal names the field, as every other 422 does (the request checks apply the
            # prefix rules before the producer stores anything).
            assert [(e["loc"], e["msg"]) for e in response.json()["detail"]] == [
                (["body", field], f"{field}: reference is inside another tenant's prefix")
            ], response.text
    # The producer library and the intake are held to it too: it is checked where jobs are stored.
    with pytest.raises(ReferenceRejectedError, match="another tenant's prefix"):
        producer.submit("faces", {"image": "s3://kyc-images/acme/s.jpg"}, tenant=Tenant("beta"))
    producer.close()


def test_the_guard_can_be_turned_off(redis_url: str, s3: S3Endpoint) -> None:
    settings = guard_settings(redis_url, s3, s3_tenant_prefix_guard=False)
    producer = Producer(settings)
    with TestClient(create_app(settings, producer)) as client:
        assert status_of(client, PLAIN, {"kind": "faces", "image": "s3://kyc-images/acme/s.jpg"})[0] == 202
    producer.close()
