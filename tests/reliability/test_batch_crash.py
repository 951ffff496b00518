"""A pool process SIGKILLed while it runs several jobs at once: a batch of messages
(``KYC_BATCH_SIZE`` > 1) or one chunk message carrying several jobs (a backlog's).

For a batch, the consumer acknowledges the finished jobs and gives back only the others; a chunk
comes back whole and its finished jobs are no-ops. Either way the unfinished jobs of the group are
then re-sent split (halves), uncharged. Either way every job must end ``succeeded``
with exactly the engine's in-process answer, once, and no message may be left on the broker.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from harness import RedisServer, S3Endpoint
from shared.engine import KYCDeepFace
from shared.jobs import JobStatus
from shared.schemas import to_dict
from tests.reliability.conftest import (
    busy_pool_pids,
    fault_env,
    kill_quietly,
    producer_for,
    ref,
    wait_drained,
    wait_terminal,
    worker_running,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]

JOBS = 160
KILLS = 3


@pytest.mark.parametrize("grouping", ["batch", "chunk"])
def test_several_jobs_killed_mid_run_end_with_one_equal_document_each(
    grouping: str,
    aof_redis: RedisServer,
    photo_bucket: S3Endpoint,
    small_photos: dict[str, bytes],
    engine: KYCDeepFace,
    tmp_path: Path,
) -> None:
    expected = {key: to_dict(engine.get_faces(data)) for key, data in small_photos.items()}
    photo_keys = sorted(small_photos)
    batch = "8" if grouping == "batch" else "1"
    env = fault_env(aof_redis.url, photo_bucket, KYC_BATCH_SIZE=batch, KYC_BATCH_FLUSH_MS="50", KYC_MAX_ATTEMPTS="10")
    client = redis.Redis.from_url(aof_redis.url)
    producer = producer_for(aof_redis.url, photo_bucket)
    log_path = tmp_path / "worker.log"
    kills = 0
    try:
        with worker_running(env, log_path) as worker:
            job_of = {}
            unsent = []
            for i in range(JOBS):
                key = photo_keys[i % len(photo_keys)]
                if grouping == "batch":
                    job_of[producer.submit_faces(ref(key), job_id=f"batch-{i:04d}").job_id] = key
                    continue
                doc, _ = producer.store("faces", {"image": ref(key)}, f"chunk-{i:04d}")
                job_of[doc.job_id] = key
                unsent.append(doc)
            for start in range(0, len(unsent), 8):
                producer.send(unsent[start : start + 8])
            job_ids = list(job_of)

            def kill_a_busy_child() -> None:
                nonlocal kills
                if kills < KILLS:
                    for pid in busy_pool_pids(client, worker.pool_pids()):
                        if kill_quietly(pid):
                            kills += 1
                            return

            final = wait_terminal(client, job_ids, timeout_s=150, poll_s=0.3, between=kill_a_busy_child)
            drained = wait_drained(client)
    finally:
        producer.close()

    assert kills >= 1, "no batch was caught mid-run"
    assert len(final) == JOBS
    failed = {j: d.error for j, d in final.items() if d.status is not JobStatus.SUCCEEDED}
    assert not failed, failed
    wrong = [j for j, d in final.items() if d.result != expected[job_of[j]]]
    assert not wrong, f"{len(wrong)} jobs answered differently from the engine: {wrong[:5]}"
    # A group caught mid-run is re-sent split, uncharged (docs/OPERATIONS.md, "Poison jobs"); a job
    # caught alone is charged its lost attempt.
    log = log_path.read_text()
    split = "came back after its process was lost" in log
    assert split or any(d.attempts > 1 for d in final.values()), "no job was caught mid-run by a kill"
    if grouping == "batch":
        given_back = [line for line in log.splitlines() if "lost or failed" in line]
        assert given_back, "the consumer never handled a lost batch"
    assert drained, "messages left on the broker after every job finished"
