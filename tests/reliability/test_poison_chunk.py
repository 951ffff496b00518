"""A poison image in a backlog's chunk of 8 (or a batch of 8 messages): reading it kills its
process every time.

The chunk comes back after each loss and its unfinished jobs are re-sent split (8 -> 4 -> 2 ->
1); only the executions that ran alone are charged an attempt. Exactly the poison job must end
``failed`` (``MaxAttemptsExceeded``, naming its image reference) and its seven neighbours
``succeeded`` with the engine's in-process answer, each charged one attempt.

The poison is ``tests/workers/poison_store.py``'s image store double (a plumbing test double,
imported by this worker only): it SIGKILLs its own process when asked for the marker key.
"""

from __future__ import annotations

import re
from pathlib import Path

import boto3
import pytest
import redis

from harness import RedisServer, S3Endpoint
from shared.engine import KYCDeepFace
from shared.jobs import JobStatus
from shared.schemas import to_dict
from tests.conftest import celery_worker
from tests.reliability.conftest import fault_env, producer_for, ref, wait_drained, wait_terminal
from tests.workers.poison_store import POISON_MARKER

pytestmark = [pytest.mark.services, pytest.mark.slow]

MAX_ATTEMPTS = 3
POISON_AT = 3  # the poison's place in the chunk


@pytest.mark.parametrize("grouping", ["chunk", "batch"])
def test_a_poison_image_fails_alone_and_its_chunk_neighbours_succeed(
    grouping: str,
    aof_redis: RedisServer,
    photo_bucket: S3Endpoint,
    small_photos: dict[str, bytes],
    engine: KYCDeepFace,
    tmp_path: Path,
) -> None:
    photo_keys = sorted(small_photos)[:7]
    expected = {key: to_dict(engine.get_faces(small_photos[key])) for key in photo_keys}
    # The poison is a real photo under a marked key: only the double's kill tells it apart.
    poison_key = f"small/{POISON_MARKER}{Path(photo_keys[0]).name}"
    s3 = boto3.client("s3", endpoint_url=photo_bucket.url, region_name="us-east-1")
    s3.put_object(Bucket=photo_bucket.bucket, Key=poison_key, Body=small_photos[photo_keys[0]])
    # Time limits with room for a chunk of 8 on a loaded machine: a loss here must be the
    # poison's, never the hard limit's.
    env = fault_env(
        aof_redis.url,
        photo_bucket,
        KYC_MAX_ATTEMPTS=str(MAX_ATTEMPTS),
        KYC_TASK_SOFT_TIME_LIMIT_S="40",
        KYC_TASK_TIME_LIMIT_S="45",
        KYC_BATCH_SIZE="8" if grouping == "batch" else "1",
        KYC_BATCH_FLUSH_MS="200",
    )
    client = redis.Redis.from_url(aof_redis.url)
    producer = producer_for(aof_redis.url, photo_bucket)
    chunk_keys = [*photo_keys[:POISON_AT], poison_key, *photo_keys[POISON_AT:]]
    try:
        with celery_worker(env, tmp_path, 2, extra_args=["-I", "tests.workers.poison_store"]) as worker:
            docs = [
                producer.store("faces", {"image": ref(key)}, f"{grouping}-{n}")[0] for n, key in enumerate(chunk_keys)
            ]
            if grouping == "chunk":
                producer.send(docs)  # one message: a backlog's chunk of 8
            else:
                producer.send(docs, per_message=1)  # 8 messages, taken as one batch
            job_ids = [doc.job_id for doc in docs]
            final = wait_terminal(client, job_ids, timeout_s=240, poll_s=0.5)
            drained = wait_drained(client)
            log = worker.log()
    finally:
        producer.close()

    losses = len(re.findall(r"exited with 'signal 9 \(SIGKILL\)'", log))
    splits = re.findall(r"group of (\d+) came back after its process was lost: (\d+) unfinished", log)
    print(f"\npoison chunk: {losses} process losses, {len(splits)} redeliveries re-sent split {splits}")

    poison = final[job_ids[POISON_AT]]
    assert poison.status is JobStatus.FAILED and poison.error is not None, poison
    assert poison.error.type == "MaxAttemptsExceeded", poison.error
    assert f"s3://kyc-images/{poison_key}" in poison.error.message
    assert "lost while running it alone" in poison.error.message
    neighbours = {job_id: final[job_id] for n, job_id in enumerate(job_ids) if n != POISON_AT}
    not_ok = {j: d.error for j, d in neighbours.items() if d.status is not JobStatus.SUCCEEDED}
    assert not not_ok, not_ok
    for n, job_id in enumerate(job_ids):
        if n != POISON_AT:
            assert final[job_id].result == expected[chunk_keys[n]], job_id
            assert final[job_id].attempts == 1, (job_id, final[job_id].attempts)  # the group losses were not charged
    if grouping == "chunk":
        # 8 -> 4 -> 2 -> 1: three groups lost with the poison, then it alone, once per attempt.
        assert [int(group) for group, _ in splits] == [8, 4, 2]
        assert losses == 3 + MAX_ATTEMPTS
    else:
        # A batch is whatever the consumer buffered: at most 8, halved on each loss after the first.
        assert splits and 1 <= losses - MAX_ATTEMPTS <= 4, (losses, splits)
    assert drained, "messages left on the broker after every job finished"
