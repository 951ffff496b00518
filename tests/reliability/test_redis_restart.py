"""Redis killed hard mid-backlog and started again on the same port (AOF, fsync always).

Queued jobs, finished documents and gallery templates survive; the running worker and the
producer reconnect by themselves (the same worker process carries on, the same Producer object
submits again) and every job ends with the engine's answer.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from harness import RedisServer, S3Endpoint
from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.gallery import KYCDeepFaceDB
from shared.jobs import JobStatus
from shared.schemas import FacesResult, to_dict
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

BEFORE, AFTER = 80, 20


def test_queued_jobs_and_gallery_survive_a_hard_redis_restart(
    aof_redis: RedisServer,
    photo_bucket: S3Endpoint,
    small_photos: dict[str, bytes],
    engine: KYCDeepFace,
    settings: Settings,
    tmp_path: Path,
) -> None:
    expected = {key: to_dict(engine.get_faces(data)) for key, data in small_photos.items()}
    photo_keys = sorted(small_photos)
    env = fault_env(aof_redis.url, photo_bucket, KYC_SWEEP_INTERVAL_S="1", KYC_SWEEP_STALE_S="3")
    client = redis.Redis.from_url(aof_redis.url)
    producer = producer_for(aof_redis.url, photo_bucket)
    gallery_settings = settings.model_copy(update={"redis_url": aof_redis.url, "gallery_store": "redis"})
    enrolled = {}
    # One photo each of five different people (df_couple shows df_img11's person, for one).
    enrolled_keys = ("small/fr_obama.jpg.jpg", "small/fr_biden.jpg.jpg", "small/sk_astronaut.png.jpg",
                     "small/df_img12.jpg.jpg", "small/df_img17.jpg.jpg")  # fmt: skip
    for key in enrolled_keys:
        found = engine.get_faces(small_photos[key])
        assert isinstance(found, FacesResult) and found.faces, key
        enrolled[key.replace("/", "_")] = found.faces[0].features
    try:
        with (
            worker_running(env, tmp_path / "worker.log") as worker,
            # The sweeper re-sends a message lost in the crash (popped, not yet recorded unacked).
            beat_running(env, tmp_path),
            KYCDeepFaceDB("customers", settings=gallery_settings) as gallery,
        ):
            for face_id, feats in enrolled.items():
                assert gallery.set(face_id, feats)["code"] == "SUCCESS"
            probe_id, probe = next(iter(enrolled.items()))
            assert gallery.find_face(probe)["found"] == probe_id  # this instance now caches the index
            assert worker.proc is not None
            main_pid, pool_before = worker.proc.pid, worker.pool_pids()

            job_of = {}
            for i in range(BEFORE):
                key = photo_keys[i % len(photo_keys)]
                job_of[producer.submit_faces(ref(key), job_id=f"before-{i:03d}").job_id] = key
            # Enrolment jobs at the back of the backlog: still queued when Redis dies.
            enrol_jobs = [
                producer.submit(
                    "enroll", {"gallery": "onboarding", "face_id": f"applicant-{n}", "probe": ref(key)}
                ).job_id
                for n, key in enumerate(enrolled_keys)
            ]
            # Crash while the backlog is part done, part queued.
            deadline = time.monotonic() + 60
            while sum(d is not None and d.status.terminal for d in documents(client, list(job_of)).values()) < 10:
                assert time.monotonic() < deadline, "the worker finished nothing"
                time.sleep(0.05)
            queued_at_crash = client.llen("kyc.heavy")
            assert queued_at_crash > 0, "the backlog drained before the crash"
            aof_redis.stop(hard=True)  # SIGKILL: no shutdown save, only what AOF fsynced
            time.sleep(1.0)  # long enough for the worker to notice the lost connection
            aof_redis.start()

            # The same producer object submits again: no reconnect call, no new client.
            for i in range(AFTER):
                key = photo_keys[(i * 7) % len(photo_keys)]
                job_of[producer.submit_faces(ref(key), job_id=f"after-{i:03d}").job_id] = key
            final = wait_terminal(client, list(job_of), timeout_s=90, poll_s=0.5)
            enrolments = wait_terminal(client, enrol_jobs, timeout_s=30, poll_s=0.5)
            with KYCDeepFaceDB("onboarding", settings=gallery_settings) as onboarding:
                assert onboarding.count() == len(enrolled_keys)

            # Gallery: every template is there, for a new reader and for the instance that
            # cached the index before the crash (its connection reconnects by itself).
            with KYCDeepFaceDB("customers", settings=gallery_settings) as fresh:
                assert fresh.count() == len(enrolled)
                assert all(fresh.get(face_id)["features"] == feats for face_id, feats in enrolled.items())
            assert gallery.find_face(probe)["found"] == probe_id
            assert gallery.delete(probe_id)["deleted"] is True
            assert gallery.find_face(probe)["found"] is None  # its cached index dropped the face

            assert wait_drained(client)
            # The worker reconnected: same main process, still running.
            assert worker.proc is not None and worker.proc.poll() is None and worker.proc.pid == main_pid
            log = worker.log()
    finally:
        producer.close()

    assert len(final) == BEFORE + AFTER
    failed = {j: d.error for j, d in final.items() if d.status is not JobStatus.SUCCEEDED}
    assert not failed, failed
    assert all(d.result == expected[job_of[j]] for j, d in final.items())
    assert all(d.status is JobStatus.SUCCEEDED for d in enrolments.values()), enrolments
    assert "Connection to broker lost" in log or "Cannot connect" in log or "consumer:" in log, log[-3000:]
    assert pool_before  # the pool existed; whether a child was replaced depends on the moment


@pytest.mark.parametrize("ours", [False, True])
def test_losing_the_broker_with_reserved_messages_does_not_kill_the_worker(redis_url: str, ours: bool) -> None:
    """Celery 5.7 closes the consumer's channel after tearing its transport down; kombu then fails
    to give reserved messages back with an AttributeError that stops the worker. workers.broker
    keeps the worker alive and the message stays unacked in Redis, to come back later."""
    from kombu import Connection, Exchange, Queue

    from workers.broker import transport_for

    queue = Queue("t", Exchange("t"), routing_key="t")
    with Connection(redis_url) as conn:
        conn.Producer().publish({"job": 1}, exchange=queue.exchange, routing_key="t", declare=[queue])
    conn = Connection(redis_url, transport=transport_for(redis_url) if ours else None)
    channel = conn.default_channel
    assert channel.basic_get("t", no_ack=False) is not None  # reserved: in the unacked hash
    channel._pool, channel.connection.client = None, None  # type: ignore[attr-defined]  # as Celery leaves it
    if ours:
        channel.close()
    else:
        with pytest.raises(AttributeError, match="hostname"):
            channel.close()
    client = redis.Redis.from_url(redis_url)
    assert client.hlen("unacked") == 1 and client.llen("t") == 0
    client.close()
