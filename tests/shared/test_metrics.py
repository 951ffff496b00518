"""The metric functions in this (single) process: series names, labels, no job ids."""

from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest

from shared import metrics


def test_observed_jobs_and_batches_become_series() -> None:
    before = REGISTRY.get_sample_value("kyc_jobs_total", {"kind": "verify", "status": "succeeded", "code": "NO_FACE"})
    metrics.observe_job("verify", "succeeded", "NO_FACE", {"queue_s": 0.2, "fetch_s": 0.01, "compute_s": 0.05}, 0.001)
    after = REGISTRY.get_sample_value("kyc_jobs_total", {"kind": "verify", "status": "succeeded", "code": "NO_FACE"})
    assert after == (before or 0) + 1
    count = REGISTRY.get_sample_value("kyc_job_stage_seconds_count", {"kind": "verify", "stage": "store"})
    assert count is not None and count >= 1
    metrics.observe_batch("faces", 12)
    assert REGISTRY.get_sample_value("kyc_batch_size_bucket", {"kind": "faces", "le": "16.0"}) >= 1
    text = generate_latest(REGISTRY).decode()
    assert 'kyc_job_stage_seconds_bucket{kind="verify",le="0.25",stage="queue"}' in text
