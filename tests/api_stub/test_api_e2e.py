"""End to end through the front door: HTTP stub -> Redis -> a real Celery worker -> S3 -> poll.

Each answer must equal what the engine gives in-process for the same bytes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api_stub.app import create_app
from shared.config import ApiKey, Settings
from shared.jobs.resources import Resources
from shared.jobs.runner import run_job
from shared.producer import Producer
from shared.schemas import to_dict
from shared.storage import LocalStore
from tests.api_stub.conftest import ALL_SCOPES, API_KEY
from tests.conftest import FACES_DIR, S3Endpoint, celery_worker, pipeline_env

BETA_KEY = "e2e-beta-key-71c0"

pytestmark = [pytest.mark.e2e, pytest.mark.services, pytest.mark.slow]


@pytest.fixture(scope="module")
def client(broker_url: str, photos_s3: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(
        broker_url=broker_url,
        s3_endpoint_url=photos_s3.url,
        s3_bucket=photos_s3.bucket,
        s3_results_bucket=photos_s3.results_bucket,
        api_keys={"test": ApiKey.of(API_KEY, ALL_SCOPES), "beta": ApiKey.of(BETA_KEY, ALL_SCOPES, tenant="beta")},
    )
    producer = Producer(settings)
    with (
        celery_worker(pipeline_env(broker_url, photos_s3), tmp_path_factory.mktemp("worker"), concurrency=1),
        TestClient(create_app(settings, producer), headers={"X-API-Key": API_KEY}) as c,
    ):
        yield c
    producer.close()


def poll(client: TestClient, job_id: str, timeout_s: float = 120.0, key: str = API_KEY) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = client.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": key})
        assert response.status_code == 200, response.text
        doc: dict[str, Any] = response.json()
        if doc["status"] in ("succeeded", "failed"):
            return doc
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} not finished after {timeout_s}s")


def submit(client: TestClient, body: dict[str, Any]) -> str:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def ref(name: str) -> str:
    return f"s3://kyc-images/faces/{name}"


def test_http_jobs_equal_the_engine_in_process(client: TestClient, engine) -> None:  # type: ignore[no-untyped-def]
    local = LocalStore(max_bytes=50 * 1024 * 1024)
    features = engine.get_faces((FACES_DIR / "fr_obama.jpg").read_bytes()).faces[0].features
    other = engine.get_faces((FACES_DIR / "fr_biden.jpg").read_bytes()).faces[0].features
    cases = [
        ({"kind": "faces", "image": ref("df_couple.jpg")}, "faces", {"image": "df_couple.jpg"}),
        ({"kind": "verify", "selfie": ref("fr_obama.jpg"), "document": ref("fr_obama2.jpg")}, "verify",
         {"selfie": "fr_obama.jpg", "document": "fr_obama2.jpg"}),
        ({"kind": "verify", "selfie": ref("fr_two_people.jpg"), "document": ref("fr_biden.jpg")}, "verify",
         {"selfie": "fr_two_people.jpg", "document": "fr_biden.jpg"}),
        ({"kind": "match", "features1": features, "features2": other, "job_id": "case-9:match"}, "match",
         {"features1": features, "features2": other}),
    ]  # fmt: skip
    job_ids = [submit(client, body) for body, _, _ in cases]
    for job_id, (_, kind, inputs) in zip(job_ids, cases, strict=True):
        doc = poll(client, job_id)
        assert doc["status"] == "succeeded", doc["error"]
        local_inputs = {k: str(FACES_DIR / v) if kind != "match" else v for k, v in inputs.items()}
        assert doc["result"] == run_job(kind, local_inputs, Resources(engine.settings, engine=engine, images=local)), (
            kind
        )
    assert poll(client, "case-9:match")["result"] == to_dict(engine.match_faces(features, other))


def test_http_job_on_a_missing_object_fails_with_a_clear_error(client: TestClient) -> None:
    doc = poll(client, submit(client, {"kind": "faces", "image": ref("no-such-photo.jpg")}))
    assert doc["status"] == "failed"
    assert doc["error"]["code"] == "ERROR"
    assert "no-such-photo.jpg" in doc["error"]["message"]


def test_http_resubmission_after_completion_returns_the_final_document(client: TestClient) -> None:
    body = {"kind": "faces", "image": ref("fr_biden.jpg"), "job_id": "case-10:faces"}
    final = poll(client, submit(client, body))
    again = client.post("/v1/jobs", json=body)
    assert again.status_code == 202
    assert again.json() == final


def test_two_tenants_run_the_same_job_id_on_the_worker(client: TestClient) -> None:
    """The task message carries the tenant-scoped id: each tenant's job runs, with its own inputs."""
    body = {"kind": "faces", "image": ref("fr_biden.jpg"), "job_id": "case-11:faces"}
    theirs = {**body, "image": ref("df_couple.jpg")}
    assert client.post("/v1/jobs", json=body).status_code == 202
    assert client.post("/v1/jobs", json=theirs, headers={"X-API-Key": BETA_KEY}).status_code == 202
    ours, beta = poll(client, "case-11:faces"), poll(client, "case-11:faces", key=BETA_KEY)
    assert ours["status"] == beta["status"] == "succeeded"
    assert (ours["tenant"], beta["tenant"]) == ("default", "beta")
    assert len(ours["result"]["faces"]) == 1 and len(beta["result"]["faces"]) == 2
