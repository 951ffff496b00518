"""Jobs left ``running`` with no message anywhere: their execution was acknowledged without
recording its end, or Redis lost the message. Once the run lock has expired with no live holder,
the beat sweeper sends the job again, once, or fails it with the dead-letter record when it has
had its attempts; a job whose message kombu still holds for a lost worker is left to kombu."""

from __future__ import annotations

import json
import time
from pathlib import Path

import redis

from harness import RedisServer, S3Endpoint
from shared import keys
from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.jobs import JobDocument, JobStatus
from shared.producer import KOMBU_UNACKED_KEY, Producer
from shared.schemas import to_dict
from tests.reliability.conftest import beat_running, fault_env, producer_for, ref, wait_terminal, worker_running

# An execution on a host that is gone: its lock expires, and nothing else of it is left.
LOST = "gone-host:1:lost-execution"
MAX_ATTEMPTS = 3


def lose(producer: Producer, job_id: str, attempts: int = 1, lock_ttl_s: float = 0.2) -> None:
    """Submit ``job_id``, take its message away for good, and start it ``attempts`` times by an
    execution that is lost (its run lock expires after ``lock_ttl_s``)."""
    producer.submit_faces(ref("small/a.jpg"), job_id=job_id)
    assert producer.jobs.redis.rpop("kyc.heavy") is not None
    for _ in range(attempts):
        producer.jobs.redis.delete(keys.job_lock_key(job_id))
        assert producer.jobs.claim(job_id, LOST, lock_ttl_s=lock_ttl_s, max_attempts=MAX_ATTEMPTS).doc is not None


def queued_ids(client: redis.Redis) -> list[str]:
    return [json.loads(raw)["headers"]["id"] for raw in client.lrange("kyc.heavy", 0, -1)]


def test_an_expired_running_job_is_sent_once_or_failed_past_its_attempts(redis_url: str) -> None:
    producer = Producer(Settings(broker_url=redis_url))
    client = producer.jobs.redis
    try:
        lose(producer, "lost")
        lose(producer, "out-of-attempts", attempts=MAX_ATTEMPTS)
        # Held by a live execution (this process): its lock has not expired.
        producer.submit_faces(ref("small/a.jpg"), job_id="held")
        client.rpop("kyc.heavy")
        producer.jobs.claim("held", "here:0:live", lock_ttl_s=30, max_attempts=MAX_ATTEMPTS)
        # Lost with its worker, but kombu still holds its message: it comes back by itself.
        lose(producer, "reserved")
        message = {"headers": {"id": "reserved", "task": "kyc.jobs.faces"}, "body": ""}
        client.hset(KOMBU_UNACKED_KEY, "tag-1", json.dumps([message, "", "kyc.heavy"]))
        # Finished: a terminal write takes it out of the running set at once.
        lose(producer, "finished")
        done = producer.jobs.get("finished")
        assert done is not None
        producer.jobs.finish(done.succeeded({"faces": []}), token=LOST)
        assert client.zscore(keys.jobs_running_key(), "finished") is None
        assert client.llen("kyc.heavy") == 0
        time.sleep(0.5)  # every short lock has expired

        swept = producer.requeue_expired(older_than_s=0.3, max_attempts=MAX_ATTEMPTS)
        assert swept.resent == ["lost"] and swept.failed == ["out-of-attempts"]
        assert queued_ids(client) == ["lost"]
        failed = producer.jobs.get("out-of-attempts")
        assert failed is not None and failed.status is JobStatus.FAILED and failed.error is not None
        assert failed.error.type == "MaxAttemptsExceeded" and f"after {MAX_ATTEMPTS} attempts" in failed.error.message
        # Once: sweeping again before the new message had its time sends nothing more.
        assert producer.requeue_expired(older_than_s=0.3, max_attempts=MAX_ATTEMPTS) == ([], [])
        assert queued_ids(client) == ["lost"]
        running = {k.decode() for k in client.zrange(keys.jobs_running_key(), 0, -1)}
        assert running == {"lost", "held", "reserved"}
        # The message sent again is claimed: the job is running under a live lock, attempt 2.
        claimed = producer.jobs.claim("lost", "here:0:again", lock_ttl_s=30, max_attempts=MAX_ATTEMPTS)
        assert claimed.doc is not None and claimed.doc.attempts == 2
        time.sleep(0.4)
        assert producer.requeue_expired(older_than_s=0.3, max_attempts=MAX_ATTEMPTS) == ([], [])
    finally:
        producer.close()


def test_the_beat_sweeper_finishes_a_job_left_running(
    aof_redis: RedisServer, photo_bucket: S3Endpoint, small_photos: dict[str, bytes], engine: KYCDeepFace,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Through beat and a real worker: the lost job is answered on its second attempt, exactly as
    in-process; the one out of attempts ends ``failed`` with the dead-letter record."""
    key = "small/fr_biden.jpg.jpg"
    client = redis.Redis.from_url(aof_redis.url)
    producer = producer_for(aof_redis.url, photo_bucket)
    try:
        for job_id, attempts in (("lost", 1), ("out-of-attempts", MAX_ATTEMPTS)):
            producer.submit_faces(ref(key), job_id=job_id)
            assert client.rpop("kyc.heavy") is not None
            for _ in range(attempts):
                client.delete(keys.job_lock_key(job_id))
                producer.jobs.claim(job_id, LOST, lock_ttl_s=0.5, max_attempts=MAX_ATTEMPTS)
        env = fault_env(aof_redis.url, photo_bucket, KYC_SWEEP_INTERVAL_S="1", KYC_SWEEP_STALE_S="1",
                        KYC_MAX_ATTEMPTS=str(MAX_ATTEMPTS))  # fmt: skip
        with worker_running(env, tmp_path / "worker.log") as worker, beat_running(env, tmp_path):
            final = wait_terminal(client, ["lost", "out-of-attempts"], timeout_s=40)
            log = worker.log()
        assert client.zcard(keys.jobs_running_key()) == 0
    finally:
        producer.close()
    answered: JobDocument = final["lost"]
    assert answered.status is JobStatus.SUCCEEDED and answered.attempts == 2
    assert answered.result == to_dict(engine.get_faces(small_photos[key]))
    assert log.count("Task kyc.jobs.faces[lost] received") == 1
    failed = final["out-of-attempts"]
    assert failed.status is JobStatus.FAILED and failed.error is not None and failed.error.type == "MaxAttemptsExceeded"
    assert "out-of-attempts]" not in log  # failed by the sweeper; no worker ran it again
