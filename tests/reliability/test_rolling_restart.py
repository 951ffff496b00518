"""A rolling restart mid-backlog, as compose or Kubernetes does one: SIGTERM to one worker's main
process (only: ``docker stop`` and the kubelet signal PID 1), a replacement started, then the
other. Each stopped worker finishes the chunk it runs, gives back the messages it had reserved
and exits 0; every job ends ``succeeded`` once (one attempt), with the engine's answer."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import pytest
import redis

from harness import CeleryWorker, RedisServer, S3Endpoint
from shared.engine import KYCDeepFace
from shared.jobs import JobDocument, JobStatus
from shared.schemas import to_dict
from tests.conftest import pipeline_env, start_worker
from tests.reliability.conftest import (
    busy_pool_pids,
    producer_for,
    queue_is_drained,
    ref,
    wait_terminal,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]

JOBS = 96
CHUNK = 8  # the backlog's default (KYC_BACKLOG_CHUNK)


def until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def is_busy(client: redis.Redis, worker: CeleryWorker) -> bool:
    """Whether one of the worker's pool processes holds a job's run lock now."""
    return bool(busy_pool_pids(client, worker.pool_pids()))


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_a_rolling_sigterm_restart_mid_backlog_loses_and_fails_nothing(
    pool: str, aof_redis: RedisServer, photo_bucket: S3Endpoint, small_photos: dict[str, bytes], engine: KYCDeepFace,
    tmp_path: Path,
) -> None:  # fmt: skip
    expected = {key: to_dict(engine.get_faces(data)) for key, data in small_photos.items()}
    photo_keys = sorted(small_photos)
    # The default time limits: a drain must not need short ones. A prefetch of 4 chunk messages
    # per process, so a stopped worker has reserved messages to give back. A solo worker runs
    # its chunk in the process that got the signal.
    env = pipeline_env(aof_redis.url, photo_bucket, KYC_BATCH_SIZE="4", KYC_UNACKED_RESTORE_INTERVAL_S="1")
    client = redis.Redis.from_url(aof_redis.url)
    producer = producer_for(aof_redis.url, photo_bucket)
    statuses: dict[str, int] = {}
    logs: dict[str, str] = {}
    try:
        with ExitStack() as stack:

            def worker(name: str) -> CeleryWorker:
                started = start_worker(env, tmp_path / f"{name}.log", concurrency=1, pool=pool)
                stack.callback(started.stop)
                return started

            old = [worker("a"), worker("b")]
            job_of: dict[str, str] = {}

            def submit(part: int) -> None:
                # As the backlog client does, a window at a time: stored in one round trip, sent
                # as chunk messages. The second window comes once the first replacement is up, so
                # the backlog outlasts a worker's start whatever the machine's speed.
                rows = {f"roll-{part}-{i:03d}": photo_keys[i % len(photo_keys)] for i in range(JOBS // 2)}
                stored = producer.store_many([JobDocument.new("faces", {"image": ref(k)}, j) for j, k in rows.items()])
                producer.send([doc for doc, _ in stored], per_message=CHUNK)
                job_of.update(rows)

            for part, (name, running) in enumerate(zip(("a", "b"), old, strict=True)):
                submit(part)
                # Mid-chunk: its pool process holds a job's run lock when the signal comes.
                until(partial(is_busy, client, running), 60, f"{name} never busy")
                assert running.proc is not None
                os.kill(running.pid, signal.SIGTERM)
                worker(f"{name}-new")  # the replacement, started while the old one drains
                statuses[name] = running.proc.wait(timeout=120)
                logs[name] = running.log()
                assert "Warm shutdown" in logs[name], logs[name][-3000:]
            final = wait_terminal(client, list(job_of), timeout_s=120)
            until(lambda: queue_is_drained(client), 30, "messages left on the broker")
    finally:
        producer.close()
    assert statuses == {"a": 0, "b": 0}
    if pool == "prefork":  # a solo worker takes no message while it runs one: it has none to give back
        assert any("Restoring" in log for log in logs.values()), "no stopped worker had messages to give back"
    failed = {j: d.error for j, d in final.items() if d.status is not JobStatus.SUCCEEDED}
    assert not failed, failed
    assert all(d.attempts == 1 for d in final.values()), {j: d.attempts for j, d in final.items() if d.attempts != 1}
    wrong = [j for j, d in final.items() if d.result != expected[job_of[j]]]
    assert not wrong, wrong[:5]
    assert len(final) == JOBS
