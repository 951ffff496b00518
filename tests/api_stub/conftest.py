"""The HTTP stub on the session's private Redis, with a known API key and bucket allow-list."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api_stub.app import create_app
from shared.config import ApiKey, Settings
from shared.producer import Producer
from shared.tenants import Scope

API_KEY = "test-key-0123456789"
SECOND_KEY = "second-key"
ALL_SCOPES = tuple(Scope)
BUCKET = "kyc-images"
EXTRA_BUCKET = "kyc-partner"


def stub_settings(redis_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "broker_url": redis_url,
        "api_keys": {"test": ApiKey.of(API_KEY, ALL_SCOPES), "second": ApiKey.of(SECOND_KEY, ALL_SCOPES)},
        "s3_bucket": BUCKET,
        "s3_allowed_buckets": [EXTRA_BUCKET],
        "api_max_body_bytes": 64 * 1024,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture()
def api_settings(redis_url: str) -> Settings:
    return stub_settings(redis_url)


@pytest.fixture()
def producer(api_settings: Settings) -> Iterator[Producer]:
    p = Producer(api_settings)
    yield p
    p.close()


@pytest.fixture()
def client(api_settings: Settings, producer: Producer) -> Iterator[TestClient]:
    """An authenticated client (every request carries a valid X-API-Key)."""
    with TestClient(create_app(api_settings, producer), headers={"X-API-Key": API_KEY}) as c:
        yield c
