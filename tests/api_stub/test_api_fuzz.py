"""Bounded schemathesis run over the stub's OpenAPI: valid and invalid requests, never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from api_stub.app import create_app
from shared.config import Settings
from shared.producer import Producer
from tests.api_stub.conftest import API_KEY, BUCKET

pytestmark = [pytest.mark.services, pytest.mark.slow]

EXAMPLES = 150  # about 10 s on one core


@pytest.fixture()
def app(api_settings: Settings) -> Iterator[FastAPI]:
    producer = Producer(api_settings)
    yield create_app(api_settings, producer)
    producer.close()


@pytest.mark.usefixtures("default_float_environment")
def test_no_request_makes_the_stub_fail(app: FastAPI) -> None:
    schema = schemathesis.openapi.from_asgi("/v1/openapi.json", app, headers={"X-API-Key": API_KEY})
    cases = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases)
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(case: schemathesis.Case) -> None:
        case.call_and_validate(headers={"X-API-Key": API_KEY}, checks=[not_a_server_error])

    fuzz()


def test_any_key_in_an_allowed_bucket_is_queued_or_refused(app: FastAPI) -> None:
    """Generated schema cases rarely name an allowed bucket; this reaches the producer."""
    client = TestClient(app, headers={"X-API-Key": API_KEY})

    @given(key=st.text(max_size=300), job_id=st.none() | st.text(max_size=140))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def submit(key: str, job_id: str | None) -> None:
        body = {"kind": "faces", "image": f"s3://{BUCKET}/{key}", "job_id": job_id}
        response = client.post("/v1/jobs", json=body)
        assert response.status_code in (202, 409, 422), response.text

    submit()
