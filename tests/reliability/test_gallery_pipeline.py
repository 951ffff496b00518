"""Erasure through the pipeline: a ``delete`` job removes a face from the index every worker
process keeps cached, not only from the store.

Both pool processes of a real worker serve searches (so both hold the gallery in memory) before
the delete and after it; no search after the delete may return the erased face.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

from harness import CeleryWorker, RedisServer, S3Endpoint
from shared.jobs import JobStatus
from shared.producer import Producer
from tests.reliability.conftest import fault_env, producer_for, ref, wait_terminal, worker_running

pytestmark = [pytest.mark.services, pytest.mark.slow]

GALLERY = "customers"
PEOPLE = {
    "obama": "small/fr_obama.jpg.jpg",
    "biden": "small/fr_biden.jpg.jpg",
    "astronaut": "small/sk_astronaut.png.jpg",
    "id02": "small/df_img12.jpg.jpg",
}
PROBE = ref("small/fr_obama2.jpg.jpg")  # another photo of "obama"


def _searches_on_both_processes(
    producer: Producer, client: redis.Redis, worker: CeleryWorker, tag: str
) -> list[dict[str, object]]:
    """Run search jobs until each of the two pool processes has served at least one."""
    results: list[dict[str, object]] = []
    served: set[str] = set()
    for round_no in range(6):
        ids = [
            producer.submit(
                "search", {"gallery": GALLERY, "probe": PROBE, "top_k": "4"}, f"{tag}-{round_no}-{i}"
            ).job_id
            for i in range(6)
        ]
        for doc in wait_terminal(client, ids, timeout_s=30, poll_s=0.1).values():
            assert doc.status is JobStatus.SUCCEEDED and doc.result is not None, doc.error
            results.append(doc.result)
        log = worker.log()
        served |= {m.group(1) for i in ids for m in re.finditer(rf"/(ForkPoolWorker-\d+)\] job {i} succeeded", log)}
        if len(served) >= 2:
            return results
    pytest.fail(f"searches ran on {served} only")


def test_a_delete_job_reaches_every_worker_index(
    aof_redis: RedisServer, photo_bucket: S3Endpoint, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(aof_redis.url)
    producer = producer_for(aof_redis.url, photo_bucket)
    try:
        with worker_running(fault_env(aof_redis.url, photo_bucket), tmp_path / "worker.log") as worker:
            enrolled = [
                producer.submit("enroll", {"gallery": GALLERY, "face_id": name, "probe": ref(key)}).job_id
                for name, key in PEOPLE.items()
            ]
            for doc in wait_terminal(client, enrolled, timeout_s=30).values():
                assert doc.status is JobStatus.SUCCEEDED, doc.error
            before = _searches_on_both_processes(producer, client, worker, "before")
            deleted = producer.submit("delete", {"gallery": GALLERY, "face_id": "obama"}).job_id
            done = wait_terminal(client, [deleted], timeout_s=30)[deleted]
            after = _searches_on_both_processes(producer, client, worker, "after")
    finally:
        producer.close()

    for result in before:
        best = result["candidates"][0]  # type: ignore[index]
        assert best["face_id"] == "obama" and best["verified"] is True
    assert done.status is JobStatus.SUCCEEDED and done.result is not None and done.result["deleted"] is True
    for result in after:
        assert "obama" not in [c["face_id"] for c in result["candidates"]]  # type: ignore[attr-defined]
        assert result["gallery_size"] == len(PEOPLE) - 1
