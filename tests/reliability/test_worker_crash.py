"""Worker crashes under load: a 300-job backlog on a real worker whose pool processes are
SIGKILLed mid-job again and again, and whose main process is SIGKILLed once and restarted.

Every job must end ``succeeded`` with exactly the engine's in-process answer, in Redis and in the
S3 archive (``KYC_RESULT_STORE=both``, written once with ``If-None-Match``), and no message may be
left on the broker. The restarted worker runs beside the beat sweeper, as a deployment does: a
main process killed between kombu's pop of a message and its unacked record loses that message,
and re-sending it is the sweeper's job (docs/OPERATIONS.md, "Sweeper").
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import boto3
import pytest
import redis

from harness import RedisServer, S3Endpoint
from shared import keys
from shared.engine import KYCDeepFace
from shared.jobs import JobDocument, JobStatus
from shared.schemas import to_dict
from tests.reliability.conftest import (
    beat_running,
    busy_pool_pids,
    fault_env,
    kill_quietly,
    producer_for,
    ref,
    wait_drained,
    wait_gone,
    wait_terminal,
    worker_running,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]

JOBS = 300
CHILD_KILLS = 8  # SIGKILLs of pool processes running a job, before and after the main-process kill


def _running_pid(client: redis.Redis, pool: set[int]) -> int | None:
    """The pid of a pool process holding a job's run lock right now."""
    return next(iter(busy_pool_pids(client, pool)), None)


def test_every_job_succeeds_once_through_repeated_worker_crashes(
    aof_redis: RedisServer,
    photo_bucket: S3Endpoint,
    small_photos: dict[str, bytes],
    engine: KYCDeepFace,
    tmp_path: Path,
) -> None:
    expected = {key: to_dict(engine.get_faces(data)) for key, data in small_photos.items()}
    photo_keys = sorted(small_photos)
    # A job killed with its worker counts an attempt each time; leave room for the random kills
    # (the dead letter after max attempts has its own test in tests/workers).
    env = fault_env(aof_redis.url, photo_bucket, KYC_RESULT_STORE="both", KYC_MAX_ATTEMPTS="20")
    client = redis.Redis.from_url(aof_redis.url)
    producer = producer_for(aof_redis.url, photo_bucket, result_store="both")
    rng = random.Random(6)
    kills = {"child": 0, "main": 0}
    try:
        with worker_running(env, tmp_path / "worker-1.log") as first:
            job_of = {}
            for i in range(JOBS):
                key = photo_keys[i % len(photo_keys)]
                job_of[producer.submit_faces(ref(key), job_id=f"crash-{i:04d}").job_id] = key
            job_ids = list(job_of)

            def kill_a_busy_child() -> None:
                pid = _running_pid(client, first.pool_pids())
                if pid is not None and kill_quietly(pid):
                    kills["child"] += 1

            # Phase 1: kill pool processes caught running a job, while the backlog drains.
            deadline = time.monotonic() + 90
            while kills["child"] < CHILD_KILLS // 2 and time.monotonic() < deadline:
                kill_a_busy_child()
                time.sleep(rng.uniform(0.2, 0.5))
            # Phase 2: SIGKILL the main process mid-run: its reserved messages stay unacked in
            # Redis until the visibility timeout; its orphaned pool processes finish and exit.
            assert first.proc is not None
            orphans = first.pool_pids()
            assert kill_quietly(first.proc.pid)
            first.proc.wait(timeout=10)
            kills["main"] += 1
            wait_gone(orphans, timeout_s=15)
            # The loss that kill can cause, made certain: a message popped and never recorded.
            assert client.rpop("kyc.heavy") is not None
        done_before_restart = sum(1 for d in _docs(client, job_ids) if d is not None and d.status.terminal)
        assert done_before_restart < JOBS, "the backlog finished before the main process was killed"

        # The sweep runs on the worker, so both processes read its settings.
        env = {**env, "KYC_SWEEP_INTERVAL_S": "2", "KYC_SWEEP_STALE_S": "5"}
        with worker_running(env, tmp_path / "worker-2.log") as second, beat_running(env, tmp_path):
            # Phase 3: a new worker (no manual recovery step) under more child kills.
            def more_kills() -> None:
                if kills["child"] < CHILD_KILLS:
                    pid = _running_pid(client, second.pool_pids())
                    if pid is not None and kill_quietly(pid):
                        kills["child"] += 1

            final = wait_terminal(client, job_ids, timeout_s=150, poll_s=0.5, between=more_kills)
            drained = wait_drained(client)
    finally:
        producer.close()

    assert kills["child"] >= CHILD_KILLS // 2 and kills["main"] == 1
    assert len(final) == JOBS  # none missing
    failed = {j: d.error for j, d in final.items() if d.status is not JobStatus.SUCCEEDED}
    assert not failed, failed
    wrong = [j for j, d in final.items() if d.result != expected[job_of[j]]]
    assert not wrong, f"{len(wrong)} jobs answered differently from the engine: {wrong[:5]}"
    retried = [j for j, d in final.items() if d.attempts > 1]
    assert retried, "no job was caught mid-run by a kill"
    # One result document per job: the archive copy (written once, If-None-Match) is the same.
    s3 = boto3.client("s3", endpoint_url=photo_bucket.url, region_name="us-east-1")
    for job_id in rng.sample(job_ids, 60) + retried:
        body = s3.get_object(Bucket=photo_bucket.results_bucket, Key=f"results/{job_id}.json")["Body"].read()
        assert JobDocument.from_json(body) == final[job_id]
    listed = s3.list_objects_v2(Bucket=photo_bucket.results_bucket, Prefix="results/crash-", MaxKeys=1000)
    assert listed["KeyCount"] == JOBS
    assert drained, "messages left on the broker after every job finished"


def _docs(client: redis.Redis, job_ids: list[str]) -> list[JobDocument | None]:
    return [None if raw is None else JobDocument.from_json(raw) for raw in client.mget(map(keys.job_key, job_ids))]
