"""Redis failover mid-backlog: a Sentinel set on loopback (one primary, one replica, three
Sentinels, ``harness.SentinelSet``) whose primary is SIGKILLed while a worker drains a backlog of
chunks. The Sentinels promote the replica; the worker, the beat sweeper and the producer follow
it without a restart.

Every job submitted, before the failover and after it, must end ``succeeded`` with exactly the
engine's in-process answer, and the gallery must answer the same search the same way before
and after. While no replica is left, a submit that must reach one is refused and leaves nothing. Replication is asynchronous: the gallery and the submits are waited for with ``WAIT``
(``KYC_REDIS_WAIT_REPLICAS=1`` for the submits), which is what makes "nothing acknowledged is
lost" hold (docs/OPERATIONS.md, "Redis failover").
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from harness import S3Endpoint, SentinelSet
from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.errors import StorageUnavailableError
from shared.gallery.db import KYCDeepFaceDB
from shared.jobs import JobStatus
from shared.schemas import to_dict
from shared.storage.redis_client import redis_client
from tests.conftest import features_of, need
from tests.reliability.conftest import (
    beat_running,
    documents,
    fault_env,
    producer_for,
    ref,
    wait_drained,
    wait_terminal,
    worker_running,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]

BEFORE = 64  # jobs submitted before the failover, in chunks of 8
AFTER = 16  # and through the same producer once the replica is promoted
ENROLLED = {"obama": "fr_obama.jpg", "biden": "fr_biden.jpg", "astronaut": "sk_astronaut.png"}
PROBE = "fr_obama2.jpg"


@pytest.fixture()
def sentinel_set(tmp_path: Path) -> SentinelSet:
    need(shutil.which("redis-server") is not None, "redis-server is not installed")
    with SentinelSet(tmp_path / "sentinel") as found:
        yield found  # type: ignore[misc]


def test_a_failover_mid_backlog_loses_nothing_and_changes_no_answer(
    sentinel_set: SentinelSet,
    photo_bucket: S3Endpoint,
    small_photos: dict[str, bytes],
    engine: KYCDeepFace,
    tmp_path: Path,
) -> None:
    expected = {key: to_dict(engine.get_faces(data)) for key, data in small_photos.items()}
    photo_keys = sorted(small_photos)
    url = sentinel_set.broker_url(0)
    master = sentinel_set.master_name
    settings = Settings(broker_url=url, redis_master_name=master)
    client = redis_client(url, settings)  # follows the failover, as every client of ours does

    gallery = KYCDeepFaceDB("failover", settings=settings, redis=client)
    for face_id, photo in ENROLLED.items():
        gallery.set(face_id, features_of(engine, photo))
    probe = features_of(engine, PROBE)
    before = to_dict(gallery.find_faces(probe, top_k=3))
    assert client.wait(1, 5000) == 1  # the enrolments are on the replica

    env = fault_env(
        url,
        photo_bucket,
        KYC_REDIS_MASTER_NAME=master,
        KYC_MAX_ATTEMPTS="10",
        KYC_SWEEP_INTERVAL_S="2",
        KYC_SWEEP_STALE_S="5",
    )
    producer = producer_for(url, photo_bucket, redis_master_name=master, redis_wait_replicas=1)
    job_of: dict[str, str] = {}

    def submit(prefix: str, count: int) -> None:
        docs = []
        for i in range(count):
            key = photo_keys[i % len(photo_keys)]
            doc, _ = producer.store("faces", {"image": ref(key)}, f"{prefix}-{i:04d}")
            job_of[doc.job_id] = key
            docs.append(doc)
        producer.send(docs, per_message=8)

    try:
        with worker_running(env, tmp_path / "worker.log") as worker, beat_running(env, tmp_path):
            submit("before", BEFORE)
            # Mid-backlog: some chunks done, most not.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                done = sum(1 for d in documents(client, list(job_of)).values() if d is not None and d.status.terminal)
                if done >= 8:
                    break
                time.sleep(0.2)
            assert done < BEFORE, "the backlog finished before the failover"
            old = sentinel_set.kill_primary()
            killed_at = time.monotonic()
            new = sentinel_set.wait_failover(old, timeout_s=60)
            print(f"\nfailover: primary :{old} killed with {done}/{BEFORE} jobs done; :{new} promoted after "
                  f"{time.monotonic() - killed_at:.1f}s")  # fmt: skip
            # No replica left: a submit that waits for one is refused, and leaves nothing behind.
            with pytest.raises(StorageUnavailableError, match="replica"):
                producer.submit_faces(ref(photo_keys[0]), job_id="unreplicated")
            assert producer.get_job("unreplicated") is None
            sentinel_set.rejoin(old)  # the lost node comes back as the new primary's replica
            submit("after", AFTER)  # the same producer, no restart
            final = wait_terminal(client, list(job_of), timeout_s=180, poll_s=0.5)
            drained = wait_drained(client, timeout_s=60)
            assert worker.proc is not None and worker.proc.poll() is None, "the worker did not survive the failover"
    finally:
        producer.close()

    assert len(final) == BEFORE + AFTER  # none lost
    failed = {j: d.error for j, d in final.items() if d.status is not JobStatus.SUCCEEDED}
    assert not failed, failed
    wrong = [j for j, d in final.items() if d.result != expected[job_of[j]]]
    assert not wrong, f"{len(wrong)} jobs answered differently from the engine: {wrong[:5]}"
    # The gallery, read through the promoted replica: by the same object and by a fresh one.
    assert to_dict(gallery.find_faces(probe, top_k=3)) == before
    fresh = KYCDeepFaceDB("failover", settings=settings, redis=redis_client(url, settings))
    assert to_dict(fresh.find_faces(probe, top_k=3)) == before
    assert before["candidates"][0]["face_id"] == "obama"
    assert drained, "messages left on the broker after every job finished"
