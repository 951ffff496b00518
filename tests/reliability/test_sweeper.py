"""Messages that never reach a worker: the sweeper (``kyc.maintenance.requeue_stale`` on celery
beat) re-sends them, without duplicating a backlog; and a retry that cannot be published
gives its message back instead of dropping it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import redis
from celery.canvas import Signature
from celery.exceptions import Reject
from celery_batches import SimpleRequest
from kombu.exceptions import OperationalError

from harness import RedisServer, S3Endpoint
from shared import keys
from shared.config import Settings
from shared.engine import KYCDeepFace
from shared.errors import StorageUnavailableError
from shared.jobs import JobDocument, JobStatus
from shared.jobs.resources import Resources
from shared.producer import KOMBU_UNACKED_KEY, Producer
from shared.schemas import to_dict
from tests.reliability.conftest import (
    beat_running,
    fault_env,
    producer_for,
    ref,
    wait_terminal,
    worker_running,
)
from workers import process, tasks

pytestmark = pytest.mark.services

SWEEP = {"KYC_SWEEP_INTERVAL_S": "1", "KYC_SWEEP_STALE_S": "2"}


@pytest.mark.slow
def test_beat_sweeper_recovers_unsent_and_lost_messages_only(
    aof_redis: RedisServer,
    photo_bucket: S3Endpoint,
    small_photos: dict[str, bytes],
    engine: KYCDeepFace,
    tmp_path: Path,
) -> None:
    key = "small/fr_biden.jpg.jpg"
    client = redis.Redis.from_url(aof_redis.url)
    producer = producer_for(aof_redis.url, photo_bucket)
    try:
        # A producer that crashed after storing its jobs and before sending their tasks.
        unsent = [producer.jobs.create(JobDocument.new("faces", {"image": ref(key)}, f"unsent-{i}"))[0].job_id
                  for i in range(3)]  # fmt: skip
        # A message popped from the queue and lost (Redis died before the worker recorded it).
        lost = producer.submit_faces(ref(key), job_id="lost-0").job_id
        assert client.rpop("kyc.heavy") is not None
        # And a backlog sent normally, that the sweeper must leave alone.
        backlog = [producer.submit_faces(ref(key), job_id=f"backlog-{i:02d}").job_id for i in range(40)]
        env = fault_env(aof_redis.url, photo_bucket, **SWEEP)
        with worker_running(env, tmp_path / "worker.log") as worker, beat_running(env, tmp_path):
            final = wait_terminal(client, [*unsent, lost, *backlog], timeout_s=60)
            log = worker.log()
        assert client.zcard(keys.jobs_unstarted_key()) == 0
    finally:
        producer.close()
    expected = to_dict(engine.get_faces(small_photos[key]))
    assert all(d.status is JobStatus.SUCCEEDED and d.result == expected for d in final.values())
    assert all(d.attempts == 1 for d in final.values())
    received = re.findall(r"Task kyc\.jobs\.faces\[([^\]]+)\] received", log)
    assert all(job_id in received for job_id in [*unsent, lost])
    twice = [job_id for job_id in backlog if received.count(job_id) != 1]
    assert not twice, f"the backlog was delivered twice: {twice}"


def test_sweep_leaves_messages_a_worker_has_reserved_alone(redis_url: str) -> None:
    """A message taken by a worker's main process, waiting for a free pool process, is neither
    on its queue nor claimed: only kombu's unacked hash shows it is not lost."""
    producer = Producer(Settings(broker_url=redis_url))
    try:
        jobs = [producer.submit_faces(ref("a.jpg"), job_id=f"reserved-{i}").job_id for i in range(2)]
        taken = [producer.jobs.redis.rpop("kyc.heavy") for _ in jobs]
        # What kombu records when it delivers a message: tag -> [message, exchange, routing key].
        message = json.loads(taken[0])  # type: ignore[arg-type]
        producer.jobs.redis.hset(KOMBU_UNACKED_KEY, "tag-1", json.dumps([message, "", "kyc.heavy"]))
        producer.jobs.redis.hset(KOMBU_UNACKED_KEY, "tag-2", b"not json")
        assert producer.requeue_stale(older_than_s=0) == [jobs[1]]
    finally:
        producer.close()


def test_sweep_leaves_waiting_messages_alone_and_is_idempotent(redis_url: str) -> None:
    producer = Producer(Settings(broker_url=redis_url))

    def orphan(job_id: str) -> str:  # stored, never sent: the producer crashed
        return producer.jobs.create(JobDocument.new("faces", {"image": ref("a.jpg")}, job_id))[0].job_id

    try:
        old = orphan("orphan-old")
        waiting = [producer.submit_faces(ref("a.jpg"), job_id=f"wait-{i}").job_id for i in range(5)]
        new = orphan("orphan-new")
        # Only the orphan older than every waiting message is known to have none.
        assert producer.requeue_stale(older_than_s=0) == [old]
        assert producer.jobs.redis.llen("kyc.heavy") == 6
        # Its new message waits behind the others now: sweeping again sends nothing.
        assert producer.requeue_stale(older_than_s=0) == []
        assert producer.requeue_stale(older_than_s=0) == []
        # Claimed or expired jobs leave the list; nothing is sent for them.
        producer.jobs.claim(waiting[0], "token", lock_ttl_s=10, max_attempts=3)
        producer.jobs.redis.delete(keys.job_key(waiting[1]))
        producer.jobs.redis.delete("kyc.heavy")  # every message is gone (consumed, or lost)
        assert sorted(producer.requeue_stale(older_than_s=0)) == sorted([old, *waiting[2:], new])
        assert producer.jobs.redis.zcard(keys.jobs_unstarted_key()) == 5
        assert producer.requeue_stale(older_than_s=0) == []
    finally:
        producer.close()


def test_a_retry_that_cannot_be_published_requeues_its_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis (job store) and the broker both down: Celery would reject the message without
    requeue when publishing the retry fails; the task gives it back instead."""

    class DownJobs:
        def claim(self, *args: object, **kwargs: object) -> None:
            raise StorageUnavailableError("job store unavailable (ConnectionError)")

        claim_many = claim

    def broker_down(self: Signature, *args: object, **kwargs: object) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    down = Resources(Settings(redis_url="redis://unused"), jobs=DownJobs())  # type: ignore[arg-type]
    monkeypatch.setattr(process, "resources", lambda: down)
    monkeypatch.setattr(Signature, "apply_async", broker_down)
    task = tasks.JOB_TASKS["faces"]
    if isinstance(task, tasks.BatchJobTask):
        # A batch task cannot reject one message from the pool: it answers REQUEUE and the
        # consumer gives that message back instead of acknowledging it.
        monkeypatch.setattr(tasks.BatchJobTask, "apply_async", broker_down)
        request = SimpleRequest(
            "job-1", task.name, ("job-1",), {}, {"routing_key": "kyc.heavy"}, "h", True, None, None, {}
        )
        assert tasks.run_batch(task, [request]) == [tasks.REQUEUE]
        return
    task.push_request(id="job-1", args=["job-1"], kwargs={}, retries=0, called_directly=False, delivery_info={})
    try:
        with pytest.raises(Reject) as caught:
            task("job-1")
    finally:
        task.pop_request()
    assert caught.value.requeue is True


def test_sweeper_and_restore_are_wired_from_the_settings() -> None:
    from workers.app import SWEEP_TASK, create_app

    settings = Settings(broker_url="redis://127.0.0.1:1/0", sweep_interval_s=7, unacked_restore_interval_s=3)
    conf = create_app(settings).conf
    entry = conf.beat_schedule[SWEEP_TASK]
    assert entry["task"] == "kyc.maintenance.requeue_stale" and entry["schedule"] == 7
    assert conf.task_routes[SWEEP_TASK] == {"queue": "kyc.light"}
    options = conf.broker_transport_options
    assert options["unacked_restore_interval"] == 3 and options["unacked_restore_throttle"] == 1
    assert SWEEP_TASK in tasks.app.tasks


def test_a_chunk_is_one_message_and_the_sweeper_sees_every_job_in_it(redis_url: str) -> None:
    producer = Producer(Settings(broker_url=redis_url))
    try:
        stored = [producer.store("faces", {"image": ref("a.jpg")}, f"chunk-{i}") for i in range(5)]
        assert all(created for _, created in stored)
        producer.send([doc for doc, _ in stored])
        waiting = producer.jobs.redis.lrange("kyc.heavy", 0, -1)
        assert len(waiting) == 1
        headers = json.loads(waiting[0])["headers"]
        assert headers["task"] == "kyc.jobs.chunk" and headers["id"] not in {d.job_id for d, _ in stored}
        # Waiting on its queue, then reserved by a worker: neither time is any of its jobs lost.
        assert producer.requeue_stale(older_than_s=0) == []
        taken = json.loads(producer.jobs.redis.rpop("kyc.heavy"))  # type: ignore[arg-type]
        producer.jobs.redis.hset(KOMBU_UNACKED_KEY, "tag-1", json.dumps([taken, "", "kyc.heavy"]))
        assert producer.requeue_stale(older_than_s=0) == []
        # Lost with its worker's Redis: each job is sent again, on its own.
        producer.jobs.redis.delete(KOMBU_UNACKED_KEY)
        assert sorted(producer.requeue_stale(older_than_s=0)) == [f"chunk-{i}" for i in range(5)]
    finally:
        producer.close()
