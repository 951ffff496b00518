"""A progressive-JPEG scan bomb through S3 and a real worker: an INVALID_IMAGE answer in under a
second, on the first attempt, with no pool process lost. Before the header's scan count, the same
file held a pool process until the hard time limit killed it, and the job was retried twice more."""

from __future__ import annotations

from pathlib import Path

import boto3
import psutil
import pytest
import redis

from bench.decode_bounds import scan_bomb
from shared.jobs import JobStatus
from tests.conftest import RedisServer, S3Endpoint
from tests.reliability.conftest import fault_env, producer_for, ref, wait_terminal, worker_running

pytestmark = pytest.mark.services


def _pool(main_pid: int) -> set[int]:
    return {p.pid for p in psutil.Process(main_pid).children()}


def test_scan_bomb_is_answered_at_once_without_a_pool_restart(
    aof_redis: RedisServer, s3: S3Endpoint, tmp_path: Path
) -> None:
    bomb = scan_bomb(30_000)
    boto3.client("s3", endpoint_url=s3.url, region_name="us-east-1").put_object(
        Bucket=s3.bucket, Key="bomb/scans.jpg", Body=bomb
    )
    # The production time limits: the bomb would outlast the soft one inside libjpeg.
    env = fault_env(aof_redis.url, s3, KYC_TASK_SOFT_TIME_LIMIT_S="60", KYC_TASK_TIME_LIMIT_S="90")
    producer = producer_for(aof_redis.url, s3)
    try:
        with worker_running(env, tmp_path / "worker.log") as worker:
            assert worker.proc is not None
            pool_before = _pool(worker.proc.pid)
            job_id = producer.submit_faces(ref("bomb/scans.jpg"), job_id="scan-bomb").job_id
            final = wait_terminal(redis.Redis.from_url(aof_redis.url), [job_id], timeout_s=30)[job_id]
            pool_after = _pool(worker.proc.pid)
            log = worker.log()
    finally:
        producer.close()

    assert final.status is JobStatus.SUCCEEDED and final.attempts == 1
    assert final.result is not None and final.result["code"] == "INVALID_IMAGE", final.result
    assert final.result["reason"] == "INVALID_FORMAT" and "scans" in final.result["message"]
    assert final.started_at is not None and final.finished_at is not None
    ran_s = (final.finished_at - final.started_at).total_seconds()
    assert ran_s < 1.0, f"the job ran {ran_s:.2f} s"
    assert pool_after == pool_before
    assert "WorkerLostError" not in log and "TimeLimitExceeded" not in log
