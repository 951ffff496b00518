"""A worker host's metrics endpoint after a few jobs: the named series, summed over the pool,
and no job id or features anywhere in it."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from harness import S3Endpoint
from harness.net import free_port, wait_port
from shared.config import Settings
from shared.producer import Producer
from tests.conftest import FACES_DIR, celery_worker, features_of, need, pipeline_env

pytestmark = [pytest.mark.e2e, pytest.mark.services, pytest.mark.slow]


def test_the_worker_exposes_the_named_series(broker_url: str, s3: S3Endpoint, tmp_path: Path, engine) -> None:  # type: ignore[no-untyped-def]
    need(FACES_DIR.is_dir(), f"face photos not found at {FACES_DIR}")
    port = free_port()
    a, b = features_of(engine, "fr_obama.jpg"), features_of(engine, "fr_obama2.jpg")
    env = pipeline_env(broker_url, s3, KYC_METRICS_PORT=str(port), KYC_METRICS_DIR=str(tmp_path / "prom"))
    producer = Producer(Settings(broker_url=broker_url, s3_endpoint_url=s3.url, s3_bucket=s3.bucket))  # type: ignore[arg-type]
    try:
        with celery_worker(env, tmp_path, concurrency=2):
            wait_port(port)
            jobs = [producer.submit_match(a, b, job_id=f"metrics-{i}") for i in range(6)]
            jobs.append(producer.submit_faces(f"s3://{s3.bucket}/missing.jpg", job_id="metrics-missing"))
            for job in jobs:
                producer.wait_for(job.job_id, timeout_s=60)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                text = response.read().decode()
    finally:
        producer.close()
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    counted = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines}
    assert counted['kyc_jobs_total{code="SUCCESS",kind="match",status="succeeded"}'] == 6
    assert any(k.startswith("kyc_jobs_total{") and 'kind="faces"' in k and 'status="failed"' in k for k in counted)
    for stage in ("queue", "fetch", "compute", "store"):
        assert any(k.startswith("kyc_job_stage_seconds_bucket{") and f'stage="{stage}"' in k for k in counted), stage
    assert counted['kyc_job_stage_seconds_count{kind="match",stage="compute"}'] == 6
    assert 'kyc_queue_depth{queue="kyc.heavy"}' in counted
    assert any(k.startswith("kyc_model_info{") for k in counted)
    assert "metrics-" not in text and a[:16] not in text
