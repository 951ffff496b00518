"""``GET /metrics`` on the API: off by default; on, submissions by kind and the queue depths."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api_stub.app import create_app
from tests.api_stub.conftest import API_KEY, stub_settings


def test_metrics_are_off_unless_configured(redis_url: str) -> None:
    with TestClient(create_app(stub_settings(redis_url))) as client:
        assert client.get("/metrics").status_code == 404


def test_metrics_count_submissions_and_show_queue_depths(redis_url: str) -> None:
    with TestClient(create_app(stub_settings(redis_url, api_metrics=True))) as client:
        for i in range(3):
            job = {"kind": "faces", "image": "s3://kyc-images/a.jpg", "job_id": f"m-{i}"}
            assert client.post("/v1/jobs", json=job, headers={"X-API-Key": API_KEY}).status_code == 202
        response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'kyc_api_jobs_submitted_total{kind="faces"} 3.0' in text
    assert 'kyc_queue_depth{queue="kyc.heavy"} 3.0' in text  # no worker: the three wait
    assert "m-0" not in text
